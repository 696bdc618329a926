"""Relays and contact-feedback inputs on a PCF8574/PCF8574A I2C I/O expander.

Bit n-1 of the expander's port is channel n. The PCF8574 has no direction
register: a bit written 1 is a weak pull-up (usable as an input), a bit
written 0 drives the pin low. Relay boards with active-low inputs (most
opto-isolated modules) energize on 0, so ``active_low = True`` is the
default. Reading the port returns pin levels, not the output latch, so the
relay driver keeps a shadow of the byte it last wrote and changes channels
from the shadow, never by reading the chip back. Unused bits stay 1, so the
spare pins of the same chip can serve as ``Pcf8574Inputs``.

The bus is opened through smbus2 (``SMBus(bus)``), or through another
SMBus-compatible class or opener: named ``"module:Class"`` in the board
profile's ``smbus``, or passed as an object (the simulator's buses, see
`firmware.drivers.i2c`).
"""

from __future__ import annotations

import threading
from typing import Any

from firmware.drivers.i2c import SMBusOpener, check_bus, check_pcf8574_address, reason, smbus_opener
from firmware.drivers.relays.base import CommandedStates, RelayError, check_channel

__all__ = ["Pcf8574Inputs", "Pcf8574Relays"]

PORT_BITS = 8


class _Pcf8574:
    """What the relay and input drivers share: parameters, the bus handle and error messages."""

    kind = "PCF8574"
    name: str

    def __init__(self, bus: int | str, address: int, channels: int, active_low: bool,
                 smbus: str | SMBusOpener | None) -> None:
        check_bus(bus)
        check_pcf8574_address(address)
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= PORT_BITS:
            raise ValueError(f"channels must be an integer 1..{PORT_BITS}, not {channels!r}")
        if not isinstance(active_low, bool):
            raise ValueError(f"active_low must be true or false, not {active_low!r}")
        self.bus = bus
        self.address = address
        self.channels = channels
        self.active_low = active_low
        self._open_smbus = smbus_opener(smbus)
        self._where = f"I2C bus {bus} address 0x{address:02x}"
        self._lock = threading.RLock()
        self._smbus: Any = None

    def _open_bus(self) -> None:
        """Open the bus if it is not open; RelayError naming the bus if it cannot be."""
        if self._smbus is None:
            try:
                self._smbus = self._open_smbus(self.bus)
            except Exception as exc:  # FileNotFoundError, PermissionError, the class's own errors
                raise RelayError(f"{self.name}: cannot open I2C bus {self.bus}: {reason(exc)}") from None

    def _close_bus(self) -> None:
        handle, self._smbus = self._smbus, None
        if handle is not None:
            try:
                handle.close()
            except Exception:
                pass

    def _failed(self, what: str, exc: Exception) -> RelayError:
        return RelayError(f"{self.name}: {what} failed: {reason(exc)} (no {self.kind} answering there?)")

    def _probe(self) -> bool:
        """One read of the port: whether the chip answers (reading has no effect on its outputs)."""
        with self._lock:
            if self._smbus is None:
                return False
            try:
                self._smbus.read_byte(self.address)
            except Exception:
                return False
            return True


class Pcf8574Relays(CommandedStates, _Pcf8574):
    """Relay channels on a PCF8574(A) port: channel n is bit n-1."""

    def __init__(self, bus: int | str = 1, address: int = 0x20, channels: int = 8, active_low: bool = True,
                 smbus: str | SMBusOpener | None = None) -> None:
        """Validate the board profile parameters; the bus is not opened here."""
        super().__init__(bus, address, channels, active_low, smbus)
        self.name = f"PCF8574 relays on {self._where}"
        self._shadow = self._value({})  # the byte last written (or to be written on open)
        self._states: dict[int, bool] = {}

    def open(self) -> None:
        """Open the bus and write the all-de-energized byte (also proves the chip answers)."""
        with self._lock:
            self._open_bus()
            off = self._all_off()
            self._write(self._value(off), "write")
            self._states = off

    def set(self, channel: int, energized: bool) -> None:
        """Drive one channel: change its bit in the shadow byte and write the whole byte."""
        check_channel(channel, self.channels)
        with self._lock:
            if self._smbus is None:
                self.open()
            states = {**self._states, channel: bool(energized)}
            self._write(self._value(states), f"setting channel {channel}")
            self._states = states

    def release(self) -> None:
        """Write the all-de-energized byte if the chip answers, then close the bus. Never raises."""
        with self._lock:
            try:
                self._open_bus()
                off = self._all_off()
                self._write(self._value(off), "write")
                self._states = off
            except Exception:  # releasing must never raise
                pass
            self._close_bus()

    @property
    def connected(self) -> bool:
        """Whether the bus is open and the chip answers a read right now (one short I2C transaction)."""
        return self._probe()

    @property
    def shadow(self) -> int:
        """The port byte last written to the chip (or that open() will write)."""
        with self._lock:
            return self._shadow

    def _value(self, states: dict[int, bool]) -> int:
        """The port byte for ``states``: unused and de-energized bits released high, unless active-high."""
        value = 0xFF
        for channel in range(1, self.channels + 1):
            bit = 1 << (channel - 1)
            energized = states.get(channel, False)
            if energized != self.active_low:  # active-high and energized, or active-low and off: 1
                value |= bit
            else:
                value &= ~bit
        return value

    def _write(self, value: int, what: str) -> None:
        try:
            self._smbus.write_byte(self.address, value)
        except Exception as exc:  # OSError (ENXIO, EREMOTEIO on a NACK, EIO) and the class's own errors
            raise self._failed(what, exc) from None
        self._shadow = value


class Pcf8574Inputs(_Pcf8574):
    """Contact-feedback inputs on a PCF8574(A) port: input n is bit n-1.

    The inputs are only read, never written: the bits must be latched high,
    which they are at power-on and on the spare bits of a ``Pcf8574Relays``.
    With ``active_low`` (a contact closing to ground against the pull-up) a
    low pin reads as True.
    """

    def __init__(self, bus: int | str = 1, address: int = 0x20, channels: int = 8, active_low: bool = True,
                 smbus: str | SMBusOpener | None = None) -> None:
        """Validate the board profile parameters; the bus is not opened here."""
        super().__init__(bus, address, channels, active_low, smbus)
        self.name = f"PCF8574 inputs on {self._where}"

    def open(self) -> None:
        """Open the bus and read the port once to prove the chip answers."""
        with self._lock:
            self._open_bus()
            self._read_port()

    def read(self, channel: int) -> bool:
        """Whether input ``channel`` is active (its contact closed)."""
        check_channel(channel, self.channels)
        with self._lock:
            if self._smbus is None:
                self.open()
            level = bool(self._read_port() >> (channel - 1) & 1)
            return level != self.active_low

    def release(self) -> None:
        """Close the bus. Never raises."""
        with self._lock:
            self._close_bus()

    @property
    def connected(self) -> bool:
        """Whether the bus is open and the chip answers a read right now."""
        return self._probe()

    def _read_port(self) -> int:
        try:
            return int(self._smbus.read_byte(self.address)) & 0xFF
        except Exception as exc:
            raise self._failed("read", exc) from None

