"""Timeouts and fail-fast paths: how long each takes against the limit it was given.

The functional tests only check that these things happen (the stall fence
fires, a hung hook is killed, a read against a hung server gives up, an
unplugged panel fails at once); how close to their limits they do so is
measured here, where a loaded machine makes a figure worse instead of
failing a test:

- stall fence: how long after its limit (200 ms without a tick) the fence
  thread releases the relays;
- hook timeout: how long a hook runner with a 0.5 s timeout takes to kill a
  hook that would sleep for ten minutes (and its process group);
- AMI: how long an Asterisk sensor read with timeout_s 1 takes against a
  server that never answers (its own budget is 0.9 of timeout_s, so the
  health monitor's timeout never has to cut it off);
- SIP: how long a SIP OPTIONS read with timeout_s 1 takes against a silent
  responder;
- Crystalfontz panel: how long a command takes to fail while the module is
  unplugged (no retries);
- LAN probe (root only): how long `probe` with a 0.4 s window takes for a
  free address in the namespace lab.

Usage (from the repository root, after `./dev test` set up .venv):
    .venv/bin/python bench/timeouts.py
The last line is JSON: for each, p50/p99/max in ms (past its limit, or the whole read for AMI/SIP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firmware.core.actions.hooks import HookRunner  # noqa: E402
from firmware.core.sensors.ami import AsteriskSensor  # noqa: E402
from firmware.core.sensors.base import SensorContext  # noqa: E402
from firmware.core.sensors.sip import SipOptionsSensor  # noqa: E402
from firmware.core.watchdog import StallFence  # noqa: E402
from firmware.panel.cfa.connection import CfaError, CfaPanel  # noqa: E402
from sim.cfa635 import CfaEmulator  # noqa: E402
from sim.fakeami import FakeAmiServer  # noqa: E402
from sim.fakesip import FakeSipResponder  # noqa: E402
from stats import percentile  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
SLOW_RUNS = max(3, RUNS // 4)  # the ones that wait a second each


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call()`` took (whatever it raised)."""
    started = time.monotonic()
    try:
        call()
    except Exception:  # noqa: BLE001 - the failure is what is being timed
        pass
    return time.monotonic() - started


def stall_fence(limit: float = 0.2) -> list[float]:
    """Ms from the moment the loop counts as stalled (last tick + limit) to the release."""
    figures = []
    for _ in range(RUNS):
        released: list[float] = []
        done = threading.Event()
        fence = StallFence(limit, lambda: (released.append(time.monotonic()), done.set()))
        fence.start()
        try:
            fence.tick(holding=True)
            ticked = time.monotonic()  # tick() read the clock just before this
            assert done.wait(10), "the fence never fired"
            figures.append((released[0] - ticked - limit) * 1000)
        finally:
            fence.stop()
    return figures


def hook_kill(timeout: float = 0.5) -> list[float]:
    """Ms past the hook timeout until the runner returns with the hook's process group killed."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-hooks-") as tmp:
        folder = Path(tmp) / "state"
        folder.mkdir()
        hook = folder / "hang"
        hook.write_text("#!/bin/sh\nsleep 600 & wait\n")
        hook.chmod(0o755)
        runner = HookRunner(Path(tmp), timeout=timeout)
        for _ in range(SLOW_RUNS):
            figures.append((timed(lambda: asyncio.run(runner.run("state", {}, {}))) - timeout) * 1000)
    return figures


def ami_hung(timeout: float = 1.0) -> list[float]:
    """Ms an Asterisk read with ``timeout`` takes against a server that sends nothing."""
    figures = []
    with FakeAmiServer(secret="bench") as server:
        server.hang = True
        options = AsteriskSensor.Options(port=server.port, username="tandem", secret="bench", timeout_s=timeout,
                                         registrations="none")
        for _ in range(SLOW_RUNS):
            sensor = AsteriskSensor("pbx", options, SensorContext())
            try:
                figures.append(timed(sensor.read) * 1000)
            finally:
                sensor.close()
    return figures


def sip_silent(timeout: float = 1.0) -> list[float]:
    """Ms a SIP OPTIONS read with ``timeout`` takes against a silent responder."""
    figures = []
    with FakeSipResponder() as sip:
        sip.silent = True
        options = SipOptionsSensor.Options(uri=f"sip:pbx@127.0.0.1:{sip.port}", timeout_s=timeout)
        for _ in range(SLOW_RUNS):
            figures.append(timed(SipOptionsSensor("sip", options, SensorContext()).read) * 1000)
    return figures


def cfa_unplugged() -> list[float]:
    """Ms a command takes to fail while the module is unplugged (its limit is 0: no tries)."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-cfa-") as tmp, \
            CfaEmulator("cfa635", directory=Path(tmp)) as emulator:
        panel = CfaPanel(emulator.port, "cfa635", retry_interval=0.2)
        try:
            emulator.unplug()
            deadline = time.monotonic() + 10
            while panel.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            for _ in range(RUNS):
                started = time.monotonic()
                try:
                    panel.ping()
                except CfaError:
                    pass
                figures.append((time.monotonic() - started) * 1000)
        finally:
            panel.close()
    return figures


def lan_probe(window: float = 0.4) -> list[float] | None:
    """Ms past the window for `probe` of a free address (root: the namespace lab); None without root."""
    if os.geteuid() != 0:
        return None
    from sim.netns import NetnsLab

    figures = []
    lab = NetnsLab(nodes=2)
    try:
        network = lab.network(lab.nodes[0])
        free = ipaddress.ip_address("192.0.2.99")
        for _ in range(SLOW_RUNS):
            figures.append((timed(lambda: network.probe("eth0", free, window)) - window) * 1000)
    finally:
        lab.close()
    return figures


def summary(figures: list[float] | None) -> dict[str, float] | None:
    """p50, p99 and max, rounded to 0.1 ms."""
    if not figures:
        return None
    return {"p50": round(percentile(figures, 50), 1), "p99": round(percentile(figures, 99), 1),
            "max": round(max(figures), 1)}


def main() -> None:
    logging.disable(logging.CRITICAL)  # the fence's and the panel's error logs are the point here
    results = {}
    for name, measure, what in (
            ("stall_fence_late_ms", stall_fence, "stall fence, past its 200 ms limit"),
            ("hook_kill_late_ms", hook_kill, "hook killed, past its 0.5 s timeout"),
            ("ami_hung_read_ms", ami_hung, "AMI read against a hung server with timeout_s 1"),
            ("sip_silent_read_ms", sip_silent, "SIP OPTIONS against a silent responder with timeout_s 1"),
            ("cfa_unplugged_ms", cfa_unplugged, "Crystalfontz command while unplugged, to its error"),
            ("lan_probe_late_ms", lan_probe, "LAN probe of a free address, past its 0.4 s window")):
        figures = measure()
        results[name] = summary(figures)
        if figures is None:
            print(f"{what}: skipped (needs root)", flush=True)
        else:
            s = results[name]
            print(f"{what}: {len(figures)} runs, p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, "
                  f"max {s['max']:.1f} ms", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
