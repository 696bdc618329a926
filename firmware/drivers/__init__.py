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
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import ConfigError

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
SPEC_PATTERN = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")
"""An import path "package.module:Name": ASCII identifiers, never relative (".x:Y")."""


def import_object(spec: str, what: str = "") -> Any:
    """The object an import path ``"module:Name"`` names; ValueError saying why it cannot be had.

    ``what`` names the kind of object in that message (``"class"``: "'m' has no class 'X'").
    Refused without importing anything: a malformed or relative path, a module of Python's
    standard library (``os:system`` is no driver) and private names.
    """
    if not isinstance(spec, str) or not SPEC_PATTERN.fullmatch(spec):
        raise ValueError(f"{spec!r} is not an import path \"package.module:Name\" (no relative imports)")
    module_name, _, attribute = spec.partition(":")
    if module_name.partition(".")[0] in sys.stdlib_module_names:
        raise ValueError(f"{module_name!r} is a module of Python's standard library, not a driver")
    if attribute.startswith("_"):
        raise ValueError(f"{attribute!r} is a private name of {module_name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed: still the profile's problem, never a traceback
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ValueError(f"{module_name!r} has no {what + ' ' if what else ''}{attribute!r}")
    return found


@dataclass(frozen=True)
class Interface:
    """What a profile key's driver must be: a class with ``methods`` (or a subclass of ``base()``), or a function.

    With ``factories``, a function whose return annotation is a ``base()`` class also qualifies
    (``firmware.core.sensors.base:host_context`` makes a sensor host from profile keys).
    """

    what: str
    methods: tuple[str, ...] = ()
    base: Callable[[], type] | None = None
    function: bool = False
    factories: bool = False

    def check(self, found: Any, spec: str) -> None:
        """ValueError unless ``found`` is such a driver."""
        if self.function:
            if not inspect.isfunction(found):
                raise ValueError(f"{spec} is not a function, so it cannot be {self.what}")
            return
        if self.factories and inspect.isfunction(found) and self._makes_base(found):
            return
        if not inspect.isclass(found):
            raise ValueError(f"{spec} is not a class, so it cannot be {self.what}")
        if getattr(found, "_is_protocol", False):
            raise ValueError(f"{spec} is an interface, not a driver that implements it")
        base = self.base() if self.base is not None else None
        if base is not None and not issubclass(found, base):
            raise ValueError(f"{spec} is not {self.what} (a {base.__module__}.{base.__qualname__} subclass)")
        missing = [name for name in self.methods if not callable(getattr(found, name, None))]
        if missing:
            raise ValueError(f"{spec} is not {self.what}: it has no {', '.join(missing)} method"
                             f"{'s' if len(missing) > 1 else ''}")
        if inspect.isabstract(found):
            raise ValueError(f"{spec} is abstract: name a class that implements {self.what}")

    def _makes_base(self, function: Any) -> bool:
        """Whether ``function`` is annotated to return a ``base()`` instance."""
        base = self.base() if self.base is not None else None
        returns = inspect.signature(function).return_annotation
        if base is None or returns is inspect.Signature.empty:
            return False
        if isinstance(returns, str):  # postponed annotations: the class's name as written
            return returns in (base.__name__, base.__qualname__, f"{base.__module__}.{base.__qualname__}")
        return inspect.isclass(returns) and issubclass(returns, base)


def _relay_methods() -> tuple[str, ...]:
    from firmware.drivers.relays.base import RelayDriver

    return tuple(name for name, member in vars(RelayDriver).items() if not name.startswith("_") and callable(member))


def _network_methods() -> tuple[str, ...]:
    from firmware.core.actions.network import NetworkBackend

    return tuple(name for name, member in vars(NetworkBackend).items()
                 if not name.startswith("_") and callable(member))


def _panel(name: str) -> Callable[[], type]:
    def base() -> type:
        from firmware.panel import base as panel_base

        return getattr(panel_base, name)
    return base


def _sensor_context() -> type:
    from firmware.core.sensors.base import SensorContext

    return SensorContext


def interface_for(key: str) -> Interface | None:
    """The interface the driver at a board-profile key must implement (None: a key of no known kind).

    Keys are the profile's (``relays.trunk.driver``) or the loaders' (``relays.trunk``).
    """
    key = key.removesuffix(".driver")
    if re.fullmatch(r"relays\.[^.]+", key):
        return Interface("a relay bank", methods=_relay_methods())
    if re.fullmatch(r"feedback\.[^.]+", key):
        return Interface("a bank of feedback inputs", methods=("open", "read", "release"))
    if key == "network":
        return Interface("a network backend", methods=_network_methods())
    if key == "power":
        return Interface("a power backend", methods=("request",))
    if key == "slots":
        return Interface("an update's A/B slots", methods=("check", "install", "abort"))
    if key == "sensor_host":
        return Interface("a sensor host", base=_sensor_context, factories=True)
    if key == "panel.display":
        return Interface("a panel display", base=_panel("Display"))
    if re.fullmatch(r"panel\.keys\.[^.]+", key):
        return Interface("a panel key source", base=_panel("KeySource"))
    if key == "panel.indicators":
        return Interface("a panel's indicators", base=_panel("Indicators"))
    if re.fullmatch(r"extensions\[\d+\]", key):
        return Interface("a node extension", function=True)
    return None


def resolve_driver(spec: str, key: str, profile: Path) -> Any:
    """Import `module:Name` and return it (without calling it); ConfigError naming the profile key.

    What it names must implement the interface of the key (`interface_for`): a relay bank's
    driver is a class with the relay methods, an extension is a function, and so on.
    """
    try:
        found = import_object(spec)
        interface = interface_for(key)
        if interface is not None:
            interface.check(found, spec)
        elif not (inspect.isclass(found) or inspect.isfunction(found)):
            raise ValueError(f"{spec} is neither a class nor a function")
    except ValueError as exc:
        raise ConfigError(profile, key, str(exc)) from None
    return found


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
    return [(key, spec) for key, spec, _, _ in _board_driver_calls(board)]


def _board_driver_calls(board: Any) -> list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]:
    """Every driver a board profile names with how it is called: ``(key, spec, args, kwargs)``.

    Positional arguments the loaders add are stood in for by ``None`` (an extension's node).
    """
    found: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
        ("network", board.network, (), {}), ("power.driver", board.power.driver, (), board.power.kwargs),
        ("slots.driver", board.slots.driver, (None,), board.slots.kwargs)]
    for section in ("relays", "feedback"):
        for name, table in getattr(board, section).items():
            found.append((f"{section}.{name}.driver", table["driver"], (),
                          {k: v for k, v in table.items() if k != "driver"}))
    if board.sensor_host is not None:
        found.append(("sensor_host.driver", board.sensor_host.driver, (), board.sensor_host.kwargs))
    found += [(f"extensions[{index}]", spec, (None,), {}) for index, spec in enumerate(board.extensions)]
    if board.panel is not None:
        found.append(("panel.display.driver", board.panel.display.driver, (), board.panel.display.kwargs))
        found += [(f"panel.keys.{name}.driver", table.driver, (), table.kwargs) for name, table in board.panel.keys.items()]
        if board.panel.indicators is not None:
            found.append(("panel.indicators.driver", board.panel.indicators.driver, (), board.panel.indicators.kwargs))
    return found


def check_board_drivers(board: Any, profile: Path, banks: dict[tuple[str, str], Any] | None = None) -> list[ConfigError]:
    """Every problem with the drivers a board profile names, without opening any hardware.

    Each driver must import and implement its key's interface, and take the parameters the
    profile gives it; relay and feedback banks, whose constructors only check their parameters
    (drivers/relays/base.py), are also built, so a bad parameter value shows here. The banks
    built go into ``banks`` (by ``("relays" | "feedback", name)``), never opened.
    """
    problems = []
    for key, spec, args, kwargs in _board_driver_calls(board):
        try:
            factory = resolve_driver(spec, key, profile)
        except ConfigError as exc:
            problems.append(exc)
            continue
        try:
            inspect.signature(factory).bind(*args, **kwargs)
        except TypeError as exc:
            problems.append(ConfigError(profile, key.removesuffix(".driver"),
                                        f"{spec} does not take these parameters: {exc}"))
            continue
        except ValueError:  # no signature to read (a class built in C): the call itself will say
            pass
        if key.startswith(("relays.", "feedback.")):
            try:
                bank = factory(**kwargs)
                if banks is not None:
                    banks[(key.split(".")[0], key.split(".")[1])] = bank
            except Exception as exc:
                problems.append(ConfigError(profile, key.removesuffix(".driver"), f"{spec}: {exc}"))
    return problems
