"""The simulated chassis: what the sensors of a `sim` board talk to, with faults to inject.

The sim board profile names it as its sensor host (``[sensor_host] driver =
"sim.chassis:SimChassis"``). It is a `SensorContext` whose backends are
simulated, so the sensor code is exactly the firmware's:

- its own I2C buses (`sim.i2c.SimI2cBuses`, ``.i2c``; the sensors' SMBus
  opener): on bus 1 PMBus power supplies ``psu1`` at 0x58 and ``psu2`` at
  0x59, an LM75 ``inlet`` at 0x48;
- fake ``smartctl`` and ``dmidecode`` commands (disk ``sda``), a fake
  /proc/mdstat (``md0``, a healthy RAID 1), a fake /sys (dmi/id, md0's array_state, hwmon).

`inject` is what ``tandem sim set TARGET key=value…`` reaches through the
control socket (simulator boards only)::

    tandem sim set psu1 ac=lost          # also: ac=ok, present=no|yes, fan=failed|ok, heat=over|ok
    tandem sim set inlet temp=55
    tandem sim set sda health=failing    # ok, pending, failing, standby, missing, nvme_critical, …
    tandem sim set md0 state=degraded    # healthy, degraded, recovering
    tandem sim set chassis thermal=Critical
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from firmware.core.sensors.base import SensorContext
from sim.fakecmds import (
    DISK_HEALTH,
    MDSTAT_DEGRADED,
    MDSTAT_HEALTHY_RAID1,
    MDSTAT_RECOVERING,
    FakeCommands,
    FakeProc,
    FakeSysfs,
)
from sim.hwmon import FakeHwmon
from sim.i2c import SimI2cBuses
from sim.i2cdevices import Lm75Model, PmbusPsuModel

BUS = 1
PSU_ADDRESSES = {"psu1": 0x58, "psu2": 0x59}
LM75_ADDRESSES = {"inlet": 0x48}
MDSTAT = {"healthy": MDSTAT_HEALTHY_RAID1, "degraded": MDSTAT_DEGRADED, "recovering": MDSTAT_RECOVERING}
ARRAY_STATE = {"healthy": "clean", "degraded": "clean", "recovering": "active"}
"""What /sys/block/md0/md/array_state says in each md0 state (a RAID 1 is never ``broken``)."""


def _flag(value: str, yes: tuple[str, ...], no: tuple[str, ...], what: str) -> bool:
    text = str(value).strip().lower()
    if text in yes:
        return True
    if text in no:
        return False
    raise ValueError(f"{what}: {value!r} is not one of {', '.join(yes + no)}")


class SimChassis(SensorContext):
    """A simulated 1U chassis: two PMBus supplies, an LM75, a SMART disk, an md RAID 1."""

    def __init__(self, directory: str | None = None, psu2_present: bool = True) -> None:
        """Attach the device models to the chassis's own buses and write the fake files (in ``directory`` or a new temporary one)."""
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="tandem-chassis-"))
        self.psus = {name: PmbusPsuModel(mfr_serial=f"P5510A{address:08X}")
                     for name, address in PSU_ADDRESSES.items()}
        self.lm75s = {name: Lm75Model(celsius=27.0) for name in LM75_ADDRESSES}
        self.i2c = SimI2cBuses()
        for name, address in PSU_ADDRESSES.items():
            self.i2c.attach(BUS, address, self.psus[name])
        for name, address in LM75_ADDRESSES.items():
            self.i2c.attach(BUS, address, self.lm75s[name])
        self.psus["psu2"].set_present(psu2_present)
        self.fake_commands = FakeCommands(self.directory / "bin")
        self.fake_commands.set_disk("/dev/sda", "ok")
        self.proc = FakeProc(self.directory / "proc")
        self.proc.set_mdstat(MDSTAT_HEALTHY_RAID1)
        self.sys = FakeSysfs(self.directory / "sys")
        self.sys.set_dmi_id()
        self.sys.set_md_array_state("md0", ARRAY_STATE["healthy"])
        self.hwmon = FakeHwmon(self.sys.root)
        self.hwmon.add_chip("coretemp", temp1_input=41000, temp1_label="Package id 0", temp1_max=80000,
                            temp1_crit=100000)
        super().__init__(smbus=self.i2c.open, sysfs=self.sys.root, procfs=self.proc.root,
                         commands=self.fake_commands.commands())

    def inject(self, target: str, settings: dict[str, Any]) -> str:
        """Apply ``settings`` to the simulated device ``target``; ValueError/KeyError on a bad request."""
        handlers: dict[str, Callable[[str, str], str]] = {}
        for name in self.psus:
            handlers[name] = lambda key, value, n=name: self._psu(n, key, value)
        for name in self.lm75s:
            handlers[name] = lambda key, value, n=name: self._lm75(n, key, value)
        handlers["sda"] = self._disk
        handlers["md0"] = self._raid
        handlers["chassis"] = self._chassis
        handler = handlers.get(target)
        if handler is None:
            raise KeyError(f"no simulated device {target!r} (devices: {', '.join(handlers)})")
        return "; ".join(handler(key, str(value)) for key, value in settings.items())

    def _psu(self, name: str, key: str, value: str) -> str:
        psu = self.psus[name]
        if key == "ac":
            psu.set_ac(lost=_flag(value, ("lost", "off"), ("ok", "on"), f"{name} ac"))
        elif key == "present":
            psu.set_present(_flag(value, ("yes", "true", "1"), ("no", "false", "0"), f"{name} present"))
        elif key == "fan":
            psu.set_fan_failed(_flag(value, ("failed", "stopped"), ("ok",), f"{name} fan"))
        elif key == "heat":
            psu.set_over_temperature(_flag(value, ("over", "hot"), ("ok",), f"{name} heat"))
        else:
            raise ValueError(f"{name}: unknown setting {key!r} (ac, present, fan, heat)")
        return f"{name} {key}={value}"

    def _lm75(self, name: str, key: str, value: str) -> str:
        if key != "temp":
            raise ValueError(f"{name}: unknown setting {key!r} (temp)")
        try:
            self.lm75s[name].celsius = float(value)
        except ValueError:
            raise ValueError(f"{name} temp: {value!r} is not a number") from None
        return f"{name} temp={float(value):g} °C"

    def _disk(self, key: str, value: str) -> str:
        if key != "health" or value not in DISK_HEALTH:
            raise ValueError(f"sda: expected health=<{'|'.join(DISK_HEALTH)}>")
        self.fake_commands.set_disk("/dev/sda", value)
        return f"sda health={value}"

    def _raid(self, key: str, value: str) -> str:
        if key != "state" or value not in MDSTAT:
            raise ValueError(f"md0: expected state=<{'|'.join(MDSTAT)}>")
        self.proc.set_mdstat(MDSTAT[value])
        self.sys.set_md_array_state("md0", ARRAY_STATE[value])
        return f"md0 state={value}"

    def _chassis(self, key: str, value: str) -> str:
        if key not in ("thermal", "power_supply", "boot_up"):
            raise ValueError("chassis: expected thermal=, power_supply= or boot_up=<Safe|Warning|Critical|…>")
        self.fake_commands.set_chassis_state(**{key: value})
        return f"chassis {key}={value}"

    def close(self) -> None:
        """Remove the temporary files (the buses and their devices go with the chassis)."""
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
