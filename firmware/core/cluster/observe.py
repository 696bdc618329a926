"""Observation: what the PeerView of this instant says about the peer and the links.

`observe()` runs first in every decision. A link carries heartbeats one way
(rx) when the peer was heard on it within `deadtime_s`, the other way (tx) when
the peer confirms a heartbeat we sent within `deadtime_s` plus one interval.
The peer is alive while it is heard on at least one link. Link changes are
journaled only while the peer is alive: a silent peer is reported once, as
peer.lost.

A peer that is not alive but sent authentic packets of another protocol
generation within `deadtime_s` (a pair in the middle of an update to an
incompatible release) is *foreign*: alive, but unreadable. The guard never
takes over from it (see `guard`); observation reports it once, as
peer.incompatible.

A peer that reports hearing nothing from us (PEER_SILENT) although we have
heard it for a deadtime is *deaf*: it cannot consent to a handover nor apply
the dual-ACTIVE rule, so the node judges as if the peer were silent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from firmware.core.cluster.records import Decision, Event, Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState, LinkStatus
from firmware.core.message import PROTOCOL_VERSION, Heartbeat, describe_version
from firmware.core.states import Flag, NodeState


def observe(settings: Settings, st: ClusterState, inp: Inputs) -> Decision:
    """Update peer liveness and link status from the PeerView; emit their events."""
    now, view, events = inp.now, inp.peer, []
    deadline = now - settings.deadtime_s
    links = tuple(
        LinkStatus(link.name,
                   rx=link.rx_at is not None and link.rx_at > deadline,
                   tx=link.tx_ok_at is not None and link.tx_ok_at > deadline - settings.heartbeat_s)
        for link in view.links
    )
    alive = any(link.rx for link in links)
    previous = {link.name: link for link in st.peer.links}
    for link in links if alive else ():  # a silent peer is reported once, as peer.lost
        old = previous.get(link.name, LinkStatus(link.name, False, False))
        was_up, up = old.rx and old.tx, link.rx and link.tx
        if was_up != up or (not up and (old.rx, old.tx) != (link.rx, link.tx) and (old.rx or old.tx)):
            events.append(Event("link.up" if up else "link.down",
                                {"link": link.name, "rx": link.rx, "tx": link.tx, "detail": link_detail(link)}))
    msg = view.message
    foreign = view.foreign_version if not alive and view.foreign_at is not None and view.foreign_at > deadline \
        else None
    if foreign is not None and foreign != st.peer.foreign_version:
        events.append(Event("peer.incompatible", {"peer": settings.peer, "version": describe_version(foreign),
                                                  "own": describe_version(PROTOCOL_VERSION)}))
    changes: dict[str, Any] = {"links": links, "alive": alive, "foreign_version": foreign}
    if alive and not st.peer.alive:
        changes["found_at"] = now
        events.append(Event("peer.found", {"peer": settings.peer,
                                           "state": msg.state.name if msg else None}))
    elif st.peer.alive and not alive:
        planned = msg is not None and (msg.state == NodeState.STOPPED or bool(msg.flags & Flag.SHUTTING_DOWN))
        events.append(Event("peer.lost", {"peer": settings.peer, "planned": planned,
                                          "last_state": msg.state.name if msg else None}))
    if alive and view.boot_id != st.peer.boot:
        if st.peer.boot is not None:
            events.append(Event("peer.restarted", {"peer": settings.peer}))
        changes["boot"] = view.boot_id
    if msg is not None and msg.epoch > st.peer.epoch:
        changes["epoch"] = msg.epoch
    return Decision(replace(st, peer=replace(st.peer, **changes)), tuple(events))


def link_detail(link: LinkStatus) -> str:
    """How a link carries heartbeats, in words."""
    if link.rx and link.tx:
        return "carries heartbeats both ways"
    if link.rx:
        return "one-way: the peer does not hear us on this link"
    if link.tx:
        return "one-way: we do not hear the peer on this link"
    return "silent"


def peer_message(st: ClusterState, inp: Inputs) -> Heartbeat | None:
    """The peer's newest heartbeat while it is alive, else None."""
    return inp.peer.message if st.peer.alive else None


def peer_deaf(settings: Settings, st: ClusterState, inp: Inputs, msg: Heartbeat) -> bool:
    """The peer has heard nothing from us for a deadtime although we have been hearing it."""
    heard_long_enough = st.peer.found_at is not None and inp.now - st.peer.found_at >= settings.deadtime_s
    return heard_long_enough and bool(msg.flags & Flag.PEER_SILENT) and not any(link.tx for link in st.peer.links)


def silent_since(settings: Settings, st: ClusterState, inp: Inputs) -> float:
    """Since when the nodes have had no two-way contact (for the witness's freshness)."""
    msg = peer_message(st, inp)
    if msg is not None and peer_deaf(settings, st, inp, msg):
        times = [link.tx_ok_at for link in inp.peer.links if link.tx_ok_at is not None]
        return max(times, default=st.started_at)
    heard = [at for at in (inp.peer.last_rx, inp.peer.foreign_at) if at is not None]
    return max(heard) if heard else st.started_at
