"""The moves between states, and the flap record they may leave behind.

Every change of `ClusterState.state` goes through `go()`, which counts the
transition (the shell names the actions it runs by that number) and remembers
the last state that matters across a restart; every other change of the
reason goes through `say()`. Both keep `reason` (the text) and `blocked` (the
typed block, when the reason is one) together. `takeover()` and `release()` are
the two moves that start actions: a takeover raises the epoch above anything
either node has announced.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from firmware.core.cluster.blocked import Blocked
from firmware.core.cluster.records import Event, Inputs
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState, Persisted
from firmware.core.states import NodeState


def go(st: ClusterState, new: NodeState, now: float, reason: str | Blocked, **changes: Any) -> ClusterState:
    """Enter state `new` at `now` for `reason`; `changes` are other fields to set on the way."""
    persisted = changes.pop("persisted", st.persisted)
    if new.holds_resources or new == NodeState.STANDBY:
        persisted = replace(persisted, last_state=new)
    return replace(say(st, reason), state=new, since=now, transition=st.transition + 1,
                   persisted=persisted, **changes)


def say(st: ClusterState, reason: str | Blocked) -> ClusterState:
    """Give a new reason for the current state (a typed block, or a text)."""
    if isinstance(reason, Blocked):
        return replace(st, reason=reason.text, blocked=reason)
    return replace(st, reason=reason, blocked=None)


def clear_request(st: ClusterState) -> ClusterState:
    """Stop asking the peer for a handover."""
    return replace(st, request=None)


def takeover(settings: Settings, st: ClusterState, inp: Inputs, reason: str) -> ClusterState:
    """Enter TAKEOVER (run the promote actions) in a new epoch; any request or grant is over."""
    epoch = max(st.persisted.epoch, st.peer.epoch) + 1
    persisted = replace(st.persisted, epoch=epoch, operator_hold=False)
    st = clear_request(st)
    return go(st, NodeState.TAKEOVER, inp.now, reason, persisted=persisted, grant=None)


def release(st: ClusterState, inp: Inputs, reason: str | Blocked, for_request: bool = False) -> ClusterState:
    """Enter RELEASING (run the demote actions); `for_request`: the peer asked, so grant it afterwards."""
    return go(clear_request(st), NodeState.RELEASING, inp.now, reason, release_for_request=for_request)


def record_failure(settings: Settings, persisted: Persisted, wall: float, why: str) -> tuple[Persisted, list[Event]]:
    """Count a failure while ACTIVE; too many within `flap_window_s` put the node on flap hold."""
    recent = tuple(t for t in persisted.failures if wall - t < settings.flap_window_s) + (wall,)
    events = [Event("failure", {"reason": why, "count": len(recent)})]
    hold = persisted.flap_hold
    if len(recent) >= settings.flap_max_failures and not hold:
        hold = True
        events.append(Event("flap.hold", {
            "failures": len(recent), "window_min": settings.flap_window_s / 60,
            "message": "failed too often; staying STANDBY until an operator runs `tandem promote` or `tandem maintenance off`",
        }))
    return replace(persisted, failures=recent, flap_hold=hold), events
