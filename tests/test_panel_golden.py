"""Golden images of every panel screen, on a 20×4 character module and on graphic displays.

Each scenario drives the real `PanelUi` with keys to reach a screen, renders it
for the display, pushes it to a dummy display (`firmware.panel.dummy`) and
compares ``display.frame()`` pixel for pixel with ``tests/golden/panel/<name>.png``:

- ``text_<scenario>.png``: DummyTextDisplay 20×4, the glass as drawn with the
  HD44780 ROM A00 font;
- ``st7735_<scenario>.png``: DummyGraphicDisplay 160×128 RGB;
- ``pcd8544_home.png`` (84×48 mode "1"), ``st7735_128_home.png``,
  ``st7789_home.png`` (240×240) and ``ili9341_home.png`` / ``ili9341_alarm.png`` (320×240).

On a mismatch the actual image and a diff (differing pixels red on a greyed
copy of the golden) are written to ``tests/golden/panel/_failures/`` (git-ignored)
and the test fails naming them.

To accept new images after an intended change, regenerate them and review the
PNGs before committing::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_panel_golden.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from panel_samples import (
    ACTIVE_HEALTHY,
    ALARMS,
    ALARMS_SILENCED,
    NO_SENSORS,
    PIN_HASH,
    STANDBY_PEER_SILENT,
    Panel,
    hold_start,
)
from PIL import Image, ImageChops, ImageDraw, ImageOps

from firmware.panel.base import Key
from firmware.panel.dummy import DummyGraphicDisplay, DummyTextDisplay
from firmware.panel.render import render_for, render_graphic, render_text
from firmware.panel.screens import Screen
from firmware.panel.text import encode_rom, fit, glyph, to_unicode, transliterate
from firmware.panel.ui import PanelOptions

GOLDEN = Path(__file__).parent / "golden" / "panel"
FAILURES = GOLDEN / "_failures"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")

U, D, L, R, E, B = Key.UP, Key.DOWN, Key.LEFT, Key.RIGHT, Key.ENTER, Key.BACK


def _page(status: object, steps: int) -> Screen:
    p = Panel(status=status)
    p.keys(*[R] * steps)
    return p.screen


def _holding(seconds: float) -> Panel:
    p = Panel()
    hold_start(p, 0)
    p.tick(seconds)
    return p


def _no_status() -> Screen:
    p = Panel(status=None)
    return p.ui.screen(None, [], p.now, error="cannot reach the daemon: /run/tandem/control.sock does not exist")


def _menu() -> Screen:
    p = Panel()
    p.keys(E, D)
    return p.screen


def _menu_unlocked() -> Screen:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E)
    p.enter_pin("2580")
    p.keys(U, U)
    return p.screen


def _confirm(yes: bool) -> Screen:
    p = Panel()
    p.keys(E, E, *([D] if yes else []))
    return p.screen


def _cancelled() -> Screen:
    p = Panel()
    hold_start(p, 0)
    p.at(1.0).release(E)
    return p.screen


def _result(ok: bool, message: str) -> Screen:
    p = _holding(3.0)
    p.ui.command_result("promote", ok, message, p.now)
    return p.show()


def _pin(wrong: int, digits: tuple[Key, ...] = ()) -> Screen:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E)
    for _ in range(wrong):
        p.enter_pin("1111")
    p.keys(*digits)
    return p.screen


def _view_only() -> Screen:
    p = Panel(PanelOptions(view_only=True))
    p.keys(E)
    return p.screen


def _alarm() -> Screen:
    return Panel(status=ALARMS).screen


SCENARIOS: dict[str, Callable[[], Screen]] = {
    "home_active": lambda: Panel(status=ACTIVE_HEALTHY).screen,
    "home_standby": lambda: Panel(status=STANDBY_PEER_SILENT).screen,
    "home_alarms_silenced": lambda: Panel(status=ALARMS_SILENCED).screen,
    "home_no_status": _no_status,
    "peer": lambda: _page(ACTIVE_HEALTHY, 1),
    "peer_silent": lambda: _page(STANDBY_PEER_SILENT, 1),
    "links": lambda: _page(STANDBY_PEER_SILENT, 2),
    "sensors": lambda: _page(ALARMS_SILENCED, 3),
    "sensors_none": lambda: _page(NO_SENSORS, 3),
    "alarms": lambda: _page(ALARMS_SILENCED, 4),
    "events": lambda: _page(ACTIVE_HEALTHY, 5),
    "network": lambda: _page(STANDBY_PEER_SILENT, 6),
    "version": lambda: _page(ACTIVE_HEALTHY, 7),
    "menu": _menu,
    "menu_unlocked": _menu_unlocked,
    "confirm_no": lambda: _confirm(yes=False),
    "confirm_yes": lambda: _confirm(yes=True),
    "countdown": lambda: _holding(1.2).screen,
    "cancelled": _cancelled,
    "working": lambda: _holding(3.0).screen,
    "result_ok": lambda: _result(True, "this node is ACTIVE"),
    "refused": lambda: _result(False, "pbx-b is ACTIVE and healthy; promoting needs --force"),
    "pin_entry": lambda: _pin(0, (U, U, E, U)),
    "pin_wrong": lambda: _pin(1),
    "lockout": lambda: _pin(4),
    "view_only": _view_only,
    "alarm": _alarm,
}


def _diff(golden: Image.Image, actual: Image.Image) -> Image.Image:
    """Differing pixels in red on a greyed, lightened copy of the golden image."""
    golden_rgb, actual_rgb = golden.convert("RGB"), actual.convert("RGB")
    if golden_rgb.size != actual_rgb.size:  # side by side: golden | actual
        out = Image.new("RGB", (golden_rgb.width + actual_rgb.width + 4, max(golden_rgb.height, actual_rgb.height)),
                        (255, 0, 0))
        out.paste(golden_rgb, (0, 0))
        out.paste(actual_rgb, (golden_rgb.width + 4, 0))
        return out
    grey = ImageOps.grayscale(golden_rgb).point(lambda v: 140 + v * 115 // 255).convert("RGB")
    mask = ImageChops.difference(golden_rgb, actual_rgb).convert("L").point(lambda v: 255 if v else 0)
    grey.paste((255, 0, 0), (0, 0, grey.width, grey.height), mask)
    return grey


def check_golden(name: str, image: Image.Image) -> None:
    """Compare ``image`` with ``tests/golden/panel/<name>.png`` (or rewrite it with UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.png"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return
    if not path.exists():
        pytest.fail(f"no golden image {path}; create it with UPDATE_GOLDEN=1 .venv/bin/pytest {__file__}")
    with Image.open(path) as stored:
        golden = stored.copy()
    if golden.mode == image.mode and golden.size == image.size and golden.tobytes() == image.tobytes():
        return
    FAILURES.mkdir(parents=True, exist_ok=True)
    ignore = FAILURES / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n!.gitignore\n")
    actual_path, diff_path = FAILURES / f"{name}.actual.png", FAILURES / f"{name}.diff.png"
    image.save(actual_path)
    _diff(golden, image).save(diff_path)
    if golden.size != image.size or golden.mode != image.mode:
        what = f"is {image.mode} {image.size}, golden is {golden.mode} {golden.size}"
    else:
        mask = ImageChops.difference(golden.convert("RGB"), image.convert("RGB")).convert("L")
        what = f"differs in {mask.width * mask.height - mask.histogram()[0]} pixels"
    pytest.fail(f"{name} {what}: see {actual_path} and {diff_path} (golden: {path}); "
                f"if the change is intended: UPDATE_GOLDEN=1 .venv/bin/pytest {__file__}")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_text_20x4(scenario: str) -> None:
    screen = SCENARIOS[scenario]()
    display = DummyTextDisplay(20, 4)
    lines = render_text(screen, 20, 4)
    display.show_text(lines)
    assert all(len(line) == 20 for line in lines)
    check_golden(f"text_{scenario}", display.frame())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_graphic_160x128(scenario: str) -> None:
    screen = SCENARIOS[scenario]()
    display = DummyGraphicDisplay(160, 128, "RGB")
    display.show_image(render_graphic(screen, 160, 128, "RGB"))
    check_golden(f"st7735_{scenario}", display.frame())


@pytest.mark.parametrize("name, scenario, width, height, mode", [
    ("pcd8544_home", "home_active", 84, 48, "1"),
    ("st7735_128_home", "home_standby", 128, 128, "RGB"),
    ("st7789_home", "home_active", 240, 240, "RGB"),
    ("ili9341_home", "home_standby", 320, 240, "RGB"),
    ("ili9341_alarm", "alarm", 320, 240, "RGB"),
])
def test_other_graphic_sizes(name: str, scenario: str, width: int, height: int, mode: str) -> None:
    display = DummyGraphicDisplay(width, height, mode)
    display.show_image(render_graphic(SCENARIOS[scenario](), width, height, mode))
    check_golden(name, display.frame())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_screen_renders_on_every_supported_size(scenario: str) -> None:
    screen = SCENARIOS[scenario]()
    for columns, rows in ((16, 2), (20, 2), (16, 4), (20, 4), (40, 4)):
        assert [len(line) for line in render_text(screen, columns, rows)] == [columns] * rows
    for width, height, mode in ((84, 48, "1"), (128, 64, "1"), (128, 128, "RGB"), (160, 128, "RGB"),
                                (240, 240, "RGB"), (320, 240, "RGB"), (480, 320, "RGB")):
        image = render_graphic(screen, width, height, mode)
        assert image.size == (width, height) and image.mode == mode


def test_a_mismatch_writes_actual_and_diff(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "GOLDEN", tmp_path)
    monkeypatch.setattr(module, "FAILURES", tmp_path / "_failures")
    monkeypatch.setattr(module, "UPDATE", False)
    golden = Image.new("RGB", (10, 10), (0, 0, 0))
    golden.save(tmp_path / "probe.png")
    actual = golden.copy()
    actual.putpixel((3, 4), (255, 255, 255))
    with pytest.raises(pytest.fail.Exception, match="differs in 1 pixels"):
        check_golden("probe", actual)
    diff = Image.open(tmp_path / "_failures" / "probe.diff.png").convert("RGB")
    assert diff.getpixel((3, 4)) == (255, 0, 0) and diff.getpixel((0, 0)) != (255, 0, 0)
    assert (tmp_path / "_failures" / "probe.actual.png").exists()
    assert (tmp_path / "_failures" / ".gitignore").read_text() == "*\n!.gitignore\n"


# ---------------------------------------------------------------- the character ROM

def test_transliteration_for_rom_a00_and_ascii() -> None:
    text = "25 °C café – Łódź… ☃ a\\b~c"
    a00 = transliterate(text, "a00")
    assert to_unicode(a00) == "25 °C cafe - Lodz... ? a/b-c"
    assert encode_rom(a00)[:6] == b"25 \xdfC "
    assert transliterate(text, "ascii") == "25 'C cafe - Lodz... ? a\\b~c"
    assert transliterate("→ █ µ", "ascii") == "-> # u"
    with pytest.raises(ValueError, match="transliterate first"):
        encode_rom("☃")


def test_fit_cuts_with_a_marker() -> None:
    assert fit("hello", 8) == "hello   "
    assert to_unicode(fit("hello world", 8)) == "hello w→"
    assert fit("hello world", 8, "ascii") == "hello w>"


def test_glass_glyphs_are_lumas_hd44780_font() -> None:
    """What DummyTextDisplay draws is what luma's hd44780 ``text`` draws (and maps back to ROM codes)."""
    from luma.core.bitmap_font import embedded_fonts
    from luma.lcd.const import hd44780

    font = embedded_fonts(hd44780.FONTDATA, selected_font=0)
    text = transliterate("Ag°→█ 9", "a00")
    image = Image.new("1", (5 * len(text), 8))
    ImageDraw.Draw(image).text((0, 0), text, font=font, fill=1)
    for i, ch in enumerate(text):
        assert image.crop((5 * i, 0, 5 * i + 5, 8)).tobytes() == glyph(ch).tobytes(), repr(ch)


def test_text_displays_without_a_charset_get_plain_ascii() -> None:
    module = DummyTextDisplay(20, 4)
    del module.charset  # like a driver that does not say which ROM it has
    lines = render_for(module, SCENARIOS["countdown"]())
    assert isinstance(lines, list) and all(" " <= ch <= "~" for line in lines for ch in line)
    assert "[######" in lines[-1]
