"""The STANDBY rules: ready to take over, holding nothing.

* Peer silent (or deaf: it cannot hear us, so it cannot consent): take over
  if the split-brain guard passes, else stay and say why (`guard`).
* Peer ACTIVE: stay, unless an operator promoted this node or a failback is
  due; then ask for a handover (HANDOVER_REQUEST).
* Nobody holds resources: the election decides (`election`). The preferred
  node asks; the other grants (HANDOVER_GRANT) and keeps holding nothing
  until the requester took over, gave up, or died. Between two requests an
  operator's beats an election's.
* A requester takes over only when the peer grants from a state that holds
  nothing, in a heartbeat that acknowledges the request's tick
  (break-before-make). A request gives up after `handover_timeout_s`, which
  is extended while the peer is running its demote actions for it.
* A peer that left the cluster (STOPPED) is taken over from at once, by a
  candidate that is not backing off.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import backing_off, failback_due, healthy, self_candidate, self_preferred
from firmware.core.cluster.fencing import fence_since
from firmware.core.cluster.guard import guard, hold
from firmware.core.cluster.observe import peer_deaf, peer_message
from firmware.core.cluster.records import Decision, Event, Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState, Grant, Request
from firmware.core.cluster.transitions import clear_request, say, takeover
from firmware.core.message import Heartbeat
from firmware.core.states import Flag, NodeState


def decide_standby(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """Decide as a STANDBY node that is not about to stop (`handlers.on_standby` sees to that)."""
    events: list[Event] = []
    msg = peer_message(st, inp)
    if msg is None or (peer_deaf(settings, st, inp, msg) and not msg.state.holds_resources):
        # A peer that cannot hear us cannot consent to a handover: judge as if it were silent.
        return _alone(settings, st, inp)
    # The peer is alive: whatever blocked a takeover from its silence is over, and a later silence starts afresh.
    if st.guard is not None:
        st = replace(st, guard=None, fence_since=None)
    if msg.state == NodeState.ACTIVE and st.persisted.operator_hold and healthy(msg.health, settings):
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
            return Decision(say(st, f"handing over to {settings.peer}"), tuple(events))
    if st.request is not None and msg.state == NodeState.RELEASING:
        # The peer is running its demote actions for us; they may take longer than the timeout.
        deadline = max(st.request.deadline, inp.now + settings.handover_timeout_s)
        st = replace(st, request=replace(st.request, deadline=deadline))
    # Give up a request that timed out.
    if st.request is not None and inp.now >= st.request.deadline:
        events.append(Event("handover.timeout", {"side": "requester", "peer": settings.peer,
                                                 "operator": st.request.by_operator}))
        st = clear_request(st)
    if msg.state.holds_resources:
        return _behind_holder(settings, st, inp, msg).after(events)
    # Nobody holds resources (the peer is STARTING, STANDBY or STOPPED).
    if msg.state == NodeState.STOPPED and self_candidate(st) and not backing_off(st, inp):
        return Decision(takeover(settings, st, inp, f"{settings.peer} left the cluster"), tuple(events))
    preferred = self_preferred(settings, st, inp, msg)
    wants = st.operator_request or (msg.state == NodeState.STANDBY and preferred)
    if peer_requesting:
        # Two requests at once: an operator's beats an election's; between equals the election decides.
        theirs = (bool(msg.flags & Flag.OPERATOR_REQUEST), not preferred)
        ours = (st.operator_request, preferred)
        if not wants or theirs > ours:
            st = clear_request(st)
            st = replace(st, grant=Grant(inp.now + settings.handover_timeout_s))
            return Decision(say(st, f"letting {settings.peer} take over"), tuple(events))
    if wants:
        return _request_or_take(settings, st, inp, msg).after(events)
    st = clear_request(st)
    return Decision(say(st, _reason(settings, st, msg)), tuple(events))


def _alone(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """The peer is silent (or deaf): take over if the guard passes, else say why not."""
    st = clear_request(replace(st, grant=None))
    blocked = guard(settings, st, inp)
    if blocked is None:
        return Decision(takeover(settings, replace(st, guard=None, fence_since=None), inp,
                                 f"{settings.peer} silent on every link"))
    events = []
    # Journaled when the kind of block changes (a repeated one is not news, nor is a reworded one),
    # except the usual short waits for the witness and the LAN.
    changed = st.guard is None or blocked.code is not st.guard.code
    if changed and blocked.code not in USUAL_WAITS:
        events.append(Event("takeover.blocked", {"code": blocked.code.value, "reason": blocked.text}))
    own_words = blocked.held or blocked.code is BlockCode.PEER_INCOMPATIBLE
    shown = blocked if own_words else f"{settings.peer} silent on every link; {blocked.text}"
    st = replace(st, guard=blocked, fence_since=fence_since(st, blocked, inp.now))
    return Decision(say(st, shown), tuple(events))


USUAL_WAITS = frozenset({BlockCode.CHECKING_WITNESS, BlockCode.PROBING_LAN, BlockCode.LAN_CONFIRMING})
"""Blocks every takeover from a silent peer passes through; not worth a journal event each."""


def _reason(settings: Settings, st: ClusterState, msg: Heartbeat) -> str | Blocked:
    """Why a STANDBY node whose peer holds nothing does not take over."""
    held = hold(st)
    if held:
        return held
    if msg.state == NodeState.STARTING:
        return f"waiting for {settings.peer} to finish starting"
    return f"{settings.peer} is preferred"


def _request_or_take(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> Decision:
    """Ask the peer for consent, or take over if it already consented to this request."""
    events = []
    if st.request is None:
        st = replace(st, request=Request(tick=inp.tick + 1, deadline=inp.now + settings.handover_timeout_s))
        events.append(Event("handover.request", {"peer": settings.peer, "operator": st.request.by_operator}))
    granted = (bool(msg.flags & Flag.HANDOVER_GRANT) and not msg.state.holds_resources
               and inp.peer.acked_tick >= st.request.tick)
    if granted:
        why = "operator promote" if st.request.by_operator else f"{settings.peer} handed over"
        return Decision(takeover(settings, st, inp, why), tuple(events))
    return Decision(say(st, f"asking {settings.peer} to hand over"), tuple(events))


def _behind_holder(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> Decision:
    """STANDBY while the peer holds resources: maybe ask for a failback or an operator handover."""
    if msg.state != NodeState.ACTIVE:
        return Decision(say(st, f"{settings.peer} is {msg.state.name}"))
    wants = st.operator_request or failback_due(settings, st, inp, msg)
    if not wants:
        st = clear_request(st)
        return Decision(say(st, f"{settings.peer} is ACTIVE"))
    return _request_or_take(settings, st, inp, msg)
