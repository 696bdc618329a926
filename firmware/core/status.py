"""The cluster's part of the status snapshot, and the alarm commands.

The status snapshot (DESIGN.md) is one JSON document that the CLI, the
panel, hooks and metrics all read. Each component contributes its own keys
through :class:`~firmware.core.endpoints.Endpoints`; this module builds the
keys that describe the cluster itself: this node and its state, the peer,
each heartbeat link, the witness and the heartbeat timing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from firmware import __version__
from firmware.core import cluster
from firmware.core.alarms import AlarmBoard
from firmware.core.cluster import ClusterState, Settings, WitnessResult
from firmware.core.endpoints import Endpoints, Params, SourceParams
from firmware.core.journal import Journal
from firmware.core.heartbeat import HeartbeatEndpoint
from firmware.core.links import Link
from firmware.core.message import PROTOCOL_VERSION, describe_version
from firmware.core.peer import PeerView
from firmware.core.states import Flag
from firmware.core.ticks import TickLog
from firmware.core.witness import Witness

if TYPE_CHECKING:
    from firmware.core.daemon import Daemon


def flag_names(flags: Flag) -> list[str]:
    """Flag names for status output."""
    return [f.name.lower() for f in Flag if f and f in flags and f.name]


def status_line(state: ClusterState | None) -> str:
    """One line for systemd's STATUS=: the state, why, and whether the peer is heard."""
    if state is None:
        return "starting"
    return f"{state.state.name} ({state.reason}); peer {'alive' if state.peer.alive else 'silent'}"


@dataclass(frozen=True)
class ClusterView:
    """Everything the cluster's status keys are built from, at one instant."""

    settings: Settings
    state: ClusterState
    peer: PeerView
    now: float          # monotonic
    health: int
    started_wall: float
    board: str
    extensions: tuple[str, ...]


def cluster_status(view: ClusterView) -> dict[str, Any]:
    """This node, its decision and its peer."""
    st, now, msg = view.state, view.now, view.peer.message
    last_rx = view.peer.last_rx
    return {
        "node": view.settings.node,
        "role": view.settings.role.name.lower(),
        "state": st.state.name,
        "reason": st.reason,
        "since_s": round(now - st.since, 3),
        "health": view.health,
        "epoch": st.persisted.epoch,
        "flags": flag_names(cluster.heartbeat_flags(st)),
        "maintenance": st.persisted.maintenance,
        "version": __version__,
        "uptime_s": round(time.time() - view.started_wall, 1),
        "board": view.board,
        "extensions": list(view.extensions),
        "peer": {
            "name": view.settings.peer,
            "alive": st.peer.alive,
            "state": msg.state.name if msg else None,
            "role": msg.role.name.lower() if msg else None,
            "health": msg.health if msg else None,
            "epoch": msg.epoch if msg else None,
            "flags": flag_names(msg.flags) if msg else [],
            "last_heard_s": None if last_rx is None else round(now - last_rx, 3),
            "incompatible_protocol": None if st.peer.foreign_version is None
            else describe_version(st.peer.foreign_version),
        },
        "protocol": describe_version(PROTOCOL_VERSION),
    }


def links_status(links: Mapping[str, Link], state: ClusterState, endpoint: HeartbeatEndpoint,
                 now: float) -> list[dict[str, Any]]:
    """Each heartbeat link: whether it carries heartbeats each way, what its transport carried, its figures.

    Frames the transport could not decode (serial line noise) count as ``malformed`` rejects, as
    packets that fail to parse do.
    """
    judged = {link.name: link for link in state.peer.links}
    rows = []
    for name, link in links.items():
        status = judged.get(name)
        rx, tx = (status.rx, status.tx) if status else (False, False)
        figures = endpoint.link_status(name, now)
        counters = link.counters
        if counters.bad_frames:
            rejected = {**figures["rejected"]}
            rejected["malformed"] = rejected.get("malformed", 0) + counters.bad_frames
            figures.update(rejected=rejected, rejected_total=figures["rejected_total"] + counters.bad_frames)
        rows.append({
            "name": name, "kind": link.kind, "rx": rx, "tx": tx,
            "state": "up" if rx and tx else "one-way" if rx or tx else "down",
            "open": link.is_open, "detail": link.detail,
            "sent": counters.frames_sent, "send_dropped": counters.send_dropped,
            "transport": counters.to_json(),
            **figures,
        })
    return rows


def witness_status(witness: Witness, result: WitnessResult | None, now: float) -> dict[str, Any]:
    """The split-brain witness: its targets and the last check."""
    return {
        "configured": witness.configured,
        "targets": witness.targets,
        "ok": result.ok if result else None,
        "detail": result.detail if result else "",
        "age_s": None if result is None else round(now - result.started_at, 3),
    }


def heartbeat_status(settings: Settings, ticks: TickLog, tick: int) -> dict[str, Any]:
    """Heartbeat timing: interval, deadtime and how late the ticks ran."""
    return {"interval_ms": settings.heartbeat_s * 1000, "deadtime_ms": settings.deadtime_s * 1000,
            "max_tick_lag_ms": round(ticks.max_lag * 1000, 2), "tick": tick,
            "lateness_ms": ticks.lateness()}


def register_node_status(endpoints: Endpoints, daemon: Daemon) -> None:
    """The cluster's status keys, and the ``status``, ``links``, ``ping``, ``state`` and ``lateness`` commands."""

    def cluster_keys() -> dict[str, Any]:
        now, state = daemon.now(), daemon.state
        assert state is not None
        view = ClusterView(daemon.settings, state, daemon.endpoint.view(), now, daemon.health, daemon.started_wall,
                           daemon.config.board.name, tuple(daemon.config.board.extensions))
        return {**cluster_status(view), "links": node_links(),
                "witness": witness_status(daemon.witness, daemon.witness_result, now)}

    def node_links() -> list[dict[str, Any]]:
        assert daemon.state is not None
        return links_status(daemon.links, daemon.state, daemon.endpoint, daemon.now())

    endpoints.add_status(cluster_keys)
    endpoints.add_command("status", lambda request: endpoints.status())
    endpoints.add_command("links", lambda request: node_links())
    endpoints.add_command("ping", lambda request: "pong")
    endpoints.add_command("state", lambda request: node_state(daemon))
    # Heartbeat tick lateness over the ticks after `since_tick` (benchmarks).
    endpoints.add_command("lateness", lambda request: {
        "tick": daemon.endpoint.tick, **daemon.ticks.lateness(request["since_tick"])}, LatenessParams)


def node_state(daemon: Daemon) -> dict[str, Any]:
    """The ``state`` command: the decision without the snapshot's sensors, links and timelines.

    For clients that wait on the node (tests, scripts): cheap enough to ask often, and
    ``event_id`` (the newest journal id) says where to follow the journal from for what
    changes next.
    """
    state = daemon.state
    assert state is not None
    return {"state": state.state.name, "reason": state.reason, "peer_alive": state.peer.alive,
            "health": daemon.health, "tick": daemon.endpoint.tick, "event_id": daemon.journal.next_id - 1,
            **daemon.alarm_board.snapshot()}


def hook_status(daemon: Daemon) -> dict[str, Any]:
    """The few status keys hooks get as TANDEM_* variables (cheap: no sensors, no links)."""
    state = daemon.state
    if state is None:
        return {}
    message = daemon.peer_message()
    return {"node": daemon.settings.node, "role": daemon.settings.role.name.lower(), "state": state.state.name,
            "epoch": state.persisted.epoch, "health": daemon.health,
            "peer": {"name": daemon.settings.peer, "state": message.state.name if message else None}}


class LatenessParams(Params):
    """``lateness``: the heartbeat tick lateness over the ticks after ``since_tick`` (-1: all kept)."""

    since_tick: Annotated[int, Field(ge=-1)] = -1


def register_alarm_commands(endpoints: Endpoints, board: AlarmBoard, journal: Journal) -> None:
    """The ``alarms``/``alarm_silenced`` status keys and the ``alarm-silence`` command."""
    endpoints.add_status(board.snapshot)
    endpoints.add_command("alarm-silence", lambda request: _silence(board, journal, request["source"]), SourceParams)


def _silence(board: AlarmBoard, journal: Journal, source: str) -> str:
    alarms = board.active()
    if not alarms:
        return "no active alarms"
    board.silence(alarms)
    journal.record("alarm.silenced", {"source": source, "alarms": [a.text for a in alarms]})
    return f"silenced {len(alarms)} alarm{'s' if len(alarms) > 1 else ''} (a new alarm sounds again)"

