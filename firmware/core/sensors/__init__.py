"""Sensor families: one module per family, each a `Sensor` subclass (see base.py)."""
