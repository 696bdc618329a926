"""The decision core: who is ACTIVE. Pure and deterministic; the clock is an input.

`step()` takes the current :class:`ClusterState` and the :class:`Inputs` of one
instant and returns the next state and its :class:`Outputs` (events to journal,
whether to send a heartbeat at once, when to be called again, which promote or
demote actions to run). It is the one entry for every input: an operator
command comes in as `Inputs.command` and its :class:`Reply` goes out as
`Outputs.reply`. Nothing here does I/O, and nothing decides by comparing
texts: why something is not allowed is a :class:`Blocked` with a code.

Rules, in short:

* The peer is alive while it is heard on at least one link within `deadtime_s`.
* While the peer is alive, a node takes resources only with the peer's consent:
  it raises HANDOVER_REQUEST and promotes when the peer answers HANDOVER_GRANT
  from a state that holds nothing, in a heartbeat that acknowledges the
  request (break-before-make). A node grants only while it holds nothing and
  keeps holding nothing until the requester took over, gave up, or died.
* When the peer is silent on every link, a STANDBY node takes over only if the
  split-brain guard passes: a witness check started after the peer fell
  silent, optionally a minimum own health, and with LAN arbitration on, probe
  rounds proving that nobody answers for the shared address.
* Two ACTIVE nodes that hear each other: the one with the lower
  (epoch, health, role preference, name order) releases. A node the peer
  cannot hear releases regardless, because the peer cannot apply the rule.

Where each rule lives:

============== ================================================================
settings       `Settings`: the configuration the core decides with
state          `ClusterState` and its records; `Persisted` (survives restarts)
records        `Inputs`, `Outputs`, `Event`, `Reply`; `Decision` (handler result)
blocked        `Blocked` (code + text): why something is not allowed now
machine        `initial_state`, `step`; the outputs of a decision
observe        peer liveness, link status, a deaf peer, since when it is silent
handlers       one handler per state, chosen from `HANDLERS`
standby        the STANDBY rules: guard, election, request and grant
active         the ACTIVE rules: self-fence, dual ACTIVE, handover, health
election       candidates and ranking; dual-ACTIVE tie-break; failback
guard          the split-brain guard for a takeover from a silent peer
lan            LAN arbitration: the address proven free on the wire first
fencing        power fencing: the peer switched off where the LAN proves nothing
interlock      the relay interlock: never energize while the peer may hold
transitions    `go`, `takeover`, `release`; the flap record
shutdown       leaving the cluster
commands       operator commands and their safety checks
flags          the heartbeat flags and the heartbeat record this node sends
status         the core's alarms
============== ================================================================
"""

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.flags import build_heartbeat, heartbeat_flags
from firmware.core.cluster.interlock import relay_interlock
from firmware.core.cluster.machine import initial_state, step
from firmware.core.cluster.records import (
    ActionKind,
    ActionsReport,
    Command,
    Event,
    FenceReport,
    Inputs,
    LanProbe,
    LanVerdict,
    Outputs,
    Reply,
    RunActions,
    WitnessResult,
)
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import (
    Backoff,
    ClusterState,
    Grant,
    LinkStatus,
    PeerFacts,
    Persisted,
    Request,
    Shutdown,
)
from firmware.core.cluster.status import alarms

__all__ = [
    "ActionKind", "ActionsReport", "Backoff", "BlockCode", "Blocked", "ClusterState", "Command", "Event",
    "FenceReport", "Grant", "Inputs", "LanProbe", "LanVerdict", "LinkStatus", "Outputs", "PeerFacts", "Persisted",
    "Reply",
    "Request", "RunActions",
    "Settings", "Shutdown", "WitnessResult",
    "alarms", "build_heartbeat", "heartbeat_flags", "initial_state", "relay_interlock", "step",
]
