"""The interface every relay driver implements, and what the drivers share.

A relay driver switches the T1/PRI trunk relays of one board. Channels are
numbered 1..channels. A driver is built from the board profile's parameters
(``Driver(**params)``), which it validates without touching the hardware;
``open()`` reaches the hardware, ``set()`` drives one channel, and
``release()`` de-energizes everything and frees the hardware without ever
raising. Hardware failures are ``RelayError`` with a one-line reason that
names the port, bus or address; bad parameters and bad channel numbers are
``ValueError``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from firmware.errors import HardwareError

__all__ = ["CommandedStates", "RelayDriver", "RelayError", "check_channel"]


class RelayError(HardwareError):
    """The relay hardware could not be reached or driven; the message is one line for the journal."""


@runtime_checkable
class RelayDriver(Protocol):
    """One relay board. Constructed as ``Driver(**params)`` from the board profile.

    The constructor validates the parameters (ValueError with a clear message
    for a bad one) and must not touch the hardware.
    """

    name: str  # e.g. "usb relay on /dev/ttyUSB0"
    channels: int  # channels are numbered 1..channels

    def open(self) -> None:
        """Open the hardware; raise RelayError with a one-line reason naming the port/bus/address."""

    def set(self, channel: int, energized: bool) -> None:
        """Drive one channel; raise RelayError on failure (ValueError for a bad channel)."""

    def get(self, channel: int) -> bool | None:
        """The last commanded state of a channel (None if it was never set)."""

    def release(self) -> None:
        """De-energize every channel if possible, then free the hardware; never raises."""

    @property
    def connected(self) -> bool:
        """Whether the hardware is reachable right now."""


def check_channel(channel: int, channels: int) -> None:
    """Raise ValueError unless ``channel`` is an int in 1..channels (bool is not a channel)."""
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ValueError(f"relay channel must be an integer, not {channel!r}")
    if not 1 <= channel <= channels:
        raise ValueError(f"relay channel {channel} out of range 1..{channels}")


class CommandedStates:
    """For drivers that cannot read their relays back: ``get`` answers from the states last written.

    The driver keeps ``_states`` (channel → energized) up to date with every
    write that succeeded.
    """

    channels: int
    _states: dict[int, bool]

    def get(self, channel: int) -> bool | None:
        """The last state written to ``channel`` (None before the first open). Never waits for the hardware."""
        check_channel(channel, self.channels)
        return self._states.get(channel)

    def _all_off(self) -> dict[int, bool]:
        """Every channel de-energized."""
        return dict.fromkeys(range(1, self.channels + 1), False)
