"""Host sensor families: dmidecode/chassis, SMART, md RAID, system, Nagios plugins, and the sim fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from firmware.core.sensors.base import Level, Sensor, SensorContext, SensorError
from firmware.core.sensors.dmi import ChassisSensor, parse_dmidecode, read_inventory
from firmware.core.sensors.mdraid import MdRaidSensor, parse_mdstat
from firmware.core.sensors.nagios import NagiosSensor, parse_plugin_output
from firmware.core.sensors.smart import SmartSensor, parse_smartctl
from firmware.core.sensors.system import (
    ClockSyncSensor,
    DiskUsageSensor,
    LoadSensor,
    MemorySensor,
    ProcessSensor,
    SwapSensor,
)
from sim.fakecmds import (
    MDSTAT_DEGRADED,
    MDSTAT_HEALTHY_RAID1,
    MDSTAT_RECOVERING,
    FakeCommands,
    FakeProc,
    FakeSysfs,
)


def make(cls: type[Sensor], context: SensorContext | None = None, **options: Any) -> Sensor:
    """A sensor instance the way the scheduler builds one: validated options, a context."""
    return cls("test", cls.Options(**options), context or SensorContext())


def fake_runner(answers: dict[str, tuple[int, str, str] | Exception]):
    """A SensorContext.run stand-in answering by command name: (exit, stdout, stderr) or an exception."""
    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        answer = answers[Path(argv[0]).name]
        if isinstance(answer, Exception):
            raise answer
        code, out, err = answer
        return subprocess.CompletedProcess(argv, code, out, err)
    return run


# --- md RAID -------------------------------------------------------------------------------------

REFERENCE_MDSTAT = """\
Personalities : [raid1]
md0 : active raid1 sdb1[1](F) sda1[0]
      976630336 blocks super 1.2 [2/1] [U_]
      [=>....]  recovery =  8.1% (79156480/976630336) finish=6.7min speed=6963K/sec

unused devices: <none>
"""

MIXED_MDSTAT = """\
Personalities : [raid1] [raid6] [raid5] [raid4] [raid10] [raid0]
md2 : active raid5 sdd1[3] sdc1[1] sdb1[0]
      1953260544 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/3] [UUU]
      [===>.................]  check = 17.3% (169043968/976630272) finish=70.1min speed=191960K/sec
      bitmap: 0/8 pages [0KB], 65536KB chunk

md1 : active (auto-read-only) raid10 sde2[3] sdf2[2] sdg2[1] sdh2[0]
      1953260544 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]

md3 : active raid0 sdi1[1] sdj1[0]
      1953260544 blocks super 1.2 512k chunks

md127 : inactive sdk[1](S) sdl[0](S)
      5288 blocks super external:imsm

md4 : inactive sdm3[1](S)
      1048576 blocks super 1.2

unused devices: <none>
"""


def test_mdstat_degraded_with_faulty_member() -> None:
    [md0] = parse_mdstat(MDSTAT_DEGRADED)
    assert (md0["name"], md0["state"], md0["level"]) == ("md0", "active", "raid1")
    assert (md0["slots"], md0["in_sync"], md0["map"], md0["degraded"]) == (2, 1, "U_", True)
    assert [(m["name"], m["index"], m["faulty"]) for m in md0["members"]] == [("sdb1", 1, True), ("sda1", 0, False)]
    assert md0["sync_action"] is None


def test_mdstat_reference_sample_recovery_progress() -> None:
    [md0] = parse_mdstat(REFERENCE_MDSTAT)
    assert md0["sync_action"] == "recovery"
    assert md0["progress_pct"] == pytest.approx(8.1)
    assert (md0["finish"], md0["speed"]) == ("6.7min", "6963K/sec")
    assert md0["members"][0]["faulty"]


def test_mdstat_mixed_levels_and_states() -> None:
    arrays = {a["name"]: a for a in parse_mdstat(MIXED_MDSTAT)}
    assert set(arrays) == {"md1", "md2", "md3", "md4", "md127"}
    assert (arrays["md2"]["level"], arrays["md2"]["map"], arrays["md2"]["sync_action"]) == ("raid5", "UUU", "check")
    assert arrays["md1"]["read_only"] == "auto-read-only" and arrays["md1"]["level"] == "raid10"
    assert arrays["md3"]["map"] is None and not arrays["md3"]["degraded"]
    assert arrays["md127"]["container"] and arrays["md127"]["level"] is None
    assert arrays["md4"]["state"] == "inactive" and arrays["md4"]["members"][0]["spare"]


def mdraid(tmp_path: Path, text: str | None, **options: Any) -> Sensor:
    proc = FakeProc(tmp_path / "proc")
    if text is None:
        (proc.root / "mdstat").unlink()
    else:
        proc.set_mdstat(text)
    return make(MdRaidSensor, SensorContext(procfs=proc.root), **options)


def test_mdraid_sensor_degraded_is_critical(tmp_path: Path) -> None:
    reading = mdraid(tmp_path, MDSTAT_DEGRADED).read()
    assert reading.level is Level.CRITICAL
    assert reading.summary == "md0 degraded [U_], sdb1 faulty"
    assert set(reading.conditions) == {"md0_degraded", "md0_sdb1_faulty"}
    assert reading.values["faulty"] == 1 and reading.values["degraded"] == 1
    assert (reading.values["slots"], reading.values["in_sync"]) == (2, 1)


def test_mdraid_sensor_rebuilding_is_warning_with_progress(tmp_path: Path) -> None:
    reading = mdraid(tmp_path, MDSTAT_RECOVERING, array="md0").read()
    assert reading.level is Level.WARNING
    assert reading.values["rebuild_pct"] == pytest.approx(8.1) and reading.units["rebuild_pct"] == "%"
    assert "recovery 8.1%" in reading.summary and "finish 6.7min" in reading.summary
    assert "md0_rebuilding" in reading.conditions


def test_mdraid_sensor_faulty_member_while_rebuilding_is_critical(tmp_path: Path) -> None:
    reading = mdraid(tmp_path, REFERENCE_MDSTAT).read()
    assert reading.level is Level.CRITICAL
    assert reading.values["rebuild_pct"] == pytest.approx(8.1)


def test_mdraid_sensor_healthy_empty_and_missing(tmp_path: Path) -> None:
    healthy = mdraid(tmp_path, MDSTAT_HEALTHY_RAID1).read()
    assert healthy.level is Level.OK and healthy.summary == "md0 raid1 [UU]"
    empty = mdraid(tmp_path, "Personalities : \nunused devices: <none>\n").read()
    assert (empty.level, empty.summary) == (Level.OK, "no md arrays")
    no_driver = mdraid(tmp_path, None).read()
    assert (no_driver.level, no_driver.summary) == (Level.OK, "no md arrays")
    missing = mdraid(tmp_path, MDSTAT_HEALTHY_RAID1, array="md9").read()
    assert missing.level is Level.CRITICAL and "md9 not found" in missing.summary


BROKEN_RAID0_MDSTAT = """\
Personalities : [raid0]
md3 : active raid0 sdi1[1] sdj1[0]
      1953260544 blocks super 1.2 512k chunks

unused devices: <none>
"""


def test_mdraid_sensor_broken_raid0_from_array_state(tmp_path: Path) -> None:
    """A RAID 0 that lost a member still reads "active" in mdstat; sysfs array_state says broken."""
    proc = FakeProc(tmp_path / "proc")
    proc.set_mdstat(BROKEN_RAID0_MDSTAT)
    sysfs = FakeSysfs(tmp_path / "sys")
    context = SensorContext(procfs=proc.root, sysfs=sysfs.root)
    without_sysfs = make(MdRaidSensor, context).read()  # an older kernel or no sysfs: mdstat alone
    assert without_sysfs.level is Level.OK and without_sysfs.summary == "md3 raid0"
    sysfs.set_md_array_state("md3", "clean")
    clean = make(MdRaidSensor, context).read()
    assert clean.level is Level.OK and clean.info["md3_array_state"] == "clean"
    sysfs.set_md_array_state("md3", "broken")
    broken = make(MdRaidSensor, context, array="md3").read()
    assert broken.level is Level.CRITICAL
    assert broken.summary == "md3 broken (a member is missing)" and broken.conditions == ("md3_broken",)
    assert broken.info["md3_array_state"] == "broken"


def test_mdraid_sensor_mixed(tmp_path: Path) -> None:
    reading = mdraid(tmp_path, MIXED_MDSTAT).read()
    # md4 is an inactive array (not a container): critical; the scrub of md2 is fine.
    assert reading.level is Level.CRITICAL
    assert "md4_inactive" in reading.conditions and "md2_checking" in reading.conditions
    assert reading.values["check_pct"] == pytest.approx(17.3)
    assert "md127 container" in reading.summary
    assert mdraid(tmp_path, MIXED_MDSTAT, array="md2").read().level is Level.OK


# --- SMART -----------------------------------------------------------------------------------------

def ata_json(*, passed: bool = True, realloc: int = 0, pending: int = 0, failed_now: bool = False,
             exit_status: int = 0) -> str:
    def attr(attr_id: int, name: str, raw: int, value: int = 200, thresh: int = 0, when: str = "") -> dict:
        return {"id": attr_id, "name": name, "value": value, "worst": value, "thresh": thresh,
                "when_failed": when, "raw": {"value": raw, "string": str(raw)}}
    return json.dumps({
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 3], "exit_status": exit_status},
        "device": {"name": "/dev/sda", "type": "sat", "protocol": "ATA"},
        "model_name": "WDC WD20EFRX-68EUZN0", "serial_number": "WD-WCC4M1234567", "firmware_version": "82.00A82",
        "smart_status": {"passed": passed},
        "ata_smart_attributes": {"revision": 16, "table": [
            attr(1, "Raw_Read_Error_Rate", 0, thresh=51),
            attr(5, "Reallocated_Sector_Ct", realloc, 1 if failed_now else 200, 140, "now" if failed_now else ""),
            attr(9, "Power_On_Hours", 31234, 58),
            attr(187, "Reported_Uncorrect", 0, 100),
            attr(197, "Current_Pending_Sector", pending),
            attr(198, "Offline_Uncorrectable", pending, 100),
        ]},
        "temperature": {"current": 34},
        "power_on_time": {"hours": 31234},
    })


def nvme_json(critical_warning: int = 0, media_errors: int = 0) -> str:
    return json.dumps({
        "smartctl": {"version": [7, 3], "exit_status": 8 if critical_warning else 0},
        "device": {"name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"},
        "model_name": "Samsung SSD 970 EVO Plus 1TB", "serial_number": "S4EWNX0R123456A",
        "firmware_version": "2B2QEXM7",
        "smart_status": {"passed": critical_warning == 0, "nvme": {"value": critical_warning}},
        "nvme_smart_health_information_log": {
            "critical_warning": critical_warning, "temperature": 38, "available_spare": 100,
            "available_spare_threshold": 10, "percentage_used": 2, "power_on_hours": 5123,
            "unsafe_shutdowns": 14, "media_errors": media_errors, "num_err_log_entries": 0},
        "temperature": {"current": 38},
        "power_on_time": {"hours": 5123},
    })


def test_smart_failing_ata_disk_is_critical() -> None:
    reading = parse_smartctl(ata_json(passed=False, realloc=0x7B0, failed_now=True, exit_status=0x18), 0x18)
    assert reading.level is Level.CRITICAL
    assert reading.values["reallocated"] == 0x7B0
    assert {"disk_failing", "prefail_below_threshold", "smart_failed",
            "reallocated_sector_ct_failing_now", "reallocated_sectors"} <= set(reading.conditions)
    assert "DISK FAILING" in reading.summary
    assert reading.info["serial_number"] == "WD-WCC4M1234567"


def test_smart_exit_bit_3_alone_is_critical() -> None:
    assert parse_smartctl(ata_json(realloc=8), 0x08).level is Level.CRITICAL


def test_smart_healthy_ata_disk_is_ok() -> None:
    reading = parse_smartctl(ata_json(), 0)
    assert reading.level is Level.OK and reading.conditions == ()
    assert reading.summary == "PASSED, 34 °C"
    assert reading.values == {"reallocated": 0, "reported_uncorrect": 0, "pending": 0, "offline_uncorrectable": 0,
                              "temperature": 34, "power_on_hours": 31234}
    assert reading.units["temperature"] == "°C"
    assert reading.info == {"model_name": "WDC WD20EFRX-68EUZN0", "serial_number": "WD-WCC4M1234567",
                            "firmware_version": "82.00A82", "device": "/dev/sda", "protocol": "ATA"}


def test_smart_pending_sectors_are_a_warning() -> None:
    reading = parse_smartctl(ata_json(pending=8), 0)
    assert reading.level is Level.WARNING
    assert {"pending_sectors", "offline_uncorrectable"} == set(reading.conditions)
    assert reading.values["pending"] == 8


@pytest.mark.parametrize(("bit", "condition"), [(0x20, "attribute_failed_in_past"),
                                                (0x40, "error_log_entries"), (0x80, "self_test_errors")])
def test_smart_warning_exit_bits(bit: int, condition: str) -> None:
    reading = parse_smartctl(ata_json(), bit)
    assert reading.level is Level.WARNING and condition in reading.conditions


def test_smart_nvme_critical_warning_reliability() -> None:
    reading = parse_smartctl(nvme_json(critical_warning=0x04), 0x08)
    assert reading.level is Level.CRITICAL
    assert "reliability_degraded" in reading.conditions
    assert reading.values["percentage_used"] == 2 and reading.values["available_spare"] == 100


def test_smart_nvme_media_errors_warn_and_healthy_is_ok() -> None:
    assert parse_smartctl(nvme_json(media_errors=3), 0).level is Level.WARNING
    healthy = parse_smartctl(nvme_json(), 0)
    assert healthy.level is Level.OK and healthy.info["protocol"] == "NVMe"


def test_smart_standby_is_ok_not_woken() -> None:
    standby = json.dumps({"smartctl": {"version": [7, 3], "exit_status": 2, "messages": [
        {"string": "Device is in STANDBY mode, exit(2)", "severity": "information"}]}})
    reading = parse_smartctl(standby, 2)
    assert (reading.level, reading.summary) == (Level.OK, "in standby, not woken")


def test_smart_unusable_runs_raise() -> None:
    open_failed = json.dumps({"smartctl": {"exit_status": 2, "messages": [
        {"string": "Smartctl open device: /dev/sdz failed: No such device", "severity": "error"}]}})
    with pytest.raises(SensorError, match="No such device"):
        parse_smartctl(open_failed, 2)
    with pytest.raises(SensorError, match="no JSON"):
        parse_smartctl("=======> UNRECOGNIZED OPTION: j\n", 1)
    with pytest.raises(SensorError, match="command line"):
        parse_smartctl(json.dumps({"smartctl": {"exit_status": 1}}), 1)


# --- dmidecode / chassis ------------------------------------------------------------------------------

TYPE39_SAMPLE = """\
Handle 0x0045, DMI type 39, 22 bytes
System Power Supply
\tPower Unit Group: 1
\tLocation: PSU1
\tName: PWS-501P-1R
\tManufacturer: SUPERMICRO
\tSerial Number: P5011CH12AB3456
\tAsset Tag: N/A
\tModel Part Number: PWS-501P-1R
\tRevision: 1.2
\tMax Power Capacity: 500 W
\tStatus: Present, OK
\tType: Switching
\tInput Voltage Range Switching: Auto-switch
\tPlugged: Yes
\tHot Replaceable: Yes
"""


def test_parse_dmidecode_type39_sample_exactly() -> None:
    assert parse_dmidecode(TYPE39_SAMPLE) == [{
        "handle": "0x0045", "type": 39, "title": "System Power Supply",
        "fields": {
            "Power Unit Group": "1", "Location": "PSU1", "Name": "PWS-501P-1R", "Manufacturer": "SUPERMICRO",
            "Serial Number": "P5011CH12AB3456", "Asset Tag": "N/A", "Model Part Number": "PWS-501P-1R",
            "Revision": "1.2", "Max Power Capacity": "500 W", "Status": "Present, OK", "Type": "Switching",
            "Input Voltage Range Switching": "Auto-switch", "Plugged": "Yes", "Hot Replaceable": "Yes",
        },
    }]


def test_parse_dmidecode_skips_list_values_and_headers(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    out = subprocess.run([fake.commands()["dmidecode"]], capture_output=True, text=True, check=True).stdout
    structures = parse_dmidecode(out)
    assert [s["type"] for s in structures] == [1, 2, 3, 39, 39]
    board = structures[1]["fields"]
    assert board["Type"] == "Motherboard" and "Features" not in board and "Board is replaceable" not in board


def chassis_reading(tmp_path: Path, fake: FakeCommands) -> Any:
    return make(ChassisSensor, SensorContext(commands=fake.commands(), sysfs=tmp_path / "sys")).read()


def test_chassis_end_to_end_healthy(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    reading = chassis_reading(tmp_path, fake)
    assert reading.level is Level.OK
    assert reading.summary == "chassis state safe; 2/2 supplies present"
    assert reading.values == {"psus_total": 2, "psus_present": 2}
    assert reading.info["psu1_serial"] == "P5011CH12AB3456"
    assert reading.info["system_product_name"] == "SYS-5019C-M"


def test_chassis_supply_not_present_or_unplugged_is_warning(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    fake.set_psu("PSU2", status="Not Present")
    reading = chassis_reading(tmp_path, fake)
    assert reading.level is Level.WARNING and "PSU2 not present" in reading.summary
    assert "psu2_not_present" in reading.conditions and reading.values["psus_present"] == 1
    fake.set_psu("PSU2", status="Present, OK", plugged=False)
    reading = chassis_reading(tmp_path, fake)
    assert reading.level is Level.WARNING and "PSU2 unplugged" in reading.summary
    fake.set_psu("PSU2", status="Present, Critical")
    assert chassis_reading(tmp_path, fake).level is Level.CRITICAL


def test_chassis_states(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    fake.set_chassis_state(thermal="Warning")
    reading = chassis_reading(tmp_path, fake)
    assert reading.level is Level.WARNING and "thermal_state_warning" in reading.conditions
    fake.set_chassis_state(thermal="Safe", power_supply="Non-recoverable")
    assert chassis_reading(tmp_path, fake).level is Level.CRITICAL
    fake.set_chassis_state(power_supply="Unknown")
    reading = chassis_reading(tmp_path, fake)
    assert reading.level is Level.OK and "power supply state unknown" in reading.summary


def test_inventory_from_dmidecode(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    inventory = read_inventory(SensorContext(commands=fake.commands()))
    assert inventory["source"] == "dmidecode" and "error" not in inventory
    assert inventory["system"]["serial_number"] == "S342591X9A12345"
    assert inventory["board"]["product_name"] == "X11SCM-F"
    assert inventory["chassis"]["boot_up_state"] == "Safe"
    assert [p["location"] for p in inventory["power_supplies"]] == ["PSU1", "PSU2"]
    assert inventory["power_supplies"][0]["max_power_capacity"] == "500 W"


def test_inventory_falls_back_to_sysfs_when_not_root(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    fake.set_dmi_not_root()
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.set_dmi_id(product_name="SYS-1019P-WTR")
    context = SensorContext(commands=fake.commands(), sysfs=sysfs.root)
    inventory = read_inventory(context)
    assert inventory["source"] == "sysfs"
    assert "Permission denied" in inventory["error"] and "root" in inventory["error"]
    assert inventory["system"] == {"manufacturer": "Supermicro", "product_name": "SYS-1019P-WTR",
                                   "version": "0123456789"}
    assert inventory["chassis"]["type"] == "Rack Mount Chassis"
    assert inventory["power_supplies"] == []
    with pytest.raises(SensorError, match="needs dmidecode.*Permission denied"):
        make(ChassisSensor, context).read()


def test_inventory_from_sysfs_names_the_box_with_root_only_serials(tmp_path: Path) -> None:
    """Without dmidecode, root still gets the serials and UUID from sysfs; for anyone else they are unreadable."""
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.set_dmi_id()
    sysfs.set_dmi_serials(board_serial="ZM18AS099999")
    serial = sysfs.root / "class" / "dmi" / "id" / "product_serial"
    assert serial.stat().st_mode & 0o777 == 0o400
    context = SensorContext(commands={"dmidecode": str(tmp_path / "no-such-dmidecode")}, sysfs=sysfs.root)
    inventory = read_inventory(context)
    assert inventory["source"] == "sysfs"
    if os.access(serial, os.R_OK):
        assert inventory["system"]["serial_number"] == "S342591X9A12345"
        assert inventory["system"]["uuid"] == "00000000-0000-0000-0000-ac1f6b8e1234"
        assert inventory["board"]["serial_number"] == "ZM18AS099999"
        assert inventory["chassis"]["serial_number"] == "C5010LK28N12345"
    else:
        assert "serial_number" not in inventory["system"] and "uuid" not in inventory["system"]
    assert inventory["system"]["product_name"] == "SYS-5019C-M"


def test_inventory_without_dmidecode_installed(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.set_dmi_id()
    context = SensorContext(commands={"dmidecode": str(tmp_path / "no-such-dmidecode")}, sysfs=sysfs.root)
    inventory = read_inventory(context)
    assert inventory["source"] == "sysfs" and "not found" in inventory["error"]
    assert inventory["board"]["product_name"] == "X11SCM-F"


# --- smartctl through the fake script -----------------------------------------------------------------

@pytest.mark.parametrize(("device", "health", "level", "summary_part"), [
    ("/dev/sda", "ok", Level.OK, "PASSED"),
    ("/dev/sda", "pending", Level.WARNING, "8 pending sectors"),
    ("/dev/sda", "failing", Level.CRITICAL, "DISK FAILING"),
    ("/dev/sda", "standby", Level.OK, "in standby, not woken"),
    ("/dev/nvme0", "ok", Level.OK, "PASSED"),
    ("/dev/nvme0", "nvme_critical", Level.CRITICAL, "reliability degraded"),
    ("/dev/nvme0", "nvme_media_errors", Level.WARNING, "3 media errors"),
])
def test_smart_sensor_end_to_end(tmp_path: Path, device: str, health: str, level: Level, summary_part: str) -> None:
    fake = FakeCommands(tmp_path / "bin")
    fake.set_disk(device, health=health)
    reading = make(SmartSensor, SensorContext(commands=fake.commands()), device=device).read()
    assert reading.level is level
    assert summary_part in reading.summary


def test_smart_sensor_end_to_end_missing_disk(tmp_path: Path) -> None:
    fake = FakeCommands(tmp_path / "bin")
    fake.set_disk("/dev/sdz", health="missing")
    with pytest.raises(SensorError, match="could not open"):
        make(SmartSensor, SensorContext(commands=fake.commands()), device="/dev/sdz").read()


def test_smart_sensor_passes_extra_args() -> None:
    seen: list[list[str]] = []

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, ata_json(), "")
    sensor = make(SmartSensor, SensorContext(run=run), device="/dev/sdb", extra_args=["-d", "sat"])
    assert sensor.read().level is Level.OK
    assert seen == [["smartctl", "-a", "-j", "-n", "standby", "-d", "sat", "/dev/sdb"]]
    with pytest.raises(ValidationError):
        SmartSensor.Options(device="/dev/sda", bogus=1)


# --- Nagios plugins -------------------------------------------------------------------------------

def test_nagios_ok_with_perfdata() -> None:
    reading = parse_plugin_output(0, "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n")
    assert (reading.level, reading.summary) == (Level.OK, "DISK OK - free space: / 3326 MB (56%);")
    assert reading.values == {"root": 2643.0}
    assert reading.units == {"root": "MB"}


def test_nagios_quoted_labels_units_and_long_output() -> None:
    output = ("PING WARNING - Packet loss = 0%, RTA = 180.00 ms | 'round trip'=180.0ms;100;500 "
              "'pkt loss'=0%;20;60;0;100\n"
              "long line one\n"
              "long line two | 'it''s'=5c 'temp'=41.5;;;; load=U\n"
              "'free space'=12.5GB;;;0\n")
    reading = parse_plugin_output(1, output)
    assert reading.level is Level.WARNING
    assert reading.summary == "PING WARNING - Packet loss = 0%, RTA = 180.00 ms"
    assert reading.values == {"round_trip": 180.0, "pkt_loss": 0.0, "it_s": 5.0, "temp": 41.5, "free_space": 12.5}
    assert reading.units == {"round_trip": "ms", "pkt_loss": "%", "it_s": "c", "free_space": "GB"}
    assert reading.info["long_output"] == "long line one\nlong line two"


@pytest.mark.parametrize(("code", "level"), [(0, Level.OK), (1, Level.WARNING), (2, Level.CRITICAL),
                                             (3, Level.UNKNOWN), (7, Level.UNKNOWN), (-9, Level.UNKNOWN)])
def test_nagios_exit_codes(code: int, level: Level) -> None:
    reading = parse_plugin_output(code, "SOMETHING happened\n")
    assert reading.level is level
    if code == 7:
        assert reading.summary == "unexpected exit code 7: SOMETHING happened"
    if code == -9:
        assert reading.summary.startswith("killed by signal 9")


def test_nagios_missing_output() -> None:
    reading = parse_plugin_output(2, "")
    assert (reading.level, reading.summary, reading.values) == (Level.CRITICAL, "(no output)", {})


def plugin(tmp_path: Path, body: str, mode: int = 0o755) -> Path:
    path = tmp_path / "check_thing"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def test_nagios_sensor_runs_a_real_script(tmp_path: Path) -> None:
    path = plugin(tmp_path, 'echo "THING CRITICAL - $1 is $LEVEL | level=$LEVEL;5;10"\nexit 2\n')
    sensor = make(NagiosSensor, command=[str(path), "widget"], env={"LEVEL": "12"})
    reading = sensor.read()
    assert (reading.level, reading.summary) == (Level.CRITICAL, "THING CRITICAL - widget is 12")
    assert reading.values == {"level": 12.0}


def test_nagios_sensor_unknown_and_stderr(tmp_path: Path) -> None:
    path = plugin(tmp_path, 'echo "oops" >&2\nexit 3\n')
    reading = make(NagiosSensor, command=[str(path)]).read()
    assert reading.level is Level.UNKNOWN and "oops" in reading.summary


def test_nagios_sensor_cannot_run(tmp_path: Path) -> None:
    path = plugin(tmp_path, "exit 0\n", mode=0o644)
    with pytest.raises(SensorError, match="not executable"):
        make(NagiosSensor, command=[str(path)]).read()
    with pytest.raises(SensorError, match="no such file"):
        make(NagiosSensor, command=[str(tmp_path / "absent")]).read()
    with pytest.raises(SensorError, match="not found on PATH"):
        make(NagiosSensor, command=["check_no_such_plugin_" + uuid.uuid4().hex]).read()
    with pytest.raises(ValidationError):
        NagiosSensor.Options(command=[])
    with pytest.raises(ValidationError):
        NagiosSensor.Options(command=["true"], env={"BAD NAME": "x"})


def test_nagios_sensor_name_on_path() -> None:
    assert make(NagiosSensor, command=["true"]).read().level is Level.OK


# --- system ---------------------------------------------------------------------------------------

def test_load_memory_swap_sane() -> None:
    load = make(LoadSensor).read()
    assert load.level is Level.OK and load.values["load1"] >= 0
    assert load.values["load1_per_cpu"] <= load.values["load1"]
    memory = make(MemorySensor).read()
    assert 0 <= memory.values["used_pct"] <= 100 and memory.values["available_mb"] > 0
    swap = make(SwapSensor).read()
    assert 0 <= swap.values["used_pct"] <= 100


def test_disk_usage_on_tmp_path(tmp_path: Path) -> None:
    reading = make(DiskUsageSensor, path=str(tmp_path)).read()
    assert 0 <= reading.values["used_pct"] <= 100 and reading.values["free_gb"] > 0
    assert reading.units["free_gb"] == "GB"
    with pytest.raises(SensorError, match="cannot measure"):
        make(DiskUsageSensor, path=str(tmp_path / "absent")).read()


def test_process_found_by_cmdline_and_name() -> None:
    me = psutil.Process()
    reading = make(ProcessSensor, cmdline_contains=" ".join(me.cmdline())).read()
    assert reading.level is Level.OK and reading.values["count"] >= 1
    assert str(os.getpid()) in reading.info["pids"].split()
    assert reading.values["rss_mb"] > 0
    assert make(ProcessSensor, process=me.name()).read().level is Level.OK


def test_process_absent_is_critical(tmp_path: Path) -> None:
    token = "no-such-process-" + uuid.uuid4().hex
    reading = make(ProcessSensor, cmdline_contains=token).read()
    assert reading.level is Level.CRITICAL and reading.conditions == ("not_running",)
    assert reading.values["count"] == 0
    reading = make(ProcessSensor, process="asterisk-" + uuid.uuid4().hex[:6]).read()
    assert reading.summary.endswith("is not running")


def test_process_by_pidfile(tmp_path: Path) -> None:
    pidfile = tmp_path / "asterisk.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    assert make(ProcessSensor, pidfile=str(pidfile)).read().level is Level.OK
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    pidfile.write_text(f"{child.pid}\n")
    reading = make(ProcessSensor, pidfile=str(pidfile)).read()
    assert reading.level is Level.CRITICAL and "asterisk is not running (stale pidfile" in reading.summary
    missing = make(ProcessSensor, pidfile=str(tmp_path / "none.pid")).read()
    assert missing.level is Level.CRITICAL and "no pidfile" in missing.summary


def test_process_options_need_exactly_one() -> None:
    with pytest.raises(ValidationError):
        ProcessSensor.Options()
    with pytest.raises(ValidationError):
        ProcessSensor.Options(process="asterisk", pidfile="/run/asterisk.pid")


def test_clock_sync_sources() -> None:
    def clock(answers: dict) -> Any:
        return make(ClockSyncSensor, SensorContext(run=fake_runner(answers))).read()
    assert clock({"timedatectl": (0, "yes\n", "")}).level is Level.OK
    unsynced = clock({"timedatectl": (0, "no\n", "")})
    assert unsynced.level is Level.WARNING and unsynced.conditions == ("not_synchronized",)
    chrony = ("Reference ID    : C0A80101 (192.168.1.1)\nStratum         : 3\n"
              "System time     : 0.000123456 seconds slow of NTP time\nLeap status     : Normal\n")
    no_systemd = (1, "", "System has not been booted with systemd as init system (PID 1). Can't operate.\n")
    reading = clock({"timedatectl": no_systemd, "chronyc": (0, chrony, "")})
    assert reading.level is Level.OK and reading.values["offset_ms"] == pytest.approx(-0.123)
    assert reading.info["source"] == "chronyc"
    reading = clock({"timedatectl": SensorError("timedatectl: command not found"),
                     "chronyc": (0, "Leap status     : Not synchronised\n", "")})
    assert reading.level is Level.WARNING
    with pytest.raises(SensorError, match="booted with systemd.*chronyc: command not found"):
        clock({"timedatectl": no_systemd, "chronyc": SensorError("chronyc: command not found")})


@pytest.mark.parametrize(("type_name", "cls"), [
    ("chassis", ChassisSensor), ("smart", SmartSensor), ("mdraid", MdRaidSensor), ("load", LoadSensor),
    ("memory", MemorySensor), ("swap", SwapSensor), ("disk_usage", DiskUsageSensor),
    ("clock_sync", ClockSyncSensor), ("process", ProcessSensor), ("nagios", NagiosSensor),
])
def test_families_are_registered_under_their_type_names(type_name: str, cls: type[Sensor]) -> None:
    from firmware.core.sensors import family_class

    assert cls.family == type_name
    assert family_class(type_name) is cls
