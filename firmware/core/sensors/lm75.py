"""LM75-class temperature sensors over raw I2C (type ``lm75``): LM75, LM75A/B, TMP75 and kin.

Why this decoder exists next to the kernel: when the kernel's ``lm75``
hwmon driver is bound to the chip, the ``hwmon`` family (``chip = "lm75"``)
reads it instead and this module is not used for that chip. This decoder is
for boards where no kernel driver is bound (no device-tree or ACPI entry, no
``new_device`` line at boot, a kernel built without it). The two never share
a chip: once the driver owns the address, raw access to it fails with EBUSY.

Registers: 0x00 temperature, 0x01 config (bit 0 shutdown; TMP75 bits 6:5 =
resolution), 0x02 THYST, 0x03 TOS, at addresses 0x48–0x4F. The temperature is
a left-justified two's complement word sent MSB first; SMBus read-word
assembles it LSB first, so `decode_lm75` swaps the bytes before decoding.

With ``resolution_bits`` above 9 (12 for a TMP75) the config register's
resolution bits are set when they differ (normally once, again after the chip
lost power), and checked by reading them back: a plain LM75 ignores them.
The value is ``temp`` (°C); TOS and THYST go into info. A reading outside the
chip's range (−55…+125 °C), or with bits set below any supported resolution
(a bus stuck high reads 0xFFFF), is a `SensorError`, not a temperature.
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from pydantic import Field

from firmware.core.sensors.base import (
    Level,
    Reading,
    Sensor,
    SensorContext,
    SensorError,
)
from firmware.core.sensors.i2c import I2cClient, I2cOptions, one_read_at_a_time

__all__ = ["Lm75Options", "Lm75Sensor", "decode_lm75"]

TEMPERATURE, CONFIG, THYST, TOS = 0x00, 0x01, 0x02, 0x03
CONFIG_SHUTDOWN = 0x01
CONFIG_RESOLUTION = 0x60  # TMP75 R1:R0; 00 = 9 bits … 11 = 12 bits
RANGE = (-55.0, 125.0)


def _swap(word: int) -> int:
    return (word >> 8 | word << 8) & 0xFFFF


def decode_lm75(word: int, bits: int = 9) -> float:
    """°C from a temperature word as ``read_word_data`` returns it (LSB first), at ``bits`` resolution (9–12).

    The register value (MSB first) 0x1900 is 25.0 °C, 0x1910 at 12 bits 25.0625,
    0xFF80 −0.5, 0xE700 −25.0; ``read_word_data`` returns them as 0x0019, 0x1019, 0x80FF, 0x00E7.
    """
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
        raise ValueError(f"expected a 16-bit word, not {word!r}")
    if bits not in (9, 10, 11, 12):
        raise ValueError(f"bits must be 9 to 12, not {bits!r}")
    raw = _swap(word)
    signed = raw - 0x10000 if raw & 0x8000 else raw
    return (signed >> (16 - bits)) / (1 << (bits - 8))


class Lm75Options(I2cOptions):
    """Keys of an ``lm75`` sensor."""

    address: Annotated[int, Field(ge=0x48, le=0x4F)]
    """7-bit address, 0x48–0x4F."""
    resolution_bits: Literal[9, 10, 11, 12] = 9
    """9 for an LM75; up to 12 for a TMP75 (written to the config register)."""


class Lm75Sensor(Sensor):
    """An LM75/TMP75: ``temp`` in °C; WARNING ``shutdown`` while the chip is in shutdown (a stale reading)."""

    family = "lm75"
    Options = Lm75Options
    options: Lm75Options

    def __init__(self, name: str, options: Lm75Options, context: SensorContext) -> None:
        """Set up the (lazily opened) bus client."""
        super().__init__(name, options, context)
        self._client = I2cClient(context, options.bus, options.address)
        self._lock = threading.Lock()
        self._limits: dict[str, str] | None = None

    def close(self) -> None:
        """Close the bus."""
        self._client.close()

    def read(self) -> Reading:
        """Read the temperature (and, once, the limits)."""
        with one_read_at_a_time(self._lock, self._client.label):
            return self._read()

    def _read(self) -> Reading:
        call, label = self._client.call, self._client.label
        config = call("config (0x01)", "read_byte_data", CONFIG)
        bits = self.options.resolution_bits
        if bits > 9:
            wanted = config & ~CONFIG_RESOLUTION | (bits - 9) << 5
            if config != wanted:
                call("config (0x01)", "write_byte_data", CONFIG, wanted)
                config = call("config (0x01)", "read_byte_data", CONFIG)
                if config & CONFIG_RESOLUTION != wanted & CONFIG_RESOLUTION:
                    raise SensorError(f"{label}: the chip did not take {bits}-bit resolution (config reads "
                                      f"0x{config:02x}): a plain LM75? set resolution_bits = 9")
        word = call("temperature (0x00)", "read_word_data", TEMPERATURE)
        if _swap(word) & 0x000F:  # no LM75-class chip resolves more than 12 bits
            raise SensorError(f"{label}: implausible temperature word 0x{_swap(word):04x} (bus stuck?)")
        celsius = decode_lm75(word, bits)
        if not RANGE[0] <= celsius <= RANGE[1]:
            raise SensorError(f"{label}: implausible temperature {celsius:g} °C (raw 0x{_swap(word):04x}; "
                              f"the chip measures {RANGE[0]:g}…{RANGE[1]:g} °C)")
        if self._limits is None:
            tos = decode_lm75(call("TOS (0x03)", "read_word_data", TOS), 12)
            thyst = decode_lm75(call("THYST (0x02)", "read_word_data", THYST), 12)
            self._limits = {"tos": f"{tos:g} °C", "thyst": f"{thyst:g} °C"}
        info = {**self._limits, "resolution": f"{bits} bits"}
        if config & CONFIG_SHUTDOWN:
            return Reading(level=Level.WARNING, summary=f"{celsius:g} °C (chip in shutdown: the reading is stale)",
                           values={"temp": celsius}, units={"temp": "°C"}, conditions=("shutdown",), info=info)
        return Reading(summary=f"{celsius:g} °C", values={"temp": celsius}, units={"temp": "°C"}, info=info)
