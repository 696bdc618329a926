"""Logging set-up: to the systemd journal with structured fields, or to stderr.

`configure_logging` picks one of three outputs:

* **the journal, natively**, when stderr is journald's stream (``JOURNAL_STREAM``
  names the device and inode of fd 2, as systemd documents) and journald's
  socket exists: every record is one datagram in the journal's native
  protocol, with ``PRIORITY``, ``SYSLOG_IDENTIFIER``, ``LOGGER``,
  ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``, ``THREAD_NAME``, the context
  fields (``TANDEM_NODE`` …) and the record's own fields (``TANDEM_EVENT``,
  ``TANDEM_STATE``, one ``TANDEM_<KEY>`` per event data key), so
  ``journalctl -u tandem TANDEM_EVENT=state`` finds every state change;
* **journald's stream**, with ``<N>`` priority prefixes and no timestamps,
  when stderr is journald's stream but its socket cannot be used;
* **plain stderr** with timestamps (a terminal, a test, another supervisor).

Nothing here may delay a heartbeat: the journal socket is non-blocking, and a
record journald has no room for is dropped and counted (the next record that
gets through carries ``TANDEM_LOG_DROPPED``), never waited for. Records too
big for one datagram go in a sealed memfd, as libsystemd does.

Events are logged with `log_event` (or ``extra=event_fields(...)``), which
writes the data as ``key=value`` text for people and as fields for the
journal, instead of a dict repr in the message.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "FIELDS_ATTR", "JOURNAL_SOCKET", "JournalHandler", "JournalStreamFormatter", "add_context",
    "configure_logging", "encode_fields", "event_fields", "field_name", "journal_stream_is_stderr",
    "log_event", "logfmt", "priority",
]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
FIELDS_ATTR = "journal_fields"
"""The LogRecord attribute (set through ``extra=``) holding a record's own journal fields."""
IDENTIFIER = "tandem"

_FIELD_OK = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_NOT_FIELD_CHAR = re.compile(r"[^A-Z0-9_]+")
_PLAIN_VALUE = re.compile(r"[^\s\"=\\]+")


def priority(levelno: int) -> int:
    """The syslog priority (0-7) of a logging level: DEBUG 7, INFO 6, WARNING 4, ERROR 3, CRITICAL 2."""
    for threshold, value in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if levelno >= threshold:
            return value
    return 7


@functools.lru_cache(maxsize=1024)
def field_name(key: str, prefix: str = "") -> str:
    """A valid journal field name for ``key``: upper case, runs of other characters as ``_``.

    Journal field names are ``[A-Z][A-Z0-9_]*``, at most 64 characters, and
    must not start with ``_`` (those are journald's trusted fields), so a
    leading digit or underscore is dropped. ValueError if nothing is left.
    """
    name = (prefix + _NOT_FIELD_CHAR.sub("_", key.upper())).lstrip("_0123456789")[:64].rstrip("_")
    if not _FIELD_OK.fullmatch(name):
        raise ValueError(f"{key!r} cannot be a journal field name")
    return name


def _text(value: object) -> str:
    """A field value as text: strings as they are, booleans true/false, None empty, containers compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def logfmt(data: Mapping[str, Any]) -> str:
    """``key=value`` pairs for people: text with spaces, quotes or ``=`` quoted, containers as compact JSON."""
    parts = []
    for key, value in data.items():
        text = _text(value)
        plain = not isinstance(value, str) or _PLAIN_VALUE.fullmatch(text)
        parts.append(f"{key}={text}" if plain and text else f"{key}={json.dumps(text)}")
    return " ".join(parts)


def event_fields(kind: str, data: Mapping[str, Any], **context: object) -> dict[str, dict[str, str]]:
    """The ``extra=`` of a journal event record: TANDEM_EVENT, TANDEM_<KEY> per data key and context item.

    ``context`` (e.g. ``state="ACTIVE"``) becomes ``TANDEM_STATE`` and wins
    over a data key of the same name; ``TANDEM_EVENT`` always is ``kind``.
    """
    fields = {field_name(key, "TANDEM_"): _text(value) for key, value in data.items()}
    fields.update({field_name(key, "TANDEM_"): _text(value) for key, value in context.items()})
    fields["TANDEM_EVENT"] = kind
    return {FIELDS_ATTR: fields}


def log_event(logger: logging.Logger, kind: str, data: Mapping[str, Any], level: int = logging.INFO,
              **context: object) -> None:
    """Log one event: ``kind key=value …`` as the message, and the data as journal fields.

    Replaces ``log.info("%s %s", kind, data)``: ``log_event(log, "state",
    {"from": "STANDBY", "to": "ACTIVE"}, state="ACTIVE")`` logs ``state
    from=STANDBY to=ACTIVE`` with TANDEM_EVENT=state, TANDEM_FROM,
    TANDEM_TO and TANDEM_STATE.
    """
    if logger.isEnabledFor(level):
        text = logfmt(data)
        logger.log(level, "%s %s" if text else "%s%s", kind, text, extra=event_fields(kind, data, **context))


def encode_fields(fields: Mapping[str, str]) -> bytes:
    """One journal entry in the native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL).

    ``NAME=value\\n`` when the value has no newline, otherwise ``NAME\\n``,
    the value's length as a little-endian 64-bit integer, the value, ``\\n``.
    """
    parts = []
    for name, value in fields.items():
        if "\n" in value:
            data = value.encode("utf-8", "replace")
            parts.append(f"{name}\n".encode() + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(f"{name}={value}\n".encode("utf-8", "replace"))
    return b"".join(parts)


class JournalStreamFormatter(logging.Formatter):
    """For journald's stdout/stderr stream: ``<N>`` priority prefix, logger name, message; no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        """``<6>firmware.core.daemon: message`` (journald strips the prefix into PRIORITY)."""
        return f"<{priority(record.levelno)}>{super().format(record)}"


class JournalHandler(logging.Handler):
    """Send each record to journald as one native-protocol datagram, never blocking the caller.

    ``context`` holds fields added to every record (``TANDEM_NODE``; see
    `add_context`). If journald's queue is full the record is dropped and
    counted in ``dropped``; the next delivered record carries
    ``TANDEM_LOG_DROPPED`` (how many were lost before it). If the socket is
    gone (journald restarting) the record goes to ``fallback`` (stderr, which
    under systemd is journald's stream) with a ``<N>`` prefix instead.
    """

    def __init__(self, address: str = JOURNAL_SOCKET, identifier: str = IDENTIFIER,
                 context: Mapping[str, str] | None = None, fallback: TextIO | None = None,
                 level: int = logging.NOTSET) -> None:
        """Open a non-blocking datagram socket for ``address``; records are formatted ``name: message``."""
        super().__init__(level)
        self.address = address
        self.identifier = identifier
        self.context: dict[str, str] = dict(context or {})
        self.fallback = fallback
        self.dropped = 0
        self._unreported = 0
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._fallback_formatter = JournalStreamFormatter("%(name)s: %(message)s")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        """Every journal field of ``record``: MESSAGE, PRIORITY, the code location, context and its own fields."""
        fields = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname or "",
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName or "",
            "THREAD_NAME": record.threadName or "",
            **self.context,
        }
        own = getattr(record, FIELDS_ATTR, None)
        if isinstance(own, Mapping):
            for key, value in own.items():
                name = key if _FIELD_OK.fullmatch(key) else field_name(key)
                fields[name] = _text(value)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        """Send the record; drop and count it if journald has no room; fall back to stderr if it is gone."""
        try:
            fields = self.fields(record)
            if self._unreported:
                fields["TANDEM_LOG_DROPPED"] = str(self._unreported)
            self._send(encode_fields(fields))
            self._unreported = 0
        except BlockingIOError:
            self.dropped += 1
            self._unreported += 1
        except OSError:
            self._to_fallback(record)
        except Exception:
            self.handleError(record)

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        """Too big for a datagram: pass a sealed memfd holding the entry, as sd_journal_sendv does."""
        fd = os.memfd_create("tandem-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0,
                               self.address)
        finally:
            os.close(fd)

    def _to_fallback(self, record: logging.LogRecord) -> None:
        if self.fallback is None:
            return
        try:
            self.fallback.write(self._fallback_formatter.format(record) + "\n")
            self.fallback.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Close the socket."""
        try:
            self._sock.close()
        finally:
            super().close()


def journal_stream_is_stderr(environ: Mapping[str, str], stream: TextIO) -> bool:
    """Whether ``stream`` is the journald stream ``JOURNAL_STREAM`` (``device:inode``) names.

    systemd sets JOURNAL_STREAM for the service's own stdout/stderr; a child
    whose stderr was redirected inherits the variable but not the stream, so
    the device and inode are compared, as sd_journal_stream_fd(3) advises.
    """
    value = environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def configure_logging(verbose: bool = False, *, environ: Mapping[str, str] | None = None,
                      stderr: TextIO | None = None, journal_socket: str = JOURNAL_SOCKET,
                      context: Mapping[str, object] | None = None) -> logging.Handler:
    """Send the root logger to the journal natively, to journald's stream, or to plain stderr (module docstring).

    ``verbose`` logs DEBUG too. ``context`` (e.g. ``node="alpha"``) becomes
    ``TANDEM_<KEY>`` fields on every journal record. Replaces any handlers the
    root logger had; returns the new one.
    """
    env = os.environ if environ is None else environ
    stream = sys.stderr if stderr is None else stderr
    handler: logging.Handler
    if journal_stream_is_stderr(env, stream):
        if os.path.exists(journal_socket):
            handler = JournalHandler(journal_socket, fallback=stream)
        else:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(JournalStreamFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if isinstance(old, JournalHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if context:
        add_context(**context)
    return handler


def add_context(**context: object) -> None:
    """Add ``TANDEM_<KEY>`` fields (``node="alpha"`` → TANDEM_NODE) to every record the root logger journals.

    For what is known only after logging is set up (the node name comes
    from the config). Does nothing when logging does not go to the journal.
    """
    fields = {field_name(key, "TANDEM_"): _text(value) for key, value in context.items()}
    for handler in logging.getLogger().handlers:
        if isinstance(handler, JournalHandler):
            handler.context.update(fields)
