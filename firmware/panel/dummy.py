"""Displays that only remember what they were shown: for the simulator and golden-image tests.

Both sit on ``luma.core.device.dummy``, which keeps the last frame it was
given, exactly as the real luma drivers are fed.

- `DummyTextDisplay` is a character module: its luma device is the 1-bit
  ``columns×5`` by ``rows×8`` pixel image luma's hd44780 device works on, drawn
  with the same ROM A00 font. ``frame()`` turns that into a picture of the
  glass: dots, gaps between character cells, a yellow-green backlight that
  goes dark when the backlight is off.
- `DummyGraphicDisplay` takes images as they are; ``frame()`` returns the last
  one, dimmed with the backlight.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from luma.core.device import dummy
from PIL import Image, ImageDraw

from firmware.panel.base import Display
from firmware.panel.text import glyph

__all__ = ["DummyGraphicDisplay", "DummyTextDisplay"]

# What the glass looks like in `DummyTextDisplay.frame()`.
_DOT = 3          # screen pixels per LCD dot (2 lit + 1 gap)
_CELL_GAP = 3     # between character cells
_BORDER = 8
_LIT_BG = (156, 196, 52)
_DARK_BG = (74, 92, 30)
_DOT_ON = (24, 36, 16)
_DOT_OFF_LIT = (144, 184, 46)
_DOT_OFF_DARK = (68, 86, 28)


class DummyTextDisplay(Display):
    """A character module (default 20×4) with the HD44780 ROM A00 font, on a luma dummy device."""

    kind: Literal["text", "graphic"] = "text"

    def __init__(self, columns: int = 20, rows: int = 4, charset: str = "a00") -> None:
        """``charset``: which ROM the renderer should transliterate for ("a00" or "ascii")."""
        self.columns, self.rows, self.charset = columns, rows, charset
        self.device = dummy(width=columns * 5, height=rows * 8, mode="1")
        self.lines: list[str] = [" " * columns] * rows
        self.backlight = 100
        self.frames_pushed = 0
        self.last_pushed_at: float | None = None
        self._lock = threading.Lock()
        self._draw()

    def _draw(self) -> None:
        image = Image.new("1", (self.columns * 5, self.rows * 8))
        for row, line in enumerate(self.lines):
            for col, ch in enumerate(line[: self.columns]):
                image.paste(glyph(ch), (col * 5, row * 8))
        self.device.display(image)

    def show_text(self, lines: list[str]) -> None:
        """Put ``rows`` lines of exactly ``columns`` transliterated characters on the glass."""
        if len(lines) != self.rows or any(len(line) != self.columns for line in lines):
            raise ValueError(f"expected {self.rows} lines of {self.columns} characters, got {[len(x) for x in lines]}")
        with self._lock:
            self.lines = list(lines)
            self._draw()
            self.frames_pushed += 1
            self.last_pushed_at = time.monotonic()

    def show_image(self, image: Image.Image) -> None:
        """Not a graphic display."""
        raise TypeError("DummyTextDisplay is a character display: use show_text")

    def set_backlight(self, level: int) -> None:
        """Backlight 0–100 (the glass in `frame` is lit above 0)."""
        self.backlight = max(0, min(100, int(level)))

    def pixels(self) -> Image.Image:
        """The raw 1-bit dot image (``columns×5`` by ``rows×8``), as luma's hd44780 device holds it."""
        with self._lock:
            assert self.device.image is not None
            return self.device.image.copy()

    def frame(self) -> Image.Image:
        """An RGB picture of the glass: dot matrix cells with gaps, backlit or dark."""
        dots = self.pixels()
        lit = self.backlight > 0
        cell_w, cell_h = 5 * _DOT + _CELL_GAP, 8 * _DOT + _CELL_GAP
        width = 2 * _BORDER + self.columns * cell_w - _CELL_GAP
        height = 2 * _BORDER + self.rows * cell_h - _CELL_GAP
        image = Image.new("RGB", (width, height), _LIT_BG if lit else _DARK_BG)
        draw = ImageDraw.Draw(image)
        off = _DOT_OFF_LIT if lit else _DOT_OFF_DARK
        pixels = dots.load()
        for row in range(self.rows):
            for col in range(self.columns):
                x0, y0 = _BORDER + col * cell_w, _BORDER + row * cell_h
                for dy in range(8):
                    for dx in range(5):
                        on = pixels[col * 5 + dx, row * 8 + dy]
                        x, y = x0 + dx * _DOT, y0 + dy * _DOT
                        draw.rectangle((x, y, x + _DOT - 2, y + _DOT - 2), fill=_DOT_ON if on else off)
        return image

    def text(self) -> list[str]:
        """The lines on the glass now."""
        with self._lock:
            return list(self.lines)


class DummyGraphicDisplay(Display):
    """A graphic display (default 160×128 RGB like an ST7735) on a luma dummy device."""

    kind: Literal["text", "graphic"] = "graphic"

    def __init__(self, width: int = 160, height: int = 128, mode: str = "RGB") -> None:
        """``mode``: "1" for monochrome panels (PCD8544), "RGB" for colour TFTs."""
        self.width, self.height, self.mode = width, height, mode
        self.device = dummy(width=width, height=height, mode=mode)
        self.device.display(Image.new(mode, (width, height)))
        self.backlight = 100
        self.frames_pushed = 0
        self.last_pushed_at: float | None = None
        self._lock = threading.Lock()

    def show_text(self, lines: list[str]) -> None:
        """Not a character display."""
        raise TypeError("DummyGraphicDisplay is a graphic display: use show_image")

    def show_image(self, image: Image.Image) -> None:
        """Put an image of exactly ``width``×``height`` in ``mode`` on the glass."""
        if image.size != (self.width, self.height) or image.mode != self.mode:
            raise ValueError(f"expected a {self.width}x{self.height} {self.mode} image, "
                             f"got {image.size[0]}x{image.size[1]} {image.mode}")
        with self._lock:
            self.device.display(image)
            self.frames_pushed += 1
            self.last_pushed_at = time.monotonic()

    def set_backlight(self, level: int) -> None:
        """Backlight 0–100; `frame` dims the picture with it (to a quarter at 0, to stay legible)."""
        self.backlight = max(0, min(100, int(level)))

    def frame(self) -> Image.Image:
        """The last image pushed, dimmed by the backlight level."""
        with self._lock:
            assert self.device.image is not None
            image = self.device.image.copy()
        if self.backlight >= 100:
            return image
        factor = 0.25 + 0.75 * self.backlight / 100
        rgb = image.convert("RGB")
        return rgb.point(lambda v: int(v * factor))
