"""systemd notify protocol against a fake $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Iterator

import pytest

from firmware.core.notify import Notifier


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096)
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def nothing_queued(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, "socket path too long for AF_UNIX"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    name = f"tandem-test-{os.getpid()}-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    yield sock, "@" + name
    sock.close()


def test_ready_sends_ready_and_status(listener) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("STANDBY, peer alive")
    assert receive(sock) == {"READY": "1", "STATUS": "STANDBY, peer alive"}
    assert nothing_queued(sock)


def test_status_watchdog_and_stopping(listener) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("ACTIVE")
    assert receive(sock) == {"STATUS": "ACTIVE"}
    notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    notifier.stopping()
    assert receive(sock) == {"STOPPING": "1"}
    assert notifier.send(STATUS="x", EXTEND_TIMEOUT_USEC=5) is True
    assert receive(sock) == {"STATUS": "x", "EXTEND_TIMEOUT_USEC": "5"}


def test_a_line_break_cannot_add_a_field(listener) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("ACTIVE (peer lost)\nWATCHDOG=1\r\nREADY=1")
    assert receive(sock) == {"STATUS": "ACTIVE (peer lost) WATCHDOG=1 READY=1"}
    assert nothing_queued(sock)


def test_abstract_socket_address(abstract_listener) -> None:
    sock, address = abstract_listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.ready("up")
    assert receive(sock) == {"READY": "1", "STATUS": "up"}
    notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}


def test_watchdog_interval_is_half_the_timeout() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval == 1.0
    own = Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert own.watchdog_interval == 1.0


def test_watchdog_for_another_process_is_disabled() -> None:
    other = Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None


@pytest.mark.parametrize("usec", ["", "abc", "-5"])
def test_invalid_watchdog_timeout_is_disabled(usec: str) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert notifier.address is None
    assert notifier.send(READY=1) is False
    notifier.ready("x")  # must not raise
    notifier.watchdog()
    notifier.stopping()
    assert Notifier({"NOTIFY_SOCKET": ""}).send(READY=1) is False


def test_missing_listener_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert notifier.send(READY=1) is False
    notifier.watchdog()  # must not raise


def test_reads_the_process_environment_by_default(listener, monkeypatch) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier()
    assert notifier.watchdog_interval == 0.25
    assert notifier.send(READY=1) is True
    assert receive(sock) == {"READY": "1"}
