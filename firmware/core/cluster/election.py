"""Election and ranking: which node should carry the calls.

* A node is a *candidate* unless it is starting, stopped, in maintenance, on
  flap hold or shutting down (and, for the peer, backing off). An operator
  hold does not make a node ineligible; it ranks it last.
* While nobody holds resources the candidates are ranked by (no operator
  hold, healthy, role preference, health, name order): the higher rank takes
  over (with the peer's consent while the peer is alive).
* Two nodes that both hold resources compare (epoch, health, role
  preference, name order); both compute the same answer, and the lower
  releases.
* Failback (a primary taking back from a secondary) is due only by policy
  (`auto`, or `window` inside the configured minutes of the day), after the
  hold-down and minimum uptime.
"""

from __future__ import annotations

from typing import Any

from firmware.core.cluster.records import Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.message import Heartbeat
from firmware.core.states import Flag, NodeState, Role


def healthy(health: int, settings: Settings) -> bool:
    """Whether a health score is at or above the critical level."""
    return health >= settings.critical_health


def backing_off(st: ClusterState, inp: Inputs) -> bool:
    """Whether a vetoed or failed takeover still keeps this node from trying again."""
    return st.backoff is not None and inp.now < st.backoff.until


def peer_candidate(msg: Heartbeat) -> bool:
    """Whether the peer may be elected to take over."""
    blocked = Flag.MAINTENANCE | Flag.FLAP_HOLD | Flag.SHUTTING_DOWN | Flag.BACKING_OFF
    return msg.state in (NodeState.STANDBY, NodeState.TAKEOVER, NodeState.ACTIVE, NodeState.RELEASING) \
        and not msg.flags & blocked


def self_candidate(st: ClusterState) -> bool:
    """Whether this node may be elected or take over from a dead peer.

    An operator hold does not block: it only ranks the node last, so a demoted
    node still takes the calls when nobody else can.
    """
    p = st.persisted
    return st.state not in (NodeState.STARTING, NodeState.STOPPED) \
        and not (p.maintenance or p.flap_hold or st.shutdown is not None)


def _rank(hold: bool, health: int, role: Role, name: str, settings: Settings) -> tuple[Any, ...]:
    # Name order: the name that sorts first wins, so negate its code points.
    return (int(not hold), int(healthy(health, settings)), role.preference, health,
            tuple(-ord(c) for c in name))


def self_preferred(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """Election when nobody holds resources: True if this node should take over."""
    if not self_candidate(st) or backing_off(st, inp):
        return False
    if not peer_candidate(msg):
        return True
    mine = _rank(st.persisted.operator_hold, inp.health, settings.role, settings.node, settings)
    theirs = _rank(bool(msg.flags & Flag.OPERATOR_HOLD), msg.health, msg.role, msg.node, settings)
    return mine > theirs


def statically_preferred(settings: Settings, inp: Inputs) -> bool:
    """Whether this node is preferred by configuration alone (role, then name), as both nodes see it.

    For two nodes that cannot hear each other and both find the LAN free: the
    one this says True for claims first. The peer's role is its last
    heartbeat's, or the complement of ours if it was never heard.
    """
    msg = inp.peer.message
    theirs = msg.role if msg is not None else {Role.PRIMARY: Role.SECONDARY, Role.SECONDARY: Role.PRIMARY}.get(
        settings.role, Role.EQUAL)
    if settings.role.preference != theirs.preference:
        return settings.role.preference > theirs.preference
    return settings.node < settings.peer


def self_wins_dual_active(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """Deterministic tie-break both nodes compute alike: epoch, health, role, name."""
    def key(epoch: int, health: int, role: Role, name: str) -> tuple[Any, ...]:
        return (epoch, health, role.preference, tuple(-ord(c) for c in name))
    return key(st.persisted.epoch, inp.health, settings.role, settings.node) > key(msg.epoch, msg.health, msg.role, msg.node)


def in_window(minute: int, window: tuple[int, int]) -> bool:
    """Whether a minute of the day falls in [start, end) (end < start wraps past midnight)."""
    start, end = window
    return start <= minute < end if start <= end else minute >= start or minute < end


def failback_due(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """Whether this primary should now ask the ACTIVE secondary to hand back."""
    if settings.failback == "never" or settings.role != Role.PRIMARY or msg.role != Role.SECONDARY:
        return False
    if inp.failback_held:  # the pair is being updated: the calls move only in the update's own handovers
        return False
    if not self_candidate(st) or st.persisted.operator_hold or backing_off(st, inp) \
            or not healthy(inp.health, settings):
        return False
    found = st.peer.found_at if st.peer.found_at is not None else inp.now
    if inp.now - found < settings.failback_hold_down_s or inp.now - st.started_at < settings.failback_min_uptime_s:
        return False
    return settings.failback == "auto" or in_window(inp.minute_of_day, settings.failback_window_minutes)
