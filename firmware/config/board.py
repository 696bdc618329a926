"""The board profile (`board_profiles/<vendor-model>.toml`): which driver runs each piece of hardware."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from firmware.config.base import IMPORT_PATH_PATTERN, STRICT, ImportPath, NonEmptyText, Strict, Text
from firmware.config.node import SensorConfig


class PulseConfig(Strict):
    """A GPIO toggled while the node is ACTIVE and healthy, for external failover switches."""

    pin: Annotated[int, Field(ge=0, le=65_535)]
    pin_factory: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "lgpio"
    active_high: bool = True
    interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


DriverSpec = ImportPath
"""A driver's import path, "package.module:Class": ASCII identifiers, never a relative import (".x:Y")."""
BankName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class DriverTable(BaseModel):
    """A driver by import path plus its keyword arguments (`{driver = "module:Class", …}`)."""

    model_config = ConfigDict(STRICT, extra="allow")  # the extra keys are the driver's own parameters

    driver: DriverSpec

    @property
    def kwargs(self) -> dict[str, Any]:
        """The driver's keyword arguments."""
        return dict(self.model_extra or {})


class PanelProfile(Strict):
    """The front panel hardware: one display, key sources by name, optional LEDs and buzzer."""

    display: DriverTable
    keys: dict[BankName, DriverTable] = {}
    indicators: DriverTable | None = None


class BoardProfile(Strict):
    """A board profile (`board_profiles/<vendor-model>.toml`): names the hardware drivers."""

    name: Annotated[NonEmptyText, Field(max_length=200)]
    description: Text = ""
    # Callables named by import path that extend a composed node (firmware/node.py), e.g. the
    # simulator's fault injection: "sim.extension:install".
    extensions: Annotated[list[DriverSpec], Field(max_length=32)] = []
    network: DriverSpec = "firmware.core.actions.netlink:NetlinkNetwork"
    # Relay banks and feedback-input banks by name: {driver = "module:Class", …driver parameters}.
    watchdog_pulse: PulseConfig | None = None
    relays: dict[BankName, dict[str, Any]] = {}
    feedback: dict[BankName, dict[str, Any]] = {}
    # Powering off / rebooting after leaving the cluster (panel Shutdown/Reboot, `tandem poweroff`).
    power: DriverTable = DriverTable(driver="firmware.core.actions.power:SystemPower")
    # The A/B slots an update installs into (firmware/update/slots.py): RAUC through the boot gate.
    slots: DriverTable = DriverTable(driver="firmware.update.slots:RaucSlots")
    # Front panel (display, keys, LEDs/buzzer); none on a headless board.
    panel: PanelProfile | None = None
    # What the sensors talk to: I2C bus opener, sysfs/procfs roots, command overrides (SensorContext).
    sensor_host: DriverTable | None = None
    # Sensors the chassis implies (its power supplies, temperature sensors); the node config's
    # [[sensors]] entries with the same name replace them.
    sensors: Annotated[list[SensorConfig], Field(max_length=256)] = []

    @field_validator("relays", "feedback")
    @classmethod
    def _drivers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for bank, params in value.items():
            driver = params.get("driver")
            if not isinstance(driver, str) or not re.fullmatch(IMPORT_PATH_PATTERN, driver):
                raise ValueError(f"{bank}: `driver` must name a class as \"package.module:Class\"")
        return value

    @field_validator("sensors")
    @classmethod
    def _sensor_names(cls, value: list[SensorConfig]) -> list[SensorConfig]:
        names = [s.name for s in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(repeated)}")
        return value
