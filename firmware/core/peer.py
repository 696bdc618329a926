"""What this node knows about its peer: replay protection, boot tracking, per-link liveness.

A packet that opened correctly still has to pass here before the decision core
sees it. The tracker drops repeated and old packets (a sliding window over the
peer's sequence numbers). A packet the window accepts but whose heartbeat
round is older than one already heard (late, or replayed by someone who kept
it from us while the link was cut) counts for the link's figures but does
not make the peer look alive: only a newer round does, or the newest round's
copy on another link within a deadtime of its first copy. Boot ids start with a boot counter that grows with
every daemon start and is persisted on both sides, so:

* a boot with a higher counter than any seen is the peer's new start: accepted
  at once (this works over one-way links too);
* the boot last seen before our own restart is accepted for sequence numbers
  above the last one we persisted;
* anything else (a lower counter: replayed old packets, or a peer whose state
  was wiped) is accepted only once it has acknowledged a heartbeat we sent
  after first seeing it, which recorded packets cannot do.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from firmware.core.message import Header, Heartbeat, boot_counter, boot_tag, link_id

REPLAY_WINDOW = 1024
RETIRED_BOOTS = 8
SENT_TICKS_KEPT = 128  # our recent ticks and when they went out, to date the peer's acknowledgements


class ReplayWindow:
    """Sliding window over one boot's sequence numbers; each number is accepted once."""

    def __init__(self, size: int = REPLAY_WINDOW, floor: int = 0) -> None:
        self.size = size
        self.highest = floor
        # bit i set: highest - i was seen; with a floor, everything up to it counts as seen
        self._seen = (1 << size) - 1 if floor else 0

    def accept(self, seq: int) -> bool:
        """Record `seq`; False if it was seen before or is too old to judge."""
        if seq > self.highest:
            shift = seq - self.highest
            self._seen = ((self._seen << shift) | 1) & ((1 << self.size) - 1)
            self.highest = seq
            return True
        offset = self.highest - seq
        if offset >= self.size or self._seen >> offset & 1:
            return False
        self._seen |= 1 << offset
        return True


@dataclass(frozen=True)
class LinkView:
    """One link as the decision core sees it."""

    name: str
    rx_at: float | None     # last valid packet from the peer on this link
    tx_ok_at: float | None  # send time of our newest heartbeat the peer confirms on this link


@dataclass(frozen=True)
class PeerView:
    """Everything the decision core knows about the peer at one instant."""

    links: tuple[LinkView, ...]
    message: Heartbeat | None = None  # newest heartbeat (highest tick) of the current peer boot
    message_at: float | None = None
    acked_tick: int = 0  # newest tick of ours the peer confirms hearing, on any link
    boot_id: bytes | None = None
    foreign_version: int | None = None  # the protocol version of authentic packets this node cannot read
    foreign_at: float | None = None     # when the newest of them arrived

    @property
    def last_rx(self) -> float | None:
        """When the peer was last heard on any link."""
        times = [link.rx_at for link in self.links if link.rx_at is not None]
        return max(times) if times else None


@dataclass
class _Boot:
    boot_id: bytes
    first_seen_tick: int
    window: ReplayWindow = field(default_factory=ReplayWindow)
    heard: dict[str, int] = field(default_factory=dict)  # link -> last tick heard on it
    newest_tick: int = -1  # the newest heartbeat round heard from this boot on any link
    newest_at: float = 0.0  # when its first copy arrived


class PeerTracker:
    """Turns opened packets into a PeerView; rejects replays and unconfirmed boots."""

    def __init__(self, peer_name: str, link_names: list[str], deadtime: float,
                 known: tuple[int, int] | None = None, known_margin: int = 0) -> None:
        self.peer_name = peer_name
        self.deadtime = deadtime
        self.known = known  # (boot counter, highest seq) persisted before our restart
        # The record is saved every few seconds, so the real highest seq may be up to this
        # much above it: packets below highest + margin need a round trip after our restart.
        self.known_margin = known_margin
        self.link_names = list(link_names)
        self.current: _Boot | None = None
        self._candidates: OrderedDict[bytes, _Boot] = OrderedDict()
        self._retired: deque[bytes] = deque(maxlen=RETIRED_BOOTS)
        self._rx_at: dict[str, float] = {}
        self._tx_ok_at: dict[str, float] = {}
        self._message: Heartbeat | None = None
        self._message_at: float | None = None
        self._acked_tick = 0
        self._ack_boot: _Boot | None = None  # the boot our acknowledgements refer to
        self._sent_at: OrderedDict[int, float] = OrderedDict()
        self._foreign: tuple[bytes, int, float] | None = None  # (boot id, version, when) of unreadable packets
        self._foreign_window = ReplayWindow()

    def sent(self, tick: int, now: float) -> None:
        """Our heartbeat round ``tick`` went out at ``now`` (the peer's acknowledgements are dated by it)."""
        self._sent_at[tick] = now
        while len(self._sent_at) > SENT_TICKS_KEPT:
            self._sent_at.popitem(last=False)

    def last_heard(self, link: str) -> float | None:
        """When the current peer boot was last heard on ``link`` (None: not yet)."""
        return self._rx_at.get(link)

    def accept(self, header: Header, message: Heartbeat, link: str, now: float,
               own_boot_id: bytes, own_tick: int) -> str | None:
        """File one opened packet; return None if accepted, else the reject reason.

        `own_tick` is our current heartbeat tick.
        """
        if message.node != self.peer_name:
            return "wrong_node"
        if header.boot_id in self._retired:
            return "replay"
        boot = self._boot_for(header.boot_id, own_tick)
        if not boot.window.accept(header.seq):
            return "replay"
        boot.heard[link] = max(boot.heard.get(link, 0), message.tick)
        # Only a newer round refreshes liveness, or the newest one's copy on another link within a
        # deadtime of its first: a late packet, never seen but older, may be a replay captured while
        # this link was cut (the peer may be dead by now).
        fresh = message.tick > boot.newest_tick or (
            message.tick == boot.newest_tick and now - boot.newest_at < self.deadtime)
        if message.tick > boot.newest_tick:
            boot.newest_tick, boot.newest_at = message.tick, now
        if boot is self.current or not self._current_alive(now):
            # A candidate boot is acknowledged only once the current one went silent, so
            # replayed packets of some unknown boot cannot divert our acknowledgements.
            self._ack_boot = boot
        acks_us = message.ack_boot == boot_tag(own_boot_id)
        newest_ack = max((tick for _, tick in message.acks), default=0) if acks_us else 0
        if boot is not self.current:
            if not (self._evidently_newer(header) or acks_us and newest_ack >= boot.first_seen_tick):
                return "unconfirmed"
            self._promote_boot(boot)
        if acks_us:
            self._acked_tick = max(self._acked_tick, newest_ack)
            for name in self.link_names:
                tick = message.ack_for(name)
                if tick is not None and tick in self._sent_at:
                    self._tx_ok_at[name] = max(self._tx_ok_at.get(name, 0.0), self._sent_at[tick])
        if fresh:
            self._rx_at[link] = now
        if self._message is None or message.tick >= self._message.tick:
            self._message, self._message_at = message, now
        return None

    def foreign(self, header: Header, version: int, now: float) -> str | None:
        """File an authentic packet of another protocol generation; None if it shows the peer alive.

        Its payload cannot be read, so no round trip can confirm it, and none
        is waited for: a false "alive" only holds a takeover back, while a
        live peer missed lets this node take the calls from it. So it counts
        from a boot no older than the readable boots seen (the current one,
        or the one persisted before our restart, whatever its seq: the peer
        may not have restarted at all) and newer than the foreign boot
        already counted, and each sequence number once. A replay of recorded
        packets can at worst keep a dead peer looking alive; it can never make
        a takeover happen.
        """
        if self._foreign is None or self._foreign[0] != header.boot_id:
            counter = boot_counter(header.boot_id)
            readable = [boot_counter(self.current.boot_id)] if self.current is not None else []
            readable += [self.known[0]] if self.known is not None else []
            newer_than_foreign = self._foreign is None or counter > boot_counter(self._foreign[0])
            if counter < max(readable, default=0) or not newer_than_foreign or header.boot_id in self._retired:
                return "replay"
            self._foreign_window = ReplayWindow()
        if not self._foreign_window.accept(header.seq):
            return "replay"
        self._foreign = (header.boot_id, version, now)
        return None

    def _evidently_newer(self, header: Header) -> bool:
        """Whether a boot other than the current one is fresher than anything seen before."""
        counter = boot_counter(header.boot_id)
        floor = boot_counter(self.current.boot_id) if self.current else None
        if self.known is not None:
            known_counter, known_seq = self.known
            if self.current is None and counter == known_counter:
                return header.seq > known_seq + self.known_margin
            floor = max(floor or 0, known_counter)
        return floor is None or counter > floor

    def record(self) -> tuple[int, int] | None:
        """(boot counter, highest seq) of the current peer boot, for persisting."""
        if self.current is None:
            return self.known
        return boot_counter(self.current.boot_id), self.current.window.highest

    def _current_alive(self, now: float) -> bool:
        last = max(self._rx_at.values(), default=None)
        return last is not None and now - last < self.deadtime

    def _boot_for(self, boot_id: bytes, own_tick: int) -> _Boot:
        if self.current is not None and self.current.boot_id == boot_id:
            return self.current
        boot = self._candidates.get(boot_id)
        if boot is None:
            boot = _Boot(boot_id, first_seen_tick=own_tick + 1)
            if self.known is not None and boot_counter(boot_id) == self.known[0]:
                boot.window = ReplayWindow(floor=self.known[1])  # seen before our restart
            self._candidates[boot_id] = boot
            while len(self._candidates) > 4:
                self._candidates.popitem(last=False)
        return boot

    def _promote_boot(self, boot: _Boot) -> None:
        if self.current is not None:
            self._retired.append(self.current.boot_id)
        self._candidates.pop(boot.boot_id, None)
        self.current = boot
        self._rx_at.clear()
        self._tx_ok_at.clear()
        self._message = self._message_at = None
        self._acked_tick = 0

    def acks(self) -> tuple[bytes, tuple[tuple[int, int], ...]]:
        """What our next heartbeat acknowledges: the peer boot's tag and per-link last ticks."""
        boot = self._ack_boot
        if boot is None:
            return b"\0\0\0\0", ()
        return boot_tag(boot.boot_id), tuple(
            (link_id(name), boot.heard[name]) for name in self.link_names if name in boot.heard
        )

    def view(self) -> PeerView:
        """The current PeerView for the decision core."""
        links = tuple(
            LinkView(name, self._rx_at.get(name), self._tx_ok_at.get(name)) for name in self.link_names
        )
        return PeerView(
            links=links, message=self._message, message_at=self._message_at,
            acked_tick=self._acked_tick,
            boot_id=self.current.boot_id if self.current else None,
            foreign_version=self._foreign[1] if self._foreign else None,
            foreign_at=self._foreign[2] if self._foreign else None,
        )
