"""The Crystalfontz CFA-635 / CFA-533 packet protocol: models, CRC, packet encoding and decoding.

Pure: no serial port, no threads (the driver in ``connection`` and the
emulator in sim/cfa635.py share it). See shared/reference/front-panel.md.
Every packet is ``[type][len][data…][crc_lo][crc_hi]`` with a CRC-16/X-25
over type, len and data. The type's top two bits say what it is: a command
from the host (``0x00|cmd``), its response (``0x40|cmd``) or error
(``0xC0|cmd``), or a report the module sends at any time (``0x80``, a key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware.panel.base import Key

__all__ = [
    "ALL_KEYS_MASK", "CMD_BACKLIGHT", "CMD_CLEAR", "CMD_CONTRAST", "CMD_HOST_WATCHDOG", "CMD_KEY_MASKS", "CMD_LED",
    "CMD_PING", "CMD_TEXT", "KEY_CODES", "KEY_MASK_BITS", "KIND_COMMAND", "KIND_ERROR", "KIND_REPORT",
    "KIND_RESPONSE", "LED_COLOURS", "MODELS", "REPORT_KEY", "LedColour", "Model", "Packet", "PacketDecoder",
    "crc16", "encode_packet", "get_model", "led_indexes",
]

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
LED_COLOURS: dict[str, tuple[bool, bool]] = {  # colour → (green lit, red lit) of a bicolour LED
    "off": (False, False), "green": (True, False), "red": (False, True), "amber": (True, True),
}


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

