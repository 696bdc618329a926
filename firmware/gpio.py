"""The process's gpiozero pin factories: one per name, shared by every GPIO driver.

A board profile names the pin factory of each GPIO device by gpiozero's
plugin name (``pin_factory = "lgpio"`` on a Raspberry Pi, ``"mock"`` in the
simulator; gpiozero lists them as ``gpiozero_pin_factories`` entry points).
Relays, feedback inputs, the watchdog pulse, panel keys, LEDs and display
control lines all look their factory up here, so the devices of one process
that name the same factory share it: one view of which pins are taken, and
on ``"mock"`` one set of simulated pins.

A factory is created on first use and lives as long as the process. Tests
that look factories up by name start and end with `reset` (the
``pin_factories`` fixture in tests/conftest.py), so no pin state leaks from
one test into the next.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from gpiozero.pins import Factory

__all__ = ["pin_factory", "reset", "resolve_factory"]

_lock = threading.Lock()
_factories: dict[str, Factory] = {}


def pin_factory(name: str) -> Factory:
    """The process's pin factory called ``name``, created on first use.

    ValueError naming the factory if gpiozero has no such plugin, or if it
    cannot start here (no GPIO chip, library missing).
    """
    with _lock:
        if name not in _factories:
            found = {ep.name: ep for ep in entry_points(group="gpiozero_pin_factories")}
            if name not in found:
                raise ValueError(f"unknown gpiozero pin factory {name!r} (known: {', '.join(sorted(found))})")
            try:
                _factories[name] = found[name].load()()
            except Exception as exc:  # e.g. BadPinFactory on a board without GPIO
                raise ValueError(f"gpiozero pin factory {name!r} cannot start here: {exc}") from None
        return _factories[name]


def resolve_factory(factory: str | Factory) -> Factory:
    """The factory a board profile's ``pin_factory`` names, or a factory object passed as it is (tests)."""
    if isinstance(factory, Factory):
        return factory
    if not isinstance(factory, str) or not factory:
        raise ValueError(f"pin_factory must name a gpiozero pin factory (\"lgpio\", \"mock\", ...), not {factory!r}")
    return pin_factory(factory)  # ValueError naming the factory if unknown or unable to start


def reset() -> None:
    """Close every factory made so far and forget it; the next look-up makes a new one (for tests).

    Closing hands back every pin the factory still holds, so devices left
    open by a test stop working instead of haunting the next one.
    """
    with _lock:
        factories = list(_factories.values())
        _factories.clear()
    for factory in factories:
        try:
            factory.close()
        except Exception:  # a factory that fails to close is forgotten all the same
            pass
