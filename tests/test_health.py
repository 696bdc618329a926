"""Health: thresholds with hysteresis, sensor states, the score, and the scheduler's timeouts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from firmware.config import SensorConfig, ThresholdConfig, load_config
from firmware.errors import ConfigError
from firmware.core.health import (
    HealthMonitor,
    SensorTracker,
    build_sensors,
    health_score,
    threshold_level,
    threshold_sides,
)
from firmware.core.sensors.base import Level, Reading, Sensor, SensorContext, SensorError, SensorOptions

from helpers import wait_for

TEMP = ThresholdConfig(warn_above=40, crit_above=50, hysteresis=2)


def test_threshold_levels_and_hysteresis() -> None:
    assert threshold_level(39.9, TEMP) == Level.OK
    assert threshold_level(40, TEMP) == Level.WARNING
    assert threshold_level(55, TEMP) == Level.CRITICAL
    # Back under 50 but not by the 2-degree margin: still critical; past the margin: warning.
    hot, warm, ok = (Level.CRITICAL, Level.OK), (Level.WARNING, Level.OK), (Level.OK, Level.OK)
    assert threshold_level(49, TEMP, hot) == Level.CRITICAL
    assert threshold_level(47.9, TEMP, hot) == Level.WARNING
    assert threshold_level(38.5, TEMP, warm) == Level.WARNING
    assert threshold_level(37.9, TEMP, warm) == Level.OK
    assert threshold_level(49, TEMP, ok) == Level.WARNING
    low = ThresholdConfig(warn_below=11.5, crit_below=11.0, hysteresis=0.2)
    assert threshold_level(10.9, low) == Level.CRITICAL
    assert threshold_level(11.1, low, (Level.OK, Level.CRITICAL)) == Level.CRITICAL
    assert threshold_level(11.3, low, (Level.OK, Level.CRITICAL)) == Level.WARNING


def test_a_band_clears_each_side_by_its_own_margin() -> None:
    rail = ThresholdConfig(warn_above=12.6, warn_below=11.4, hysteresis=0.7)
    high = threshold_sides(12.7, rail)
    assert high == (Level.WARNING, Level.OK)
    assert threshold_sides(12.0, rail, high) == (Level.WARNING, Level.OK)  # not 0.7 below 12.6 yet
    assert threshold_sides(11.8, rail, high) == (Level.OK, Level.OK)  # cleared, though near the low limit
    low = threshold_sides(11.3, rail)
    assert threshold_sides(12.0, rail, low) == (Level.OK, Level.WARNING)
    assert threshold_sides(12.2, rail, low) == (Level.OK, Level.OK)
    with pytest.raises(ValueError, match="wider than the hysteresis"):
        ThresholdConfig(warn_above=12.6, warn_below=11.4, hysteresis=1.2)


def test_nan_counts_as_a_missing_value() -> None:
    tracker = SensorTracker("inlet", {"temp": TEMP}, clear_after=1)
    tracker.update(reading(float("nan")), None, 1.0)
    assert tracker.level == Level.UNKNOWN and "temp missing" in tracker.summary


def test_threshold_order_is_checked() -> None:
    with pytest.raises(ValueError, match="crit_above"):
        ThresholdConfig(warn_above=50, crit_above=40)


def reading(temp: float, level: Level = Level.OK) -> Reading:
    return Reading(level=level, summary="", values={"temp": temp}, units={"temp": "°C"})


def test_tracker_worse_at_once_better_after_n_readings() -> None:
    tracker = SensorTracker("inlet", {"temp": TEMP}, clear_after=3)
    assert tracker.update(reading(30), None, 1.0) is None  # first reading OK: no change from the start state
    assert tracker.update(reading(52), None, 2.0) == (Level.OK, Level.CRITICAL)
    assert "temp 52 °C ≥ 50 (critical)" in tracker.summary
    assert tracker.since == 2.0
    # Well below again, but it takes three readings to clear.
    assert tracker.update(reading(30), None, 3.0) is None
    assert tracker.update(reading(30), None, 4.0) is None
    assert tracker.level == Level.CRITICAL and "clearing 2/3" in tracker.summary
    assert tracker.update(reading(30), None, 5.0) == (Level.CRITICAL, Level.OK)


def test_tracker_a_worse_reading_resets_the_clearing_count() -> None:
    tracker = SensorTracker("inlet", {"temp": TEMP}, clear_after=2)
    tracker.update(reading(52), None, 1.0)
    tracker.update(reading(30), None, 2.0)
    tracker.update(reading(52), None, 3.0)
    assert tracker.update(reading(30), None, 4.0) is None
    assert tracker.update(reading(30), None, 5.0) == (Level.CRITICAL, Level.OK)


def test_tracker_failure_is_unknown_with_the_reason_and_device_verdicts_count() -> None:
    tracker = SensorTracker("psu1", clear_after=1)
    assert tracker.update(None, "I2C bus 1 address 0x58: no device", 1.0) == (Level.OK, Level.UNKNOWN)
    assert tracker.error == "I2C bus 1 address 0x58: no device" and tracker.failures == 1
    assert tracker.update(Reading(level=Level.CRITICAL, summary="AC input lost"), None, 2.0) == (
        Level.UNKNOWN, Level.CRITICAL)
    assert tracker.summary == "AC input lost" and tracker.error is None


def test_missing_thresholded_value_is_unknown() -> None:
    tracker = SensorTracker("inlet", {"temp": TEMP}, clear_after=1)
    tracker.update(Reading(values={}), None, 1.0)
    assert tracker.level == Level.UNKNOWN and "temp missing" in tracker.summary


def test_health_score_weights() -> None:
    assert health_score([]) == 100
    assert health_score([(40, Level.CRITICAL), (40, Level.OK)]) == 60
    assert health_score([(40, Level.CRITICAL), (40, Level.CRITICAL), (10, Level.WARNING)]) == 15
    assert health_score([(10, Level.UNKNOWN)], unknown_factor=0.2) == 98
    assert health_score([(80, Level.CRITICAL), (80, Level.CRITICAL)]) == 0


# ------------------------------------------------------------------ the scheduler


class FakeOptions(SensorOptions):
    mode: str = "ok"


class FakeSensor(Sensor):
    """A sensor whose behaviour the test switches: ok, fail, hang, critical."""

    family = "fake"
    Options = FakeOptions

    def __init__(self, name: str, options: SensorOptions, context: SensorContext) -> None:
        super().__init__(name, options, context)
        self.mode = options.mode  # type: ignore[attr-defined]
        self.release = threading.Event()
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        if self.mode == "hang":
            self.release.wait(30)
            return Reading(summary="late answer", values={"v": 1.0})
        if self.mode == "fail":
            raise SensorError("bus stuck")
        if self.mode == "crash":
            raise ZeroDivisionError("division by zero")
        return Reading(level=Level.CRITICAL if self.mode == "critical" else Level.OK, values={"v": 1.0})


def make_monitor(modes: dict[str, str], **kwargs) -> tuple[HealthMonitor, dict[str, FakeSensor], list]:
    events: list = []
    sensors = {}
    pairs = []
    for name, mode in modes.items():
        cfg = SensorConfig(name=name, type="fake", interval_s=0.5, timeout_s=0.3, weight=40, clear_after=1)
        sensors[name] = FakeSensor(name, FakeOptions(mode=mode), SensorContext())
        pairs.append((cfg, sensors[name]))
    monitor = HealthMonitor(pairs, on_change=events.extend, **kwargs)
    return monitor, sensors, events


def state(monitor: HealthMonitor, name: str) -> dict:
    return next(row for row in monitor.snapshot() if row["name"] == name)


def test_a_hung_sensor_becomes_unknown_without_stopping_the_others() -> None:
    monitor, sensors, events = make_monitor({"stuck": "hang", "fine": "ok", "broken": "fail", "buggy": "crash"})
    monitor.start()
    try:
        wait_for(lambda: state(monitor, "stuck")["state"] == "UNKNOWN", what="the hung sensor to time out")
        assert state(monitor, "stuck")["error"] == "did not answer within 0.3 s"
        assert state(monitor, "broken")["error"] == "bus stuck"
        assert state(monitor, "buggy")["error"] == "ZeroDivisionError: division by zero"
        wait_for(lambda: sensors["fine"].reads >= 3, what="the healthy sensor to keep being read")
        assert sensors["stuck"].reads == 1  # not started again while its read hangs
        assert state(monitor, "fine")["state"] == "OK"
        assert monitor.score == 100 - 3 * 20  # three UNKNOWN at weight 40 × 0.5
        raised = [d["sensor"] for kind, d in events if kind == "alarm.raised"]
        assert sorted(raised) == ["broken", "buggy", "stuck"]
        # The hung read comes back: the sensor recovers and its alarm clears.
        sensors["stuck"].mode = "ok"
        sensors["stuck"].release.set()
        wait_for(lambda: state(monitor, "stuck")["state"] == "OK", what="the sensor to recover")
        assert any(kind == "alarm.cleared" and d["sensor"] == "stuck" for kind, d in events)
    finally:
        sensors["stuck"].release.set()
        monitor.close()


def test_score_follows_critical_sensors_and_poll_now_reads_at_once() -> None:
    monitor, sensors, events = make_monitor({"psu1": "ok", "psu2": "critical"})
    monitor.sensors[0].config = monitor.sensors[0].config.model_copy(update={"interval_s": 60})
    monitor.start()
    try:
        wait_for(lambda: monitor.score == 60, what="one critical PSU to cost 40 points")
        reads = sensors["psu1"].reads
        sensors["psu1"].mode = "critical"
        monitor.poll_now(["psu1"])
        wait_for(lambda: monitor.score == 20, timeout=20, what="poll_now to read psu1 now, not in 60 s")
        assert sensors["psu1"].reads == reads + 1
        assert ("health", {"health": 20, "previous": 60, "source": "sensors"}) in events
        assert len(monitor.alarms()) == 2 and monitor.alarms()[0].text.startswith("psu1 CRITICAL")
        assert monitor.alarms()[0].key == "sensor:psu1/critical"
    finally:
        monitor.close()


# ------------------------------------------------------------------ configuration


def write_config(tmp_path: Path, sensors: str) -> Path:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"\0" * 32)
    key.chmod(0o600)
    path = tmp_path / "tandem.toml"
    path.write_text(f'''node = "alpha"\npeer = "beta"\nboard = "sim"\nkey_file = "{key}"\n
state_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/control.sock"\n
[[links]]\nkind = "udp"\nname = "net0"\nbind = "127.0.0.1:7001"\npeer = "127.0.0.1:7002"\n{sensors}''')
    return path


def test_sensor_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[sensors]]\nname = "x"\ntype = "no_such_family"\n')
    with pytest.raises(ConfigError, match=r"tandem.toml: sensors\[0\].type: unknown sensor type 'no_such_family'"):
        build_sensors(load_config(path), SensorContext())
    path = write_config(tmp_path, '[[sensors]]\nname = "d"\ntype = "device"\npth = "/dev/ttyUSB0"\n')
    with pytest.raises(ConfigError, match=r"sensors\[0\].path: required key is missing \(sensor 'd', type device\)"):
        build_sensors(load_config(path), SensorContext())
    path = write_config(tmp_path, '[[sensors]]\nname = "d"\ntype = "device"\npath = "/x"\nfoo = 1\n')
    with pytest.raises(ConfigError, match=r"sensors\[0\].foo: unknown key"):
        build_sensors(load_config(path), SensorContext())
    path = write_config(tmp_path, '[[sensors]]\nname = "t"\ntype = "device"\npath = "/x"\n'
                        '[sensors.thresholds.present]\nwarn_below = 1\ncrit_below = 2\n')
    with pytest.raises(ConfigError, match=r"sensors\[0\].thresholds.present: crit_below"):
        load_config(path)


def test_device_sensor_sees_a_path_come_and_go(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[[sensors]]\nname = "usb0"\ntype = "device"\npath = "{tmp_path}/ttyUSB0"\n')
    (_, sensor), = [pair for pair in build_sensors(load_config(path), SensorContext()) if pair[0].name == "usb0"]
    assert sensor.read().level == Level.CRITICAL
    (tmp_path / "ttyUSB0").touch()
    assert sensor.read().level == Level.OK


def test_hung_reads_neither_starve_other_sensors_nor_block_the_exit(tmp_path: Path) -> None:
    """Twelve reads stuck for ten minutes: the healthy sensor is still read, and the process exits without them."""
    import subprocess
    import sys

    script = tmp_path / "hang.py"
    script.write_text(f'''
import sys, time
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parent.parent)!r}]
from test_health import FakeSensor, FakeOptions, state
from helpers import wait_for
from firmware.config import SensorConfig
from firmware.core.health import HealthMonitor
from firmware.core.sensors.base import SensorContext
pairs = []
for i in range(13):
    cfg = SensorConfig(name=f"s{{i}}", type="fake", interval_s=0.5, timeout_s=0.3, clear_after=1)
    sensor = FakeSensor(cfg.name, FakeOptions(mode="ok" if i == 12 else "hang"), SensorContext())
    sensor.release.wait = lambda timeout=None: time.sleep(600)
    pairs.append((cfg, sensor))
monitor = HealthMonitor(pairs)
monitor.start()
wait_for(lambda: pairs[12][1].reads >= 3, what="the healthy sensor to be read")
assert state(monitor, "s12")["state"] == "OK", state(monitor, "s12")
assert all(state(monitor, f"s{{i}}")["state"] == "UNKNOWN" for i in range(12))
monitor.close()
print("closed", flush=True)
''')
    # Waiting for the hung reads would take ten minutes: the run's timeout fails the test long before.
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "closed" in result.stdout
