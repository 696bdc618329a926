"""Logging set-up for the daemon: stderr, in journald's format when systemd reads it."""

from __future__ import annotations

import logging
import os


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr; with journald (JOURNAL_STREAM set) use `<N>` priority prefixes, no timestamps."""
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("JOURNAL_STREAM"):
        class _Journald(logging.Formatter):
            PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

            def format(self, record: logging.LogRecord) -> str:
                return f"<{self.PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"
        formatter: logging.Formatter = _Journald()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
