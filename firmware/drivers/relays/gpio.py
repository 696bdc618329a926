"""Relays and contact-feedback inputs on GPIO lines, through gpiozero.

The board profile names the pin factory (`pin_factory = "lgpio"`, … or "mock" in
the simulator); it comes from the process's registry, `firmware.gpio`.
Outputs start de-energized; on release they are switched off and the lines
handed back, so the external pull resistors (see hardware_docs/) hold the
safe level even if the daemon is killed.
"""

from __future__ import annotations

import time
from typing import Any

from firmware import gpio
from firmware.drivers.relays.base import RelayError, check_channel


class GpioRelays:
    """Relay channels on GPIO pins (channel n = pins[n-1])."""

    def __init__(self, pins: list[int], active_high: bool = True, pin_factory: str = "lgpio") -> None:
        if not pins or not all(isinstance(p, int) and p >= 0 for p in pins):
            raise ValueError("pins must be a non-empty list of GPIO numbers")
        self.pins = list(pins)
        self.active_high = active_high
        self.factory_name = pin_factory
        self.channels = len(pins)
        self.name = f"GPIO relays on pins {', '.join(map(str, pins))}"
        self._devices: list[Any] = []
        self.timeline: list[tuple[float, int, bool]] = []  # (monotonic, channel, energized)

    def open(self) -> None:
        """Claim the pins, all channels de-energized."""
        from gpiozero import DigitalOutputDevice

        try:
            factory = gpio.pin_factory(self.factory_name)
            self._devices = [DigitalOutputDevice(pin, active_high=self.active_high, initial_value=False,
                                                 pin_factory=factory) for pin in self.pins]
        except Exception as exc:
            self.release()
            raise RelayError(f"{self.name}: {exc}") from None
        now = time.monotonic()
        self.timeline = [(now, channel, False) for channel in range(1, self.channels + 1)]

    def set(self, channel: int, energized: bool) -> None:
        """Drive one channel."""
        check_channel(channel, self.channels)
        if not self._devices:
            raise RelayError(f"{self.name}: not open")
        device = self._devices[channel - 1]
        device.value = energized
        self.timeline.append((time.monotonic(), channel, energized))

    def get(self, channel: int) -> bool | None:
        """The channel's commanded state."""
        check_channel(channel, self.channels)
        return bool(self._devices[channel - 1].value) if self._devices else None

    def release(self) -> None:
        """De-energize and hand the lines back (they float to the pull resistors' level)."""
        for channel, device in enumerate(self._devices, start=1):
            try:
                device.off()
                self.timeline.append((time.monotonic(), channel, False))
                device.close()
            except Exception:  # releasing must never raise
                pass
        self._devices = []

    @property
    def connected(self) -> bool:
        """GPIO lines do not come and go."""
        return bool(self._devices)


class GpioInputs:
    """Contact-feedback inputs on GPIO pins (input n = pins[n-1])."""

    def __init__(self, pins: list[int], active_high: bool = True, pull_up: bool | None = None,
                 pin_factory: str = "lgpio") -> None:
        if not pins or not all(isinstance(p, int) and p >= 0 for p in pins):
            raise ValueError("pins must be a non-empty list of GPIO numbers")
        self.pins = list(pins)
        self.active_high = active_high
        self.pull_up = pull_up
        self.factory_name = pin_factory
        self.channels = len(pins)
        self.name = f"GPIO inputs on pins {', '.join(map(str, pins))}"
        self._devices: list[Any] = []

    def open(self) -> None:
        """Claim the input pins."""
        from gpiozero import DigitalInputDevice

        try:
            factory = gpio.pin_factory(self.factory_name)
            self._devices = [DigitalInputDevice(pin, pull_up=self.pull_up, active_state=self.active_high
                                                if self.pull_up is None else None, pin_factory=factory)
                             for pin in self.pins]
        except Exception as exc:
            self.release()
            raise RelayError(f"{self.name}: {exc}") from None

    def read(self, channel: int) -> bool:
        """Whether the contact on `channel` reports closed (energized relay)."""
        check_channel(channel, self.channels)
        if not self._devices:
            raise RelayError(f"{self.name}: not open")
        return bool(self._devices[channel - 1].value)

    def release(self) -> None:
        """Hand the pins back."""
        for device in self._devices:
            try:
                device.close()
            except Exception:
                pass
        self._devices = []
