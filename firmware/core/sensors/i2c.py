"""The I2C plumbing of the raw-I2C sensor families (``pmbus``, ``lm75``).

One device on one bus (`I2cClient`), opened lazily through the sensor host's
SMBus opener (``smbus2.SMBus`` on hardware, a simulated bus in the simulator)
and closed after any failed transfer, with errors that name bus, address and
errno; the keys every I2C family shares (`I2cOptions`); and a guard so a read
stuck on a hung bus never piles up behind itself.
"""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from pydantic import Field, field_validator

from firmware.core.sensors.base import SensorContext, SensorError, SensorOptions


def _errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, f"errno {code}")


_REASONS = {
    errno.ENXIO: "no device",
    errno.EBADMSG: "PEC mismatch (a corrupted transfer, or the device does not send PEC)",
    errno.EBUSY: "address in use by a kernel driver (read it through its hwmon device instead)",
    errno.ETIMEDOUT: "bus timeout",
    errno.EREMOTEIO: "no acknowledge",
    errno.EAGAIN: "bus busy or arbitration lost",
    errno.EPROTO: "protocol error (bad block length)",
}


class I2cError(SensorError):
    """An I2C transfer failed; ``errno`` tells why (ENXIO: nothing answers at the address)."""

    def __init__(self, message: str, code: int | None) -> None:
        """Keep the message and the errno."""
        super().__init__(message)
        self.errno = code


class I2cClient:
    """One device on one I2C bus: the bus is opened lazily and closed after any failed transfer.

    Every transfer goes through `call`, which turns an OSError into an `I2cError`
    naming bus, address and what was being read, e.g. ``"I2C bus 1 address 0x58:
    no device (ENXIO)"``.
    """

    def __init__(self, context: SensorContext, bus: int | str, address: int, pec: bool = False) -> None:
        """Remember where the device is; nothing is opened yet."""
        self.context = context
        self.bus_id = bus
        self.address = address
        self.pec = pec
        self._bus: Any = None

    @property
    def label(self) -> str:
        """``"I2C bus 1 address 0x58"``."""
        return f"I2C bus {self.bus_id} address 0x{self.address:02x}"

    def _open(self) -> Any:
        if self._bus is not None:
            return self._bus
        opener: Callable[[int | str], Any] | None = self.context.smbus
        if opener is None:
            from smbus2 import SMBus

            opener = SMBus
        try:
            bus = opener(self.bus_id)
        except FileNotFoundError:
            raise SensorError(f"I2C bus {self.bus_id}: no such bus (is the i2c-dev module loaded?)") from None
        except PermissionError:
            raise SensorError(f"I2C bus {self.bus_id}: permission denied") from None
        except OSError as exc:
            raise SensorError(f"I2C bus {self.bus_id}: cannot open: {exc.strerror or exc}") from None
        if self.pec:
            try:
                bus.pec = 1
            except OSError:
                bus.close()
                raise SensorError(f"I2C bus {self.bus_id}: the adapter does not support PEC (set pec = false)") \
                    from None
        self._bus = bus
        return bus

    def call(self, what: str, method: str, *args: Any) -> Any:
        """Run ``bus.<method>(address, *args)``; on OSError close the bus and raise `I2cError`."""
        bus = self._open()
        try:
            return getattr(bus, method)(self.address, *args)
        except OSError as exc:
            self.close()
            reason = _REASONS.get(exc.errno) or exc.strerror or str(exc)
            where = "" if exc.errno == errno.ENXIO else f" {what}:"
            raise I2cError(f"{self.label}:{where} {reason} ({_errno_name(exc.errno)})", exc.errno) from None

    def close(self) -> None:
        """Close the bus handle (the next `call` reopens it)."""
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError:
                pass


class I2cOptions(SensorOptions):
    """Keys shared by the I2C families: which bus, which 7-bit address."""

    bus: int | str
    """Bus number (1) or i2c-dev path ("/dev/i2c-1"; digits and i2c-dev paths become the number)."""
    address: Annotated[int, Field(ge=0x08, le=0x77)]
    """7-bit address (0x58; not the 8-bit 0xB0 some vendors quote). A string "0x58" is accepted."""

    @field_validator("bus", mode="before")
    @classmethod
    def _bus(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a bus number or an i2c-dev path")  # noqa: TRY004 (pydantic wants ValueError)
        if isinstance(value, str):
            value = value.strip()
            match = re.fullmatch(r"(?:/dev/i2c-)?(\d+)", value)
            if match:
                return int(match.group(1))
            if not value:
                raise ValueError("must be a bus number or an i2c-dev path")
        return value

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a 7-bit I2C address")  # noqa: TRY004 (pydantic wants ValueError)
        if isinstance(value, str):
            try:
                return int(value.strip(), 0)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        return value


@contextmanager
def one_read_at_a_time(lock: threading.Lock, label: str) -> Iterator[None]:
    """Hold ``lock`` for one read; SensorError at once if the previous read (stuck on a hung bus) still holds it."""
    if not lock.acquire(blocking=False):
        raise SensorError(f"{label}: the previous read has not finished")
    try:
        yield
    finally:
        lock.release()
