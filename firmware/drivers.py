"""Loading the drivers a board profile names by import path (`package.module:Class`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from firmware.config import ConfigError


def load_driver(spec: str, key: str, profile: Path, *args: Any, **kwargs: Any) -> Any:
    """Import `module:Name` and call it with the given arguments.

    Any failure is a ConfigError naming the board profile file and `key`, never
    a silent fallback to another driver.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(profile, key, f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigError(profile, key, f"{module_name!r} has no {attribute!r}")
    try:
        return factory(*args, **kwargs)
    except Exception as exc:  # the driver's own reason, attributed to the profile key
        raise ConfigError(profile, key, f"{spec} failed to start: {exc}") from None
