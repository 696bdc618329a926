"""What the I2C drivers share: the SMBus opener, parameter checks for PCF8574 chips, short error reasons.

A driver opens its bus with ``opener(bus)``, which returns an
smbus2.SMBus-compatible handle. The opener is ``smbus2.SMBus`` unless the
board profile names another SMBus-compatible class or opener as
``smbus = "module:Name"``; code that builds drivers itself (the simulator,
tests) may pass the opener object instead of its import path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware.drivers import import_object

__all__ = ["PCF8574_ADDRESSES", "SMBusOpener", "check_bus", "check_pcf8574_address", "reason", "smbus_opener"]

SMBusOpener = Callable[[int | str], Any]
"""Opens an I2C bus given as a number or a /dev/i2c-N path: ``smbus2.SMBus`` or a stand-in."""

PCF8574_ADDRESSES = (*range(0x20, 0x28), *range(0x38, 0x40))  # PCF8574: 0x20-0x27, PCF8574A: 0x38-0x3F


def smbus_opener(spec: str | SMBusOpener | None) -> SMBusOpener:
    """The opener: smbus2.SMBus (``None``), the ``"module:Class"`` a profile names, or an opener object."""
    if callable(spec):
        return spec
    if spec is None:
        spec = "smbus2:SMBus"
    elif not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"smbus must be an import path 'module:Class', not {spec!r}")
    try:
        found = import_object(spec, "class")
    except ValueError as exc:
        raise ValueError(f"smbus: {exc}") from None
    if not callable(found):
        raise ValueError(f"smbus: {spec.partition(':')[0]!r} has no class {spec.partition(':')[2]!r}")
    return found


def check_bus(bus: object) -> None:
    """ValueError unless ``bus`` is an I2C bus number or a /dev/i2c-N path."""
    if isinstance(bus, bool) or not (isinstance(bus, int) and bus >= 0 or isinstance(bus, str) and bus):
        raise ValueError(f"bus must be an I2C bus number or a /dev/i2c-N path, not {bus!r}")


def check_pcf8574_address(address: object, what: str = "address") -> None:
    """ValueError unless ``address`` is a PCF8574 or PCF8574A address; ``what`` ends the message."""
    if isinstance(address, bool) or not isinstance(address, int) or address not in PCF8574_ADDRESSES:
        shown = f"0x{address:02x}" if isinstance(address, int) and not isinstance(address, bool) else repr(address)
        raise ValueError(f"address {shown} is not a PCF8574 (0x20-0x27) or PCF8574A (0x38-0x3f) {what}")


def reason(exc: BaseException) -> str:
    """A short one-line reason from an OS or bus error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
