"""I2C/hwmon/psutil sensor families: decoders against the reference sheet, sensors against simulated chips."""

from __future__ import annotations

import errno
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from firmware.core.sensors import psutil_sensors
from firmware.core.sensors.base import Level, SensorContext, SensorError
from firmware.core.sensors.hwmon import HwmonOptions, HwmonSensor
from firmware.core.sensors.lm75 import Lm75Options, Lm75Sensor, decode_lm75
from firmware.core.sensors.pmbus import (
    PmbusOptions,
    PmbusSensor,
    decode_status_cml,
    decode_status_fans_1_2,
    decode_status_input,
    decode_status_iout,
    decode_status_temperature,
    decode_status_vout,
    decode_status_word,
    linear11,
    linear16,
    pec_crc8,
)
from firmware.core.sensors.psutil_sensors import (
    FanOptions,
    FanSensor,
    TemperatureOptions,
    TemperatureSensor,
)
from sim.chassis import SimChassis
from sim.hwmon import FakeHwmon
from sim.i2c import SimI2cBuses, SimSMBus, smbus_pec
from sim.i2cdevices import Lm75Model, PmbusPsuModel, encode_linear11


@pytest.fixture
def context(i2c: SimI2cBuses) -> SensorContext:
    """What the sensors get: the test's own simulated buses as their SMBus."""
    return SensorContext(smbus=i2c.open)


def swap(word: int) -> int:
    return (word >> 8 | word << 8) & 0xFFFF


# ------------------------------------------------------------- PMBus decoders


@pytest.mark.parametrize(("word", "value"), [
    (0xF9CC, 230.0), (0xF0B6, 45.5), (0xF7D8, -10.0), (0x0913, 550.0), (0x1BE8, 8000.0),
])
def test_linear11_worked_examples(word: int, value: float) -> None:
    assert linear11(word) == value


@pytest.mark.parametrize("value", [230.0, 45.5, -10.0, 550.0, 8000.0, 0.0, 2.6, 12.25])
def test_linear11_roundtrips_through_the_model_encoder(value: float) -> None:
    assert linear11(encode_linear11(value)) == pytest.approx(value, rel=1e-3)


def test_linear16_worked_examples() -> None:
    assert linear16(0x1800, 0x17) == 12.0
    assert linear16(0x1833, 0x17) == pytest.approx(12.0996, abs=1e-4)
    with pytest.raises(ValueError, match="VID"):
        linear16(0x1800, 0x20 | 0x17)
    with pytest.raises(ValueError):
        linear11(0x10000)


def test_status_word_ac_lost() -> None:
    assert decode_status_word(0x2848) == ["input", "power_not_good", "off", "vin_uv_fault"]
    assert decode_status_word(0) == []


def test_detail_status_decoders() -> None:
    assert decode_status_input(0x10) == ["vin_uv_fault"]
    assert decode_status_input(0x07) == ["iin_oc_fault", "iin_oc_warning", "pin_op_warning"]
    assert decode_status_vout(0xC0) == ["vout_ov_fault", "vout_ov_warning"]
    assert decode_status_iout(0xA3) == ["iout_oc_fault", "iout_oc_warning", "pout_op_fault", "pout_op_warning"]
    assert decode_status_temperature(0xC0) == ["ot_fault", "ot_warning"]
    assert decode_status_fans_1_2(0xA0) == ["fan1_fault", "fan1_warning"]
    assert decode_status_cml(0x20) == ["pec_failed"]


def test_pec_check_value_and_worked_example() -> None:
    assert pec_crc8(b"123456789") == 0xF4
    assert pec_crc8(bytes([0xB0, 0x88, 0xB1, 0xCC, 0xF9])) == 0x31
    assert smbus_pec(b"123456789") == 0xF4  # the simulator's own implementation agrees


# ---------------------------------------------------------------- LM75 decoder


@pytest.mark.parametrize(("register", "bits", "celsius"), [
    (0x1900, 9, 25.0), (0x1910, 12, 25.0625), (0xFF80, 9, -0.5), (0xE700, 9, -25.0), (0x7D00, 9, 125.0),
])
def test_decode_lm75_worked_examples(register: int, bits: int, celsius: float) -> None:
    assert decode_lm75(swap(register), bits) == celsius  # read_word_data hands the bytes over swapped


# ---------------------------------------------------------- the PMBus sensor


@pytest.fixture
def pmbus(context: SensorContext) -> Callable[..., PmbusSensor]:
    """Makes a PMBus sensor on the test's buses: ``pmbus(address=0x58, **options)``."""
    def make(address: int = 0x58, **options: object) -> PmbusSensor:
        return PmbusSensor("psu1", PmbusOptions(bus=1, address=address, **options), context)
    return make


@pytest.fixture
def psu(i2c: SimI2cBuses) -> PmbusPsuModel:
    return i2c.attach(1, 0x58, PmbusPsuModel())  # type: ignore[return-value]


def test_pmbus_normal(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    reading = pmbus().read()
    assert reading.level is Level.OK and reading.conditions == ()
    assert reading.values["vin"] == 230.0 and reading.values["vout"] == 12.0 and reading.values["iout"] == 45.5
    assert reading.values["pout"] == 550.0 and reading.values["fan1"] == 8000.0
    assert reading.values["temp1"] == 35.0 and reading.values["present"] == 1.0
    assert reading.units["vout"] == "V" and reading.units["fan1"] == "RPM" and reading.units["temp2"] == "°C"
    assert reading.info["manufacturer"] == "ACME" and reading.info["serial"] == "P5510A12345678"
    assert reading.summary.startswith("OK") and "12.00 V" in reading.summary
    assert psu.clear_faults_count == 0  # nothing to clear on a healthy supply


def test_pmbus_ac_lost_and_back(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    sensor = pmbus()
    psu.set_ac(lost=True)
    assert psu.status_word() == 0x2848
    reading = sensor.read()
    assert reading.level is Level.CRITICAL
    assert "AC" in reading.summary and reading.summary == "AC input lost, power not good, output off"
    assert {"ac_lost", "power_not_good", "output_off", "vin_uv_fault"} <= set(reading.conditions)
    assert reading.values["vin"] < 5 and reading.values["vout"] == 0.0

    psu.set_ac(lost=False)
    assert sensor.read().level is Level.OK  # the latched UV bit was cleared after the last poll


def test_pmbus_latched_fault_is_reported_once(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    sensor = pmbus()
    psu.set_ac(lost=True)
    psu.set_ac(lost=False)  # a blip between two polls
    reading = sensor.read()
    assert reading.level is Level.WARNING and "transient_ac_lost" in reading.conditions
    assert reading.summary.endswith("since the last poll, now cleared: AC input lost")
    assert sensor.read().level is Level.OK


def test_pmbus_latched_fault_stays_without_clear_faults(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    sensor = pmbus(clear_faults=False)
    psu.set_ac(lost=True)
    psu.set_ac(lost=False)
    assert sensor.read().level is Level.CRITICAL
    assert sensor.read().level is Level.CRITICAL
    assert psu.clear_faults_count == 0


def test_pmbus_fan_failure(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    psu.set_fan_failed(True)
    reading = pmbus().read()
    assert reading.level is Level.CRITICAL
    assert "fan1_fault" in reading.conditions and "fan 1 failed" in reading.summary
    assert reading.values["fan1"] == 0.0 and "ac_lost" not in reading.conditions


def test_pmbus_over_temperature(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    psu.set_over_temperature(True)
    reading = pmbus().read()
    assert reading.level is Level.CRITICAL
    assert {"ot_fault", "ot_warning", "output_off", "power_not_good"} <= set(reading.conditions)
    assert "over-temperature fault" in reading.summary and reading.values["temp1"] > 100


def test_pmbus_over_temperature_warning_only(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    psu.set_over_temperature(True, shutdown=False)
    reading = pmbus().read()
    assert reading.level is Level.WARNING and reading.conditions == ("ot_warning",)
    assert reading.summary == "over-temperature warning"


def test_pmbus_absent_required_and_optional(pmbus: Callable[..., PmbusSensor]) -> None:
    required = pmbus().read()
    assert required.level is Level.CRITICAL and "not present" in required.summary
    assert required.conditions == ("not_present",) and required.values["present"] == 0.0
    optional = pmbus(required=False).read()
    assert optional.level is Level.OK and optional.summary == "not installed"


def test_pmbus_pulled_and_reinserted(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    sensor = pmbus()
    assert sensor.read().level is Level.OK
    psu.set_present(False)
    assert sensor.read().summary.startswith("not present")
    psu.set_present(True)
    psu.mfr[0x9E] = "NEWSERIAL"
    assert sensor.read().info["serial"] == "NEWSERIAL"  # the inventory is read again after a swap


def test_pmbus_pec_ok(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    reading = pmbus(pec=True, page=0).read()
    assert reading.level is Level.OK and reading.values["vin"] == 230.0


def test_pmbus_pec_corruption(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    sensor = pmbus(pec=True, page=0)
    psu.corrupt_pec(True)
    with pytest.raises(SensorError, match=r"I2C bus 1 address 0x58: .*PEC mismatch.*EBADMSG"):
        sensor.read()
    psu.corrupt_pec(False)
    # the PAGE write of the failed poll arrived with a bad PEC: the supply dropped it and flagged STATUS_CML
    with pytest.raises(SensorError, match="PEC error"):
        sensor.read()
    assert sensor.read().level is Level.OK  # the sensor cleared the flag


def test_sim_bus_pec_framing(psu: PmbusPsuModel, i2c: SimI2cBuses) -> None:
    bus = i2c.open(1)
    bus.pec = 1
    assert bus.read_word_data(0x58, 0x79) == 0
    i2c.attach(1, 0x48, Lm75Model())
    with pytest.raises(OSError) as no_pec:  # a chip without PEC: the check fails
        bus.read_word_data(0x48, 0)
    assert no_pec.value.errno == errno.EBADMSG
    bus.pec = 0
    assert bus.read_word_data(0x48, 0) == swap(0x1900)


def test_pmbus_unsupported_register_is_skipped(psu: PmbusPsuModel, pmbus: Callable[..., PmbusSensor]) -> None:
    two_fans = pmbus(fans=2)
    reading = two_fans.read()  # the model has one fan: READ_FAN_SPEED_2 is NACKed once, then skipped
    assert "fan2" not in reading.values and reading.level is Level.OK
    assert two_fans.read().level is Level.OK


def test_pmbus_errors_name_bus_and_address(psu: PmbusPsuModel, i2c: SimI2cBuses) -> None:
    class Failing(SimSMBus):
        def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
            raise OSError(errno.ETIMEDOUT, "timeout")

    failing = SensorContext(smbus=lambda bus: Failing(i2c.bus(bus)))
    sensor = PmbusSensor("psu1", PmbusOptions(bus="/dev/i2c-1", address="0x58"), failing)
    with pytest.raises(SensorError, match=r"^I2C bus 1 address 0x58: STATUS_WORD \(0x79\): bus timeout \(ETIMEDOUT\)$"):
        sensor.read()


def test_each_simulated_chassis_owns_its_buses(tmp_path: Path) -> None:
    first, second = SimChassis(str(tmp_path / "first")), SimChassis(str(tmp_path / "second"))
    try:
        first.inject("psu1", {"ac": "lost"})
        for chassis, level in ((first, Level.CRITICAL), (second, Level.OK)):
            sensor = PmbusSensor("psu1", PmbusOptions(bus=1, address=0x58), chassis)
            assert sensor.read().level is level  # one machine's fault is not the other's
    finally:
        first.close()
        second.close()


def test_pmbus_options() -> None:
    assert PmbusOptions(bus="1", address=0x58).bus == 1
    assert PmbusOptions(bus="/dev/i2c-psu", address=0x58).bus == "/dev/i2c-psu"
    with pytest.raises(ValidationError):
        PmbusOptions(bus=1, address=0xB0)  # an 8-bit address
    with pytest.raises(ValidationError):
        PmbusOptions(bus=1, address=0x58, fans=3)
    with pytest.raises(ValidationError):
        PmbusOptions(bus=1, address=0x58, colour="red")


# ------------------------------------------------------------ the LM75 sensor


@pytest.fixture
def lm75(context: SensorContext) -> Callable[..., Lm75Sensor]:
    """Makes an LM75 sensor on the test's buses: ``lm75(bits=9, address=0x48)``."""
    def make(bits: int = 9, address: int = 0x48) -> Lm75Sensor:
        return Lm75Sensor("inlet", Lm75Options(bus=1, address=address, resolution_bits=bits), context)
    return make


def test_lm75_9_bit(lm75: Callable[..., Lm75Sensor], i2c: SimI2cBuses) -> None:
    chip = i2c.attach(1, 0x48, Lm75Model(celsius=25.3))
    reading = lm75().read()
    assert reading.values == {"temp": 25.5} and reading.units == {"temp": "°C"} and reading.level is Level.OK
    assert reading.info["tos"] == "80 °C" and reading.info["thyst"] == "75 °C"
    chip.celsius = -25.0  # type: ignore[attr-defined]
    assert lm75().read().values["temp"] == -25.0


def test_lm75_12_bit_tmp75_is_configured_once(lm75: Callable[..., Lm75Sensor], i2c: SimI2cBuses) -> None:
    chip = i2c.attach(1, 0x49, Lm75Model(celsius=25.0625, bits=12))
    assert chip.resolution == 9  # type: ignore[attr-defined]
    sensor = lm75(12, 0x49)
    assert sensor.read().values["temp"] == 25.0625
    assert chip.config & 0x60 == 0x60  # type: ignore[attr-defined]
    chip.celsius = -0.5  # type: ignore[attr-defined]
    assert sensor.read().values["temp"] == -0.5


def test_lm75_12_bit_on_a_plain_lm75(lm75: Callable[..., Lm75Sensor], i2c: SimI2cBuses) -> None:
    i2c.attach(1, 0x48, Lm75Model(bits=9))
    with pytest.raises(SensorError, match="did not take 12-bit"):
        lm75(12).read()


def test_lm75_implausible_readings(lm75: Callable[..., Lm75Sensor], i2c: SimI2cBuses) -> None:
    chip = i2c.attach(1, 0x48, Lm75Model(celsius=-60.0))
    with pytest.raises(SensorError, match="implausible temperature -60"):
        lm75().read()
    chip.stuck_word = 0xFFFF  # type: ignore[attr-defined]
    with pytest.raises(SensorError, match="0xffff"):
        lm75().read()


def test_lm75_absent(lm75: Callable[..., Lm75Sensor]) -> None:
    with pytest.raises(SensorError, match=r"^I2C bus 1 address 0x48: no device \(ENXIO\)$"):
        lm75().read()
    with pytest.raises(ValidationError):
        Lm75Options(bus=1, address=0x58)


def test_lm75_shutdown_is_a_warning(lm75: Callable[..., Lm75Sensor], i2c: SimI2cBuses) -> None:
    chip = i2c.attach(1, 0x48, Lm75Model(celsius=30.0))
    chip.write_byte_data(0x01, 0x01)
    chip.celsius = 50.0  # type: ignore[attr-defined]
    reading = lm75().read()
    assert reading.level is Level.WARNING and reading.values["temp"] == 30.0 and "shutdown" in reading.conditions


# ----------------------------------------------------------------------- hwmon


def hwmon(root: Path, **options: object) -> HwmonSensor:
    return HwmonSensor("hw", HwmonOptions(**options), SensorContext(sysfs=root))


def test_hwmon_units_and_labels(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    fake.add_chip("coretemp", temp1_input=45000, temp1_label="Package id 0", temp1_max=80000)
    fake.add_chip("pmbus", in1_input=230000, in1_label="vin", in2_input=12000, curr2_input=45500,
                  power2_input=550000000, temp1_input=36250, fan1_input=8000, fan1_fault=0, in1_lcrit_alarm=0)
    reading = hwmon(tmp_path, chip="pmbus").read()
    assert reading.level is Level.OK and reading.conditions == ()
    assert reading.values == {"curr2": 45.5, "fan1": 8000.0, "in1": 230.0, "in2": 12.0, "power2": 550.0,
                              "temp1": 36.25}
    assert reading.units["in1"] == "V" and reading.units["curr2"] == "A" and reading.units["power2"] == "W"
    assert reading.units["temp1"] == "°C" and reading.units["fan1"] == "RPM"
    assert reading.info["in1_label"] == "vin"
    core = hwmon(tmp_path, chip="coretemp").read()
    assert core.values == {"temp1": 45.0} and core.info["temp1_max"] == "80 °C"
    assert core.summary == "coretemp: Package id 0 45 °C"


def test_hwmon_alarm_files(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    psu = fake.add_chip("pmbus", in1_input=230000, in1_label="vin", temp1_input=40000, temp1_max_alarm=0,
                        temp1_crit_alarm=0, fan1_input=8000, fan1_fault=0)
    sensor = hwmon(tmp_path, chip="pmbus")
    fake.set(psu, "temp1_max_alarm", 1)
    reading = sensor.read()
    assert reading.level is Level.WARNING and reading.conditions == ("temp1_max_alarm",)
    fake.set(psu, "fan1_fault", 1)
    fake.set(psu, "fan1_input", 0)
    reading = sensor.read()
    assert reading.level is Level.CRITICAL and set(reading.conditions) == {"temp1_max_alarm", "fan1_fault"}
    assert "fan1 fault at 0 RPM" in reading.summary
    fake.set("pmbus", "fan1_fault", 0)
    fake.set("pmbus", "temp1_max_alarm", 0)
    fake.set("pmbus", "in1_lcrit_alarm", 1)
    reading = sensor.read()
    assert reading.level is Level.CRITICAL and reading.conditions == ("in1_lcrit_alarm",)
    assert reading.summary.startswith("in1 (vin) below critical minimum")


def test_hwmon_index_channels_and_errors(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    fake.add_chip("lm75", temp1_input=30000)
    fake.add_chip("lm75", temp1_input=31000, legacy=True)
    fake.add_chip("nct6775", fan1_input=1200, fan2_input=0, temp1_input=40000)
    assert hwmon(tmp_path, chip="lm75", index=1).read().values == {"temp1": 31.0}
    assert hwmon(tmp_path, chip="nct6775", channels=["fan1"]).read().values == {"fan1": 1200.0}
    with pytest.raises(SensorError, match=r"no hwmon chip named 'k10temp'.*available: lm75, nct6775"):
        hwmon(tmp_path, chip="k10temp").read()
    with pytest.raises(SensorError, match="only 2"):
        hwmon(tmp_path, chip="lm75", index=2).read()
    with pytest.raises(SensorError, match="has no fan9"):
        hwmon(tmp_path, chip="nct6775", channels=["fan9"]).read()
    with pytest.raises(ValidationError):
        HwmonOptions(chip="nct6775", channels=["fan"])


# ---------------------------------------------------------------------- psutil

Temp = namedtuple("Temp", "label current high critical")
Fan = namedtuple("Fan", "label current")


@pytest.fixture
def chips(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    data: dict[str, dict] = {
        "temps": {"coretemp": [Temp("Package id 0", 45.0, 80.0, 100.0), Temp("Core 0", 43.0, 80.0, 100.0)],
                  "acpitz": [Temp("", 27.8, None, None)]},
        "fans": {"dell_smm": [Fan("Processor Fan", 2400)], "nct6775": [Fan("", 1200), Fan("", 0)]},
    }
    monkeypatch.setattr(psutil_sensors.psutil, "sensors_temperatures", lambda: data["temps"])
    monkeypatch.setattr(psutil_sensors.psutil, "sensors_fans", lambda: data["fans"])
    return data


def temperature(**options: object) -> TemperatureSensor:
    return TemperatureSensor("cpu", TemperatureOptions(**options), SensorContext())


def fan(**options: object) -> FanSensor:
    return FanSensor("fan", FanOptions(**options), SensorContext())


def test_temperature_levels_from_chip_limits(chips: dict[str, dict]) -> None:
    reading = temperature(chip="coretemp", label="Package id 0").read()
    assert reading.values == {"temp": 45.0} and reading.level is Level.OK
    assert reading.info == {"label": "Package id 0", "high": "80 °C", "critical": "100 °C"}
    chips["temps"]["coretemp"][1] = Temp("Core 0", 85.0, 80.0, 100.0)
    hottest = temperature(chip="coretemp").read()
    assert hottest.level is Level.WARNING and hottest.values["temp"] == 85.0 and "Core 0" in hottest.summary
    chips["temps"]["coretemp"][0] = Temp("Package id 0", 100.0, 80.0, 100.0)
    assert temperature(chip="coretemp", label="Package id 0").read().level is Level.CRITICAL
    assert temperature(chip="acpitz").read().level is Level.OK  # no limits reported


def test_temperature_errors(chips: dict[str, dict]) -> None:
    with pytest.raises(SensorError, match=r"no such chip 'k10temp'.*available: acpitz, coretemp"):
        temperature(chip="k10temp").read()
    with pytest.raises(SensorError, match="no label 'Core 9'"):
        temperature(chip="coretemp", label="Core 9").read()
    chips["temps"] = {}
    with pytest.raises(SensorError, match="available: none"):
        temperature(chip="coretemp").read()


def test_fan(chips: dict[str, dict]) -> None:
    reading = fan(chip="dell_smm", min_rpm=500).read()
    assert reading.values == {"rpm": 2400.0} and reading.units == {"rpm": "RPM"} and reading.level is Level.OK
    chips["fans"]["dell_smm"] = [Fan("Processor Fan", 0)]
    stopped = fan(chip="dell_smm", label="Processor Fan", min_rpm=500).read()
    assert stopped.level is Level.CRITICAL and "fan stopped" in stopped.summary
    assert fan(chip="dell_smm").read().level is Level.OK  # min_rpm 0: a stopped fan may be fine
    chips["fans"]["dell_smm"] = [Fan("Processor Fan", 300)]
    assert fan(chip="dell_smm", min_rpm=500).read().level is Level.WARNING
    with pytest.raises(SensorError, match="has 2 fans"):
        fan(chip="nct6775").read()
