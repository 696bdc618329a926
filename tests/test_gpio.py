"""The pin-factory registry (firmware.gpio): one factory per name, created on first use, reset for tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from firmware import gpio


def test_one_factory_per_name(pin_factories: Callable[[str], Factory]) -> None:
    mock = pin_factories("mock")
    assert isinstance(mock, MockFactory)
    assert pin_factories("mock") is mock
    assert gpio.resolve_factory("mock") is mock
    own = MockFactory()
    assert gpio.resolve_factory(own) is own  # a factory object is used as it is


def test_reset_closes_and_forgets(pin_factories: Callable[[str], Factory]) -> None:
    mock = pin_factories("mock")
    DigitalOutputDevice(17, pin_factory=mock)  # left open, as a test that failed half-way would
    assert mock.pins
    gpio.reset()
    assert not mock.pins  # closed: its pins were handed back
    fresh = pin_factories("mock")
    assert fresh is not mock
    DigitalOutputDevice(17, pin_factory=fresh).close()  # the pin is free on the new factory


def test_unknown_and_bad_names(pin_factories: Callable[[str], Factory]) -> None:
    with pytest.raises(ValueError, match=r"unknown gpiozero pin factory 'nosuch' \(known: .*mock"):
        pin_factories("nosuch")
    with pytest.raises(ValueError, match="pin_factory must name a gpiozero pin factory"):
        gpio.resolve_factory("")
