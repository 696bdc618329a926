"""The core's state between two decisions, and the part of it that survives a restart.

`ClusterState` is a frozen record; every decision returns a new one. What the
node is doing at the moment is one optional record each, so a field can never
be half set:

* `request`: this node asks the peer for a handover (HANDOVER_REQUEST);
* `grant`: this node lets the requesting peer take over (HANDOVER_GRANT);
* `shutdown`: this node is leaving the cluster;
* `backoff`: the last takeover was vetoed or failed, so none before a deadline;
* `peer`: the facts gathered about the peer (liveness, links, epoch, boot).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.core.cluster.blocked import Blocked

if TYPE_CHECKING:
    from firmware.core.cluster.records import LanProbe
from firmware.core.states import NodeState


@dataclass(frozen=True)
class Persisted:
    """What survives a restart (written atomically by the shell after every change)."""

    epoch: int = 0
    last_state: NodeState = NodeState.STANDBY
    clean_exit: bool = True
    maintenance: bool = False
    operator_hold: bool = False
    flap_hold: bool = False
    failures: tuple[float, ...] = ()  # wall-clock times this node failed while ACTIVE

    def to_json(self) -> dict[str, Any]:
        """Plain data for the state file."""
        data = dataclasses.asdict(self)
        data["last_state"] = self.last_state.name
        data["failures"] = list(self.failures)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Persisted":
        """Inverse of to_json; unknown keys are ignored so old state files still load.

        Raises ValueError naming the bad key if a value cannot be understood.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            if "last_state" in values:
                values["last_state"] = NodeState[values["last_state"]]
            if "failures" in values:
                values["failures"] = tuple(float(x) for x in values["failures"])
            for key in ("epoch",):
                if key in values:
                    values[key] = int(values[key])
            for key in ("clean_exit", "maintenance", "operator_hold", "flap_hold"):
                if key in values and not isinstance(values[key], bool):
                    raise ValueError(f"{key} must be true or false")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"state file value not understood: {exc}") from None
        return cls(**values)


@dataclass(frozen=True)
class LinkStatus:
    """Whether a link carries heartbeats each way."""

    name: str
    rx: bool  # we hear the peer on it
    tx: bool  # the peer confirms hearing us on it


@dataclass(frozen=True)
class PeerFacts:
    """What this node has concluded about its peer from the PeerViews it was given."""

    alive: bool = False               # heard on at least one link within deadtime_s
    found_at: float | None = None     # when it was last found after a silence
    epoch: int = 0                    # the highest epoch it ever announced
    boot: bytes | None = None         # the boot id of the daemon we hear
    links: tuple[LinkStatus, ...] = ()
    foreign_version: int | None = None  # not alive but heard within deadtime_s in a protocol we cannot read


@dataclass(frozen=True)
class Request:
    """This node asks the peer to release so it can take over (HANDOVER_REQUEST)."""

    tick: int                 # our tick when we began asking: the peer's grant must acknowledge it
    deadline: float           # give up asking then
    by_operator: bool = False  # an operator's promote, not an election
    forced: bool = False       # the operator forced it


@dataclass(frozen=True)
class Grant:
    """This node granted the peer's request (HANDOVER_GRANT) and holds nothing until the peer acts."""

    deadline: float  # stop waiting then


@dataclass(frozen=True)
class Shutdown:
    """This node is leaving the cluster."""

    handover: bool   # it held resources when the shutdown began: wait for the peer to take over
    deadline: float  # stop waiting for the peer then


@dataclass(frozen=True)
class Backoff:
    """No takeover before `until`: the last one was vetoed or failed."""

    until: float
    reason: str


@dataclass(frozen=True)
class ClusterState:
    """The core's state between decisions."""

    state: NodeState
    since: float
    started_at: float
    persisted: Persisted
    transition: int = 0                # counts every state change; names the actions of one
    reason: str = "starting"           # why the node is in its state, for people (never compared)
    blocked: Blocked | None = None     # the block `reason` shows, when it shows exactly one
    peer: PeerFacts = PeerFacts()
    request: Request | None = None
    grant: Grant | None = None
    release_for_request: bool = False  # the running release answers a peer request
    shutdown: Shutdown | None = None
    backoff: Backoff | None = None
    action_alarm: str | None = None     # the last promote/demote left something undone
    release_failed: bool = False        # the last release left a relay closed (e.g. a welded contact)
    guard: Blocked | None = None        # why the guard refuses a takeover from the silent peer right now
    lan: "LanProbe | None" = None       # the latest probe round that counts (started after the peer fell silent)
    lan_free_since: float | None = None  # since when every counting round found the address free
    lan_held_since: float | None = None  # since when every counting round (as a standby) found it held
    peer_unseen_since: float | None = None  # since when the peer's own address has not answered
    fence_since: float | None = None     # since when this silence has needed a fence (the delay counts from it)

    @property
    def why(self) -> str | Blocked:
        """The reason as it was given: the typed block when it is one, else the text."""
        return self.blocked if self.blocked is not None else self.reason

    @property
    def operator_request(self) -> bool:
        """This node asks for a handover because an operator promoted it."""
        return self.request is not None and self.request.by_operator
