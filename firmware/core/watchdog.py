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
from firmware.core.alarms import Alarm
from firmware.drivers.watchdog import HardwareWatchdog, WatchdogError, WatchdogPulse
from firmware.errors import ConfigError

log = logging.getLogger(__name__)

ALARM_HOLD_S = 600.0  # how long the alarm of a stall fence stays up after it fired


class StallFence:
    """Opens the relays from a plain thread when the heartbeat loop stalls while holding the trunks.

    A stalled loop cannot fence itself before the peer's deadtime runs out: the
    peer declares this node dead about a deadtime after its last heartbeat and
    then closes its own relays. This thread never feeds a watchdog or sends a
    heartbeat; its only power is to let go.

    A stall has one definition, shared with the decision core: how late the
    heartbeat tick runs against its schedule (the ``lateness`` figures). The
    loop tells :meth:`tick` when the next tick is due; the thread fires once
    that tick is ``limit`` late, the very lateness at which the core fences
    itself (``fence_stall_s``), so a shorter stall touches nothing. When the
    thread has fired, :meth:`take_fired` tells the loop once, and the core
    releases through its normal path even if the tick that ends the stall
    measured less; :meth:`alarms` says so for :data:`ALARM_HOLD_S`.

    ``clock`` (seconds, monotonic, the event loop's clock) is what :meth:`tick`
    and :meth:`check` read; a test that passes its own clock calls :meth:`check`
    itself instead of starting the thread, which sleeps on the real clock.
    """

    def __init__(self, limit: float, release: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.release = release
        self.clock = clock
        self.fired = 0
        self.fired_at: float | None = None  # clock time of the last firing
        self._seen = 0  # firings the loop has been told of
        self._next_due = clock()
        self._holding = False
        self._fenced = False
        self._stop = threading.Event()
        self._armed = threading.Event()  # set by a tick that starts holding: wakes the idle thread
        self._thread = threading.Thread(target=self._run, name="stall-fence", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def tick(self, holding: bool, next_due: float) -> None:
        """Called by every heartbeat tick: the loop is alive, whether it holds the trunks, when it ticks next."""
        self._next_due = next_due
        wake = holding and (not self._holding or self._fenced)
        self._holding = holding
        self._fenced = False
        if wake:
            self._armed.set()

    def check(self) -> float | None:
        """One look at the loop: release the relays once the next tick is ``limit`` late while holding.

        Returns how long until the loop would count as stalled (the next look is due then), or
        None when there is nothing to watch (not holding, or already fenced for this stall).
        """
        if not self._holding or self._fenced:
            return None
        remaining = self._next_due + self.limit - self.clock()
        if remaining > 0:
            return remaining
        self._fenced = True
        self.fired_at = self.clock()
        self.fired += 1
        log.error("heartbeat tick over %.0f ms late while holding the trunks: the stall fence opens the relays",
                  self.limit * 1000)
        try:
            self.release()
        except Exception:  # a last resort must not die
            log.exception("stall fence: releasing failed")
        return None

    def take_fired(self) -> bool:
        """Whether the thread fired since the last call (the loop asks, so the core learns it exactly once)."""
        fired = self.fired
        if fired == self._seen:
            return False
        self._seen = fired
        return True

    def alarms(self) -> list[Alarm]:
        """A warning for :data:`ALARM_HOLD_S` after the fence opened the relays: never a silent release."""
        at = self.fired_at
        if at is None or self.clock() - at > ALARM_HOLD_S:
            return []
        ago = self.clock() - at
        return [Alarm("stall-fence", "warning",
                      f"the heartbeat loop stalled over {self.limit * 1000:.0f} ms while holding the trunks: "
                      f"the stall fence opened the relays {ago:.0f} s ago ({self.fired} in all)")]

    def _run(self) -> None:
        # Sleeps until the moment the loop would count as stalled (the next tick's due time plus
        # the limit) rather than polling: a few wake-ups a second while holding, about none while not.
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
