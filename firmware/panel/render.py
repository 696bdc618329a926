"""Lay a `Screen` out for a character module (`render_text`) or a graphic display (`render_graphic`).

Character modules (16×2, 20×4, …): the first row is the title (with the page
number or the role flush right), then body lines, with Yes/No choices or a
countdown bar on the bottom row. On a 16×2 module a page shows its title and
one line at a time; the home screen's title and first line are its two most
important lines, and UP/DOWN scroll through the rest.

Graphic displays draw every character with the HD44780 ROM A00 5×8 glyphs
(the table luma.lcd ships for its hd44780 device), scaled by whole pixels.
That font is a bitmap that lives in an installed dependency, so golden images
are identical on every machine: no FreeType, no system fonts, no font file in
this repository. (Pillow 13's ``ImageFont.load_default()`` returns a FreeType
font whose rasterisation depends on the FreeType build, so it is not used.)
Displays from 84×48 (PCD8544, mode "1") to 320×240 (ILI9341, RGB) get the same
layout at text scale 1 below 240 pixels across and 2 from there.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from firmware.panel.base import Display
from firmware.panel.screens import Screen
from firmware.panel.text import (
    ARROW_RIGHT,
    bar,
    center,
    fit,
    glyph,
    transliterate,
    two_columns,
)

__all__ = ["GraphicLayout", "body_rows", "graphic_layout", "render_for", "render_graphic", "render_text"]

_SELECT = {"a00": ARROW_RIGHT, "ascii": ">"}


# ---------------------------------------------------------------- shared body layout

def _wrap(line: str, width: int) -> list[str]:
    return textwrap.wrap(line, width, subsequent_indent=" ", break_on_hyphens=False) or [""]


def _body(screen: Screen, lines: Sequence[str], room: int, width: int, charset: str) -> tuple[list[str], int | None, bool, bool]:
    """The body rows that fit in ``room`` rows of ``width`` characters (transliterated, not padded).

    Returns (rows, index of the highlighted row or None, more above, more below).
    """
    if room <= 0:
        return [], None, False, False
    text = [transliterate(line, charset) for line in lines]
    if screen.highlight is not None and text:
        selected = max(0, min(screen.highlight, len(text) - 1))
        start = max(0, min(selected - room + 1 + room // 2, len(text) - room)) if len(text) > room else 0
        start = min(start, selected)
        rows = [(_SELECT[charset] if i == selected else " ") + text[i] for i in range(start, min(len(text), start + room))]
        return rows, selected - start, start > 0, start + room < len(text)
    start = max(0, min(screen.scroll, len(text) - 1)) if text else 0
    if screen.wrap:
        rows: list[str] = []
        consumed = start
        for line in text[start:]:
            if len(rows) >= room:
                break
            rows.extend(_wrap(line, width))
            consumed += 1
        more_below = len(rows) > room or consumed < len(text)
        return rows[:room], None, start > 0, more_below
    rows = text[start:start + room]
    return rows, None, start > 0, start + room < len(text)


def _choices(screen: Screen, charset: str) -> str:
    parts = [f"[{c}]" if i == screen.choice else f" {c} " for i, c in enumerate(screen.choices)]
    return transliterate("  ".join(parts), charset)


def _narrow(screen: Screen, columns: int) -> tuple[str, str, Sequence[str]]:
    """(title, title_right, lines): a narrow title is a whole line, without ``title_right``."""
    if columns < 20 and screen.narrow_lines is not None:
        if screen.narrow_title:
            return screen.narrow_title, "", screen.narrow_lines
        return screen.title, screen.title_right, screen.narrow_lines
    return screen.title, screen.title_right, screen.lines


# ---------------------------------------------------------------- character modules

def render_text(screen: Screen, columns: int, rows: int, charset: str = "a00") -> list[str]:
    """``rows`` lines of exactly ``columns`` characters the module's ROM can show."""
    title, right, lines = _narrow(screen, columns)
    out = [two_columns(transliterate(title, charset), transliterate(right, charset), columns, charset)]
    bottom: list[str] = []
    if screen.choices:
        bottom.append(center(_choices(screen, charset), columns, charset))
    if screen.progress is not None:
        bottom.append(bar(screen.progress, columns, charset))
    room = max(0, rows - 1 - len(bottom))
    body, _, _, _ = _body(screen, lines, room, columns, charset)
    out += [fit(row, columns, charset) for row in body]
    out += [" " * columns] * (room - len(body))
    out += bottom
    return (out + [" " * columns] * rows)[:rows]


# ---------------------------------------------------------------- graphic displays

@dataclass(frozen=True)
class GraphicLayout:
    """Text metrics for one graphic display size."""

    scale: int
    """Pixels per glyph pixel for body text."""
    margin: int
    header_h: int
    pitch: int
    """Pixels from one body line to the next."""
    columns: int
    body_rows: int


def graphic_layout(width: int, height: int) -> GraphicLayout:
    """The text grid used on a ``width``×``height`` display."""
    scale = 2 if width >= 240 and height >= 200 else 1
    margin = 2 * scale
    header_h = 11 * scale if height >= 64 else 10
    pitch = (10 if height >= 64 else 9) * scale
    columns = (width - 2 * margin + scale) // (6 * scale)
    rows = (height - header_h - margin) // pitch
    return GraphicLayout(scale, margin, header_h, pitch, max(1, columns), max(1, rows))


@dataclass(frozen=True)
class _Theme:
    bg: object
    fg: object
    dim: object
    header: dict[str, object]
    header_fg: object
    select_bg: object
    select_fg: object
    ok: object
    warn: object
    err: object
    bar_bg: object


_RGB = _Theme(
    bg=(0, 0, 0), fg=(235, 235, 235), dim=(130, 130, 130),
    header={"normal": (36, 64, 130), "ok": (24, 120, 56), "warning": (190, 120, 0), "error": (180, 28, 28)},
    header_fg=(255, 255, 255), select_bg=(60, 110, 220), select_fg=(255, 255, 255),
    ok=(40, 200, 80), warn=(255, 176, 0), err=(235, 45, 45), bar_bg=(55, 55, 55),
)
_MONO = _Theme(bg=0, fg=1, dim=1, header={"normal": 1, "ok": 1, "warning": 1, "error": 1}, header_fg=0,
               select_bg=1, select_fg=0, ok=1, warn=1, err=1, bar_bg=0)


def _text(image: Image.Image, xy: tuple[int, int], text: str, scale: int, color: object) -> int:
    """Draw transliterated ``text`` with the ROM glyphs; returns the x after the last character."""
    x, y = xy
    for ch in text:
        mask = glyph(ch)
        if scale != 1:
            mask = mask.resize((5 * scale, 8 * scale), Image.Resampling.NEAREST)
        if mask.getbbox():
            image.paste(color, (x, y, x + 5 * scale, y + 8 * scale), mask)  # type: ignore[arg-type]
        x += 6 * scale
    return x


def _text_width(text: str, scale: int) -> int:
    return max(0, len(text) * 6 * scale - scale)


def _rows(draw: ImageDraw.ImageDraw, spans: list[tuple[int, int, int]], color: object) -> None:
    """Fill one-pixel-high spans (x0, x1, y): shapes built from these rasterise the same in every Pillow."""
    for x0, x1, y in spans:
        draw.rectangle((x0, y, x1, y), fill=color)  # type: ignore[arg-type]


def _triangle_spans(x: int, y: int, size: int, up: bool) -> list[tuple[int, int, int]]:
    spans = []
    for row in range(size):
        half = (row if up else size - 1 - row) // 2
        mid = x + (size - 1) // 2
        spans.append((mid - half, mid + half + (size - 1) % 2, y + row))
    return spans


def _alarm_icon(draw: ImageDraw.ImageDraw, x: int, y: int, size: int, color: object, bg: object) -> None:
    """A warning triangle with an exclamation mark."""
    _rows(draw, _triangle_spans(x, y, size, up=True), color)
    mid = x + (size - 1) // 2
    _rows(draw, [(mid, mid, row) for row in range(y + size // 3, y + size - 3)] + [(mid, mid, y + size - 2)], bg)


def _link_icon(draw: ImageDraw.ImageDraw, x: int, y: int, size: int, state: str, theme: _Theme) -> None:
    box = (x, y, x + size - 1, y + size - 1)
    if state == "up":
        draw.rectangle(box, fill=theme.ok)  # type: ignore[arg-type]
    elif state == "one-way":
        draw.rectangle(box, outline=theme.warn)  # type: ignore[arg-type]
        draw.rectangle((x, y, x + size // 2, y + size - 1), fill=theme.warn)  # type: ignore[arg-type]
    else:
        draw.rectangle(box, outline=theme.err)  # type: ignore[arg-type]
        _rows(draw, [(x + i, x + i, y + i) for i in range(size)]
              + [(x + i, x + i, y + size - 1 - i) for i in range(size)], theme.err)


def _header(image: Image.Image, draw: ImageDraw.ImageDraw, screen: Screen, lay: GraphicLayout,
            theme: _Theme, title: str) -> None:
    """The coloured title bar: alarm icon, title, alarm-count icon, right-hand text."""
    width = image.width
    fill = theme.header["error" if screen.alarm else screen.tone]
    draw.rectangle((0, 0, width - 1, lay.header_h - 1), fill=fill)  # type: ignore[arg-type]
    s, m = lay.scale, lay.margin
    top = (lay.header_h - 8 * s) // 2
    x, x_end = m, width - m
    if screen.alarm:
        _alarm_icon(draw, x, top, 8 * s, theme.header_fg, fill)
        x += 10 * s
    right = transliterate(screen.title_right, "a00")
    if right:
        x_end -= _text_width(right, s)
        _text(image, (x_end, top), right, s, theme.header_fg)
        x_end -= 4 * s
    if screen.alarm_count and not screen.alarm:
        x_end -= 8 * s
        _alarm_icon(draw, x_end, top, 8 * s, theme.header_fg, fill)
        x_end -= 3 * s
    room = (x_end - x + s) // (6 * s)
    _text(image, (x, top), fit(transliterate(title, "a00"), max(room, 0)).rstrip(), s, theme.header_fg)


def _progress(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fraction: float, theme: _Theme,
              color: object) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=theme.bar_bg, outline=theme.fg)  # type: ignore[arg-type]
    inner = x1 - x0 - 3
    filled = round(max(0.0, min(1.0, fraction)) * inner)
    if filled > 0:
        draw.rectangle((x0 + 2, y0 + 2, x0 + 1 + filled, y1 - 2), fill=color)  # type: ignore[arg-type]


def _health_color(health: int, theme: _Theme) -> object:
    return theme.ok if health >= 70 else theme.warn if health >= 40 else theme.err


def _home(image: Image.Image, draw: ImageDraw.ImageDraw, screen: Screen, lay: GraphicLayout, theme: _Theme) -> None:
    """The graphic home screen: big state, role line, health bar, link icons, detail lines."""
    width, height = image.size
    s, m = lay.scale, lay.margin
    y = lay.header_h + m
    big = transliterate(screen.big or "-", "a00")
    big_scale = 1
    for candidate in range(4 * s, s, -1):
        if _text_width(big, candidate) <= width - 2 * m and 8 * candidate * 2.2 <= height - lay.header_h:
            big_scale = candidate
            break
    color = {"ok": theme.ok, "warning": theme.warn, "error": theme.err}.get(screen.tone, theme.fg)
    _text(image, ((width - _text_width(big, big_scale)) // 2, y), big, big_scale, color)
    y += 8 * big_scale + 2 * s

    def fits(h: int) -> bool:
        return y + h <= height - m // 2

    if screen.big_sub and fits(8 * s) and height >= 64:  # tiny glass: health and links matter more
        sub = fit(transliterate(screen.big_sub, "a00"), lay.columns).rstrip()
        _text(image, ((width - _text_width(sub, s)) // 2, y), sub, s, theme.dim)
        y += lay.pitch
    if screen.health is not None and fits(8 * s):
        number = f"{screen.health:3d}"
        label_end = _text(image, (m, y), "health" if lay.columns >= 20 else "H", s, theme.fg) + s
        bar_right = width - m - _text_width(number, s) - 3 * s
        _progress(draw, (label_end, y, bar_right, y + 8 * s - 1), screen.health / 100, theme,
                  _health_color(screen.health, theme))
        _text(image, (width - m - _text_width(number, s), y), number, s, theme.fg)
        y += lay.pitch
    if screen.links and fits(8 * s):
        x = m
        for link in screen.links:
            name = transliterate(link.name, "a00")[:7]
            w = 8 * s + _text_width(name, s) + 6 * s
            if x + w - 4 * s > width - m:
                y += lay.pitch
                x = m
                if not fits(8 * s):
                    break
            _link_icon(draw, x, y, 7 * s, link.state, theme)
            x = _text(image, (x + 9 * s, y), name, s, theme.fg) + 5 * s
        y += lay.pitch
    for line in screen.details:
        if not fits(8 * s):
            break
        _text(image, (m, y), fit(transliterate(line, "a00"), lay.columns).rstrip(), s, theme.fg)
        y += lay.pitch


def _triangle(draw: ImageDraw.ImageDraw, x: int, y: int, size: int, up: bool, color: object) -> None:
    """A small scroll arrow."""
    _rows(draw, _triangle_spans(x, y, size, up), color)


def _draw(image: Image.Image, screen: Screen, theme: _Theme) -> None:
    width, height = image.size
    lay = graphic_layout(width, height)
    s, m = lay.scale, lay.margin
    draw = ImageDraw.Draw(image)
    is_home = screen.big is not None
    _header(image, draw, screen, lay, theme, screen.big_title or screen.title)
    if is_home:
        _home(image, draw, screen, lay, theme)
        return
    bottom = height - m
    if screen.choices:
        button_h = 8 * s + 4 * s
        top = bottom - button_h
        slot = (width - m) // len(screen.choices)
        for i, label in enumerate(screen.choices):
            box = (m + i * slot, top, m + (i + 1) * slot - m - 1, bottom - 1)
            chosen = i == screen.choice
            draw.rectangle(box, fill=theme.select_bg if chosen else theme.bg, outline=theme.fg)  # type: ignore[arg-type]
            text = transliterate(label, "a00")
            tx = (box[0] + box[2] + 1 - _text_width(text, s)) // 2
            _text(image, (tx, top + 2 * s), text, s, theme.select_fg if chosen else theme.fg)
        bottom = top - s
    if screen.progress is not None:
        top = bottom - 10 * s
        _progress(draw, (m, top, width - m - 1, bottom - 1), screen.progress, theme, theme.warn)
        bottom = top - s
    room = max(0, (bottom - lay.header_h - m) // lay.pitch)
    rows, selected, above, below = _body(screen, screen.lines, room, lay.columns - 1, "a00")
    y = lay.header_h + m
    error = screen.tone == "error" and screen.kind in ("result", "lockout")
    for i, row in enumerate(rows):
        if y + 8 * s > bottom:
            break
        row = fit(row, lay.columns - 1).rstrip()
        if i == selected:
            draw.rectangle((0, y - s, width - 1, y + 8 * s), fill=theme.select_bg)  # type: ignore[arg-type]
            _text(image, (m, y), row, s, theme.select_fg)
        elif i == 0 and screen.kind == "pin" and y + 18 * s <= bottom:  # the digits, large
            _text(image, ((width - _text_width(row, 2 * s)) // 2, y), row, 2 * s, theme.fg)
            y += 8 * s
        else:
            red = error and (screen.kind == "result" or i == 0)  # a refusal in full, a lockout's count
            _text(image, (m, y), row, s, theme.err if red else theme.fg)
        y += lay.pitch
    arrow = 5 * s
    if above:
        _triangle(draw, width - m - arrow, lay.header_h + m, arrow, True, theme.dim)
    if below:
        _triangle(draw, width - m - arrow, lay.header_h + m + room * lay.pitch - arrow - 2 * s, arrow, False, theme.dim)


def render_graphic(screen: Screen, width: int, height: int, mode: str) -> Image.Image:
    """A ``width``×``height`` image in ``mode`` ("1", "L" or "RGB") showing ``screen``."""
    if mode == "1":
        image = Image.new("1", (width, height), 0)
        _draw(image, screen, _MONO)
        return image
    image = Image.new("RGB", (width, height), _RGB.bg)  # type: ignore[arg-type]
    _draw(image, screen, _RGB)
    return image if mode == "RGB" else image.convert(mode)


# ---------------------------------------------------------------- display-level helpers

def body_rows(display: Display) -> int:
    """How many body lines a page shows under its title on ``display`` (the UI's scroll step)."""
    if display.kind == "text":
        return max(1, display.rows - 1)
    return graphic_layout(display.width, display.height).body_rows


def render_for(display: Display, screen: Screen) -> list[str] | Image.Image:
    """``screen`` rendered for ``display``: lines for a text display, an image for a graphic one.

    A text display names its character ROM with a ``charset`` attribute:
    "a00" for an HD44780 with ROM A00 (its degree sign, arrows and block are
    used, as ROM escapes that luma's hd44780 ``text`` draws as-is), or
    "ascii". Without the attribute the text is plain ASCII, which every ROM
    shows correctly.
    """
    if display.kind == "text":
        return render_text(screen, display.columns, display.rows, getattr(display, "charset", None) or "ascii")
    return render_graphic(screen, display.width, display.height, display.mode)
