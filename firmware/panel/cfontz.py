"""Crystalfontz CFA-635 / CFA-533 packet panels on a USB serial port.

Protocol (see shared/reference/front-panel.md): every packet is
``[type][len][data…][crc_lo][crc_hi]`` with a CRC-16/X-25 over type, len and
data. The host sends one command at a time and waits up to 250 ms for the
response (``0x40|cmd``) or error (``0xC0|cmd``); key reports (``0x80``) arrive
at any time.

Threads and latency. One `CfaPanel` per port owns two threads:

- the *reader* reads the port, decodes packets, hands responses to the
  command waiting for them and dispatches reports to listeners; when the
  port fails (USB unplugged) it closes it and polls every
  ``reopen_interval`` to open it again, like ``firmware.core.links``;
- the *sync* thread pushes the wanted state (text rows, backlight,
  contrast, LED levels, key masks, host watchdog) to the module, one
  acknowledged command at a time, and drives LED blinking. After a
  reconnect it forgets what the module shows and re-sends everything.

So `CfaDisplay.show_text`, `set_backlight` and the `CfaIndicators` setters
never wait for the module: they record the wanted state and return at once
(``CfaPanel.flush`` waits until the module has acknowledged it). Only the
direct calls `CfaPanel.command`, `ping` and `set_host_watchdog` wait for the
module's answer and raise `CfaError` subclasses.

The adapters (`CfaDisplay`, `CfaKeys`, `CfaIndicators`) take the keyword
arguments of a board profile and share one `CfaPanel` per port through a
reference-counted registry, so one profile's display, keys and LEDs use one
connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import serial
from luma.core.bitmap_font import embedded_fonts
from luma.lcd.const import hd44780
from PIL import Image, ImageDraw

from firmware import serialport
from firmware.panel.base import (
    Blink,
    Display,
    Indicators,
    Key,
    KeyCallback,
    KeyEvent,
    KeySource,
)

__all__ = [
    "MODELS",
    "CfaDisconnected",
    "CfaDisplay",
    "CfaError",
    "CfaIndicators",
    "CfaKeys",
    "CfaPanel",
    "CfaRejected",
    "CfaTimeout",
    "LedColour",
    "Model",
    "Packet",
    "PacketDecoder",
    "acquire_panel",
    "crc16",
    "encode_packet",
    "release_panel",
]

log = logging.getLogger(__name__)

# Command numbers.
CMD_PING = 0
CMD_CLEAR = 6
CMD_CONTRAST = 13
CMD_BACKLIGHT = 14
CMD_KEY_MASKS = 23
CMD_HOST_WATCHDOG = 29
CMD_TEXT = 31
CMD_LED = 34

KIND_COMMAND, KIND_RESPONSE, KIND_REPORT, KIND_ERROR = 0x00, 0x40, 0x80, 0xC0
REPORT_KEY = 0x80

# Key report codes (press; release is press + 6) and key-mask bits, in the module's terms.
KEY_CODES: dict[int, Key] = {1: Key.UP, 2: Key.DOWN, 3: Key.LEFT, 4: Key.RIGHT, 5: Key.ENTER, 6: Key.BACK}
KEY_MASK_BITS: dict[Key, int] = {
    Key.UP: 0x01, Key.ENTER: 0x02, Key.BACK: 0x04, Key.LEFT: 0x08, Key.RIGHT: 0x10, Key.DOWN: 0x20,
}
ALL_KEYS_MASK = 0x3F

READ_TIMEOUT_S = 0.05  # how often the reader looks up from a silent port (stop, lost write)
STALE_CHECK_S = 0.5  # how often a silent port is checked for a vanished device node
WRITE_TIMEOUT_S = 0.5
_OVERHEAD = 4  # type, len, crc_lo, crc_hi


@dataclass(frozen=True)
class Model:
    """What differs between the supported modules."""

    name: str
    columns: int
    rows: int
    baudrate: int
    max_data: int
    leds: int  # bicolour LEDs (0 on the CFA-533)


MODELS: dict[str, Model] = {
    "cfa635": Model("cfa635", columns=20, rows=4, baudrate=115200, max_data=22, leds=4),
    "cfa533": Model("cfa533", columns=16, rows=2, baudrate=19200, max_data=18, leds=0),
}

LedColour = Literal["off", "green", "red", "amber"]
_COLOURS: dict[str, tuple[bool, bool]] = {  # (green, red)
    "off": (False, False), "green": (True, False), "red": (False, True), "amber": (True, True),
}
_BLINK_PERIOD_S = {"slow": 1.0, "fast": 0.25}  # 1 Hz and 4 Hz, half on and half off


def get_model(model: str) -> Model:
    """The `Model` named ``model``; ValueError listing the supported ones otherwise."""
    try:
        return MODELS[model]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Crystalfontz model {model!r}; expected one of {sorted(MODELS)}") from None


def led_indexes(led: int) -> tuple[int, int]:
    """The CFA-635 (green, red) command-34 indexes of bicolour LED ``led`` (0 = top … 3 = bottom)."""
    if isinstance(led, bool) or not isinstance(led, int) or not 0 <= led <= 3:
        raise ValueError(f"LED must be 0..3 (top to bottom), not {led!r}")
    return 11 - 2 * led, 12 - 2 * led


# ------------------------------------------------------------------------- codec


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/X-25 (reflected 0x1021, init 0xFFFF, final xor 0xFFFF): b"123456789" → 0x906E."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def encode_packet(type_: int, data: bytes = b"") -> bytes:
    """One packet: type, length, data and the CRC low byte first."""
    if not 0 <= type_ <= 0xFF:
        raise ValueError(f"packet type must be a byte, not {type_!r}")
    if len(data) > 0xFF:
        raise ValueError(f"packet data too long: {len(data)} bytes")
    body = bytes((type_, len(data))) + bytes(data)
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


@dataclass(frozen=True)
class Packet:
    """A decoded packet: its type byte and data."""

    type: int
    data: bytes = b""

    @property
    def kind(self) -> int:
        """The top two bits: KIND_COMMAND, KIND_RESPONSE, KIND_REPORT or KIND_ERROR."""
        return self.type & 0xC0

    @property
    def code(self) -> int:
        """The low six bits: the command number (or report number)."""
        return self.type & 0x3F

    def encode(self) -> bytes:
        """The packet's bytes on the wire."""
        return encode_packet(self.type, self.data)


class PacketDecoder:
    """Incremental decoder: feed it bytes in any chunks, get whole packets with a valid CRC.

    A packet whose length is out of range or whose CRC is wrong is dropped by
    skipping one byte and trying again, which resynchronises after garbage.
    If the packet at the front is still incomplete but a complete valid packet
    starts further on, the front bytes are garbage (a stray length byte would
    otherwise make the decoder wait for bytes that never come). ``bad_packets``
    counts each run of skipped bytes once; ``skipped_bytes`` counts the bytes.
    """

    def __init__(self, max_data: int = 22) -> None:
        """Accept packets with up to ``max_data`` data bytes (22 on the CFA-635, 18 on the CFA-533)."""
        self.max_data = max_data
        self.packets = 0
        self.bad_packets = 0
        self.skipped_bytes = 0
        self._buf = bytearray()
        self._in_sync = True

    def feed(self, data: bytes) -> list[Packet]:
        """Add received bytes; return the packets completed by them, in order."""
        buf = self._buf
        buf += data
        out: list[Packet] = []
        while len(buf) >= _OVERHEAD:
            size = self._size_at(0)
            if size > 0:
                out.append(Packet(buf[0], bytes(buf[2:size - 2])))
                del buf[:size]
                self.packets += 1
                self._in_sync = True
            elif size == 0:
                self._skip(1)
            else:
                later = next((at for at in range(1, len(buf) - _OVERHEAD + 1) if self._size_at(at) > 0), None)
                if later is None:
                    break
                self._skip(later)
        return out

    def reset(self) -> None:
        """Forget buffered bytes (a new connection); the counters are kept."""
        self._buf.clear()
        self._in_sync = True

    def _size_at(self, at: int) -> int:
        """Size of a valid packet starting at ``at``; 0 if invalid there, -1 if incomplete."""
        buf = self._buf
        if len(buf) - at < 2:
            return -1
        length = buf[at + 1]
        if length > self.max_data:
            return 0
        size = length + _OVERHEAD
        if len(buf) - at < size:
            return -1
        crc = buf[at + size - 2] | buf[at + size - 1] << 8
        return size if crc16(buf[at:at + size - 2]) == crc else 0

    def _skip(self, count: int) -> None:
        del self._buf[:count]
        self.skipped_bytes += count
        if self._in_sync:
            self.bad_packets += 1
            self._in_sync = False


# ------------------------------------------------------------------------- errors


class CfaError(OSError):
    """A Crystalfontz module that cannot be opened, does not answer or refuses a command."""


class CfaTimeout(CfaError):
    """No response after every try."""


class CfaRejected(CfaError):
    """The module answered with an error packet (0xC0|cmd)."""


class CfaDisconnected(CfaError):
    """The port is not open (device unplugged); the reader is polling to reopen it."""


# ------------------------------------------------------------------------- connection

ReportListener = Callable[[Packet], None]
ConnectionListener = Callable[[bool], None]
_Slot = tuple[Any, ...]


@dataclass
class _Led:
    colour: str
    mode: Blink
    level: int


class CfaPanel:
    """One connection to a Crystalfontz module: commands, reports, wanted state and reconnects.

    Counters (read-only properties): ``retries`` (commands re-sent after no
    answer), ``bad_crc`` (received packets dropped for a bad CRC or length),
    ``reconnects`` (successful reopens after a lost port), ``timeouts``
    (commands that got no answer at all) and ``errors`` (state pushes that
    failed).
    """

    def __init__(self, port: str, model: str = "cfa635", baudrate: int | None = None, *,
                 timeout: float = 0.25, tries: int = 3, reopen_interval: float = 0.1,
                 retry_interval: float = 1.0) -> None:
        """Open ``port`` (CfaError naming the port and reason if impossible) and start the threads.

        ``baudrate`` defaults to the model's (115200 for the CFA-635, 19200 for
        the CFA-533). ``timeout`` is the wait for each response, ``tries`` how
        many times a command is sent, ``reopen_interval`` how often a lost port
        is reopened and ``retry_interval`` how long the state push rests after
        the module stopped answering.
        """
        if not isinstance(port, str) or not port.strip():
            raise ValueError(f"port must be a serial device path such as /dev/ttyUSB0, not {port!r}")
        self.model = get_model(model)
        if baudrate is None:
            baudrate = self.model.baudrate
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive integer, not {baudrate!r}")
        if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
            raise ValueError(f"tries must be an integer >= 1, not {tries!r}")
        if not timeout > 0 or not reopen_interval > 0 or not retry_interval > 0:
            raise ValueError("timeout, reopen_interval and retry_interval must be > 0")
        self.port = port
        self.baudrate = baudrate
        self.timeout = float(timeout)
        self.tries = tries
        self.reopen_interval = float(reopen_interval)
        self.retry_interval = float(retry_interval)
        self.name = f"{self.model.name} panel on {port}"

        self._cmd_lock = threading.Lock()  # one command at a time
        self._port_lock = threading.Lock()  # writes vs. the reader closing the port
        self._cond = threading.Condition()  # guards the state below; wakes the sync thread
        self._stop = threading.Event()
        self._decoder = PacketDecoder(self.model.max_data)
        self._serial: serial.Serial | None = None
        self._lost: str | None = None  # set by a failed write; the reader closes the port
        self._generation = 0  # bumped on every open and close
        self._pending: int | None = None  # command awaiting its response
        self._response: Packet | None = None
        self._answered = threading.Event()
        self._want: dict[_Slot, tuple[int, bytes]] = {}
        self._have: dict[_Slot, tuple[int, bytes]] = {}
        self._leds: dict[int, _Led] = {}
        self._blink_epoch = time.monotonic()
        self._rest_until = 0.0
        self._failing = False
        self._report_listeners: list[ReportListener] = []
        self._connection_listeners: list[ConnectionListener] = []
        self._retries = self._timeouts = self._reconnects = self._errors = 0

        port_obj = self._open()
        if isinstance(port_obj, str):
            raise CfaError(f"{self.name}: cannot open {port}: {port_obj}")
        self._attach(port_obj)
        self._reader = threading.Thread(target=self._read_loop, name=f"cfa-reader-{port}", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name=f"cfa-sync-{port}", daemon=True)
        self._reader.start()
        self._syncer.start()

    # ----------------------------------------------------------------- properties

    @property
    def connected(self) -> bool:
        """Whether the port is open (the module may still fail to answer; see ``timeouts``)."""
        return self._serial is not None

    @property
    def retries(self) -> int:
        """Commands re-sent because no answer came in time."""
        return self._retries

    @property
    def bad_crc(self) -> int:
        """Received packets dropped for a bad CRC, a bad length or garbage."""
        return self._decoder.bad_packets

    @property
    def reconnects(self) -> int:
        """Times the port was reopened after it was lost."""
        return self._reconnects

    @property
    def timeouts(self) -> int:
        """Commands that were not answered after every try."""
        return self._timeouts

    @property
    def errors(self) -> int:
        """State pushes that failed (timed out or were rejected)."""
        return self._errors

    def stats(self) -> dict[str, Any]:
        """The connection state and counters as plain data (for the status snapshot)."""
        return {"port": self.port, "model": self.model.name, "connected": self.connected,
                "retries": self.retries, "bad_crc": self.bad_crc, "reconnects": self.reconnects,
                "timeouts": self.timeouts, "errors": self.errors}

    # ----------------------------------------------------------------- commands

    def command(self, cmd: int, data: bytes = b"", *, tries: int | None = None,
                timeout: float | None = None) -> bytes:
        """Send command ``cmd`` and return the response data, retrying when no answer comes.

        Raises CfaTimeout after ``tries`` unanswered sends, CfaRejected if the
        module answers with an error packet, CfaDisconnected if the port is not
        open. Blocks for at most ``tries`` × ``timeout``.
        """
        if not 0 <= cmd <= 0x3F:
            raise ValueError(f"command must be 0..63, not {cmd!r}")
        data = bytes(data)
        if len(data) > self.model.max_data:
            raise ValueError(f"command {cmd}: {len(data)} data bytes, the {self.model.name} takes "
                             f"at most {self.model.max_data}")
        tries = self.tries if tries is None else tries
        timeout = self.timeout if timeout is None else timeout
        packet = encode_packet(cmd, data)
        with self._cmd_lock:
            try:
                for attempt in range(tries):
                    if self._stop.is_set():
                        raise CfaDisconnected(f"{self.name}: closed")
                    if attempt:
                        self._retries += 1
                    with self._cond:
                        self._pending, self._response = cmd, None
                        self._answered.clear()
                    self._write(packet)
                    if not self._answered.wait(timeout):
                        continue
                    response = self._response
                    if response is None:
                        raise CfaDisconnected(f"{self.name}: port lost while waiting for command {cmd}")
                    if response.kind == KIND_ERROR:
                        raise CfaRejected(f"{self.name}: module rejected command {cmd} "
                                          f"(data {data.hex(' ') or 'none'})")
                    return response.data
                self._timeouts += 1
                raise CfaTimeout(f"{self.name}: no answer to command {cmd} after {tries} tries of "
                                 f"{timeout * 1000:.0f} ms")
            finally:
                with self._cond:
                    self._pending = None

    def ping(self, payload: bytes = b"") -> bytes:
        """Ping (command 0); the module echoes ``payload`` (up to 16 bytes) back."""
        return self.command(CMD_PING, payload)

    def set_host_watchdog(self, seconds: int) -> None:
        """Arm the module's host watchdog (1–255 s; 0 = off) and wait for the module's answer.

        The setting is also kept and re-sent after a reconnect. Raises
        CfaError if the module is unplugged or does not answer (it is then
        sent when the module is back).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 255:
            raise ValueError(f"host watchdog must be 0 (off) to 255 seconds, not {seconds!r}")
        value = (CMD_HOST_WATCHDOG, bytes((seconds,)))
        self._set_want(("watchdog",), value)
        self.command(*value)
        with self._cond:
            if self._want.get(("watchdog",)) == value:
                self._have[("watchdog",)] = value
            self._cond.notify_all()

    def clear(self) -> None:
        """Want every row blank (sent as rows of spaces, so the diffing stays exact)."""
        self.set_text([" " * self.model.columns] * self.model.rows)

    # ----------------------------------------------------------------- wanted state (never blocks)

    def set_text(self, lines: list[str]) -> None:
        """Want these rows on the glass; rows equal to what the module has are not re-sent.

        Each row is padded or cut to the width; characters outside printable
        ASCII become '?' (the module's ROM would show something else).
        """
        with self._cond:
            for row in range(self.model.rows):
                text = lines[row] if row < len(lines) else ""
                text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
                text = text[:self.model.columns].ljust(self.model.columns)
                self._want[("row", row)] = (CMD_TEXT, bytes((0, row)) + text.encode("ascii"))
            self._cond.notify_all()

    def text(self) -> list[str]:
        """The wanted rows (what the glass shows once the module has acknowledged them)."""
        with self._cond:
            rows = []
            for row in range(self.model.rows):
                value = self._want.get(("row", row))
                rows.append(value[1][2:].decode("ascii") if value else " " * self.model.columns)
            return rows

    def set_backlight(self, level: int) -> None:
        """Want the backlight at ``level`` (0–100; clamped)."""
        self._set_want(("backlight",), (CMD_BACKLIGHT, bytes((_clamp(level, 100, "backlight"),))))

    def set_contrast(self, level: int) -> None:
        """Want the contrast at ``level`` (0–254 on the CFA-635, 0–200 on the CFA-533; clamped)."""
        top = 254 if self.model.name == "cfa635" else 200
        self._set_want(("contrast",), (CMD_CONTRAST, bytes((_clamp(level, top, "contrast"),))))

    def set_key_masks(self, press: int, release: int) -> None:
        """Want key reports for the keys in the ``press`` and ``release`` masks (bits as KEY_MASK_BITS)."""
        for mask in (press, release):
            if not 0 <= mask <= ALL_KEYS_MASK:
                raise ValueError(f"key mask must be 0..0x3F, not {mask!r}")
        self._set_want(("keys",), (CMD_KEY_MASKS, bytes((press, release))))

    def set_led(self, led: int, colour: LedColour, mode: Blink = "on", level: int = 100) -> None:
        """Want bicolour LED ``led`` (0 top … 3 bottom) in ``colour``, steady or blinking.

        ValueError on a model without LEDs (the CFA-533).
        """
        if not self.model.leds:
            raise ValueError(f"the {self.model.name} has no LEDs")
        led_indexes(led)
        if colour not in _COLOURS:
            raise ValueError(f"LED colour must be one of {sorted(_COLOURS)}, not {colour!r}")
        if mode not in ("off", "on", "slow", "fast"):
            raise ValueError(f"LED mode must be off, on, slow or fast, not {mode!r}")
        with self._cond:
            self._leds[led] = _Led(colour, mode, _clamp(level, 100, "LED level"))
            self._update_leds(time.monotonic())
            self._cond.notify_all()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until the module has acknowledged the whole wanted state; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.connected and self._in_step()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ----------------------------------------------------------------- listeners

    def add_report_listener(self, listener: ReportListener) -> None:
        """Call ``listener(packet)`` from the reader thread for every report (0x80+) packet."""
        with self._cond:
            self._report_listeners.append(listener)

    def remove_report_listener(self, listener: ReportListener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with self._cond:
            if listener in self._report_listeners:
                self._report_listeners.remove(listener)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        """Call ``listener(connected)`` from the reader thread when the port is lost or reopened."""
        with self._cond:
            self._connection_listeners.append(listener)

    def remove_connection_listener(self, listener: ConnectionListener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with self._cond:
            if listener in self._connection_listeners:
                self._connection_listeners.remove(listener)

    def close(self) -> None:
        """Stop both threads and close the port. Idempotent."""
        self._stop.set()
        with self._cond:
            self._response = None
            self._answered.set()  # a command waiting for an answer gives up now
            self._cond.notify_all()
        for thread in (self._reader, self._syncer):
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        with self._port_lock:
            self._close_port()

    # ----------------------------------------------------------------- port handling

    def _open(self) -> serial.Serial | str:
        """The opened port, or the reason it cannot be opened."""
        try:
            return serialport.open_port(self.port, self.baudrate, READ_TIMEOUT_S, WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            return serialport.reason(exc)

    def _attach(self, port: serial.Serial) -> None:
        try:
            port.reset_input_buffer()  # stale reports from before we opened it
        except (serial.SerialException, OSError):
            pass
        self._decoder.reset()
        with self._cond:
            self._serial, self._lost = port, None
            self._generation += 1
            self._have.clear()  # a (re)plugged module shows its boot screen: re-send everything
            self._rest_until = 0.0
            self._cond.notify_all()

    def _write(self, packet: bytes) -> None:
        with self._port_lock:
            port = self._serial
            if port is None or self._lost:
                raise CfaDisconnected(f"{self.name}: not connected ({self._lost or 'port closed'})")
            try:
                port.write(packet)
            except serial.SerialTimeoutException:
                return  # counts as an unanswered try
            except (serial.SerialException, OSError) as exc:
                self._lost = f"write failed: {serialport.reason(exc)}"
                raise CfaDisconnected(f"{self.name}: {self._lost}") from None

    def _close_port(self) -> None:
        """Close the port; called with _port_lock held."""
        port, self._serial = self._serial, None
        serialport.close_quietly(port)

    def _drop(self, why: str) -> None:
        log.warning("%s: %s; reopening when it is back", self.name, why)
        with self._port_lock:
            self._close_port()
        with self._cond:
            self._generation += 1
            self._have.clear()
            if self._pending is not None:
                self._response = None
                self._answered.set()  # fail the waiting command now, not after its timeout
            self._cond.notify_all()
        self._notify_connection(False)

    # ----------------------------------------------------------------- reader thread

    def _read_loop(self) -> None:
        last_reason = ""
        next_check = 0.0
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                result = self._open()
                if isinstance(result, str):
                    if result != last_reason:
                        log.info("%s: cannot open %s: %s (retrying)", self.name, self.port, result)
                        last_reason = result
                    self._stop.wait(self.reopen_interval)
                    continue
                self._reconnects += 1  # the first open is in __init__
                self._attach(result)
                last_reason = ""
                log.info("%s: reopened", self.name)
                self._notify_connection(True)
                continue
            if self._lost:
                self._drop(self._lost)
                continue
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial on a descriptor closed under it.
                self._drop(f"read failed: {serialport.reason(exc)}")
                continue
            if data:
                self._receive(data)
            elif time.monotonic() >= next_check:
                next_check = time.monotonic() + STALE_CHECK_S
                gone = serialport.port_gone(port, self.port)
                if gone:
                    self._drop(gone)

    def _receive(self, data: bytes) -> None:
        for packet in self._decoder.feed(data):
            if packet.kind in (KIND_RESPONSE, KIND_ERROR):
                with self._cond:
                    if packet.code == self._pending:
                        self._response = packet
                        self._answered.set()
                    # else: a late answer to a try we already gave up on; ignore it
            elif packet.kind == KIND_REPORT:
                with self._cond:
                    listeners = list(self._report_listeners)
                for listener in listeners:
                    try:
                        listener(packet)
                    except Exception:  # a listener's bug must not stop the reader
                        log.exception("%s: report listener failed", self.name)

    def _notify_connection(self, connected: bool) -> None:
        with self._cond:
            listeners = list(self._connection_listeners)
        for listener in listeners:
            try:
                listener(connected)
            except Exception:
                log.exception("%s: connection listener failed", self.name)

    # ----------------------------------------------------------------- sync thread

    def _set_want(self, slot: _Slot, value: tuple[int, bytes]) -> None:
        with self._cond:
            self._want[slot] = value
            self._cond.notify_all()

    def _in_step(self) -> bool:
        return all(self._have.get(slot) == value for slot, value in self._want.items())

    def _update_leds(self, now: float) -> float | None:
        """Set the wanted LED levels for ``now``; return when the next blink edge is due (or None)."""
        next_edge: float | None = None
        for led, state in self._leds.items():
            lit = state.mode == "on"
            period = _BLINK_PERIOD_S.get(state.mode)
            if period is not None:
                half = period / 2
                phase = int((now - self._blink_epoch) / half)
                lit = phase % 2 == 0
                edge = self._blink_epoch + (phase + 1) * half
                next_edge = edge if next_edge is None else min(next_edge, edge)
            green_on, red_on = _COLOURS[state.colour]
            for index, on in zip(led_indexes(led), (green_on, red_on)):
                level = state.level if lit and on else 0
                self._want[("led", index)] = (CMD_LED, bytes((index, level)))
        return next_edge

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                next_edge = self._update_leds(now)
                todo = None
                if self.connected and now >= self._rest_until:
                    todo = next(((slot, value) for slot, value in self._want.items()
                                 if self._have.get(slot) != value), None)
                if todo is None:
                    waits = [t - now for t in (next_edge, self._rest_until) if t is not None and t > now]
                    self._cond.notify_all()  # flush() waiters: we may be in step
                    self._cond.wait(min(waits) if waits else None)
                    continue
                generation = self._generation
            self._push(generation, *todo)

    def _push(self, generation: int, slot: _Slot, value: tuple[int, bytes]) -> None:
        try:
            self.command(*value)
        except CfaDisconnected:
            return  # the reader reopens the port; everything is re-sent then
        except CfaRejected as exc:
            self._errors += 1
            log.warning("%s", exc)  # not retried: the same bytes would be refused again
        except CfaError as exc:
            self._errors += 1
            with self._cond:
                self._rest_until = time.monotonic() + self.retry_interval
                if not self._failing:
                    log.warning("%s; retrying every %g s", exc, self.retry_interval)
                self._failing = True
            return
        with self._cond:
            if generation == self._generation:
                self._have[slot] = value
            if self._failing:
                log.info("%s: answering again", self.name)
                self._failing = False
            self._cond.notify_all()


def _clamp(level: int, top: int, what: str) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise TypeError(f"{what} must be a number 0..{top}, not {level!r}")
    return max(0, min(top, int(level)))


# ------------------------------------------------------------------------- shared connections

_registry_lock = threading.Lock()
_registry: dict[str, list[Any]] = {}  # port → [CfaPanel, reference count]


def acquire_panel(port: str, model: str = "cfa635", baudrate: int | None = None,
                  **options: Any) -> CfaPanel:
    """The shared `CfaPanel` for ``port``, opened on first use; pair with `release_panel`.

    ``options`` (timeout, tries, reopen_interval, retry_interval) apply when
    the port is first opened. A second user asking for another model or
    baud rate on the same port gets a ValueError.
    """
    wanted = get_model(model)
    with _registry_lock:
        entry = _registry.get(port)
        if entry is None:
            panel = CfaPanel(port, model, baudrate, **options)
            _registry[port] = [panel, 1]
            return panel
        panel = entry[0]
        if panel.model != wanted or (baudrate is not None and baudrate != panel.baudrate):
            raise ValueError(f"{port} is already open as a {panel.model.name} at {panel.baudrate} baud")
        entry[1] += 1
        return panel


def release_panel(panel: CfaPanel) -> None:
    """Drop one reference to a shared panel; the last one closes it."""
    with _registry_lock:
        entry = _registry.get(panel.port)
        if entry is None or entry[0] is not panel:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _registry[panel.port]
    panel.close()


# ------------------------------------------------------------------------- adapters

_FONT = embedded_fonts(hd44780.FONTDATA, selected_font=0)  # the HD44780 A00 ROM font, 5×8 cells


class CfaDisplay(Display):
    """The module's character LCD as a text `Display` (20×4 on the CFA-635, 16×2 on the CFA-533).

    ``show_text`` and ``set_backlight`` never wait for the module (see the
    module docstring). ``frame()`` draws the wanted text with the HD44780
    A00 ROM font from luma.lcd, one 5×8 pixel cell per character (the same
    geometry as luma's hd44780 device); the CFA-635's own font differs in a
    few non-letter glyphs.
    """

    kind = "text"

    def __init__(self, port: str, model: str = "cfa635", baudrate: int | None = None,
                 contrast: int | None = None, **options: Any) -> None:
        """Share the panel on ``port``; ``contrast`` (if given) is set once; ``options`` go to CfaPanel."""
        if contrast is not None:
            _clamp(contrast, 255, "contrast")
        self.panel = acquire_panel(port, model, baudrate, **options)
        self.columns = self.panel.model.columns
        self.rows = self.panel.model.rows
        self._closed = False
        if contrast is not None:
            self.panel.set_contrast(contrast)

    def show_text(self, lines: list[str]) -> None:
        """Put the lines on the glass; only rows that changed are sent. Returns at once."""
        self.panel.set_text(lines)

    def show_image(self, image: Image.Image) -> None:
        """Not supported: this is a character display."""
        raise TypeError(f"{self.panel.name} is a text display; use show_text")

    def set_backlight(self, level: int) -> None:
        """Backlight 0 (off) to 100 (full). Returns at once."""
        self.panel.set_backlight(level)

    def frame(self) -> Image.Image:
        """The wanted text as a 1-bit image of columns×5 by rows×8 pixels."""
        image = Image.new("1", (self.columns * 5, self.rows * 8))
        draw = ImageDraw.Draw(image)
        for row, text in enumerate(self.panel.text()):
            draw.text((0, row * 8), text, font=_FONT, fill=1)
        return image

    def close(self) -> None:
        """Release the shared panel (the text stays on the glass). Idempotent."""
        if not self._closed:
            self._closed = True
            release_panel(self.panel)


class CfaKeys(KeySource):
    """The module's six keys: press/release reports become KeyEvents, plus ``hold`` after ``hold_time``.

    EXIT is `Key.BACK`. Events come from the panel's reader thread (press,
    release) or a timer thread (hold). If the port is lost while keys are
    down, they are released (events sent) since their release would be lost.
    """

    def __init__(self, port: str, model: str = "cfa635", baudrate: int | None = None,
                 hold_time: float = 1.0, **options: Any) -> None:
        """Share the panel on ``port``; ``options`` go to CfaPanel."""
        if not hold_time > 0:
            raise ValueError(f"hold_time must be > 0 seconds, not {hold_time!r}")
        self.hold_time = float(hold_time)
        self.panel = acquire_panel(port, model, baudrate, **options)
        self._lock = threading.Lock()
        self._callback: KeyCallback | None = None
        self._timers: dict[Key, threading.Timer] = {}  # keys down, each with its hold timer
        self._closed = False

    @property
    def key_names(self) -> tuple[str, ...]:
        """The module's six keys (EXIT is ``back``)."""
        return tuple(key.value for key in KEY_CODES.values())

    def start(self, callback: KeyCallback) -> None:
        """Enable press and release reports for every key and deliver events to ``callback``."""
        with self._lock:
            first = self._callback is None
            self._callback = callback
        if first:
            self.panel.add_report_listener(self._on_report)
            self.panel.add_connection_listener(self._on_connection)
        self.panel.set_key_masks(ALL_KEYS_MASK, ALL_KEYS_MASK)

    def close(self) -> None:
        """Stop events, cancel hold timers and release the shared panel. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._callback = None
            timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()
        self.panel.remove_report_listener(self._on_report)
        self.panel.remove_connection_listener(self._on_connection)
        release_panel(self.panel)

    def _on_report(self, packet: Packet) -> None:
        if packet.type != REPORT_KEY or len(packet.data) != 1 or not 1 <= packet.data[0] <= 12:
            return
        now = time.monotonic()
        code = packet.data[0]
        key = KEY_CODES[(code - 1) % 6 + 1]
        with self._lock:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            if code <= 6:
                timer = threading.Timer(self.hold_time, self._on_hold, args=(key,))
                timer.daemon = True
                self._timers[key] = timer
                timer.start()
        self._emit(KeyEvent(key, "press" if code <= 6 else "release", now))

    def _on_hold(self, key: Key) -> None:
        with self._lock:
            if self._timers.get(key) is not threading.current_thread():
                return  # released (or pressed again) meanwhile
        self._emit(KeyEvent(key, "hold", time.monotonic()))

    def _on_connection(self, connected: bool) -> None:
        if connected:
            return
        with self._lock:
            timers, self._timers = self._timers, {}
        now = time.monotonic()
        for key, timer in timers.items():
            timer.cancel()
            self._emit(KeyEvent(key, "release", now))

    def _emit(self, event: KeyEvent) -> None:
        callback = self._callback
        if callback is not None:
            callback(event)


class CfaIndicators(Indicators):
    """Role and fault LEDs on the CFA-635's bicolour LEDs; the buzzer is a recorded no-op.

    Role: LED ``role_led`` (default 0, top) green, steady or blinking. Fault:
    LED ``fault_led`` (default 1) red. The CFA-635 has no buzzer:
    ``set_buzzer`` only records the request in ``buzzer``. The CFA-533 has no
    LEDs: ``set_role``/``set_fault`` only record the request in ``role`` and
    ``fault`` and send nothing (a clean no-op; ``has_leds`` is False), so a
    profile can still use it with this driver. Blinking is driven by the
    panel's sync thread.
    """

    def __init__(self, port: str, model: str = "cfa635", baudrate: int | None = None,
                 role_led: int = 0, fault_led: int = 1, level: int = 100, **options: Any) -> None:
        """Share the panel on ``port``; ``options`` go to CfaPanel. Both LEDs start off."""
        led_indexes(role_led)
        led_indexes(fault_led)
        if role_led == fault_led:
            raise ValueError(f"role_led and fault_led must differ, both are {role_led}")
        self.level = _clamp(level, 100, "level")
        self.panel = acquire_panel(port, model, baudrate, **options)
        self.has_leds = self.panel.model.leds > 0
        self.role_led, self.fault_led = role_led, fault_led
        self.role: Blink = "off"
        self.fault: Blink = "off"
        self.buzzer = False
        self._closed = False
        self.set_role("off")
        self.set_fault("off")

    def set_role(self, mode: Blink) -> None:
        """Role LED green: ``on`` ACTIVE, ``slow`` STANDBY, ``off`` otherwise. Returns at once."""
        self.role = mode
        if self.has_leds:
            self.panel.set_led(self.role_led, "off" if mode == "off" else "green", mode, self.level)

    def set_fault(self, mode: Blink) -> None:
        """Fault LED red: ``on`` or ``fast`` while alarms are active. Returns at once."""
        self.fault = mode
        if self.has_leds:
            self.panel.set_led(self.fault_led, "off" if mode == "off" else "red", mode, self.level)

    def set_buzzer(self, on: bool) -> None:
        """No buzzer on these modules: only records the request in ``buzzer``."""
        self.buzzer = bool(on)

    def close(self) -> None:
        """Every LED off (waiting briefly for the module), then release the shared panel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.set_role("off")
        self.set_fault("off")
        for led in range(self.panel.model.leds):
            self.panel.set_led(led, "off")
        if self.panel.connected:
            self.panel.flush(timeout=1.0)
        release_panel(self.panel)
