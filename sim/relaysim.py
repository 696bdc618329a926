"""Simulated contact-feedback wiring for the relays on gpiozero's mock pins.

`ContactSense` reads the simulated relay coil lines directly from the mock pin
factory, as if each relay had an auxiliary contact wired to an input: the
contact follows the coil unless a fault is injected (`inject(channel, True)`
for a contact welded shut, `False` for one stuck open, `None` to clear). The
daemon exposes `inject` through the control socket only on simulator profiles.
"""

from __future__ import annotations

from firmware import gpio
from firmware.drivers.relays.base import RelayError, check_channel


class ContactSense:
    """Feedback inputs that mirror mock relay output pins (channel n = pins[n-1])."""

    def __init__(self, pins: list[int], active_high: bool = True, pin_factory: str = "mock") -> None:
        if not pins:
            raise ValueError("pins must name the relay output pins to mirror")
        self.pins = list(pins)
        self.active_high = active_high
        self.factory_name = pin_factory
        self.channels = len(pins)
        self.name = f"simulated contact sense on pins {', '.join(map(str, pins))}"
        self.stuck: dict[int, bool] = {}
        self._factory = None

    def open(self) -> None:
        """Attach to the mock pin factory."""
        self._factory = gpio.pin_factory(self.factory_name)

    def read(self, channel: int) -> bool:
        """The contact: stuck value if injected, else the coil's energized state."""
        check_channel(channel, self.channels)
        if channel in self.stuck:
            return self.stuck[channel]
        if self._factory is None:
            raise RelayError(f"{self.name}: not open")
        level = bool(self._factory.pin(self.pins[channel - 1]).state)
        return level == self.active_high

    def inject(self, channel: int, value: bool | None) -> None:
        """Simulate a stuck contact (True/False) or clear the fault (None)."""
        check_channel(channel, self.channels)
        if value is None:
            self.stuck.pop(channel, None)
        else:
            self.stuck[channel] = value

    def release(self) -> None:
        """Nothing to free."""
        self._factory = None
