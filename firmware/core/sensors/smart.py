"""Disk health from SMART: ``smartctl -a -j -n standby DEVICE`` (smartmontools 7.0+).

smartctl's exit status is a bit mask and it prints its JSON whatever the
exit status, so the output is always parsed and the bits are judged next to
it. ``-n standby`` keeps a spun-down disk asleep: that reading is OK
("in standby, not woken"), not a failure.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from .base import Level, Reading, Sensor, SensorError, SensorOptions

__all__ = ["SmartSensor", "parse_smartctl"]

# Exit status bits (smartctl(8), RETURN VALUES).
BIT_CMDLINE = 0x01
BIT_OPEN_OR_STANDBY = 0x02
BIT_COMMAND_FAILED = 0x04
BIT_DISK_FAILING = 0x08
BIT_PREFAIL_NOW = 0x10
BIT_FAILED_IN_PAST = 0x20
BIT_ERROR_LOG = 0x40
BIT_SELFTEST_ERRORS = 0x80

# Bits 3-7: (level, condition, words for the summary).
EXIT_BITS = {
    BIT_DISK_FAILING: (Level.CRITICAL, "disk_failing", "DISK FAILING"),
    BIT_PREFAIL_NOW: (Level.CRITICAL, "prefail_below_threshold", "prefail attribute below threshold"),
    BIT_FAILED_IN_PAST: (Level.WARNING, "attribute_failed_in_past", "attribute below threshold in the past"),
    BIT_ERROR_LOG: (Level.WARNING, "error_log_entries", "error log has entries"),
    BIT_SELFTEST_ERRORS: (Level.WARNING, "self_test_errors", "self-test errors"),
}

# The ATA attributes whose raw counts are the classic early signs of a dying disk.
# id: (value name, condition, words for the summary).
ATA_WATCHED = {
    5: ("reallocated", "reallocated_sectors", "reallocated sectors"),
    187: ("reported_uncorrect", "reported_uncorrect", "reported uncorrectable"),
    197: ("pending", "pending_sectors", "pending sectors"),
    198: ("offline_uncorrectable", "offline_uncorrectable", "offline uncorrectable"),
}

NVME_CRITICAL_WARNING = {
    0x01: "spare_below_threshold",
    0x02: "temperature_threshold",
    0x04: "reliability_degraded",
    0x08: "read_only",
    0x10: "volatile_backup_failed",
}


def _messages(data: dict[str, Any]) -> list[str]:
    messages = data.get("smartctl", {}).get("messages", [])
    return [str(m.get("string", "")).strip() for m in messages if isinstance(m, dict)]


def _standby_message(messages: list[str]) -> str | None:
    for message in messages:
        if message.startswith("Device is in") and "mode" in message:
            return message
    return None


def _raw(attribute: dict[str, Any]) -> int | None:
    raw = attribute.get("raw", {})
    if isinstance(raw.get("value"), int):
        return raw["value"]
    head = str(raw.get("string", "")).split(" ", 1)[0]
    return int(head) if head.isdigit() else None


class _Verdict:
    """Collects levels, summary words, values and conditions while parsing."""

    def __init__(self) -> None:
        self.levels: list[Level] = []
        self.problems: list[str] = []
        self.conditions: list[str] = []
        self.values: dict[str, float] = {}
        self.units: dict[str, str] = {}

    def flag(self, level: Level, condition: str, words: str) -> None:
        """Note a finding once: its level, its condition name and its words for the summary."""
        self.levels.append(level)
        if condition not in self.conditions:
            self.conditions.append(condition)
            self.problems.append(words)

    def value(self, name: str, number: Any, unit: str = "") -> None:
        """Keep ``number`` as a value when smartctl reported one (absent keys are skipped)."""
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            self.values[name] = float(number)
            if unit:
                self.units[name] = unit


def _judge_ata(data: dict[str, Any], verdict: _Verdict) -> None:
    table = data.get("ata_smart_attributes", {}).get("table", [])
    for attribute in table:
        attr_id = attribute.get("id")
        slug = str(attribute.get("name") or f"attribute_{attr_id}").lower()
        when_failed = attribute.get("when_failed", "")
        if when_failed == "now":
            verdict.flag(Level.CRITICAL, f"{slug}_failing_now", f"{attribute.get('name', attr_id)} failing now")
        elif when_failed == "past":
            verdict.flag(Level.WARNING, f"{slug}_failed_in_past",
                         f"{attribute.get('name', attr_id)} failed in the past")
        if attr_id in ATA_WATCHED:
            name, condition, words = ATA_WATCHED[attr_id]
            raw = _raw(attribute)
            if raw is None:
                continue
            verdict.value(name, raw)
            if raw > 0:
                verdict.flag(Level.WARNING, condition, f"{raw} {words}")


def _judge_nvme(data: dict[str, Any], verdict: _Verdict) -> None:
    log = data.get("nvme_smart_health_information_log")
    if not isinstance(log, dict):
        return
    warning = int(log.get("critical_warning") or 0)
    for bit, condition in NVME_CRITICAL_WARNING.items():
        if warning & bit:
            verdict.flag(Level.CRITICAL, condition, condition.replace("_", " "))
    if warning & ~sum(NVME_CRITICAL_WARNING):
        verdict.flag(Level.CRITICAL, "critical_warning", f"critical warning 0x{warning:02x}")
    verdict.value("critical_warning", warning)
    media_errors = log.get("media_errors")
    verdict.value("media_errors", media_errors)
    if isinstance(media_errors, int) and media_errors > 0:
        verdict.flag(Level.WARNING, "media_errors", f"{media_errors} media errors")
    verdict.value("percentage_used", log.get("percentage_used"), "%")
    verdict.value("available_spare", log.get("available_spare"), "%")
    verdict.value("available_spare_threshold", log.get("available_spare_threshold"), "%")
    verdict.value("unsafe_shutdowns", log.get("unsafe_shutdowns"))
    verdict.value("error_log_entries", log.get("num_err_log_entries"))


def parse_smartctl(json_text: str, exit_code: int) -> Reading:
    """Judge one ``smartctl -a -j`` run: its JSON output and its exit status bit mask.

    Raises SensorError when smartctl could not look at the disk at all
    (command line error, device not opened, no JSON); a disk in standby is an
    OK reading. ATA, NVMe and SCSI output is understood.
    """
    try:
        data = json.loads(json_text) if json_text.strip() else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        first = json_text.strip().splitlines()[0] if json_text.strip() else "no output"
        raise SensorError(f"smartctl printed no JSON (exit {exit_code}; smartmontools 7.0+ needed): {first}")
    messages = _messages(data)
    standby = _standby_message(messages)
    if standby is not None:
        return Reading(level=Level.OK, summary="in standby, not woken", conditions=("standby",),
                       info={"device": str(data.get("device", {}).get("name", ""))})
    errors = "; ".join(m for m in messages if m) or f"exit status {exit_code}"
    if exit_code & BIT_CMDLINE:
        raise SensorError(f"smartctl command line error: {errors}")
    has_health = any(key in data for key in ("smart_status", "ata_smart_attributes",
                                             "nvme_smart_health_information_log"))
    if exit_code & BIT_OPEN_OR_STANDBY:
        raise SensorError(f"smartctl could not open the device: {errors}")
    if exit_code & BIT_COMMAND_FAILED and not has_health:
        raise SensorError(f"smartctl could not read SMART data: {errors}")

    verdict = _Verdict()
    if exit_code & BIT_COMMAND_FAILED:
        verdict.flag(Level.WARNING, "smart_command_failed", "a SMART command failed")
    for bit, (level, condition, words) in EXIT_BITS.items():
        if exit_code & bit:
            verdict.flag(level, condition, words)
    passed = data.get("smart_status", {}).get("passed")
    if passed is False:
        verdict.flag(Level.CRITICAL, "smart_failed", "SMART health FAILED")
    _judge_ata(data, verdict)
    _judge_nvme(data, verdict)
    defects = data.get("scsi_grown_defect_list")
    verdict.value("grown_defects", defects)
    if isinstance(defects, int) and defects > 0:
        verdict.flag(Level.WARNING, "grown_defects", f"{defects} grown defects")
    verdict.value("temperature", data.get("temperature", {}).get("current"), "°C")
    verdict.value("power_on_hours", data.get("power_on_time", {}).get("hours"), "h")

    level = Level.worst(*verdict.levels)
    status = {True: "PASSED", False: "FAILED"}.get(passed, "health not reported")
    details = ([] if passed is False else [status]) + verdict.problems
    if "temperature" in verdict.values:
        details.append(f"{verdict.values['temperature']:g} °C")
    info = {key: str(data[key]) for key in ("model_name", "serial_number", "firmware_version") if key in data}
    device = data.get("device", {})
    if device.get("name"):
        info["device"] = str(device["name"])
    if device.get("protocol"):
        info["protocol"] = str(device["protocol"])
    return Reading(level=level, summary=", ".join(details), values=verdict.values, units=verdict.units,
                   conditions=tuple(verdict.conditions), info=info)


class SmartOptions(SensorOptions):
    """Options of the ``smart`` family."""

    device: str = Field(min_length=1)
    """The disk, e.g. ``/dev/sda`` or ``/dev/nvme0``."""
    extra_args: list[str] = Field(default_factory=list)
    """Passed before the device, e.g. ``["-d", "sat"]`` or ``["-d", "megaraid,0"]``."""
    command_timeout_s: float = Field(10, gt=0)


class SmartSensor(Sensor):
    """One disk's SMART verdict, counters and wear, via smartctl's JSON output."""

    family = "smart"
    Options = SmartOptions

    def read(self) -> Reading:
        """Run smartctl without waking a sleeping disk and judge what it printed."""
        options: SmartOptions = self.options  # type: ignore[assignment]
        argv = [self.context.command("smartctl"), "-a", "-j", "-n", "standby", *options.extra_args, options.device]
        proc = self.context.run(argv, timeout=options.command_timeout_s)
        if proc.returncode < 0:
            raise SensorError(f"smartctl killed by signal {-proc.returncode}")
        return parse_smartctl(proc.stdout or "", proc.returncode)
