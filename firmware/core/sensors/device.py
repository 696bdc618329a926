"""Device presence: a device node or stable link (a USB serial adapter, a panel, a disk) must exist.

Paired with hot-plug (firmware/core/hotplug.py), an unplugged adapter raises
its alarm the moment udev reports it, and clears it when it comes back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from firmware.core.sensors.base import Level, Reading, Sensor, SensorOptions


class DeviceOptions(SensorOptions):
    """Keys of a `device` sensor."""

    path: Path
    """The device node or link, e.g. /dev/serial/by-id/usb-FTDI_…-if00-port0 or /dev/disk/by-id/…"""
    missing: Literal["WARNING", "CRITICAL"] = "CRITICAL"
    """The level while the device is missing (WARNING for a spare)."""


class DeviceSensor(Sensor):
    """OK while ``path`` exists (following links), else the configured level."""

    family = "device"
    Options = DeviceOptions
    options: DeviceOptions

    def read(self) -> Reading:
        """Check the path."""
        path = self.options.path
        if os.path.exists(path):
            target = os.path.realpath(path)
            return Reading(summary=f"{path} present" + (f" ({target})" if target != str(path) else ""),
                           values={"present": 1.0})
        return Reading(level=Level[self.options.missing], summary=f"{path} is missing", values={"present": 0.0},
                       conditions=("missing",))
