"""A finger for the simulated front panel: the firmware's GPIO key drivers on gpiozero's mock pins.

The sim board profile names `SimGpioKeys` (or `SimEncoderKeys`) where a real
board names ``firmware.panel.gpio``'s classes: the same driver, claiming the
same pins from the ``"mock"`` pin factory, plus ``inject(key, action)``,
which moves the simulated pins exactly as a finger would. So every simulated
press goes through gpiozero, the driver, the panel thread and the UI.

The control socket's ``panel.press`` finds the source that has a key with
`find_source` and calls its ``inject``; the emulated Crystalfontz keypad
(``sim.cfapanel.EmulatedCfaKeys``) answers the same ``inject``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin

from firmware.panel.base import Key, KeySource
from firmware.panel.gpio import EncoderKeys, GpioError, GpioKeys

__all__ = ["Finger", "SimEncoderKeys", "SimGpioKeys", "find_source"]

ACTIONS = ("press", "release")


@runtime_checkable
class Finger(Protocol):
    """A simulated key source that can be pressed from outside (`SimGpioKeys`, the emulated CFA keypad)."""

    def inject(self, key: str, action: str) -> None:
        """Press or release ``key`` as a finger would."""


def find_source(sources: Iterable[KeySource], key: str) -> KeySource:
    """The source among ``sources`` that has ``key``; ValueError naming the keys there are."""
    sources = list(sources)
    for source in sources:
        if key in source.key_names:
            return source
    names = sorted({name for source in sources for name in source.key_names})
    raise ValueError(f"no panel key {key!r} (keys: {', '.join(names) or 'none'})")


def _checked(source: KeySource, key: str, action: str) -> Key:
    if key not in source.key_names:
        raise ValueError(f"unknown key {key!r}: the keys are {', '.join(source.key_names)}")
    if action not in ACTIONS:
        raise ValueError(f"action must be \"press\" or \"release\", not {action!r}")
    return Key(key)


def _mock_pin(source: SimGpioKeys | SimEncoderKeys, pin: int) -> MockPin:
    """The simulated pin ``pin`` of the source's factory; GpioError if the factory's pins are real."""
    factory = source.pin_factory
    if not isinstance(factory, MockFactory):
        raise GpioError(f"GPIO {pin}: inject() only moves simulated pins (pin_factory \"mock\"), "
                        f"not real ones ({type(factory).__name__})")
    if source.closed:
        raise GpioError(f"GPIO {pin}: the key source is closed")
    return factory.pin(pin)


def _press_button(source: SimGpioKeys | SimEncoderKeys, key: Key, action: str) -> None:
    pin = _mock_pin(source, source.button_pins[key])
    # With the pull-up the button shorts the line to ground: pressed is low.
    if (action == "press") == source.pull_up:
        pin.drive_low()
    else:
        pin.drive_high()


class SimGpioKeys(GpioKeys):
    """`GpioKeys` on simulated pins, with a finger (``pin_factory`` defaults to ``"mock"``)."""

    def __init__(self, pins: dict[str, int], pull_up: bool = True, hold_time: float = 1.0, bounce_ms: int = 20,
                 pin_factory: str | Factory = "mock") -> None:
        """Claim one simulated input per key, as `GpioKeys` does."""
        super().__init__(pins, pull_up, hold_time, bounce_ms, pin_factory)

    def inject(self, key: str, action: str) -> None:
        """Press or release ``key`` on the simulated pins, exactly as a finger would."""
        _press_button(self, _checked(self, key, action), action)


class SimEncoderKeys(EncoderKeys):
    """`EncoderKeys` on simulated pins, with a finger that turns the knob and presses its buttons."""

    def __init__(self, a: int, b: int, button: int | None = None, back: int | None = None, pull_up: bool = True,
                 hold_time: float = 1.0, reverse: bool = False, bounce_ms: int = 20,
                 pin_factory: str | Factory = "mock") -> None:
        """Claim the simulated encoder and button lines, as `EncoderKeys` does."""
        super().__init__(a, b, button, back, pull_up, hold_time, reverse, bounce_ms, pin_factory)

    def inject(self, key: str, action: str) -> None:
        """``enter``/``back`` press or release the buttons; ``up``/``down`` press turns one detent.

        Releasing ``up``/``down`` does nothing (a detent is already a whole tap).
        """
        target = _checked(self, key, action)
        if target in (Key.UP, Key.DOWN):
            if action == "press":
                self.inject_turn(1 if target == self.clockwise_key else -1)
            return
        _press_button(self, target, action)

    def inject_turn(self, steps: int) -> None:
        """Turn the simulated encoder ``steps`` detents: positive clockwise, negative counter-clockwise."""
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise ValueError(f"steps must be an integer, not {steps!r}")
        a, b = _mock_pin(self, self.a), _mock_pin(self, self.b)
        first, second = (a, b) if steps > 0 else (b, a)  # clockwise: A leads B
        for _ in range(abs(steps)):
            first.drive_low()
            second.drive_low()
            first.drive_high()
            second.drive_high()
