"""What every sensor family implements, and the context it is given.

A sensor is one configured instance (``[[sensors]]`` in the node config, or
implied by the board profile). Its ``read()`` is blocking and runs on a worker
thread with a timeout (firmware/core/health.py), never on the heartbeat loop.
``read()`` returns a `Reading`; it raises `SensorError` (or anything else)
when no reading could be taken, and the scheduler turns that into UNKNOWN
with the message as the reason, then retries at the next interval.

Thresholds, hysteresis, weights and alarms are the scheduler's job, not the
family's: a family reports the device's own verdict (status bits, SMART
verdict, plugin exit code) as ``Reading.level`` and its numbers as
``Reading.values``; configured thresholds are applied on top.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from firmware.errors import TandemError

__all__ = ["Level", "Reading", "Sensor", "SensorContext", "SensorError", "SensorOptions", "run_command"]


class Level(IntEnum):
    """A sensor state, Nagios order (the plugin exit codes)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @classmethod
    def worst(cls, *levels: Level) -> Level:
        """The most severe level: CRITICAL > WARNING > UNKNOWN > OK."""
        order = {cls.OK: 0, cls.UNKNOWN: 1, cls.WARNING: 2, cls.CRITICAL: 3}
        return max(levels, key=order.__getitem__, default=cls.OK)


@dataclass(frozen=True)
class Reading:
    """What one poll of a sensor found."""

    level: Level = Level.OK
    """The device's own verdict (status bits, SMART verdict, plugin exit); thresholds may raise it."""
    summary: str = ""
    """One line for people: ``"AC lost, power not good"``, ``"47.5 °C"``, ``"[U_] sdb1 faulty"``."""
    values: dict[str, float] = field(default_factory=dict)
    """Numeric readings by metric name (``vin``, ``temp1``, ``rpm``): shown, thresholded, kept in history."""
    units: dict[str, str] = field(default_factory=dict)
    """Unit of each value (``V``, ``A``, ``W``, ``°C``, ``RPM``, ``%``, ``ms``)."""
    conditions: tuple[str, ...] = ()
    """Named conditions that are active, snake_case (``ac_lost``, ``power_not_good``, ``fan1_fault``)."""
    info: dict[str, str] = field(default_factory=dict)
    """Inventory that does not change often (manufacturer, model, serial, firmware)."""


class SensorError(TandemError):
    """No reading could be taken; the message is shown as the reason for UNKNOWN."""


class SensorOptions(BaseModel):
    """Base of each family's own options (the family-specific keys of a ``[[sensors]]`` table)."""

    model_config = ConfigDict(extra="forbid")


Runner = Callable[..., subprocess.CompletedProcess]


def run_command(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command with a timeout, capturing text output; raise SensorError when it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SensorError(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise SensorError(f"{argv[0]}: permission denied") from None
    except subprocess.TimeoutExpired:
        raise SensorError(f"{argv[0]} did not finish within {timeout:g} s") from None


@dataclass
class SensorContext:
    """What the host offers sensors; the simulator swaps these backends, never the sensor code."""

    smbus: Callable[[int | str], Any] | None = None
    """Opens an I2C bus (``smbus2.SMBus`` on hardware; in the simulator, the simulated chassis's own buses)."""
    sysfs: Path = Path("/sys")
    """Root of sysfs (hwmon, dmi/id, block): a fake tree in the simulator."""
    procfs: Path = Path("/proc")
    """Root of procfs (mdstat)."""
    commands: dict[str, str] = field(default_factory=dict)
    """Command overrides by name (``smartctl``, ``dmidecode``): a fake script in the simulator."""
    run: Runner = run_command
    """Runs a command with a timeout (see `run_command`)."""

    def command(self, name: str) -> str:
        """The executable to run for ``name`` (the override, or the name itself for $PATH)."""
        return self.commands.get(name, name)

    def close(self) -> None:
        """Release whatever the host opened for the sensors (nothing on real hardware)."""


class Sensor(ABC):
    """One sensor instance of a family.

    Subclasses set ``family`` (the ``type`` in the config) and ``Options`` (a
    `SensorOptions` subclass validating their own keys), and implement
    ``read``. The constructor must not do slow I/O; open devices lazily in
    ``read`` and reopen them after an error.
    """

    family: ClassVar[str]
    Options: ClassVar[type[SensorOptions]] = SensorOptions

    def __init__(self, name: str, options: SensorOptions, context: SensorContext) -> None:
        """Keep the instance name, validated options and host context."""
        self.name = name
        self.options = options
        self.context = context

    @abstractmethod
    def read(self) -> Reading:
        """Take one reading (blocking; runs on a worker thread with a timeout)."""

    def close(self) -> None:
        """Release whatever ``read`` opened (buses, sockets); the default has nothing to release."""


def host_context(smbus: str | None = None, sysfs: str = "/sys", procfs: str = "/proc",
                 commands: dict[str, str] | None = None) -> SensorContext:
    """A `SensorContext` from board-profile keys (``[sensor_host]``); ``smbus`` is an import path."""
    opener = None
    if smbus is not None:
        from firmware.drivers import import_object

        opener = import_object(smbus)
    return SensorContext(smbus=opener, sysfs=Path(sysfs), procfs=Path(procfs), commands=dict(commands or {}))
