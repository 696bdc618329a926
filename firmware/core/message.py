"""What one node tells the other: the heartbeat record and the identifiers it carries.

These are plain records with no cryptography, so the decision core can read
and build heartbeats without importing the wire format's AEAD. How they are
laid out in a packet and sealed is `protocol`'s business.

A boot id is 8 bytes: a boot counter (4, big-endian, grows with every
daemon start) and 4 random bytes; acknowledgements name a boot by its random
half (the boot tag). A link is named on the wire by a 16-bit CRC of its
name, which both nodes configure alike.

The heartbeat protocol's version byte has two halves. The high four bits are
the *generation*: nodes of one generation read each other's heartbeats; a
node cannot read another generation's and must not guess. The low four bits
are the *revision* inside a generation: a newer revision may only append
fields to the payload, so an older node reads the fields it knows and skips
the rest. Header and sealing never change, so a node of any version can
still tell that a packet came from a live peer holding the cluster key.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from firmware.core.states import Flag, NodeState, Role

PROTOCOL_VERSION = 0x01
"""This release's heartbeat protocol: generation 0, revision 1."""


def protocol_generation(version: int) -> int:
    """The generation half of a protocol version byte: nodes read each other only within one generation."""
    return version >> 4


def describe_version(version: int) -> str:
    """A protocol version in words: ``generation 0 revision 1``."""
    return f"generation {version >> 4} revision {version & 0x0F}"


def link_id(name: str) -> int:
    """The 16-bit wire id of a link: a CRC of its name, which both nodes configure alike."""
    return zlib.crc32(name.encode()) & 0xFFFF


def boot_counter(boot_id: bytes) -> int:
    """The boot counter at the start of a boot id."""
    return int.from_bytes(boot_id[:4], "big")


def boot_tag(boot_id: bytes) -> bytes:
    """The 4-byte tag that names a boot in acknowledgements (its random half)."""
    return boot_id[4:]


@dataclass(frozen=True)
class Heartbeat:
    """What one node tells the other, many times a second, on every link."""

    node: str
    state: NodeState
    role: Role
    health: int
    flags: Flag
    epoch: int
    tick: int
    ack_boot: bytes = b"\0\0\0\0"
    acks: tuple[tuple[int, int], ...] = field(default=())  # (link id, last tick heard)

    def ack_for(self, link: str) -> int | None:
        """The last tick of ours the sender heard on `link`, if it reported one."""
        wanted = link_id(link)
        for ident, tick in self.acks:
            if ident == wanted:
                return tick
        return None


@dataclass(frozen=True)
class Header:
    """The cleartext, authenticated part of a packet."""

    key_id: int
    boot_id: bytes
    seq: int
