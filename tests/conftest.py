"""Shared pytest setup: the tests folder importable for its helper modules, and fixtures for simulated hardware."""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero.pins import Factory

from firmware import gpio
from sim.i2c import SimI2cBuses

sys.path.insert(0, str(Path(__file__).parent))


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
