"""`tandem run`: the asyncio daemon that wires links, the decision core and the world together.

Everything on the event loop is short and non-blocking: the heartbeat timer,
packet reception and the decision core. Disk writes (journal, state) run on
worker threads; witness checks and takeover actions run as tasks with
timeouts. So nothing delays a heartbeat (DESIGN.md, principle 2).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from firmware import __version__
from firmware.config import Config, ConfigError, check_key_file_permissions
from firmware.core import cluster
from firmware.core.actions import ActionError, ActionPlan, build_plan
from firmware.core.actions.hooks import HookRunner, hook_environment
from firmware.core.actions.relays import RelayAction, open_banks
from firmware.core.cluster import (
    ActionsReport,
    ClusterState,
    Command,
    Inputs,
    Persisted,
    Settings,
    WitnessResult,
)
from firmware.core.control import ControlError, ControlServer
from firmware.core.health import HealthMonitor, alarm_key, build_sensors
from firmware.core.heartbeat import HeartbeatEndpoint
from firmware.core.hotplug import DeviceEvent, HotplugWatcher, sensors_watching
from firmware.core.journal import Journal, JsonStore
from firmware.core.links import Link, make_link
from firmware.core.notify import Notifier
from firmware.core.protocol import Keyring, new_boot_id
from firmware.core.sensors.base import SensorContext
from firmware.core.states import Flag, NodeState, Role
from firmware.core.watchdog import (
    HardwareWatchdog,
    StallFence,
    WatchdogError,
    WatchdogPulse,
)
from firmware.core.witness import Witness
from firmware.drivers import load_driver
from firmware.panel.setup import open_panel

log = logging.getLogger(__name__)

FINAL_ROUNDS = 3  # heartbeats sent after STOPPED so the peer hears the planned exit
PEER_RECORD_EVERY_TICKS = 50
BANK_CHECK_S = 1.0
FOLLOW_QUEUE = 1000
LAG_SAMPLES = 3000  # the last five minutes of heartbeat ticks, for lateness percentiles


def settings_from_config(config: Config) -> Settings:
    """The decision core's settings from the node configuration."""
    node = config.node
    t = node.timers
    return Settings(
        node=node.node, peer=node.peer, role=Role.parse(node.role),
        heartbeat_s=t.heartbeat_ms / 1000, deadtime_s=t.deadtime_ms / 1000, initdead_s=t.initdead_ms / 1000,
        handover_timeout_s=t.handover_timeout_ms / 1000, shutdown_timeout_s=t.shutdown_timeout_ms / 1000,
        critical_health=node.health.critical,
        witness_required=bool(node.witness.targets), witness_min_health=node.witness.min_health,
        failback=node.failback.policy, failback_hold_down_s=node.failback.hold_down_s,
        failback_min_uptime_s=node.failback.min_uptime_s, failback_window_minutes=node.failback.window_minutes,
        flap_max_failures=node.flap.max_failures, flap_window_s=node.flap.window_min * 60,
        on_action_failure=node.actions.on_failure, takeover_backoff_s=node.actions.veto_backoff_s,
        fence_isolated=node.fencing.isolated,
        fence_stall_s=(node.fencing.stall_ms or t.deadtime_ms - t.heartbeat_ms) / 1000,
    )


def flag_names(flags: Flag) -> list[str]:
    """Flag names for status output."""
    return [f.name.lower() for f in Flag if f and f in flags and f.name]


class Daemon:
    """One Tandem node."""

    def __init__(self, config: Config, plan: ActionPlan | None = None) -> None:
        self.config = config
        node = config.node
        check_key_file_permissions(node.key_file, config.path)
        try:
            self.keyring = Keyring.load(node.key_file)
        except ValueError as exc:
            raise ConfigError(config.path, "key_file", f"{node.key_file}: {exc}") from None
        self.settings = settings_from_config(config)
        node.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = JsonStore(node.state_dir / "state.json")
        self.boot_store = JsonStore(node.state_dir / "boot.json")
        boot = self.boot_store.load()
        self.boot_counter = max(int(boot.get("own_counter", 0)) + 1, int(time.time()))
        known = boot.get("peer")
        known_peer = (int(known[0]), int(known[1])) if isinstance(known, list) and len(known) == 2 else None
        # Persist the new counter before the first packet: a crash must never reuse it.
        self.boot_store.save_now({"own_counter": self.boot_counter, "peer": known_peer})
        self._saved_peer_record = known_peer
        self.journal = Journal(node.state_dir, node.journal.max_bytes, node.journal.keep)
        self.links: dict[str, Link] = {link.name: make_link(link) for link in node.links}
        self.endpoint = HeartbeatEndpoint(
            self.keyring, node.peer, list(self.links), self.settings.heartbeat_s, self.settings.deadtime_s,
            boot_id=new_boot_id(self.boot_counter), known_peer=known_peer,
            # Packets the peer may have sent between our last save and our restart: a round trip first.
            known_margin=2 * (PEER_RECORD_EVERY_TICKS + 10) * len(self.links),
            stats={name: link.stats for name, link in self.links.items()})
        self.witness = Witness(node.witness.targets, node.witness.require, node.witness.timeout_ms / 1000)
        self.hooks = HookRunner(node.hooks.dir, node.hooks.timeout_ms / 1000)
        # Relay banks are opened (all channels de-energized: the safe state) before anything else runs.
        self.hw_watchdog = HardwareWatchdog(node.watchdog.device, node.watchdog.timeout_s) if node.watchdog.device else None
        pulse = config.board.watchdog_pulse
        self.pulse = WatchdogPulse(pulse.pin, pulse.pin_factory, pulse.active_high) if pulse else None
        self._last_pulse = 0.0
        self.relay_banks = open_banks(config.board.relays, "relays", config.board_path, load_driver)
        self.feedback_banks = open_banks(config.board.feedback, "feedback", config.board_path, load_driver)
        if plan is None:
            network = load_driver(config.board.network, "network", config.board_path) if node.shared_ips else None
            plan = build_plan(config, network, self.hooks, self._hook_environment, self.relay_banks,
                              self.feedback_banks, self._peer_holds, self.journal.record)
        self.plan = plan
        try:
            self.plan.check()
        except ActionError as exc:
            key = ("relay_groups" if str(exc).startswith("relays ") else
                   "shared_ips" if str(exc).startswith("shared_ip") else "service")
            raise ConfigError(config.path, key, str(exc)) from None
        self.relay_actions = [a for a in self.plan.actions if isinstance(a, RelayAction)]
        self.stall_fence = StallFence(self.settings.fence_stall_s, self._release_relays_now)
        self.bank_ok: dict[str, bool] = {name: True for name in self.relay_banks}
        if pulse is not None and pulse.interval_ms < node.timers.heartbeat_ms:
            raise ConfigError(config.board_path, "watchdog_pulse.interval_ms",
                              f"{pulse.interval_ms} ms is shorter than the heartbeat ({node.timers.heartbeat_ms} ms), "
                              "which feeds the pulse")
        self.notifier = Notifier()
        self.control = ControlServer(node.control_socket, self.handle_request, node.control_group)
        self.sensor_host = self._open_sensor_host()
        self.history = None
        if node.health.history:
            from firmware.core.history import History

            self.history = History(node.state_dir / "history")
        self.monitor = HealthMonitor(
            build_sensors(config, self.sensor_host), warning_factor=node.health.warning_factor,
            unknown_factor=node.health.unknown_factor,
            on_change=self._health_changed_elsewhere, record=self.history.record if self.history else None)
        self.hotplug = HotplugWatcher(self._on_hotplug)
        self.power = load_driver(config.board.power.driver, "power.driver", config.board_path,
                                 **config.board.power.kwargs)
        self._power_after: str | None = None
        self.panel = open_panel(config, node.control_socket)
        self.health_override: int | None = None  # set by `sim.health` on a simulator board
        self.inventory: dict[str, Any] | None = None
        self._silenced: set[str] = set()
        self.health = 100
        self.witness_result: WitnessResult | None = None
        self.witness_summary = ""
        self.actions: ActionsReport | None = None
        self.state: ClusterState | None = None
        self.started_wall = time.time()
        self.max_tick_lag = 0.0
        self.tick_lags: deque[tuple[int, float]] = deque(maxlen=LAG_SAMPLES)  # (tick, how late it ran)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_tick_at = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._witness_task: asyncio.Task | None = None
        self._witness_started = -1e9
        self._action_task: asyncio.Task | None = None
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._stopped = asyncio.Event()
        self._last_watchdog = 0.0
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> int:
        """Run until the node has left the cluster; return the process exit code."""
        try:
            return await self._run()
        finally:
            self._release_hardware()  # relays safe and the watchdog disarmed on every way out

    async def _run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        await self._release_leftovers()
        for link in self.links.values():
            await link.start(self._on_packet)
        await self.control.start()
        self._open_watchdogs()  # armed only once start-up work that may take long is done
        self.stall_fence.start()
        if self.history is not None:
            self.history.start()
        self.monitor.start()
        if self.monitor.sensors:
            self.hotplug.start()
        self._spawn(self._read_inventory())
        self._spawn(self._watch_banks())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.journal.add_listener(self._run_hooks)
        if self.panel is not None:
            self.journal.add_listener(self._notify_panel)
            self.panel.start()
        now = loop.time()
        try:
            persisted = Persisted.from_json(self.store.load())
        except ValueError as exc:
            log.error("%s: %s; starting from defaults", self.store.path, exc)
            self.journal.record("state.unreadable", {"file": str(self.store.path), "error": str(exc)})
            persisted = Persisted()  # leftovers were released above either way
        self.state, out = cluster.initial_state(self.settings, persisted, now, time.time())
        self.journal.record("daemon.start", {"version": __version__, "node": self.settings.node,
                                             "boot_id": self.endpoint.boot_id.hex(),
                                             "links": list(self.links), "board": self.config.board.name})
        self._apply(out)
        self._next_tick_at = now
        self._tick()
        self.notifier.ready(self._status_line())
        log.info("node %s started (%s); links: %s", self.settings.node, self.settings.role.name.lower(),
                 ", ".join(f"{l.name} ({l.detail})" for l in self.links.values()))
        await self._stopped.wait()
        await self._finish()
        return 0

    def _open_watchdogs(self) -> None:
        try:
            if self.hw_watchdog is not None:
                self.hw_watchdog.open()
                if self.hw_watchdog.rebooted_by_watchdog:
                    self.journal.record("watchdog.reboot", {"device": self.hw_watchdog.device,
                                                            "message": "the last reboot was caused by the watchdog"})
            if self.pulse is not None:
                self.pulse.open()
        except WatchdogError as exc:
            key = "watchdog.device" if "pulse" not in str(exc) else "watchdog_pulse"
            path = self.config.path if key == "watchdog.device" else self.config.board_path
            raise ConfigError(path, key, str(exc)) from None

    def _on_signal(self, sig: int) -> None:
        log.info("received %s: leaving the cluster", signal.Signals(sig).name)
        self.journal.record("signal", {"signal": signal.Signals(sig).name})
        self.notifier.stopping()
        assert self.state is not None and self._loop is not None
        if self.state.shutdown is not None:
            self._evaluate(self._loop.time())
            return
        # A signal cannot be refused: the forced shutdown command (hand over first if possible).
        command = Command("shutdown", force=True, source="signal")
        self.state, out = cluster.step(self.settings, self.state, self._inputs(self._loop.time(), command=command))
        self._apply(out)

    async def _finish(self) -> None:
        assert self.state is not None
        for _ in range(FINAL_ROUNDS):
            self._send_round()
            await asyncio.sleep(self.settings.heartbeat_s / 4)
        self.store.save_now(self.state.persisted.to_json())
        self._save_boot_record(now=True)
        self.journal.record("daemon.stop", {"state": self.state.state.name})
        panel, self.panel = self.panel, None
        if panel is not None:  # off the loop: the panel's last fetch may still wait on this very loop
            await asyncio.to_thread(panel.close)
        if self._power_after is not None:
            self.journal.record("power", {"action": self._power_after,
                                          "detail": self.power.request(self._power_after)})
        await self.control.close()
        for link in self.links.values():
            link.close()
        self._release_hardware()
        self.journal.close()

    def _release_hardware(self) -> None:
        """Relays to their safe (de-energized) state, GPIO lines handed back, watchdog disarmed (idempotent)."""
        self.stall_fence.stop()
        self._close_panel()
        self.hotplug.close()
        self.monitor.close()
        if self.history is not None:
            self.history.close()
        close_host = getattr(self.sensor_host, "close", None)
        if close_host is not None:
            close_host()
        if self.pulse is not None:
            self.pulse.close()
        if self.hw_watchdog is not None:
            self.hw_watchdog.close(magic=True)
        for bank in list(self.relay_banks.values()) + list(self.feedback_banks.values()):
            bank.release()
        self.relay_banks, self.feedback_banks = {}, {}

    # ------------------------------------------------------------------ heartbeat path

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        lag = now - self._next_tick_at
        self.max_tick_lag = max(self.max_tick_lag, lag)
        self.tick_lags.append((self.endpoint.tick, lag))
        interval = self.settings.heartbeat_s
        self._next_tick_at += interval
        if self._next_tick_at < now:  # we were stalled: do not burst to catch up
            self._next_tick_at = now + interval
        if not self._stopped.is_set():
            loop.call_at(self._next_tick_at, self._tick)  # first, so no error below stops the heartbeat
        try:
            for link in self.links.values():
                link.maintain(now)
            self._evaluate(now, stalled_for=lag)
            self._send_round()
            self._pet_watchdog(now, lag)
            holding = self.state is not None and self.state.state in (NodeState.TAKEOVER, NodeState.ACTIVE)
            self.stall_fence.tick(holding or any(a.position == "active" for a in self.relay_actions))
            if self.endpoint.tick % PEER_RECORD_EVERY_TICKS == 0:
                self._save_boot_record()
        except Exception:
            log.exception("heartbeat tick failed; the next tick is scheduled")

    def _save_boot_record(self, now: bool = False) -> None:
        # The peer's boot counter and highest seq: after our own restart, only newer
        # packets of that boot are accepted without a round trip (see peer.py).
        record = self.endpoint.tracker.record()
        if record == self._saved_peer_record and not now:
            return
        self._saved_peer_record = record
        data = {"own_counter": self.boot_counter, "peer": list(record) if record else None}
        (self.boot_store.save_now if now else self.boot_store.save)(data)

    def _pet_watchdog(self, now: float, lag: float) -> None:
        # Fed from the heartbeat tick itself, and only when that tick was on time: a stalled
        # loop stops feeding, so systemd restarts the daemon, the board's watchdog resets it,
        # and the external failover switch sees the pulse stop.
        if lag > self.settings.deadtime_s:
            return
        interval = self.notifier.watchdog_interval
        if interval is not None and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.watchdog()
        if self.hw_watchdog is not None:
            self.hw_watchdog.keepalive()
        pulse = self.config.board.watchdog_pulse
        if self.pulse is not None and pulse is not None and now - self._last_pulse >= pulse.interval_ms / 1000:
            self._last_pulse = now
            self.pulse.beat(self.state is not None and self.state.state == NodeState.ACTIVE)

    def _send_round(self) -> None:
        assert self._loop is not None and self.state is not None
        tick = self.endpoint.next_tick(self._loop.time())
        ack_boot, acks = self.endpoint.acks()
        message = cluster.build_heartbeat(self.settings, self.state, self.health, tick, ack_boot, acks)
        for link in self.links.values():
            link.send(self.endpoint.seal(message))

    def _on_packet(self, link: str, packet: bytes, now: float) -> None:
        try:
            if self.endpoint.receive(link, packet, now) is not None:
                self._evaluate(now)
        except Exception:  # never let one packet take the transport down
            self.endpoint.stats[link].record_reject("internal_error")
            log.exception("link %s: failed to handle a packet", link)

    # ------------------------------------------------------------------ decisions

    def _inputs(self, now: float, stalled_for: float = 0.0, command: Command | None = None) -> Inputs:
        local = time.localtime()
        return Inputs(now=now, wall=time.time(), minute_of_day=local.tm_hour * 60 + local.tm_min,
                      tick=self.endpoint.tick, peer=self.endpoint.view(), health=self.health,
                      witness=self.witness_result, actions=self.actions, stalled_for_s=stalled_for,
                      command=command)

    def _evaluate(self, now: float, stalled_for: float | None = None) -> None:
        if self.state is None or self.state.state == NodeState.STOPPED:
            return
        if stalled_for is None:
            # Whatever callback runs first after a stall (often a queued packet) sees how late
            # the heartbeat tick is, so the core can fence before it reacts to anything else.
            stalled_for = max(0.0, now - self._next_tick_at)
        self.state, out = cluster.step(self.settings, self.state, self._inputs(now, stalled_for))
        self._apply(out)

    def _apply(self, out: cluster.Outputs) -> None:
        st = self.state
        assert st is not None and self._loop is not None
        for event in out.events:
            self.journal.record(event.kind, event.data)
            if event.kind in ("state", "peer.lost", "peer.found", "link.down", "link.up", "refused",
                              "takeover.blocked", "health.critical", "flap.hold", "dual_active"):
                log.info("%s %s", event.kind, event.data)
        if out.persist:
            self.store.save(st.persisted.to_json())
        if out.run is not None:
            previous = self._action_task
            self._action_task = asyncio.ensure_future(
                self._run_actions(out.run.state, out.run.transition, previous, st.persisted.to_json()))
        if out.want_witness:
            self._maybe_check_witness()
        self._schedule_wake(out.wake_at)
        if out.send_now:
            self._send_round()
            self.notifier.status(self._status_line())
        if st.state == NodeState.STOPPED:
            self._stopped.set()
        self._resolve_waiters()

    def _schedule_wake(self, wake_at: float | None) -> None:
        if wake_at == self._wake_at:
            return
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        self._wake_at = wake_at
        self._wake_handle = None
        if wake_at is not None and self._loop is not None:
            self._wake_handle = self._loop.call_at(wake_at, self._on_wake)

    def _on_wake(self) -> None:
        self._wake_at = self._wake_handle = None
        assert self._loop is not None
        self._evaluate(self._loop.time())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _maybe_check_witness(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        busy = self._witness_task is not None and not self._witness_task.done()
        if busy or now - self._witness_started < self.settings.heartbeat_s:
            return
        self._witness_started = now
        self._witness_task = asyncio.ensure_future(self._check_witness(now))

    async def _check_witness(self, started: float) -> None:
        ok, summary = await self.witness.check()
        self.witness_result = WitnessResult(ok, started, summary)
        self.witness_summary = summary
        assert self._loop is not None
        self._evaluate(self._loop.time())

    def _run_hooks(self, record: dict[str, Any]) -> None:
        if record["kind"] == "hook" or self.state is None or not self.hooks.hooks_for(record["kind"]):
            return
        self._spawn(self._hooks_task(record))

    async def _hooks_task(self, record: dict[str, Any]) -> None:
        for result in await self.hooks.run(record["kind"], record, self._hook_environment()):
            self.journal.record("hook", result.to_json())
            if not result.ok:
                log.warning("hook %s for %s: exit %s: %s", result.hook, result.event, result.exit_code, result.output)

    async def _run_actions(self, state: NodeState, transition: int, previous: asyncio.Task | None,
                           persisted: dict[str, Any]) -> None:
        # One plan at a time: a demote that interrupts a promote cancels it and waits for it,
        # so a late promote can never re-acquire what the demote released.
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        # The new epoch and last_state go to disk alongside the actions, not before them: an fsync
        # must not delay the gratuitous ARP, and a restart releases leftovers whatever the file says.
        saved = asyncio.ensure_future(asyncio.to_thread(self.store.save_now, persisted))
        event = {"kind": "promote" if state == NodeState.TAKEOVER else "demote", "transition": transition,
                 "reason": self.state.reason if self.state else ""}
        result = await (self.plan.promote(event) if state == NodeState.TAKEOVER else self.plan.demote(event))
        await saved
        for hook in result.hooks:
            self.journal.record("hook", hook.to_json())
        for outcome in result.outcomes:
            self.journal.record("action", {"action": outcome.action, "ok": outcome.ok, "detail": outcome.detail,
                                           "duration_ms": round(outcome.duration_ms, 1), "for": state.name})
        self.actions = ActionsReport(transition, ok=result.ok, vetoed=result.vetoed, detail=result.detail,
                                     relays_released=state != NodeState.RELEASING or result.relays_ok)
        assert self._loop is not None
        self._evaluate(self._loop.time())

    async def _release_leftovers(self) -> None:
        """Before joining: release whatever a crashed run may have left (shared IP, PBX in cold mode)."""
        if not self.plan.actions:
            return
        result = await self.plan.demote({"kind": "startup", "reason": "release leftovers before joining"})
        self.journal.record("startup.release", {"ok": result.ok, "detail": result.detail or "nothing left over"})
        for action in self.plan.actions:
            prepare = getattr(action, "prepare", None)
            if prepare is not None:
                try:
                    await prepare()
                except ActionError as exc:
                    self.journal.record("action", {"action": action.name, "ok": False, "detail": str(exc),
                                                   "for": "STARTING"})

    def _release_relays_now(self) -> None:
        """The stall fence's last resort (runs on its own thread while the loop is stuck)."""
        for action in self.relay_actions:
            action.release_now()

    async def _watch_banks(self) -> None:
        """Every second, off the loop: is each relay bank reachable? Reopen lost ones; while ACTIVE,
        put the relays back in the ACTIVE position once a bank is back (behind the interlock)."""
        while True:
            await asyncio.sleep(BANK_CHECK_S)
            for name, bank in list(self.relay_banks.items()):
                ok = await asyncio.to_thread(_probe_bank, bank)
                came_back = ok and not self.bank_ok.get(name, True)
                self.bank_ok[name] = ok
                if not ok or not came_back:
                    continue
                self.journal.record("relay.bank", {"bank": name, "detail": "reachable again"})
                if self.state is not None and self.state.state == NodeState.ACTIVE:
                    for action in self.relay_actions:
                        try:
                            await action.ensure_present()
                        except ActionError as exc:
                            self.journal.record("action", {"action": action.name, "ok": False,
                                                           "detail": str(exc), "for": "ACTIVE"})

    def _peer_holds(self) -> str | None:
        """Relay interlock, as the core decides it: why energizing now would be unsafe, or None."""
        blocked = None if self.state is None else cluster.relay_interlock(self.settings, self.state,
                                                                          self.endpoint.view())
        return None if blocked is None else blocked.text

    def _hook_environment(self) -> dict[str, str]:
        st = self.state
        if st is None:
            return {}
        msg = self.endpoint.view().message if st.peer.alive else None
        return hook_environment({"node": self.settings.node, "role": self.settings.role.name.lower(),
                                 "state": st.state.name, "epoch": st.persisted.epoch, "health": self.health,
                                 "peer": {"name": self.settings.peer, "state": msg.state.name if msg else None}})

    # ------------------------------------------------------------------ health and alarms

    def _notify_panel(self, record: dict[str, Any]) -> None:
        if self.panel is not None:
            self.panel.notify()

    def _close_panel(self) -> None:
        if self.panel is not None:
            panel, self.panel = self.panel, None
            panel.close()

    async def _panel_request(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        """``panel.frame`` (any board): what the panel shows; ``panel.press`` (simulator): press its keys."""
        if self.panel is None:
            raise ControlError("this node has no front panel (none in the board profile, or [panel] enabled = false)")
        if cmd == "panel.frame":
            frame: dict[str, Any] = {"text": self.panel.frame_text()}
            if request.get("png", True):
                frame["png"] = base64.b64encode(await asyncio.to_thread(self.panel.frame_png)).decode()
            return {"ok": True, "result": frame}
        if not self.config.board.simulator:
            raise ControlError("panel.press is only available on a simulator board profile")
        key, action = str(request.get("key", "")).lower(), str(request.get("action", "click"))
        source = next((s for s in self.panel.keys if key in getattr(s, "key_names", ())), None)
        if source is None:
            names = sorted({name for s in self.panel.keys for name in getattr(s, "key_names", ())})
            raise ControlError(f"no panel key {key!r} (keys: {', '.join(names) or 'none'})")
        if action not in ("press", "release", "click", "hold"):
            raise ControlError(f"action {action!r}: expected press, release, click or hold")
        if action in ("press", "click", "hold"):
            source.inject(key, "press")
        if action == "hold":
            await asyncio.sleep(min(float(request.get("seconds", 1.0)), 30.0))
        if action in ("release", "click", "hold"):
            source.inject(key, "release")
        return {"ok": True, "result": f"{key} {action}"}

    def _open_sensor_host(self) -> SensorContext:
        host = self.config.board.sensor_host
        if host is None:
            return SensorContext()
        context = load_driver(host.driver, "sensor_host.driver", self.config.board_path, **host.kwargs)
        if not isinstance(context, SensorContext):
            raise ConfigError(self.config.board_path, "sensor_host.driver",
                              f"{host.driver} returned {type(context).__name__}, not a SensorContext")
        return context

    async def _read_inventory(self) -> None:
        from firmware.core.sensors.dmi import read_inventory

        try:
            self.inventory = await asyncio.to_thread(read_inventory, self.sensor_host)
        except Exception as exc:  # inventory is informative; its failure must not stop the node
            self.inventory = {"error": str(exc)}
            log.warning("inventory could not be read: %s", exc)

    def _on_hotplug(self, event: DeviceEvent) -> None:
        """On pyudev's thread: poll the sensors that watch this device now, and journal it."""
        watching = sensors_watching(event, ((m.config.name, m.sensor.options) for m in self.monitor.sensors))
        if not watching:
            return
        self.monitor.poll_now(watching)
        self._health_changed_elsewhere([("hotplug", {"action": event.action, "device": event.node or event.name,
                                                     "subsystem": event.subsystem, "sensors": watching})])

    def _health_changed_elsewhere(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Called on the health scheduler's thread: hand the events to the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_health_events, events)

    def _on_health_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, data in events:
            self.journal.record(kind, data)
            if kind.startswith("alarm."):
                log.warning("%s %s", kind, data["message"])
            if kind == "alarm.cleared":
                self._silenced = {k for k in self._silenced if not k.startswith(data["sensor"] + " ")}
        self._update_health()

    def _update_health(self) -> None:
        health = self.health_override if self.health_override is not None else self.monitor.score
        if health == self.health:
            return
        self.health = health
        if self.state is not None and self._loop is not None:
            self._evaluate(self._loop.time())

    def _alarms(self) -> list[str]:
        """Every active alarm: the cluster's, the relays' and the sensors'."""
        assert self.state is not None
        relay_status = [a.status() for a in self.plan.actions if a.name.startswith("relays ")]
        return ([alarm.text for alarm in cluster.alarms(self.settings, self.state)]
                + [f"relays {r['group']}: {r['mismatch']}" for r in relay_status if r["mismatch"]]
                + [f"relay bank {name} ({bank.name}) is not reachable; retrying every {BANK_CHECK_S:g} s"
                   for name, bank in self.relay_banks.items() if not self.bank_ok.get(name, True)]
                + self.monitor.alarms())

    def _alarm_silenced(self, alarms: list[str]) -> bool:
        keys = {alarm_key(a) for a in alarms}
        self._silenced &= keys  # an alarm that went away and comes back is a new alarm: it sounds
        return bool(alarms) and keys <= self._silenced

    def _silence_alarms(self, source: str) -> dict[str, Any]:
        alarms = self._alarms()
        if not alarms:
            return {"ok": True, "result": "no active alarms"}
        self._silenced = {alarm_key(a) for a in alarms}
        self.journal.record("alarm.silenced", {"source": source, "alarms": alarms})
        return {"ok": True, "result": f"silenced {len(alarms)} alarm{'s' if len(alarms) > 1 else ''} "
                                      "(a new alarm sounds again)"}

    def _sim_set(self, target: str, settings: dict[str, Any]) -> dict[str, Any]:
        inject = getattr(self.sensor_host, "inject", None)
        if inject is None:
            raise ControlError("this board's sensor host has nothing to inject into")
        try:
            detail = inject(target, settings)
        except (KeyError, ValueError) as exc:
            raise ControlError(str(exc).strip("'\"")) from None
        self.journal.record("sim.set", {"target": target, "settings": settings})
        self.monitor.poll_now()
        return {"ok": True, "result": detail or f"{target}: set {settings}"}

    # ------------------------------------------------------------------ control requests

    async def handle_request(self, request: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Answer one control-socket request."""
        cmd = request["cmd"]
        if cmd == "status":
            return {"ok": True, "result": self.status()}
        if cmd == "links":
            return {"ok": True, "result": self.status()["links"]}
        if cmd == "ping":
            return {"ok": True, "result": "pong"}
        if cmd == "lateness":  # heartbeat tick lateness over the ticks after `since_tick` (benchmarks)
            return {"ok": True, "result": {"tick": self.endpoint.tick,
                                           **_lateness(self.tick_lags, int(request.get("since_tick", -1)))}}
        if cmd == "events":
            since = int(request.get("since", 0))
            if request.get("last") is not None:  # only the newest N (the panel's "last events" page)
                since = max(since, self.journal.next_id - 1 - int(request["last"]))
            return self._events(since, bool(request.get("follow", False)))
        if cmd in ("promote", "demote", "shutdown", "maintenance-on", "maintenance-off"):
            return await self._command(cmd, bool(request.get("force", False)), str(request.get("source", "cli")))
        if cmd in ("poweroff", "reboot"):
            # Leave the cluster exactly as `shutdown` does (same checks), then power off or reboot.
            previous, self._power_after = self._power_after, cmd
            try:
                return await self._command("shutdown", bool(request.get("force", False)),
                                           str(request.get("source", "cli")))
            except ControlError:
                self._power_after = previous
                raise
        if cmd == "sim.stall":
            if not self.config.board.simulator:
                raise ControlError("sim.stall is only available on a simulator board profile")
            seconds = min(float(request.get("seconds", 1.0)), 30.0)
            self.journal.record("sim.stall", {"seconds": seconds})
            time.sleep(seconds)  # deliberately blocks the event loop: a fault injection
            return {"ok": True, "result": f"stalled the event loop for {seconds:g} s"}
        if cmd == "sim.contact":
            if not self.config.board.simulator:
                raise ControlError("sim.contact is only available on a simulator board profile")
            return self._inject_contact(str(request.get("input", "")), request.get("value"))
        if cmd == "sim.health":
            if not self.config.board.simulator:
                raise ControlError("sim.health is only available on a simulator board profile")
            return self._set_health(request.get("value"))
        if cmd == "sim.set":
            if not self.config.board.simulator:
                raise ControlError("sim.set is only available on a simulator board profile")
            settings = request.get("settings")
            if not isinstance(settings, dict):
                raise ControlError("sim.set needs settings as an object, e.g. {\"ac\": \"lost\"}")
            return self._sim_set(str(request.get("target", "")), settings)
        if cmd == "panel.report":  # the panel journals what happened at it (PIN attempts, locking)
            event = str(request.get("event", ""))
            if event not in ("pin.accepted", "pin.wrong", "panel.locked"):
                raise ControlError(f"panel.report: unknown event {event!r}")
            self.journal.record("panel", {"event": event, "detail": str(request.get("detail", ""))[:200],
                                          "source": "panel"})
            return {"ok": True, "result": "journaled"}
        if cmd in ("panel.frame", "panel.press"):
            return await self._panel_request(cmd, request)
        if cmd == "sensors":
            return {"ok": True, "result": self.monitor.snapshot()}
        if cmd == "alarm-silence":
            return self._silence_alarms(str(request.get("source", "cli")))
        raise ControlError(f"unknown command {cmd!r}")

    def _inject_contact(self, ref: str, value: Any) -> dict[str, Any]:
        from firmware.core.actions.relays import parse_ref

        try:
            bank, channel = parse_ref(ref)
            inject = self.feedback_banks[bank].inject
        except (ValueError, KeyError, AttributeError):
            raise ControlError(f"no simulated feedback input {ref!r} (banks: {', '.join(self.feedback_banks)})") from None
        inject(channel, None if value is None else bool(value))
        self.journal.record("sim.contact", {"input": ref, "stuck": value})
        return {"ok": True, "result": f"{ref} {'cleared' if value is None else 'stuck ' + ('on' if value else 'off')}"}

    def _set_health(self, value: Any) -> dict[str, Any]:
        if value is None:  # back to the sensors' score
            self.health_override = None
            self.journal.record("health", {"health": self.monitor.score, "source": "sensors"})
            self._update_health()
            return {"ok": True, "result": f"health follows the sensors again ({self.monitor.score})"}
        value = int(value)
        if not 0 <= value <= 100:
            raise ControlError("health must be 0-100")
        self.health_override = value
        self.journal.record("health", {"health": value, "source": "simulator"})
        self._update_health()
        return {"ok": True, "result": f"health set to {value}"}

    async def _command(self, name: str, force: bool, source: str) -> dict[str, Any]:
        assert self.state is not None and self._loop is not None
        command = Command(name, force, source)
        self.state, out = cluster.step(self.settings, self.state, self._inputs(self._loop.time(), command=command))
        self._apply(out)
        reply = out.reply
        assert reply is not None
        if not reply.ok:
            raise ControlError(reply.message)
        outcome = await self._await_outcome(name)
        return {"ok": True, "result": {"message": reply.message, "outcome": outcome,
                                       "state": self.state.state.name}}

    async def _await_outcome(self, name: str) -> str:
        """Wait (bounded) until a command has taken effect; describe what happened."""
        st = self.state
        assert st is not None
        limit = self.settings.handover_timeout_s + 2 * self.settings.deadtime_s + 1.0
        peer_active = lambda: (self.endpoint.view().message is not None
                               and self.state is not None and self.state.peer.alive
                               and self.endpoint.view().message.state == NodeState.ACTIVE)
        if name == "promote":
            done = await self._wait_for(lambda: self.state.state == NodeState.ACTIVE
                                        or self.state.request is None and not self.state.state.holds_resources,
                                        limit)
            if self.state.state == NodeState.ACTIVE:
                return "this node is ACTIVE"
            raise ControlError(f"promotion did not complete: {self.state.reason}" if done else
                               f"promotion did not complete within {limit:g} s: {self.state.reason}")
        if name in ("demote", "maintenance-on") and (st.state.holds_resources or st.state == NodeState.RELEASING):
            await self._wait_for(lambda: not self.state.state.holds_resources, limit)
            if await self._wait_for(peer_active, limit):
                return f"{self.settings.peer} is ACTIVE"
            return f"this node released; {self.settings.peer} has not taken over ({self.state.reason})"
        if name == "shutdown":
            await self._wait_for(lambda: self.state.state == NodeState.STOPPED,
                                 self.settings.shutdown_timeout_s + limit)
            return "left the cluster"
        return self.state.reason

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        if predicate():
            return True
        assert self._loop is not None
        future = self._loop.create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    def _resolve_waiters(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(True)

    async def _events(self, since: int, follow: bool) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        overflowed = False

        def listener(record: dict[str, Any]) -> None:
            nonlocal overflowed
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                overflowed = True

        if follow:
            self.journal.add_listener(listener)
        try:
            # Old events may come from the rotated files: read them off the heartbeat loop.
            history = await asyncio.to_thread(self.journal.since, since)
            for record in history:
                yield {"ok": True, "event": record}
            last = history[-1]["id"] if history else since
            while follow and not overflowed:
                record = await queue.get()
                if record["id"] > last:
                    yield {"ok": True, "event": record}
            if overflowed:
                raise ControlError("events --follow: the client reads too slowly; reconnect with --since")
        finally:
            self.journal.remove_listener(listener)

    # ------------------------------------------------------------------ status

    def _status_line(self) -> str:
        st = self.state
        if st is None:
            return "starting"
        return f"{st.state.name} ({st.reason}); peer {'alive' if st.peer.alive else 'silent'}"

    def status(self) -> dict[str, Any]:
        """The status snapshot (DESIGN.md): one JSON document for CLI, panel, hooks and metrics."""
        assert self.state is not None and self._loop is not None
        st, now = self.state, self._loop.time()
        view = self.endpoint.view()
        msg = view.message
        link_status = {link.name: link for link in st.peer.links}
        links = []
        for name, link in self.links.items():
            status = link_status.get(name)
            rx, tx = (status.rx, status.tx) if status else (False, False)
            links.append({
                "name": name, "kind": link.kind, "rx": rx, "tx": tx,
                "state": "up" if rx and tx else "one-way" if rx or tx else "down",
                "open": link.is_open, "detail": link.detail,
                **self.endpoint.stats[name].to_json(now),
            })
        last_rx = view.last_rx
        relay_status = [a.status() for a in self.plan.actions if a.name.startswith("relays ")]
        alarms = self._alarms()
        return {
            "node": self.settings.node,
            "role": self.settings.role.name.lower(),
            "state": st.state.name,
            "reason": st.reason,
            "since_s": round(now - st.since, 3),
            "health": self.health,
            "epoch": st.persisted.epoch,
            "flags": flag_names(cluster.heartbeat_flags(st)),
            "maintenance": st.persisted.maintenance,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_wall, 1),
            "board": self.config.board.name,
            "simulator": self.config.board.simulator,
            "peer": {
                "name": self.settings.peer,
                "alive": st.peer.alive,
                "state": msg.state.name if msg else None,
                "role": msg.role.name.lower() if msg else None,
                "health": msg.health if msg else None,
                "epoch": msg.epoch if msg else None,
                "flags": flag_names(msg.flags) if msg else [],
                "last_heard_s": None if last_rx is None else round(now - last_rx, 3),
            },
            "links": links,
            "witness": {
                "configured": self.witness.configured,
                "targets": self.witness.targets,
                "ok": self.witness_result.ok if self.witness_result else None,
                "detail": self.witness_summary,
                "age_s": None if self.witness_result is None else round(now - self.witness_result.started_at, 3),
            },
            "alarms": alarms,
            "alarm_silenced": self._alarm_silenced(alarms),
            "sensors": self.monitor.snapshot(),
            "inventory": self.inventory,
            "history": self.history.status() if self.history else None,
            "shared_ips": [a.status() for a in self.plan.actions if a.name.startswith("shared_ip")],
            "service": next((a.status() for a in self.plan.actions if a.name == "service"), None),
            "relays": relay_status,
            "watchdog": self.hw_watchdog.status() if self.hw_watchdog else None,
            "watchdog_pulse": self.pulse.status() if self.pulse else None,
            "heartbeat": {"interval_ms": self.settings.heartbeat_s * 1000, "deadtime_ms": self.settings.deadtime_s * 1000,
                          "max_tick_lag_ms": round(self.max_tick_lag * 1000, 2), "tick": self.endpoint.tick,
                          "lateness_ms": _lateness(self.tick_lags)},
        }


def _lateness(lags: deque[tuple[int, float]], since_tick: int = -1) -> dict[str, float | int]:
    """How late recent heartbeat ticks ran (after ``since_tick``): p50, p99 and max in ms."""
    ordered = sorted(lag for tick, lag in lags if tick > since_tick)
    if not ordered:
        return {"samples": 0}
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)  # noqa: E731
    return {"samples": len(ordered), "p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3)}


def _probe_bank(bank: Any) -> bool:
    """Whether a relay bank answers (reopening it if it was lost); runs in a worker thread."""
    try:
        if getattr(bank, "connected", True):
            return True
        bank.open()
        return bool(getattr(bank, "connected", True))
    except Exception:
        return False


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr; with journald (JOURNAL_STREAM set) use `<N>` priority prefixes, no timestamps."""
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("JOURNAL_STREAM"):
        class _Journald(logging.Formatter):
            PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

            def format(self, record: logging.LogRecord) -> str:
                return f"<{self.PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"
        formatter: logging.Formatter = _Journald()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
