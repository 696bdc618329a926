"""One node's heartbeat endpoint: seals outgoing rounds, opens and files incoming packets.

This is the glue between the wire format (`protocol`), the peer tracker
(`peer`) and the per-link figures (`links.LinkStats`). It does no I/O, so the
daemon and the model-based tests use the very same code.
"""

from __future__ import annotations

from collections import OrderedDict

from firmware.core.message import Heartbeat
from firmware.core.peer import PeerTracker, PeerView
from firmware.core.protocol import Keyring, ProtocolError, Sealer, open_packet

from firmware.core.links import LinkStats

SENT_TICKS_KEPT = 128


class HeartbeatEndpoint:
    """Seals heartbeats for every link and turns received packets into a PeerView."""

    def __init__(self, keyring: Keyring, peer_name: str, link_names: list[str],
                 interval: float, deadtime: float, boot_id: bytes,
                 known_peer: tuple[int, int] | None = None, known_margin: int = 0,
                 stats: dict[str, LinkStats] | None = None) -> None:
        self.keyring = keyring
        self.sealer = Sealer(keyring, boot_id)
        self.tracker = PeerTracker(peer_name, link_names, deadtime, known_peer, known_margin)
        self.interval = interval
        # The links' own figures when given, so transport and protocol counts land in one place.
        self.stats = stats if stats is not None else {name: LinkStats() for name in link_names}
        self.tick = 0
        self._sent_at: OrderedDict[int, float] = OrderedDict()

    @property
    def boot_id(self) -> bytes:
        """This daemon start's random boot id."""
        return self.sealer.boot_id

    def next_tick(self, now: float) -> int:
        """Start a new heartbeat round (one tick, sent on every link)."""
        self.tick += 1
        self._sent_at[self.tick] = now
        while len(self._sent_at) > SENT_TICKS_KEPT:
            self._sent_at.popitem(last=False)
        return self.tick

    def acks(self) -> tuple[bytes, tuple[tuple[int, int], ...]]:
        """What the next heartbeat acknowledges."""
        return self.tracker.acks()

    def seal(self, message: Heartbeat) -> bytes:
        """One sealed packet (call once per link: every packet gets its own nonce)."""
        return self.sealer.seal(message)

    def receive(self, link: str, packet: bytes, now: float) -> Heartbeat | None:
        """Open and file one packet; return the heartbeat if it was accepted."""
        stats = self.stats[link]
        try:
            header, message = open_packet(packet, self.keyring)
        except ProtocolError as exc:
            stats.record_reject(exc.reason)
            return None
        reason = self.tracker.accept(header, message, link, now, self.boot_id, self.tick, self._sent_at)
        if reason is not None:
            stats.record_reject(reason)
            return None
        stats.record_valid(now, header.boot_id, message.tick, self.interval)
        return message

    def view(self) -> PeerView:
        """What the decision core gets to see about the peer."""
        return self.tracker.view()
