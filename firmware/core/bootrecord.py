"""The boot record: this node's boot counter and the newest peer boot it has seen, on disk.

Every daemon start takes a boot counter higher than any before it (and never
below the wall clock's seconds), persisted before the first packet is sent, so
a nonce is never reused and the peer recognises the restart. The peer's boot
counter and highest sequence number are saved every few seconds: after our own
restart, only newer packets of that boot are accepted without a round trip
(see peer.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from firmware.core.alarms import Alarm
from firmware.core.journal import JsonStore

PeerRecord = tuple[int, int]  # (peer boot counter, highest sequence number seen)


class BootRecord:
    """``boot.json``: our boot counter and the peer's last known boot."""

    def __init__(self, path: Path) -> None:
        self._store = JsonStore(path, "boot record")
        data = self._store.load()
        self.counter = max(int(data.get("own_counter", 0)) + 1, int(time.time()))
        known = data.get("peer")
        self.known_peer: PeerRecord | None = (
            (int(known[0]), int(known[1])) if isinstance(known, list) and len(known) == 2 else None)
        self._saved = self.known_peer
        # The new counter is on disk before the first packet: a crash must never reuse it. If the disk
        # refuses it (full, read-only), the node still starts, with an alarm: the counter is never below
        # the wall clock's seconds and the boot id has random bytes besides, so a nonce is not reused.
        self._store.save_now(self._data(self.known_peer))

    def alarms(self) -> list[Alarm]:
        """A critical alarm while boot.json cannot be written."""
        return self._store.alarms()

    def save_peer(self, record: PeerRecord | None, now: bool = False) -> None:
        """Persist the peer's boot record if it changed (``now``: always, and synchronously)."""
        if record == self._saved and not now:
            return
        self._saved = record
        (self._store.save_now if now else self._store.save)(self._data(record))

    def _data(self, record: PeerRecord | None) -> dict[str, object]:
        return {"own_counter": self.counter, "peer": list(record) if record else None}
