"""What goes into a decision and what comes out of it.

`Inputs` is everything the core may look at for one decision: the clock, the
PeerView, own health, the latest witness check and finished actions, and an
operator `Command` if one arrived. `Outputs` is everything the shell must do
afterwards: journal the events, send, persist, check the witness, run the
promote or demote actions (`RunActions`, once per transition), and answer the
command (`Reply`). `Decision` is the one shape every state handler returns:
the next state and the events it caused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from firmware.core.cluster.state import ClusterState
from firmware.core.peer import PeerView
from firmware.core.states import NodeState


@dataclass(frozen=True)
class WitnessResult:
    """Outcome of one split-brain witness check."""

    ok: bool
    started_at: float  # monotonic time the check started
    detail: str = ""


class LanVerdict(Enum):
    """What one probe round found on the LAN the shared addresses live on (see `lan`)."""

    FREE = "free"                  # nobody answered for any shared address, and the control target did
    HELD = "held"                  # somebody answered for a shared address
    CONTENDED = "contended"        # nobody holds it, but another host probed for it in the same round
    INCONCLUSIVE = "inconclusive"  # not even the control target answered: the round proves nothing
    LINK_DOWN = "link_down"        # this node's own interface to that LAN has no carrier: it is off the LAN


@dataclass(frozen=True)
class LanProbe:
    """One finished probe round of the LAN (a fact with a time, like a heartbeat)."""

    started_at: float        # monotonic time the round started: only a round started after the silence counts
    verdict: LanVerdict
    holder: str = ""         # HELD / CONTENDED: who answered or probed (its MAC address)
    detail: str = ""         # for people: which address, which control target
    peer_seen: bool | None = None  # the peer's own LAN address answered (None: not asked, or its probe failed)
    local_failure: bool = False    # INCONCLUSIVE because this node's own probing failed (not a silent LAN)


@dataclass(frozen=True)
class FenceReport:
    """The shell's latest finished attempt to fence the peer (a fact with a time, see `fencing`)."""

    started_at: float  # monotonic time the attempt started: only one started after the silence counts
    fenced: bool       # the peer's power is proven off (`off`, then a `status` that said off)
    detail: str = ""   # for people: what the fence agent said


@dataclass(frozen=True)
class ActionsReport:
    """The shell finished the actions of one TAKEOVER or RELEASING."""

    transition: int
    ok: bool = True
    vetoed: bool = False
    detail: str = ""
    relays_released: bool = True  # for a release: every relay group reached its released position


@dataclass(frozen=True)
class Command:
    """An operator command (`commands.COMMANDS` names them); unsafe ones are refused unless forced."""

    name: str                  # promote | demote | maintenance-on | maintenance-off | shutdown
    force: bool = False
    source: str | None = None  # who sent it (cli, panel, signal, …), for its journal event


@dataclass(frozen=True)
class Inputs:
    """Everything the core may look at for one decision."""

    now: float                 # monotonic seconds
    wall: float                # wall-clock seconds (for flap history across restarts)
    minute_of_day: int         # local time, for the failback window
    tick: int                  # our current heartbeat tick
    peer: PeerView
    health: int = 100
    witness: WitnessResult | None = None
    actions: ActionsReport | None = None  # the latest finished actions
    stalled_for_s: float = 0.0  # how late the shell's heartbeat tick ran (its loop was stalled this long)
    stall_fenced: bool = False  # the shell's stall fence opened the relays since the last decision
    command: Command | None = None  # an operator command to apply (and nothing else) in this decision
    lan: LanProbe | None = None  # the latest finished LAN probe round (LAN arbitration)
    fence: FenceReport | None = None  # the latest finished attempt to fence the peer
    failback_held: bool = False  # an update is under way on this box (or its slot is on trial): no failback


@dataclass(frozen=True)
class Event:
    """Something worth journaling."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Answer to an operator command."""

    ok: bool
    message: str


class ActionKind(Enum):
    """Which actions the shell runs: acquire everything, or let go of everything."""

    PROMOTE = "promote"  # for TAKEOVER: shared IPs, relays, the PBX (the promote hooks may veto)
    DEMOTE = "demote"    # for RELEASING: the same in reverse; always allowed


@dataclass(frozen=True)
class RunActions:
    """Start these actions now; report with an `ActionsReport` naming the same transition."""

    kind: ActionKind
    transition: int

    @property
    def state(self) -> NodeState:
        """The state the actions belong to (TAKEOVER or RELEASING)."""
        return NodeState.TAKEOVER if self.kind is ActionKind.PROMOTE else NodeState.RELEASING


@dataclass(frozen=True)
class Outputs:
    """What the shell must do after a decision."""

    events: tuple[Event, ...] = ()
    send_now: bool = False
    wake_at: float | None = None
    want_witness: bool = False
    persist: bool = False
    run: RunActions | None = None  # start these actions (a later run cancels an earlier one still going)
    reply: Reply | None = None  # the answer to `Inputs.command`
    probe_every_s: float | None = None  # run LAN probe rounds this often (0: back to back); None: stop
    fence_peer: bool = False  # fence the peer now (unless an attempt is running or was just made)


@dataclass(frozen=True)
class Decision:
    """What every state handler returns: the next state and the events on the way there."""

    state: ClusterState
    events: tuple[Event, ...] = ()

    def after(self, events: list[Event] | tuple[Event, ...]) -> "Decision":
        """This decision with `events` (which happened first) in front of its own."""
        return Decision(self.state, tuple(events) + self.events) if events else self
