"""Hardware drivers, laid out by bus, and loading the drivers a board profile names by import path.

A driver's home depends on its bus, not on who uses it today:

- ``relays/``: trunk relays and contact-feedback inputs on GPIO (``gpio``), on
  a PCF8574 I2C expander (``pcf8574``) and on a CH340 USB serial board (``usb``);
- ``i2c``: what the I2C drivers share (the SMBus opener, PCF8574 addresses);
- ``watchdog``: the ``/dev/watchdog`` device and the GPIO watchdog pulse.

The gpiozero pin factories they use come from the one registry in
`firmware.gpio`. This module itself loads the driver a board profile names
(``package.module:Class``), turning every failure into a ConfigError naming
the profile key.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from firmware.errors import ConfigError


def import_object(spec: str, what: str = "") -> Any:
    """The object an import path ``"module:Name"`` names; ValueError saying why it cannot be had.

    ``what`` names the kind of object in that message (``"class"``: "'m' has no class 'X'").
    """
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ValueError(f"{module_name!r} has no {what + ' ' if what else ''}{attribute!r}")
    return found


def resolve_driver(spec: str, key: str, profile: Path) -> Any:
    """Import `module:Name` and return it (without calling it); ConfigError naming the profile key."""
    try:
        return import_object(spec)
    except ValueError as exc:
        raise ConfigError(profile, key, str(exc)) from None


def load_driver(spec: str, key: str, profile: Path, *args: Any, **kwargs: Any) -> Any:
    """Import `module:Name` and call it with the given arguments.

    Any failure is a ConfigError naming the board profile file and `key`, never
    a silent fallback to another driver.
    """
    factory = resolve_driver(spec, key, profile)
    try:
        return factory(*args, **kwargs)
    except Exception as exc:  # the driver's own reason, attributed to the profile key
        raise ConfigError(profile, key, f"{spec} failed to start: {exc}") from None


def board_drivers(board: Any) -> list[tuple[str, str]]:
    """Every driver a board profile names, as ``(profile key, "module:Class")``."""
    found = [("network", board.network), ("power.driver", board.power.driver)]
    for section in ("relays", "feedback"):
        found += [(f"{section}.{name}.driver", table["driver"]) for name, table in getattr(board, section).items()]
    if board.sensor_host is not None:
        found.append(("sensor_host.driver", board.sensor_host.driver))
    found += [(f"extensions[{index}]", spec) for index, spec in enumerate(board.extensions)]
    if board.panel is not None:
        found.append(("panel.display.driver", board.panel.display.driver))
        found += [(f"panel.keys.{name}.driver", table.driver) for name, table in board.panel.keys.items()]
        if board.panel.indicators is not None:
            found.append(("panel.indicators.driver", board.panel.indicators.driver))
    return found
