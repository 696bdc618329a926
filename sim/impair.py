"""The impairing forwarder of the simulated links: the null-modem cable (sim/cable.py) and the UDP relay (sim/netrelay.py).

- `Impairments`: what a link does to traffic on its way, per direction: cut
  it, lose it at random, or hold it back for a delay without reordering it.
- `ImpairingForwarder`: a link's impairment controls (``cut``,
  ``restore``, ``set_delay``), its per-direction counters (``stats``) and
  the thread that moves the traffic: it waits on a selector (woken by a pipe
  when the settings change) until something is readable or the next
  held-back chunk is due, then lets the link step.

A link subclasses `ImpairingForwarder` and decides what a chunk is (bytes of
a serial stream, or a datagram), where it goes and how it is counted.
"""

from __future__ import annotations

import collections
import logging
import random
import selectors
import threading
import time
from abc import abstractmethod
from typing import Literal

from sim.emulator import StartStop, WakePipe

__all__ = ["Events", "ImpairingForwarder", "Impairments", "Verdict"]

log = logging.getLogger(__name__)

Verdict = Literal["cut", "lost", "queued"]
"""What became of a chunk handed to `Impairments.admit`."""

Events = list[tuple[selectors.SelectorKey, int]]


class Impairments:
    """Cut, random loss and delay, per direction (e.g. ``"a->b"``); the owner's lock guards it."""

    def __init__(self, directions: tuple[str, ...]) -> None:
        """Nothing impaired: no cut, no loss, no delay."""
        self.directions = directions
        self._cut: set[str] = set()
        self._loss = 0.0
        self._rng = random.Random()
        self._delay = 0.0
        self._queues: dict[str, collections.deque[tuple[float, bytes]]] = {
            d: collections.deque() for d in directions
        }

    def parse(self, direction: str | None) -> tuple[str, ...]:
        """The directions ``direction`` names (None: all); ValueError for an unknown one."""
        if direction is None:
            return self.directions
        if direction not in self.directions:
            raise ValueError(f"unknown direction {direction!r}; expected one of {self.directions}")
        return (direction,)

    def cut(self, direction: str | None = None) -> None:
        """Drop everything in ``direction`` (None: every direction) until restored."""
        self._cut.update(self.parse(direction))

    def restore(self, direction: str | None = None) -> None:
        """Undo `cut` for ``direction`` (None: every direction)."""
        self._cut.difference_update(self.parse(direction))

    def set_loss(self, probability: float, seed: int | None = None) -> None:
        """Lose each chunk independently with ``probability``; a seed makes the losses repeatable."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("loss probability must be within [0, 1]")
        self._loss = float(probability)
        if seed is not None:
            self._rng = random.Random(seed)

    def set_delay(self, seconds: float) -> None:
        """Deliver each chunk admitted from now on ``seconds`` after it was admitted, keeping order."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._delay = float(seconds)

    def admit(self, direction: str, data: bytes, now: float) -> Verdict:
        """Take ``data``, read at ``now`` in ``direction``: cut, lost, or queued for `due`."""
        if direction in self._cut:
            return "cut"
        if self._loss and self._rng.random() < self._loss:
            return "lost"
        queue = self._queues[direction]
        due = now + self._delay
        if queue and queue[-1][0] > due:
            due = queue[-1][0]  # a shortened delay must not reorder the traffic
        queue.append((due, data))
        return "queued"

    def due(self, direction: str, now: float) -> list[bytes]:
        """The queued chunks of ``direction`` whose time has come, oldest first (taken off the queue)."""
        queue = self._queues[direction]
        ready = []
        while queue and queue[0][0] <= now:
            ready.append(queue.popleft()[1])
        return ready

    def discard(self, direction: str) -> list[bytes]:
        """Everything still queued in ``direction`` (taken off the queue: it will never arrive)."""
        queue = self._queues[direction]
        dropped = [data for _, data in queue]
        queue.clear()
        return dropped

    def next_due(self) -> float | None:
        """When the next queued chunk is due (None if nothing is queued)."""
        times = [q[0][0] for q in self._queues.values() if q]
        return min(times) if times else None


class ImpairingForwarder(StartStop):
    """A simulated link between two ends: its impairments, its counters and its forwarding thread.

    All public methods are thread-safe. ``_lock`` guards the link's state;
    ``_step`` and ``_timeout`` are called with it held. The subclass's
    ``start`` calls `_open_selector` and `_start_thread` (lock held) after
    registering its own descriptors; its ``stop`` calls `_stop_thread` (lock
    not held), then `_close_selector` (lock held). Used as a context manager,
    the link starts and stops.
    """

    _what = "forwarder"  # names the link in the log

    def __init__(self, directions: tuple[str, ...], counters: tuple[str, ...]) -> None:
        """Not running yet; ``counters`` are the names of the per-direction counts in ``stats``."""
        self._lock = threading.Lock()
        self._impairments = Impairments(directions)
        self._stats = {d: dict.fromkeys(counters, 0) for d in directions}
        self._sel: selectors.BaseSelector | None = None
        self._waker = WakePipe()
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """A snapshot of the per-direction counters."""
        with self._lock:
            return {d: dict(counts) for d, counts in self._stats.items()}

    def cut(self, direction: str | None = None) -> None:
        """Drop all traffic in ``direction`` (one of the link's directions; None = both) until restored."""
        with self._lock:
            self._impairments.cut(direction)

    def restore(self, direction: str | None = None) -> None:
        """Undo cut() for ``direction`` (None = both)."""
        with self._lock:
            self._impairments.restore(direction)

    def set_delay(self, seconds: float) -> None:
        """Deliver what is read from now on ``seconds`` after it was read, keeping order."""
        with self._lock:
            self._impairments.set_delay(seconds)
            self._wake()

    def _wake(self) -> None:
        """Make the thread look at the settings again (a changed delay, a new end)."""
        self._waker.wake()

    def _open_selector(self) -> selectors.BaseSelector:
        """A new selector, watching the wake pipe (lock held)."""
        self._sel = selectors.DefaultSelector()
        self._waker.open()
        self._sel.register(self._waker.fileno(), selectors.EVENT_READ, None)
        return self._sel

    def _start_thread(self, name: str) -> None:
        """Start forwarding on a thread called ``name`` (lock held)."""
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        """Stop the thread and wait for it (lock not held). Idempotent."""
        with self._lock:
            self._running = False
            thread, self._thread = self._thread, None
            self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _close_selector(self) -> None:
        """Close the selector and the wake pipe (lock held). Idempotent."""
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        self._waker.close()

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError(f"{self._what} is not running")

    @abstractmethod
    def _step(self, events: Events, now: float) -> None:
        """Handle what select() returned (the wake pipe already drained) and deliver what is due."""

    @abstractmethod
    def _timeout(self, now: float) -> float | None:
        """Seconds until the thread must step even if nothing is readable (None: wait for traffic)."""

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                sel = self._sel
                timeout = self._timeout(time.monotonic())
            assert sel is not None
            events = sel.select(timeout)
            with self._lock:
                if not self._running:
                    return
                try:
                    if any(key.data is None for key, _ in events):
                        self._waker.drain()
                    traffic = [(key, mask) for key, mask in events if key.data is not None]
                    self._step(traffic, time.monotonic())
                except Exception:  # the forwarder must keep running whatever happens
                    log.exception("%s: forwarder error", self._what)
