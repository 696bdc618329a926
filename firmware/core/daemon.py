"""`tandem run`: one node's life cycle, its heartbeat tick, and the decision loop (evaluate, then apply).

The daemon owns the heartbeat path and the decision core's state; everything
else is a component it composes and that registers its own control commands
and status keys (:mod:`firmware.core.endpoints`): the takeover runner, the
monitoring of health, the watchdogs, the operator commands, the event stream.
The panel and board extensions are wired in from outside the core
(:mod:`firmware.node`).

Everything on the event loop is short and non-blocking: the heartbeat timer,
packet reception and the decision core. Disk writes (journal, state) run on
worker threads; witness checks, LAN probe rounds and takeover actions run
as tasks with timeouts. So nothing delays a heartbeat (DESIGN.md, principle 2).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from firmware import __version__
from firmware.config import Config, check_key_file_permissions
from firmware.core import cluster
from firmware.core.actions import ActionPlan
from firmware.core.actions.hooks import EventHooks, HookRunner, hook_environment
from firmware.core.alarms import AlarmBoard
from firmware.core.arbitration import LanArbiter
from firmware.core.bootrecord import BootRecord
from firmware.core.cluster import ActionsReport, ClusterState, Command, Inputs, Persisted, Reply, WitnessResult
from firmware.core.control import ControlServer
from firmware.core.endpoints import Endpoints
from firmware.core.events import register_events
from firmware.core.fencing import Fencer
from firmware.core.heartbeat import HeartbeatEndpoint
from firmware.core.journal import Journal, JsonStore
from firmware.core.links import Link, make_link
from firmware.core.logsetup import log_event
from firmware.core.monitoring import Monitoring
from firmware.core.notify import Notifier
from firmware.core.operator import OperatorCommands
from firmware.core.peer import PeerView
from firmware.core.message import Heartbeat
from firmware.core.protocol import Keyring, new_boot_id
from firmware.core.rekey import Rekeying
from firmware.core.states import NodeState
from firmware.core.status import (
    heartbeat_status,
    hook_status,
    register_alarm_commands,
    register_node_status,
    status_line,
)
from firmware.core.takeover import TakeoverRunner
from firmware.core.settings import settings_from_config
from firmware.core.ticks import TickLog
from firmware.core.watchdog import StallFence, watchdogs_from_config
from firmware.core.waiters import Waiters
from firmware.core.wakeup import WakeTimer
from firmware.core.witness import Witness, WitnessChecks
from firmware.drivers import load_driver
from firmware.errors import ConfigError

log = logging.getLogger(__name__)

FINAL_ROUNDS = 3  # heartbeats sent after STOPPED so the peer hears the planned exit
PEER_RECORD_EVERY_TICKS = 50
LOGGED_EVENTS = ("state", "peer.lost", "peer.found", "link.down", "link.up", "refused",
                 "takeover.blocked", "health.critical", "flap.hold", "dual_active", "peer.incompatible")


class Component(Protocol):
    """Something composed into the daemon from outside the core (the panel): started and closed with it."""

    def start(self) -> Any:
        """Start (on the event loop, once the control path answers)."""

    def close(self) -> None:
        """Stop and let go of any hardware (idempotent; may block, so it runs off the loop at exit)."""


class Daemon:
    """One Tandem node."""

    def __init__(self, config: Config, plan: ActionPlan | None = None) -> None:
        self.config = config
        node = config.node
        check_key_file_permissions(node.key_file, config.path)
        try:
            keyring = Keyring.load(node.key_file)
        except ValueError as exc:
            raise ConfigError(config.path, "key_file", f"{node.key_file}: {exc}") from None
        self.settings = settings_from_config(config)
        self.state: ClusterState | None = None
        self.health = 100
        # Components that hold failback off while they say so (an update under way, a slot on trial).
        self.failback_holds: list[Callable[[], bool]] = []
        self.witness_result: WitnessResult | None = None
        self.actions: ActionsReport | None = None
        self.started_wall = time.time()
        self.ticks = TickLog()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._components: list[Component] = []
        self._exit_callbacks: list[Callable[[], None]] = []
        self.exit_status = 0  # the process's, once the node has left the cluster (an exit callback may set it)
        self._next_tick_at = 0.0
        self.tick_errors = 0
        self._tick_error_logged = 0.0
        self.wake = WakeTimer(lambda: self._evaluate(self.now()))
        self.waiters = Waiters()
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        node.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = JsonStore(node.state_dir / "state.json", "state")
        self.boot = BootRecord(node.state_dir / "boot.json")
        self.journal = Journal(node.state_dir, node.journal.max_bytes, node.journal.keep)
        self.links: dict[str, Link] = {link.name: make_link(link) for link in node.links}
        self.endpoint = HeartbeatEndpoint(
            keyring, node.peer, list(self.links), self.settings.heartbeat_s, self.settings.deadtime_s,
            boot_id=new_boot_id(self.boot.counter), known_peer=self.boot.known_peer,
            # Packets the peer may have sent between our last save and our restart: a round trip first.
            known_margin=2 * (PEER_RECORD_EVERY_TICKS + 10) * len(self.links))
        self.witness = Witness(node.witness.targets, node.witness.require, node.witness.timeout_ms / 1000)
        self.witness_checks = WitnessChecks(self.witness, self.settings.heartbeat_s, self._on_witness)
        self.notifier = Notifier()
        self.watchdogs = watchdogs_from_config(config, self.notifier)
        self.endpoints = Endpoints(self.journal)
        self.alarm_board = AlarmBoard()
        self.hooks = HookRunner(node.hooks.dir, node.hooks.timeout_ms / 1000)
        self.takeover = TakeoverRunner(config, self.journal, self.hooks, self._hooks_environment,
                                       self.relay_interlock, plan)
        try:
            self.stall_fence = StallFence(self.settings.fence_stall_s, self.takeover.release_relays_now)
            self.takeover.stalls = lambda: self.stall_fence.fired
            self.monitoring = Monitoring(config, self.journal, self.alarm_board, self._on_health)
            power = load_driver(config.board.power.driver, "power.driver", config.board_path,
                                **config.board.power.kwargs)
        except BaseException:
            self.takeover.release_banks()
            raise
        self.arbiter = LanArbiter(self.takeover.shared_ip_actions, node.arbitration.control,
                                  node.arbitration.round_ms / 1000, lambda _probe: self._evaluate(self.now()),
                                  node.arbitration.peer_address)
        self.fencer = Fencer(node.fencing.device, node.peer, self.journal, lambda _: self._evaluate(self.now()), self.now)
        self.operator = OperatorCommands(self, power)
        self.rekeying = Rekeying(self.links, self.endpoint, node.key_file, self.journal, time.monotonic)
        self.control = ControlServer(node.control_socket, self.endpoints.handle, node.control_group)
        self._register_endpoints()

    # ------------------------------------------------------------------ composition

    def _register_endpoints(self) -> None:
        endpoints = self.endpoints
        register_node_status(endpoints, self)
        self.alarm_board.add_source(lambda: cluster.alarms(self.settings, self._state))
        self.alarm_board.add_source(self.takeover.alarms)
        self.alarm_board.add_source(self.stall_fence.alarms)
        for disk_alarms in (self.journal.alarms, self.store.alarms, self.boot.alarms):
            self.alarm_board.add_source(disk_alarms)
        endpoints.add_status(self.journal.status)
        register_alarm_commands(endpoints, self.alarm_board, self.journal)
        self.monitoring.register(endpoints)
        endpoints.add_status(self.takeover.status)
        endpoints.add_status(self.watchdogs.status)
        endpoints.add_status(self.arbiter.status)
        self.fencer.register(endpoints, self.alarm_board)
        endpoints.add_status(lambda: {"heartbeat": heartbeat_status(self.settings, self.ticks, self.endpoint.tick)})
        register_events(endpoints, self.journal)
        self.operator.register(endpoints)
        self.rekeying.register(endpoints)

    def add_component(self, component: Component) -> None:
        """Start ``component`` with the node and close it when the node stops (the panel)."""
        self._components.append(component)

    def at_exit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the node has left the cluster, before the control socket closes."""
        self._exit_callbacks.append(callback)

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> int:
        """Run until the node has left the cluster; return the process exit code."""
        try:
            return await self._run()
        finally:
            self.release_hardware()  # relays safe and the watchdog disarmed on every way out

    async def _run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        await self.takeover.release_leftovers()
        for link in self.links.values():
            await link.start(self._on_packet)
        await self.control.start()
        # Armed only once start-up work that may take long is done.
        for note in self.watchdogs.open(self.config.path, self.config.board_path):
            self.journal.record("watchdog.reboot", {"device": self.config.node.watchdog.device, "message": note})
        self.stall_fence.start()
        self.monitoring.start()
        self.fencer.start()
        self._spawn(self.takeover.watch_banks(lambda: self._state.state == NodeState.ACTIVE))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for component in self._components:
            component.start()
        now = loop.time()
        try:
            persisted = Persisted.from_json(self.store.load())
        except ValueError as exc:
            log.error("%s: %s; starting from defaults", self.store.path, exc)
            self.journal.record("state.unreadable", {"file": str(self.store.path), "error": str(exc)})
            persisted = Persisted()  # leftovers were released above either way
        self.state, out = cluster.initial_state(self.settings, persisted, now, time.time())
        self.journal.add_listener(EventHooks(self.hooks, self.journal.record, self._hooks_environment, self._spawn))
        self.journal.record("daemon.start", {"version": __version__, "node": self.settings.node,
                                             "boot_id": self.endpoint.boot_id.hex(),
                                             "links": list(self.links), "board": self.config.board.name})
        self._apply(out)
        # Everything built so far (imported modules, drivers, the config) lives as long as the process:
        # out of the collector's sight, a full collection scans only what came since, so it can no
        # longer stall the heartbeat loop for a tenth of a second (seen under a request flood).
        gc.collect()
        gc.freeze()
        self._next_tick_at = now
        self._tick()
        self.notifier.ready(status_line(self.state))
        log.info("node %s started (%s); links: %s", self.settings.node, self.settings.role.name.lower(),
                 ", ".join(f"{link.name} ({link.detail})" for link in self.links.values()))
        await self._stopped.wait()
        await self._finish()
        return self.exit_status

    def _on_signal(self, sig: int) -> None:
        log.info("received %s: leaving the cluster", signal.Signals(sig).name)
        self.journal.record("signal", {"signal": signal.Signals(sig).name})
        self.notifier.stopping()
        if self._state.shutdown is not None:
            self._evaluate(self.now())
            return
        # A signal cannot be refused: the forced shutdown command (hand over first if possible).
        self.command("shutdown", force=True, source="signal")

    async def _finish(self) -> None:
        for _ in range(FINAL_ROUNDS):
            self._send_round()
            await asyncio.sleep(self.settings.heartbeat_s / 4)
        self.store.save_now(self._state.persisted.to_json())
        self.boot.save_peer(self.endpoint.tracker.record(), now=True)
        self.journal.record("daemon.stop", {"state": self._state.state.name})
        components, self._components = self._components, []
        for component in components:  # off the loop: the panel's last fetch may still wait on this very loop
            await asyncio.to_thread(component.close)
        # Before the exit callbacks (a power request may wait for systemd's verdict): the heartbeat tick
        # has stopped, so neither watchdog may be left counting, and systemd is told the daemon is stopping.
        self.release_hardware()
        self.notifier.stopping()
        for callback in self._exit_callbacks:
            callback()
        await self.control.close()
        for link in self.links.values():
            link.close()
        self.journal.close()

    def release_hardware(self) -> None:
        """Relays to their safe (de-energized) state, GPIO lines handed back, watchdog disarmed (idempotent)."""
        self.stall_fence.stop()
        components, self._components = self._components, []
        for component in components:
            component.close()
        self.monitoring.close()
        self.arbiter.close()
        self.fencer.close()
        self.watchdogs.close()
        self.takeover.release_banks()

    # ------------------------------------------------------------------ heartbeat path

    def _tick(self) -> None:
        loop = self.loop
        assert loop is not None
        now = loop.time()
        lag = now - self._next_tick_at
        self.ticks.record(self.endpoint.tick, lag)
        interval = self.settings.heartbeat_s
        self._next_tick_at += interval
        if self._next_tick_at < now:  # we were stalled: do not burst to catch up
            self._next_tick_at = now + interval
        if not self._stopped.is_set():
            loop.call_at(self._next_tick_at, self._tick)  # first, so no error below stops the heartbeat
        # Each step is guarded on its own: an error in one (a journal listener, a hook directory
        # that cannot be listed for want of descriptors, a link) never keeps the heartbeats from
        # going out or the watchdogs from being fed (issue 14).
        for link in self.links.values():
            self._guarded(link.maintain, now)
        self._guarded(self._evaluate, now, stalled_for=lag)
        self._guarded(self._send_round)
        # Fed from the heartbeat tick itself, and only when that tick was on time: a stalled
        # loop stops feeding, so systemd restarts the daemon, the board's watchdog resets it,
        # and the external failover switch sees the pulse stop.
        self._guarded(self.watchdogs.feed, now, on_time=lag <= self.settings.deadtime_s,
                      active=self._state.state == NodeState.ACTIVE)
        holding = self._state.state in (NodeState.TAKEOVER, NodeState.ACTIVE)
        self._guarded(lambda: self.stall_fence.tick(holding or self.takeover.holding_relays(), self._next_tick_at))
        if self.endpoint.tick % PEER_RECORD_EVERY_TICKS == 0:
            self._guarded(self.boot.save_peer, self.endpoint.tracker.record())

    def _guarded(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run one step of the heartbeat tick; an error is logged (once a second at most) and the tick goes on."""
        try:
            step(*args, **kwargs)
        except Exception:
            self.tick_errors += 1
            now = time.monotonic()
            if now - self._tick_error_logged >= 1.0:
                self._tick_error_logged = now
                log.exception("heartbeat tick: %s failed (%d errors so far); the tick goes on",
                              getattr(step, "__name__", step), self.tick_errors)

    def _send_round(self) -> None:
        tick = self.endpoint.next_tick(self.now())
        ack_boot, acks = self.endpoint.acks()
        message = cluster.build_heartbeat(self.settings, self._state, self.health, tick, ack_boot, acks)
        for link in self.links.values():
            link.send(self.endpoint.seal(message))

    def _on_packet(self, link: str, packet: bytes, now: float) -> None:
        try:
            delivery = self.endpoint.receive(link, packet, now)
            if delivery is not None:
                self._evaluate(now, peer=delivery.view)
        except Exception:  # never let one packet take the transport down
            self.endpoint.figures[link].record_reject("internal_error")
            log.exception("link %s: failed to handle a packet", link)

    # ------------------------------------------------------------------ decisions

    @property
    def _state(self) -> ClusterState:
        assert self.state is not None, "the decision core has not started"
        return self.state

    def now(self) -> float:
        """The event loop's clock (monotonic seconds)."""
        assert self.loop is not None
        return self.loop.time()

    def _inputs(self, now: float, stalled_for: float = 0.0, peer: PeerView | None = None,
                command: Command | None = None) -> Inputs:
        local = time.localtime()
        return Inputs(now=now, wall=time.time(), minute_of_day=local.tm_hour * 60 + local.tm_min,
                      tick=self.endpoint.tick, peer=peer or self.endpoint.view(), health=self.health,
                      witness=self.witness_result, actions=self.actions, stalled_for_s=stalled_for,
                      stall_fenced=command is None and self.stall_fence.take_fired(), command=command,
                      lan=self.arbiter.latest, fence=self.fencer.latest,
                      failback_held=any(hold() for hold in self.failback_holds))

    def _evaluate(self, now: float, stalled_for: float | None = None, peer: PeerView | None = None) -> None:
        if self.state is None or self.state.state == NodeState.STOPPED:
            return
        if stalled_for is None:
            # Whatever callback runs first after a stall (often a queued packet) sees how late
            # the heartbeat tick is, so the core can fence before it reacts to anything else.
            stalled_for = max(0.0, now - self._next_tick_at)
        self.state, out = cluster.step(self.settings, self.state, self._inputs(now, stalled_for, peer))
        self._apply(out)

    def command(self, name: str, force: bool, source: str) -> Reply:
        """Apply an operator command through the decision core; its events are journaled with ``source``."""
        inputs = self._inputs(self.now(), command=Command(name, force=force, source=source))
        self.state, out = cluster.step(self.settings, self._state, inputs)
        self._apply(out)
        assert out.reply is not None, "the core answers every command"
        return out.reply

    def _apply(self, out: cluster.Outputs) -> None:
        st = self._state
        for event in out.events:
            self.journal.record(event.kind, event.data)
            if event.kind in LOGGED_EVENTS:
                log_event(log, event.kind, event.data, state=st.state.name)
        if out.persist:
            self.store.save(st.persisted.to_json())
        if out.run is not None:
            persisted = st.persisted.to_json()
            self.takeover.start(out.run.state, out.run.transition, st.reason, lambda: self.store.save_now(persisted),
                                self._on_actions_done)
        if out.want_witness:
            self.witness_checks.want(self.now())
        self.arbiter.cadence(out.probe_every_s)
        self.fencer.want(out.fence_peer)
        self.wake.set(self.loop, out.wake_at)
        if out.send_now:
            self._send_round()
            self.notifier.status(status_line(st))
        if st.state == NodeState.STOPPED:
            self._stopped.set()
        self.waiters.check()

    def _on_actions_done(self, report: ActionsReport) -> None:
        self.actions = report
        self._evaluate(self.now())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_witness(self, passed: bool, started: float, summary: str) -> None:
        self.witness_result = WitnessResult(passed, started, summary)
        self._evaluate(self.now())

    def _on_health(self, score: int) -> None:
        self.health = score
        if self.state is not None and self.loop is not None:
            self._evaluate(self.loop.time())

    # ------------------------------------------------------------------ what others ask of the node

    def peer_message(self) -> Heartbeat | None:
        """The peer's newest heartbeat while it is alive (None while it is silent)."""
        return self.endpoint.view().message if self.state is not None and self.state.peer.alive else None

    def _hooks_environment(self) -> dict[str, str]:
        status = hook_status(self)
        return hook_environment(status) if status else {}  # none before the core has started

    def relay_interlock(self) -> str | None:
        """Relay interlock (the core decides): why energizing now would be unsafe, or None."""
        blocked = None if self.state is None else cluster.relay_interlock(self.settings, self.state,
                                                                          self.endpoint.view())
        return None if blocked is None else blocked.text
