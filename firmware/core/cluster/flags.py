"""What this node tells its peer: the heartbeat flags and the heartbeat record.

The flags carry the parts of the state the peer decides with (see
`firmware.core.states.Flag` for each bit): holds, a shutdown in progress, an
open request or grant, whether this node hears the peer at all, a backoff and
a failed release.
"""

from __future__ import annotations

from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.message import Heartbeat
from firmware.core.states import Flag, NodeState


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
    if st.state != NodeState.STARTING:
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
