"""Vocabulary shared by the wire protocol and the decision core."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class NodeState(IntEnum):
    """What a node is doing. The numbers are on the wire; never renumber."""

    STARTING = 0   # waiting up to `initdead` to hear the peer
    STANDBY = 1    # ready to take over, holds no shared resources
    TAKEOVER = 2   # running its promote actions; counts as holding resources
    ACTIVE = 3     # carries the calls
    RELEASING = 4  # running its demote actions; still counts as holding resources
    STOPPED = 5    # left the cluster (shutdown); holds nothing

    @property
    def holds_resources(self) -> bool:
        """True while the node may own the shared IP, PBX or relays."""
        return self in (NodeState.TAKEOVER, NodeState.ACTIVE, NodeState.RELEASING)


class Role(IntEnum):
    """Configured role preference. The numbers are on the wire."""

    EQUAL = 0
    PRIMARY = 1
    SECONDARY = 2

    @classmethod
    def parse(cls, text: str) -> "Role":
        """Role from its config spelling (`primary`, `secondary`, `equal`)."""
        return cls[text.upper()]

    @property
    def preference(self) -> int:
        """Higher is preferred when choosing who should be ACTIVE."""
        return {Role.PRIMARY: 2, Role.EQUAL: 1, Role.SECONDARY: 0}[self]


class Flag(IntFlag):
    """Heartbeat flags. The bits are on the wire; never reuse a bit."""

    NONE = 0
    MAINTENANCE = 1 << 0       # operator put this node in maintenance: never ACTIVE
    SHUTTING_DOWN = 1 << 1     # leaving the cluster on purpose
    HANDOVER_REQUEST = 1 << 2  # sender asks the peer to release so it can take over
    HANDOVER_GRANT = 1 << 3    # sender released and lets the requesting peer take over
    PEER_SILENT = 1 << 4       # sender hears nothing from the receiver on any link
    OPERATOR_HOLD = 1 << 5     # sender was demoted by an operator; it takes over only if needed
    FLAP_HOLD = 1 << 6         # sender failed too often; it stays STANDBY until an operator acts
    FORCED = 1 << 7            # the handover request was forced by an operator
    STARTED = 1 << 8           # sender's initdead is over (it may be elected)
    OPERATOR_REQUEST = 1 << 9  # the handover request comes from an operator command
    BACKING_OFF = 1 << 10      # sender's last takeover was vetoed or failed; it waits before trying again
    RELEASE_FAILED = 1 << 11   # sender's demote actions failed: it may still hold something (e.g. a welded relay)
