"""Feeding the watchdogs from the heartbeat tick, and the stall fence.

:class:`Watchdogs` feeds systemd's watchdog, the hardware watchdog and the GPIO
watchdog pulse (their drivers are in `firmware.drivers.watchdog`) only from a
tick that ran on time, so they all stop being fed when the loop stalls.
:class:`StallFence` is the software side of the same guard, for the relays
that must open before the peer's deadtime runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from firmware.config import Config
from firmware.drivers.watchdog import HardwareWatchdog, WatchdogError, WatchdogPulse
from firmware.errors import ConfigError

log = logging.getLogger(__name__)


class StallFence:
    """Releases the relays from a plain thread when the heartbeat loop stops ticking while ACTIVE.

    A stalled loop cannot fence itself before the peer's deadtime runs out: the
    peer declares this node dead about a deadtime after its last heartbeat and
    then closes its own relays. This thread never feeds a watchdog or sends a
    heartbeat; its only power is to let go. The loop demotes properly when it
    resumes (the decision core sees the stall).

    ``clock`` (seconds, monotonic) is what :meth:`tick` and :meth:`check` read; a test that
    passes its own clock calls :meth:`check` itself instead of starting the thread, which
    sleeps on the real clock.
    """

    def __init__(self, limit: float, release: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.release = release
        self.clock = clock
        self.fired = 0
        self._last_tick = clock()
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
        self._last_tick = self.clock()
        wake = holding and (not self._holding or self._fenced)
        self._holding = holding
        self._fenced = False
        if wake:
            self._armed.set()

    def check(self) -> float | None:
        """One look at the loop: release the relays if it has not ticked for ``limit`` while holding.

        Returns how long until the loop would count as stalled (the next look is due then), or
        None when there is nothing to watch (not holding, or already fenced for this stall).
        """
        if not self._holding or self._fenced:
            return None
        remaining = self._last_tick + self.limit - self.clock()
        if remaining > 0:
            return remaining
        self._fenced = True
        self.fired += 1
        log.error("heartbeat loop stalled for more than %.0f ms while ACTIVE: releasing the relays",
                  self.limit * 1000)
        try:
            self.release()
        except Exception:  # a last resort must not die
            log.exception("stall fence: releasing failed")
        return None

    def _run(self) -> None:
        # Sleeps until the moment the loop would count as stalled (the last tick plus the limit)
        # rather than polling: a few wake-ups a second while holding, about none while not.
        while not self._stop.is_set():
            wait = self.check()
            if wait is None:
                self._armed.wait(1.0)
                self._armed.clear()
            else:
                self._stop.wait(wait)

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._armed.set()


class Watchdogs:
    """Every watchdog the node feeds from its heartbeat tick: systemd's, /dev/watchdog and the GPIO pulse.

    Each is fed only from a tick that ran on time (no later than the deadtime),
    so a stalled loop stops feeding all of them at once.
    """

    def __init__(self, notifier: Any, hardware: HardwareWatchdog | None, pulse: WatchdogPulse | None,
                 pulse_interval_s: float) -> None:
        self.notifier = notifier
        self.hardware = hardware
        self.pulse = pulse
        self.pulse_interval_s = pulse_interval_s
        self._last_notify = 0.0
        self._last_pulse = 0.0

    def open(self, config_path: str, board_path: str) -> list[str]:
        """Arm the hardware watchdog and claim the pulse line; returns notes to journal about the last reboot.

        A device that cannot be used is a ConfigError naming the key that chose it.
        """
        notes = []
        try:
            if self.hardware is not None:
                self.hardware.open()
                if self.hardware.rebooted_by_watchdog:
                    notes.append("the last reboot was caused by the watchdog")
        except WatchdogError as exc:
            raise ConfigError(config_path, "watchdog.device", str(exc)) from None
        try:
            if self.pulse is not None:
                self.pulse.open()
        except WatchdogError as exc:
            raise ConfigError(board_path, "watchdog_pulse", str(exc)) from None
        return notes

    def feed(self, now: float, on_time: bool, active: bool) -> None:
        """One heartbeat tick: feed every watchdog if the tick ran on time (toggle the pulse while ``active``)."""
        if not on_time:
            return
        interval = self.notifier.watchdog_interval
        if interval is not None and now - self._last_notify >= interval:
            self._last_notify = now
            self.notifier.watchdog()
        if self.hardware is not None:
            self.hardware.keepalive()
        if self.pulse is not None and now - self._last_pulse >= self.pulse_interval_s:
            self._last_pulse = now
            self.pulse.beat(active)

    def close(self) -> None:
        """Hand the pulse line back and disarm the hardware watchdog (orderly stop; idempotent)."""
        if self.pulse is not None:
            self.pulse.close()
        if self.hardware is not None:
            self.hardware.close(magic=True)

    def status(self) -> dict[str, Any]:
        """The status snapshot's ``watchdog`` and ``watchdog_pulse`` keys."""
        return {"watchdog": self.hardware.status() if self.hardware else None,
                "watchdog_pulse": self.pulse.status() if self.pulse else None}


def watchdogs_from_config(config: Config, notifier: Any) -> Watchdogs:
    """The watchdogs the node config and board profile name (not yet armed)."""
    node, pulse = config.node, config.board.watchdog_pulse
    if pulse is not None and pulse.interval_ms < node.timers.heartbeat_ms:
        raise ConfigError(config.board_path, "watchdog_pulse.interval_ms",
                          f"{pulse.interval_ms} ms is shorter than the heartbeat ({node.timers.heartbeat_ms} ms), "
                          "which feeds the pulse")
    hardware = HardwareWatchdog(node.watchdog.device, node.watchdog.timeout_s) if node.watchdog.device else None
    return Watchdogs(notifier, hardware,
                     WatchdogPulse(pulse.pin, pulse.pin_factory, pulse.active_high) if pulse else None,
                     pulse.interval_ms / 1000 if pulse else 0.0)
