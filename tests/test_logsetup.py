"""Logging set-up: journald's native protocol against a fake journal socket, the stream and plain fallbacks."""

from __future__ import annotations

import array
import fcntl
import io
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.core import logsetup
from firmware.core.logsetup import (
    FIELDS_ATTR,
    JournalHandler,
    JournalStreamFormatter,
    add_context,
    configure_logging,
    event_fields,
    field_name,
    journal_stream_is_stderr,
    log_event,
    logfmt,
)


def parse_native(data: bytes) -> dict[str, str]:
    """Decode one native-protocol entry, written independently of the module under test."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        line = data[pos:newline]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = newline + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", data, newline + 1)
            start = newline + 9
            value = data[start:start + size]
            assert data[start + size:start + size + 1] == b"\n", "a binary field must end with a newline"
            pos = start + size + 1
        assert name.decode() not in fields, f"field {name!r} sent twice"
        fields[name.decode()] = value.decode()
    return fields


class FakeJournal:
    """A datagram socket standing in for /run/systemd/journal/socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(5.0)
        self.last_was_memfd = False

    def receive(self) -> dict[str, str]:
        """The next entry, whether sent inline or as a memfd (checking the memfd is sealed)."""
        fds = array.array("i")
        data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        self.last_was_memfd = bool(fds)
        if fds:
            assert data == b"", "a memfd entry carries no inline payload"
            fd = fds[0]
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return parse_native(data)

    def pending(self) -> int:
        """How many datagrams are queued (drains them)."""
        self.sock.setblocking(False)
        count = 0
        try:
            while True:
                self.sock.recv(1 << 20)
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[FakeJournal]:
    fake = FakeJournal(tmp_path / "journal.sock")
    yield fake
    fake.close()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tandem.test.logsetup")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in log.handlers[:]:
        log.removeHandler(handler)
        handler.close()
    log.propagate = True


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_event_reaches_the_journal_as_fields(journal: FakeJournal, logger: logging.Logger) -> None:
    handler = JournalHandler(journal.path, context={"TANDEM_NODE": "alpha"})
    logger.addHandler(handler)
    log_event(logger, "state", {"from": "STANDBY", "to": "ACTIVE", "reason": "peer silent on all links",
                                "epoch": 7, "links": ["net0", "serial0"]}, state="ACTIVE")
    entry = journal.receive()
    assert entry["MESSAGE"] == ('tandem.test.logsetup: state from=STANDBY to=ACTIVE '
                                'reason="peer silent on all links" epoch=7 links=["net0","serial0"]')
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "tandem"
    assert entry["TANDEM_EVENT"] == "state" and entry["TANDEM_STATE"] == "ACTIVE"
    assert entry["TANDEM_NODE"] == "alpha"
    assert (entry["TANDEM_FROM"], entry["TANDEM_TO"], entry["TANDEM_EPOCH"]) == ("STANDBY", "ACTIVE", "7")
    assert entry["TANDEM_REASON"] == "peer silent on all links" and entry["TANDEM_LINKS"] == '["net0","serial0"]'
    assert entry["LOGGER"] == "tandem.test.logsetup" and entry["CODE_FUNC"] == "log_event"
    assert entry["CODE_FILE"].endswith("logsetup.py") and entry["CODE_LINE"].isdigit()
    assert "{" not in entry["MESSAGE"].split("links=")[0], "no dict repr in the message"


def test_priorities_and_plain_records(journal: FakeJournal, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(journal.path))
    logger.debug("d")
    logger.info("i %s", 1)
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    entries = [journal.receive() for _ in range(5)]
    assert [e["PRIORITY"] for e in entries] == ["7", "6", "4", "3", "2"]
    assert entries[1]["MESSAGE"] == "tandem.test.logsetup: i 1"
    assert not any(name.startswith("TANDEM_") for e in entries for name in e)
    assert entries[2]["CODE_FUNC"] == "test_priorities_and_plain_records"


def test_multiline_message_and_traceback_use_the_binary_form(journal: FakeJournal, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(journal.path))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("hook failed\nsecond line")
    entry = journal.receive()
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"].startswith("tandem.test.logsetup: hook failed\nsecond line\nTraceback")
    assert entry["MESSAGE"].endswith("RuntimeError: boom")


def test_entry_too_big_for_a_datagram_goes_in_a_sealed_memfd(journal: FakeJournal, logger: logging.Logger) -> None:
    journal.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    logger.addHandler(JournalHandler(journal.path))
    big = "x" * (4 << 20)  # larger than any AF_UNIX datagram the kernel accepts
    logger.info("%s", big, extra={FIELDS_ATTR: {"TANDEM_EVENT": "big"}})
    entry = journal.receive()
    assert entry["MESSAGE"] == "tandem.test.logsetup: " + big and entry["TANDEM_EVENT"] == "big"
    assert journal.last_was_memfd
    logger.info("small")
    assert journal.receive()["MESSAGE"].endswith("small") and not journal.last_was_memfd


def test_full_journal_drops_and_counts_instead_of_blocking(journal: FakeJournal, logger: logging.Logger) -> None:
    handler = JournalHandler(journal.path)
    logger.addHandler(handler)
    sent = 0
    while handler.dropped == 0:  # a blocking send would hang here (pytest-timeout ends the test)
        logger.info("filler %d", sent)
        sent += 1
        assert sent < 100_000, "the fake journal never filled up"
    for _ in range(4):
        logger.info("also dropped")
    assert handler.dropped == 5
    delivered = journal.pending()
    assert delivered == sent - 1  # every record but the first dropped one arrived
    logger.info("after")
    entry = journal.receive()
    assert entry["MESSAGE"].endswith("after") and entry["TANDEM_LOG_DROPPED"] == "5"
    logger.info("next")
    assert "TANDEM_LOG_DROPPED" not in journal.receive()


def test_journal_gone_falls_back_to_the_stream(tmp_path: Path, logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JournalHandler(str(tmp_path / "no-journal.sock"), fallback=stream))
    logger.warning("still %s", "seen")
    assert stream.getvalue() == "<4>tandem.test.logsetup: still seen\n"


def test_record_fields_are_normalized(journal: FakeJournal, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(journal.path))
    logger.info("x", extra={FIELDS_ATTR: {"tandem_event": "hook", "TANDEM_OK": True, "exit code": 3}})
    entry = journal.receive()
    assert (entry["TANDEM_EVENT"], entry["TANDEM_OK"], entry["EXIT_CODE"]) == ("hook", "true", "3")


@pytest.mark.parametrize(("key", "prefix", "name"), [
    ("from", "TANDEM_", "TANDEM_FROM"), ("max tick-lag.ms", "", "MAX_TICK_LAG_MS"),
    ("_trusted", "", "TRUSTED"), ("2fa", "", "FA"), ("x" * 80, "", "X" * 64),
])
def test_field_names(key: str, prefix: str, name: str) -> None:
    assert field_name(key, prefix) == name


@pytest.mark.parametrize("key", ["", "__", "123", "☃"])
def test_impossible_field_names(key: str) -> None:
    with pytest.raises(ValueError):
        field_name(key)


def test_event_fields_and_logfmt() -> None:
    extra = event_fields("peer.found", {"peer": "bravo", "event": "not the kind", "ok": False, "gone": None},
                         node="alpha")
    assert extra == {FIELDS_ATTR: {"TANDEM_PEER": "bravo", "TANDEM_EVENT": "peer.found", "TANDEM_OK": "false",
                                   "TANDEM_GONE": "", "TANDEM_NODE": "alpha"}}
    assert logfmt({"a": "x y", "b": 'q"', "c": "", "d": 1.5, "e": {"k": [1]}}) == \
        'a="x y" b="q\\"" c="" d=1.5 e={"k":[1]}'


def test_log_event_to_a_plain_stream(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalStreamFormatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    log_event(logger, "link.down", {"link": "net0", "detail": "no heartbeat for 300 ms"}, level=logging.WARNING)
    log_event(logger, "daemon.stop", {})
    assert stream.getvalue().splitlines() == [
        '<4>tandem.test.logsetup: link.down link=net0 detail="no heartbeat for 300 ms"',
        "<6>tandem.test.logsetup: daemon.stop"]


def stderr_file(tmp_path: Path) -> io.TextIOWrapper:
    return open(tmp_path / "stderr.txt", "w+", encoding="utf-8")  # noqa: SIM115 - closed by the test


def stream_id(stream: io.TextIOWrapper) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_must_be_our_stderr(tmp_path: Path) -> None:
    with stderr_file(tmp_path) as stream:
        assert journal_stream_is_stderr({"JOURNAL_STREAM": stream_id(stream)}, stream)
        assert not journal_stream_is_stderr({"JOURNAL_STREAM": "1:2"}, stream)  # inherited, stderr redirected
        assert not journal_stream_is_stderr({"JOURNAL_STREAM": "garbage"}, stream)
        assert not journal_stream_is_stderr({}, stream)
        assert not journal_stream_is_stderr({"JOURNAL_STREAM": stream_id(stream)}, io.StringIO())


def test_configure_native_journal_with_context(tmp_path: Path, journal: FakeJournal, root_restored: None) -> None:
    with stderr_file(tmp_path) as stream:
        handler = configure_logging(environ={"JOURNAL_STREAM": stream_id(stream)}, stderr=stream,
                                    journal_socket=journal.path, context={"node": "alpha"})
        assert isinstance(handler, JournalHandler) and logging.getLogger().handlers == [handler]
        add_context(role="primary")
        logging.getLogger("firmware.core.daemon").info("node started")
        logging.getLogger("firmware.core.daemon").debug("not at INFO")
        entry = journal.receive()
        assert entry["MESSAGE"] == "firmware.core.daemon: node started"
        assert (entry["TANDEM_NODE"], entry["TANDEM_ROLE"]) == ("alpha", "primary")
        assert journal.pending() == 0
        assert configure_logging(verbose=True, environ={}, stderr=stream) is not handler
        assert handler._sock.fileno() == -1, "the replaced journal handler is closed"


def test_configure_stream_when_the_journal_socket_is_missing(tmp_path: Path, root_restored: None) -> None:
    with stderr_file(tmp_path) as stream:
        handler = configure_logging(environ={"JOURNAL_STREAM": stream_id(stream)}, stderr=stream,
                                    journal_socket=str(tmp_path / "none.sock"))
        assert isinstance(handler.formatter, JournalStreamFormatter)
        logging.getLogger("firmware.x").warning("careful")
        stream.seek(0)
        assert stream.read() == "<4>firmware.x: careful\n"


def test_configure_plain_stderr_outside_systemd(tmp_path: Path, journal: FakeJournal, root_restored: None) -> None:
    with stderr_file(tmp_path) as stream:
        configure_logging(environ={"JOURNAL_STREAM": "1:2"}, stderr=stream, journal_socket=journal.path)
        logging.getLogger("firmware.x").info("hello")
        stream.seek(0)
        line = stream.read()
        assert line.endswith(" INFO firmware.x: hello\n") and line[:4].isdigit()
        assert journal.pending() == 0


def test_default_environment_and_stream(monkeypatch: pytest.MonkeyPatch, root_restored: None) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = configure_logging()
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    assert logsetup.JOURNAL_SOCKET == "/run/systemd/journal/socket"
