"""A discrete-event model of two Tandem nodes, for property and scenario tests.

Each node is the real decision core (`cluster.step`) behind the real heartbeat
endpoint (real AEAD, replay guard and boot tracking); only time, the links and
the takeover actions are simulated. The model checks, at every event, the
safety and liveness invariants the property tests state.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

from firmware.core import cluster
from firmware.core.cluster import (
    ActionKind,
    ActionsReport,
    ClusterState,
    Command,
    FenceReport,
    Inputs,
    LanProbe,
    LanVerdict,
    Persisted,
    RunActions,
    Settings,
    WitnessResult,
)
from firmware.core.heartbeat import HeartbeatEndpoint
from firmware.core.protocol import PROTOCOL_VERSION, Keyring
from firmware.core.states import NodeState

KEYRING = Keyring([(1, bytes(range(32)))])
LINKS = ("net0", "serial0")
DIRECTIONS = ("0->1", "1->0")
HOLDING = (NodeState.TAKEOVER, NodeState.ACTIVE)
PROBE_ROUND_S = 0.04  # how long one LAN probe round listens (arbitration.round_ms)


def model_settings(index: int, **overrides: Any) -> Settings:
    """Settings for node 0 (`alpha`) or node 1 (`bravo`) with short model timers."""
    names = ("alpha", "bravo")
    values: dict[str, Any] = dict(
        node=names[index], peer=names[1 - index], heartbeat_s=0.1, deadtime_s=0.3, initdead_s=1.0,
        handover_timeout_s=2.0, shutdown_timeout_s=3.0, critical_health=30, witness_required=True,
        takeover_backoff_s=2.0, flap_max_failures=3, flap_window_s=600.0,
    )
    values.update(overrides)
    return Settings(**values)


@dataclass
class Node:
    """One simulated daemon."""

    index: int
    settings: Settings
    rng: random.Random
    persisted: Persisted = field(default_factory=Persisted)
    alive: bool = False
    generation: int = 0
    state: ClusterState | None = None
    endpoint: HeartbeatEndpoint | None = None
    health: int = 100
    witness_reachable: bool = True
    witness: WitnessResult | None = None
    witness_busy: bool = False
    actions: ActionsReport | None = None
    promote_result: str = "ok"  # ok | fail | veto: what the node's promote actions do
    action_delay: float | None = None  # how long its actions take (None: 5-50 ms at random)
    next_wake: float | None = None
    boot_counter: int = 0
    failback_held: bool = False  # an update under way on this node (the daemon's failback holds)
    frozen_until: float = 0.0  # a stalled process: its events wait until then
    next_due: float = 0.0  # when its next heartbeat tick is due (the stall fence measures lateness from it)
    relays_closed: bool = False  # its trunk relays (closed by promote actions, opened by demote actions)
    known_peer: tuple[int, int] | None = None
    actions_for: int = -1  # the transition whose actions were last started, as the daemon tracks it
    events: list[tuple[float, str, dict]] = field(default_factory=list)
    address: bool = False  # the box answers for the shared address on the LAN (kept when the daemon dies)
    lan: LanProbe | None = None  # its latest finished probe round
    probe_every: float | None = None  # the cadence the core last asked for
    round_started: float | None = None  # a round in flight since then
    last_round_end: float = -1e9
    last_round_start: float = -1e9
    start_due: float | None = None  # a lan_start event is queued for then
    powered: bool = True  # the box has power (a fence switches it off; a start boots it again)
    lan_up: bool = True  # its LAN cable: unplugged, it neither hears nor is heard on the LAN
    fence: FenceReport | None = None  # its latest finished attempt to fence the peer
    fence_busy: bool = False
    fence_works: bool = True  # what its fence device does when asked
    fenced: bool = False  # its power was switched off by the peer's fence
    stall_fired: int = 0  # how often its stall-fence thread fired
    stall_seen: int = 0  # ... of which its decision core has been told
    stalls_at_actions: int = 0  # ... when its current actions started (a promote halts if it fired since)
    protocol_version: int = PROTOCOL_VERSION  # the heartbeat protocol of the release it runs (from its next start)

    @property
    def holds(self) -> bool:
        """Running (alive and not frozen) and holding shared resources.

        A frozen process can neither hold a call nor let one go; it counts again once it runs.
        """
        return self.alive and self.state is not None and self.state.state.holds_resources


class TwoNodeModel:
    """Two nodes, two links with per-direction modes, a clock and an event queue."""

    def __init__(self, seed: int = 0, settle: float = 2.5, liveness_window: float = 7.0,
                 release_delay: tuple[float, float] = (0.0, 0.0), **overrides: Any) -> None:
        """`release_delay`: after a SIGKILL the box keeps the shared address for a random time in this
        range (the supervisor's `tandem release` runs that long); `overrides` go to every node's Settings."""
        self.rng = random.Random(seed)
        self.nodes = [Node(i, model_settings(i, **overrides), random.Random(seed * 7 + i)) for i in range(2)]
        self.now = 0.0
        self.queue: list[tuple[float, int, str, tuple]] = []
        self.counter = itertools.count()
        self.modes = {(link, d): "up" for link in LINKS for d in DIRECTIONS}
        self.last_lost = {(link, d): False for link in LINKS for d in DIRECTIONS}
        self.carried_since: dict[str, float | None] = {d: 0.0 for d in DIRECTIONS}
        self.bidir_since: dict[str, float | None] = {link: 0.0 for link in LINKS}
        self.last_fault = 0.0
        self.stall_ends: list[float] = []
        self.settle = settle
        self.liveness_window = liveness_window
        self.last_command_at = -1e9
        self.good_since: list[float | None] = [None, None]
        self.idle_since: float | None = 0.0
        self.violations: list[str] = []
        self.timeline: list[tuple[float, str]] = []
        self.release_delay = release_delay
        self.switch_forwards = True  # False: the LAN switch hangs (links up, nothing passes, the gateway silent)

    # ------------------------------------------------------------------ plumbing

    def _push(self, at: float, kind: str, *args: Any) -> None:
        heapq.heappush(self.queue, (at, next(self.counter), kind, args))

    def _inputs(self, node: Node) -> Inputs:
        assert node.endpoint is not None
        return Inputs(now=self.now, wall=1_700_000_000 + self.now, minute_of_day=int(self.now // 60) % 1440,
                      tick=node.endpoint.tick, peer=node.endpoint.view(), health=node.health,
                      witness=node.witness, actions=node.actions, lan=node.lan, fence=node.fence,
                      failback_held=node.failback_held)

    def start(self, index: int) -> None:
        """Start (or restart) a node's daemon."""
        node = self.nodes[index]
        if not node.powered:
            node.powered, node.fenced = True, False
            self.timeline.append((self.now, f"{node.settings.node}: powered on"))
        node.generation += 1
        node.alive = True
        node.witness, node.witness_busy, node.actions = None, False, None
        node.fence, node.fence_busy = None, False
        node.actions_for = -1
        node.address = False  # the start-up release lets go of whatever the box still held
        node.lan, node.probe_every, node.round_started, node.last_round_start = None, None, None, -1e9
        node.boot_counter += 1
        boot_id = node.boot_counter.to_bytes(4, "big") + node.rng.randbytes(4)
        node.endpoint = HeartbeatEndpoint(KEYRING, node.settings.peer, list(LINKS), node.settings.heartbeat_s,
                                          node.settings.deadtime_s, boot_id=boot_id, known_peer=node.known_peer,
                                          version=node.protocol_version)
        self._push(self.now + 5.0, "persist_peer", index, node.generation)
        node.state, out = cluster.initial_state(node.settings, node.persisted, self.now, 1_700_000_000 + self.now)
        self._apply(node, out)
        first = self.now + node.rng.uniform(0, 0.1)
        self._push(first, "tick", index, node.generation, first)

    def stall(self, index: int, seconds: float) -> None:
        """Freeze a node's process (its loop stops: no heartbeats, no decisions) for `seconds`.

        Its stall-fence thread still runs: after `fence_stall_s` without a tick it opens the relays.
        """
        node = self.nodes[index]
        node.frozen_until = max(node.frozen_until, self.now) + seconds  # a stall asked for during one runs after it
        self.stall_ends.append(node.frozen_until)
        fence_at = node.next_due + node.settings.fence_stall_s  # the tick's lateness, as the core measures it
        if node.frozen_until > fence_at:
            heapq.heappush(self.queue, (max(fence_at, self.now), next(self.counter), "fence_thread",
                                        (index, node.generation)))
        self.timeline.append((self.now, f"stall {node.settings.node} {seconds:g}s"))

    def kill(self, index: int, release: bool = True) -> None:
        """SIGKILL: the node stops at once; its relays fall to their safe state.

        The box keeps answering for the shared address until the supervisor's
        release, `release_delay` later (never without `release`).
        """
        node = self.nodes[index]
        node.alive = False
        node.relays_closed = False
        node.generation += 1
        node.round_started = None
        if release:
            self._push(self.now + self.rng.uniform(*self.release_delay), "release", index, node.generation)
        self.timeline.append((self.now, f"kill {node.settings.node}"))

    def _evaluate(self, node: Node, stalled_for: float = 0.0) -> None:
        assert node.state is not None
        fenced, node.stall_seen = node.stall_fired != node.stall_seen, node.stall_fired
        inputs = replace(self._inputs(node), stalled_for_s=stalled_for, stall_fenced=fenced)
        node.state, out = cluster.step(node.settings, node.state, inputs)
        self._apply(node, out)

    def _apply(self, node: Node, out: cluster.Outputs) -> None:
        assert node.state is not None
        for event in out.events:
            node.events.append((self.now, event.kind, event.data))
            if event.kind in ("state", "refused", "dual_active", "flap.hold"):
                self.timeline.append((self.now, f"{node.settings.node}: {event.kind} {event.data}"))
        if out.persist:
            node.persisted = node.state.persisted
        st = node.state
        self._check_run(node, out.run)
        if st.state in (NodeState.TAKEOVER, NodeState.RELEASING) and (
                node.actions is None or node.actions.transition != st.transition):
            delay = node.action_delay if node.action_delay is not None else node.rng.uniform(0.005, 0.05)
            self._push(self.now + delay, "actions", node.index, node.generation, st.transition)
        node.probe_every = out.probe_every_s
        self._next_round(node)
        if out.fence_peer and not node.fence_busy:
            self._start_fence(node)
        if out.want_witness and not node.witness_busy:
            node.witness_busy = True
            self._push(self.now + 0.005, "witness", node.index, node.generation, self.now)
        if out.wake_at is not None and out.wake_at > self.now and out.wake_at != node.next_wake:
            node.next_wake = out.wake_at
            self._push(out.wake_at, "wake", node.index, node.generation)
        if out.send_now:
            self._send_round(node)
        if st.state == NodeState.STOPPED:
            self._send_round(node)
            node.alive = False
            node.generation += 1
            node.round_started = None  # a daemon that exited probes no more

    def _start_fence(self, node: Node) -> None:
        """Run the fence agent: the peer's power goes off soon after it starts, the report comes later."""
        node.fence_busy = True
        self.timeline.append((self.now, f"{node.settings.node}: fencing"))
        if node.fence_works:
            self._push(self.now + node.rng.uniform(0.05, 0.5), "power_off", 1 - node.index, node.index)
        self._push(self.now + node.rng.uniform(0.6, 2.5), "fence_done", node.index, node.generation, self.now)

    def power_off(self, index: int) -> None:
        """The box loses power: its daemon, relays and address go at once."""
        node = self.nodes[index]
        node.powered, node.alive, node.address, node.relays_closed = False, False, False, False
        node.generation += 1
        node.round_started = None
        self.timeline.append((self.now, f"{node.settings.node}: powered off"))

    def _check_run(self, node: Node, run: RunActions | None) -> None:
        """The core says which actions to run exactly when a shell would have inferred it from the state."""
        st = node.state
        assert st is not None
        expected = None
        if st.state in (NodeState.TAKEOVER, NodeState.RELEASING) and node.actions_for != st.transition:
            node.actions_for = st.transition
            node.stalls_at_actions = node.stall_fired  # the plan starts now
            kind = ActionKind.PROMOTE if st.state == NodeState.TAKEOVER else ActionKind.DEMOTE
            expected = RunActions(kind, st.transition)
        if run != expected:
            self.violations.append(f"t={self.now:.3f}: {node.settings.node}: the core said run {run}, "
                                   f"the state says {expected}")

    def _send_round(self, node: Node) -> None:
        assert node.endpoint is not None and node.state is not None
        tick = node.endpoint.next_tick(self.now)
        ack_boot, acks = node.endpoint.acks()
        message = cluster.build_heartbeat(node.settings, node.state, node.health, tick, ack_boot, acks)
        direction = DIRECTIONS[node.index]
        for link in LINKS:
            packet = node.endpoint.seal(message)
            mode = self.modes[(link, direction)]
            if mode == "down":
                continue
            if mode == "lossy" and not self.last_lost[(link, direction)] and self.rng.random() < 0.3:
                self.last_lost[(link, direction)] = True  # never two losses in a row
                continue
            self.last_lost[(link, direction)] = False
            delay = self.rng.uniform(0.0005, 0.015)
            self._push(self.now + delay, "deliver", 1 - node.index, link, packet)

    # ------------------------------------------------------------------ faults and commands

    def set_mode(self, link: str, direction: str, mode: str) -> None:
        """Set one link direction to up, lossy or down."""
        self.modes[(link, direction)] = mode
        self.timeline.append((self.now, f"{link} {direction} {mode}"))
        self.fault()
        for l in LINKS:
            bidir = all(self.modes[(l, d)] != "down" for d in DIRECTIONS)
            if not bidir:
                self.bidir_since[l] = None
            elif self.bidir_since[l] is None:
                self.bidir_since[l] = self.now
        for d in DIRECTIONS:
            carried = any(self.modes[(l, d)] != "down" for l in LINKS)
            if not carried:
                self.carried_since[d] = None
            elif self.carried_since[d] is None:
                self.carried_since[d] = self.now

    def fault(self) -> None:
        """Note that something changed (link, witness, health, process, command)."""
        self.last_fault = self.now

    def command(self, index: int, name: str, force: bool = False) -> cluster.Reply | None:
        """An operator command on a running node."""
        node = self.nodes[index]
        self.last_command_at = self.now
        if not node.alive or node.state is None:
            return None
        node.state, out = cluster.step(node.settings, node.state,
                                       replace(self._inputs(node), command=Command(name, force)))
        reply = out.reply
        self.timeline.append((self.now, f"{node.settings.node}: {name}{' --force' if force else ''} -> {reply}"))
        self._apply(node, out)
        return reply

    def sigterm(self, index: int) -> None:
        """SIGTERM: leave the cluster, handing over first."""
        node = self.nodes[index]
        self.last_command_at = self.now
        if not node.alive or node.state is None:
            return
        command = Command("shutdown", force=True)
        node.state, out = cluster.step(node.settings, node.state, replace(self._inputs(node), command=command))
        self._apply(node, out)

    # ------------------------------------------------------------------ running

    def run_until(self, until: float) -> None:
        """Process events up to `until`, checking the invariants after each one."""
        while self.queue and self.queue[0][0] <= until:
            at, _, kind, args = heapq.heappop(self.queue)
            self.now = at
            target = self.nodes[args[0]]
            if kind == "fence_thread":  # runs beside the frozen loop
                if target.alive and args[1] == target.generation and target.frozen_until > at:
                    target.relays_closed = False
                    target.stall_fired += 1
                    self.timeline.append((at, f"{target.settings.node}: stall fence opened the relays"))
                self.check()
                continue
            if target.frozen_until > at:  # the process is stalled: the event waits for it
                self._push(target.frozen_until, kind, *args)
                continue
            self._handle(kind, args)
            self.check()
        self.now = until
        self.check()

    def _handle(self, kind: str, args: tuple) -> None:
        if kind == "power_off":  # the fencer's BMC command arrived (the agent runs on the fencer's box)
            target, fencer = self.nodes[args[0]], self.nodes[args[1]]
            if fencer.powered and target.powered:
                self.power_off(target.index)
                target.fenced = True
            return
        if kind == "release":  # the supervisor's release, unless the daemon was started again meanwhile
            node = self.nodes[args[0]]
            if not node.alive and node.address:
                node.address = False
                self.timeline.append((self.now, f"{node.settings.node}: released by its supervisor"))
            return
        if kind == "deliver":
            index, link, packet = args
            node = self.nodes[index]
            if node.alive and node.endpoint is not None:
                if node.endpoint.receive(link, packet, self.now) is not None:
                    self._evaluate(node)
            return
        index, generation = args[0], args[1]
        node = self.nodes[index]
        if not node.alive or generation != node.generation:
            return
        if kind == "tick":
            due = args[2]
            self._evaluate(node, stalled_for=self.now - due)
            if node.alive:
                self._send_round(node)
                jitter = node.rng.uniform(-0.01, 0.01)
                following = max(due + node.settings.heartbeat_s + jitter, self.now + 0.001)
                if following < self.now:
                    following = self.now + node.settings.heartbeat_s
                node.next_due = following
                self._push(following, "tick", index, node.generation, following)
        elif kind == "persist_peer":  # the daemon saves the peer's boot record every few seconds
            assert node.endpoint is not None
            node.known_peer = node.endpoint.tracker.record()
            self._push(self.now + 5.0, "persist_peer", index, node.generation)
        elif kind == "wake":
            if self.now == node.next_wake:
                node.next_wake = None
                self._evaluate(node)
        elif kind == "witness":
            node.witness = WitnessResult(node.witness_reachable, started_at=args[2],
                                         detail="reachable" if node.witness_reachable else "refused")
            node.witness_busy = False
            self._evaluate(node)
        elif kind == "fence_done":
            node.fence_busy = False
            peer = self.nodes[1 - index]
            fenced = not peer.powered
            node.fence = FenceReport(args[2], fenced, "powered off" if fenced else "simulated failure")
            self._evaluate(node)
        elif kind == "lan_round":
            self._finish_round(node, started=args[2])
        elif kind == "lan_start":
            node.start_due = None
            self._next_round(node)
        elif kind == "actions":
            transition = args[2]
            promoting = node.state is not None and node.state.state == NodeState.TAKEOVER
            outcome = node.promote_result if promoting else "ok"
            if promoting and node.stall_fired > node.stalls_at_actions:
                outcome = "halted"  # the stall fence fired meanwhile: the plan halts, nothing acquired
            if node.state is not None and node.state.transition == transition:
                node.relays_closed = promoting and outcome == "ok"
                if outcome not in ("veto", "halted"):  # a failed promote may have added the address before it failed
                    node.address = promoting
            node.actions = ActionsReport(transition, ok=outcome == "ok", vetoed=outcome == "veto",
                                         detail="" if outcome == "ok" else f"simulated {outcome}")
            self._evaluate(node)

    def _next_round(self, node: Node) -> None:
        """Start a probe round if the core wants rounds, none is in flight and the cadence allows one now."""
        if node.probe_every is None or node.round_started is not None:
            return
        due = node.last_round_start + node.probe_every
        if self.now >= due:
            node.round_started = self.now
            self._push(self.now + PROBE_ROUND_S, "lan_round", node.index, node.generation, self.now)
        elif node.start_due != due:
            node.start_due = due
            self._push(due, "lan_start", node.index, node.generation)

    def _finish_round(self, node: Node, started: float) -> None:
        """A probe round ends: what the LAN showed while it ran (the other box's address, or its probes)."""
        node.round_started = None
        node.last_round_end = self.now
        node.last_round_start = started
        other = self.nodes[1 - node.index]
        # With fencing the model probes the peer's own address too: its box answers while powered and plugged.
        seen = (other.powered and other.lan_up) if node.settings.fencing else None
        seen = seen and self.switch_forwards if seen is not None else None
        if not node.lan_up:
            node.lan = LanProbe(started, LanVerdict.LINK_DOWN, detail="eth0 has no carrier")
        elif not self.switch_forwards:
            node.lan = LanProbe(started, LanVerdict.INCONCLUSIVE, detail="control target silent", peer_seen=seen)
        elif other.address and other.lan_up:
            node.lan = LanProbe(started, LanVerdict.HELD, holder=other.settings.node, peer_seen=seen)
        elif other.lan_up and (other.round_started is not None or other.last_round_end >= started):
            node.lan = LanProbe(started, LanVerdict.CONTENDED, holder=other.settings.node, peer_seen=seen)
        else:
            node.lan = LanProbe(started, LanVerdict.FREE, peer_seen=seen)
        self._evaluate(node)

    # ------------------------------------------------------------------ invariants

    def joined_for(self, count_stalls: bool = True) -> float:
        """How long the nodes have been joined without a break.

        Joined means: some link carries both directions (a fault elsewhere does not
        matter), or, once the last fault has settled, some direction is carried
        at all. Over a one-way link the deaf node may take over after any fault
        (it cannot hear the peer); the node that hears must then resolve it.
        """
        # A stalled process is like a cable pulled out for the length of the stall.
        stalled = max([end for end in self.stall_ends if end <= self.now], default=0.0) if count_stalls else 0.0
        if count_stalls and any(end > self.now for end in self.stall_ends):
            return -1.0
        both = [self.now - max(since, stalled) for since in self.bidir_since.values() if since is not None]
        one_way = [min(self.now - since, self.now - self.last_fault, self.now - stalled)
                   for since in self.carried_since.values() if since is not None]
        return max(both + one_way, default=-1.0)

    def _good(self, node: Node) -> bool:
        p = node.persisted
        st = node.state
        off_the_lan = node.settings.lan_arbitration and not node.lan_up  # it could serve nobody
        return (node.alive and node.frozen_until <= self.now and not off_the_lan
                and node.health >= node.settings.critical_health and node.witness_reachable
                and node.promote_result == "ok"
                and st is not None and not (p.maintenance or p.flap_hold or st.shutdown is not None))

    def check(self) -> None:
        """Safety: at most one holder once joined for `settle`, and with LAN arbitration never two boxes
        answering for the shared address. Liveness: a good node means a holder."""
        # A box whose cable is pulled answers nobody; behind a hung switch, nobody answers anybody.
        owners = [n.settings.node for n in self.nodes if n.address and n.lan_up] if self.switch_forwards else []
        if len(owners) > 1 and any(n.settings.lan_arbitration for n in self.nodes):
            self.violations.append(f"t={self.now:.3f}: both boxes answer for the shared address")
        if all(n.fenced for n in self.nodes):
            self.violations.append(f"t={self.now:.3f}: the boxes fenced each other")
        closed = [n for n in self.nodes if n.alive and n.relays_closed]
        if len(closed) > 1 and self.joined_for(count_stalls=False) >= self.settle:
            self.violations.append(f"t={self.now:.3f}: both nodes' trunk relays closed while joined for "
                                   f"{self.joined_for():.2f}s")
        holders = [n for n in self.nodes if n.holds]
        if len(holders) > 1 and self.joined_for() >= self.settle:
            self.violations.append(f"t={self.now:.3f}: both nodes hold resources while joined for "
                                   f"{self.joined_for():.2f}s: {[n.state.state.name for n in holders]}")
        for node in self.nodes:
            good = self._good(node)
            if not good:
                self.good_since[node.index] = None
            elif self.good_since[node.index] is None:
                self.good_since[node.index] = self.now
        if any(n.alive and n.state is not None and n.state.state in HOLDING for n in self.nodes):
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = self.now
        for node in self.nodes:
            since = self.good_since[node.index]
            if since is None:
                continue
            start = max(since, self.last_command_at, self.idle_since)
            if self.now - start >= self.liveness_window:
                self.violations.append(
                    f"t={self.now:.3f}: {node.settings.node} good since {since:.2f}s but no node ACTIVE since "
                    f"{self.idle_since:.2f}s: {[(n.settings.node, n.alive, n.state.state.name if n.state else None, n.state.reason if n.state else None) for n in self.nodes]}")
                self.idle_since = self.now  # report once per window

    def state_of(self, index: int) -> NodeState | None:
        """The node's state, or None if its daemon is not running."""
        node = self.nodes[index]
        return node.state.state if node.alive and node.state is not None else None
