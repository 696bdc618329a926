"""Shared pytest setup: make the tests folder importable for its helper modules."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
