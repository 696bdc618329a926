"""Leaving the cluster (`tandem shutdown`, poweroff, reboot, SIGTERM).

A node that holds resources releases first; once it holds nothing it waits
(up to `shutdown_timeout_s`) for a healthy peer to take over, then enters
STOPPED with a clean exit recorded. A node that held nothing stops at once.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster.election import peer_candidate
from firmware.core.cluster.guard import SHUTTING_DOWN
from firmware.core.cluster.observe import peer_message
from firmware.core.cluster.records import Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState, Shutdown
from firmware.core.cluster.transitions import clear_request, go, release
from firmware.core.states import NodeState


def begin_shutdown(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState:
    """Start leaving the cluster: hand over first if this node holds resources.

    SIGTERM uses the forced `shutdown` command, which cannot be refused.
    """
    shutdown = Shutdown(handover=st.state.holds_resources, deadline=inp.now + settings.shutdown_timeout_s)
    st = clear_request(replace(st, shutdown=shutdown))
    return leave(settings, st, inp)


def leave(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState:
    """One step of leaving the cluster: release first, let the peer take over, then stop."""
    if st.state in (NodeState.ACTIVE, NodeState.TAKEOVER):
        return release(st, inp, SHUTTING_DOWN)
    if st.state not in (NodeState.STANDBY, NodeState.STARTING):
        return st  # RELEASING: wait for the demote actions (STOPPED: done)
    msg = peer_message(st, inp)
    assert st.shutdown is not None
    expired = inp.now >= st.shutdown.deadline
    waiting_for_peer = (st.shutdown.handover and msg is not None and peer_candidate(msg)
                        and not msg.state.holds_resources)
    if waiting_for_peer and not expired:
        return st
    persisted = replace(st.persisted, clean_exit=True)
    return go(clear_request(st), NodeState.STOPPED, inp.now, "shut down", persisted=persisted, grant=None)
