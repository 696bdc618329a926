"""A fake sysfs hwmon tree for the ``hwmon`` sensor family: ``SensorContext(sysfs=root)``.

The kernel's layout is /sys/class/hwmon/hwmonN, each a symlink to the device's
hwmon directory holding ``name`` and the attribute files; here they are plain
directories. Values are written raw, in the kernel's units: temperatures in
m°C (``temp1_input=45000``), voltages in mV, currents in mA, power in µW,
fans in RPM, alarms and faults 0/1::

    hw = FakeHwmon(tmp_path)
    psu = hw.add_chip("pmbus", in1_input=230000, in1_label="vin", temp1_input=35000,
                      fan1_input=8000, fan1_fault=0)
    hw.set(psu, "fan1_fault", 1)

``add_chip(..., legacy=True)`` puts the attributes under ``hwmonN/device/``,
as kernels before 5.x did for some drivers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FakeHwmon"]


class FakeHwmon:
    """Writes hwmon chips under ``root/class/hwmon`` (``root`` plays /sys)."""

    def __init__(self, root: Path) -> None:
        """Create ``root/class/hwmon`` if needed."""
        self.root = Path(root)
        self.base = self.root / "class" / "hwmon"
        self.base.mkdir(parents=True, exist_ok=True)

    def add_chip(self, name: str, *, legacy: bool = False, **files: object) -> Path:
        """Add ``hwmonN`` (the next free N) with ``name`` and the given attribute files; return its directory."""
        index = 0
        while (self.base / f"hwmon{index}").exists():
            index += 1
        chip = self.base / f"hwmon{index}"
        attributes = chip / "device" if legacy else chip
        attributes.mkdir(parents=True)
        (attributes / "name").write_text(name + "\n")
        for file, value in files.items():
            self._write(attributes / file, value)
        return chip

    def chip(self, chip: str | Path) -> Path:
        """The attribute directory of a chip given by its directory, ``"hwmonN"``, or its name (the first)."""
        if isinstance(chip, Path):
            path = chip
        elif (self.base / chip).is_dir():
            path = self.base / chip
        else:
            for candidate in sorted(self.base.iterdir(), key=lambda p: int(p.name[5:] or 0)):
                if self._attributes(candidate).joinpath("name").read_text().strip() == chip:
                    path = candidate
                    break
            else:
                raise KeyError(f"no fake hwmon chip {chip!r}")
        return self._attributes(path)

    def set(self, chip: str | Path, file: str, value: object) -> None:
        """Write one attribute file (creating it), e.g. ``set("coretemp", "temp1_input", 95000)``."""
        self._write(self.chip(chip) / file, value)

    def remove(self, chip: str | Path, file: str) -> None:
        """Delete one attribute file (a channel the driver no longer offers)."""
        (self.chip(chip) / file).unlink()

    @staticmethod
    def _attributes(chip: Path) -> Path:
        return chip if (chip / "name").exists() else chip / "device"

    @staticmethod
    def _write(path: Path, value: object) -> None:
        text = str(int(value)) if isinstance(value, bool) else str(value)
        path.write_text(text + "\n")
