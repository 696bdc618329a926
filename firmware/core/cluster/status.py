"""What the decision core contributes to the status snapshot: its alarms.

Each is an `Alarm` (see `firmware.core.alarms`) with a stable source:

============= ======== =========================================================
link:<name>   warning  the peer is heard, but not both ways on this link
peer          critical the peer is silent on every link (after STARTING)
flap-hold     critical failed too often; STANDBY until an operator acts
maintenance   warning  maintenance mode: never ACTIVE
actions       critical the last promote or demote left something undone, or
                       a failed promote let go and waits to try again alone
lan           warning  standby: the shared address is held by another host, or
                       the LAN probe proves nothing (control target silent), or
                       this node's LAN link is down (no carrier)
lan           critical standby: held for `held_escalate_s` of silence (dead
                       daemon or failed release); ACTIVE: another host answers
                       for this node's address
fence         warning  standby: waiting to fence the silent peer, or fencing it
fence         critical standby: fencing the peer failed; no takeover
============= ======== =========================================================
"""

from __future__ import annotations

from firmware.core.alarms import Alarm
from firmware.core.cluster.blocked import BlockCode
from firmware.core.cluster.fencing import FENCE_CODES
from firmware.core.cluster.observe import link_detail
from firmware.core.cluster.records import LanVerdict
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.message import PROTOCOL_VERSION, describe_version
from firmware.core.states import NodeState


def alarms(settings: Settings, st: ClusterState) -> list[Alarm]:
    """The cluster's active alarms, for status and the panel."""
    found: list[Alarm] = []
    if st.peer.alive:
        for link in st.peer.links:
            if not (link.rx and link.tx):
                found.append(Alarm(f"link:{link.name}", "warning",
                                   f"link {link.name}: {link_detail(link)} (peer still heard on another link)"))
    elif st.peer.foreign_version is not None:
        found.append(Alarm("peer", "critical", f"peer {settings.peer} is alive but speaks heartbeat protocol "
                                               f"{describe_version(st.peer.foreign_version)}; this node "
                                               f"({describe_version(PROTOCOL_VERSION)}) cannot read it: "
                                               "no failover until both run one generation"))
    elif st.state != NodeState.STARTING:
        found.append(Alarm("peer", "critical", f"peer {settings.peer} silent on every link"))
    p = st.persisted
    if p.flap_hold:
        found.append(Alarm("flap-hold", "critical",
                           "flap hold: failed too often; staying STANDBY until an operator acts"))
    if p.maintenance:
        found.append(Alarm("maintenance", "warning", "maintenance mode: this node will not become ACTIVE"))
    if st.action_alarm:
        found.append(Alarm("actions", "critical", st.action_alarm))
    elif st.backoff is not None and not st.peer.alive and st.state == NodeState.STANDBY and not p.flap_hold:
        found.append(Alarm("actions", "critical", f"not carrying the calls: {st.backoff.reason}; "
                                                  f"{settings.peer} is silent, so this node tries again"))
    lan = lan_alarm(settings, st)
    if lan is not None:
        found.append(lan)
    if st.guard is not None and st.guard.code in FENCE_CODES and not st.peer.alive:
        severity = "critical" if st.guard.code is BlockCode.FENCE_FAILED else "warning"
        found.append(Alarm("fence", severity, st.guard.text))
    return found


def lan_alarm(settings: Settings, st: ClusterState) -> Alarm | None:
    """The LAN arbitration's alarm (source ``lan``), or None."""
    if not settings.lan_arbitration or st.peer.alive or st.lan is None:
        return None
    if st.state == NodeState.ACTIVE and st.lan.verdict is LanVerdict.HELD:
        return Alarm("lan", "critical", f"another host ({st.lan.holder}) answers for this node's shared address "
                                        f"while {settings.peer} is silent ({st.lan.detail})")
    if st.guard is not None and st.guard.code is BlockCode.ADDRESS_HELD_LONG:
        return Alarm("lan", "critical", st.guard.text)
    if st.guard is not None and st.guard.code is BlockCode.ADDRESS_HELD:
        return Alarm("lan", "warning", f"takeover blocked: {st.guard.text}")
    if st.lan.verdict is LanVerdict.INCONCLUSIVE:
        return Alarm("lan", "warning", f"LAN probe proves nothing: {st.lan.detail}")
    if st.lan.verdict is LanVerdict.LINK_DOWN:
        return Alarm("lan", "warning", f"LAN link down: {st.lan.detail}")
    return None
