"""Character-LCD text: Unicode → HD44780 ROM A00 transliteration, the ROM glyphs, line layout.

Everything above the renderer works in Unicode. Only at the glass does text
become what a character module can show:

- ``charset="a00"`` (HD44780 ROM A00, the common "English/Japanese" ROM and
  what luma.lcd's hd44780 device renders): printable ASCII except ``\\`` and
  ``~`` (the ROM has ¥ and → there), plus a few ROM-only glyphs. A ROM-only
  glyph is written as a *ROM escape*: the code point ``0xF8000 + code``, the
  same private-use convention luma.core's bitmap fonts use, so luma's
  ``hd44780.text`` and its font draw it directly, and a byte-level driver gets
  the ROM byte back with `encode_rom`.
- ``charset="ascii"``: plain 7-bit ASCII for modules whose ROM is not A00.

Accented letters lose their accents ("é" → "e"), typographic punctuation
becomes ASCII ("–" → "-", "…" → "..."), and anything else becomes "?".
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Literal

from PIL import Image

__all__ = [
    "ARROW_LEFT",
    "ARROW_RIGHT",
    "CHARSETS",
    "DEGREE",
    "FULL_BLOCK",
    "ROM_BASE",
    "Charset",
    "bar",
    "center",
    "encode_rom",
    "fit",
    "glyph",
    "rom",
    "to_unicode",
    "transliterate",
    "two_columns",
]

Charset = Literal["a00", "ascii"]
CHARSETS: tuple[str, ...] = ("a00", "ascii")

ROM_BASE = 0xF8000
"""ROM escapes live at ``ROM_BASE + code`` (luma.core.bitmap_font.PUA_SPACE)."""


def rom(code: int) -> str:
    """The ROM escape for A00 character ``code`` (0x10–0xFF)."""
    return chr(ROM_BASE + code)


DEGREE = rom(0xDF)
ARROW_RIGHT = rom(0x7E)
ARROW_LEFT = rom(0x7F)
FULL_BLOCK = rom(0xFF)
_MIDDLE_DOT = rom(0xA5)
_MICRO = rom(0xE4)
_OMEGA = rom(0xF4)

# Characters with an A00 glyph of their own, and their ASCII stand-ins.
_SPECIAL: dict[str, tuple[str, str]] = {
    "°": (DEGREE, "'"),
    "→": (ARROW_RIGHT, "->"),
    "←": (ARROW_LEFT, "<-"),
    "█": (FULL_BLOCK, "#"),
    "■": (FULL_BLOCK, "#"),
    "·": (_MIDDLE_DOT, "."),
    "•": (_MIDDLE_DOT, "*"),
    "µ": (_MICRO, "u"),
    "μ": (_MICRO, "u"),
    "Ω": (_OMEGA, "Ohm"),
}

# Unicode punctuation and letters without a decomposition, spelt in ASCII.
_ASCII: dict[str, str] = {
    "–": "-", "—": "-", "‒": "-", "―": "-", "−": "-", "‐": "-", "‑": "-",
    "…": "...", "‘": "'", "’": "'", "‚": ",", "‛": "'", "“": '"', "”": '"', "„": '"',
    "«": "<<", "»": ">>", "‹": "<", "›": ">", "×": "x", "÷": "/", "±": "+-",
    "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
    "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
    "ı": "i", "€": "EUR", "£": "GBP", "©": "(c)", "®": "(R)", "™": "TM",
    "↑": "^", "↓": "v", "✓": "ok", "✔": "ok", "✗": "x", "✘": "x",
}

# ASCII characters the A00 ROM draws differently.
_A00_ASCII_CLASH = {"\\": "/", "~": "-"}

_MARKERS: dict[str, str] = {"a00": ARROW_RIGHT, "ascii": ">"}
_BLOCKS: dict[str, tuple[str, str]] = {"a00": (FULL_BLOCK, " "), "ascii": ("#", ".")}


def _check(charset: str) -> None:
    if charset not in CHARSETS:
        raise ValueError(f"unknown charset {charset!r} (one of {', '.join(CHARSETS)})")


def _char(ch: str, charset: str) -> str:
    if ch in ("\n", "\t", "\r"):
        return " "
    code = ord(ch)
    if ROM_BASE + 0x10 <= code <= ROM_BASE + 0xFF:  # already a ROM escape
        if charset == "a00":
            return ch
        uni = _BACK_TO_UNICODE.get(ch)
        return _SPECIAL[uni][1] if uni else "?"
    if 0x20 <= code < 0x7F:
        return _A00_ASCII_CLASH.get(ch, ch) if charset == "a00" else ch
    if ch in _SPECIAL:
        a00, ascii_ = _SPECIAL[ch]
        return a00 if charset == "a00" else ascii_
    if ch in _ASCII:
        return _ASCII[ch]
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    if base and base != ch and all(0x20 <= ord(c) < 0x7F for c in base):
        return "".join(_char(c, charset) for c in base)
    return "?"


def transliterate(text: str, charset: str = "a00") -> str:
    """Unicode text as characters the module's ROM can show (see the module docstring).

    The result may be longer than ``text`` ("…" → "..."); fit it afterwards.
    """
    _check(charset)
    return "".join(_char(ch, charset) for ch in text)


_BACK_TO_UNICODE: dict[str, str] = {}
for _uni, (_a00, _ascii) in _SPECIAL.items():
    _BACK_TO_UNICODE.setdefault(_a00, _uni)  # the first spelling listed wins ("█" over "■")


def to_unicode(text: str) -> str:
    """ROM escapes back to readable Unicode (for logs, the simulator and ``frame_text``)."""
    return "".join(_BACK_TO_UNICODE.get(ch, "?" if ord(ch) >= ROM_BASE else ch) for ch in text)


def encode_rom(line: str) -> bytes:
    """A transliterated A00 line as the bytes to write to the module's DDRAM.

    Raises ValueError for a character that is neither ASCII nor a ROM escape
    (i.e. text that did not go through `transliterate`).
    """
    out = bytearray()
    for ch in line:
        code = ord(ch)
        if 0x20 <= code < 0x80:
            out.append(code)
        elif ROM_BASE <= code <= ROM_BASE + 0xFF:
            out.append(code - ROM_BASE)
        else:
            raise ValueError(f"{ch!r} is not an HD44780 ROM character; transliterate first")
    return bytes(out)


def fit(text: str, width: int, charset: str = "a00") -> str:
    """Exactly ``width`` characters: padded with spaces, or cut with a "continues" marker.

    ``text`` must already be transliterated for ``charset``.
    """
    if width <= 0:
        return ""
    if len(text) <= width:
        return text.ljust(width)
    return text[: width - 1] + _MARKERS[charset]


def two_columns(left: str, right: str, width: int, charset: str = "a00") -> str:
    """``left`` then ``right`` flush right; ``left`` is cut first when they do not fit."""
    if not right:
        return fit(left, width, charset)
    if len(right) >= width:
        return fit(right, width, charset)
    room = width - len(right) - 1
    if len(left) > room:
        left = fit(left, room, charset) if room > 0 else ""
    return left.ljust(width - len(right)) + right


def center(text: str, width: int, charset: str = "a00") -> str:
    """``text`` centred in ``width`` characters (cut with a marker when too long)."""
    if len(text) >= width:
        return fit(text, width, charset)
    left = (width - len(text)) // 2
    return (" " * left + text).ljust(width)


def bar(fraction: float, width: int, charset: str = "a00") -> str:
    """A progress bar ``[███   ]`` of exactly ``width`` characters, ``fraction`` 0–1 filled."""
    full, empty = _BLOCKS[charset]
    inner = max(width - 2, 0)
    filled = round(max(0.0, min(1.0, fraction)) * inner)
    return ("[" + full * filled + empty * (inner - filled) + "]")[:width].ljust(width)


@functools.lru_cache(maxsize=1)
def _rom_table() -> Image.Image:
    from luma.lcd.const import hd44780

    metrics = hd44780.FONTDATA["metrics"][0]
    if metrics["name"] != "A00":  # pragma: no cover - guards a luma.lcd layout change
        raise RuntimeError("luma.lcd's first hd44780 font is no longer A00")
    return Image.frombytes("1", metrics["table_size"], hd44780.FONTDATA["fonts"][0])


@functools.lru_cache(maxsize=512)
def glyph(ch: str) -> Image.Image:
    """The 5×8 mode-"1" ROM A00 glyph for one transliterated character.

    The glyphs come from the font table luma.lcd embeds for its hd44780 device,
    so the simulator's glass shows exactly what the ROM draws. Codes below 0x10
    (custom CGRAM characters) and anything not A00 render blank.
    """
    code = ord(ch)
    if code >= ROM_BASE:
        code -= ROM_BASE
    if not 0x10 <= code <= 0xFF:
        return Image.new("1", (5, 8))
    table = _rom_table()
    # luma's table: glyphs 0x10..0xFF left to right in 5×10 cells, 160 per 800-pixel row.
    offset = (code - 0x10) * 5
    left, top = offset % table.width, (offset // table.width) * 10
    return table.crop((left, top, left + 5, top + 8))
