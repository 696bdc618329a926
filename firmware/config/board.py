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

from firmware.config.base import Strict
from firmware.config.node import SensorConfig


class PulseConfig(Strict):
    """A GPIO toggled while the node is ACTIVE and healthy, for external failover switches."""

    pin: Annotated[int, Field(ge=0)]
    pin_factory: str = "lgpio"
    active_high: bool = True
    interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


DriverSpec = Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]


class DriverTable(BaseModel):
    """A driver by import path plus its keyword arguments (`{driver = "module:Class", …}`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: DriverSpec

    @property
    def kwargs(self) -> dict[str, Any]:
        """The driver's keyword arguments."""
        return dict(self.model_extra or {})


class PanelProfile(Strict):
    """The front panel hardware: one display, key sources by name, optional LEDs and buzzer."""

    display: DriverTable
    keys: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], DriverTable] = {}
    indicators: DriverTable | None = None


class BoardProfile(Strict):
    """A board profile (`board_profiles/<vendor-model>.toml`): names the hardware drivers."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    # Callables named by import path that extend a composed node (firmware/node.py), e.g. the
    # simulator's fault injection: "sim.extension:install".
    extensions: list[Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]] = []
    network: Annotated[str, Field(pattern=r"^[\w.]+:\w+$")] = "firmware.core.actions.netlink:NetlinkNetwork"
    # Relay banks and feedback-input banks by name: {driver = "module:Class", …driver parameters}.
    watchdog_pulse: PulseConfig | None = None
    relays: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], dict[str, Any]] = {}
    feedback: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], dict[str, Any]] = {}
    # Powering off / rebooting after leaving the cluster (panel Shutdown/Reboot, `tandem poweroff`).
    power: DriverTable = DriverTable(driver="firmware.core.actions.power:SystemPower")
    # Front panel (display, keys, LEDs/buzzer); none on a headless board.
    panel: PanelProfile | None = None
    # What the sensors talk to: I2C bus opener, sysfs/procfs roots, command overrides (SensorContext).
    sensor_host: DriverTable | None = None
    # Sensors the chassis implies (its power supplies, temperature sensors); the node config's
    # [[sensors]] entries with the same name replace them.
    sensors: list[SensorConfig] = []

    @field_validator("relays", "feedback")
    @classmethod
    def _drivers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for bank, params in value.items():
            driver = params.get("driver")
            if not isinstance(driver, str) or not re.fullmatch(r"[\w.]+:\w+", driver):
                raise ValueError(f"{bank}: `driver` must name a class as \"module:Class\"")
        return value
