"""Failover detection time and idle cost of the daemon.

Runs the simulated rack (two real `tandem run` processes, loopback UDP through
a relay and a pty serial cable, 100 ms heartbeat, 300 ms deadtime) and:

1. SIGKILLs the ACTIVE daemon RUNS times; each time measures from the kill to
   the moment the standby's decision core journals the change to ACTIVE
   (both clocks are this machine's wall clock), then restarts the killed node;
2. leaves the settled pair idle for IDLE_S seconds and measures each daemon's
   CPU use (% of one core) and resident memory.

Usage (from the repository root, after `./dev test` or `./dev lab` set up .venv):
    .venv/bin/python bench/failover.py
The last line is JSON: detect_p50_ms, detect_p95_ms, detect_p99_ms, idle_cpu_pct, idle_rss_mb.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "60"))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "60"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        # Every SIGKILL of the ACTIVE counts as a crash; keep flap damping out of the way.
        rack = TwoNodeRack(Path(tmp), timers={"initdead_ms": 1500}, extra={"flap": {"max_failures": 1000}})
        rack.start()
        try:
            detections = []
            for run in range(RUNS):
                active = rack.wait_for(rack.settled, 30, what="a settled pair")
                time.sleep(0.3)  # a few heartbeats in the steady state before the kill
                standby = NODES[1 - NODES.index(active)]
                killed_at = rack.kill(active)
                took = rack.wait_for(lambda: rack.state_time(standby, "ACTIVE", killed_at), 10,
                                     interval=0.01, what=f"{standby} to become ACTIVE")
                detections.append((took - killed_at) * 1000)
                print(f"run {run + 1:>3}/{RUNS}: {active} killed, {standby} ACTIVE after {detections[-1]:.1f} ms",
                      flush=True)
                rack.start_node(active)
            rack.wait_for(rack.settled, 30, what="a settled pair")
            procs = {name: psutil.Process(rack.procs[name].pid) for name in NODES}
            time.sleep(2)
            before = {n: p.cpu_times() for n, p in procs.items()}
            started = time.monotonic()
            time.sleep(IDLE_S)
            elapsed = time.monotonic() - started
            cpu = {n: (sum(p.cpu_times()[:2]) - sum(before[n][:2])) / elapsed * 100 for n, p in procs.items()}
            rss = {n: p.memory_info().rss / 2**20 for n, p in procs.items()}
            links = {n: len(rack.status(n)["links"]) for n in NODES}
        finally:
            rack.stop()
    print(f"detection over {len(detections)} SIGKILLs: min {min(detections):.1f} ms, "
          f"p50 {percentile(detections, 50):.1f}, p95 {percentile(detections, 95):.1f}, "
          f"p99 {percentile(detections, 99):.1f}, max {max(detections):.1f} ms")
    for name in NODES:
        print(f"idle {name}: {cpu[name]:.2f} % of one core over {elapsed:.0f} s, RSS {rss[name]:.1f} MB, "
              f"{links[name]} links at 10 Hz")
    print(json.dumps({
        "detect_p50_ms": round(percentile(detections, 50), 1),
        "detect_p95_ms": round(percentile(detections, 95), 1),
        "detect_p99_ms": round(percentile(detections, 99), 1),
        "idle_cpu_pct": round(max(cpu.values()), 2),
        "idle_rss_mb": round(max(rss.values()), 1),
    }))


if __name__ == "__main__":
    main()
