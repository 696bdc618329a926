"""Simulated I2C/SMBus buses: device models at addresses, reached through an smbus2.SMBus stand-in.

A simulated machine owns its buses (`SimI2cBuses`: the simulated chassis
has one set, each test its own) and attaches device models at addresses on
them. Drivers open a bus exactly as they would with smbus2, through the
opener the owner hands them: ``buses.open(1).write_byte(address, value)``
(``SensorContext(smbus=buses.open)``, ``Pcf8574Relays(smbus=buses.open)``).
Each transaction goes to the device model attached at that address of that
bus; an address with nothing attached fails with ``OSError(ENXIO)`` like
the kernel's i2c-dev. Buses are named by number: ``1``, ``"1"`` and
``"/dev/i2c-1"`` are the same bus, and a bus exists as soon as it is named.
Transactions are serialised per bus, as on a real bus.

Adding a device model (an LM75 sensor, a PMBus power supply, ...):

1. Subclass ``SimI2cDevice`` and override the transactions the chip answers,
   keeping its state behind ``self.lock`` (tests poke it from other threads)::

       class Lm75Model(SimI2cDevice):
           def __init__(self, celsius: float = 25.0) -> None:
               super().__init__()
               self.celsius = celsius

           def read_word_data(self, register: int) -> int:
               with self.lock:
                   if register != 0:  # only the temperature register is modelled
                       return super().read_word_data(register)
                   raw = round(self.celsius * 2) << 7 & 0xFFFF  # 9-bit two's complement, MSB first
                   return (raw >> 8) | (raw & 0xFF) << 8  # SMBus words arrive LSB first

   Unmodelled transactions raise ``OSError(EIO)``; the block transactions
   default to byte-register reads/writes with auto-increment, and words to
   two byte registers (LSB first), so a register-file chip often needs only
   ``read_byte_data``/``write_byte_data``. A PMBus supply would answer
   ``read_byte_data`` (STATUS_BYTE, 0x78) and ``read_word_data`` (READ_VIN
   0x88, READ_IOUT 0x8C ... in LINEAR11).
2. Attach it on the buses of the machine or test that owns them:
   ``buses.attach(1, 0x48, Lm75Model())``, and ``buses.detach(1, 0x48)`` to
   pull it (tests get fresh buses from the ``i2c`` fixture in tests/conftest.py).

PEC (SMBus packet error checking): a driver enables it as with smbus2,
``bus.pec = 1``; the handle then frames every SMBus transaction (not the I2C
block transfers, as in the kernel) with its wire bytes, address bytes
included. Before a write the device's ``pec_received`` sees those bytes and
the PEC byte and may refuse the write; after a read the handle compares the
device's ``pec_for_read`` with the CRC of the bytes and fails with
``OSError(EBADMSG)`` on a mismatch, like the kernel. A device that does not
override them has no PEC: its reads fail (the master clocks in an idle bus,
0xFF). `smbus_pec` computes the CRC for models. Device models for sensors
(LM75, PMBus supplies) live in sim/i2cdevices.py.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["Pcf8574Model", "SimI2cBus", "SimI2cBuses", "SimI2cDevice", "SimSMBus", "smbus_pec"]

BLOCK_MAX = 32  # I2C_SMBUS_BLOCK_MAX: the longest i2c block transfer smbus2 allows

BusKey = int | str


def _bus_key(bus: int | str) -> BusKey:
    """Normalise a bus: 1, "1" and "/dev/i2c-1" are all bus 1; other names stay as given."""
    if isinstance(bus, bool) or not isinstance(bus, (int, str)):
        raise TypeError(f"bus must be an int or a str, not {bus!r}")
    if isinstance(bus, str):
        match = re.fullmatch(r"(?:/dev/i2c-)?(\d+)", bus)
        return int(match.group(1)) if match else bus
    return bus


def _check(value: int, limit: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{what} must be an integer 0..{limit}, not {value!r}")


def _not_modelled(device: object, transaction: str) -> OSError:
    return OSError(errno.EIO, f"{transaction} is not modelled by {type(device).__name__}")


def smbus_pec(data: bytes) -> int:
    """SMBus PEC of ``data``: CRC-8, polynomial x^8 + x^2 + x + 1, initial value 0, no reflection."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1 ^ 0x07) & 0xFF if crc & 0x80 else crc << 1
    return crc


def _wire(address: int, transaction: str, args: tuple[Any, ...], result: Any = None) -> bytes | None:
    """The bytes of an SMBus transaction as the PEC covers them (None for I2C block transfers, which have no PEC)."""
    write, read = address << 1, address << 1 | 1
    if transaction == "read_byte":
        return bytes([read, result])
    if transaction == "write_byte":
        return bytes([write, args[0]])
    if transaction == "read_byte_data":
        return bytes([write, args[0], read, result])
    if transaction == "write_byte_data":
        return bytes([write, args[0], args[1]])
    if transaction == "read_word_data":
        return bytes([write, args[0], read, result & 0xFF, result >> 8])
    if transaction == "write_word_data":
        return bytes([write, args[0], args[1] & 0xFF, args[1] >> 8])
    if transaction == "read_block_data":
        return bytes([write, args[0], read, len(result), *result])
    return None


class SimI2cDevice:
    """Base class of simulated I2C devices: override the transactions the chip answers.

    Every method here is one SMBus transaction as seen by the device (the
    bus has already checked the argument ranges). The defaults raise
    ``OSError(EIO)``, except words and blocks, which are built from
    byte-register transactions (words LSB first, blocks auto-incrementing).
    """

    def __init__(self) -> None:
        """Create the lock that guards the model's state."""
        self.lock = threading.RLock()

    def read_byte(self) -> int:
        """Receive byte (no register)."""
        raise _not_modelled(self, "read_byte")

    def write_byte(self, value: int) -> None:
        """Send byte (no register)."""
        raise _not_modelled(self, "write_byte")

    def read_byte_data(self, register: int) -> int:
        """Read one byte register."""
        raise _not_modelled(self, "read_byte_data")

    def write_byte_data(self, register: int, value: int) -> None:
        """Write one byte register."""
        raise _not_modelled(self, "write_byte_data")

    def read_word_data(self, register: int) -> int:
        """Read a 16-bit word: by default byte registers ``register`` (low) and ``register + 1`` (high)."""
        with self.lock:
            return self.read_byte_data(register) | self.read_byte_data((register + 1) & 0xFF) << 8

    def write_word_data(self, register: int, value: int) -> None:
        """Write a 16-bit word: by default byte registers ``register`` (low) and ``register + 1`` (high)."""
        with self.lock:
            self.write_byte_data(register, value & 0xFF)
            self.write_byte_data((register + 1) & 0xFF, value >> 8)

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        """Read ``length`` bytes from ``register`` on (auto-increment by default)."""
        with self.lock:
            return [self.read_byte_data((register + i) & 0xFF) for i in range(length)]

    def read_block_data(self, register: int) -> list[int]:
        """SMBus block read: the device sends the length (0..32), then the bytes."""
        raise _not_modelled(self, "read_block_data")

    def pec_for_read(self, wire: bytes) -> int:
        """The PEC byte sent after a read whose bytes were ``wire``; by default none (the idle bus, 0xFF)."""
        return 0xFF

    def pec_received(self, wire: bytes, pec: int) -> bool:
        """A write of ``wire`` came with PEC byte ``pec``: False discards it. By default it is accepted."""
        return True

    def write_i2c_block_data(self, register: int, data: list[int]) -> None:
        """Write ``data`` to ``register`` on (auto-increment by default)."""
        with self.lock:
            for i, value in enumerate(data):
                self.write_byte_data((register + i) & 0xFF, value)


class SimI2cBus:
    """One simulated I2C bus: the device models attached at its addresses, one transaction at a time."""

    def __init__(self, name: BusKey) -> None:
        """An empty bus called ``name`` (its number, or the path of a bus that has no number)."""
        self.name = name
        self._devices: dict[int, SimI2cDevice] = {}
        self._lock = threading.RLock()

    def attach(self, address: int, device: SimI2cDevice) -> SimI2cDevice:
        """Put ``device`` at 7-bit ``address``; ValueError if the address is taken."""
        _check(address, 0x7F, "address")
        with self._lock:
            if address in self._devices:
                raise ValueError(f"I2C bus {self.name} address 0x{address:02x} already has a device; detach it first")
            self._devices[address] = device
        return device

    def detach(self, address: int) -> SimI2cDevice | None:
        """Remove and return the device at ``address`` (None if there was none)."""
        with self._lock:
            return self._devices.pop(address, None)

    def device(self, address: int) -> SimI2cDevice:
        """The device attached at ``address``; KeyError if none."""
        with self._lock:
            try:
                return self._devices[address]
            except KeyError:
                raise KeyError(f"no simulated device on I2C bus {self.name} at 0x{address:02x}") from None

    def open(self) -> SimSMBus:
        """A new smbus2.SMBus-compatible handle on this bus."""
        return SimSMBus(self)

    def transfer(self, address: int, transaction: str, args: tuple[Any, ...], pec: bool) -> Any:
        """Run one transaction on the device at ``address``, as the kernel would report it."""
        with self._lock:
            device = self._devices.get(address)
            if device is None:
                raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))
            if not pec:
                return getattr(device, transaction)(*args)
            if transaction.startswith("write"):
                wire = _wire(address, transaction, args)
                if wire is not None and not device.pec_received(wire, smbus_pec(wire)):
                    return None  # the device discarded it (a PMBus device flags STATUS_CML)
                return getattr(device, transaction)(*args)
            result = getattr(device, transaction)(*args)
            wire = _wire(address, transaction, args, result)
            if wire is not None and device.pec_for_read(wire) != smbus_pec(wire):
                raise OSError(errno.EBADMSG, os.strerror(errno.EBADMSG))
            return result


class SimI2cBuses:
    """The I2C buses of one simulated machine, by number; a bus exists as soon as it is named.

    ``open`` is the SMBus opener to hand to drivers and sensors (what
    ``smbus2.SMBus`` is on hardware).
    """

    def __init__(self) -> None:
        """No buses yet."""
        self._buses: dict[BusKey, SimI2cBus] = {}
        self._lock = threading.Lock()

    def bus(self, bus: int | str) -> SimI2cBus:
        """The bus ``bus`` (a number or a /dev/i2c-N path), made on first use."""
        key = _bus_key(bus)
        with self._lock:
            if key not in self._buses:
                self._buses[key] = SimI2cBus(key)
            return self._buses[key]

    def open(self, bus: int | str) -> SimSMBus:
        """An smbus2.SMBus-compatible handle on ``bus``: the opener drivers and sensors take."""
        return self.bus(bus).open()

    def attach(self, bus: int | str, address: int, device: SimI2cDevice) -> SimI2cDevice:
        """Put ``device`` on ``bus`` at 7-bit ``address``; ValueError if the address is taken."""
        return self.bus(bus).attach(address, device)

    def detach(self, bus: int | str, address: int) -> SimI2cDevice | None:
        """Remove and return the device at ``(bus, address)`` (None if there was none)."""
        return self.bus(bus).detach(address)

    def device(self, bus: int | str, address: int) -> SimI2cDevice:
        """The device attached at ``(bus, address)``; KeyError if none."""
        return self.bus(bus).device(address)


class SimSMBus:
    """An smbus2.SMBus-compatible handle on one simulated bus (the subset the drivers use)."""

    def __init__(self, bus: SimI2cBus) -> None:
        """Open a handle on ``bus`` (usually through `SimI2cBuses.open` or `SimI2cBus.open`)."""
        self.bus = bus
        self._open = True
        self.pec = 0
        """1 to frame SMBus transactions with PEC (as smbus2's ``pec``)."""

    def close(self) -> None:
        """Close the handle; later transactions raise OSError(EBADF)."""
        self._open = False

    def __enter__(self) -> SimSMBus:
        """The handle itself."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the handle."""
        self.close()

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        """Receive one byte from the device."""
        return self._call(i2c_addr, "read_byte")

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        """Send one byte to the device."""
        _check(value, 0xFF, "value")
        self._call(i2c_addr, "write_byte", value)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read one byte register."""
        _check(register, 0xFF, "register")
        return self._call(i2c_addr, "read_byte_data", register)

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        """Write one byte register."""
        _check(register, 0xFF, "register")
        _check(value, 0xFF, "value")
        self._call(i2c_addr, "write_byte_data", register, value)

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read a 16-bit word (SMBus order: LSB first on the wire)."""
        _check(register, 0xFF, "register")
        return self._call(i2c_addr, "read_word_data", register)

    def write_word_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        """Write a 16-bit word (SMBus order: LSB first on the wire)."""
        _check(register, 0xFF, "register")
        _check(value, 0xFFFF, "value")
        self._call(i2c_addr, "write_word_data", register, value)

    def read_block_data(self, i2c_addr: int, register: int, force: bool | None = None) -> list[int]:
        """SMBus block read: up to 32 bytes, the length sent by the device."""
        _check(register, 0xFF, "register")
        data = list(self._call(i2c_addr, "read_block_data", register))
        if len(data) > BLOCK_MAX:
            raise OSError(errno.EPROTO, f"block of {len(data)} bytes is longer than {BLOCK_MAX}")
        return data

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        """Read ``length`` (1..32) bytes starting at ``register``."""
        _check(register, 0xFF, "register")
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= BLOCK_MAX:
            raise ValueError(f"Desired block length over {BLOCK_MAX} bytes" if isinstance(length, int)
                             else f"length must be an integer, not {length!r}")
        return list(self._call(i2c_addr, "read_i2c_block_data", register, length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int],
                             force: bool | None = None) -> None:
        """Write ``data`` (at most 32 bytes) starting at ``register``."""
        _check(register, 0xFF, "register")
        data = list(data)
        if len(data) > BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {BLOCK_MAX} bytes")
        for value in data:
            _check(value, 0xFF, "data byte")
        self._call(i2c_addr, "write_i2c_block_data", register, data)

    def _call(self, address: int, transaction: str, *args: Any) -> Any:
        """Run one transaction on the device at ``address``, as the kernel would report it."""
        _check(address, 0x7F, "i2c_addr")
        if not self._open:
            raise OSError(errno.EBADF, f"simulated I2C bus {self.bus.name} is closed")
        return self.bus.transfer(address, transaction, args, bool(self.pec))


class Pcf8574Model(SimI2cDevice):
    """A PCF8574(A) quasi-bidirectional 8-bit port.

    ``write_byte`` sets the output latch (power-on value 0xFF) and is logged
    in ``history`` as ``(time.time(), value)``. A latch bit 0 drives its pin
    low; a latch bit 1 is a weak pull-up, so the pin reads whatever is driven
    onto it externally (``set_input``; default high). ``read_byte`` returns
    the pin levels. The chip has no registers: every byte of a register
    write goes to the latch, and a register read first writes the register
    byte to the latch, as on the real chip.
    """

    def __init__(self) -> None:
        """A chip at power-on: latch all ones, nothing driving the pins."""
        super().__init__()
        self._latch = 0xFF
        self._inputs = 0xFF  # levels driven onto the pins from outside (1 = high or floating)
        self._history: list[tuple[float, int]] = []

    @property
    def latch(self) -> int:
        """The output latch (the byte last written)."""
        with self.lock:
            return self._latch

    @property
    def history(self) -> list[tuple[float, int]]:
        """A copy of every byte written: ``(time.time(), value)``."""
        with self.lock:
            return list(self._history)

    @property
    def pins(self) -> int:
        """The pin levels as the chip would read them."""
        with self.lock:
            return self._latch & self._inputs

    def set_input(self, bit: int, level: bool) -> None:
        """Drive pin ``bit`` (0..7) from outside: False pulls it low, True lets it float high."""
        _check(bit, 7, "bit")
        with self.lock:
            if level:
                self._inputs |= 1 << bit
            else:
                self._inputs &= ~(1 << bit)

    def read_byte(self) -> int:
        """The pin levels: 0 where the latch drives low, else the external level."""
        return self.pins

    def write_byte(self, value: int) -> None:
        """Set the output latch."""
        with self.lock:
            self._latch = value
            self._history.append((time.time(), value))

    def read_byte_data(self, register: int) -> int:
        """A register read: the register byte lands in the latch, then the pins are read."""
        with self.lock:
            self.write_byte(register)
            return self.read_byte()

    def write_byte_data(self, register: int, value: int) -> None:
        """A register write: both bytes land in the latch in turn."""
        with self.lock:
            self.write_byte(register)
            self.write_byte(value)

    def read_word_data(self, register: int) -> int:
        """The register byte lands in the latch, then the pins are read twice (LSB first)."""
        with self.lock:
            low, high = self.read_i2c_block_data(register, 2)
            return low | high << 8

    def write_word_data(self, register: int, value: int) -> None:
        """The register byte, then the low and high bytes land in the latch in turn."""
        self.write_i2c_block_data(register, [value & 0xFF, value >> 8])

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        """The register byte lands in the latch, then the pins are read ``length`` times."""
        with self.lock:
            self.write_byte(register)
            return [self.read_byte() for _ in range(length)]

    def write_i2c_block_data(self, register: int, data: list[int]) -> None:
        """Every byte lands in the latch in turn."""
        with self.lock:
            for value in (register, *data):
                self.write_byte(value)
