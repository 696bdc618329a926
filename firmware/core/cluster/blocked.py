"""Why something is not allowed now, as a typed value: a code to decide with, a text for people.

Decisions compare codes (and whole `Blocked` values), never texts, so
rewording a message cannot change behaviour. The codes fall in three groups:

* this node holds back on its own (a *hold*): maintenance, flap hold,
  shutting down, an operator's demote;
* the split-brain guard refuses a takeover from a silent peer: the peer is
  alive in a protocol this node cannot read, not a candidate in this state,
  backing off, own health below the guard's minimum, the witness check still
  running or failed, the LAN not (yet) proven free, the peer not yet fenced;
* the peer could not take over, or holds (or may hold) the trunk relays:
  used by the command checks and the relay interlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BlockCode(Enum):
    """What blocks: the stable identity of a `Blocked`."""

    # holds: this node holds back from taking over on its own
    MAINTENANCE = "maintenance"
    FLAP_HOLD = "flap_hold"
    SHUTTING_DOWN = "shutting_down"
    OPERATOR_HOLD = "operator_hold"
    # the split-brain guard
    PEER_INCOMPATIBLE = "peer_incompatible"
    NOT_CANDIDATE = "not_candidate"
    BACKING_OFF = "backing_off"
    LOW_HEALTH = "low_health"
    CHECKING_WITNESS = "checking_witness"
    WITNESS_UNREACHABLE = "witness_unreachable"
    # LAN arbitration (part of the guard): the address must be proven free on the wire
    PROBING_LAN = "probing_lan"
    LAN_CONFIRMING = "lan_confirming"
    ADDRESS_HELD = "address_held"
    ADDRESS_HELD_LONG = "address_held_long"
    CLAIM_DELAY = "claim_delay"
    LAN_LINK_DOWN = "lan_link_down"
    # power fencing (part of the guard): the peer is switched off before a claim the LAN cannot back
    FENCE_DELAY = "fence_delay"
    FENCING = "fencing"
    FENCE_FAILED = "fence_failed"
    # the peer could not take the calls
    PEER_SILENT = "peer_silent"
    PEER_MAINTENANCE = "peer_maintenance"
    PEER_FLAP_HOLD = "peer_flap_hold"
    PEER_LEAVING = "peer_leaving"
    PEER_STARTING = "peer_starting"
    PEER_UNHEALTHY = "peer_unhealthy"
    # the relay interlock: the peer holds, or may still hold, its relays
    PEER_HOLDS = "peer_holds"
    PEER_RELEASE_FAILED = "peer_release_failed"


HOLDS = frozenset({BlockCode.MAINTENANCE, BlockCode.FLAP_HOLD, BlockCode.SHUTTING_DOWN, BlockCode.OPERATOR_HOLD})
"""The codes by which a node holds back on its own (see `guard.hold`)."""


@dataclass(frozen=True)
class Blocked:
    """Why something is not allowed now: `code` to decide with, `text` to show."""

    code: BlockCode
    text: str

    @property
    def held(self) -> bool:
        """Whether this node holds back on its own (rather than being kept from acting)."""
        return self.code in HOLDS
