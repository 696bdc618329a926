"""Simulated I2C sensor chips for the buses of `sim.i2c`: an LM75/TMP75 and a redundant server PSU (PMBus).

Attach them as any model, on the buses of the machine or test that owns them::

    psu = buses.attach(1, 0x58, PmbusPsuModel())
    psu.set_ac(lost=True)          # STATUS_WORD 0x2848, VIN ≈ 0, output off
    buses.attach(1, 0x48, Lm75Model(celsius=36.5, bits=12))

The numbers are encoded as the chips do (LINEAR11/LINEAR16, left-justified
two's complement) independently of the firmware's decoders, so the tests
check one against the other.
"""

from __future__ import annotations

import errno
import os

from sim.i2c import SimI2cDevice, smbus_pec

__all__ = ["Lm75Model", "PmbusPsuModel", "encode_linear11"]


def _enxio() -> OSError:
    return OSError(errno.ENXIO, os.strerror(errno.ENXIO))


# ------------------------------------------------------------------------ LM75


def _lm75_word(celsius: float, bits: int) -> int:
    """The register value (MSB first, left-justified two's complement) of ``celsius`` at ``bits``."""
    limit = 1 << (bits - 1)
    steps = max(-limit, min(limit - 1, round(celsius * (1 << (bits - 8)))))
    return (steps << (16 - bits)) & 0xFFFF


def _swap(word: int) -> int:
    return (word >> 8 | word << 8) & 0xFFFF


class Lm75Model(SimI2cDevice):
    """An LM75 (``bits=9``) or TMP75 (``bits=12``: resolution set by config bits 6:5, 9 bits at power-on).

    Registers: 0x00 temperature (read-only), 0x01 config (byte; bit 0 shutdown
    freezes the temperature), 0x02 THYST (75 °C), 0x03 TOS (80 °C). Words
    travel LSB first over SMBus, as on the real chip. Set ``celsius`` (any
    thread) to change the temperature; ``stuck_word`` (a raw SMBus word or
    None) makes every temperature read return it, like a bus stuck high (0xFFFF).
    """

    def __init__(self, celsius: float = 25.0, bits: int = 9) -> None:
        """A chip at power-on reading ``celsius``."""
        if bits not in (9, 12):
            raise ValueError(f"bits must be 9 (LM75) or 12 (TMP75), not {bits!r}")
        super().__init__()
        self.celsius = celsius
        self.bits = bits
        self.config = 0x00
        self.tos = _lm75_word(80.0, 9)
        self.thyst = _lm75_word(75.0, 9)
        self.stuck_word: int | None = None
        self._frozen: int | None = None  # the temperature register while in shutdown

    @property
    def resolution(self) -> int:
        """The resolution in bits the chip is converting at now."""
        with self.lock:
            return 9 + (self.config >> 5 & 0b11) if self.bits == 12 else 9

    def _temperature(self) -> int:
        if self.config & 0x01 and self._frozen is not None:
            return self._frozen
        return _lm75_word(self.celsius, self.resolution)

    def read_byte_data(self, register: int) -> int:
        """Config, or a byte of the pointed register (MSB first) for byte reads of word registers."""
        with self.lock:
            if register == 0x01:
                return self.config
            return self.read_word_data(register) & 0xFF

    def write_byte_data(self, register: int, value: int) -> None:
        """Write the config register (an LM75 keeps bits 7:5 at 0)."""
        with self.lock:
            if register != 0x01:
                raise OSError(errno.EIO, f"register 0x{register:02x} is not a byte register")
            if value & 0x01 and not self.config & 0x01:
                self._frozen = self._temperature()
            self.config = value if self.bits == 12 else value & 0x1F

    def read_word_data(self, register: int) -> int:
        """Temperature, THYST or TOS, LSB first as SMBus assembles them."""
        with self.lock:
            if register == 0x00:
                return self.stuck_word if self.stuck_word is not None else _swap(self._temperature())
            if register == 0x02:
                return _swap(self.thyst)
            if register == 0x03:
                return _swap(self.tos)
            if register == 0x01:
                return self.config | self.config << 8
            raise OSError(errno.EIO, f"no register 0x{register:02x}")

    def write_word_data(self, register: int, value: int) -> None:
        """Set THYST (0x02) or TOS (0x03)."""
        with self.lock:
            if register == 0x02:
                self.thyst = _swap(value)
            elif register == 0x03:
                self.tos = _swap(value)
            else:
                raise OSError(errno.EIO, f"register 0x{register:02x} is not writable as a word")


# ----------------------------------------------------------------------- PMBus


def encode_linear11(value: float) -> int:
    """``value`` in LINEAR11 with the finest exponent whose 11-bit mantissa holds it."""
    for exponent in range(-16, 16):
        mantissa = round(value / 2.0 ** exponent)
        if -1024 <= mantissa <= 1023:
            return (exponent & 0x1F) << 11 | mantissa & 0x7FF
    raise ValueError(f"{value} does not fit LINEAR11")


# register → attribute holding the value; READ_VOUT is LINEAR16, the others LINEAR11
_READINGS = {0x88: "vin", 0x89: "iin", 0x8B: "vout", 0x8C: "iout", 0x8D: "temp1", 0x8E: "temp2",
             0x90: "fan1", 0x91: "fan2", 0x96: "pout", 0x97: "pin"}
# detail status registers, by command code
_VOUT, _IOUT, _INPUT, _TEMPERATURE, _CML, _FANS = 0x7A, 0x7B, 0x7C, 0x7D, 0x7E, 0x81
_CML_INVALID_COMMAND, _CML_INVALID_DATA, _CML_PEC_FAILED = 0x80, 0x40, 0x20


class PmbusPsuModel(SimI2cDevice):
    """A redundant server power supply (12 V, 550 W) answering PMBus, with faults to inject.

    Normal: 230 V in, 12.000 V out (VOUT_MODE 0x17), 45.5 A, 550 W out, 598 W
    in, 35/45 °C, fan 8000 RPM. Detail status bits (STATUS_VOUT … FANS_1_2,
    CML) latch until CLEAR_FAULTS (0x03, send byte), which clears whatever
    is no longer active; POWER_GOOD# and OFF in STATUS_WORD follow the
    present state. Faults: `set_ac`, `set_fan_failed`, `set_over_temperature`,
    `set_present`, `corrupt_pec`.

    An unsupported command is NACKed (EIO) and flags STATUS_CML "invalid
    command", as real supplies do. ``set_present(False)`` keeps the model
    attached but makes it answer every transaction with ENXIO, like an empty
    bay; ``set_present(True)`` is a freshly inserted supply (status cleared).
    """

    def __init__(self, *, fans: int = 1, mfr_id: str = "ACME", mfr_model: str = "PWS-551-1H",
                 mfr_serial: str = "P5510A12345678") -> None:
        """A healthy supply; ``fans`` (1 or 2) sets which READ_FAN_SPEED registers exist."""
        super().__init__()
        if fans not in (1, 2):
            raise ValueError("fans must be 1 or 2")
        self.fans = fans
        self.mfr = {0x99: mfr_id, 0x9A: mfr_model, 0x9E: mfr_serial}
        self.vout_mode = 0x17
        self.nominal = {"vin": 230.0, "iin": 2.6, "vout": 12.0, "iout": 45.5, "pout": 550.0, "pin": 598.0,
                        "temp1": 35.0, "temp2": 45.0, "fan1": 8000.0, "fan2": 7900.0}
        """The readings of a healthy supply; change them to model load or ambient temperature."""
        self.page = 0
        self.clear_faults_count = 0
        self._present = True
        self._ac_lost = self._fan_failed = self._ot = self._ot_shutdown = self._corrupt_pec = False
        self._latched = dict.fromkeys((_VOUT, _IOUT, _INPUT, _TEMPERATURE, _CML, _FANS), 0)

    # --------------------------------------------------------------- faults

    def set_ac(self, lost: bool) -> None:
        """Lose (or regain) AC input: VIN UV fault, input ≈ 0, output off and not power-good."""
        with self.lock:
            self._ac_lost = lost
            self._status()  # the bits latch the moment it happens

    def set_fan_failed(self, failed: bool) -> None:
        """Fan 1 stops (0 RPM) and STATUS_FANS_1_2 reports a fan 1 fault."""
        with self.lock:
            self._fan_failed = failed
            self._status()  # the bits latch the moment it happens

    def set_over_temperature(self, hot: bool, shutdown: bool = True) -> None:
        """Overheat: OT warning, and with ``shutdown`` the OT fault and the output switched off."""
        with self.lock:
            self._ot, self._ot_shutdown = hot, hot and shutdown
            self._status()  # the bits latch the moment it happens

    def set_present(self, present: bool) -> None:
        """Pull the supply from its bay (every transaction then fails ENXIO) or insert a fresh one."""
        with self.lock:
            if present and not self._present:
                self._latched = dict.fromkeys(self._latched, 0)
                self.page = 0
            self._present = present

    def corrupt_pec(self, corrupt: bool) -> None:
        """Garble the line while PEC is on: reads carry a wrong PEC, writes arrive with one (and are dropped)."""
        with self.lock:
            self._corrupt_pec = corrupt

    # ----------------------------------------------------------- the state

    @property
    def output_on(self) -> bool:
        """Whether the 12 V output is on."""
        with self.lock:
            return not (self._ac_lost or self._ot_shutdown)

    def _active(self) -> dict[int, int]:
        """The detail status bits the present conditions assert."""
        temperature = (0xC0 if self._ot_shutdown else 0x40) if self._ot else 0
        return {_VOUT: 0, _IOUT: 0, _INPUT: 0x10 if self._ac_lost else 0, _TEMPERATURE: temperature,
                _CML: 0, _FANS: 0x80 if self._fan_failed else 0}

    def _status(self) -> dict[int, int]:
        for register, bits in self._active().items():
            self._latched[register] |= bits
        return self._latched

    def status_word(self) -> int:
        """STATUS_WORD as the supply would answer it now."""
        with self.lock:
            status = self._status()
            vout, iout, inp = status[_VOUT], status[_IOUT], status[_INPUT]
            off = not self.output_on
            low = (0x40 if off else 0) | (0x20 if vout & 0x80 else 0) | (0x10 if iout & 0x80 else 0) \
                | (0x08 if inp & 0x10 else 0) | (0x04 if status[_TEMPERATURE] else 0) | (0x02 if status[_CML] else 0)
            if vout & 0x7F or iout & 0x7F or inp & ~0x10 or status[_FANS]:
                low |= 0x01  # NONE_OF_THE_ABOVE: something bits 7..1 do not name
            high = (0x80 if vout else 0) | (0x40 if iout else 0) | (0x20 if inp else 0) | (0x08 if off else 0) \
                | (0x04 if status[_FANS] else 0)
            return high << 8 | low

    def reading(self, name: str) -> float:
        """The present value of ``vin``, ``vout``, ``temp1``, ``fan1`` … with the faults applied."""
        with self.lock:
            value = self.nominal[name]
            if self._ac_lost and name in ("vin", "iin", "pin"):
                return 0.0 if name != "vin" else 1.5  # residual noise on the dead input
            if not self.output_on and name in ("vout", "iout", "pout"):
                return 0.0
            if name == "fan1" and (self._fan_failed or self._ac_lost):
                return 0.0
            if name == "temp1" and self._ot:
                return 112.0 if self._ot_shutdown else 92.0
            return value

    # ------------------------------------------------------- transactions

    def _invalid(self, register: int) -> OSError:
        self._latched[_CML] |= _CML_INVALID_COMMAND
        return OSError(errno.EIO, f"command 0x{register:02x} is not supported (NACK)")

    def write_byte(self, value: int) -> None:
        """Send byte: CLEAR_FAULTS (0x03) clears latched bits whose cause has gone."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if value != 0x03:
                raise self._invalid(value)
            self.clear_faults_count += 1
            self._latched = dict.fromkeys(self._latched, 0)
            self._status()

    def read_byte_data(self, register: int) -> int:
        """PAGE, CAPABILITY, VOUT_MODE, STATUS_BYTE and the detail status registers."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if register == 0x00:
                return self.page
            if register == 0x19:
                return 0xB0  # PEC supported, 400 kHz, SMBALERT#
            if register == 0x20:
                return self.vout_mode
            if register == 0x78:
                return self.status_word() & 0xFF
            if register in self._latched:
                return self._status()[register]
            raise self._invalid(register)

    def write_byte_data(self, register: int, value: int) -> None:
        """PAGE (only page 0 exists; others flag CML invalid data)."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if register != 0x00:
                raise self._invalid(register)
            if value not in (0x00, 0xFF):
                self._latched[_CML] |= _CML_INVALID_DATA
                return
            self.page = value

    def read_word_data(self, register: int) -> int:
        """STATUS_WORD and the READ_* telemetry."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if register == 0x79:
                return self.status_word()
            name = _READINGS.get(register)
            if name is None or name == "fan2" and self.fans < 2:
                raise self._invalid(register)
            value = self.reading(name)
            if name == "vout":
                exponent = self.vout_mode & 0x1F
                exponent -= 32 if exponent & 0x10 else 0
                return max(0, min(0xFFFF, round(value / 2.0 ** exponent)))
            return encode_linear11(value)

    def write_word_data(self, register: int, value: int) -> None:
        """No writable word commands are modelled."""
        with self.lock:
            if not self._present:
                raise _enxio()
            raise self._invalid(register)

    def read_block_data(self, register: int) -> list[int]:
        """MFR_ID (0x99), MFR_MODEL (0x9A), MFR_SERIAL (0x9E) as ASCII."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if register not in self.mfr:
                raise self._invalid(register)
            return list(self.mfr[register].encode("ascii")[:32])

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        """Not an SMBus command of a supply: NACK."""
        with self.lock:
            if not self._present:
                raise _enxio()
            raise self._invalid(register)

    # ------------------------------------------------------------------ PEC

    def pec_for_read(self, wire: bytes) -> int:
        """The right PEC, or a wrong one while `corrupt_pec` is on."""
        with self.lock:
            if not self._present:
                raise _enxio()
            pec = smbus_pec(wire)
            return pec ^ 0x5A if self._corrupt_pec else pec

    def pec_received(self, wire: bytes, pec: int) -> bool:
        """Check a write's PEC: a bad one (or `corrupt_pec`) drops the write and flags STATUS_CML."""
        with self.lock:
            if not self._present:
                raise _enxio()
            if self._corrupt_pec or pec != smbus_pec(wire):
                self._latched[_CML] |= _CML_PEC_FAILED
                return False
            return True

