"""An emulated Crystalfontz CFA-635 / CFA-533 packet module on a pseudo-terminal.

The driver (``firmware.panel.cfa``) opens ``.port``: a stable symlink in
a temporary directory (like a udev ``/dev/serial/by-id`` link) pointing at
the slave side of a raw pty. A background thread reads the master side,
decodes packets with the driver's own codec (``firmware.panel.cfa.protocol``,
the only part of the driver the emulator uses; checked against the reference
values in the tests) and answers every command as the module would: a
response ``0x40|cmd`` with its data, or an error ``0xC0|cmd`` for an
unknown command or bad data. ``press``/``release`` send key reports for the
keys enabled in the report masks.

The emulator reads the line speed the driver configured on the pty and, like
a real module at another baud rate, hears only noise unless it is the
model's (115200 for the CFA-635, 19200 for the CFA-533).

Faults: ``drop_next_acks(n)`` ignores the next n commands entirely (the
driver must retry), ``corrupt_next(n)`` sends the next n packets with a bad
CRC, ``unplug()`` closes the pty and removes the symlink (the driver's
descriptor fails with EIO), ``replug()`` plugs a fresh pty in at the same
symlink path with the module in its power-on state (boot screen, LEDs off),
so the driver has to re-send what it wants shown.

All methods and properties are thread-safe; the properties return copies.
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import tempfile
import termios
from collections.abc import Callable
from types import TracebackType
from typing import Self

from firmware.panel.base import Key
from firmware.panel.cfa.protocol import KEY_MASK_BITS, KIND_COMMAND, MODELS, PacketDecoder, encode_packet
from sim.emulator import PtyEmulator

__all__ = ["CfaEmulator"]

_KEY_PRESS_CODES = {Key.UP: 1, Key.DOWN: 2, Key.LEFT: 3, Key.RIGHT: 4, Key.ENTER: 5, Key.BACK: 6}
_VERSIONS = {"cfa635": b"CFA635:h1.5,c1.0", "cfa533": b"CFA533:h1.4,u1v2"}
_BOOT_TEXT = {"cfa635": ["Crystalfontz", "CFA635", "", ""], "cfa533": ["Crystalfontz", "CFA533"]}
_SPEEDS = {getattr(termios, f"B{rate}"): rate for rate in (9600, 19200, 38400, 57600, 115200)}
_LED_INDEXES = range(5, 13)  # CFA-635 command 34: 5..12 are the LEDs (0..4 are GPIOs)


class CfaEmulator(PtyEmulator):
    """A Crystalfontz module (``model`` "cfa635" or "cfa533") behind the pty symlink ``.port``.

    Observations: ``text_rows()``, ``backlight``, ``contrast``, ``leds``
    (command-34 index → level, CFA-635 only), ``key_masks`` (press,
    release), ``host_watchdog``, ``commands_seen`` (command number → count of
    valid commands received, dropped ones included), ``bad_packets`` (bad CRC
    or garbage runs), ``noise_bytes`` (bytes heard at the wrong baud rate),
    ``line_baudrate`` and ``plugged``. Starts at construction; ``close()``
    stops it and removes its directory if it made one. ``replug()`` powers
    the module up again (boot screen, LEDs off, no key reports).
    """

    _RECHECK_S = 0.1  # the line speed the driver sets on the pty changes without a notify

    def __init__(self, model: str = "cfa635", directory: pathlib.Path | str | None = None) -> None:
        """Plug the module in: a pty, its symlink in ``directory`` (a new temp dir if None) and the reader."""
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
        self.model = model
        self.columns = MODELS[model].columns
        self.rows = MODELS[model].rows
        self.baudrate = MODELS[model].baudrate
        self._own_dir = directory is None
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="cfa-") if directory is None else directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        super().__init__(self.directory / f"{model}.tty")
        self._decoder = PacketDecoder(MODELS[model].max_data)
        self._commands: collections.Counter[int] = collections.Counter()
        self._drop = 0
        self._corrupt = 0
        self._dropped = 0
        self._noise = 0
        self._host_resets: list[bytes] = []
        with self._lock:
            self._start(f"{model}-emulator")  # plugging in powers the module up

    # ----------------------------------------------------------------- observations

    @property
    def port(self) -> str:
        """The stable symlink the driver opens (it exists only while plugged)."""
        return str(self._link)

    def text_rows(self) -> list[str]:
        """The display buffer, one string of ``columns`` characters per row."""
        with self._lock:
            return ["".join(row) for row in self._text]

    @property
    def backlight(self) -> int:
        """Backlight level 0–100."""
        with self._lock:
            return self._backlight

    @property
    def contrast(self) -> int:
        """Contrast setting."""
        with self._lock:
            return self._contrast

    @property
    def leds(self) -> dict[int, int]:
        """LED levels by command-34 index (green 11, 9, 7, 5 and red 12, 10, 8, 6); empty on the CFA-533."""
        with self._lock:
            return {index: level for index, level in self._gpio.items() if index in _LED_INDEXES}

    @property
    def key_masks(self) -> tuple[int, int]:
        """The (press, release) key report masks."""
        with self._lock:
            return self._masks

    @property
    def host_watchdog(self) -> int:
        """The host watchdog timeout in seconds (0 = off)."""
        with self._lock:
            return self._watchdog

    @property
    def commands_seen(self) -> collections.Counter[int]:
        """Valid commands received, by command number (including ignored ones)."""
        with self._lock:
            return collections.Counter(self._commands)

    @property
    def bad_packets(self) -> int:
        """Received packets dropped for a bad CRC, bad length or garbage."""
        with self._lock:
            return self._decoder.bad_packets

    @property
    def dropped(self) -> int:
        """Commands ignored on purpose by ``drop_next_acks``."""
        with self._lock:
            return self._dropped

    @property
    def noise_bytes(self) -> int:
        """Bytes received while the line was at another baud rate (heard as noise)."""
        with self._lock:
            return self._noise

    @property
    def line_baudrate(self) -> int | None:
        """The baud rate the driver configured on the line (None if unplugged or unusual)."""
        with self._lock:
            return self._line_baudrate()

    # ----------------------------------------------------------------- keys and faults

    def press(self, key: Key | str) -> bool:
        """Press ``key`` (a Key or its name; EXIT is Key.BACK): send the report if its press mask bit is set."""
        return self._key_report(key, release=False)

    def release(self, key: Key | str) -> bool:
        """Release ``key``: send the report if its release mask bit is set."""
        return self._key_report(key, release=True)

    def drop_next_acks(self, count: int) -> None:
        """Ignore the next ``count`` commands entirely (not applied, not answered)."""
        with self._lock:
            self._drop += count

    def corrupt_next(self, count: int) -> None:
        """Send the next ``count`` packets (responses or reports) with a wrong CRC."""
        with self._lock:
            self._corrupt += count

    def inject(self, data: bytes) -> None:
        """Write raw bytes toward the driver (line noise, hand-made packets)."""
        with self._lock:
            self._send_raw(bytes(data))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true (re-checked after every received chunk and every 0.1 s); False on timeout."""
        return super().wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop the reader, unplug and remove the directory if the emulator made it. Idempotent."""
        if self._stop(join_timeout=5) and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        """The emulator (already running)."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the emulator."""
        self.close()

    # ------------------------------------------------------------------- helpers
    # The methods below are called with self._lock held.

    def _on_plug(self) -> None:
        self._power_on()

    def _power_on(self) -> None:
        boot = _BOOT_TEXT[self.model]
        self._text = [list(boot[row].center(self.columns)) for row in range(self.rows)]
        self._backlight = 100
        self._contrast = 95
        self._gpio = dict.fromkeys(_LED_INDEXES, 0) if MODELS[self.model].leds else {}
        self._masks = (0, 0)  # nothing reported until the host asks (proves the driver sets masks)
        self._watchdog = 0
        self._down: set[Key] = set()
        self._decoder.reset()

    def _line_baudrate(self) -> int | None:
        if self._slave < 0:
            return None
        try:
            return _SPEEDS.get(termios.tcgetattr(self._slave)[5])
        except termios.error:
            return None

    def _send_raw(self, data: bytes) -> None:
        if self._master < 0:
            return
        try:
            os.write(self._master, data)
        except OSError:
            pass  # the line is full (nobody reading) or gone: the bytes are lost, as on a wire

    def _send(self, type_: int, data: bytes = b"") -> None:
        packet = bytearray(encode_packet(type_, data))
        if self._corrupt:
            self._corrupt -= 1
            packet[-1] ^= 0xFF
        self._send_raw(bytes(packet))

    def _key_report(self, key: Key | str, release: bool) -> bool:
        key = key if isinstance(key, Key) else Key(str(key).lower().replace("exit", "back"))
        with self._lock:
            if release:
                self._down.discard(key)
            else:
                self._down.add(key)
            if not self._masks[1 if release else 0] & KEY_MASK_BITS[key] or self._master < 0:
                return False
            self._send(0x80, bytes((_KEY_PRESS_CODES[key] + (6 if release else 0),)))
            return True

    def _feed(self, data: bytes) -> None:
        if self._line_baudrate() != self.baudrate:
            self._noise += len(data)  # a real module at another speed hears only noise
            return
        for packet in self._decoder.feed(data):
            if packet.kind != KIND_COMMAND:
                continue  # the host never sends responses or reports
            self._commands[packet.code] += 1
            if self._drop:
                self._drop -= 1
                self._dropped += 1
                continue
            reply = self._execute(packet.code, packet.data)
            if reply is None:
                self._send(0xC0 | packet.code)
            else:
                self._send(0x40 | packet.code, reply)

    def _execute(self, cmd: int, data: bytes) -> bytes | None:
        """Apply one command; the response data, or None for an error answer."""
        n = len(data)
        if cmd == 0:  # ping: echo
            return data if n <= 16 else None
        if cmd == 1 and n == 0:  # hardware and firmware version
            return _VERSIONS[self.model]
        if cmd == 5 and n == 3:  # reboot module / reset or power off host
            if data == bytes((8, 18, 99)):
                self._power_on()
            else:
                self._host_resets.append(data)
            return b""
        if cmd == 6 and n == 0:
            self._text = [[" "] * self.columns for _ in range(self.rows)]
            return b""
        if cmd == 13 and n in (1, 2):
            self._contrast = data[0]
            return b""
        if cmd == 14 and n in (1, 2) and data[0] <= 100:
            self._backlight = data[0]
            return b""
        if cmd == 23 and n == 2 and data[0] <= 0x3F and data[1] <= 0x3F:
            self._masks = (data[0], data[1])
            return b""
        if cmd == 24 and n == 0:  # poll keypad: keys down now (no latched history here)
            down = sum(KEY_MASK_BITS[key] for key in self._down)
            return bytes((down, 0, 0))
        if cmd == 29 and n == 1:
            self._watchdog = data[0]
            return b""
        if cmd == 31 and n >= 2 and data[0] < self.columns and data[1] < self.rows:
            col, row = data[0], data[1]
            for offset, byte in enumerate(data[2:self.columns - col + 2]):
                self._text[row][col + offset] = chr(byte)
            return b""
        if cmd == 34 and n == 2 and self._gpio and data[0] <= 12 and data[1] <= 100:
            self._gpio[data[0]] = data[1]
            return b""
        if cmd == 35 and n == 1 and self._gpio and data[0] <= 12:
            return bytes((data[0], self._gpio.get(data[0], 0), 0, 0))
        return None
