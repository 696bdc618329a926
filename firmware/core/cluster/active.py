"""The ACTIVE rules: when a node that holds resources lets go.

An ACTIVE node releases (enters RELEASING) when:

* it fenced itself: its own loop stalled for `fence_stall_s` (the peer may
  have declared it dead), or every link has been silent for a little over a
  heartbeat and a fresh witness check fails (this node is the isolated one);
* with LAN arbitration: the peer is silent, another host answers for the
  shared address, and this node is not the statically preferred one
  (`lan.conflict`);
* both nodes hold resources and the dual-ACTIVE rule says it yields (also
  applied in TAKEOVER): a peer that cannot hear this node cannot apply the
  rule, so this node yields; otherwise the lower (epoch, health, role, name);
* the STANDBY peer asks for a handover and is a healthy candidate (or the
  request is forced);
* its own health is critical while the peer is a healthy candidate that is
  not on operator hold (counted as a failure for the flap hold);
* it is shutting down (see `shutdown`).
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster.election import healthy, peer_candidate, self_wins_dual_active
from firmware.core.cluster.lan import conflict
from firmware.core.cluster.observe import peer_deaf, peer_message, silent_since
from firmware.core.cluster.records import Decision, Event, Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.cluster.transitions import record_failure, release, say
from firmware.core.states import Flag, NodeState


def decide_active(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """Decide as an ACTIVE node that is not leaving the cluster (`handlers.on_active` sees to that)."""
    fenced = self_fence(settings, st, inp) or conflict(settings, st, inp)
    if fenced is not None:
        return fenced
    resolved = dual_active(settings, st, inp)
    if resolved is not None:
        return Decision(resolved, (Event("dual_active", {"peer": settings.peer, "yield": True}),))
    msg = peer_message(st, inp)
    if msg is None or msg.state != NodeState.STANDBY:
        return Decision(say(st, "carrying the calls"))
    peer_ok = peer_candidate(msg) and healthy(msg.health, settings)
    if msg.flags & Flag.HANDOVER_REQUEST and (peer_ok or msg.flags & Flag.FORCED):
        return Decision(release(st, inp, f"{settings.peer} asked for a handover", for_request=True))
    if not healthy(inp.health, settings) and peer_ok and not msg.flags & Flag.OPERATOR_HOLD:
        persisted, events = record_failure(settings, st.persisted, inp.wall,
                                           f"health {inp.health} below critical {settings.critical_health}")
        st = replace(st, persisted=persisted)
        events.insert(0, Event("health.critical", {"health": inp.health, "critical": settings.critical_health,
                                                   "action": f"handing over to {settings.peer}"}))
        return Decision(release(st, inp, f"own health {inp.health} is critical; {settings.peer} is healthy"),
                        tuple(events))
    return Decision(say(st, "carrying the calls"))


def dual_active(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState | None:
    """If both nodes hold resources and this one should yield, the released state; else None."""
    msg = peer_message(st, inp)
    if msg is None or msg.state not in (NodeState.TAKEOVER, NodeState.ACTIVE):
        return None
    if peer_deaf(settings, st, inp, msg):
        return release(st, inp, f"dual ACTIVE: {settings.peer} cannot hear this node, so this node yields")
    if self_wins_dual_active(settings, st, inp, msg):
        return None
    return release(st, inp, f"dual ACTIVE resolved in favour of {settings.peer} (epoch, health, role, name)")


def self_fence(settings: Settings, st: ClusterState, inp: Inputs) -> Decision | None:
    """An ACTIVE node that may no longer be the right one releases on its own.

    * Its own loop stalled: its heartbeat tick ran `fence_stall_s` or more late, or the
      shell's stall fence opened the relays meanwhile (`stall_fenced`, the same measure
      taken beside the stalled loop); its heartbeats stopped, so the peer may have
      declared it dead and taken over.
    * Every link has been silent for more than a heartbeat and the witness check
      (started after the silence began) fails: this node is the isolated one; the
      peer, if it reaches the witness, takes over after its deadtime.
    """
    if settings.fence_stall_s and (inp.stalled_for_s >= settings.fence_stall_s or inp.stall_fenced):
        why = f"self-fence: this node's loop stalled {inp.stalled_for_s:.2f} s, so {settings.peer} may have taken over"
        return Decision(release(st, inp, why),
                        (Event("fence", {"cause": "stall", "stalled_s": round(inp.stalled_for_s, 3),
                                         "relays_opened_by_thread": inp.stall_fenced}),))
    if not (settings.fence_isolated and settings.witness_required):
        return None
    # Not "peer dead" (that takes the whole deadtime): fencing must finish before the peer's
    # deadtime runs out, so a little over one missed heartbeat of silence on every link counts.
    since = silent_since(settings, st, inp)
    if inp.now - since < 1.2 * settings.heartbeat_s:
        return None
    w = inp.witness
    if w is not None and not w.ok and w.started_at >= since:
        why = f"self-fence: isolated ({settings.peer} silent on every link and the witness unreachable: {w.detail})"
        return Decision(release(st, inp, why), (Event("fence", {"cause": "isolated", "witness": w.detail}),))
    return None
