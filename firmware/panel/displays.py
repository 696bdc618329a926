"""Front-panel displays through luma: an HD44780 on a PCF8574 I2C backpack, and SPI graphic LCDs.

Both open their hardware in the constructor, so a missing ``/dev/i2c-1`` or
``/dev/spidev0.0``, a backpack that does not answer or an unsupported size is
reported when the board profile is loaded, as a `DisplayError` (or
ValueError for a bad parameter) naming the device and the reason.

Writes block for as long as the bus takes (an HD44780 screenful is a few
hundred I2C bytes, tens of milliseconds): the panel calls displays from its
own worker thread, never from the heartbeat loop.

- `Hd44780Display`: luma.lcd ``hd44780`` over luma.core's ``pcf8574``
  interface. The I2C bus is opened with smbus2, or with the SMBus-compatible
  class or opener given as ``smbus`` (see `firmware.drivers.i2c`; the
  simulator passes its simulated bus), and handed to luma as an injected bus.
- `LumaGraphicDisplay`: ST7735, ST7789, ILI9341 (RGB) or PCD8544 (1-bit) on
  the SPI bus. luma's ``spi`` interface drives DC and RST through an
  RPi.GPIO-shaped object; here that object is backed by gpiozero on the pin
  factory the profile names, so no RPi.GPIO is needed and the simulator's
  mock pins work too. The backlight is a gpiozero output on ``backlight_pin``.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from gpiozero import DigitalOutputDevice, PWMOutputDevice
from gpiozero.pins import Factory
from luma.core.interface.serial import pcf8574, spi
from luma.lcd.device import hd44780, ili9341, pcd8544, st7735, st7789
from PIL import Image

from firmware.drivers.i2c import (
    SMBusOpener,
    check_bus,
    check_pcf8574_address,
    reason,
    smbus_opener,
)
from firmware.errors import HardwareError
from firmware.gpio import resolve_factory
from firmware.panel.base import Display
from firmware.panel.gpio import GpioError, check_pin, claim, close_all

__all__ = ["CONTROLLERS", "DisplayError", "Hd44780Display", "LumaGraphicDisplay"]

HD44780_SIZES = ((16, 2), (16, 4), (20, 2), (20, 4))
HD44780_FONTS = {"A00": 0, "A02": 1}  # ROM A00: English/Japanese, A02: English/European
BACKPACK_BACKLIGHT = 1 << 3  # P3 drives the backlight transistor on the common backpacks (luma's default)

SPIDEV_PATH = "/dev/spidev{port}.{device}"
SPI_SPEEDS = tuple(int(mhz * 1_000_000) for mhz in (0.5, 1, 2, 4, 8, 16, 20, 24, 28, 32, 36, 40, 44, 48, 50, 52))


class DisplayError(HardwareError):
    """A display cannot be opened or written; the message names the device and the reason."""


class _Hd44780(hd44780):
    """luma's hd44780, remembering the last image it displayed (for ``frame()``)."""

    last_image: Image.Image | None = None

    def display(self, image: Image.Image) -> None:
        """Send ``image`` to the LCD and keep a copy."""
        super().display(image)
        self.last_image = image.copy()


def _i2c_path(bus: int | str) -> str:
    """The device node of an I2C bus given as a number or a path."""
    return f"/dev/i2c-{bus}" if isinstance(bus, int) or str(bus).isdigit() else str(bus)


class Hd44780Display(Display):
    """A 16×2 … 20×4 HD44780 character LCD on a PCF8574(A) I2C backpack."""

    kind = "text"

    def __init__(self, bus: int | str = 1, address: int = 0x27, columns: int = 16, rows: int = 2,
                 backlight: bool = True, font: str = "A00", smbus: str | SMBusOpener | None = None) -> None:
        """Open the bus, initialise the LCD (about a second) and clear it.

        ``bus`` is an I2C bus number or ``/dev/i2c-N``; ``address`` the
        backpack's (PCF8574 0x20-0x27, PCF8574A 0x38-0x3F, set by its
        A0-A2 jumpers); ``font`` the character ROM (``A00`` or ``A02``);
        ``smbus`` an SMBus-compatible class as ``"module:Class"``, or an
        opener object, instead of smbus2 (the simulator's simulated bus).
        """
        check_bus(bus)
        check_pcf8574_address(address, "backpack address")
        if (columns, rows) not in HD44780_SIZES:
            raise ValueError(f"columns × rows must be one of {', '.join(f'{c}×{r}' for c, r in HD44780_SIZES)}, "
                             f"not {columns!r}×{rows!r}")
        if not isinstance(backlight, bool):
            raise ValueError(f"backlight must be true or false, not {backlight!r}")
        if font not in HD44780_FONTS:
            raise ValueError(f"font must be one of {', '.join(HD44780_FONTS)}, not {font!r}")
        open_smbus = smbus_opener(smbus)
        self.bus = bus
        self.address = address
        # The renderer uses ROM A00's own glyphs (degree sign, arrows, block) only on an A00 ROM.
        self.charset = "a00" if font == "A00" else "ascii"
        self.columns = columns
        self.rows = rows
        self.name = f"HD44780 on {_i2c_path(bus)} address 0x{address:02x}"
        self._lock = threading.RLock()
        self._text: str | None = None
        self._image: Image.Image | None = None
        self._backlight = True
        try:
            self._bus = open_smbus(bus)
        except OSError as exc:
            raise DisplayError(f"{self.name}: cannot open {_i2c_path(bus)}: {reason(exc)}{_i2c_hint(exc)}") from None
        except Exception as exc:
            raise DisplayError(f"{self.name}: cannot open {_i2c_path(bus)}: {reason(exc)}") from None
        try:
            # The backlight bit is always enabled here: luma can only switch a backlight it was given.
            self._serial = pcf8574(bus=self._bus, address=address, backlight_enabled=True)
            self._device = _Hd44780(self._serial, width=columns, height=rows, selected_font=HD44780_FONTS[font])
        except Exception as exc:
            self._close_bus()
            raise DisplayError(f"{self.name}: no PCF8574 backpack answers ({reason(exc)}); check the wiring, "
                               f"the address jumpers and `i2cdetect -y {bus}`") from None
        self._text = ""
        if not backlight:
            self.set_backlight(0)

    @property
    def text(self) -> str:
        """The text luma holds for the LCD (lines joined by newlines)."""
        return str(self._device.text)

    @property
    def backlight(self) -> bool:
        """Whether the backlight is on."""
        return self._backlight

    def show_text(self, lines: list[str]) -> None:
        """Put ``rows`` lines on the LCD (missing lines blank, each cut or padded to ``columns``).

        Unchanged text is not resent.
        """
        lines = list(lines)[:self.rows]
        lines += [""] * (self.rows - len(lines))
        text = "\n".join(line[:self.columns].ljust(self.columns) for line in lines)
        with self._lock:
            if text == self._text:
                return
            try:
                self._device.text = text
            except Exception as exc:
                self._text = None  # unknown now: resend next time
                raise DisplayError(f"{self.name}: write failed: {reason(exc)}") from None
            self._text = text
            self._image = None

    def show_image(self, image: Image.Image) -> None:
        """Put a 1-bit image of the LCD's pixel size up (glyphs not in the ROM become custom characters)."""
        size = (self.columns * 5, self.rows * 8)
        if image.size != size:
            raise ValueError(f"{self.name}: the image must be {size[0]}×{size[1]}, not {image.size[0]}×{image.size[1]}")
        image = image.convert("1")
        with self._lock:
            if self._image is not None and image.tobytes() == self._image.tobytes():
                return
            try:
                self._device.display(image)
            except Exception as exc:
                self._image = None
                raise DisplayError(f"{self.name}: write failed: {reason(exc)}") from None
            self._image = image.copy()
            self._text = None

    def set_backlight(self, level: int) -> None:
        """Backlight on for any level above 0 (the backpack can only switch it)."""
        on = level > 0
        with self._lock:
            if on == self._backlight:
                return
            try:
                self._device.backlight(on)
                # luma only sends the bit with the next character; write it now (E stays low: no strobe).
                self._bus.write_byte(self.address, BACKPACK_BACKLIGHT if on else 0)
            except Exception as exc:
                raise DisplayError(f"{self.name}: backlight write failed: {reason(exc)}") from None
            self._backlight = on

    def frame(self) -> Image.Image:
        """The LCD's current pixels in the ROM font (``columns``×5 by ``rows``×8, mode ``1``)."""
        with self._lock:
            last = self._device.last_image
            return last.copy() if last is not None else Image.new("1", (self.columns * 5, self.rows * 8))

    def close(self) -> None:
        """Clear the LCD, switch the backlight off and close the bus. Never raises."""
        with self._lock:
            _blank(self._device)
            self._close_bus()

    def _close_bus(self) -> None:
        try:
            self._bus.close()
        except Exception:
            pass


def _i2c_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return " (enable I2C: dtparam=i2c_arm=on in config.txt, or raspi-config)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return " (add the tandem user to the i2c group)"
    return ""


class _Controller:
    """What LumaGraphicDisplay needs to know about one luma.lcd controller."""

    def __init__(self, cls: type, mode: str, size: tuple[int, int], sizes: tuple[tuple[int, int], ...] | None,
                 speed: int) -> None:
        self.cls = cls
        self.mode = mode
        self.size = size
        self.sizes = sizes  # None: any size up to 320×320
        self.speed = speed


CONTROLLERS: dict[str, _Controller] = {
    "st7735": _Controller(st7735, "RGB", (160, 128), ((160, 80), (160, 128), (128, 128)), 8_000_000),
    "st7789": _Controller(st7789, "RGB", (240, 240), None, 8_000_000),
    "ili9341": _Controller(ili9341, "RGB", (320, 240), ((320, 240), (240, 240), (320, 180)), 8_000_000),
    "pcd8544": _Controller(pcd8544, "1", (84, 48), ((84, 48),), 4_000_000),  # the PCD8544 is rated 4 Mbit/s
}
"""The supported controllers: luma.lcd class, image mode, default size, allowed sizes, default SPI clock."""


class _GpiozeroLines:
    """The RPi.GPIO subset luma's ``spi`` interface uses for DC and RST, on gpiozero outputs."""

    LOW = 0
    HIGH = 1
    OUT = 0
    IN = 1

    def __init__(self, factory: Factory | None, roles: dict[int, str]) -> None:
        self._factory = factory
        self._roles = roles
        self._outputs: dict[int, DigitalOutputDevice] = {}

    def setup(self, pin: int, direction: int, initial: int | None = None) -> None:
        """Claim ``pin`` as an output (luma never asks for inputs)."""
        if direction != self.OUT:
            raise ValueError(f"GPIO {pin}: only outputs are supported")
        self._outputs[pin] = claim(lambda: DigitalOutputDevice(pin, initial_value=bool(initial),
                                                               pin_factory=self._factory),
                                   pin, self._roles.get(pin, "display"))

    def output(self, pin: int, value: int) -> None:
        """Drive ``pin`` high or low."""
        self._outputs[pin].value = bool(value)

    def cleanup(self, pins: int | list[int] | None = None) -> None:
        """Release ``pins`` (all when None)."""
        if pins is None:
            chosen = list(self._outputs)
        else:
            chosen = [pins] if isinstance(pins, int) else list(pins)
        close_all([self._outputs.pop(pin) for pin in chosen if pin in self._outputs])


class _Backlight:
    """A backlight luma can call: ``True``/``False``, or a level 0.0-100.0 when it is on a PWM output."""

    def __init__(self, device: Any = None, pwm: bool = False) -> None:
        self.device = device  # None: hard-wired on, nothing to switch
        self.pwm = pwm

    def __call__(self, value: bool | float) -> None:
        """Switch (or dim) the backlight."""
        if self.device is None:
            return
        if isinstance(value, bool):
            value = 100.0 if value else 0.0
        self.device.value = max(0.0, min(100.0, float(value))) / 100 if self.pwm else value > 0

    def cleanup(self) -> None:
        """Release the pin."""
        if self.device is not None:
            close_all([self.device])


class LumaGraphicDisplay(Display):
    """A colour (ST7735, ST7789, ILI9341) or monochrome (PCD8544) SPI LCD through luma.lcd."""

    kind = "graphic"

    def __init__(self, controller: str = "st7735", port: int = 0, device: int = 0, gpio_DC: int = 24,
                 gpio_RST: int | None = 25, width: int | None = None, height: int | None = None,
                 rotate: int = 0, bus_speed_hz: int | None = None, backlight_pin: int | None = None,
                 backlight_active_high: bool = True, backlight_pwm: bool = False,
                 pin_factory: str | Factory = "lgpio", serial_interface: Any = None, **extra: Any) -> None:
        """Open ``/dev/spidev<port>.<device>``, claim DC/RST/backlight and initialise the controller.

        ``width``/``height`` default to the controller's usual panel
        (ST7735 160×128, ST7789 240×240, ILI9341 320×240, PCD8544 84×48) and
        are before ``rotate`` (0-3, quarter turns clockwise). ``bus_speed_hz``
        defaults to 8 MHz (4 MHz for the PCD8544). ``backlight_pin`` is a GPIO
        switching the backlight (``backlight_pwm = true`` dims it by PWM);
        without it the backlight is wired to the supply. ``extra`` goes to
        the luma controller (``h_offset``, ``v_offset``, ``bgr``,
        ``inverse``, ...). ``serial_interface`` replaces the SPI bus with an
        object of luma's serial interface shape (tests: ``noop()``).
        """
        spec, size, speed = _check_graphic(controller, port, device, width, height, rotate, bus_speed_hz)
        check_pin(gpio_DC, "gpio_DC")
        if gpio_RST is not None:
            check_pin(gpio_RST, "gpio_RST")
        if backlight_pin is not None:
            check_pin(backlight_pin, "backlight_pin")
        self.controller = controller
        self.mode = spec.mode
        self.path = SPIDEV_PATH.format(port=port, device=device)
        self.name = f"{controller.upper()} on {self.path}" if serial_interface is None else controller.upper()
        self._lock = threading.RLock()
        self._lines: _GpiozeroLines | None = None
        self._spi: spi | None = None
        self._backlight = _Backlight()
        self._level = 100
        try:
            needs_pins = serial_interface is None or backlight_pin is not None
            factory = resolve_factory(pin_factory) if needs_pins else None
            if backlight_pin is not None:
                cls = PWMOutputDevice if backlight_pwm else DigitalOutputDevice
                self._backlight = _Backlight(claim(lambda: cls(backlight_pin, active_high=backlight_active_high,
                                                               initial_value=0, pin_factory=factory),
                                                   backlight_pin, "display backlight"), pwm=backlight_pwm)
            if serial_interface is None:
                roles = {gpio_DC: "display DC"} | ({gpio_RST: "display RST"} if gpio_RST is not None else {})
                self._lines = _GpiozeroLines(factory, roles)
                serial_interface = self._spi = self._open_spi(port, device, speed, gpio_DC, gpio_RST)
            sizing = {} if controller == "pcd8544" else {"width": size[0], "height": size[1]}
            try:
                self._device = spec.cls(serial_interface, rotate=rotate, backlight=self._backlight, **sizing, **extra)
            except TypeError as exc:  # an unknown extra key
                raise ValueError(f"{controller}: {exc}") from None
            except Exception as exc:
                raise DisplayError(f"{self.name}: the controller did not initialise: {reason(exc)}") from None
        except Exception:
            self._release()
            raise
        self.width, self.height = self._device.width, self._device.height
        self._last = Image.new(self.mode, (self.width, self.height))

    def _open_spi(self, port: int, device: int, speed: int, dc: int, rst: int | None) -> spi:
        """luma's spi interface on a spidev handle, DC and RST through gpiozero."""
        if not os.path.exists(self.path):
            raise DisplayError(f"{self.name}: not found (enable SPI: dtparam=spi=on in config.txt, "
                               f"or raspi-config)")
        try:
            import spidev
        except ImportError:
            raise DisplayError(f"{self.name}: the spidev Python module is not installed (pip install spidev)") from None
        try:
            return spi(spi=spidev.SpiDev(), gpio=self._lines, port=port, device=device, bus_speed_hz=speed,
                       gpio_DC=dc, gpio_RST=rst)
        except OSError as exc:
            hint = " (add the tandem user to the spi group)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
            raise DisplayError(f"{self.name}: cannot open {self.path}: {reason(exc)}{hint}") from None
        except (DisplayError, GpioError):
            raise
        except Exception as exc:
            raise DisplayError(f"{self.name}: cannot open {self.path}: {reason(exc)}") from None

    @property
    def backlight(self) -> int:
        """The backlight level last set (0-100)."""
        return self._level

    def show_text(self, lines: list[str]) -> None:
        """Graphic displays take images; the renderer draws text into one."""
        raise TypeError(f"{self.name} is a graphic display: use show_image()")

    def show_image(self, image: Image.Image) -> None:
        """Put ``image`` (``width``×``height``; converted to the display's mode) on the LCD, if it changed."""
        if image.size != (self.width, self.height):
            raise ValueError(f"{self.name}: the image must be {self.width}×{self.height}, "
                             f"not {image.size[0]}×{image.size[1]}")
        if image.mode != self.mode:
            image = image.convert(self.mode)
        with self._lock:
            if image.tobytes() == self._last.tobytes():
                return
            try:
                self._device.display(image)
            except Exception as exc:
                raise DisplayError(f"{self.name}: write failed: {reason(exc)}") from None
            self._last = image.copy()

    def set_backlight(self, level: int) -> None:
        """Backlight 0-100: dimmed on a PWM backlight pin, else on for any level above 0."""
        level = max(0, min(100, int(level)))
        with self._lock:
            if level == self._level:
                return
            self._backlight(float(level) if self._backlight.pwm else level > 0)
            self._level = level

    def frame(self) -> Image.Image:
        """The image last shown (black before the first)."""
        with self._lock:
            return self._last.copy()

    def close(self) -> None:
        """Blank the LCD, switch the backlight off and release SPI and the pins. Never raises."""
        with self._lock:
            _blank(self._device)
            self._release()

    def _release(self) -> None:
        """Close SPI and hand DC, RST and the backlight pin back."""
        if self._spi is not None:
            try:
                self._spi.cleanup()
            except Exception:
                pass
        if self._lines is not None:
            self._lines.cleanup()
        self._backlight.cleanup()


def _check_graphic(controller: str, port: int, device: int, width: int | None, height: int | None, rotate: int,
                   bus_speed_hz: int | None) -> tuple[_Controller, tuple[int, int], int]:
    """Validate LumaGraphicDisplay's parameters: the controller, the size (before rotation) and the SPI clock."""
    spec = CONTROLLERS.get(controller) if isinstance(controller, str) else None
    if spec is None:
        raise ValueError(f"unknown display controller {controller!r} (known: {', '.join(CONTROLLERS)})")
    size = (spec.size[0] if width is None else width, spec.size[1] if height is None else height)
    if spec.sizes is not None and size not in spec.sizes:
        raise ValueError(f"{controller} supports {', '.join(f'{w}×{h}' for w, h in spec.sizes)}, "
                         f"not {size[0]!r}×{size[1]!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 320 for n in size):
        raise ValueError(f"width and height must be 1..320 pixels, not {size[0]!r}×{size[1]!r}")
    if isinstance(rotate, bool) or rotate not in (0, 1, 2, 3):
        raise ValueError(f"rotate must be 0, 1, 2 or 3 (quarter turns clockwise), not {rotate!r}")
    speed = spec.speed if bus_speed_hz is None else bus_speed_hz
    if isinstance(speed, bool) or speed not in SPI_SPEEDS:
        raise ValueError(f"bus_speed_hz {speed!r} is not one luma supports "
                         f"({', '.join(f'{s / 1e6:g} MHz' for s in SPI_SPEEDS)})")
    for what, value in (("port", port), ("device", device)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
    return spec, size, speed


def _blank(device: Any) -> None:
    """Clear a luma device and switch its backlight off, ignoring a bus already gone.

    ``persist`` then stops luma's own exit hook from writing to a bus this driver releases next.
    """
    try:
        device.cleanup()
    except Exception:
        pass
    device.persist = True
