"""An emulated CH340 USB relay board ("LCUS" style) on a pseudo-terminal.

The driver (``firmware.drivers.relays.usb.UsbRelayBoard``) opens the
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

import pathlib
import time

from sim.emulator import PtyEmulator, StartStop

__all__ = ["UsbRelayEmulator"]

_START = 0xA0
_FRAME_LEN = 4


class UsbRelayEmulator(StartStop, PtyEmulator):
    """A USB relay board with ``channels`` relays behind the pty symlink ``directory/usbrelay.tty``.

    Observations: ``states`` (channel → energized), ``log`` of applied frames
    as ``(time.time(), channel, energized)``, ``raw`` (every byte received),
    ``frames`` (valid frames applied), ``bad_frames`` (frames rejected for a
    wrong checksum, a channel outside 1..channels or a state other than 0/1;
    never applied) and ``garbage`` (bytes skipped while resynchronising).
    ``plugged``, ``unplug()``, ``replug()`` and ``wait_for()`` come from
    ``PtyEmulator``; ``unplug()`` drops every relay.
    """

    def __init__(self, directory: pathlib.Path, channels: int = 4) -> None:
        """Describe a board whose symlink lives in ``directory``; nothing is created until start()."""
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 255:
            raise ValueError(f"channels must be an integer 1..255, not {channels!r}")
        self.directory = pathlib.Path(directory)
        self.channels = channels
        super().__init__(self.directory / "usbrelay.tty")
        self._states = dict.fromkeys(range(1, channels + 1), False)
        self._log: list[tuple[float, int, bool]] = []
        self._raw = bytearray()
        self._buffer = bytearray()  # bytes of an incomplete frame
        self._frames = 0
        self._bad_frames = 0
        self._garbage = 0

    # ----------------------------------------------------------------- public API

    @property
    def path(self) -> pathlib.Path:
        """The stable symlink the driver opens as its serial port."""
        return self._link

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

    def start(self) -> None:
        """Plug the board in (pty and symlink) and start the reader thread."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("emulator already started")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._start("usbrelay-emulator")

    def stop(self) -> None:
        """Stop the reader, close the pty and remove the symlink. Idempotent."""
        self._stop()

    # ------------------------------------------------------------------- helpers
    # The methods below are called with self._lock held.

    def _on_plug(self) -> None:
        self._buffer.clear()

    def _on_unplug(self) -> None:
        self._buffer.clear()
        self._states = dict.fromkeys(self._states, False)  # USB power gone: every relay drops

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
