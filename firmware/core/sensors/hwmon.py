"""Kernel hwmon devices (type ``hwmon``): any chip under /sys/class/hwmon, read through its sysfs files.

A chip is chosen by the content of its ``name`` file (``coretemp``,
``nct6775``, ``lm75``, ``pmbus``, ``drivetemp``) and, when several share a
name, by ``index`` (0 = the first, in order of their device paths, which is
stable across boots while the hwmonN numbers are not).

Each channel's ``*_input`` becomes a value named after the channel, converted
from the kernel's units: ``temp1`` m°C → °C, ``in1`` mV → V, ``curr1`` mA → A,
``power1`` µW → W (``power1_average`` when there is no input), ``energy1``
µJ → J, ``humidity1`` m% → %, ``fan1`` RPM. Labels (``*_label``) and limits
(``*_max``, ``*_crit`` …) go into info. Alarm files are conditions named after
the file: ``*_crit_alarm``, ``*_lcrit_alarm``, ``*_emergency_alarm`` and
``*_fault`` make the reading CRITICAL, other ``*_alarm`` files WARNING.

Alternatively read the same from a kernel pmbus hwmon device: with the
kernel's pmbus driver bound to a power supply, ``chip = "pmbus"`` (or the
specific driver's name) gives in1 (vin), in2 (vout), curr1/curr2 (iin/iout),
power1/power2 (pin/pout), temp1.., fan1 and the alarms the driver derives
from the supply's status registers (``in1_lcrit_alarm`` on AC loss,
``fan1_fault``, ``temp1_crit_alarm``) — use this instead of the ``pmbus``
family when a kernel driver owns the address (raw access then fails EBUSY).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field

from firmware.core.sensors.base import (
    Level,
    Reading,
    Sensor,
    SensorError,
    SensorOptions,
)

__all__ = ["HwmonOptions", "HwmonSensor"]

# channel type → (divisor to the unit, unit)
SCALES: dict[str, tuple[float, str]] = {
    "temp": (1000.0, "°C"), "in": (1000.0, "V"), "curr": (1000.0, "A"), "power": (1e6, "W"),
    "energy": (1e6, "J"), "humidity": (1000.0, "%"), "fan": (1.0, "RPM"), "intrusion": (1.0, ""),
}
_FILE = re.compile(r"^(?P<channel>(?P<type>temp|in|curr|power|energy|humidity|fan|intrusion)\d+)_(?P<attr>\w+)$")
_CHANNEL = re.compile(r"^(temp|in|curr|power|energy|humidity|fan|intrusion)\d+$")
_LIMITS = ("min", "max", "lcrit", "crit", "emergency", "max_hyst", "crit_hyst")
_CRITICAL_ALARMS = {"crit_alarm", "lcrit_alarm", "emergency_alarm", "fault"}
_ALARM_WORDS = {"alarm": "alarm", "max_alarm": "above maximum", "min_alarm": "below minimum",
                "crit_alarm": "critical alarm", "lcrit_alarm": "below critical minimum",
                "emergency_alarm": "emergency alarm", "cap_alarm": "power cap alarm", "fault": "fault"}
_SHOWN = 4  # values named in an OK summary


class HwmonOptions(SensorOptions):
    """Keys of a ``hwmon`` sensor."""

    chip: Annotated[str, Field(min_length=1)]
    """The chip's ``name`` file content (``coretemp``, ``nct6775``, ``pmbus``, ``lm75``)."""
    index: Annotated[int, Field(ge=0)] = 0
    """Which of several chips with that name (0 = the first by device path)."""
    channels: list[Annotated[str, Field(pattern=_CHANNEL.pattern)]] | None = None
    """Channels to read (``["temp1", "fan2"]``); default all the chip has."""


def _natural(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read(path: Path) -> str:
    return path.read_text().strip()


class HwmonSensor(Sensor):
    """One hwmon chip: its channels' values in SI units, its alarm files as conditions."""

    family = "hwmon"
    Options = HwmonOptions
    options: HwmonOptions

    def _chip(self) -> Path:
        """The attribute directory of the configured chip (looked up at each read: drivers come and go)."""
        base = self.context.sysfs / "class" / "hwmon"
        try:
            entries = list(base.iterdir())
        except OSError as exc:
            raise SensorError(f"cannot list {base}: {exc.strerror or exc}") from None
        found: dict[str, list[tuple[str, Path]]] = {}
        for entry in entries:
            attributes = entry if (entry / "name").exists() else entry / "device"
            try:
                name = _read(attributes / "name")
            except OSError:
                continue
            found.setdefault(name, []).append((os.path.realpath(entry), attributes))
        chips = sorted(found.get(self.options.chip, []), key=lambda pair: _natural(pair[0]))
        if not chips:
            available = ", ".join(sorted(found)) or "none"
            raise SensorError(f"no hwmon chip named {self.options.chip!r} under {base} (available: {available})")
        if self.options.index >= len(chips):
            raise SensorError(f"hwmon chip {self.options.chip!r} index {self.options.index}: there are only "
                              f"{len(chips)}")
        return chips[self.options.index][1]

    def read(self) -> Reading:
        """Read the chip's channels and alarm files."""
        chip = self._chip()
        files: dict[str, dict[str, Path]] = {}
        try:
            for path in chip.iterdir():
                match = _FILE.match(path.name)
                if match:
                    files.setdefault(match["channel"], {})[match["attr"]] = path
        except OSError as exc:
            raise SensorError(f"cannot list {chip}: {exc.strerror or exc}") from None
        wanted = self.options.channels
        if wanted:
            missing = [channel for channel in wanted if channel not in files]
            if missing:
                raise SensorError(f"hwmon chip {self.options.chip!r} has no {', '.join(missing)} (it has: "
                                  f"{', '.join(sorted(files, key=_natural)) or 'none'})")
        channels = sorted(wanted or files, key=_natural)

        values: dict[str, float] = {}
        units: dict[str, str] = {}
        info: dict[str, str] = {"path": os.path.realpath(chip)}
        conditions: list[str] = []
        labels: dict[str, str] = {}
        failed: list[str] = []
        for channel in channels:
            attrs = files[channel]
            scale, unit = SCALES[channel.rstrip("0123456789")]
            source = attrs.get("input") or (attrs.get("average") if channel.startswith("power") else None)
            if "label" in attrs:
                labels[channel] = self._text(attrs["label"])
                info[f"{channel}_label"] = labels[channel]
            if source is not None:
                try:
                    values[channel] = int(_read(source)) / scale
                    units[channel] = unit
                except (OSError, ValueError) as exc:
                    # a driver answers EIO/ENODATA for a channel it cannot measure now (an idle header)
                    if wanted:
                        raise SensorError(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}") from None
                    failed.append(channel)
            for limit in _LIMITS:
                if limit in attrs:
                    try:
                        info[f"{channel}_{limit}"] = f"{int(_read(attrs[limit])) / scale:g} {unit}".strip()
                    except (OSError, ValueError):
                        pass
            for attr, path in sorted(attrs.items()):
                if attr == "fault" or attr.endswith("alarm"):
                    try:
                        active = int(_read(path)) != 0
                    except (OSError, ValueError):
                        continue
                    if active:
                        conditions.append(f"{channel}_{attr}")
        if failed and not values and not conditions:
            raise SensorError(f"hwmon chip {self.options.chip!r}: no channel could be read ({', '.join(failed)})")
        if failed:
            info["unreadable"] = ", ".join(failed)
        level = Level.worst(*(self._level(condition) for condition in conditions))
        return Reading(level=level, summary=self._summary(conditions, values, units, labels), values=values,
                       units=units, conditions=tuple(conditions), info=info)

    @staticmethod
    def _text(path: Path) -> str:
        try:
            return _read(path)
        except OSError:
            return ""

    @staticmethod
    def _level(condition: str) -> Level:
        attr = condition.split("_", 1)[1]
        return Level.CRITICAL if attr in _CRITICAL_ALARMS else Level.WARNING

    def _summary(self, conditions: list[str], values: dict[str, float], units: dict[str, str],
                 labels: dict[str, str]) -> str:
        def named(channel: str) -> str:
            return f"{channel} ({labels[channel]})" if labels.get(channel) else channel

        if conditions:
            parts = []
            for condition in conditions:
                channel, attr = condition.split("_", 1)
                reading = f" at {values[channel]:g} {units[channel]}".rstrip() if channel in values else ""
                parts.append(f"{named(channel)} {_ALARM_WORDS.get(attr, attr.replace('_', ' '))}{reading}")
            return ", ".join(parts)
        if not values:
            return f"{self.options.chip}: no readings"
        shown = [f"{labels.get(channel) or channel} {value:g} {units[channel]}".rstrip()
                 for channel, value in list(values.items())[:_SHOWN]]
        more = f" (+{len(values) - _SHOWN} more)" if len(values) > _SHOWN else ""
        return f"{self.options.chip}: " + ", ".join(shown) + more
