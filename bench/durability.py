"""What an acknowledged command's durability costs, and that it stays off the heartbeat path (issue 14).

An operator command is journaled before it runs: a ``request`` record written
and fsync'd by the journal's writer thread while the event loop awaits it
(`Journal.record_durable`). This measures, on the disk the repository is on:

  durable_record_ms   p50 / p99 of one record_durable() call, alone (``CALLS`` calls).
  plain_record_us     p50 / p99 of one ordinary record() call on the loop (queued, not waited on).
  loop_lateness_ms    the worst lateness of a 10 ms timer on the same loop while the durable
                      records are written back to back: what the fsyncs cost the heartbeat path.
  command_ms          p50 / p99 of a whole `maintenance-on` / `maintenance-off` round trip on a
                      real daemon of the simulated rack (control socket, durable request, core,
                      reply): what an operator waits.

Power-loss durability (the fsync, not only the write) needs a block device that can drop
what was not flushed: dm-flakey / dm-log-writes. This machine's kernel has no
device-mapper, so it is left to the power-pull tests of the appliance image's VM rack.

Usage, from the repository root after the README's setup:
    .venv/bin/python bench/durability.py        (BENCH_CALLS=500, BENCH_COMMANDS=100)
The last line is JSON with the keys above.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firmware.core.journal import Journal  # noqa: E402
from sim.rack import TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "500"))
COMMANDS = int(os.environ.get("BENCH_COMMANDS", "100"))
ROOT = Path(__file__).resolve().parent.parent


def pair(values: list[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank), rounded."""
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3)}


async def journal_figures(directory: Path) -> dict[str, dict[str, float] | float]:
    journal = Journal(directory)
    durable, plain, lateness = [], [], [0.0]
    stop = asyncio.Event()

    async def timer() -> None:  # stands for the heartbeat tick
        while not stop.is_set():
            due = time.monotonic() + 0.01
            await asyncio.sleep(0.01)
            lateness[0] = max(lateness[0], time.monotonic() - due)

    ticking = asyncio.ensure_future(timer())
    await asyncio.sleep(0.05)
    for n in range(CALLS):
        started = time.perf_counter()
        await journal.record_durable("request", {"cmd": "bench", "n": n})
        durable.append((time.perf_counter() - started) * 1000)
    stop.set()
    await ticking
    for n in range(CALLS):
        started = time.perf_counter()
        journal.record("bench", {"n": n})
        plain.append((time.perf_counter() - started) * 1e6)
    journal.close()
    return {"durable_record_ms": pair(durable), "plain_record_us": pair(plain),
            "loop_lateness_ms": round(lateness[0] * 1000, 2)}


def command_figures(base: Path) -> dict[str, float]:
    times = []
    with TwoNodeRack(base) as rack:
        rack.wait_settled(timeout=60)
        for n in range(COMMANDS):
            started = time.perf_counter()
            rack.control("bravo", {"cmd": "maintenance-on" if n % 2 == 0 else "maintenance-off", "source": "bench"})
            times.append((time.perf_counter() - started) * 1000)
    return pair(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-durability-", dir=ROOT) as scratch:
        figures = asyncio.run(journal_figures(Path(scratch)))
        print(f"durable record: {figures['durable_record_ms']} ms; plain record: {figures['plain_record_us']} µs; "
              f"worst 10 ms timer lateness meanwhile: {figures['loop_lateness_ms']} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="tandem-durability-") as scratch:
        figures["command_ms"] = command_figures(Path(scratch))
        print(f"maintenance-on/off round trip: {figures['command_ms']} ms", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
