"""Front-panel hardware drivers on simulated hardware: gpiozero mock pins, the simulated I2C bus, luma's noop SPI."""

from __future__ import annotations

import inspect
import sys
import threading
import time
import tomllib
import types
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import pytest
from gpiozero import LED, DigitalOutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPWMPin
from luma.core.interface.serial import noop
from PIL import Image, ImageDraw

from firmware.config import load_board_profile
from firmware.errors import ConfigError
from firmware.drivers import load_driver
from firmware.panel import displays
from firmware.panel.base import Display, Indicators, Key, KeyEvent, KeySource
from firmware.panel.displays import DisplayError, Hd44780Display, LumaGraphicDisplay
from firmware.panel.gpio import EncoderKeys, GpioError, GpioIndicators, GpioKeys
from sim.i2c import Pcf8574Model, SimI2cBuses
from sim.panelkeys import SimEncoderKeys, SimGpioKeys, find_source

from helpers import wait_for

TIMEOUT = 5.0
PROFILES = Path(__file__).resolve().parent.parent / "board_profiles"


class Recorder:
    """A key callback that records events and can wait for one."""

    def __init__(self) -> None:
        self.events: list[KeyEvent] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, event: KeyEvent) -> None:
        """Record one event (from any thread)."""
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(key, action) of every event so far."""
        with self._lock:
            return [(event.key.value, event.action) for event in self.events]

    def wait_for(self, key: str, action: str, timeout: float = TIMEOUT) -> KeyEvent:
        """The first ``key`` ``action`` event, waiting up to ``timeout`` seconds for it."""
        with self._changed:
            found = self._changed.wait_for(lambda: any((e.key.value, e.action) == (key, action) for e in self.events),
                                           timeout)
            if not found:
                pytest.fail(f"no {key} {action} event within {timeout}s; got {self.pairs}")
            return next(e for e in self.events if (e.key.value, e.action) == (key, action))


def assert_free(factory: MockFactory, *pins: int) -> None:
    """Each pin can be claimed again (its previous owner released it)."""
    for pin in pins:
        DigitalOutputDevice(pin, pin_factory=factory).close()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()
    yield mock
    mock.reset()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Register drivers to close at the end of the test, whatever happens."""
    opened: list[Any] = []
    yield lambda driver: opened.append(driver) or driver
    for driver in reversed(opened):
        driver.close()


# ------------------------------------------------------------------------ GpioKeys


def test_gpio_keys_press_release_from_pins(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(GpioKeys({"up": 5, "down": 6, "enter": 13, "back": 19}, pin_factory=factory))
    assert isinstance(keys, KeySource)
    recorder = Recorder()
    factory.pin(5).drive_low()  # before start(): nobody listens, nothing queued
    factory.pin(5).drive_high()
    keys.start(recorder)
    before = time.monotonic()
    factory.pin(6).drive_low()
    factory.pin(6).drive_high()
    factory.pin(19).drive_low()
    factory.pin(19).drive_high()
    assert recorder.pairs == [("down", "press"), ("down", "release"), ("back", "press"), ("back", "release")]
    assert all(before <= event.at <= time.monotonic() for event in recorder.events)
    assert recorder.events[0].key is Key.DOWN


def test_gpio_keys_hold_once_then_release(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(GpioKeys({"enter": 13}, hold_time=0.05, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    factory.pin(13).drive_low()
    press = recorder.wait_for("enter", "press")
    hold = recorder.wait_for("enter", "hold")
    assert hold.at - press.at >= 0.04
    # Kept down for several hold times more (by the clock the events are stamped with): still only one hold.
    wait_for(lambda: time.monotonic() >= hold.at + 4 * keys.hold_time, what="four more hold times")
    factory.pin(13).drive_high()
    release = recorder.wait_for("enter", "release")
    assert release.at - hold.at >= 4 * keys.hold_time
    assert recorder.pairs == [("enter", "press"), ("enter", "hold"), ("enter", "release")]


def test_gpio_keys_inject_drives_the_mock_pins(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(SimGpioKeys({"up": 5, "left": 7}, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    keys.inject("up", "press")
    assert factory.pin(5).state is False  # shorted to ground against the pull-up
    keys.inject("up", "release")
    assert factory.pin(5).state is True
    keys.inject("left", "press")
    keys.inject("left", "release")
    assert recorder.pairs == [("up", "press"), ("up", "release"), ("left", "press"), ("left", "release")]
    with pytest.raises(ValueError, match=r"unknown key 'down': the keys are up, left"):
        keys.inject("down", "press")
    with pytest.raises(ValueError, match="press"):
        keys.inject("up", "hold")


def test_gpio_keys_inject_without_pull_up_drives_high(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(SimGpioKeys({"enter": 13}, pull_up=False, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    keys.inject("enter", "press")
    assert factory.pin(13).state is True
    keys.inject("enter", "release")
    assert recorder.pairs == [("enter", "press"), ("enter", "release")]


def test_gpio_keys_inject_refuses_real_pins(factory: MockFactory, closing: Callable[[Any], Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    keys = closing(SimGpioKeys({"up": 5}, pin_factory=factory))
    monkeypatch.setattr(keys, "_factory", Factory())  # as if the pins were real
    with pytest.raises(GpioError, match=r"GPIO 5: inject\(\) only moves simulated pins"):
        keys.inject("up", "press")


def test_gpio_keys_unknown_key_name(factory: MockFactory) -> None:
    with pytest.raises(ValueError) as raised:
        GpioKeys({"up": 5, "menu": 6}, pin_factory=factory)
    message = str(raised.value)
    assert "'menu'" in message and "up, down, left, right, enter, back" in message
    assert not factory.pins  # nothing claimed


def test_gpio_keys_pin_errors_name_the_pin(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    closing(GpioKeys({"up": 5}, pin_factory=factory))
    with pytest.raises(GpioError, match=r"GPIO 5 \(down key\).*in use"):
        GpioKeys({"enter": 13, "down": 5}, pin_factory=factory)
    GpioKeys({"enter": 13}, pin_factory=factory).close()  # the failed constructor released GPIO 13
    with pytest.raises(ValueError, match="pins.down and pins.up both use GPIO 6"):
        GpioKeys({"up": 6, "down": 6}, pin_factory=factory)
    with pytest.raises(ValueError, match="pins.up must be a GPIO number"):
        GpioKeys({"up": "five"}, pin_factory=factory)
    with pytest.raises(ValueError, match="gpiozero pin factory 'nosuch'"):
        GpioKeys({"up": 5}, pin_factory="nosuch")


def test_gpio_keys_close_releases_and_silences(factory: MockFactory) -> None:
    keys = GpioKeys({"up": 5}, pin_factory=factory)
    recorder = Recorder()
    keys.start(recorder)
    keys.close()
    again = GpioKeys({"up": 5}, pin_factory=factory)  # the pin is free again
    factory.pin(5).drive_low()
    assert recorder.events == []
    again.close()


def test_gpio_keys_from_a_profile_table(pin_factories: Callable[[str], Factory],
                                        closing: Callable[[Any], Any]) -> None:
    profile = Path("board.toml")
    keys = closing(load_driver("firmware.panel.gpio:GpioKeys", "panel.keys.buttons", profile,
                               pins={"up": 0, "down": 1}, pin_factory="mock"))
    assert keys.pins == {"up": 0, "down": 1}
    with pytest.raises(ConfigError) as raised:
        load_driver("firmware.panel.gpio:GpioKeys", "panel.keys.buttons", profile, pins={"up": 0},
                    pin_factory="nosuch")
    assert "panel.keys.buttons" in str(raised.value) and "'nosuch'" in str(raised.value)


def test_find_source_by_key_name(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(SimGpioKeys({"up": 5, "down": 6}, pin_factory=factory))
    encoder = closing(SimEncoderKeys(a=17, b=18, button=27, back=22, pin_factory=factory))
    assert find_source([keys, encoder], "down") is keys
    assert find_source([keys, encoder], "enter") is encoder
    with pytest.raises(ValueError, match=r"no panel key 'left' \(keys: back, down, enter, up\)"):
        find_source([keys, encoder], "left")

    class Silent(KeySource):
        def start(self, callback: Callable[[KeyEvent], None]) -> None:
            pass

    assert Silent().key_names == ()  # a source that names no keys is never found
    with pytest.raises(ValueError, match=r"keys: none"):
        find_source([Silent()], "up")


# --------------------------------------------------------------------- EncoderKeys


def clockwise(factory: MockFactory, a: int, b: int) -> None:
    """One detent clockwise: A falls first, then B (A leads)."""
    for pin, level in ((a, False), (b, False), (a, True), (b, True)):
        factory.pin(pin).drive_high() if level else factory.pin(pin).drive_low()


def counter_clockwise(factory: MockFactory, a: int, b: int) -> None:
    """One detent counter-clockwise: B leads."""
    clockwise(factory, b, a)


def test_encoder_quadrature_to_up_down(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(EncoderKeys(a=17, b=18, button=27, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    clockwise(factory, 17, 18)
    assert recorder.pairs == [("down", "press"), ("down", "release")]
    counter_clockwise(factory, 17, 18)
    counter_clockwise(factory, 17, 18)
    assert recorder.pairs[2:] == [("up", "press"), ("up", "release")] * 2
    factory.pin(17).drive_low()  # half a step and back: contact jitter, no event
    factory.pin(17).drive_high()
    assert len(recorder.events) == 6


def test_encoder_reverse(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(EncoderKeys(a=17, b=18, reverse=True, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    clockwise(factory, 17, 18)
    counter_clockwise(factory, 17, 18)
    assert recorder.pairs == [("up", "press"), ("up", "release"), ("down", "press"), ("down", "release")]


def test_encoder_buttons(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(EncoderKeys(a=17, b=18, button=27, back=22, hold_time=0.05, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    factory.pin(27).drive_low()
    recorder.wait_for("enter", "hold")
    factory.pin(27).drive_high()
    factory.pin(22).drive_low()
    factory.pin(22).drive_high()
    assert recorder.pairs == [("enter", "press"), ("enter", "hold"), ("enter", "release"),
                              ("back", "press"), ("back", "release")]


def test_encoder_inject(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    keys = closing(SimEncoderKeys(a=17, b=18, button=27, pin_factory=factory))
    recorder = Recorder()
    keys.start(recorder)
    keys.inject_turn(3)
    assert recorder.pairs == [("down", "press"), ("down", "release")] * 3
    keys.inject_turn(-1)
    keys.inject("down", "press")
    keys.inject("down", "release")  # a detent is already a whole tap
    keys.inject("enter", "press")
    keys.inject("enter", "release")
    assert recorder.pairs[6:] == [("up", "press"), ("up", "release"), ("down", "press"), ("down", "release"),
                                  ("enter", "press"), ("enter", "release")]
    with pytest.raises(ValueError, match="unknown key 'back': the keys are up, down, enter"):
        keys.inject("back", "press")


def test_encoder_pin_errors(factory: MockFactory) -> None:
    with pytest.raises(ValueError, match="button and a both use GPIO 17"):
        EncoderKeys(a=17, b=18, button=17, pin_factory=factory)
    holder = GpioKeys({"up": 18}, pin_factory=factory)
    with pytest.raises(GpioError, match="GPIO 17 .*B on GPIO 18"):
        EncoderKeys(a=17, b=18, pin_factory=factory)
    holder.close()
    EncoderKeys(a=17, b=18, pin_factory=factory).close()  # A was released by the failed attempt


# ------------------------------------------------------------------ GpioIndicators


def test_indicators_on_off(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    leds = closing(GpioIndicators(role_pin=20, fault_pin=21, buzzer_pin=26, pin_factory=factory))
    assert isinstance(leds, Indicators)
    assert [factory.pin(p).state for p in (20, 21, 26)] == [False, False, False]
    leds.set_role("on")
    leds.set_buzzer(True)
    assert [factory.pin(p).state for p in (20, 21, 26)] == [True, False, True]
    assert (leds.role, leds.fault, leds.buzzer) == ("on", "off", True)
    leds.set_role("off")
    leds.set_buzzer(False)
    assert [factory.pin(p).state for p in (20, 21, 26)] == [False, False, False]
    with pytest.raises(ValueError, match="role LED mode must be off, on, slow or fast, not 'blink'"):
        leds.set_role("blink")  # type: ignore[arg-type]


def test_indicators_active_low(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    leds = closing(GpioIndicators(role_pin=20, active_high=False, pin_factory=factory))
    assert factory.pin(20).state is True  # off = high on an LED wired to 3V3
    leds.set_role("on")
    assert factory.pin(20).state is False


@pytest.mark.parametrize("mode, period", [("slow", 1.0), ("fast", 0.25)])
def test_indicators_blink(factory: MockFactory, closing: Callable[[Any], Any], mode: str, period: float) -> None:
    leds = closing(GpioIndicators(fault_pin=21, pin_factory=factory))
    pin = factory.pin(21)
    leds.set_fault(mode)  # type: ignore[arg-type]
    wait_for(lambda: len(pin.states) >= 5, what="the LED on, off, on, off")  # after the initial off state
    states = pin.states
    assert [s.state for s in states[:5]] == [False, True, False, True, False]
    # MockPin stamps each change with the time since the previous change: half a period each
    # (the first change is timed from the LED's creation, so it is skipped). Loose bounds for busy machines.
    assert all(period / 2 * 0.8 <= s.timestamp <= period / 2 * 4 for s in states[2:5]), states


def test_indicators_unchanged_mode_does_not_restart(factory: MockFactory, closing: Callable[[Any], Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, float]] = []
    original = LED.blink

    def spy(self: LED, on_time: float = 1, off_time: float = 1, n: int | None = None, background: bool = True) -> None:
        calls.append((on_time, off_time))
        original(self, on_time=on_time, off_time=off_time, n=n, background=background)

    monkeypatch.setattr(LED, "blink", spy)
    leds = closing(GpioIndicators(role_pin=20, fault_pin=21, pin_factory=factory))
    leds.set_role("slow")
    leds.set_role("slow")
    leds.set_role("slow")
    assert calls == [(0.5, 0.5)]
    leds.set_role("fast")
    leds.set_role("fast")
    assert calls == [(0.5, 0.5), (0.125, 0.125)]
    leds.set_role("on")
    leds.set_role("slow")
    assert len(calls) == 3
    states = len(factory.pin(21).states)
    leds.set_fault("off")  # already off: no write at all
    assert len(factory.pin(21).states) == states


def test_indicators_absent_outputs_and_close(factory: MockFactory) -> None:
    leds = GpioIndicators(role_pin=20, pin_factory=factory)
    leds.set_fault("fast")  # no fault LED on this board: accepted, nothing driven
    leds.set_buzzer(True)
    assert leds.fault == "fast" and leds.buzzer is True
    leds.set_role("fast")
    leds.close()
    assert factory.pin(20).state is False
    GpioIndicators(role_pin=20, pin_factory=factory).close()  # released


def test_indicators_pin_in_use(factory: MockFactory, closing: Callable[[Any], Any]) -> None:
    closing(GpioKeys({"up": 21}, pin_factory=factory))
    with pytest.raises(GpioError, match=r"GPIO 21 \(fault output\)"):
        GpioIndicators(role_pin=20, fault_pin=21, pin_factory=factory)
    closing(GpioIndicators(role_pin=20, pin_factory=factory))  # GPIO 20 was released


# ------------------------------------------------------------------ Hd44780Display


@pytest.fixture
def backpack(i2c: SimI2cBuses) -> Pcf8574Model:
    return i2c.attach(1, 0x27, Pcf8574Model())  # type: ignore[return-value]


def decode_data(values: list[int]) -> str:
    """The characters an HD44780 received through the backpack (RS high, latched on E's falling edge)."""
    nibbles = [v >> 4 for prev, v in pairwise(values) if prev & 0x04 and not v & 0x04 and v & 0x01]
    return "".join(chr(high << 4 | low) for high, low in zip(nibbles[::2], nibbles[1::2]))


def test_hd44780_writes_through_the_backpack(backpack: Pcf8574Model, closing: Callable[[Any], Any],
                                             i2c: SimI2cBuses) -> None:
    lcd = closing(Hd44780Display(bus=1, address=0x27, columns=20, rows=4, smbus=i2c.open))
    assert isinstance(lcd, Display) and lcd.kind == "text" and (lcd.columns, lcd.rows) == (20, 4)
    assert len(backpack.history) > 50  # the initialisation sequence
    assert all(value & 0x08 for _, value in backpack.history[-5:])  # backlight bit on
    mark = len(backpack.history)
    lcd.show_text(["ACTIVE  node-a", "peer: ok"])
    assert lcd.text == "ACTIVE  node-a      \npeer: ok            \n" + " " * 20 + "\n" + " " * 20
    sent = decode_data([value for _, value in backpack.history[mark:]])
    assert "ACTIVE  node-a" in sent and "peer: ok" in sent

    mark = len(backpack.history)
    lcd.show_text(["ACTIVE  node-a", "peer: ok", ""])  # the same screen: nothing resent
    assert len(backpack.history) == mark
    lcd.show_text(["STANDBY node-a", "peer: ok"])
    assert len(backpack.history) > mark and lcd.text.startswith("STANDBY node-a")


def test_hd44780_frame_is_the_rom_font_image(backpack: Pcf8574Model, closing: Callable[[Any], Any],
                                             i2c: SimI2cBuses) -> None:
    lcd = closing(Hd44780Display(columns=16, rows=2, smbus=i2c.open))
    blank = lcd.frame()
    assert blank.mode == "1" and blank.size == (80, 16) and blank.getbbox() is None
    lcd.show_text(["Hi"])
    frame = lcd.frame()
    bbox = frame.getbbox()
    assert bbox is not None and bbox[2] <= 10 and bbox[3] <= 8  # two glyphs, top-left cell row
    lcd.show_text(["", "Hi"])
    assert lcd.frame().getbbox()[1] >= 8  # moved to the second row


def test_hd44780_custom_image(backpack: Pcf8574Model, closing: Callable[[Any], Any], i2c: SimI2cBuses) -> None:
    lcd = closing(Hd44780Display(columns=16, rows=2, smbus=i2c.open))
    image = Image.new("1", (80, 16))
    ImageDraw.Draw(image).rectangle((0, 0, 4, 7), fill=1)  # one full block cell
    lcd.show_image(image)
    assert lcd.frame().getbbox() == (0, 0, 5, 8)
    with pytest.raises(ValueError, match="80×16"):
        lcd.show_image(Image.new("1", (10, 10)))


def test_hd44780_backlight_bit(backpack: Pcf8574Model, closing: Callable[[Any], Any], i2c: SimI2cBuses) -> None:
    lcd = closing(Hd44780Display(smbus=i2c.open))
    assert backpack.latch & 0x08 and lcd.backlight
    lcd.set_backlight(0)
    assert not backpack.latch & 0x08 and not lcd.backlight
    mark = len(backpack.history)
    lcd.show_text(["dark"])
    assert all(not value & 0x08 for _, value in backpack.history[mark:])  # text writes keep it off
    lcd.set_backlight(40)
    assert backpack.latch & 0x08
    mark = len(backpack.history)
    lcd.set_backlight(100)  # still on: nothing written
    assert len(backpack.history) == mark


def test_hd44780_starts_dark_and_close_clears(backpack: Pcf8574Model, i2c: SimI2cBuses) -> None:
    lcd = Hd44780Display(smbus=i2c.open, backlight=False)
    assert not backpack.latch & 0x08
    lcd.set_backlight(100)
    lcd.show_text(["bye"])
    lcd.close()
    assert not backpack.latch & 0x08  # backlight off
    assert len(backpack.history) > 0


def test_hd44780_errors_name_the_device(backpack: Pcf8574Model, i2c: SimI2cBuses) -> None:
    with pytest.raises(DisplayError) as raised:
        Hd44780Display(address=0x3F, smbus=i2c.open)  # nothing there
    message = str(raised.value)
    assert "/dev/i2c-1 address 0x3f" in message and "i2cdetect -y 1" in message
    with pytest.raises(DisplayError, match="/dev/i2c-99: No such file or directory"):
        Hd44780Display(bus=99)  # smbus2 on a bus this machine does not have
    with pytest.raises(ValueError, match="address 0x50 is not a PCF8574"):
        Hd44780Display(address=0x50, smbus=i2c.open)
    with pytest.raises(ValueError, match="16×2, 16×4, 20×2, 20×4"):
        Hd44780Display(columns=40, rows=2, smbus=i2c.open)
    with pytest.raises(ValueError, match="smbus: cannot import 'nosuch'"):
        Hd44780Display(smbus="nosuch:Bus")


# --------------------------------------------------------------- LumaGraphicDisplay


def test_graphic_noop_show_image_and_frame(factory: MockFactory, closing: Callable[[Any], Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    lcd = closing(LumaGraphicDisplay("st7735", serial_interface=noop(), pin_factory=factory))
    assert (lcd.kind, lcd.width, lcd.height, lcd.mode) == ("graphic", 160, 128, "RGB")
    assert lcd.frame().getbbox() is None
    shown: list[Image.Image] = []
    monkeypatch.setattr(lcd._device, "display", lambda image: shown.append(image.copy()))
    image = Image.new("RGB", (160, 128), "navy")
    ImageDraw.Draw(image).text((4, 4), "ACTIVE", fill="white")
    lcd.show_image(image)
    lcd.show_image(image.copy())  # unchanged: not sent again
    assert len(shown) == 1 and shown[0].tobytes() == image.tobytes()
    assert lcd.frame().tobytes() == image.tobytes()
    lcd.show_image(Image.new("1", (160, 128), 1))  # converted to the display's mode
    assert len(shown) == 2 and shown[1].mode == "RGB" and lcd.frame().getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="160×128"):
        lcd.show_image(Image.new("RGB", (128, 160)))
    with pytest.raises(TypeError, match="graphic display"):
        lcd.show_text(["x"])


def test_graphic_modes_and_rotation(closing: Callable[[Any], Any]) -> None:
    mono = closing(LumaGraphicDisplay("pcd8544", serial_interface=noop()))
    assert (mono.width, mono.height, mono.mode) == (84, 48, "1")
    mono.show_image(Image.new("1", (84, 48), 1))
    assert mono.frame().getbbox() == (0, 0, 84, 48)
    turned = closing(LumaGraphicDisplay("st7735", rotate=1, serial_interface=noop()))
    assert (turned.width, turned.height) == (128, 160)
    for controller, size in (("st7789", (240, 240)), ("ili9341", (320, 240))):
        lcd = closing(LumaGraphicDisplay(controller, serial_interface=noop()))
        assert (lcd.width, lcd.height, lcd.mode) == (*size, "RGB")


def test_graphic_bad_parameters() -> None:
    with pytest.raises(ValueError, match="unknown display controller 'ssd1306'.*st7735, st7789, ili9341, pcd8544"):
        LumaGraphicDisplay("ssd1306", serial_interface=noop())
    with pytest.raises(ValueError, match="st7735 supports 160×80, 160×128, 128×128, not 320×240"):
        LumaGraphicDisplay("st7735", width=320, height=240, serial_interface=noop())
    with pytest.raises(ValueError, match="pcd8544 supports 84×48"):
        LumaGraphicDisplay("pcd8544", width=128, height=64, serial_interface=noop())
    with pytest.raises(ValueError, match="bus_speed_hz 3000000"):
        LumaGraphicDisplay("st7735", bus_speed_hz=3_000_000, serial_interface=noop())
    with pytest.raises(ValueError, match="rotate must be"):
        LumaGraphicDisplay("st7735", rotate=4, serial_interface=noop())
    with pytest.raises(ValueError, match="st7735: .*unexpected keyword argument 'colour'"):
        LumaGraphicDisplay("st7735", colour=True, serial_interface=noop())


def test_graphic_missing_spi_device_is_named(factory: MockFactory) -> None:
    if Path("/dev/spidev0.0").exists():
        pytest.skip("this machine has /dev/spidev0.0")
    with pytest.raises(DisplayError, match=r"/dev/spidev0\.0: not found \(enable SPI"):
        LumaGraphicDisplay("st7735", pin_factory=factory)
    assert_free(factory, 24, 25)  # nothing left claimed


class FakeSpiDev:
    """A spidev.SpiDev stand-in recording what luma sends."""

    instances: ClassVar[list[FakeSpiDev]] = []

    def __init__(self) -> None:
        self.opened: tuple[int, int] | None = None
        self.closed = False
        self.max_speed_hz = 0
        self.written: list[int] = []
        FakeSpiDev.instances.append(self)

    def open(self, port: int, device: int) -> None:
        self.opened = (port, device)

    def writebytes(self, data: list[int]) -> None:
        self.written.extend(data)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_spidev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[FakeSpiDev]:
    (tmp_path / "spidev0.1").touch()
    monkeypatch.setattr(displays, "SPIDEV_PATH", str(tmp_path / "spidev{port}.{device}"))
    module = types.ModuleType("spidev")
    module.SpiDev = FakeSpiDev  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spidev", module)
    FakeSpiDev.instances = []
    return FakeSpiDev


def test_graphic_spi_with_gpiozero_dc_rst_and_backlight(factory: MockFactory, fake_spidev: type[FakeSpiDev]) -> None:
    lcd = LumaGraphicDisplay("st7735", port=0, device=1, gpio_DC=24, gpio_RST=25, backlight_pin=18,
                             pin_factory=factory)
    spi = fake_spidev.instances[-1]
    assert spi.opened == (0, 1) and spi.max_speed_hz == 8_000_000
    assert 0x11 in spi.written  # the initialisation commands (sleep out, ...) went over SPI
    rst = [s.state for s in factory.pin(25).states]
    assert rst[-2:] == [False, True]  # reset pulsed low, then released
    assert len(factory.pin(24).states) > 2  # DC switched between commands and data
    assert factory.pin(18).state is True  # backlight on
    before = len(spi.written)
    lcd.show_image(Image.new("RGB", (160, 128), "red"))
    assert len(spi.written) - before >= 160 * 128 * 3
    lcd.set_backlight(0)
    assert factory.pin(18).state is False and lcd.backlight == 0
    lcd.set_backlight(70)
    assert factory.pin(18).state is True
    lcd.close()
    assert spi.closed and factory.pin(18).state is False
    assert_free(factory, 18, 24, 25)  # DC, RST and backlight released


def test_graphic_pwm_backlight(closing: Callable[[Any], Any]) -> None:
    pwm = MockFactory(pin_class=MockPWMPin)
    lcd = closing(LumaGraphicDisplay("st7735", backlight_pin=18, backlight_pwm=True, serial_interface=noop(),
                                     pin_factory=pwm))
    assert pwm.pin(18).state == 1.0
    lcd.set_backlight(30)
    assert pwm.pin(18).state == pytest.approx(0.3)


def test_graphic_pin_in_use_is_named(factory: MockFactory, fake_spidev: type[FakeSpiDev],
                                     closing: Callable[[Any], Any]) -> None:
    closing(GpioKeys({"up": 24}, pin_factory=factory))
    with pytest.raises(GpioError, match=r"GPIO 24 \(display DC\)"):
        LumaGraphicDisplay("st7735", device=1, backlight_pin=18, pin_factory=factory)
    closing(GpioIndicators(role_pin=18, pin_factory=factory))  # the backlight pin was released


# ----------------------------------------------------------------- board profiles


def panel_drivers(profile: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every (key, table) of the profile's [panel] section that names a driver."""
    panel = tomllib.loads(profile.read_text())["panel"]
    found = [("panel.display", panel["display"]), ("panel.indicators", panel["indicators"])]
    found += [(f"panel.keys.{name}", table) for name, table in panel["keys"].items()]
    return found


@pytest.mark.parametrize("name", ["raspberrypi-hd44780", "raspberrypi-st7735-encoder", "x86-1u-cfa635"])
def test_profiles_name_drivers_with_matching_parameters(name: str) -> None:
    profile = PROFILES / f"{name}.toml"
    data = tomllib.loads(profile.read_text())
    # A hardware profile may name the appliance's extension, never the simulator's.
    assert data["name"] == name and not [e for e in data.get("extensions", []) if not e.startswith("firmware.")]
    board = load_board_profile(profile)  # the schema accepts it
    assert board.panel is not None and board.panel.keys and board.panel.indicators is not None
    for key, table in panel_drivers(profile):
        module_name, _, attribute = table["driver"].partition(":")
        module = pytest.importorskip(module_name)
        cls = getattr(module, attribute)
        parameters = {k: v for k, v in table.items() if k != "driver"}
        try:
            inspect.signature(cls).bind(**parameters)
        except TypeError as exc:
            pytest.fail(f"{profile.name}: {key}: {exc}")
    for table in (*data.get("relays", {}).values(), *data.get("feedback", {}).values()):
        module_name, _, attribute = table["driver"].partition(":")
        cls = getattr(pytest.importorskip(module_name), attribute)
        inspect.signature(cls).bind(**{k: v for k, v in table.items() if k != "driver"})


def test_gpio_profile_pins_do_not_collide() -> None:
    for name in ("raspberrypi-hd44780", "raspberrypi-st7735-encoder"):
        data = tomllib.loads((PROFILES / f"{name}.toml").read_text())
        # I2C1 (2, 3), SPI0 (7-11) and the UART of the serial heartbeat link (14, 15) are not for panel parts.
        used: dict[int, str] = dict.fromkeys((2, 3, 7, 8, 9, 10, 11, 14, 15), "a bus")
        tables = panel_drivers(PROFILES / f"{name}.toml")
        tables += [(f"{kind}.{bank}", table) for kind in ("relays", "feedback")
                   for bank, table in data.get(kind, {}).items()]
        for key, table in tables:
            pins: list[int] = []
            for field, value in table.items():
                if field == "pins":
                    pins += list(value.values()) if isinstance(value, dict) else list(value)
                elif field in ("a", "b", "button", "back", "role_pin", "fault_pin", "buzzer_pin", "gpio_DC",
                               "gpio_RST", "backlight_pin"):
                    pins.append(value)
            for pin in pins:
                assert pin not in used, f"{name}: GPIO {pin} used by {used.get(pin)} and {key}"
                used[pin] = key
        if "watchdog_pulse" in data:
            assert data["watchdog_pulse"]["pin"] not in used
