"""Fake host commands and files for the simulator: smartctl, dmidecode, /proc/mdstat, /sys (dmi/id, md).

The fake commands are small stdlib-only Python scripts (``sim/fakecmds/``).
`FakeCommands` copies them into a directory and keeps a JSON state file next
to them, which the scripts read on every run; changing a disk's health or a
supply's status is a write to that file. `FakeCommands.commands` is the
mapping for `SensorContext.commands`, `FakeProc.root` and `FakeSysfs.root`
go to `SensorContext.procfs` and `SensorContext.sysfs`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

from firmware.core.journal import write_atomically

__all__ = [
    "MDSTAT_DEGRADED", "MDSTAT_HEALTHY_RAID1", "MDSTAT_RECOVERING", "STATE_NAME",
    "FakeCommands", "FakeProc", "FakeSysfs",
]

SCRIPTS = ("smartctl", "dmidecode")
STATE_NAME = "fakecmds-state.json"
"""The state file's name in the scripts' directory (``$TANDEM_SIM_STATE`` overrides its path)."""
DISK_HEALTH = ("ok", "pending", "failing", "standby", "missing", "nvme_ok", "nvme_critical", "nvme_media_errors")
CHASSIS_STATES = ("Other", "Unknown", "Safe", "Warning", "Critical", "Non-recoverable")
PSU_STATUS = ("Present, OK", "Present, Non-critical", "Present, Critical", "Present, Other",
              "Present, Unknown", "Not Present")

MDSTAT_HEALTHY_RAID1 = """\
Personalities : [raid1] [linear] [multipath] [raid0] [raid6] [raid5] [raid4] [raid10]
md0 : active raid1 sdb1[1] sda1[0]
      976630336 blocks super 1.2 [2/2] [UU]
      bitmap: 1/8 pages [4KB], 65536KB chunk

unused devices: <none>
"""

MDSTAT_DEGRADED = """\
Personalities : [raid1] [linear] [multipath] [raid0] [raid6] [raid5] [raid4] [raid10]
md0 : active raid1 sdb1[1](F) sda1[0]
      976630336 blocks super 1.2 [2/1] [U_]
      bitmap: 3/8 pages [12KB], 65536KB chunk

unused devices: <none>
"""

MDSTAT_RECOVERING = """\
Personalities : [raid1] [linear] [multipath] [raid0] [raid6] [raid5] [raid4] [raid10]
md0 : active raid1 sdc1[2] sda1[0]
      976630336 blocks super 1.2 [2/1] [U_]
      [=>...................]  recovery =  8.1% (79156480/976630336) finish=6.7min speed=6963K/sec
      bitmap: 3/8 pages [12KB], 65536KB chunk

unused devices: <none>
"""


class FakeCommands:
    """Fake ``smartctl`` and ``dmidecode`` in ``directory``, driven by a state file beside them."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Copy the scripts into ``directory`` (created if needed) and start from a healthy state."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        source = Path(__file__).with_name("fakecmds")
        for name in SCRIPTS:
            target = self.directory / name
            shutil.copyfile(source / name, target)
            target.chmod(0o755)
        self.state_path = self.directory / STATE_NAME
        if not self.state_path.exists():
            self._save({"disks": {}, "dmi": {}})

    def commands(self) -> dict[str, str]:
        """The mapping for `SensorContext.commands`: command name → fake script path."""
        return {name: str(self.directory / name) for name in SCRIPTS}

    def state(self) -> dict[str, Any]:
        """The current state as the scripts will see it."""
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def _save(self, state: dict[str, Any]) -> None:
        write_atomically(self.state_path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())

    def set_disk(self, device: str, health: str = "ok", **fields: Any) -> None:
        """Set how ``device`` answers smartctl.

        ``health``: ok, pending (pending/offline-uncorrectable sectors), failing
        (SMART FAILED, attribute 5 failing now), standby (asleep, not woken by
        ``-n standby``), missing (open fails), nvme_ok, nvme_critical
        (critical_warning 0x04), nvme_media_errors. A path containing "nvme"
        is an NVMe disk anyway (there "failing" means critical_warning).
        ``fields`` override reported numbers and strings: temperature,
        power_on_hours, percentage_used, critical_warning, model_name,
        serial_number, firmware_version.
        """
        if health not in DISK_HEALTH:
            raise ValueError(f"disk health must be one of {', '.join(DISK_HEALTH)}, not {health!r}")
        state = self.state()
        state.setdefault("disks", {})[device] = {"health": health, **fields}
        self._save(state)

    def set_dmi_not_root(self, not_root: bool = True) -> None:
        """Make dmidecode fail as it does for an ordinary user (exit 1, /dev/mem permission denied)."""
        state = self.state()
        state.setdefault("dmi", {})["not_root"] = bool(not_root)
        self._save(state)

    def set_chassis_state(self, *, boot_up: str | None = None, power_supply: str | None = None,
                          thermal: str | None = None) -> None:
        """Set the type 3 Boot-up / Power Supply / Thermal State (Safe, Warning, Critical, …)."""
        state = self.state()
        chassis = state.setdefault("dmi", {}).setdefault("chassis", {})
        for key, value in (("boot_up", boot_up), ("power_supply", power_supply), ("thermal", thermal)):
            if value is not None:
                if value not in CHASSIS_STATES:
                    raise ValueError(f"{key} state must be one of {', '.join(CHASSIS_STATES)}, not {value!r}")
                chassis[key] = value
        self._save(state)

    def set_psu(self, location: str, status: str = "Present, OK", plugged: bool = True) -> None:
        """Set a type 39 supply's Status and Plugged; a new location adds a supply."""
        if status not in PSU_STATUS:
            raise ValueError(f"supply status must be one of {', '.join(PSU_STATUS)}, not {status!r}")
        state = self.state()
        dmi = state.setdefault("dmi", {})
        psus = dmi.setdefault("psus", [{"location": "PSU1", "serial": "P5011CH12AB3456"},
                                       {"location": "PSU2", "serial": "P5011CH12AB3457"}])
        entry = next((p for p in psus if p.get("location") == location), None)
        if entry is None:
            entry = {"location": location}
            psus.append(entry)
        entry.update(status=status, plugged="Yes" if plugged else "No")
        self._save(state)


class FakeProc:
    """A fake procfs root holding ``mdstat``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Use ``directory`` as the procfs root (created if needed), with no md arrays."""
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "mdstat").exists():
            self.set_mdstat("Personalities : \nunused devices: <none>\n")

    def set_mdstat(self, text: str) -> None:
        """Replace /proc/mdstat (e.g. with `MDSTAT_DEGRADED`)."""
        write_atomically(self.root / "mdstat", text.encode())


class FakeSysfs:
    """A fake sysfs root: ``class/dmi/id`` (world-readable and root-only files) and md ``array_state``."""

    DEFAULT_DMI_ID: ClassVar[dict[str, str]] = {
        "sys_vendor": "Supermicro", "product_name": "SYS-5019C-M", "product_version": "0123456789",
        "board_vendor": "Supermicro", "board_name": "X11SCM-F", "chassis_vendor": "Supermicro",
        "chassis_type": "23",
    }
    DEFAULT_DMI_SERIALS: ClassVar[dict[str, str]] = {
        "product_serial": "S342591X9A12345", "product_uuid": "00000000-0000-0000-0000-ac1f6b8e1234",
        "board_serial": "ZM18AS012345", "chassis_serial": "C5010LK28N12345",
    }

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Use ``directory`` as the sysfs root (created if needed)."""
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)

    def set_dmi_id(self, **fields: str) -> None:
        """Write /sys/class/dmi/id files: the defaults (a Supermicro 1U box) overridden by ``fields``."""
        base = self.root / "class" / "dmi" / "id"
        base.mkdir(parents=True, exist_ok=True)
        for name, value in {**self.DEFAULT_DMI_ID, **fields}.items():
            (base / name).write_text(f"{value}\n")

    def set_dmi_serials(self, **fields: str) -> None:
        """Write the root-only (mode 0400) /sys/class/dmi/id files: serials and UUID, defaults overridden."""
        base = self.root / "class" / "dmi" / "id"
        base.mkdir(parents=True, exist_ok=True)
        for name, value in {**self.DEFAULT_DMI_SERIALS, **fields}.items():
            path = base / name
            path.write_text(f"{value}\n")
            path.chmod(0o400)

    def set_md_array_state(self, array: str, state: str) -> None:
        """Write /sys/block/ARRAY/md/array_state (``clean``, ``active``, ``broken`` …)."""
        base = self.root / "block" / array / "md"
        base.mkdir(parents=True, exist_ok=True)
        write_atomically(base / "array_state", f"{state}\n".encode())
