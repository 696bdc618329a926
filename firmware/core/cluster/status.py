"""What the decision core contributes to the status snapshot: its alarms.

Each is an `Alarm` with a stable source (see `firmware.core.alarms`):

=================== ======== ====================================================
cluster.link.<name> WARNING  the peer is heard, but not both ways on this link
cluster.peer        CRITICAL the peer is silent on every link (after STARTING)
cluster.flap_hold   WARNING  failed too often; STANDBY until an operator acts
cluster.maintenance WARNING  maintenance mode: never ACTIVE
cluster.actions     CRITICAL the last promote or demote left something undone
=================== ======== ====================================================
"""

from __future__ import annotations

from firmware.core.alarms import Alarm, AlarmLevel
from firmware.core.cluster.observe import link_detail
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.states import NodeState


def alarms(settings: Settings, st: ClusterState) -> list[Alarm]:
    """The core's active alarms, for status and the panel."""
    found: list[Alarm] = []
    if st.peer.alive:
        for link in st.peer.links:
            if not (link.rx and link.tx):
                found.append(Alarm(f"cluster.link.{link.name}", AlarmLevel.WARNING,
                                   f"link {link.name}: {link_detail(link)} (peer still heard on another link)"))
    elif st.state != NodeState.STARTING:
        found.append(Alarm("cluster.peer", AlarmLevel.CRITICAL, f"peer {settings.peer} silent on every link"))
    p = st.persisted
    if p.flap_hold:
        found.append(Alarm("cluster.flap_hold", AlarmLevel.WARNING,
                           "flap hold: failed too often; staying STANDBY until an operator acts"))
    if p.maintenance:
        found.append(Alarm("cluster.maintenance", AlarmLevel.WARNING,
                           "maintenance mode: this node will not become ACTIVE"))
    if st.action_alarm:
        found.append(Alarm("cluster.actions", AlarmLevel.CRITICAL, st.action_alarm))
    return found
