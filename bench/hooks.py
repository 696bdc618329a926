"""What hanging hook scripts cost the heartbeat: tick lateness and late heartbeats, against no hooks.

Runs the simulated rack twice for DURATION_S each: once without hooks, once
with an `all` hook that sleeps 2 s (killed at its 1.5 s timeout) for every
event, while an operator command every 0.3 s keeps events (and so hanging
hooks) coming. For each run it prints, from the daemons' own figures:

- heartbeat tick lateness (the `lateness` control request): p50/p99/max ms;
- the peer's view: heartbeats that arrived more than 200 ms late (the
  status's per-link `lateness_ms` buckets);
- how many hooks ran and how many were killed at their timeout.

`tests/test_hooks.py` checks the behaviour (a hanging hook never makes the
peer lose a node); this prints how close the ticks stay to their schedule.

Usage (from the repository root, after `./dev test` set up .venv):
    .venv/bin/python bench/hooks.py
The last line is JSON: tick lateness p99/max with and without hanging hooks, and late heartbeats.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.rack import NODES, TwoNodeRack  # noqa: E402

DURATION_S = float(os.environ.get("BENCH_DURATION_S", "20"))
COMMAND_EVERY_S = 0.3


def late_heartbeats(status: dict[str, Any]) -> int:
    """Heartbeats this node received more than 200 ms late, over all links."""
    return sum(row["lateness_ms"].get("<=500ms", 0) + row["lateness_ms"].get(">500ms", 0) for row in status["links"])


def measure(directory: Path, hooks: bool) -> dict[str, float]:
    """One run; the worse node's figures."""
    extra: dict[str, dict[str, Any]] = {}
    if hooks:
        folder = directory / "hooks" / "all"
        folder.mkdir(parents=True)
        hook = folder / "90-slow"
        hook.write_text("#!/bin/sh\nsleep 2\n")
        hook.chmod(0o755)
        extra["hooks"] = {"dir": str(directory / "hooks"), "timeout_ms": 1500}
    rack = TwoNodeRack(directory / "rack", timers={"initdead_ms": 1500}, extra=extra)
    rack.start()
    try:
        rack.wait_for(rack.settled, 60, what="a settled pair")
        ticks = {name: rack.control(name, {"cmd": "lateness"})["tick"] for name in NODES}
        late_before = {name: late_heartbeats(rack.status(name)) for name in NODES}
        started = time.monotonic()
        toggle = False
        while time.monotonic() - started < DURATION_S:
            toggle = not toggle
            rack.control("bravo", {"cmd": "maintenance-on" if toggle else "maintenance-off", "source": "bench"})
            time.sleep(COMMAND_EVERY_S)
        rack.control("bravo", {"cmd": "maintenance-off", "source": "bench"})
        late = {name: rack.control(name, {"cmd": "lateness", "since_tick": ticks[name]}) for name in NODES}
        late_hb = {name: late_heartbeats(rack.status(name)) - late_before[name] for name in NODES}
        ran = [e for name in NODES for e in rack.events(name) if e["kind"] == "hook"]
        killed = sum(1 for e in ran if e["data"].get("exit_code") is None)
        label = "hanging hooks" if hooks else "no hooks     "
        for name in NODES:
            print(f"{label}  {name}: tick lateness p50 {late[name]['p50']:.2f} ms, p99 {late[name]['p99']:.2f} ms, "
                  f"max {late[name]['max']:.2f} ms ({late[name]['samples']} ticks); "
                  f"heartbeats received >200 ms late: {late_hb[name]}", flush=True)
        if hooks:
            print(f"               hooks run: {len(ran)}, killed at the timeout: {killed}", flush=True)
        return {"p99": max(l["p99"] for l in late.values()), "max": max(l["max"] for l in late.values()),
                "late_heartbeats": max(late_hb.values()), "hooks_killed": killed}
    finally:
        rack.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-bench-hooks-") as tmp:
        without = measure(Path(tmp) / "without", hooks=False)
        with_hooks = measure(Path(tmp) / "with", hooks=True)
    print(json.dumps({
        "tick_lateness_p99_ms_no_hooks": without["p99"], "tick_lateness_p99_ms_hanging_hooks": with_hooks["p99"],
        "tick_lateness_max_ms_no_hooks": without["max"], "tick_lateness_max_ms_hanging_hooks": with_hooks["max"],
        "late_heartbeats_hanging_hooks": with_hooks["late_heartbeats"], "hooks_killed": with_hooks["hooks_killed"],
    }))


if __name__ == "__main__":
    main()
