"""PMBus power supplies read over raw I2C/SMBus (type ``pmbus``).

Why this decoder exists next to the kernel: when the kernel's ``pmbus``
hwmon driver (or a chip-specific one) is bound to a supply, the ``hwmon``
family reads it instead and this module is not used for that supply. This
decoder is for boards where no kernel driver is bound (no device-tree or ACPI
entry, a distribution kernel without the driver, a supply the driver does not
probe) or where the registers needed (STATUS_* detail bits, CLEAR_FAULTS
handling, MFR_* strings, PEC errors) are not exposed through hwmon.

A redundant server supply answers PMBus at a 7-bit address (commonly 0x58 and
0x59). One poll reads STATUS_WORD, the detail status registers its summary
bits point to, the READ_* telemetry (LINEAR11, READ_VOUT in LINEAR16 scaled by
VOUT_MODE) and, once, MFR_ID/MODEL/SERIAL. The level is the supply's own
verdict from its status bits; configured thresholds apply on top of the
values (``vin``, ``iin``, ``vout``, ``iout``, ``pout``, ``pin``, ``temp1``,
``temp2``, ``fan1``, ``fan2``, ``present``).

Status bits latch until CLEAR_FAULTS. By default a poll that sees any reads
the latched status, sends CLEAR_FAULTS and reads it again: what re-asserts at
once is going on now and sets the level; what cleared happened since the last
poll (an AC blip) and, unless it was already reported active then, is
reported once as ``transient_<condition>`` at WARNING. With ``clear_faults =
false`` the latched bits are reported as they are, until someone clears them.
A register the supply does not answer at its first read is taken as not
implemented and skipped from then on (the "invalid command" flag that NACK
latched is cleared at once, as the kernel driver does when it probes).

With ``pec = true`` the kernel frames every transfer with a PEC byte
(smbus2's ``bus.pec = 1``); a bad PEC on a read (EBADMSG) or one the supply
reports for a write (STATUS_CML bit 5) is a `SensorError`.

Alternatively read the same from a kernel pmbus hwmon device: with the
kernel's pmbus driver bound to the supply (``echo pmbus 0x58 >
/sys/bus/i2c/devices/i2c-1/new_device``), raw access to the address fails with
EBUSY, and ``type = "hwmon"``, ``chip = "pmbus"`` reads in1 (vin), in2 (vout),
curr*, power*, temp*, fan1 and the kernel's alarm files (hwmon.py).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import Field

from firmware.core.sensors.base import (
    Level,
    Reading,
    Sensor,
    SensorContext,
    SensorError,
)
from firmware.core.sensors.i2c import (
    I2cClient,
    I2cError,
    I2cOptions,
    one_read_at_a_time,
)

__all__ = [
    "PmbusOptions",
    "PmbusSensor",
    "decode_status_cml",
    "decode_status_fans_1_2",
    "decode_status_input",
    "decode_status_iout",
    "decode_status_temperature",
    "decode_status_vout",
    "decode_status_word",
    "linear11",
    "linear16",
    "pec_crc8",
]

# ---------------------------------------------------------------- PMBus commands

PAGE = 0x00
CLEAR_FAULTS = 0x03
VOUT_MODE = 0x20
STATUS_WORD = 0x79
STATUS_VOUT, STATUS_IOUT, STATUS_INPUT, STATUS_TEMPERATURE, STATUS_CML = 0x7A, 0x7B, 0x7C, 0x7D, 0x7E
STATUS_FANS_1_2 = 0x81
READ_VIN, READ_IIN, READ_VOUT, READ_IOUT = 0x88, 0x89, 0x8B, 0x8C
READ_TEMPERATURE_1, READ_TEMPERATURE_2 = 0x8D, 0x8E
READ_FAN_SPEED_1, READ_FAN_SPEED_2 = 0x90, 0x91
READ_POUT, READ_PIN = 0x96, 0x97
MFR_ID, MFR_MODEL, MFR_SERIAL = 0x99, 0x9A, 0x9E

# ------------------------------------------------------------------ pure decoders


def _check_word(word: int, limit: int = 0xFFFF) -> None:
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= limit:
        raise ValueError(f"expected an integer 0..0x{limit:x}, not {word!r}")


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & 1 << (bits - 1) else value


def linear11(word: int) -> float:
    """A PMBus LINEAR11 word: signed 5-bit exponent N (bits 15..11), signed 11-bit mantissa Y; Y × 2^N."""
    _check_word(word)
    return _signed(word & 0x7FF, 11) * 2.0 ** _signed(word >> 11, 5)


def linear16(word: int, vout_mode: int) -> float:
    """A LINEAR16 READ_VOUT word: unsigned ``word`` × 2^N, N the signed low 5 bits of VOUT_MODE.

    ValueError when VOUT_MODE is not linear (bits 7..5: 001 VID, 010 direct).
    """
    _check_word(word)
    _check_word(vout_mode, 0xFF)
    if vout_mode >> 5:
        kind = {1: "VID", 2: "direct"}.get(vout_mode >> 5, "an unknown")
        raise ValueError(f"VOUT_MODE 0x{vout_mode:02x} is {kind} mode, not linear")
    return word * 2.0 ** _signed(vout_mode & 0x1F, 5)


def _bits(value: int, names: dict[int, str], limit: int) -> list[str]:
    _check_word(value, limit)
    return [name for bit, name in sorted(names.items(), reverse=True) if value & 1 << bit]


_STATUS_WORD_BITS = {
    15: "vout", 14: "iout_pout", 13: "input", 12: "mfr_specific", 11: "power_not_good", 10: "fans",
    9: "other", 8: "unknown", 7: "busy", 6: "off", 5: "vout_ov_fault", 4: "iout_oc_fault",
    3: "vin_uv_fault", 2: "temperature", 1: "cml", 0: "none_of_the_above",
}
_STATUS_VOUT_BITS = {7: "vout_ov_fault", 6: "vout_ov_warning", 5: "vout_uv_warning", 4: "vout_uv_fault",
                     3: "vout_max_warning", 2: "ton_max_fault", 1: "toff_max_warning", 0: "vout_tracking_error"}
_STATUS_IOUT_BITS = {7: "iout_oc_fault", 6: "iout_oc_lv_fault", 5: "iout_oc_warning", 4: "iout_uc_fault",
                     3: "current_share_fault", 2: "power_limit_mode", 1: "pout_op_fault", 0: "pout_op_warning"}
_STATUS_INPUT_BITS = {7: "vin_ov_fault", 6: "vin_ov_warning", 5: "vin_uv_warning", 4: "vin_uv_fault",
                      3: "unit_off_low_vin", 2: "iin_oc_fault", 1: "iin_oc_warning", 0: "pin_op_warning"}
_STATUS_TEMPERATURE_BITS = {7: "ot_fault", 6: "ot_warning", 5: "ut_warning", 4: "ut_fault"}
_STATUS_CML_BITS = {7: "invalid_command", 6: "invalid_data", 5: "pec_failed", 4: "memory_fault",
                    3: "processor_fault", 1: "other_communication_fault", 0: "other_memory_logic_fault"}
_STATUS_FANS_1_2_BITS = {7: "fan1_fault", 6: "fan2_fault", 5: "fan1_warning", 4: "fan2_warning",
                         3: "fan1_speed_overridden", 2: "fan2_speed_overridden", 1: "airflow_fault",
                         0: "airflow_warning"}


def decode_status_word(word: int) -> list[str]:
    """The set bits of STATUS_WORD, most significant first (``power_not_good`` is bit 11, POWER_GOOD#).

    0x2848 → ``["input", "power_not_good", "off", "vin_uv_fault"]``: the supply lost AC input.
    """
    return _bits(word, _STATUS_WORD_BITS, 0xFFFF)


def decode_status_vout(byte: int) -> list[str]:
    """The set bits of STATUS_VOUT (0x7A)."""
    return _bits(byte, _STATUS_VOUT_BITS, 0xFF)


def decode_status_iout(byte: int) -> list[str]:
    """The set bits of STATUS_IOUT (0x7B)."""
    return _bits(byte, _STATUS_IOUT_BITS, 0xFF)


def decode_status_input(byte: int) -> list[str]:
    """The set bits of STATUS_INPUT (0x7C)."""
    return _bits(byte, _STATUS_INPUT_BITS, 0xFF)


def decode_status_temperature(byte: int) -> list[str]:
    """The set bits of STATUS_TEMPERATURE (0x7D)."""
    return _bits(byte, _STATUS_TEMPERATURE_BITS, 0xFF)


def decode_status_cml(byte: int) -> list[str]:
    """The set bits of STATUS_CML (0x7E, communication/memory/logic); ``pec_failed`` is bit 5."""
    return _bits(byte, _STATUS_CML_BITS, 0xFF)


def decode_status_fans_1_2(byte: int) -> list[str]:
    """The set bits of STATUS_FANS_1_2 (0x81)."""
    return _bits(byte, _STATUS_FANS_1_2_BITS, 0xFF)


def _crc8_table() -> tuple[int, ...]:
    table = []
    for value in range(256):
        for _ in range(8):
            value = (value << 1 ^ 0x07) & 0xFF if value & 0x80 else value << 1
        table.append(value)
    return tuple(table)


_CRC8 = _crc8_table()


def pec_crc8(data: bytes) -> int:
    """SMBus PEC: CRC-8 (polynomial 0x07, init 0, no reflection) over every byte on the wire.

    ``pec_crc8(b"123456789") == 0xF4``; reading word 0x88 from 0x58 that returns CC F9 is
    covered by B0 88 B1 CC F9, PEC 0x31.
    """
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


# ------------------------------------------------------------------- the sensor


class PmbusOptions(I2cOptions):
    """Keys of a ``pmbus`` sensor."""

    page: Annotated[int, Field(ge=0, le=0x1F)] | None = None
    """PAGE to select before each poll (multi-rail devices); None sends no PAGE."""
    pec: bool = False
    """Check every transfer with SMBus PEC (the adapter and the supply must support it)."""
    fans: Annotated[int, Field(ge=0, le=2)] = 1
    """How many fans to read (READ_FAN_SPEED_1, _2)."""
    required: bool = True
    """An absent supply is CRITICAL "not present"; with False it is OK "not installed" (an empty bay)."""
    clear_faults: bool = True
    """Send CLEAR_FAULTS after a poll that saw status bits, so latched faults are reported once."""


# (register, command name, value name, unit)
_TELEMETRY = [
    (READ_VIN, "READ_VIN", "vin", "V"), (READ_IIN, "READ_IIN", "iin", "A"),
    (READ_VOUT, "READ_VOUT", "vout", "V"), (READ_IOUT, "READ_IOUT", "iout", "A"),
    (READ_POUT, "READ_POUT", "pout", "W"), (READ_PIN, "READ_PIN", "pin", "W"),
    (READ_TEMPERATURE_1, "READ_TEMPERATURE_1", "temp1", "°C"),
    (READ_TEMPERATURE_2, "READ_TEMPERATURE_2", "temp2", "°C"),
]
_FANS = [(READ_FAN_SPEED_1, "READ_FAN_SPEED_1", "fan1", "RPM"), (READ_FAN_SPEED_2, "READ_FAN_SPEED_2", "fan2", "RPM")]

# STATUS_WORD summary bit → (detail register, its name, decoder)
_DETAILS: dict[str, tuple[int, str, Callable[[int], list[str]]]] = {
    "vout": (STATUS_VOUT, "STATUS_VOUT", decode_status_vout),
    "iout_pout": (STATUS_IOUT, "STATUS_IOUT", decode_status_iout),
    "input": (STATUS_INPUT, "STATUS_INPUT", decode_status_input),
    "temperature": (STATUS_TEMPERATURE, "STATUS_TEMPERATURE", decode_status_temperature),
    "cml": (STATUS_CML, "STATUS_CML", decode_status_cml),
    "fans": (STATUS_FANS_1_2, "STATUS_FANS_1_2", decode_status_fans_1_2),
}
_INFO = [(MFR_ID, "MFR_ID", "manufacturer"), (MFR_MODEL, "MFR_MODEL", "model"), (MFR_SERIAL, "MFR_SERIAL", "serial")]

_CRITICAL = {"ac_lost", "power_not_good", "output_off", "not_present"}
_NOT_A_PROBLEM = {"busy", "fan1_speed_overridden", "fan2_speed_overridden"}
# bits that only point at a detail register or say nothing by themselves
_POINTERS = {*_DETAILS, "none_of_the_above", "off"}

_PHRASES = {
    "ac_lost": "AC input lost", "power_not_good": "power not good", "output_off": "output off",
    "vin_uv_fault": "input undervoltage fault", "vin_uv_warning": "input undervoltage warning",
    "vin_ov_fault": "input overvoltage fault", "vin_ov_warning": "input overvoltage warning",
    "unit_off_low_vin": "off for low input voltage", "iin_oc_fault": "input overcurrent fault",
    "iin_oc_warning": "input overcurrent warning", "pin_op_warning": "input overpower warning",
    "vout_ov_fault": "output overvoltage fault", "vout_ov_warning": "output overvoltage warning",
    "vout_uv_fault": "output undervoltage fault", "vout_uv_warning": "output undervoltage warning",
    "iout_oc_fault": "output overcurrent fault", "iout_oc_lv_fault": "output overcurrent shutdown",
    "iout_oc_warning": "output overcurrent warning", "pout_op_fault": "output overpower fault",
    "pout_op_warning": "output overpower warning", "power_limit_mode": "power limiting",
    "ot_fault": "over-temperature fault", "ot_warning": "over-temperature warning",
    "ut_fault": "under-temperature fault", "ut_warning": "under-temperature warning",
    "fan1_fault": "fan 1 failed", "fan2_fault": "fan 2 failed",
    "fan1_warning": "fan 1 warning", "fan2_warning": "fan 2 warning",
    "mfr_specific": "manufacturer-specific status", "other": "other status (STATUS_OTHER)",
    "unknown": "unknown fault", "pec_failed": "PEC error reported",
}


def _level_of(condition: str) -> Level:
    if condition in _CRITICAL or condition.endswith("_fault"):
        return Level.CRITICAL
    return Level.OK if condition in _NOT_A_PROBLEM else Level.WARNING


def _phrases(conditions: Iterable[str]) -> str:
    """The problems among ``conditions`` in plain words: ``"AC input lost, power not good, output off"``."""
    shown = [c for c in conditions if _level_of(c) is not Level.OK]
    if "ac_lost" in shown:  # the undervoltage bits are how AC loss shows; saying both is noise
        shown = [c for c in shown if c not in ("vin_uv_fault", "vin_uv_warning", "unit_off_low_vin")]
    return ", ".join(_PHRASES.get(c, c.replace("_", " ")) for c in shown)


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _ascii(data: list[int]) -> str:
    text = bytes(data).split(b"\0", 1)[0].decode("ascii", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text).strip()


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


class PmbusSensor(Sensor):
    """A PMBus power supply read over raw I2C: status bits → level and conditions, READ_* → values."""

    family = "pmbus"
    Options = PmbusOptions
    options: PmbusOptions

    def __init__(self, name: str, options: PmbusOptions, context: SensorContext) -> None:
        """Set up the (lazily opened) bus client and the per-supply caches."""
        super().__init__(name, options, context)
        self._client = I2cClient(context, options.bus, options.address, options.pec)
        self._lock = threading.Lock()
        self._reset_caches()

    def _reset_caches(self) -> None:
        # a supply pulled and another inserted may differ in every respect
        self._supported: dict[int, bool] = {}
        self._vout_mode: int | None = None
        self._info: dict[str, str] = {}
        self._info_tried: set[int] = set()
        self._previous: set[str] = set()  # the conditions active at the last poll

    def close(self) -> None:
        """Close the bus."""
        self._client.close()

    # -------------------------------------------------------------- transfers

    def _optional(self, what: str, method: str, register: int) -> Any:
        """Read a register that may not be implemented: None if it failed at its first read."""
        if self._supported.get(register) is False:
            return None
        try:
            value = self._client.call(f"{what} (0x{register:02X})", method, register)
        except I2cError as exc:
            if register in self._supported or exc.errno in (errno.ENXIO, errno.EBADMSG, errno.EBUSY):
                raise
            self._supported[register] = False
            # the NACK latched "invalid command" in STATUS_CML; clear it, as the kernel's probe does
            self._client.call("CLEAR_FAULTS (0x03)", "write_byte", CLEAR_FAULTS)
            return None
        self._supported[register] = True
        return value

    # ---------------------------------------------------------------- reading

    def read(self) -> Reading:
        """Poll the supply once."""
        with one_read_at_a_time(self._lock, self._client.label):
            try:
                return self._read()
            except I2cError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            self._reset_caches()
            if self.options.required:
                return Reading(level=Level.CRITICAL, summary=f"not present (nothing answers at {self._client.label})",
                               values={"present": 0.0}, units={"present": ""}, conditions=("not_present",))
            return Reading(summary="not installed", values={"present": 0.0}, units={"present": ""})

    def _read(self) -> Reading:
        call = self._client.call
        if self.options.page is not None:
            call("PAGE (0x00)", "write_byte_data", PAGE, self.options.page)
        word = call("STATUS_WORD (0x79)", "read_word_data", STATUS_WORD)
        latched, pec_failed = self._conditions(word)
        current = latched
        if word and (self.options.clear_faults or pec_failed):
            call("CLEAR_FAULTS (0x03)", "write_byte", CLEAR_FAULTS)
            if self.options.clear_faults:
                # what re-asserts at once is still going on; the rest happened since the last poll
                word = call("STATUS_WORD (0x79)", "read_word_data", STATUS_WORD)
                current, _ = self._conditions(word)
        if pec_failed and self.options.pec:
            raise SensorError(f"{self._client.label}: the supply reports a PEC error in a transfer it received "
                              "(STATUS_CML bit 5)")
        # a fault already reported as active last time is not news when only its latch is left
        transient = [c for c in latched if c not in current and c not in self._previous
                     and _level_of(c) is not Level.OK]
        self._previous = set(current)
        values, units = self._telemetry()
        self._read_info()
        level = Level.worst(*(_level_of(c) for c in current), *([Level.WARNING] if transient else []))
        summary = self._summary(current, values)
        if transient:
            summary += f"; since the last poll, now cleared: {_phrases(transient)}"
        values["present"] = 1.0
        units["present"] = ""
        info = dict(self._info)
        info["status_word"] = f"0x{word:04x}"
        return Reading(level=level, summary=summary, values=values, units=units,
                       conditions=current + tuple(f"transient_{c}" for c in transient), info=info)

    def _conditions(self, word: int) -> tuple[tuple[str, ...], bool]:
        """Named conditions from STATUS_WORD and the detail registers it points to; and whether PEC failed."""
        summary_bits = decode_status_word(word)
        details: list[str] = []
        for bit in summary_bits:
            if bit not in _DETAILS:
                continue
            register, what, decode = _DETAILS[bit]
            byte = self._optional(what, "read_byte_data", register)
            names = decode(byte) if byte is not None else []
            details.extend(names or [f"{bit}_status"])  # the summary bit alone when the detail says nothing
        active = set(summary_bits) | set(details)
        derived = []
        if "input" in active and ("vin_uv_fault" in active or {"power_not_good", "off"} <= active) \
                or "unit_off_low_vin" in active:
            derived.append("ac_lost")
        if "power_not_good" in active:
            derived.append("power_not_good")
        if "off" in active:
            derived.append("output_off")
        plain = [bit for bit in summary_bits if bit not in _POINTERS and bit != "power_not_good"]
        conditions = _dedupe([*derived, *plain, *details])
        return conditions, "pec_failed" in details

    def _telemetry(self) -> tuple[dict[str, float], dict[str, str]]:
        values: dict[str, float] = {}
        units: dict[str, str] = {}
        for register, command, name, unit in _TELEMETRY + _FANS[: self.options.fans]:
            word = self._optional(command, "read_word_data", register)
            if word is None:
                continue
            if register == READ_VOUT:
                value = self._vout(word)
                if value is None:
                    continue
            else:
                value = linear11(word)
            values[name] = value
            units[name] = unit
        return values, units

    def _vout(self, word: int) -> float | None:
        if self._vout_mode is None:
            mode = self._optional("VOUT_MODE", "read_byte_data", VOUT_MODE)
            if mode is None:
                return None
            self._vout_mode = mode
        try:
            return linear16(word, self._vout_mode)
        except ValueError:
            self._info["vout_mode"] = f"0x{self._vout_mode:02x} (not linear: READ_VOUT not decoded)"
            return None

    def _read_info(self) -> None:
        for register, command, key in _INFO:
            if register in self._info_tried:
                continue
            data = self._optional(command, "read_block_data", register)
            self._info_tried.add(register)
            text = _ascii(data) if data is not None else ""
            if text:
                self._info[key] = text

    @staticmethod
    def _summary(conditions: tuple[str, ...], values: dict[str, float]) -> str:
        if any(_level_of(c) is not Level.OK for c in conditions):
            return _phrases(conditions)
        parts = []
        if "vout" in values:
            out = f"{values['vout']:.2f} V"
            if "iout" in values:
                out += f" {_fmt(values['iout'])} A"
            parts.append(out + " out" + (f" ({_fmt(values['pout'], 0)} W)" if "pout" in values else ""))
        if "vin" in values:
            parts.append(f"{_fmt(values['vin'], 0)} V in")
        if "temp1" in values:
            parts.append(f"{_fmt(values['temp1'])} °C")
        if "fan1" in values:
            parts.append(f"fan {_fmt(values['fan1'], 0)} RPM")
        return ", ".join(["OK", *conditions, *parts])
