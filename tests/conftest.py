"""Shared pytest setup: the tests folder importable for its helper modules, and fixtures for simulated
hardware and racks."""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins import Factory

from firmware import gpio
from sim.i2c import SimI2cBuses
from sim.rack import NODES, TwoNodeRack

sys.path.insert(0, str(Path(__file__).parent))

from helpers import SETTLE_TIMEOUT_S, new_rack  # noqa: E402  (the tests folder is importable now)


@pytest.fixture
def pin_factories() -> Iterator[Callable[[str], Factory]]:
    """The process's pin-factory look-up (`firmware.gpio.pin_factory`), with no factory before the test and none after.

    Use it in any test that builds GPIO devices from a factory *name* (``pin_factory="mock"``), so the
    mock pins one test claimed or drove are not there in the next.
    """
    gpio.reset()
    yield gpio.pin_factory
    gpio.reset()


@pytest.fixture
def i2c() -> SimI2cBuses:
    """Simulated I2C buses of the test's own: attach device models, hand ``i2c.open`` to drivers as their SMBus."""
    return SimI2cBuses()


@pytest.fixture
def racks(tmp_path: Path) -> Iterator[Callable[..., TwoNodeRack]]:
    """Start simulated two-node racks; every one is stopped when the test ends, however it ends.

    ``racks(**options)`` takes :class:`~sim.rack.TwoNodeRack`'s options plus ``base`` (default: the
    test's tmp_path), ``nodes`` (the nodes to start, default both) and ``settle`` (default True with
    both nodes: wait for alpha ACTIVE and bravo STANDBY).
    """
    started: list[TwoNodeRack] = []

    def start(base: Path | None = None, nodes: tuple[str, ...] = NODES, settle: bool | None = None,
              **options: Any) -> TwoNodeRack:
        rack = new_rack(base or tmp_path, **options)
        started.append(rack)
        rack.start(nodes)
        if settle if settle is not None else nodes == NODES:
            rack.wait_settled(timeout=SETTLE_TIMEOUT_S)
        return rack

    yield start
    for rack in reversed(started):
        rack.stop()


@pytest.fixture
def rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    """A settled default rack: alpha (primary) ACTIVE, bravo (secondary) STANDBY."""
    return racks()
