"""Inventory and chassis state from the SMBIOS/DMI table (dmidecode), with a sysfs fallback.

The firmware builds the SMBIOS table at boot, so everything here is
inventory-grade: it says what the box was at power-on (model, serials, which
supplies were plugged), not what it is now. Live power-supply state comes
from PMBus; the ``chassis`` family is a cheap cross-check and an inventory
source.

Which source for what (docs/library-decisions.md): /sys/class/dmi/id has the
identity (vendor, model, and, for root, the serials and UUID) without running
anything, so it is the fallback that still names the box when dmidecode is
missing or not allowed. Only dmidecode has the type 3 boot-up/power/thermal
states and the type 39 power supplies, which the ``chassis`` family judges.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field

from .base import Level, Reading, Sensor, SensorContext, SensorError, SensorOptions

__all__ = ["ChassisSensor", "parse_dmidecode", "read_inventory"]

DMI_TYPES = (1, 2, 3, 39)
_HANDLE = re.compile(r"^Handle (0x[0-9A-Fa-f]+), DMI type (\d+), (\d+) bytes")

# SMBIOS 3.x chassis types (what /sys/class/dmi/id/chassis_type holds as a number).
CHASSIS_TYPES = {
    1: "Other", 2: "Unknown", 3: "Desktop", 4: "Low Profile Desktop", 5: "Pizza Box",
    6: "Mini Tower", 7: "Tower", 8: "Portable", 9: "Laptop", 10: "Notebook", 11: "Hand Held",
    12: "Docking Station", 13: "All In One", 14: "Sub Notebook", 15: "Space-saving",
    16: "Lunch Box", 17: "Main Server Chassis", 18: "Expansion Chassis", 19: "Sub Chassis",
    20: "Bus Expansion Chassis", 21: "Peripheral Chassis", 22: "RAID Chassis",
    23: "Rack Mount Chassis", 24: "Sealed-case PC", 25: "Multi-system", 26: "CompactPCI",
    27: "AdvancedTCA", 28: "Blade", 29: "Blade Enclosing", 30: "Tablet", 31: "Convertible",
    32: "Detachable", 33: "IoT Gateway", 34: "Embedded PC", 35: "Mini PC", 36: "Stick PC",
}

# Files of /sys/class/dmi/id: (section, key) each one fills, with dmidecode's key names.
# The serials and the UUID are readable by root only; for anyone else they are skipped.
SYSFS_FIELDS = {
    "sys_vendor": ("system", "manufacturer"),
    "product_name": ("system", "product_name"),
    "product_version": ("system", "version"),
    "product_serial": ("system", "serial_number"),
    "product_uuid": ("system", "uuid"),
    "board_vendor": ("board", "manufacturer"),
    "board_name": ("board", "product_name"),
    "board_serial": ("board", "serial_number"),
    "chassis_vendor": ("chassis", "manufacturer"),
    "chassis_type": ("chassis", "type"),
    "chassis_serial": ("chassis", "serial_number"),
}

STATE_LEVELS = {
    "safe": Level.OK,
    "warning": Level.WARNING,
    "critical": Level.CRITICAL,
    "non-recoverable": Level.CRITICAL,
}


def snake(text: str) -> str:
    """``"Boot-up State"`` → ``"boot_up_state"``: a dmidecode key (or location) as a snake_case name."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse_dmidecode(text: str) -> list[dict[str, Any]]:
    """Split dmidecode output into structures.

    Each structure is ``{"handle": "0x0045", "type": 39, "title": "System Power
    Supply", "fields": {"Location": "PSU1", ...}}`` with the keys exactly as
    dmidecode prints them. Multi-line list values (``Features:``, ``Contained
    Elements``' entries) are skipped; header comments and blank lines are ignored.
    """
    structures: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    expect_title = False
    for line in text.splitlines():
        match = _HANDLE.match(line)
        if match:
            current = {"handle": match.group(1), "type": int(match.group(2)), "title": "", "fields": {}}
            structures.append(current)
            expect_title = True
        elif current is None:
            continue
        elif not line.strip():
            current = None  # a blank line ends the structure
        elif expect_title:
            current["title"] = line.strip()
            expect_title = False
        elif line.startswith("\t") and not line.startswith("\t\t"):
            # One tab: "Key: Value". Two tabs: an item of a list value, skipped.
            key, sep, value = line.strip().partition(":")
            if sep and value.strip():
                current["fields"][key.strip()] = value.strip()
    return structures


def _section(structure: dict[str, Any]) -> dict[str, str]:
    return {snake(key): value for key, value in structure["fields"].items()}


def _dmidecode_failure(proc: Any) -> str:
    """One line saying why dmidecode gave nothing usable."""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    reason = "; ".join(lines[:3]) or "no SMBIOS structures printed"
    if "Permission denied" in reason or "/dev/mem" in reason:
        reason += " (dmidecode needs root)"
    return f"dmidecode exited {proc.returncode}: {reason}"


def _from_sysfs(sysfs: Path) -> dict[str, Any]:
    """What /sys/class/dmi/id offers: identity, serials and UUID when readable (root); never supplies."""
    base = sysfs / "class" / "dmi" / "id"
    inventory: dict[str, Any] = {"system": {}, "board": {}, "chassis": {}, "power_supplies": []}
    for name, (section, key) in SYSFS_FIELDS.items():
        try:
            value = (base / name).read_text(errors="replace").strip()
        except OSError:
            continue
        if name == "chassis_type" and value.isdigit():
            value = CHASSIS_TYPES.get(int(value), f"type {value}")
        if value:
            inventory[section][key] = value
    return inventory


def read_inventory(context: SensorContext, timeout: float = 10) -> dict[str, Any]:
    """What the box is: system, board, chassis and power supplies.

    Runs ``dmidecode -t 1 -t 2 -t 3 -t 39``. When that fails (not root, not
    installed, no SMBIOS) falls back to ``/sys/class/dmi/id``; then
    ``"source"`` is ``"sysfs"`` and ``"error"`` says why dmidecode was not used.
    Keys inside each section are dmidecode's, in snake_case
    (``product_name``, ``serial_number``, ``boot_up_state``).
    """
    argv = [context.command("dmidecode")]
    for dmi_type in DMI_TYPES:
        argv += ["-t", str(dmi_type)]
    try:
        proc = context.run(argv, timeout=timeout)
    except SensorError as exc:
        error = str(exc)
    else:
        structures = parse_dmidecode(proc.stdout or "")
        if proc.returncode == 0 and structures:
            inventory: dict[str, Any] = {"system": {}, "board": {}, "chassis": {}, "power_supplies": []}
            for structure in structures:
                kind = structure["type"]
                if kind == 39:
                    inventory["power_supplies"].append(_section(structure))
                elif kind in (1, 2, 3):
                    key = {1: "system", 2: "board", 3: "chassis"}[kind]
                    if not inventory[key]:  # several boards or chassis: the first is the box's own
                        inventory[key] = _section(structure)
            inventory["source"] = "dmidecode"
            return inventory
        error = _dmidecode_failure(proc)
    inventory = _from_sysfs(context.sysfs)
    inventory["source"] = "sysfs"
    inventory["error"] = error
    return inventory


class ChassisOptions(SensorOptions):
    """Options of the ``chassis`` family."""

    command_timeout_s: float = Field(10, gt=0)


def _supply_verdict(psu: dict[str, str], index: int) -> tuple[Level, str, list[str]]:
    """(level, note, conditions) for one type 39 supply."""
    where = psu.get("location") or psu.get("name") or f"PSU{index}"
    slug = snake(where) or f"psu{index}"
    status = psu.get("status", "")
    state = status.partition(",")[2].strip().lower()
    if status.strip().lower() == "not present":
        return Level.WARNING, f"{where} not present", [f"{slug}_not_present"]
    if psu.get("plugged", "").lower() == "no":
        return Level.WARNING, f"{where} unplugged", [f"{slug}_unplugged"]
    if state == "critical":
        return Level.CRITICAL, f"{where} critical", [f"{slug}_critical"]
    if state == "non-critical":
        return Level.WARNING, f"{where} non-critical", [f"{slug}_non_critical"]
    if state in ("other", "unknown", ""):
        return Level.OK, f"{where} status {state or 'not reported'}", []
    return Level.OK, "", []


class ChassisSensor(Sensor):
    """Chassis boot-up/power/thermal state (SMBIOS type 3) and power supplies (type 39).

    The SMBIOS table is built at boot: this is inventory-grade, a supply
    pulled after boot still shows as present. Needs root for dmidecode;
    without it the reading fails (inventory alone is in `read_inventory`).
    """

    family = "chassis"
    Options = ChassisOptions

    def read(self) -> Reading:
        """Run dmidecode and judge the chassis states and supplies."""
        options: ChassisOptions = self.options  # type: ignore[assignment]
        inventory = read_inventory(self.context, timeout=options.command_timeout_s)
        if inventory["source"] != "dmidecode":
            raise SensorError(f"chassis state needs dmidecode: {inventory['error']}")
        levels: list[Level] = []
        notes: list[str] = []
        conditions: list[str] = []
        chassis = inventory["chassis"]
        for key, label in (("boot_up_state", "boot-up"), ("power_supply_state", "power supply"),
                           ("thermal_state", "thermal")):
            state = chassis.get(key)
            if state is None:
                continue
            level = STATE_LEVELS.get(state.lower())
            if level is None:  # Other/Unknown: the firmware does not say; not a fault
                notes.append(f"{label} state {state.lower()}")
                continue
            levels.append(level)
            if level is not Level.OK:
                notes.append(f"{label} state {state.lower()}")
                conditions.append(f"{key}_{snake(state)}")
        supplies = inventory["power_supplies"]
        present = 0
        for index, psu in enumerate(supplies, start=1):
            level, note, conds = _supply_verdict(psu, index)
            levels.append(level)
            conditions += conds
            if note:
                notes.append(note)
            if psu.get("status", "").lower().startswith("present") and psu.get("plugged", "").lower() != "no":
                present += 1
        level = Level.worst(*levels)
        summary = "; ".join(notes) or "chassis state safe"
        if supplies:
            summary += f"; {present}/{len(supplies)} supplies present"
        info = {"as_of": "boot (SMBIOS table)"}
        for section in ("system", "board", "chassis"):
            for key in ("manufacturer", "product_name", "serial_number", "type"):
                if key in inventory[section]:
                    info[f"{section}_{key}"] = inventory[section][key]
        for index, psu in enumerate(supplies, start=1):
            where = psu.get("location") or f"PSU{index}"
            info[f"{snake(where)}_model"] = psu.get("model_part_number", psu.get("name", ""))
            info[f"{snake(where)}_serial"] = psu.get("serial_number", "")
            info[f"{snake(where)}_max_power"] = psu.get("max_power_capacity", "")
        return Reading(level=level, summary=summary,
                       values={"psus_total": float(len(supplies)), "psus_present": float(present)},
                       conditions=tuple(dict.fromkeys(conditions)), info=info)
