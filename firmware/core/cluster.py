"""The decision core: who is ACTIVE. Pure and deterministic; the clock is an input.

`step()` takes the current :class:`ClusterState` and the :class:`Inputs` of one
instant and returns the next state and its :class:`Outputs` (events to journal,
whether to send a heartbeat at once, when to be called again). `command()`
applies an operator command the same way. Nothing here does I/O.

Rules, in short:

* The peer is alive while it is heard on at least one link within `deadtime_s`.
* While the peer is alive, a node takes resources only with the peer's consent:
  it raises HANDOVER_REQUEST and promotes when the peer answers HANDOVER_GRANT
  from a state that holds nothing, in a heartbeat that acknowledges the
  request (break-before-make). A node grants only while it holds nothing and
  keeps holding nothing until the requester took over, gave up, or died.
* When the peer is silent on every link, a STANDBY node takes over only if the
  split-brain guard passes: a witness check started after the peer fell
  silent, and optionally a minimum own health.
* Two ACTIVE nodes that hear each other: the one with the lower
  (epoch, health, role preference, name order) releases. A node the peer
  cannot hear releases regardless, because the peer cannot apply the rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

from firmware.core.peer import PeerView
from firmware.core.message import Heartbeat
from firmware.core.states import Flag, NodeState, Role

S = NodeState


@dataclass(frozen=True)
class Settings:
    """The parts of the configuration the core decides with (times in seconds)."""

    node: str
    peer: str
    role: Role = Role.EQUAL
    heartbeat_s: float = 0.1
    deadtime_s: float = 0.3
    initdead_s: float = 3.0
    handover_timeout_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    critical_health: int = 30               # below this a node hands over (and is not elected)
    witness_required: bool = False
    witness_min_health: int = 0
    failback: str = "never"  # never | auto | window
    failback_hold_down_s: float = 60.0
    failback_min_uptime_s: float = 300.0
    failback_window_minutes: tuple[int, int] = (120, 240)  # minutes of the day, end < start wraps
    flap_max_failures: int = 3
    flap_window_s: float = 1800.0
    on_action_failure: str = "handover"  # handover | tolerate
    fence_isolated: bool = True           # ACTIVE, every link silent, witness failing: release
    fence_stall_s: float = 0.2            # ACTIVE whose own loop stalled this long: release (deadtime - heartbeat)
    takeover_backoff_s: float = 10.0      # after a vetoed or failed takeover, wait before trying again


@dataclass(frozen=True)
class Persisted:
    """What survives a restart (written atomically by the shell after every change)."""

    epoch: int = 0
    last_state: NodeState = S.STANDBY
    clean_exit: bool = True
    maintenance: bool = False
    operator_hold: bool = False
    flap_hold: bool = False
    failures: tuple[float, ...] = ()  # wall-clock times this node failed while ACTIVE

    def to_json(self) -> dict[str, Any]:
        """Plain data for the state file."""
        data = dataclasses.asdict(self)
        data["last_state"] = self.last_state.name
        data["failures"] = list(self.failures)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Persisted":
        """Inverse of to_json; unknown keys are ignored so old state files still load.

        Raises ValueError naming the bad key if a value cannot be understood.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            if "last_state" in values:
                values["last_state"] = NodeState[values["last_state"]]
            if "failures" in values:
                values["failures"] = tuple(float(x) for x in values["failures"])
            for key in ("epoch",):
                if key in values:
                    values[key] = int(values[key])
            for key in ("clean_exit", "maintenance", "operator_hold", "flap_hold"):
                if key in values and not isinstance(values[key], bool):
                    raise ValueError(f"{key} must be true or false")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"state file value not understood: {exc}") from None
        return cls(**values)


@dataclass(frozen=True)
class WitnessResult:
    """Outcome of one split-brain witness check."""

    ok: bool
    started_at: float  # monotonic time the check started
    detail: str = ""


@dataclass(frozen=True)
class ActionsReport:
    """The shell finished the actions of one TAKEOVER or RELEASING."""

    transition: int
    ok: bool = True
    vetoed: bool = False
    detail: str = ""
    relays_released: bool = True  # for a release: every relay group reached its released position


@dataclass(frozen=True)
class Inputs:
    """Everything the core may look at for one decision."""

    now: float                 # monotonic seconds
    wall: float                # wall-clock seconds (for flap history across restarts)
    minute_of_day: int         # local time, for the failback window
    tick: int                  # our current heartbeat tick
    peer: PeerView
    health: int = 100
    witness: WitnessResult | None = None
    actions: ActionsReport | None = None  # the latest finished actions
    stalled_for_s: float = 0.0  # how late the shell's heartbeat tick ran (its loop was stalled this long)


@dataclass(frozen=True)
class Event:
    """Something worth journaling."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outputs:
    """What the shell must do after a decision."""

    events: tuple[Event, ...] = ()
    send_now: bool = False
    wake_at: float | None = None
    want_witness: bool = False
    persist: bool = False


@dataclass(frozen=True)
class Reply:
    """Answer to an operator command."""

    ok: bool
    message: str


@dataclass(frozen=True)
class LinkStatus:
    """Whether a link carries heartbeats each way."""

    name: str
    rx: bool  # we hear the peer on it
    tx: bool  # the peer confirms hearing us on it


@dataclass(frozen=True)
class PeerFacts:
    """What this node has concluded about its peer from the PeerViews it was given."""

    alive: bool = False               # heard on at least one link within deadtime_s
    found_at: float | None = None     # when it was last found after a silence
    epoch: int = 0                    # the highest epoch it ever announced
    boot: bytes | None = None         # the boot id of the daemon we hear
    links: tuple[LinkStatus, ...] = ()


@dataclass(frozen=True)
class Request:
    """This node asks the peer to release so it can take over (HANDOVER_REQUEST)."""

    tick: int                 # our tick when we began asking: the peer's grant must acknowledge it
    deadline: float           # give up asking then
    by_operator: bool = False  # an operator's promote, not an election
    forced: bool = False       # the operator forced it


@dataclass(frozen=True)
class Grant:
    """This node granted the peer's request (HANDOVER_GRANT) and holds nothing until the peer acts."""

    deadline: float  # stop waiting then


@dataclass(frozen=True)
class Shutdown:
    """This node is leaving the cluster."""

    handover: bool   # it held resources when the shutdown began: wait for the peer to take over
    deadline: float  # stop waiting for the peer then


@dataclass(frozen=True)
class Backoff:
    """No takeover before `until`: the last one was vetoed or failed."""

    until: float
    reason: str


@dataclass(frozen=True)
class ClusterState:
    """The core's state between decisions."""

    state: NodeState
    since: float
    started_at: float
    persisted: Persisted
    transition: int = 0
    reason: str = "starting"
    peer: PeerFacts = PeerFacts()
    request: Request | None = None
    grant: Grant | None = None
    release_for_request: bool = False  # the running release answers a peer request
    shutdown: Shutdown | None = None
    backoff: Backoff | None = None
    action_alarm: str | None = None     # the last promote/demote left something undone
    release_failed: bool = False        # the last release left a relay closed (e.g. a welded contact)


def initial_state(settings: Settings, persisted: Persisted, now: float, wall: float) -> tuple[ClusterState, Outputs]:
    """The state at daemon start. A crash while holding resources counts as a failure."""
    events = [Event("start", {"epoch": persisted.epoch, "last_state": persisted.last_state.name})]
    if not persisted.clean_exit and persisted.last_state.holds_resources:
        persisted, flap_events = _record_failure(settings, persisted, wall, "restarted after a crash while ACTIVE")
        events += flap_events
    persisted = replace(persisted, clean_exit=False)
    state = ClusterState(state=S.STARTING, since=now, started_at=now, persisted=persisted,
                         reason=f"waiting up to {settings.initdead_s:g} s for the peer")
    return state, Outputs(events=tuple(events), send_now=True, wake_at=now + settings.initdead_s, persist=True)


# --------------------------------------------------------------------------- helpers


def _record_failure(settings: Settings, persisted: Persisted, wall: float, why: str) -> tuple[Persisted, list[Event]]:
    recent = tuple(t for t in persisted.failures if wall - t < settings.flap_window_s) + (wall,)
    events = [Event("failure", {"reason": why, "count": len(recent)})]
    hold = persisted.flap_hold
    if len(recent) >= settings.flap_max_failures and not hold:
        hold = True
        events.append(Event("flap.hold", {
            "failures": len(recent), "window_min": settings.flap_window_s / 60,
            "message": "failed too often; staying STANDBY until an operator runs `tandem promote` or `tandem maintenance off`",
        }))
    return replace(persisted, failures=recent, flap_hold=hold), events


def _healthy(health: int, settings: Settings) -> bool:
    return health >= settings.critical_health


def _peer_message(st: ClusterState, inp: Inputs) -> Heartbeat | None:
    return inp.peer.message if st.peer.alive else None


def _peer_candidate(msg: Heartbeat) -> bool:
    """Whether the peer may be elected to take over."""
    blocked = Flag.MAINTENANCE | Flag.FLAP_HOLD | Flag.SHUTTING_DOWN | Flag.BACKING_OFF
    return msg.state in (S.STANDBY, S.TAKEOVER, S.ACTIVE, S.RELEASING) and not msg.flags & blocked


def _self_candidate(st: ClusterState) -> bool:
    """Whether this node may be elected or take over from a dead peer.

    An operator hold does not block: it only ranks the node last, so a demoted
    node still takes the calls when nobody else can.
    """
    p = st.persisted
    return st.state not in (S.STARTING, S.STOPPED) and not (p.maintenance or p.flap_hold or st.shutdown is not None)


def _rank(hold: bool, health: int, role: Role, name: str, settings: Settings) -> tuple[Any, ...]:
    # Name order: the name that sorts first wins, so negate its code points.
    return (int(not hold), int(_healthy(health, settings)), role.preference, health,
            tuple(-ord(c) for c in name))


def _self_preferred(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """Election when nobody holds resources: True if this node should take over."""
    if not _self_candidate(st) or _backing_off(st, inp):
        return False
    if not _peer_candidate(msg):
        return True
    mine = _rank(st.persisted.operator_hold, inp.health, settings.role, settings.node, settings)
    theirs = _rank(bool(msg.flags & Flag.OPERATOR_HOLD), msg.health, msg.role, msg.node, settings)
    return mine > theirs


def _self_wins_dual_active(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """Deterministic tie-break both nodes compute alike: epoch, health, role, name."""
    def key(epoch: int, health: int, role: Role, name: str) -> tuple[Any, ...]:
        return (epoch, health, role.preference, tuple(-ord(c) for c in name))
    return key(st.persisted.epoch, inp.health, settings.role, settings.node) > key(msg.epoch, msg.health, msg.role, msg.node)


def _in_window(minute: int, window: tuple[int, int]) -> bool:
    start, end = window
    return start <= minute < end if start <= end else minute >= start or minute < end


def _go(st: ClusterState, new: NodeState, now: float, reason: str, **changes: Any) -> ClusterState:
    persisted = changes.pop("persisted", st.persisted)
    if new.holds_resources or new == S.STANDBY:
        persisted = replace(persisted, last_state=new)
    return replace(st, state=new, since=now, transition=st.transition + 1, reason=reason,
                   persisted=persisted, **changes)


def _operator_request(st: ClusterState) -> bool:
    return st.request is not None and st.request.by_operator


def _clear_request(st: ClusterState) -> ClusterState:
    return replace(st, request=None)


def _takeover(settings: Settings, st: ClusterState, inp: Inputs, reason: str) -> ClusterState:
    epoch = max(st.persisted.epoch, st.peer.epoch) + 1
    persisted = replace(st.persisted, epoch=epoch, operator_hold=False)
    st = _clear_request(st)
    return _go(st, S.TAKEOVER, inp.now, reason, persisted=persisted, grant=None)


def _release(st: ClusterState, inp: Inputs, reason: str, for_request: bool = False) -> ClusterState:
    return _go(_clear_request(st), S.RELEASING, inp.now, reason, release_for_request=for_request)


# --------------------------------------------------------------------------- observation


def _observe(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, list[Event]]:
    """Update peer liveness and link status from the PeerView; emit their events."""
    now, view, events = inp.now, inp.peer, []
    deadline = now - settings.deadtime_s
    links = tuple(
        LinkStatus(link.name,
                   rx=link.rx_at is not None and link.rx_at > deadline,
                   tx=link.tx_ok_at is not None and link.tx_ok_at > deadline - settings.heartbeat_s)
        for link in view.links
    )
    alive = any(link.rx for link in links)
    previous = {link.name: link for link in st.peer.links}
    for link in links if alive else ():  # a silent peer is reported once, as peer.lost
        old = previous.get(link.name, LinkStatus(link.name, False, False))
        was_up, up = old.rx and old.tx, link.rx and link.tx
        if was_up != up or (not up and (old.rx, old.tx) != (link.rx, link.tx) and (old.rx or old.tx)):
            events.append(Event("link.up" if up else "link.down",
                                {"link": link.name, "rx": link.rx, "tx": link.tx, "detail": _link_detail(link)}))
    msg = view.message
    changes: dict[str, Any] = {"links": links, "alive": alive}
    if alive and not st.peer.alive:
        changes["found_at"] = now
        events.append(Event("peer.found", {"peer": settings.peer,
                                           "state": msg.state.name if msg else None}))
    elif st.peer.alive and not alive:
        planned = msg is not None and (msg.state == S.STOPPED or bool(msg.flags & Flag.SHUTTING_DOWN))
        events.append(Event("peer.lost", {"peer": settings.peer, "planned": planned,
                                          "last_state": msg.state.name if msg else None}))
    if alive and view.boot_id != st.peer.boot:
        if st.peer.boot is not None:
            events.append(Event("peer.restarted", {"peer": settings.peer}))
        changes["boot"] = view.boot_id
    if msg is not None and msg.epoch > st.peer.epoch:
        changes["epoch"] = msg.epoch
    return replace(st, peer=replace(st.peer, **changes)), events


def _link_detail(link: LinkStatus) -> str:
    if link.rx and link.tx:
        return "carries heartbeats both ways"
    if link.rx:
        return "one-way: the peer does not hear us on this link"
    if link.tx:
        return "one-way: we do not hear the peer on this link"
    return "silent"


def alarms(settings: Settings, st: ClusterState) -> list[str]:
    """Active alarm texts for status and the panel."""
    found: list[str] = []
    if st.peer.alive:
        for link in st.peer.links:
            if not (link.rx and link.tx):
                found.append(f"link {link.name}: {_link_detail(link)} (peer still heard on another link)")
    elif st.state != S.STARTING:
        found.append(f"peer {settings.peer} silent on every link")
    p = st.persisted
    if p.flap_hold:
        found.append("flap hold: failed too often; staying STANDBY until an operator acts")
    if p.maintenance:
        found.append("maintenance mode: this node will not become ACTIVE")
    if st.action_alarm:
        found.append(st.action_alarm)
    return found


# --------------------------------------------------------------------------- the decision


def step(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, Outputs]:
    """One decision at `inp.now`. Returns the next state and what the shell must do."""
    before = st
    st, events = _observe(settings, st, inp)
    if st.backoff is not None and inp.now >= st.backoff.until:
        st = replace(st, backoff=None)
    if st.state == S.STARTING:
        if st.peer.alive:
            st = _go(st, S.STANDBY, inp.now, "peer found")
        elif inp.now - st.started_at >= settings.initdead_s:
            st = _go(st, S.STANDBY, inp.now, "peer not heard within initdead")
    if st.shutdown is not None:
        st = _shutdown_progress(settings, st, inp)
    if st.state == S.STANDBY:
        st, more = _standby(settings, st, inp)
        events += more
    elif st.state == S.TAKEOVER:
        st = _dual_active(settings, st, inp) or st
        report = inp.actions
        if st.state == S.TAKEOVER and report is not None and report.transition == st.transition:
            st, more = _takeover_done(settings, st, inp, report)
            events += more
    elif st.state == S.ACTIVE:
        st, more = _active(settings, st, inp)
        events += more
    elif st.state == S.RELEASING and inp.actions is not None and inp.actions.transition == st.transition:
        report = inp.actions
        if not report.ok:
            events.append(Event("demote.failed", {"detail": report.detail}))
        grant = Grant(inp.now + settings.handover_timeout_s) if st.release_for_request else None
        st = _go(st, S.STANDBY, inp.now, st.reason, grant=grant,
                 release_for_request=False, release_failed=not report.relays_released,
                 action_alarm=None if report.ok else f"demote actions failed: {report.detail}")
        if st.shutdown is not None:
            st = _shutdown_progress(settings, st, inp)
    return _finish(settings, before, st, inp, events)


def _takeover_done(settings: Settings, st: ClusterState, inp: Inputs,
                   report: ActionsReport) -> tuple[ClusterState, list[Event]]:
    """Promote actions finished: become ACTIVE, or back off after a veto or a failure."""
    if report.ok:
        return _go(st, S.ACTIVE, inp.now, st.reason, action_alarm=None, release_failed=False), []
    backoff = inp.now + settings.takeover_backoff_s
    if report.vetoed:
        # The promote.before hooks run before any action, so nothing was acquired.
        st = _go(st, S.STANDBY, inp.now, f"promotion vetoed: {report.detail}",
                 backoff=Backoff(backoff, f"promotion vetoed: {report.detail}"))
        return st, [Event("promote.vetoed", {"detail": report.detail, "retry_in_s": settings.takeover_backoff_s})]
    msg = _peer_message(st, inp)
    peer_ok = msg is not None and _peer_candidate(msg) and _healthy(msg.health, settings)
    if settings.on_action_failure == "handover" and peer_ok:
        persisted, events = _record_failure(settings, st.persisted, inp.wall, f"promote actions failed: {report.detail}")
        st = replace(st, persisted=persisted, backoff=Backoff(backoff, f"promote actions failed: {report.detail}"))
        events.insert(0, Event("promote.failed", {"detail": report.detail, "action": f"handing back to {settings.peer}"}))
        return _release(st, inp, f"promote actions failed; handing back to {settings.peer}"), events
    why = "tolerated by configuration" if settings.on_action_failure == "tolerate" else "no healthy peer to hand back to"
    st = _go(st, S.ACTIVE, inp.now, st.reason, action_alarm=f"promote actions failed ({why}): {report.detail}")
    return st, [Event("promote.failed", {"detail": report.detail, "action": f"staying ACTIVE: {why}"})]


def _backing_off(st: ClusterState, inp: Inputs) -> bool:
    return st.backoff is not None and inp.now < st.backoff.until


def _finish(settings: Settings, before: ClusterState, st: ClusterState, inp: Inputs,
            events: list[Event]) -> tuple[ClusterState, Outputs]:
    if st.state != before.state:
        events.append(Event("state", {"from": before.state.name, "to": st.state.name,
                                      "reason": st.reason, "epoch": st.persisted.epoch}))
    flags_changed = heartbeat_flags(st) != heartbeat_flags(before)
    last_rx = inp.peer.last_rx
    wake = [st.started_at + settings.initdead_s] if st.state == S.STARTING else []
    if last_rx is not None and st.peer.alive:
        wake.append(last_rx + settings.deadtime_s + 1e-4)
    for record in (st.request, st.grant, st.shutdown):
        if record is not None:
            wake.append(record.deadline)
    if st.backoff is not None:
        wake.append(st.backoff.until)
    silent_since = _silent_since(settings, st, inp)
    silent_for = inp.now - silent_since
    # An ACTIVE node checks sooner than a standby, so it can fence itself before the peer's
    # deadtime runs out; both are woken exactly when their check is due, not at the next tick.
    check_after = 1.2 * settings.heartbeat_s if st.state == S.ACTIVE else 1.5 * settings.heartbeat_s
    checking = settings.witness_required and (
        st.state in (S.STARTING, S.STANDBY) or (settings.fence_isolated and st.state == S.ACTIVE))
    if checking and silent_for < check_after and last_rx is not None:
        wake.append(silent_since + check_after + 1e-4)
    want_witness = checking and silent_for >= check_after
    return st, Outputs(
        events=tuple(events),
        send_now=st.state != before.state or flags_changed,
        wake_at=min(wake) if wake else None,
        want_witness=want_witness,
        persist=st.persisted != before.persisted,
    )


def _standby(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, list[Event]]:
    events: list[Event] = []
    msg = _peer_message(st, inp)
    if msg is None or (_peer_deaf(settings, st, inp, msg) and not msg.state.holds_resources):
        # A peer that cannot hear us cannot consent to a handover: judge as if it were silent.
        return _standby_alone(settings, st, inp)
    # The peer is alive.
    if msg.state == S.ACTIVE and st.persisted.operator_hold and _healthy(msg.health, settings):
        # The demote is fulfilled: the peer carries the calls. From now on this node is a normal standby.
        st = replace(st, persisted=replace(st.persisted, operator_hold=False))
    peer_requesting = bool(msg.flags & Flag.HANDOVER_REQUEST)
    if st.grant is not None:
        done = msg.state.holds_resources or not peer_requesting
        expired = inp.now >= st.grant.deadline
        if done or expired:
            st = replace(st, grant=None)
            if expired and not done:
                events.append(Event("handover.timeout", {"side": "granter", "peer": settings.peer}))
        if st.grant is not None:
            return replace(st, reason=f"handing over to {settings.peer}"), events
    if st.request is not None and msg.state == S.RELEASING:
        # The peer is running its demote actions for us; they may take longer than the timeout.
        deadline = max(st.request.deadline, inp.now + settings.handover_timeout_s)
        st = replace(st, request=replace(st.request, deadline=deadline))
    # Give up a request that timed out.
    if st.request is not None and inp.now >= st.request.deadline:
        events.append(Event("handover.timeout", {"side": "requester", "peer": settings.peer,
                                                 "operator": st.request.by_operator}))
        st = _clear_request(st)
    if msg.state.holds_resources:
        return _standby_behind_active(settings, st, inp, msg, events)
    # Nobody holds resources (the peer is STARTING, STANDBY or STOPPED).
    if msg.state == S.STOPPED and _self_candidate(st) and not _backing_off(st, inp):
        return _takeover(settings, st, inp, f"{settings.peer} left the cluster"), events
    preferred = _self_preferred(settings, st, inp, msg)
    wants = _operator_request(st) or (msg.state == S.STANDBY and preferred)
    if peer_requesting:
        # Two requests at once: an operator's beats an election's; between equals the election decides.
        theirs = (bool(msg.flags & Flag.OPERATOR_REQUEST), not preferred)
        ours = (_operator_request(st), preferred)
        if not wants or theirs > ours:
            st = _clear_request(st)
            return replace(st, grant=Grant(inp.now + settings.handover_timeout_s),
                           reason=f"letting {settings.peer} take over"), events
    if wants:
        return _request_or_take(settings, st, inp, msg, events)
    st = _clear_request(st)
    return replace(st, reason=_standby_reason(settings, st, msg)), events


def _hold_reason(st: ClusterState) -> str | None:
    """Why this node holds back from taking over on its own, if it does."""
    p = st.persisted
    if p.maintenance:
        return "maintenance mode"
    if p.flap_hold:
        return "flap hold: waiting for an operator"
    if st.shutdown is not None:
        return "shutting down"
    if p.operator_hold:
        return "demoted by an operator"
    return None


def _standby_reason(settings: Settings, st: ClusterState, msg: Heartbeat) -> str:
    held = _hold_reason(st)
    if held:
        return held
    if msg.state == S.STARTING:
        return f"waiting for {settings.peer} to finish starting"
    return f"{settings.peer} is preferred"


def _request_or_take(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat,
                     events: list[Event]) -> tuple[ClusterState, list[Event]]:
    """Ask the peer for consent, or take over if it already consented to this request."""
    if st.request is None:
        st = replace(st, request=Request(tick=inp.tick + 1, deadline=inp.now + settings.handover_timeout_s))
        events.append(Event("handover.request", {"peer": settings.peer, "operator": st.request.by_operator}))
    granted = (bool(msg.flags & Flag.HANDOVER_GRANT) and not msg.state.holds_resources
               and inp.peer.acked_tick >= st.request.tick)
    if granted:
        why = "operator promote" if st.request.by_operator else f"{settings.peer} handed over"
        return _takeover(settings, st, inp, why), events
    return replace(st, reason=f"asking {settings.peer} to hand over"), events


def _standby_behind_active(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat,
                           events: list[Event]) -> tuple[ClusterState, list[Event]]:
    """STANDBY while the peer holds resources: maybe ask for a failback or an operator handover."""
    if msg.state != S.ACTIVE:
        return replace(st, reason=f"{settings.peer} is {msg.state.name}"), events
    wants = _operator_request(st) or _failback_due(settings, st, inp, msg)
    if not wants:
        st = _clear_request(st)
        return replace(st, reason=f"{settings.peer} is ACTIVE"), events
    return _request_or_take(settings, st, inp, msg, events)


def _failback_due(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    if settings.failback == "never" or settings.role != Role.PRIMARY or msg.role != Role.SECONDARY:
        return False
    if not _self_candidate(st) or st.persisted.operator_hold or _backing_off(st, inp) \
            or not _healthy(inp.health, settings):
        return False
    found = st.peer.found_at if st.peer.found_at is not None else inp.now
    if inp.now - found < settings.failback_hold_down_s or inp.now - st.started_at < settings.failback_min_uptime_s:
        return False
    return settings.failback == "auto" or _in_window(inp.minute_of_day, settings.failback_window_minutes)


def _silent_since(settings: Settings, st: ClusterState, inp: Inputs) -> float:
    """Since when the nodes have had no two-way contact (for the witness's freshness)."""
    msg = _peer_message(st, inp)
    if msg is not None and _peer_deaf(settings, st, inp, msg):
        times = [link.tx_ok_at for link in inp.peer.links if link.tx_ok_at is not None]
        return max(times, default=st.started_at)
    last_rx = inp.peer.last_rx
    return last_rx if last_rx is not None else st.started_at


def _guard(settings: Settings, st: ClusterState, inp: Inputs) -> str | None:
    """Why a takeover from a silent peer is unsafe now, or None if the guard passes."""
    if not _self_candidate(st):
        return _hold_reason(st) or f"cannot take over while {st.state.name}"
    if _backing_off(st, inp):
        assert st.backoff is not None
        return f"{st.backoff.reason}; retrying in {st.backoff.until - inp.now:.0f} s"
    if settings.witness_min_health and inp.health < settings.witness_min_health:
        return f"own health {inp.health} is below the guard's minimum {settings.witness_min_health}"
    if settings.witness_required:
        silent_since = _silent_since(settings, st, inp)
        w = inp.witness
        if w is None or w.started_at < silent_since:
            return "checking the witness"
        if not w.ok:
            return f"witness unreachable ({w.detail}): staying STANDBY to avoid split brain"
    return None


def _standby_alone(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, list[Event]]:
    st = _clear_request(replace(st, grant=None))
    blocked = _guard(settings, st, inp)
    if blocked is None:
        return _takeover(settings, st, inp, f"{settings.peer} silent on every link"), []
    events = []
    if blocked != st.reason and blocked != "checking the witness":
        events.append(Event("takeover.blocked", {"reason": blocked}))
    held = blocked == _hold_reason(st)
    return replace(st, reason=blocked if held else f"{settings.peer} silent on every link; {blocked}"), events


def _peer_deaf(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """The peer has heard nothing from us for a deadtime although we have been hearing it."""
    heard_long_enough = st.peer.found_at is not None and inp.now - st.peer.found_at >= settings.deadtime_s
    return heard_long_enough and bool(msg.flags & Flag.PEER_SILENT) and not any(link.tx for link in st.peer.links)


def _dual_active(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState | None:
    """If both nodes hold resources, decide whether this one releases."""
    msg = _peer_message(st, inp)
    if msg is None or msg.state not in (S.TAKEOVER, S.ACTIVE):
        return None
    if _peer_deaf(settings, st, inp, msg):
        return _release(st, inp, f"dual ACTIVE: {settings.peer} cannot hear this node, so this node yields")
    if _self_wins_dual_active(settings, st, inp, msg):
        return None
    return _release(st, inp, f"dual ACTIVE resolved in favour of {settings.peer} (epoch, health, role, name)")


def _active(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, list[Event]]:
    fenced = _self_fence(settings, st, inp)
    if fenced is not None:
        return fenced
    resolved = _dual_active(settings, st, inp)
    if resolved is not None:
        return resolved, [Event("dual_active", {"peer": settings.peer, "yield": True})]
    msg = _peer_message(st, inp)
    if msg is None or msg.state != S.STANDBY:
        return replace(st, reason="carrying the calls"), []
    peer_ok = _peer_candidate(msg) and _healthy(msg.health, settings)
    if msg.flags & Flag.HANDOVER_REQUEST and (peer_ok or msg.flags & Flag.FORCED):
        return _release(st, inp, f"{settings.peer} asked for a handover", for_request=True), []
    if not _healthy(inp.health, settings) and peer_ok and not msg.flags & Flag.OPERATOR_HOLD:
        persisted, events = _record_failure(settings, st.persisted, inp.wall,
                                            f"health {inp.health} below critical {settings.critical_health}")
        st = replace(st, persisted=persisted)
        events.insert(0, Event("health.critical", {"health": inp.health, "critical": settings.critical_health,
                                                   "action": f"handing over to {settings.peer}"}))
        return _release(st, inp, f"own health {inp.health} is critical; {settings.peer} is healthy"), events
    return replace(st, reason="carrying the calls"), []


def _self_fence(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, list[Event]] | None:
    """An ACTIVE node that may no longer be the right one releases on its own.

    * Its own loop stalled for `fence_stall_s` or more: its heartbeats stopped, so the
      peer may have declared it dead and taken over.
    * Every link has been silent for more than a heartbeat and the witness check
      (started after the silence began) fails: this node is the isolated one; the
      peer, if it reaches the witness, takes over after its deadtime.
    """
    if settings.fence_stall_s and inp.stalled_for_s >= settings.fence_stall_s:
        why = f"self-fence: this node's loop stalled {inp.stalled_for_s:.2f} s, so {settings.peer} may have taken over"
        return _release(st, inp, why), [Event("fence", {"cause": "stall", "stalled_s": round(inp.stalled_for_s, 3)})]
    if not (settings.fence_isolated and settings.witness_required):
        return None
    # Not "peer dead" (that takes the whole deadtime): fencing must finish before the peer's
    # deadtime runs out, so a little over one missed heartbeat of silence on every link counts.
    silent_since = _silent_since(settings, st, inp)
    if inp.now - silent_since < 1.2 * settings.heartbeat_s:
        return None
    w = inp.witness
    if w is not None and not w.ok and w.started_at >= silent_since:
        why = f"self-fence: isolated ({settings.peer} silent on every link and the witness unreachable: {w.detail})"
        return _release(st, inp, why), [Event("fence", {"cause": "isolated", "witness": w.detail})]
    return None


def _shutdown_progress(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState:
    """Leave the cluster: release first, let the peer take over, then stop."""
    if st.state in (S.ACTIVE, S.TAKEOVER):
        return _release(st, inp, "shutting down")
    if st.state not in (S.STANDBY, S.STARTING):
        return st  # RELEASING: wait for the demote actions
    msg = _peer_message(st, inp)
    assert st.shutdown is not None
    expired = inp.now >= st.shutdown.deadline
    waiting_for_peer = (st.shutdown.handover and msg is not None and _peer_candidate(msg)
                        and not msg.state.holds_resources)
    if waiting_for_peer and not expired:
        return st
    persisted = replace(st.persisted, clean_exit=True)
    return _go(_clear_request(st), S.STOPPED, inp.now, "shut down", persisted=persisted,
               grant=None)


# --------------------------------------------------------------------------- commands


def command(settings: Settings, st: ClusterState, inp: Inputs, name: str,
            force: bool = False) -> tuple[ClusterState, Outputs, Reply]:
    """Apply an operator command. Unsafe requests are refused with the reason unless `force`."""
    st, observed = _observe(settings, st, inp)
    before = st
    handler = _COMMANDS.get(name)
    if handler is None:
        return _command_result(settings, before, st, inp, observed, Reply(False, f"unknown command {name!r}"), name, force)
    st, reply = handler(settings, st, inp, force)
    return _command_result(settings, before, st, inp, observed, reply, name, force)


def _command_result(settings: Settings, before: ClusterState, st: ClusterState, inp: Inputs,
                    events: list[Event], reply: Reply, name: str, force: bool) -> tuple[ClusterState, Outputs, Reply]:
    kind = "command" if reply.ok else "refused"
    events = events + [Event(kind, {"command": name, "force": force, "message": reply.message})]
    st, out = _finish(settings, before, st, inp, events)
    return st, out, reply


def _peer_takeover_problem(settings: Settings, st: ClusterState, inp: Inputs) -> str | None:
    """Why the peer could not take the calls if this node stepped down, or None."""
    msg = _peer_message(st, inp)
    if msg is None:
        return f"{settings.peer} is silent on every link; stepping down would leave no ACTIVE node"
    if msg.flags & Flag.MAINTENANCE:
        return f"{settings.peer} is in maintenance"
    if msg.flags & Flag.FLAP_HOLD:
        return f"{settings.peer} is held STANDBY after failing too often (flap hold)"
    if msg.flags & Flag.SHUTTING_DOWN or msg.state == S.STOPPED:
        return f"{settings.peer} is leaving the cluster"
    if msg.state == S.STARTING:
        return f"{settings.peer} is still starting"
    if not _healthy(msg.health, settings):
        return f"{settings.peer} is unhealthy (health {msg.health} below critical {settings.critical_health})"
    return None


def _cmd_promote(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    if st.state in (S.ACTIVE, S.TAKEOVER):
        return st, Reply(True, f"already {st.state.name}")
    if st.state in (S.RELEASING, S.STOPPED) or st.shutdown is not None:
        leaving = " and shutting down" if st.shutdown is not None else ""
        return st, Reply(False, f"cannot promote while {st.state.name}{leaving}")
    if st.persisted.maintenance:
        return st, Reply(False, "this node is in maintenance; run `tandem maintenance off` first")
    if not _healthy(inp.health, settings) and not force:
        return st, Reply(False, f"own health {inp.health} is below critical {settings.critical_health}; use --force to promote anyway")
    if st.state == S.STARTING and not st.peer.alive:
        # Not even --force: until initdead has passed this node does not know whether the peer is ACTIVE.
        left = st.started_at + settings.initdead_s - inp.now
        return st, Reply(False, f"still starting: listening for {settings.peer} for another {max(left, 0):.1f} s; try again then")
    persisted = replace(st.persisted, operator_hold=False, flap_hold=False)
    st = replace(st, persisted=persisted, grant=None)
    if st.peer.alive:
        st = replace(st, request=Request(tick=inp.tick + 1, deadline=inp.now + settings.handover_timeout_s,
                                         by_operator=True, forced=force))
        if st.state == S.STARTING:
            st = _go(st, S.STANDBY, inp.now, "operator promote")
        return st, Reply(True, f"asking {settings.peer} to hand over")
    blocked = _guard(settings, st, inp)
    if blocked is not None and not force:
        return st, Reply(False, f"{settings.peer} is silent on every link and {blocked}; use --force to promote anyway")
    return _takeover(settings, st, inp, "operator promote" + (" (forced)" if force else "")), Reply(True, "taking over")


def _cmd_demote(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    if st.state not in (S.ACTIVE, S.TAKEOVER):
        return st, Reply(True, f"not ACTIVE ({st.state.name}); nothing to demote")
    problem = _peer_takeover_problem(settings, st, inp)
    if problem and not force:
        return st, Reply(False, f"{problem}; use --force to demote anyway")
    if problem and not st.peer.alive:
        # Forced demote with nobody to take over: stay down until the operator says otherwise.
        persisted = replace(st.persisted, maintenance=True)
        return _release(replace(st, persisted=persisted), inp, "operator demote (forced)"), Reply(
            True, "releasing; maintenance is now on so this node stays STANDBY (`tandem maintenance off` to resume)")
    persisted = replace(st.persisted, operator_hold=True)
    return _release(replace(st, persisted=persisted), inp, "operator demote"), Reply(True, f"releasing to {settings.peer}")


def _cmd_maintenance(on: bool):  # noqa: ANN202 - returns a command handler
    def handler(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
        if not on:
            persisted = replace(st.persisted, maintenance=False, flap_hold=False, operator_hold=False)
            return replace(st, persisted=persisted), Reply(True, "maintenance off; holds cleared")
        if st.state in (S.ACTIVE, S.TAKEOVER):
            problem = _peer_takeover_problem(settings, st, inp)
            if problem and not force:
                return st, Reply(False, f"{problem}; use --force to enter maintenance anyway")
            persisted = replace(st.persisted, maintenance=True)
            return _release(replace(st, persisted=persisted), inp, "maintenance on"), Reply(
                True, "maintenance on; releasing")
        persisted = replace(st.persisted, maintenance=True)
        return _clear_request(replace(st, persisted=persisted)), Reply(True, "maintenance on")
    return handler


def _cmd_shutdown(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    if st.shutdown is not None:
        return st, Reply(True, "already shutting down")
    if st.state.holds_resources and not force:
        problem = _peer_takeover_problem(settings, st, inp)
        if problem:
            return st, Reply(False, f"{problem}; use --force to shut down anyway")
    return _begin_shutdown(settings, st, inp), Reply(True, "leaving the cluster" + (
        f"; handing over to {settings.peer} first" if st.state.holds_resources else ""))


def _begin_shutdown(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState:
    """Start leaving the cluster: hand over first if this node holds resources.

    SIGTERM uses `command(..., "shutdown", force=True)`, which cannot be refused.
    """
    shutdown = Shutdown(handover=st.state.holds_resources, deadline=inp.now + settings.shutdown_timeout_s)
    st = _clear_request(replace(st, shutdown=shutdown))
    return _shutdown_progress(settings, st, inp)


_COMMANDS = {
    "promote": _cmd_promote,
    "demote": _cmd_demote,
    "maintenance-on": _cmd_maintenance(True),
    "maintenance-off": _cmd_maintenance(False),
    "shutdown": _cmd_shutdown,
}


def heartbeat_flags(st: ClusterState) -> Flag:
    """The flags this node advertises."""
    p = st.persisted
    flags = Flag.NONE
    if p.maintenance:
        flags |= Flag.MAINTENANCE
    if p.flap_hold:
        flags |= Flag.FLAP_HOLD
    if p.operator_hold:
        flags |= Flag.OPERATOR_HOLD
    if st.shutdown is not None:
        flags |= Flag.SHUTTING_DOWN
    if st.request is not None:
        flags |= Flag.HANDOVER_REQUEST
        if st.request.forced:
            flags |= Flag.FORCED
        if st.request.by_operator:
            flags |= Flag.OPERATOR_REQUEST
    if st.grant is not None:
        flags |= Flag.HANDOVER_GRANT
    if not st.peer.alive:
        flags |= Flag.PEER_SILENT
    if st.state != S.STARTING:
        flags |= Flag.STARTED
    if st.backoff is not None:
        flags |= Flag.BACKING_OFF
    if st.release_failed:
        flags |= Flag.RELEASE_FAILED
    return flags


def build_heartbeat(settings: Settings, st: ClusterState, health: int, tick: int,
              ack_boot: bytes, acks: tuple[tuple[int, int], ...]) -> Heartbeat:
    """The heartbeat this node sends now."""
    return Heartbeat(node=settings.node, state=st.state, role=settings.role, health=health,
                     flags=heartbeat_flags(st), epoch=st.persisted.epoch, tick=tick,
                     ack_boot=ack_boot, acks=acks)
