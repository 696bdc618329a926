"""The decision core's alarm clock: call back once at the time the last decision asked to be woken."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class WakeTimer:
    """One pending wake-up on the event loop; setting a new time replaces the old one."""

    def __init__(self, on_wake: Callable[[], None]) -> None:
        self.on_wake = on_wake
        self.at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def set(self, loop: asyncio.AbstractEventLoop | None, at: float | None) -> None:
        """Wake at loop time `at` (None: not at all); a repeat of the pending time changes nothing."""
        if at == self.at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at, self._handle = at, None
        if at is not None and loop is not None:
            self._handle = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.at = self._handle = None
        self.on_wake()
