"""Test helpers shared by every test module: the one way to wait, a systemd notify listener, rack checks.

Waiting is always on a condition, with a generous timeout that is only waited
out when the test fails: the CI box is a loaded 2-core machine, so nothing
here asserts how fast something happened, only that (and in which order) it did.
The simulated rack's fixtures are in conftest.py (``racks``); what a rack
itself can wait for (a state, a journal event, heartbeat ticks) is in
:class:`sim.rack.TwoNodeRack`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sim.rack import NODES, TwoNodeRack

T = TypeVar("T")

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 does not name it

TIMEOUT = 10.0  # generous: waited out only when the condition never comes
FIRST_INTERVAL = 0.002
MAX_INTERVAL = 0.05


def wait_for(predicate: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Polls quickly at first and backs off (to at most 50 ms), so a condition that is
    met at once costs nothing and a long wait does not spin. After ``timeout``
    seconds it fails the test with an AssertionError naming ``what``.
    """
    pauses = _pauses(timeout, what)
    while not (value := predicate()):
        time.sleep(next(pauses))
    return value


async def wait_for_async(predicate: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition",
                         pause: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """:func:`wait_for` for a coroutine on the loop that must go on running meanwhile.

    ``pause(seconds)`` is awaited between checks (a textual pilot's ``pause`` lets its app
    process its messages); the same back-off, timeout and failure as :func:`wait_for`.
    """
    pauses = _pauses(timeout, what)
    while not (value := predicate()):
        await pause(next(pauses))
    return value


def _pauses(timeout: float, what: str) -> Iterator[float]:
    """The pauses between checks, doubling from 2 ms to 50 ms; AssertionError once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    while time.monotonic() <= deadline:
        yield interval
        interval = min(interval * 2, MAX_INTERVAL)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# ---------------------------------------------------------------- systemd notify


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram: its ``KEY=value`` lines and when the kernel queued it (wall clock)."""

    text: str
    at: float

    @property
    def fields(self) -> dict[str, str]:
        """The datagram's assignments (``{"READY": "1", "STATUS": "…"}``)."""
        return dict(line.split("=", 1) for line in self.text.splitlines() if "=" in line)


class NotifyListener:
    """A stand-in for systemd's notify socket: collects every sd_notify datagram sent to it.

    Each datagram is stamped by the kernel when it arrived (SO_TIMESTAMPNS), not
    when this listener's thread got round to reading it, so comparing the stamps
    with another clock reading (a journal record's time) is exact even when
    the test machine is loaded. Use :meth:`env` in the daemon's environment.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.bind(str(path))
        self._messages: list[Notification] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        """What to add to a daemon's environment so it notifies this listener (and feeds a systemd watchdog)."""
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    @property
    def messages(self) -> list[Notification]:
        """Every datagram so far, in arrival order."""
        with self._changed:
            return list(self._messages)

    def with_field(self, key: str, value: str | None = None) -> list[Notification]:
        """The datagrams that set ``key`` (to ``value``, if given)."""
        return [m for m in self.messages if key in m.fields and (value is None or m.fields[key] == value)]

    def wait_count(self, key: str, value: str | None, count: int, timeout: float = 20.0) -> list[Notification]:
        """Wait until at least ``count`` datagrams set ``key`` (to ``value``); return them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._matching(key, value)) >= count, timeout):
                raise AssertionError(f"timed out after {timeout:g} s waiting for {count} × {key}="
                                     f"{value or '…'} (got {len(self._matching(key, value))})")
            return self._matching(key, value)

    def _matching(self, key: str, value: str | None) -> list[Notification]:
        return [m for m in self._messages if key in m.fields and (value is None or m.fields[key] == value)]

    def _read(self) -> None:
        stamp_size = struct.calcsize("ll")
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65536, socket.CMSG_SPACE(stamp_size))
            except OSError:
                return
            if not data and self._closed:
                return
            at = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("ll", payload[:stamp_size])
                    at = seconds + nanoseconds / 1e9
            with self._changed:
                self._messages.append(Notification(data.decode(errors="replace"), at))
                self._changed.notify_all()

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- racks

# Test racks: the simulated sensors (some of them subprocesses) get as long as they need on a
# loaded machine; a read that ran into the board's 1-2 s timeout would count UNKNOWN and cost health.
TEST_SENSOR_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 30.0


def new_rack(base: Path, **options: Any) -> TwoNodeRack:
    """A rack (not started) as the tests build it: generous sensor timeouts unless ``options`` say otherwise.

    Prefer the ``racks`` fixture, which also stops it; this is for tests that start nodes by hand.
    """
    options.setdefault("sensor_timeout_s", TEST_SENSOR_TIMEOUT_S)
    return TwoNodeRack(base, **options)


def state_events(rack: TwoNodeRack, name: str, to: str) -> list[dict[str, Any]]:
    """The node's journaled changes to state ``to``, oldest first."""
    return [e for e in rack.events(name) if e["kind"] == "state" and e["data"]["to"] == to]


def lan_alarm(rack: TwoNodeRack, name: str) -> str:
    """The text of the node's `lan` alarm (LAN arbitration), '' if it has none or does not answer."""
    status = rack.status(name) or {}
    return next((a["text"] for a in status.get("alarms", []) if a.get("source") == "lan"), "")


def assert_steady(rack: TwoNodeRack, pair: tuple[str, str], heartbeats: int) -> None:
    """Nothing happens: (alpha, bravo) are in the states ``pair`` and stay there for ``heartbeats``.

    "Stay" is judged by each daemon's own clock and journal, not by a sleep: each
    node's heartbeat tick counter goes ``heartbeats`` ticks on, and neither
    journals a change of state in that time.
    """
    marks = {name: rack.brief(name) for name in NODES}
    assert all(marks.values()), f"a node did not answer: {marks}"
    assert tuple(marks[name]["state"] for name in NODES) == pair, {n: m["state"] for n, m in marks.items()}
    for name in NODES:
        rack.wait_ticks(name, heartbeats, start=marks[name]["tick"])
    for name in NODES:
        changes = [e["data"] for e in rack.events(name, since=marks[name]["event_id"]) if e["kind"] == "state"]
        assert changes == [], f"{name} changed state within {heartbeats} heartbeats: {changes}"


@contextmanager
def holders_watched(rack: TwoNodeRack, ip: str) -> Iterator[list[list[str]]]:
    """Sample who holds `ip` on the simulated LAN every few milliseconds until the block ends."""
    seen: list[list[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(sorted(rack.holders(ip)))
            time.sleep(0.005)  # a sampling interval, not a wait for a condition

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(timeout=10)

