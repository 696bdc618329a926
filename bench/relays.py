"""Trunk relays in the simulated rack: the break-before-make gap and the trunk outage.

Two real daemons with a relay group "trunks" on the simulator's mock GPIO pins
(settle delay 200 ms):

1. HANDOVERS planned handovers (`demote` on whichever node is ACTIVE): the gap
   between the releasing node de-energizing its last relay and the taking node
   energizing its first. It must never be negative (break-before-make).
2. KILLS SIGKILLs of the ACTIVE node: the trunk outage from the kill until the
   peer's relays are closed (detection + settle delay + switching).

Relay switch times come from each node's relay timeline (wall clock, same machine).
Usage, from the repository root after `./dev test` set up .venv:
    .venv/bin/python bench/relays.py
Last line JSON: relay_gap_min_ms, relay_gap_p50_ms, relay_gap_p99_ms, trunk_outage_p99_ms.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

HANDOVERS = int(os.environ.get("BENCH_HANDOVERS", "50"))
KILLS = int(os.environ.get("BENCH_KILLS", "50"))
GROUP = {"name": "trunks", "outputs": ["trunk:1", "trunk:2"], "settle_ms": 200}


def switch_time(rack: TwoNodeRack, name: str, energized: bool, after: float, last: bool) -> float | None:
    """The node's last (or first) relay switch to `energized` at or after `after`."""
    status = rack.status(name)
    if not status or not status["relays"]:
        return None
    times = [e["time"] for e in status["relays"][0]["timeline"] if e["energized"] == energized and e["time"] >= after]
    if not times:
        return None
    return max(times) if last else min(times)


def closed(rack: TwoNodeRack, name: str) -> bool:
    status = rack.status(name)
    return bool(status and status["relays"] and all(o["energized"] for o in status["relays"][0]["outputs"]))


def main() -> None:
    gaps: list[float] = []
    outages: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tandem-relays-") as tmp:
        rack = TwoNodeRack(Path(tmp), timers={"initdead_ms": 1500}, relay_groups=[GROUP],
                           extra={"flap": {"max_failures": 1000}, "failback": {"policy": "never"}})
        rack.start()
        try:
            for run in range(HANDOVERS):
                active = rack.wait_for(rack.settled, 30, what="a settled pair")
                taker = NODES[1 - NODES.index(active)]
                started = time.time()
                result = rack.cli(active, "demote")
                if result.returncode != 0:
                    raise RuntimeError(f"demote failed: {result.stderr.strip()}")
                rack.wait_for(lambda: closed(rack, taker), 10, what=f"{taker}'s relays closed")
                opened = switch_time(rack, active, False, started, last=True)
                made = switch_time(rack, taker, True, started, last=False)
                assert opened is not None and made is not None
                gaps.append((made - opened) * 1000)
                print(f"handover {run + 1:>3}/{HANDOVERS}: {active} -> {taker}, gap {gaps[-1]:.1f} ms", flush=True)
            for run in range(KILLS):
                active = rack.wait_for(rack.settled, 30, what="a settled pair")
                taker = NODES[1 - NODES.index(active)]
                time.sleep(0.3)
                killed = rack.kill(active)
                rack.wait_for(lambda: closed(rack, taker), 10, interval=0.01, what=f"{taker}'s relays closed")
                made = switch_time(rack, taker, True, killed, last=False)
                assert made is not None
                outages.append((made - killed) * 1000)
                print(f"kill {run + 1:>3}/{KILLS}: {active} killed, {taker} closed after {outages[-1]:.1f} ms",
                      flush=True)
                rack.start_node(active)
        finally:
            rack.stop()
    print(f"break-before-make gap over {len(gaps)} handovers: min {min(gaps):.1f} ms, p50 {percentile(gaps, 50):.1f}, "
          f"p99 {percentile(gaps, 99):.1f}, max {max(gaps):.1f} (settle delay 200 ms)")
    print(f"trunk outage over {len(outages)} SIGKILLs: p50 {percentile(outages, 50):.1f} ms, "
          f"p99 {percentile(outages, 99):.1f}, max {max(outages):.1f}")
    print(json.dumps({"relay_gap_min_ms": round(min(gaps), 1), "relay_gap_p50_ms": round(percentile(gaps, 50), 1),
                      "relay_gap_p99_ms": round(percentile(gaps, 99), 1),
                      "trunk_outage_p99_ms": round(percentile(outages, 99), 1)}))


if __name__ == "__main__":
    main()
