"""One handler per state, chosen from `HANDLERS` by the node's state.

Every handler takes (settings, state, inputs) after observation and returns a
`Decision`. A node that is leaving the cluster (`state.shutdown`) moves on
that first, in each handler, before anything else is decided:

========== ====================================================================
STARTING   listen up to `initdead_s` for the peer, then decide as STANDBY
STANDBY    take over, ask for a handover, grant one, or wait (`standby`)
TAKEOVER   promote actions run; a dual ACTIVE may make it yield; their report
           makes it ACTIVE, or backs it off after a veto or a failure
ACTIVE     carry the calls until a rule says release (`active`)
RELEASING  demote actions run; their report makes it STANDBY (granting the
           peer's request if the release answered one)
STOPPED    left the cluster; nothing more to decide
========== ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from firmware.core.cluster.active import decide_active, dual_active
from firmware.core.cluster.election import healthy, peer_candidate
from firmware.core.cluster.observe import peer_message
from firmware.core.cluster.records import ActionsReport, Decision, Event, Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.shutdown import leave
from firmware.core.cluster.standby import decide_standby
from firmware.core.cluster.state import Backoff, ClusterState, Grant
from firmware.core.cluster.transitions import go, record_failure, release
from firmware.core.states import NodeState

Handler = Callable[[Settings, ClusterState, Inputs], Decision]
"""What every state handler is: (settings, state after observation, inputs) -> Decision."""


def on_starting(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """STARTING: the peer heard, or `initdead_s` over without it, makes this node STANDBY at once."""
    if st.peer.alive:
        st = go(st, NodeState.STANDBY, inp.now, "peer found")
    elif inp.now - st.started_at >= settings.initdead_s:
        st = go(st, NodeState.STANDBY, inp.now, "peer not heard within initdead")
    if st.state == NodeState.STANDBY:
        return on_standby(settings, st, inp)
    return Decision(st if st.shutdown is None else leave(settings, st, inp))


def on_standby(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """STANDBY: the standby rules, unless leaving the cluster stops this node now."""
    if st.shutdown is not None:
        st = leave(settings, st, inp)
        if st.state != NodeState.STANDBY:
            return Decision(st)
    return decide_standby(settings, st, inp)


def on_takeover(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """TAKEOVER: yield to a dual ACTIVE that wins; else wait for the promote actions' report."""
    if st.shutdown is not None:
        return on_releasing(settings, leave(settings, st, inp), inp)
    yielded = dual_active(settings, st, inp)
    if yielded is not None:
        return Decision(yielded)
    report = inp.actions
    if report is None or report.transition != st.transition:
        return Decision(st)
    return _promoted(settings, st, inp, report)


def _promoted(settings: Settings, st: ClusterState, inp: Inputs, report: ActionsReport) -> Decision:
    """Promote actions finished: become ACTIVE, or back off after a veto or a failure."""
    if report.ok:
        return Decision(go(st, NodeState.ACTIVE, inp.now, st.why, action_alarm=None, release_failed=False))
    backoff = inp.now + settings.takeover_backoff_s
    if report.vetoed:
        # The promote.before hooks run before any action, so nothing was acquired.
        st = go(st, NodeState.STANDBY, inp.now, f"promotion vetoed: {report.detail}",
                backoff=Backoff(backoff, f"promotion vetoed: {report.detail}"))
        return Decision(st, (Event("promote.vetoed", {"detail": report.detail,
                                                      "retry_in_s": settings.takeover_backoff_s}),))
    if settings.on_action_failure == "tolerate":
        why = "tolerated by configuration"
        st = go(st, NodeState.ACTIVE, inp.now, st.why, action_alarm=f"promote actions failed ({why}): {report.detail}")
        return Decision(st, (Event("promote.failed", {"detail": report.detail, "action": f"staying ACTIVE: {why}"}),))
    # Never ACTIVE without its resources: let go of what the promote did take, and either hand back
    # to a healthy peer or, alone, take over again once the back-off ran out (the flap hold stops a loop).
    msg = peer_message(st, inp)
    peer_ok = msg is not None and peer_candidate(msg) and healthy(msg.health, settings)
    reason = f"promote actions failed: {report.detail}"
    persisted, events = record_failure(settings, st.persisted, inp.wall, reason)
    st = replace(st, persisted=persisted, backoff=Backoff(backoff, reason))
    if peer_ok:
        action, why = f"handing back to {settings.peer}", f"promote actions failed; handing back to {settings.peer}"
    else:
        action = f"letting go, retrying in {settings.takeover_backoff_s:g} s: no healthy peer to hand back to"
        why = f"promote actions failed; no healthy peer: retrying in {settings.takeover_backoff_s:g} s"
    events.insert(0, Event("promote.failed", {"detail": report.detail, "action": action}))
    return Decision(release(st, inp, why), tuple(events))


def on_active(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """ACTIVE: the active rules, unless leaving the cluster makes this node release."""
    if st.shutdown is not None:
        return on_releasing(settings, leave(settings, st, inp), inp)
    return decide_active(settings, st, inp)


def on_releasing(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """RELEASING: when the demote actions report, become STANDBY (and go on leaving, if leaving)."""
    report = inp.actions
    if report is None or report.transition != st.transition:
        return Decision(st)
    events = [] if report.ok else [Event("demote.failed", {"detail": report.detail})]
    grant = Grant(inp.now + settings.handover_timeout_s) if st.release_for_request else None
    st = go(st, NodeState.STANDBY, inp.now, st.why, grant=grant,
            release_for_request=False, release_failed=not report.relays_released,
            action_alarm=None if report.ok else f"demote actions failed: {report.detail}")
    if st.shutdown is not None:
        st = leave(settings, st, inp)
    return Decision(st, tuple(events))


def on_stopped(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """STOPPED: the node has left the cluster; the shell exits."""
    return Decision(st)


HANDLERS: dict[NodeState, Handler] = {
    NodeState.STARTING: on_starting,
    NodeState.STANDBY: on_standby,
    NodeState.TAKEOVER: on_takeover,
    NodeState.ACTIVE: on_active,
    NodeState.RELEASING: on_releasing,
    NodeState.STOPPED: on_stopped,
}
