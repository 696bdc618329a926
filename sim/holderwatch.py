"""Who holds a shared address, seen from the switch of a network-namespace lab, every few milliseconds.

`HolderWatch` asks from the switch's bridge (sim.netns_ask) and reads the
answers off a sniffer on the same bridge (sim.netns_sniff): a box holds an
address while it answers ARP for it. Each request starts a slot; the MACs
whose replies arrive before the next request held the address in that slot.
The tests and bench/safety.py read the longest run of slots with two holders.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import threading
from typing import Any

from sim.netns import BRIDGE, SWITCH_IPV4, NetnsError, NetnsLab, Sniffer, popen_in


class HolderWatch:
    """Asks the lab's LAN who holds `ips` every `interval` seconds and keeps every answer."""

    def __init__(self, lab: NetnsLab, ips: list[str], interval: float = 0.004) -> None:
        self.ips, self.interval = list(ips), interval
        self.sniffer: Sniffer = lab.sniffer()
        self._proc = popen_in(lab.switch, [sys.executable, "-u", "-m", "sim.netns_ask", BRIDGE,
                                           str(SWITCH_IPV4.ip), str(interval), *self.ips],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def wait_ready() -> None:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                if json.loads(line).get("kind") == "ready":
                    ready.set()
                    return

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(10):
            self.close()
            raise NetnsError("the ARP asker on the lab switch did not start")

    def slots(self, ip: str, since: float | None = None, until: float | None = None) -> list[tuple[float, set[str]]]:
        """(request time, MACs that answered before the next request) for each request for `ip`."""
        frames = self.sniffer.frames
        asks = [f["t"] for f in frames
                if f["kind"] == "arp-request" and f["dir"] == "out" and f.get("target_ip") == ip
                and (since is None or f["t"] >= since) and (until is None or f["t"] <= until)]
        replies = sorted((f["t"], f["mac"]) for f in frames
                         if f["kind"] == "arp-reply" and f["dir"] == "in" and f["ip"] == ip)
        times = [t for t, _ in replies]
        found: list[tuple[float, set[str]]] = []
        for start, end in zip(asks, asks[1:] + [float("inf")]):
            first, last = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
            found.append((start, {mac for _, mac in replies[first:last]}))
        return found[:-1] if found else found  # the last slot may still be collecting answers

    def dual_ms(self, ip: str, since: float | None = None, until: float | None = None) -> float:
        """The longest run of slots in which two or more boxes answered for `ip`, in milliseconds."""
        longest = run_start = 0.0
        previous: float | None = None
        slots = self.slots(ip, since, until)
        for index, (start, holders) in enumerate(slots):
            if len(holders) >= 2:
                if previous is None:
                    run_start = start
                end = slots[index + 1][0] if index + 1 < len(slots) else start + self.interval
                previous = end
                longest = max(longest, end - run_start)
            else:
                previous = None
        return longest * 1000

    def holders(self, ip: str, since: float | None = None) -> list[set[str]]:
        """The holders of each slot since `since`, in order."""
        return [holders for _, holders in self.slots(ip, since)]

    def close(self) -> None:
        """Stop asking (the sniffer is the lab's: it stops with the lab)."""
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "HolderWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
