"""The plumbing the simulator's emulators share.

- ``WakePipe``: the self-pipe that wakes a thread blocked in select()/poll()
  (the pty emulators, the null-modem cable, the UDP relay).
- ``PtyEmulator``: the life cycle of a serial device emulated on a raw pty
  behind a stable symlink (see ``sim.ptyport``): plug, unplug, replug, a
  reader thread handing what the driver wrote to ``_feed``, and stop. The USB
  relay board and the Crystalfontz module build on it.
- ``FakeService``: the start/close/context-manager shell of a fake network
  service whose loop runs on a daemon thread (the fake AMI and SIP servers).
- ``StartStop``: ``start()`` on entering a ``with`` block, ``stop()`` on
  leaving it (the USB relay emulator, the cable and the UDP relay).
"""

from __future__ import annotations

import os
import pathlib
import select
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sim.ptyport import plug_pty

__all__ = ["FakeService", "PtyEmulator", "StartStop", "WakePipe", "wait_for_interrupt"]

_READ_SIZE = 4096
_ERROR_BACKOFF_S = 0.05  # how long a pty reader rests after a master that reports an error


class WakePipe:
    """A non-blocking self-pipe that wakes a thread blocked in select() or poll() on ``fileno()``.

    It is closed until ``open()``; ``wake()`` is then a no-op and ``fileno()`` is -1.
    """

    def __init__(self) -> None:
        """A closed pipe."""
        self._r = self._w = -1

    def open(self) -> None:
        """Create the pipe, both ends non-blocking."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._r, self._w = r, w

    def fileno(self) -> int:
        """The read end, readable while a wake-up is pending (-1 while closed)."""
        return self._r

    def wake(self) -> None:
        """Wake the watching thread; never blocks, and does nothing while closed."""
        if self._w >= 0:
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def drain(self) -> None:
        """Consume every pending wake-up."""
        if self._r < 0:
            return
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close both ends. Idempotent."""
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1


class StartStop(ABC):
    """Something with ``start`` and ``stop``; as a context manager it starts on entry and stops on exit."""

    @abstractmethod
    def start(self) -> None:
        """Start."""

    @abstractmethod
    def stop(self) -> None:
        """Stop. Idempotent."""

    def __enter__(self) -> Self:
        """Start, and hand over the started object."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop."""
        self.stop()


class PtyEmulator:
    """A serial device emulated on a raw pty behind the stable symlink ``link``, served by a reader thread.

    A subclass implements ``_feed(data)`` (bytes the driver wrote) and may
    extend ``_on_plug``/``_on_unplug`` (a fresh pty is in place / the pty is
    gone), all three called with ``_lock`` held. ``_lock`` (re-entrant)
    guards all state; ``_changed`` is notified after every received chunk
    and every plug and unplug. The subclass calls ``_start`` (lock held) and
    ``_stop`` (lock not held) from its own public life-cycle methods.

    The emulator keeps its own slave descriptor open, so the master never
    reads EIO while the driver has the port closed, and the subclass can read
    the line settings the driver made on ``_slave``.
    """

    #: ``wait_for`` also re-checks its predicate this often (seconds; None = only when notified).
    _RECHECK_S: float | None = None

    def __init__(self, link: pathlib.Path) -> None:
        """Describe an emulator whose symlink is ``link``; nothing is created until ``_start``."""
        self._link = link
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._master = self._slave = -1
        self._generation = 0  # bumped on every plug and unplug so the reader drops a stale descriptor
        self._waker = WakePipe()
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def plugged(self) -> bool:
        """Whether the device is plugged in (its pty and symlink exist)."""
        with self._lock:
            return self._master >= 0

    def unplug(self) -> None:
        """Pull the USB cable: the symlink goes and the pty closes (the driver's descriptor fails with EIO)."""
        with self._lock:
            self._check_running()
            self._unplug(remove_link=True)
            self._waker.wake()

    def replug(self) -> None:
        """Plug a fresh pty in (power-cycling the device if it was plugged) and re-point the symlink atomically."""
        with self._lock:
            self._check_running()
            self._unplug(remove_link=False)
            self._plug()
            self._waker.wake()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Wait until ``predicate()`` is true (re-checked after every received chunk); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining if self._RECHECK_S is None else min(remaining, self._RECHECK_S))
            return True

    # ------------------------------------------------------------------- life cycle

    def _start(self, thread_name: str) -> None:
        """Open the wake pipe, plug in and start the reader thread called ``thread_name``."""
        self._waker.open()
        try:
            self._plug()
        except BaseException:
            self._waker.close()
            raise
        self._running = True
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _stop(self, join_timeout: float | None = None) -> bool:
        """Stop the reader, unplug, remove the symlink and close the wake pipe; False if not running.

        Called without the lock held (it waits up to ``join_timeout`` for the reader).
        """
        with self._lock:
            if not self._running:
                return False
            self._running = False
            thread, self._thread = self._thread, None
            self._waker.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_timeout)
        with self._lock:
            self._unplug(remove_link=True)
            self._waker.close()
        return True

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("emulator is not running")

    def _plug(self) -> None:
        self._master, self._slave = plug_pty(self._link)
        self._generation += 1
        self._on_plug()
        self._changed.notify_all()

    def _unplug(self, remove_link: bool) -> None:
        if remove_link:  # first, so the driver cannot reopen the dying pty through it
            self._link.unlink(missing_ok=True)
        if self._master >= 0:
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
            self._generation += 1
            self._on_unplug()
            self._changed.notify_all()

    def _on_plug(self) -> None:
        """A fresh pty is in place (the device powers up)."""

    def _on_unplug(self) -> None:
        """The pty is closed (the device lost its USB power)."""

    def _feed(self, data: bytes) -> None:
        """Handle bytes the driver wrote (``_changed`` is notified afterwards)."""
        raise NotImplementedError

    # ------------------------------------------------------------------- reader

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                master, generation, wake = self._master, self._generation, self._waker.fileno()
            poller = select.poll()
            poller.register(wake, select.POLLIN)
            if master >= 0:
                poller.register(master, select.POLLIN)
            events = dict(poller.poll())
            if events.get(wake):
                self._waker.drain()
            mask = events.get(master, 0) if master >= 0 else 0
            if not mask:
                continue
            failed = False
            with self._lock:
                if generation != self._generation or not self._running:
                    continue  # unplugged or replugged meanwhile: that descriptor is gone
                try:
                    data = os.read(master, _READ_SIZE)
                except BlockingIOError:
                    data = None
                except OSError:
                    data, failed = None, True
                if data:
                    self._feed(data)
                    self._changed.notify_all()
                elif data is not None or mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    failed = True
            if failed:  # do not spin on a master that keeps reporting an error
                select.select([wake], [], [], _ERROR_BACKOFF_S)


class FakeService:
    """A fake network service on ``host``: ``start`` binds its socket and runs ``_loop`` on a daemon thread.

    A subclass sets ``_thread_name`` and implements ``_bind(family)`` (the
    bound socket) and ``_loop()`` (serve until ``_closed`` is set or the
    socket is closed); it may extend ``close``. Used as a context manager it
    starts on entry (unless already started) and closes on exit.
    """

    _thread_name = "fakeservice"

    def __init__(self, host: str, port: int) -> None:
        """Configure; ``start`` binds ``host``:``port`` (0 = any free port)."""
        self.host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._closed = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._sock is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._sock.getsockname()[1]

    def start(self) -> Self:
        """Bind and serve on a background thread."""
        self._sock = self._bind(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._closed.clear()
        threading.Thread(target=self._loop, name=self._thread_name, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._closed.set()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Self:
        """Start serving."""
        return self.start() if self._sock is None else self

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving."""
        self.close()

    def _bind(self, family: socket.AddressFamily) -> socket.socket:
        """A socket of ``family`` bound to ``(host, requested port)``."""
        raise NotImplementedError

    def _loop(self) -> None:
        """Serve until closed."""
        raise NotImplementedError


def wait_for_interrupt() -> None:
    """Block until Ctrl-C (for the lab's standalone fake services)."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
