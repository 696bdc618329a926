"""Operator commands: promote, demote, maintenance on/off, shutdown.

Every path (CLI, panel, remote, SIGTERM) sends the same command with the
same checks. A command that would leave no node carrying the calls, or that
the node cannot honour safely, is refused with the reason unless forced; a
few are refused even when forced:

* promote while STARTING and the peer not yet heard: until `initdead_s` has
  passed the node does not know whether the peer is ACTIVE;
* promote while RELEASING, STOPPED or shutting down, or in maintenance;
* promote from a silent peer while the LAN shows the shared address held by
  another box (LAN arbitration): both would answer for it, and the
  non-preferred one would give it up again at once.

A promote while the peer is alive is a planned handover (a request the peer
must grant); with the peer silent it passes the split-brain guard unless
forced. A forced demote with nobody to take over turns maintenance on, so
the node stays STANDBY until an operator says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import healthy
from firmware.core.cluster.guard import guard
from firmware.core.cluster.lan import HELD_CODES, lan_block
from firmware.core.cluster.observe import peer_message
from firmware.core.cluster.records import Inputs, Reply
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.shutdown import begin_shutdown
from firmware.core.cluster.state import ClusterState, Request
from firmware.core.cluster.transitions import clear_request, go, release, takeover
from firmware.core.states import Flag, NodeState

CommandHandler = Callable[[Settings, ClusterState, Inputs, bool], tuple[ClusterState, Reply]]
"""(settings, state, inputs, force) -> (next state, reply)."""


def _peer_takeover_problem(settings: Settings, st: ClusterState, inp: Inputs) -> Blocked | None:
    """Why the peer could not take the calls if this node stepped down, or None."""
    peer = settings.peer
    msg = peer_message(st, inp)
    if msg is None:
        return Blocked(BlockCode.PEER_SILENT,
                       f"{peer} is silent on every link; stepping down would leave no ACTIVE node")
    if msg.flags & Flag.MAINTENANCE:
        return Blocked(BlockCode.PEER_MAINTENANCE, f"{peer} is in maintenance")
    if msg.flags & Flag.FLAP_HOLD:
        return Blocked(BlockCode.PEER_FLAP_HOLD, f"{peer} is held STANDBY after failing too often (flap hold)")
    if msg.flags & Flag.SHUTTING_DOWN or msg.state == NodeState.STOPPED:
        return Blocked(BlockCode.PEER_LEAVING, f"{peer} is leaving the cluster")
    if msg.state == NodeState.STARTING:
        return Blocked(BlockCode.PEER_STARTING, f"{peer} is still starting")
    if not healthy(msg.health, settings):
        return Blocked(BlockCode.PEER_UNHEALTHY,
                       f"{peer} is unhealthy (health {msg.health} below critical {settings.critical_health})")
    return None


def promote(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    """Make this node ACTIVE: ask the live peer to hand over, or take over from a silent one."""
    if st.state in (NodeState.ACTIVE, NodeState.TAKEOVER):
        return st, Reply(True, f"already {st.state.name}")
    if st.state in (NodeState.RELEASING, NodeState.STOPPED) or st.shutdown is not None:
        leaving = " and shutting down" if st.shutdown is not None else ""
        return st, Reply(False, f"cannot promote while {st.state.name}{leaving}")
    if st.persisted.maintenance:
        return st, Reply(False, "this node is in maintenance; run `tandem maintenance off` first")
    if not healthy(inp.health, settings) and not force:
        return st, Reply(False, f"own health {inp.health} is below critical {settings.critical_health}; "
                                "use --force to promote anyway")
    if st.state == NodeState.STARTING and not st.peer.alive:
        # Not even --force: until initdead has passed this node does not know whether the peer is ACTIVE.
        left = st.started_at + settings.initdead_s - inp.now
        return st, Reply(False, f"still starting: listening for {settings.peer} for another {max(left, 0):.1f} s; "
                                "try again then")
    persisted = replace(st.persisted, operator_hold=False, flap_hold=False)
    st = replace(st, persisted=persisted, grant=None)
    if st.peer.alive:
        st = replace(st, request=Request(tick=inp.tick + 1, deadline=inp.now + settings.handover_timeout_s,
                                         by_operator=True, forced=force))
        if st.state == NodeState.STARTING:
            st = go(st, NodeState.STANDBY, inp.now, "operator promote")
        return st, Reply(True, f"asking {settings.peer} to hand over")
    held = lan_block(settings, st, inp)
    if held is not None and held.code in HELD_CODES:
        # Not even --force: a takeover cannot succeed while another box answers for the address.
        assert st.lan is not None  # a held verdict is what blocked
        return st, Reply(False, f"{settings.peer} is silent on every link but {st.lan.holder} still answers for the "
                                f"shared address; power {settings.peer} off or run `tandem release` on it first")
    if settings.lan_arbitration and st.lan is None:
        # Not even --force without a verdict: the peer may still hold the address.
        return st, Reply(False, f"{settings.peer} is silent on every link and the LAN has not been probed since: "
                                "this node cannot tell whether the shared address is still held; try again in a "
                                "second")
    blocked = guard(settings, st, inp)
    if blocked is not None and not force:
        return st, Reply(False, f"{settings.peer} is silent on every link and {blocked.text}; "
                                "use --force to promote anyway")
    return takeover(settings, st, inp, "operator promote" + (" (forced)" if force else "")), Reply(True, "taking over")


def demote(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    """Hand the calls to the peer (operator hold: this node is ranked last until the peer is ACTIVE)."""
    if st.state not in (NodeState.ACTIVE, NodeState.TAKEOVER):
        return st, Reply(True, f"not ACTIVE ({st.state.name}); nothing to demote")
    problem = _peer_takeover_problem(settings, st, inp)
    if problem is not None and not force:
        return st, Reply(False, f"{problem.text}; use --force to demote anyway")
    if problem is not None and not st.peer.alive:
        # Forced demote with nobody to take over: stay down until the operator says otherwise.
        persisted = replace(st.persisted, maintenance=True)
        return release(replace(st, persisted=persisted), inp, "operator demote (forced)"), Reply(
            True, "releasing; maintenance is now on so this node stays STANDBY (`tandem maintenance off` to resume)")
    persisted = replace(st.persisted, operator_hold=True)
    st = release(replace(st, persisted=persisted), inp, "operator demote")
    return st, Reply(True, f"releasing to {settings.peer}")


def maintenance_on(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    """Never become ACTIVE; a node that holds resources releases first."""
    if st.state in (NodeState.ACTIVE, NodeState.TAKEOVER):
        problem = _peer_takeover_problem(settings, st, inp)
        if problem is not None and not force:
            return st, Reply(False, f"{problem.text}; use --force to enter maintenance anyway")
        persisted = replace(st.persisted, maintenance=True)
        st = release(replace(st, persisted=persisted), inp, "maintenance on")
        return st, Reply(True, "maintenance on; releasing")
    persisted = replace(st.persisted, maintenance=True)
    return clear_request(replace(st, persisted=persisted)), Reply(True, "maintenance on")


def maintenance_off(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    """Back to normal: maintenance, flap hold and operator hold are cleared."""
    persisted = replace(st.persisted, maintenance=False, flap_hold=False, operator_hold=False)
    return replace(st, persisted=persisted), Reply(True, "maintenance off; holds cleared")


def shutdown(settings: Settings, st: ClusterState, inp: Inputs, force: bool) -> tuple[ClusterState, Reply]:
    """Leave the cluster, handing over first if this node holds resources."""
    if st.shutdown is not None:
        return st, Reply(True, "already shutting down")
    if st.state.holds_resources and not force:
        problem = _peer_takeover_problem(settings, st, inp)
        if problem is not None:
            return st, Reply(False, f"{problem.text}; use --force to shut down anyway")
    return begin_shutdown(settings, st, inp), Reply(True, "leaving the cluster" + (
        f"; handing over to {settings.peer} first" if st.state.holds_resources else ""))


COMMANDS: dict[str, CommandHandler] = {
    "promote": promote,
    "demote": demote,
    "maintenance-on": maintenance_on,
    "maintenance-off": maintenance_off,
    "shutdown": shutdown,
}
"""Every operator command by its name on the control socket."""
