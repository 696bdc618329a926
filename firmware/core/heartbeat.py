"""One node's heartbeat endpoint: seals outgoing rounds, opens and files incoming packets.

This is the glue between the wire format (`protocol`) and the peer tracker
(`peer`), and it keeps each link's heartbeat figures (valid heartbeats, lost
ticks, rejects by reason, lateness). The transports count only frames and
bytes. It does no I/O, so the daemon and the model-based tests use the very
same code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from firmware.core.message import PROTOCOL_VERSION, Heartbeat
from firmware.core.peer import PeerTracker, PeerView
from firmware.core.protocol import ForeignPacket, Keyring, ProtocolError, Sealer, open_packet

LATENESS_BUCKETS_MS = (10, 25, 50, 100, 200, 500)


@dataclass
class LinkFigures:
    """The heartbeats one link delivered: how many were valid, lost, rejected, and how late they came."""

    received: int = 0
    lost: int = 0
    pending: int = 0  # packets of a peer boot not yet confirmed by a round trip
    rejected: Counter = field(default_factory=Counter)
    lateness: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS_MS) + 1))
    _last_tick: int | None = None
    _last_boot: bytes | None = None

    def record_valid(self, previous_rx: float | None, now: float, boot_id: bytes, tick: int,
                     interval: float) -> None:
        """Count an accepted heartbeat: losses from tick gaps, lateness from the gap since ``previous_rx``."""
        self.received += 1
        if boot_id != self._last_boot:
            self._last_boot, self._last_tick = boot_id, None
        if self._last_tick is not None and tick > self._last_tick + 1:
            self.lost += tick - self._last_tick - 1
        if self._last_tick is None or tick > self._last_tick:
            self._last_tick = tick
        if previous_rx is not None:
            late_ms = (now - previous_rx - interval) * 1000
            self.lateness[_bucket(late_ms)] += 1

    def record_reject(self, reason: str) -> None:
        """Count a dropped packet under its reason."""
        if reason == "unconfirmed":
            self.pending += 1
        else:
            self.rejected[reason] += 1

    def to_json(self) -> dict[str, Any]:
        """The figures as plain data."""
        labels = [f"<={b}ms" for b in LATENESS_BUCKETS_MS] + [f">{LATENESS_BUCKETS_MS[-1]}ms"]
        return {
            "received": self.received,
            "lost": self.lost,
            "pending": self.pending,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "lateness_ms": dict(zip(labels, self.lateness)),
            "late_over_50ms": sum(self.lateness[3:]),
        }


def _bucket(late_ms: float) -> int:
    for index, bound in enumerate(LATENESS_BUCKETS_MS):
        if late_ms <= bound:
            return index
    return len(LATENESS_BUCKETS_MS)


@dataclass(frozen=True)
class Delivery:
    """An accepted heartbeat and the peer as it looks with it filed."""

    heartbeat: Heartbeat
    view: PeerView


class HeartbeatEndpoint:
    """Seals heartbeats for every link and turns received packets into a PeerView."""

    def __init__(self, keyring: Keyring, peer_name: str, link_names: list[str],
                 interval: float, deadtime: float, boot_id: bytes,
                 known_peer: tuple[int, int] | None = None, known_margin: int = 0,
                 version: int = PROTOCOL_VERSION) -> None:
        self.keyring = keyring
        self.version = version  # the protocol this node speaks (tests play other releases with it)
        self.sealer = Sealer(keyring, boot_id, version)
        self.tracker = PeerTracker(peer_name, link_names, deadtime, known_peer, known_margin)
        self.interval = interval
        self.figures = {name: LinkFigures() for name in link_names}
        self.tick = 0

    def rekey(self, keyring: Keyring) -> None:
        """Seal and open with `keyring` from now on (a re-pairing or a key rotation); the nonce counter goes on."""
        self.keyring = keyring
        self.sealer.keyring = keyring

    @property
    def boot_id(self) -> bytes:
        """This daemon start's random boot id."""
        return self.sealer.boot_id

    def next_tick(self, now: float) -> int:
        """Start a new heartbeat round (one tick, sent on every link)."""
        self.tick += 1
        self.tracker.sent(self.tick, now)
        return self.tick

    def acks(self) -> tuple[bytes, tuple[tuple[int, int], ...]]:
        """What the next heartbeat acknowledges."""
        return self.tracker.acks()

    def seal(self, message: Heartbeat) -> bytes:
        """One sealed packet (call once per link: every packet gets its own nonce)."""
        return self.sealer.seal(message)

    def receive(self, link: str, packet: bytes, now: float) -> Delivery | None:
        """Open and file one packet; the heartbeat and the new PeerView if it was accepted, None if dropped."""
        figures = self.figures[link]
        try:
            header, message = open_packet(packet, self.keyring, self.version)
        except ForeignPacket as exc:
            # Counted as not read; if it is fresh it still shows the peer alive (`PeerTracker.foreign`).
            figures.record_reject(self.tracker.foreign(exc.header, exc.version, now) or exc.reason)
            return None
        except ProtocolError as exc:
            figures.record_reject(exc.reason)
            return None
        previous_rx = self.tracker.last_heard(link)
        reason = self.tracker.accept(header, message, link, now, self.boot_id, self.tick)
        if reason is not None:
            figures.record_reject(reason)
            return None
        figures.record_valid(previous_rx, now, header.boot_id, message.tick, self.interval)
        return Delivery(message, self.tracker.view())

    def view(self) -> PeerView:
        """What the decision core gets to see about the peer."""
        return self.tracker.view()

    def link_status(self, link: str, now: float) -> dict[str, Any]:
        """One link's heartbeat figures and when the peer was last heard on it."""
        last = self.tracker.last_heard(link)
        return {**self.figures[link].to_json(), "last_heard_s": None if last is None else round(now - last, 3)}
