"""Takeover time in network namespaces: from SIGKILL of the ACTIVE node to the network following.

Needs root. Builds the namespace lab (sim.netns: a switch namespace with a
bridge, one namespace per node), runs two real daemons with the netlink
shared-IP backend (192.0.2.100/24 and 2001:db8::100/64 on eth0), and over
RUNS SIGKILLs of the ACTIVE node, for the default timers (100 ms heartbeat /
300 ms deadtime) and for 50 ms / 150 ms, measures from the kill until:

  (a) the standby's decision core takes over (journal: state -> TAKEOVER);
      `active_done` is when its promote actions finished (state -> ACTIVE);
  (b) the shared IPv4 address is on its eth0 (`ip monitor address` in its namespace);
  (c) the first gratuitous ARP for it is captured on the switch's bridge.

All times are this machine's wall clock (the sniffer uses kernel receive stamps).
Usage, from the repository root after `./dev test` set up .venv:
    .venv/bin/python bench/takeover.py
The last line is JSON with active_p50_ms, active_p99_ms, vip_p99_ms, garp_p50_ms,
garp_p99_ms, garp_minus_active_p99_ms (default timers) plus the 50/150 figures.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "50"))
SHARED = "192.0.2.100"
TIMER_SETS = {"default": {"heartbeat_ms": 100, "deadtime_ms": 300},
              "fast": {"heartbeat_ms": 50, "deadtime_ms": 150}}


class AddressMonitor:
    """`ip monitor address` in a node's namespace; remembers when SHARED was added."""

    def __init__(self, namespace: str) -> None:
        self.proc = subprocess.Popen(["ip", "-n", namespace, "monitor", "address"], stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.added: queue.Queue[float] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if f"inet {SHARED}/" in line and not line.startswith("Deleted"):
                self.added.put(time.time())

    def first_after(self, since: float, timeout: float = 10.0) -> float:
        """The first addition of the shared address after `since`."""
        deadline = time.monotonic() + timeout
        while True:
            stamp = self.added.get(timeout=max(0.01, deadline - time.monotonic()))
            if stamp >= since:
                return stamp

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def measure(timers: dict[str, int]) -> dict[str, list[float]]:
    """RUNS SIGKILLs at the given timers; the delays in ms for each measurement."""
    figures: dict[str, list[float]] = {"active": [], "active_done": [], "vip": [], "garp": [], "garp_minus_active": []}
    with tempfile.TemporaryDirectory(prefix="tandem-takeover-") as tmp:
        rack = TwoNodeRack(Path(tmp), netns=True, timers={**timers, "initdead_ms": 1500},
                           extra={"flap": {"max_failures": 1000}},
                           shared_ips=[{"address": f"{SHARED}/24", "interface": "eth0"},
                                       {"address": "2001:db8::100/64", "interface": "eth0"}])
        monitors: dict[str, AddressMonitor] = {}
        try:
            rack.start()
            monitors = {name: AddressMonitor(rack.namespace(name)) for name in NODES}
            sniffer = rack.lab.sniffer()
            macs = {name: rack.lab.nodes[i].mac for i, name in enumerate(NODES)}
            for run in range(RUNS):
                active = rack.wait_for(rack.settled, 30, what="a settled pair")
                time.sleep(0.3)
                standby = NODES[1 - NODES.index(active)]
                killed = rack.kill(active)
                decided = rack.wait_for(lambda: rack.state_time(standby, "TAKEOVER", killed), 10, interval=0.01,
                                        what="the takeover decision")
                done = rack.wait_for(lambda: rack.state_time(standby, "ACTIVE", killed), 10, interval=0.01,
                                     what="ACTIVE")
                vip = monitors[standby].first_after(killed)
                garp = sniffer.wait_for(kind="garp", ip=SHARED, mac=macs[standby], since=killed, timeout=10)["t"]
                for key, value in (("active", decided), ("active_done", done), ("vip", vip), ("garp", garp)):
                    figures[key].append((value - killed) * 1000)
                figures["garp_minus_active"].append((garp - decided) * 1000)
                print(f"{timers['heartbeat_ms']}/{timers['deadtime_ms']} run {run + 1:>3}/{RUNS}: "
                      f"decision {figures['active'][-1]:.0f} ms, ACTIVE {figures['active_done'][-1]:.0f}, "
                      f"address {figures['vip'][-1]:.0f}, first GARP {figures['garp'][-1]:.0f}", flush=True)
                rack.start_node(active)
                sniffer.clear()
        finally:
            for monitor in monitors.values():
                monitor.close()
            rack.stop()
    return figures


def main() -> None:
    if os.geteuid() != 0:
        print("bench/takeover.py needs root (it builds network namespaces)", file=sys.stderr)
        print(json.dumps({key: None for key in ("active_p50_ms", "active_p99_ms", "vip_p99_ms", "garp_p50_ms",
                                                "garp_p99_ms", "garp_minus_active_p99_ms")}))
        return
    results = {name: measure(timers) for name, timers in TIMER_SETS.items()}
    summary: dict[str, float] = {}
    for name, figures in results.items():
        suffix = "" if name == "default" else "_50_150"
        timers = TIMER_SETS[name]
        print(f"\n{timers['heartbeat_ms']} ms heartbeat / {timers['deadtime_ms']} ms deadtime, {RUNS} SIGKILLs:")
        for key, values in figures.items():
            p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
            print(f"  {key:<18} p50 {p50:6.1f}  p95 {p95:6.1f}  p99 {p99:6.1f}  min {min(values):6.1f}  "
                  f"max {max(values):6.1f} ms")
            for q, value in (("p50", p50), ("p95", p95), ("p99", p99)):
                summary[f"{key}_{q}_ms{suffix}"] = round(value, 1)
    keys = ("active_p50_ms", "active_p99_ms", "vip_p99_ms", "garp_p50_ms", "garp_p99_ms", "garp_minus_active_p99_ms")
    last = {key: summary[key] for key in keys}
    last.update({k: v for k, v in summary.items() if k not in last})
    print(json.dumps(last))


if __name__ == "__main__":
    main()
