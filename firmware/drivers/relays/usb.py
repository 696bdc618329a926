"""CH340 USB serial relay boards ("LCUS-1/2/4/8" style).

The board listens at 9600 8N1 and never answers. Each command is four bytes:
``A0 <channel> <state> <checksum>``, channel 1-based, state 0x01 = energized
and 0x00 = de-energized, checksum = (0xA0 + channel + state) & 0xFF.

The board is powered from USB, so an unplugged board drops all its relays.
When a write fails (SerialException/OSError, the adapter gone) the driver
closes the port, ``connected`` turns False and ``set`` raises RelayError
saying the board is unplugged. The next ``set``/``open`` reopens the port and
first switches every channel off (as a freshly powered board is), so a replugged
board works again without a restart. No call blocks for long: writes time
out after ``WRITE_TIMEOUT_S``.
"""

from __future__ import annotations

import errno
import threading

import serial

from firmware import serialport
from firmware.drivers.relays.base import CommandedStates, RelayError, check_channel

__all__ = ["UsbRelayBoard", "frame"]

START = 0xA0
ON = 0x01
OFF = 0x00
MAX_CHANNELS = 8  # LCUS boards come with 1, 2, 4 or 8 channels
WRITE_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 0.05
_ABSENT = {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EIO}


def frame(channel: int, energized: bool) -> bytes:
    """The 4-byte command that drives ``channel`` (1-based) on or off."""
    state = ON if energized else OFF
    return bytes((START, channel, state, (START + channel + state) & 0xFF))


class UsbRelayBoard(CommandedStates):
    """A CH340 USB relay board on a serial port (channel n = the board's relay n)."""

    def __init__(self, port: str, channels: int = 1, baud: int = 9600) -> None:
        """Validate the board profile parameters; the port is not opened here."""
        if not isinstance(port, str) or not port.strip():
            raise ValueError(f"port must be a serial device path such as /dev/ttyUSB0, not {port!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be an integer 1..{MAX_CHANNELS}, not {channels!r}")
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        self.port = port
        self.channels = channels
        self.baud = baud
        self.name = f"usb relay on {port}"
        self._lock = threading.RLock()
        self._serial: serial.Serial | None = None
        self._states: dict[int, bool] = {}  # last state written to the board, per channel
        self._opened_before = False
        self._open_error = ""

    # ----------------------------------------------------------------- interface

    def open(self) -> None:
        """Open the port. The first open switches every channel off; a reopen re-sends the last states."""
        with self._lock:
            self._ensure_open(skip=None)

    def set(self, channel: int, energized: bool) -> None:
        """Drive one channel, reopening the port first if it was lost."""
        check_channel(channel, self.channels)
        energized = bool(energized)
        with self._lock:
            self._ensure_open(skip=channel)
            self._write(frame(channel, energized))
            self._states[channel] = energized

    def release(self) -> None:
        """Switch every channel off if the board is reachable, then close the port. Never raises."""
        with self._lock:
            try:
                if self._serial is None or not self._healthy(self._serial):
                    self._close()
                    self._serial = self._try_open()
                if self._serial is not None:
                    off = self._all_off()
                    self._serial.write(b"".join(frame(ch, on) for ch, on in off.items()))
                    self._states = off
            except Exception:  # releasing must never raise; an unplugged board is off anyway
                pass
            self._close()

    @property
    def connected(self) -> bool:
        """Whether the port is open and still the plugged-in board (no hang-up, device node unchanged).

        Lock-free and non-blocking, so the status snapshot never waits behind a write.
        """
        port = self._serial
        return port is not None and self._healthy(port)

    # ------------------------------------------------------------------- helpers

    def _ensure_open(self, skip: int | None) -> None:
        """Open the port if needed and bring the board to the known states (``skip``: about to be set)."""
        if self._serial is not None:
            if self._healthy(self._serial):
                return
            self._close()  # a stale descriptor: the board was unplugged (and maybe plugged back)
        port = self._try_open()
        if port is None:
            raise RelayError(f"{self.name}: cannot open: {self._open_error}")
        self._serial = port
        # Every (re)open starts with all channels off, as the board itself does on power-up:
        # re-energizing is the relay action's job, behind its interlock with the peer.
        self._states = self._all_off()
        states = {ch: on for ch, on in self._states.items() if ch != skip}
        if states:
            self._write(b"".join(frame(ch, on) for ch, on in sorted(states.items())))
        self._opened_before = True

    def _try_open(self) -> serial.Serial | None:
        """Open the port 8N1 without flow control; None (reason in _open_error) if it is not there."""
        try:
            return serialport.open_port(self.port, self.baud, READ_TIMEOUT_S, WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._open_error = serialport.reason(exc)
            if isinstance(exc, OSError) and exc.errno in _ABSENT:
                self._open_error += " (board unplugged?)"
            return None

    def _write(self, data: bytes) -> None:
        assert self._serial is not None
        try:
            self._serial.write(data)
        except serial.SerialTimeoutException:
            self._close()
            raise RelayError(f"{self.name}: write timed out after {WRITE_TIMEOUT_S:g} s "
                             "(board unplugged or hung?)") from None
        except (serial.SerialException, OSError) as exc:
            self._close()
            raise RelayError(f"{self.name}: unplugged ({serialport.reason(exc)}); "
                             "will reopen on the next command") from None

    def _healthy(self, port: serial.Serial) -> bool:
        """The open descriptor is not hung up and the port path still names the same device."""
        return serialport.port_gone(port, self.port) is None

    def _close(self) -> None:
        port, self._serial = self._serial, None
        serialport.close_quietly(port)
