"""The split-brain guard: whether a node may take over from a peer it cannot hear.

Silence on every link is not proof that the peer let go. A STANDBY node whose
peer fell silent takes over only when all of these hold:

* the peer is not foreign: no authentic packet in a protocol generation this
  node cannot read came within a deadtime (such a peer is alive and may hold
  the calls; this node cannot know, so it never takes them from it);
* it is a candidate (not in maintenance, on flap hold or shutting down);
* it is not backing off after a vetoed or failed takeover;
* its own health is at least `witness_min_health` (when set);
* with LAN arbitration on: the LAN says the shared address is free
  (`lan.lan_block`);
* with a witness configured: a witness check *started after the silence
  began* succeeded. An older result proves nothing about the partition;
* with a fence device: where the LAN cannot prove the release (inconclusive,
  held too long, or free while the peer's own address stays silent), the
  peer was fenced (`fencing.fence_block`). A node fences only after every
  other rule passed: an isolated node, or one off the LAN, never does.

Each refusal is a `Blocked` value; its code decides, its text is shown.
"""

from __future__ import annotations

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import backing_off, self_candidate
from firmware.core.cluster.fencing import fence_block
from firmware.core.cluster.lan import lan_block
from firmware.core.cluster.observe import silent_since
from firmware.core.cluster.records import Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.message import PROTOCOL_VERSION, describe_version

MAINTENANCE = Blocked(BlockCode.MAINTENANCE, "maintenance mode")
FLAP_HOLD = Blocked(BlockCode.FLAP_HOLD, "flap hold: waiting for an operator")
SHUTTING_DOWN = Blocked(BlockCode.SHUTTING_DOWN, "shutting down")
OPERATOR_HOLD = Blocked(BlockCode.OPERATOR_HOLD, "demoted by an operator")
CHECKING_WITNESS = Blocked(BlockCode.CHECKING_WITNESS, "checking the witness")


def hold(st: ClusterState) -> Blocked | None:
    """Why this node holds back from taking over on its own, if it does."""
    p = st.persisted
    if p.maintenance:
        return MAINTENANCE
    if p.flap_hold:
        return FLAP_HOLD
    if st.shutdown is not None:
        return SHUTTING_DOWN
    if p.operator_hold:
        return OPERATOR_HOLD
    return None


def guard(settings: Settings, st: ClusterState, inp: Inputs) -> Blocked | None:
    """Why a takeover from a silent peer is unsafe now, or None if the guard passes."""
    blocked = foreign_block(settings, st) or self_block(settings, st, inp)
    if blocked is not None:
        return blocked
    lan = lan_block(settings, st, inp)
    fence_answers = settings.fencing and lan is not None and lan.code is BlockCode.ADDRESS_HELD_LONG
    if lan is not None and not fence_answers:
        return lan
    return witness_block(settings, st, inp) or fence_block(settings, st, inp, lan)


def foreign_block(settings: Settings, st: ClusterState) -> Blocked | None:
    """Why the peer, alive in a protocol this node cannot read, blocks every takeover; None if it is not."""
    if st.peer.foreign_version is None:
        return None
    return Blocked(BlockCode.PEER_INCOMPATIBLE,
                   f"{settings.peer} is alive but speaks heartbeat protocol "
                   f"{describe_version(st.peer.foreign_version)}, which this node "
                   f"({describe_version(PROTOCOL_VERSION)}) cannot read: not taking over from it; "
                   "finish or roll back the update")


def self_block(settings: Settings, st: ClusterState, inp: Inputs) -> Blocked | None:
    """Why this node itself may not take over now (its state, a back-off, its health), or None."""
    if not self_candidate(st):
        return hold(st) or Blocked(BlockCode.NOT_CANDIDATE, f"cannot take over while {st.state.name}")
    if backing_off(st, inp):
        assert st.backoff is not None
        return Blocked(BlockCode.BACKING_OFF, f"{st.backoff.reason}; retrying in {st.backoff.until - inp.now:.0f} s")
    if settings.witness_min_health and inp.health < settings.witness_min_health:
        return Blocked(BlockCode.LOW_HEALTH,
                       f"own health {inp.health} is below the guard's minimum {settings.witness_min_health}")
    return None


def may_claim(settings: Settings, st: ClusterState, inp: Inputs) -> bool:
    """Whether this node could claim the address from a silent peer but for the LAN: it probes only then.

    Not while it may not take over itself, nor once its witness check failed:
    its probes would only hold the other node back (a contender yields).
    """
    if foreign_block(settings, st) is not None or self_block(settings, st, inp) is not None:
        return False
    blocked = witness_block(settings, st, inp)
    return blocked is None or blocked.code is not BlockCode.WITNESS_UNREACHABLE


def witness_block(settings: Settings, st: ClusterState, inp: Inputs) -> Blocked | None:
    """Why the witness does not (yet) back a takeover, or None (also when no witness is required)."""
    if settings.witness_required:
        since = silent_since(settings, st, inp)
        w = inp.witness
        if w is None or w.started_at < since:
            return CHECKING_WITNESS
        if not w.ok:
            return Blocked(BlockCode.WITNESS_UNREACHABLE,
                           f"witness unreachable ({w.detail}): staying STANDBY to avoid split brain")
    return None
