"""The stall fence: lets go of the relays when the heartbeat loop stops ticking while ACTIVE.

The hardware watchdog and the GPIO watchdog pulse (`firmware.drivers.watchdog`)
stop being fed when the loop stalls; this is the software side of the same
guard, for the relays that must open before the peer's deadtime runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class StallFence:
    """Releases the relays from a plain thread when the heartbeat loop stops ticking while ACTIVE.

    A stalled loop cannot fence itself before the peer's deadtime runs out: the
    peer declares this node dead about a deadtime after its last heartbeat and
    then closes its own relays. This thread never feeds a watchdog or sends a
    heartbeat; its only power is to let go. The loop demotes properly when it
    resumes (the decision core sees the stall).
    """

    def __init__(self, limit: float, release: Callable[[], None]) -> None:
        self.limit = limit
        self.release = release
        self.fired = 0
        self._last_tick = time.monotonic()
        self._holding = False
        self._fenced = False
        self._stop = threading.Event()
        self._armed = threading.Event()  # set by a tick that starts holding: wakes the idle thread
        self._thread = threading.Thread(target=self._run, name="stall-fence", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def tick(self, holding: bool) -> None:
        """Called by every heartbeat tick: the loop is alive, and whether it holds the trunks."""
        self._last_tick = time.monotonic()
        wake = holding and (not self._holding or self._fenced)
        self._holding = holding
        self._fenced = False
        if wake:
            self._armed.set()

    def _run(self) -> None:
        # Sleeps until the moment the loop would count as stalled (the last tick plus the limit)
        # rather than polling: a few wake-ups a second while holding, about none while not.
        while not self._stop.is_set():
            if not self._holding or self._fenced:
                self._armed.wait(1.0)
                self._armed.clear()
                continue
            remaining = self._last_tick + self.limit - time.monotonic()
            if remaining > 0:
                self._stop.wait(remaining)
                continue
            self._fenced = True
            self.fired += 1
            log.error("heartbeat loop stalled for more than %.0f ms while ACTIVE: releasing the relays",
                      self.limit * 1000)
            try:
                self.release()
            except Exception:  # a last resort must not die
                log.exception("stall fence: releasing failed")

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._armed.set()
