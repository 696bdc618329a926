"""Temperatures and fans as psutil reports them (types ``temperature`` and ``fan``).

psutil reads the same hwmon files as the ``hwmon`` family but only offers
temperatures (with the chip's own ``high`` and ``critical`` limits) and fan
speeds, keyed by chip name and label: ``sensors_temperatures()`` →
``{chip: [(label, current, high, critical)]}``, ``sensors_fans()`` →
``{chip: [(label, rpm)]}``. Use ``hwmon`` for voltages, currents, alarm files,
or fans without labels (psutil cannot tell unlabelled fans apart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import psutil
from pydantic import Field

from firmware.core.sensors.base import (
    Level,
    Reading,
    Sensor,
    SensorError,
    SensorOptions,
)

__all__ = ["FanOptions", "FanSensor", "TemperatureOptions", "TemperatureSensor"]


def _chip_entries(function: str, what: str, chip: str) -> list[Any]:
    """The entries psutil reports for ``chip``; SensorError naming the chips there are."""
    reader: Callable[[], dict[str, list[Any]]] | None = getattr(psutil, function, None)
    if reader is None:
        raise SensorError(f"psutil cannot read {what} on this platform")
    try:
        chips = reader()
    except OSError as exc:
        raise SensorError(f"psutil.{function}() failed: {exc.strerror or exc}") from None
    if chip not in chips:
        available = ", ".join(sorted(chips)) or f"none (psutil finds no {what} here)"
        raise SensorError(f"no such chip {chip!r} for {what}, available: {available}")
    return list(chips[chip])


def _labelled(entries: Sequence[Any], chip: str, label: str) -> Any:
    matches = [entry for entry in entries if entry.label == label]
    if not matches:
        labels = ", ".join(repr(entry.label) for entry in entries)
        raise SensorError(f"chip {chip!r} has no label {label!r} (labels: {labels})")
    if len(matches) > 1:
        raise SensorError(f"chip {chip!r} has {len(matches)} entries labelled {label!r}; use the hwmon family "
                          "with channels to pick one")
    return matches[0]


def _limit(value: float | None) -> float | None:
    # drivers without a limit report None, some 0: neither is a limit a chip runs under
    return value if value is not None and value > 0 else None


class TemperatureOptions(SensorOptions):
    """Keys of a ``temperature`` sensor."""

    chip: Annotated[str, Field(min_length=1)]
    """The chip as psutil names it (``coretemp``, ``k10temp``, ``acpitz``, ``nvme``)."""
    label: str | None = None
    """One entry's label (``Package id 0``); default the hottest entry of the chip, judged by its own limits."""


class TemperatureSensor(Sensor):
    """A chip temperature: ``temp`` in °C; CRITICAL at the chip's critical limit, WARNING at its high limit."""

    family = "temperature"
    Options = TemperatureOptions
    options: TemperatureOptions

    @staticmethod
    def _level(entry: Any) -> Level:
        critical, high = _limit(entry.critical), _limit(entry.high)
        if critical is not None and entry.current >= critical:
            return Level.CRITICAL
        if high is not None and entry.current >= high:
            return Level.WARNING
        return Level.OK

    def read(self) -> Reading:
        """Ask psutil for the chip's temperatures."""
        chip = self.options.chip
        entries = _chip_entries("sensors_temperatures", "temperatures", chip)
        if not entries:
            raise SensorError(f"chip {chip!r} reports no temperatures")
        if self.options.label is not None:
            entry = _labelled(entries, chip, self.options.label)
        else:
            order = {Level.OK: 0, Level.WARNING: 1, Level.CRITICAL: 2}
            entry = max(entries, key=lambda e: (order[self._level(e)], e.current))
        level = self._level(entry)
        name = entry.label or chip
        info = {"label": entry.label} if entry.label else {}
        limits = []
        for key in ("high", "critical"):
            value = _limit(getattr(entry, key))
            if value is not None:
                info[key] = f"{value:g} °C"
                limits.append(f"{key} {value:g}")
        summary = f"{name} {entry.current:g} °C" + (f" ({', '.join(limits)})" if limits else "")
        conditions = {Level.CRITICAL: ("critical_temperature",), Level.WARNING: ("high_temperature",)}
        return Reading(level=level, summary=summary, values={"temp": float(entry.current)}, units={"temp": "°C"},
                       conditions=conditions.get(level, ()), info=info)


class FanOptions(SensorOptions):
    """Keys of a ``fan`` sensor."""

    chip: Annotated[str, Field(min_length=1)]
    """The chip as psutil names it (``nct6775``, ``dell_smm``, ``thinkpad``)."""
    label: str | None = None
    """The fan's label; may be left out when the chip has a single fan."""
    min_rpm: Annotated[float, Field(ge=0)] = 0.0
    """Above 0: a stopped fan is CRITICAL, one below this speed WARNING. 0: any speed is OK (fanless idle)."""


class FanSensor(Sensor):
    """A fan speed: ``rpm``; CRITICAL "fan stopped" at 0 RPM when ``min_rpm`` > 0."""

    family = "fan"
    Options = FanOptions
    options: FanOptions

    def read(self) -> Reading:
        """Ask psutil for the chip's fans."""
        chip = self.options.chip
        entries = _chip_entries("sensors_fans", "fans", chip)
        if self.options.label is not None:
            entry = _labelled(entries, chip, self.options.label)
        elif len(entries) == 1:
            entry = entries[0]
        else:
            labels = ", ".join(repr(e.label) for e in entries)
            raise SensorError(f"chip {chip!r} has {len(entries)} fans; set label to one of {labels} "
                              "(or use the hwmon family with channels)")
        rpm = float(entry.current)
        name = entry.label or f"{chip} fan"
        info = {"label": entry.label} if entry.label else {}
        values, units = {"rpm": rpm}, {"rpm": "RPM"}
        if self.options.min_rpm > 0 and rpm <= 0:
            return Reading(level=Level.CRITICAL, summary=f"{name}: fan stopped", values=values, units=units,
                           conditions=("fan_stopped",), info=info)
        if rpm < self.options.min_rpm:
            return Reading(level=Level.WARNING, summary=f"{name}: {rpm:g} RPM, below {self.options.min_rpm:g}",
                           values=values, units=units, conditions=("fan_slow",), info=info)
        return Reading(summary=f"{name}: {rpm:g} RPM", values=values, units=units, info=info)
