"""The relay interlock: whether this node may energize its trunk relays now.

Break-before-make already comes from the state machine (a node enters
TAKEOVER only after the peer released or was declared dead). The interlock is
the last check, made by the relay action right before it closes a relay and
again after the settle delay: never while the peer, heard on any link, says
it holds resources, or says its own release failed (a relay of its may still
be closed, e.g. a welded contact). Two PBXs on one trunk is worse than none.
"""

from __future__ import annotations

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.peer import PeerView
from firmware.core.states import Flag


def relay_interlock(settings: Settings, st: ClusterState, peer: PeerView) -> Blocked | None:
    """Why energizing the trunk relays now would be unsafe, or None if it is allowed.

    `st` is the latest decided state (is the peer alive, on which links); `peer`
    the current PeerView (its newest heartbeat).
    """
    msg = peer.message
    if not st.peer.alive or msg is None:
        return None
    heard_on = ", ".join(link.name for link in st.peer.links if link.rx)
    if msg.state.holds_resources:
        return Blocked(BlockCode.PEER_HOLDS, f"{settings.peer} reports {msg.state.name} (heard on {heard_on})")
    if msg.flags & Flag.RELEASE_FAILED:
        return Blocked(BlockCode.PEER_RELEASE_FAILED,
                       f"{settings.peer} reports that its release failed (its relays may still be closed)")
    return None
