"""An emulated CH340 USB relay board ("LCUS" style) on a pseudo-terminal.

The driver (``firmware.core.actions.relay_usb.UsbRelayBoard``) opens the
stable symlink ``directory/usbrelay.tty``, which points at the slave side of
a raw pty. A background thread reads the master side, parses the 4-byte
frames ``A0 <channel> <state> <checksum>`` (resynchronising on 0xA0 after
garbage), and applies the valid ones. Like the real board it never answers.

``unplug()`` closes the pty and removes the symlink, as pulling the USB
cable would: the driver's writes fail with EIO and the relays drop (the
board is USB-powered, so every channel goes de-energized). ``replug()``
plugs a fresh pty in and re-points the symlink atomically.

All methods and properties are thread-safe; the properties return copies.
"""

from __future__ import annotations

import os
import pathlib
import select
import threading
import time
from types import TracebackType
from typing import Callable

from sim.ptyport import plug_pty

__all__ = ["UsbRelayEmulator"]

_READ_SIZE = 4096
_START = 0xA0
_FRAME_LEN = 4
_ERROR_BACKOFF_S = 0.05  # how long the reader rests after a master that reports an error


class UsbRelayEmulator:
    """A USB relay board with ``channels`` relays behind the pty symlink ``directory/usbrelay.tty``.

    Observations: ``states`` (channel → energized), ``log`` of applied frames
    as ``(time.time(), channel, energized)``, ``raw`` (every byte received),
    ``frames`` (valid frames applied), ``bad_frames`` (frames rejected for a
    wrong checksum, a channel outside 1..channels or a state other than 0/1;
    never applied) and ``garbage`` (bytes skipped while resynchronising).
    """

    def __init__(self, directory: pathlib.Path, channels: int = 4) -> None:
        """Describe a board whose symlink lives in ``directory``; nothing is created until start()."""
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 255:
            raise ValueError(f"channels must be an integer 1..255, not {channels!r}")
        self.directory = pathlib.Path(directory)
        self.channels = channels
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._states = dict.fromkeys(range(1, channels + 1), False)
        self._log: list[tuple[float, int, bool]] = []
        self._raw = bytearray()
        self._buffer = bytearray()  # bytes of an incomplete frame
        self._frames = 0
        self._bad_frames = 0
        self._garbage = 0
        self._master = self._slave = -1
        self._generation = 0  # bumped on every unplug/replug so the reader drops a stale descriptor
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._running = False

    # ----------------------------------------------------------------- public API

    @property
    def path(self) -> pathlib.Path:
        """The stable symlink the driver opens as its serial port."""
        return self.directory / "usbrelay.tty"

    @property
    def states(self) -> dict[int, bool]:
        """A copy of every relay's current state (True = energized)."""
        with self._lock:
            return dict(self._states)

    @property
    def log(self) -> list[tuple[float, int, bool]]:
        """A copy of the applied frames: ``(time.time(), channel, energized)``."""
        with self._lock:
            return list(self._log)

    @property
    def raw(self) -> bytearray:
        """A copy of every byte received since start()."""
        with self._lock:
            return bytearray(self._raw)

    @property
    def frames(self) -> int:
        """Valid frames applied."""
        with self._lock:
            return self._frames

    @property
    def bad_frames(self) -> int:
        """Frames rejected (bad checksum, unknown channel or state); none of them was applied."""
        with self._lock:
            return self._bad_frames

    @property
    def garbage(self) -> int:
        """Bytes skipped while looking for a frame start (0xA0)."""
        with self._lock:
            return self._garbage

    @property
    def plugged(self) -> bool:
        """Whether the board is plugged in (its pty and symlink exist)."""
        with self._lock:
            return self._master >= 0

    def start(self) -> None:
        """Plug the board in (pty and symlink) and start the reader thread."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("emulator already started")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            try:
                self._plug()
            except BaseException:
                self._close_wake()
                raise
            self._running = True
            self._thread = threading.Thread(target=self._run, name="usbrelay-emulator", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the reader, close the pty and remove the symlink. Idempotent."""
        with self._lock:
            self._running = False
            thread, self._thread = self._thread, None
            self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._unplug(remove_link=True)
            self._close_wake()

    def unplug(self) -> None:
        """Pull the USB cable: the pty closes (driver writes get EIO), the symlink goes, relays drop."""
        with self._lock:
            self._check_running()
            self._unplug(remove_link=True)
            self._wake()

    def replug(self) -> None:
        """Plug a fresh pty in (power-cycling the board if it was plugged) and re-point the symlink atomically."""
        with self._lock:
            self._check_running()
            self._unplug(remove_link=False)
            self._plug()
            self._wake()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Wait until ``predicate()`` is true (re-checked after every received chunk); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def __enter__(self) -> UsbRelayEmulator:
        """Start the emulator."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the emulator."""
        self.stop()

    # ------------------------------------------------------------------- helpers
    # The methods below are called with self._lock held.

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("emulator is not running")

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _plug(self) -> None:
        master, slave = plug_pty(pathlib.Path(self.path))
        # The emulator keeps its own slave descriptor open so the master never reads EIO
        # while the driver has the port closed.
        self._master, self._slave = master, slave
        self._generation += 1
        self._buffer.clear()

    def _unplug(self, remove_link: bool) -> None:
        if self._master >= 0:
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
            self._generation += 1
            self._buffer.clear()
            self._states = dict.fromkeys(self._states, False)  # USB power gone: every relay drops
            self._changed.notify_all()
        if remove_link:
            self.path.unlink(missing_ok=True)

    def _feed(self, data: bytes) -> None:
        """Parse received bytes, applying every complete valid frame."""
        self._raw += data
        buf = self._buffer
        buf += data
        while buf:
            start = buf.find(_START)
            if start < 0:
                self._garbage += len(buf)
                buf.clear()
                break
            if start:
                self._garbage += start
                del buf[:start]
            if len(buf) < _FRAME_LEN:
                break
            _, channel, state, checksum = buf[:_FRAME_LEN]
            if (checksum != (_START + channel + state) & 0xFF or state not in (0, 1)
                    or not 1 <= channel <= self.channels):
                self._bad_frames += 1
                del buf[:1]  # resynchronise on the next 0xA0
                continue
            del buf[:_FRAME_LEN]
            self._frames += 1
            self._states[channel] = bool(state)
            self._log.append((time.time(), channel, bool(state)))
        self._changed.notify_all()

    # ------------------------------------------------------------------- reader

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                master, generation, wake = self._master, self._generation, self._wake_r
            poller = select.poll()
            poller.register(wake, select.POLLIN)
            if master >= 0:
                poller.register(master, select.POLLIN)
            events = dict(poller.poll())
            if events.get(wake):
                try:
                    os.read(wake, 4096)
                except BlockingIOError:
                    pass
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
                elif data is not None or mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    failed = True
            if failed:  # do not spin on a master that keeps reporting an error
                select.select([wake], [], [], _ERROR_BACKOFF_S)
