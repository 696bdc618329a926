"""Cluster logic and its adapters."""
