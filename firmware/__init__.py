"""Tandem: two-node high-availability firmware daemon."""

__version__ = "0.1.0"
