"""Simulated hardware and the two-node lab for Tandem."""
