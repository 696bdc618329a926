"""A simulated serial null-modem cable made of two pseudo-terminal pairs.

Each end of the cable is a pty pair. A daemon opens the slave side through a
stable symlink (``directory/<end>.tty``), for example with pyserial. A
forwarder thread copies what the daemon at one end writes (read from that
end's pty master) to the pty master of the other end, so the two daemons see
each other as if joined by a null-modem cable. Tests can cut the cable, delay
it, inject line noise, and unplug and replug either end.

Direction names are ``"<src>-><dst>"``, e.g. ``"a->b"`` for the default ends.
"""

from __future__ import annotations

import collections
import logging
import os
import pathlib
import random
import selectors
import threading
import time
from types import TracebackType

from sim.emulator import WakePipe
from sim.ptyport import link_atomically, open_raw_pty

__all__ = ["NullModemCable"]

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_MAX_PENDING = 1 << 20  # bytes waiting toward one end before the cable overflows
_ERROR_BACKOFF = 0.1  # seconds a master that failed a read is left alone


class _End:
    """One plugged-in end: a raw pty pair and the bytes waiting to be written into it."""

    def __init__(self) -> None:
        self.master, self.slave = open_raw_pty()  # raw: no echo or line editing before the daemon opens it
        self.tty_name = os.ttyname(self.slave)
        self.outbuf: collections.deque[list] = collections.deque()  # [data, is_noise]
        self.pending = 0  # bytes in outbuf
        self.mask = 0  # events currently registered with the selector
        self.quiet_until = 0.0  # monotonic time before which reads are not attempted
        self.failing = False  # the last read failed (already logged)

    def close(self) -> None:
        """Close both sides; the daemon's open slave fd is hung up."""
        os.close(self.master)
        os.close(self.slave)


class NullModemCable:
    """Two pty pairs whose master sides are joined by a forwarder thread.

    All control methods are thread-safe. ``stats`` maps each direction to a
    dict of byte counts: ``forwarded`` (cable bytes written into the
    destination end), ``dropped`` (bytes lost to a cut, an unplugged end or
    overflow) and ``noise`` (noise bytes injected toward the destination).
    """

    def __init__(self, directory: pathlib.Path, ends: tuple[str, str] = ("a", "b")) -> None:
        """Describe a cable whose end symlinks live in ``directory``; nothing is created until start()."""
        a, b = ends
        for name in ends:
            if not name or "/" in name or "->" in name:
                raise ValueError(f"invalid cable end name: {name!r}")
        if a == b:
            raise ValueError("cable ends must have distinct names")
        self._dir = pathlib.Path(directory)
        self._names = (a, b)
        self._lock = threading.Lock()
        self._ends: dict[str, _End] = {}
        self._cut: set[str] = set()
        self._delay = 0.0
        self._queues: dict[str, collections.deque[tuple[float, bytes]]] = {
            d: collections.deque() for d in self._directions()
        }
        self._stats = {d: {"forwarded": 0, "dropped": 0, "noise": 0} for d in self._directions()}
        self._sel: selectors.BaseSelector | None = None
        self._waker = WakePipe()
        self._thread: threading.Thread | None = None
        self._running = False

    # ----------------------------------------------------------------- public API

    def path(self, end: str) -> pathlib.Path:
        """Return the stable symlink ``directory/<end>.tty`` that a daemon opens."""
        self._check_end(end)
        return self._dir / f"{end}.tty"

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """A snapshot of the per-direction byte counters."""
        with self._lock:
            return {d: dict(counts) for d, counts in self._stats.items()}

    def start(self) -> None:
        """Create both pty pairs and their symlinks, and start the forwarder thread."""
        with self._lock:
            if self._sel is not None:
                raise RuntimeError("cable already started")
            self._dir.mkdir(parents=True, exist_ok=True)
            self._sel = selectors.DefaultSelector()
            self._waker.open()
            self._sel.register(self._waker.fileno(), selectors.EVENT_READ, None)
            try:
                for name in self._names:
                    self._plug(name)
            except BaseException:
                self._teardown()
                raise
            self._running = True
            self._thread = threading.Thread(
                target=self._run, name=f"cable-{self._names[0]}-{self._names[1]}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the forwarder, close every pty and remove the symlinks. Idempotent."""
        with self._lock:
            self._running = False
            thread, self._thread = self._thread, None
            self._waker.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._teardown()

    def cut(self, direction: str | None = None) -> None:
        """Drop all bytes in ``direction`` (``"a->b"``/``"b->a"``; None = both) until restored."""
        with self._lock:
            self._cut.update(self._parse_direction(direction))

    def restore(self, direction: str | None = None) -> None:
        """Undo cut() for ``direction`` (None = both)."""
        with self._lock:
            self._cut.difference_update(self._parse_direction(direction))

    def set_delay(self, seconds: float) -> None:
        """Deliver each chunk read from now on ``seconds`` after it was read, keeping order."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)
            self._waker.wake()

    def inject_noise(self, nbytes: int, toward: str | None = None, seed: int | None = None) -> None:
        """Write ``nbytes`` random bytes (any value 0..255) into the line toward an end.

        ``toward`` None means both ends (``self.path`` order, each its own
        bytes). The noise is generated by ``random.Random(seed).randbytes``
        and enters at the receiving end of the cable: it ignores cuts and
        delay, and is lost if that end is unplugged.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        targets = self._names if toward is None else (toward,)
        for name in targets:
            self._check_end(name)
        rng = random.Random(seed)
        with self._lock:
            self._check_running()
            for name in targets:
                data = rng.randbytes(nbytes)
                end = self._ends.get(name)
                if end is None or not data:
                    continue
                self._stats[self._direction_into(name)]["noise"] += len(data)
                self._enqueue(name, end, data, noise=True)
                self._flush(name, end)
                self._update_registration(end, time.monotonic())

    def unplug(self, end: str) -> None:
        """Pull that end out like a USB adapter: its opener gets EIO/hangup and the symlink goes."""
        self._check_end(end)
        with self._lock:
            self._check_running()
            if end in self._ends:
                self._unplug(end, remove_link=True)
                self._waker.wake()

    def replug(self, end: str) -> None:
        """Plug a fresh pty pair in at that end, re-pointing its symlink atomically."""
        self._check_end(end)
        with self._lock:
            self._check_running()
            if end in self._ends:
                self._unplug(end, remove_link=False)
            self._plug(end)
            self._waker.wake()

    def __enter__(self) -> NullModemCable:
        """Start the cable."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cable."""
        self.stop()

    # ------------------------------------------------------------------- helpers

    def _directions(self) -> tuple[str, str]:
        a, b = self._names
        return f"{a}->{b}", f"{b}->{a}"

    def _direction_from(self, name: str) -> str:
        a, b = self._names
        return f"{a}->{b}" if name == a else f"{b}->{a}"

    def _direction_into(self, name: str) -> str:
        a, b = self._names
        return f"{b}->{a}" if name == a else f"{a}->{b}"

    def _destination(self, direction: str) -> str:
        return direction.split("->", 1)[1]

    def _check_end(self, name: str) -> None:
        if name not in self._names:
            raise ValueError(f"unknown cable end {name!r}; expected one of {self._names}")

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("cable is not running")

    def _parse_direction(self, direction: str | None) -> tuple[str, ...]:
        if direction is None:
            return self._directions()
        if direction not in self._directions():
            raise ValueError(f"unknown direction {direction!r}; expected one of {self._directions()}")
        return (direction,)

    # The methods below are called with self._lock held.

    def _plug(self, name: str) -> None:
        end = _End()
        try:
            link_atomically(end.tty_name, self.path(name))
        except BaseException:
            end.close()
            raise
        self._ends[name] = end
        self._update_registration(end, time.monotonic())

    def _unplug(self, name: str, remove_link: bool) -> None:
        end = self._ends.pop(name)
        if end.mask:
            assert self._sel is not None
            self._sel.unregister(end.master)
        counts = self._stats[self._direction_into(name)]
        counts["dropped"] += sum(len(d) for d, noise in end.outbuf if not noise)
        queue = self._queues[self._direction_into(name)]
        counts["dropped"] += sum(len(d) for _, d in queue)
        queue.clear()
        end.close()
        if remove_link:
            self.path(name).unlink(missing_ok=True)

    def _teardown(self) -> None:
        for name in list(self._ends):
            self._unplug(name, remove_link=True)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        self._waker.close()

    def _update_registration(self, end: _End, now: float) -> None:
        want = 0 if now < end.quiet_until else selectors.EVENT_READ
        if end.outbuf:
            want |= selectors.EVENT_WRITE
        if want == end.mask:
            return
        assert self._sel is not None
        if not end.mask:
            self._sel.register(end.master, want, end)
        elif not want:
            self._sel.unregister(end.master)
        else:
            self._sel.modify(end.master, want, end)
        end.mask = want

    def _enqueue(self, name: str, end: _End, data: bytes, noise: bool) -> None:
        if end.pending + len(data) > _MAX_PENDING:
            log.warning("cable end %s: output overflow, dropping %d bytes", name, len(data))
            if not noise:
                self._stats[self._direction_into(name)]["dropped"] += len(data)
            return
        end.outbuf.append([data, noise])
        end.pending += len(data)

    def _read(self, name: str, end: _End, now: float) -> None:
        try:
            data = os.read(end.master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: nothing holds the slave open; never fatal
            if not end.failing:
                log.warning("cable end %s: read from pty master failed: %s", name, exc)
            data = b""
        if not data:
            end.failing = True
            end.quiet_until = now + _ERROR_BACKOFF
            return
        end.failing = False
        direction = self._direction_from(name)
        if direction in self._cut:
            self._stats[direction]["dropped"] += len(data)
            return
        queue = self._queues[direction]
        due = now + self._delay
        if queue and queue[-1][0] > due:
            due = queue[-1][0]  # a shortened delay must not reorder bytes
        queue.append((due, data))

    def _flush(self, name: str, end: _End) -> None:
        counts = self._stats[self._direction_into(name)]
        while end.outbuf:
            segment = end.outbuf[0]
            data, noise = segment
            try:
                n = os.write(end.master, data)
            except BlockingIOError:
                return  # the daemon is not reading; wait for EVENT_WRITE
            except OSError as exc:
                log.warning("cable end %s: write to pty master failed: %s", name, exc)
                counts["dropped"] += sum(len(d) for d, nz in end.outbuf if not nz)
                end.outbuf.clear()
                end.pending = 0
                return
            end.pending -= n
            if not noise:
                counts["forwarded"] += n
            if n < len(data):
                segment[0] = data[n:]
                return
            end.outbuf.popleft()

    def _deliver_due(self, now: float) -> None:
        for direction, queue in self._queues.items():
            name = self._destination(direction)
            end = self._ends.get(name)
            while queue and queue[0][0] <= now:
                _, data = queue.popleft()
                if end is None:
                    self._stats[direction]["dropped"] += len(data)
                else:
                    self._enqueue(name, end, data, noise=False)
            if end is not None and end.outbuf:
                self._flush(name, end)

    def _timeout(self, now: float) -> float | None:
        times = [q[0][0] for q in self._queues.values() if q]
        times += [e.quiet_until for e in self._ends.values() if e.quiet_until > now]
        return max(0.0, min(times) - now) if times else None

    # ------------------------------------------------------------- forwarder

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
                    self._step(events)
                except Exception:  # the forwarder must keep running whatever happens
                    log.exception("cable forwarder error")

    def _step(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        now = time.monotonic()
        for key, mask in events:
            if key.data is None:
                self._waker.drain()
                continue
            end: _End = key.data
            name = next((n for n, e in self._ends.items() if e is end), None)
            if name is None:
                continue  # unplugged since select() returned
            if mask & selectors.EVENT_READ:
                self._read(name, end, now)
            if mask & selectors.EVENT_WRITE:
                self._flush(name, end)
        self._deliver_due(now)
        for end in self._ends.values():
            self._update_registration(end, now)
