"""Sensor families: one module per family, each a `Sensor` subclass (see base.py).

A ``[[sensors]]`` entry's ``type`` is a family name from `FAMILIES` or, for a
family shipped outside Tandem, an import path ``"package.module:Class"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware.drivers import import_object

if TYPE_CHECKING:
    from firmware.core.sensors.base import Sensor

FAMILIES: dict[str, str] = {
    "pmbus": "firmware.core.sensors.pmbus:PmbusSensor",
    "lm75": "firmware.core.sensors.lm75:Lm75Sensor",
    "hwmon": "firmware.core.sensors.hwmon:HwmonSensor",
    "temperature": "firmware.core.sensors.psutil_sensors:TemperatureSensor",
    "fan": "firmware.core.sensors.psutil_sensors:FanSensor",
    "chassis": "firmware.core.sensors.dmi:ChassisSensor",
    "smart": "firmware.core.sensors.smart:SmartSensor",
    "mdraid": "firmware.core.sensors.mdraid:MdRaidSensor",
    "load": "firmware.core.sensors.system:LoadSensor",
    "memory": "firmware.core.sensors.system:MemorySensor",
    "swap": "firmware.core.sensors.system:SwapSensor",
    "disk_usage": "firmware.core.sensors.system:DiskUsageSensor",
    "clock_sync": "firmware.core.sensors.system:ClockSyncSensor",
    "process": "firmware.core.sensors.system:ProcessSensor",
    "nagios": "firmware.core.sensors.nagios:NagiosSensor",
    "asterisk": "firmware.core.sensors.ami:AsteriskSensor",
    "sip_options": "firmware.core.sensors.sip:SipOptionsSensor",
    "carrier": "firmware.core.sensors.network:CarrierSensor",
    "reachability": "firmware.core.sensors.network:ReachabilitySensor",
    "device": "firmware.core.sensors.device:DeviceSensor",
}


def family_class(type_name: str) -> type[Sensor]:
    """The Sensor subclass for a ``type``; ValueError naming the known families if there is none."""
    from firmware.core.sensors.base import Sensor

    spec = FAMILIES.get(type_name, type_name if ":" in type_name else None)
    if spec is None:
        raise ValueError(f"unknown sensor type {type_name!r} (known: {', '.join(sorted(FAMILIES))}, "
                         "or an import path \"module:Class\")")
    try:
        cls = import_object(spec)
    except ValueError as exc:
        raise ValueError(f"sensor type {type_name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Sensor)):
        raise ValueError(f"sensor type {type_name!r}: {spec} is not a Sensor class")
    return cls
