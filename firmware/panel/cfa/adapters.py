"""The panel interfaces (`firmware.panel.base`) on a Crystalfontz module: display, keys and LEDs.

Board profiles name these (``firmware.panel.cfa.adapters:CfaDisplay``,
``CfaKeys``, ``CfaIndicators``) with the keyword arguments below; the three
share one `CfaPanel` per port (``connection.acquire_panel``), so one
profile's display, keys and LEDs use one serial connection. None of them
waits for the module: they record the wanted state, which the panel's sync
thread pushes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from luma.core.bitmap_font import embedded_fonts
from luma.lcd.const import hd44780
from PIL import Image, ImageDraw

from firmware.panel.base import Blink, Display, Indicators, Key, KeyCallback, KeyEvent, KeySource
from firmware.panel.cfa.connection import acquire_panel, clamp, release_panel
from firmware.panel.cfa.protocol import ALL_KEYS_MASK, KEY_CODES, REPORT_KEY, Packet, led_indexes

__all__ = ["CfaDisplay", "CfaIndicators", "CfaKeys"]

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
            clamp(contrast, 255, "contrast")
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
        self.level = clamp(level, 100, "level")
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
