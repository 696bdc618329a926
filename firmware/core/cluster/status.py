"""What the decision core contributes to the status snapshot: its alarms."""

from __future__ import annotations

from firmware.core.cluster.observe import link_detail
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.states import NodeState


def alarms(settings: Settings, st: ClusterState) -> list[str]:
    """Active alarm texts for status and the panel."""
    found: list[str] = []
    if st.peer.alive:
        for link in st.peer.links:
            if not (link.rx and link.tx):
                found.append(f"link {link.name}: {link_detail(link)} (peer still heard on another link)")
    elif st.state != NodeState.STARTING:
        found.append(f"peer {settings.peer} silent on every link")
    p = st.persisted
    if p.flap_hold:
        found.append("flap hold: failed too often; staying STANDBY until an operator acts")
    if p.maintenance:
        found.append("maintenance mode: this node will not become ACTIVE")
    if st.action_alarm:
        found.append(st.action_alarm)
    return found
