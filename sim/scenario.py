"""Scenario files: timed lab commands and expectations, run against a fresh simulated rack.

A scenario is TOML::

    name = "Active node killed"
    description = "…"
    [rack]                      # optional: service = "cold", timers = {…}, shared_ip = "192.0.2.10/24",
                                # arbitration = true (LAN arbitration, the simulated gateway as control),
                                # supervise = false (nothing releases a node whose daemon died),
                                # fencing = true (a simulated BMC per box, fence_ipmilan), fence = {…}
    [[step]]
    at = 0                      # seconds after the rack settled (alpha ACTIVE, bravo STANDBY)
    do = "kill alpha"           # a lab command (sim/commands.py)
    [[step]]
    at = 0
    expect = { bravo = "ACTIVE", owner = "bravo" }
    within = 2                  # must become true within this many seconds …
    hold = 0                    # … and then stay true this long (e.g. "no failover")

Expectation keys: a node name → its state (`DOWN` if not running); `owner` → the
node that has the shared IP (or `none`); `pbx` → nodes whose PBX runs
(`alpha`, `bravo`, `both`, `none`); `alarm_<node>` → a text some alarm of
that node contains; `active_count` → how many nodes are ACTIVE; `lan` → the
boxes that answer for the shared IP on the simulated LAN, whether their
daemon runs or not (`alpha`, `bravo`, `both`, `none`); `lan_count` → how many;
`powered` → the boxes whose power is on (racks with fencing).
`tandem sim run FILE` prints a pass/fail timeline and exits non-zero on a failure.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sim.commands import CommandError, execute
from sim.rack import NODES, TwoNodeRack

SETTLE_TIMEOUT = 30.0
POLL_S = 0.05


class ScenarioError(Exception):
    """A scenario file that cannot be run; names the file and the problem."""


@dataclass
class Step:
    """One timed step: a command or an expectation."""

    at: float
    do: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    within: float = 5.0
    hold: float = 0.0


@dataclass
class Scenario:
    """A parsed scenario file."""

    path: Path
    name: str
    description: str
    rack: dict[str, Any]
    steps: list[Step]


def load(path: Path) -> Scenario:
    """Parse and check a scenario file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    unknown = set(data) - {"name", "description", "rack", "step"}
    if unknown:
        raise ScenarioError(f"{path}: unknown key {sorted(unknown)[0]}")
    steps = []
    for index, raw in enumerate(data.get("step", [])):
        extra = set(raw) - {"at", "do", "expect", "within", "hold"}
        if extra or ("do" in raw) == ("expect" in raw) or "at" not in raw:
            raise ScenarioError(f"{path}: step[{index}]: needs `at` and exactly one of `do` / `expect`"
                                + (f" (unknown key {sorted(extra)[0]})" if extra else ""))
        steps.append(Step(float(raw["at"]), raw.get("do"), dict(raw.get("expect", {})),
                          float(raw.get("within", 5.0)), float(raw.get("hold", 0.0))))
    if not steps:
        raise ScenarioError(f"{path}: no steps")
    return Scenario(path, data.get("name", path.stem), data.get("description", ""), data.get("rack", {}), steps)


def observe(rack: TwoNodeRack) -> dict[str, Any]:
    """What expectations are checked against."""
    statuses = {name: rack.status(name) for name in NODES}
    seen: dict[str, Any] = {}
    owners = []
    for name, status in statuses.items():
        seen[name] = status["state"] if status else "DOWN"
        seen[f"alarm_{name}"] = [alarm["text"] for alarm in status["alarms"]] if status else []
        if status and any(ip.get("present") for ip in status.get("shared_ips", [])):
            owners.append(name)
    seen["owner"] = owners[0] if len(owners) == 1 else ("none" if not owners else "both")
    running = [n for n in NODES if rack.service != "none" and rack.pbx_running(n)]
    seen["pbx"] = running[0] if len(running) == 1 else ("none" if not running else "both")
    seen["active_count"] = sum(1 for n in NODES if seen[n] == "ACTIVE")
    if rack.shared_ips:  # who answers for the first shared address on the simulated LAN, dead daemons included
        lan = sorted(set(rack.holders(rack.shared_ips[0]["address"].split("/")[0])) & set(NODES))
        seen["lan"] = lan[0] if len(lan) == 1 else ("none" if not lan else "both")
        seen["lan_count"] = len(lan)
    if rack.bmcs:
        on = [name for name in NODES if rack.powered(name)]
        seen["powered"] = on[0] if len(on) == 1 else ("none" if not on else "both")
    return seen


def mismatches(expect: dict[str, Any], seen: dict[str, Any]) -> list[str]:
    """Expectations not met, each as `key: wanted X, saw Y`."""
    wrong = []
    for key, wanted in expect.items():
        actual = seen.get(key)
        if key.startswith("alarm_"):
            ok = any(str(wanted) in alarm for alarm in actual or [])
        else:
            ok = str(actual) == str(wanted)
        if not ok:
            wrong.append(f"{key}: wanted {wanted}, saw {actual}")
    return wrong


def build_rack(scenario: Scenario, base: Path) -> TwoNodeRack:
    """A rack configured as the scenario asks."""
    options = dict(scenario.rack)
    shared_ip = options.pop("shared_ip", "192.0.2.10/24")
    rack = TwoNodeRack(base, timers=options.pop("timers", None), service=options.pop("service", "none"),
                       shared_ips=[{"address": shared_ip, "interface": "eth0"}] if shared_ip else [],
                       extra=options.pop("extra", None), arbitration=bool(options.pop("arbitration", False)),
                       supervise=bool(options.pop("supervise", True)), fencing=bool(options.pop("fencing", False)),
                       fence=options.pop("fence", None))
    if options:
        raise ScenarioError(f"{scenario.path}: rack: unknown key {sorted(options)[0]}")
    return rack


def run(scenario: Scenario, out: TextIO = sys.stdout, base: Path | None = None) -> bool:
    """Run a scenario on a fresh rack; print the timeline; return whether every step passed."""
    with tempfile.TemporaryDirectory(prefix="tandem-scenario-") as tmp:
        rack = build_rack(scenario, base or Path(tmp))
        print(f"scenario: {scenario.name}", file=out)
        if scenario.description:
            print(f"  {scenario.description}", file=out)
        rack.start()
        passed = True
        try:
            rack.wait_for(lambda: observe(rack)["alpha"] == "ACTIVE" and observe(rack)["bravo"] == "STANDBY",
                          SETTLE_TIMEOUT, what="the rack to settle")
            start = time.monotonic()
            for step in sorted(scenario.steps, key=lambda s: s.at):
                delay = start + step.at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                ok, text = _do(rack, step) if step.do else _expect(rack, step)
                passed &= ok
                stamp = time.monotonic() - start
                print(f"  [{stamp:7.2f}s] {'PASS' if ok else 'FAIL'}  {text}", file=out, flush=True)
                if not ok:
                    break
        except TimeoutError as exc:
            print(f"  FAIL  {exc}", file=out)
            passed = False
        finally:
            rack.stop()
        print(f"result: {'PASS' if passed else 'FAIL'}", file=out, flush=True)
        return passed


def _do(rack: TwoNodeRack, step: Step) -> tuple[bool, str]:
    try:
        return True, f"do {step.do}: {execute(rack, step.do or '')}"
    except CommandError as exc:
        return False, f"do {step.do}: {exc}"


def _expect(rack: TwoNodeRack, step: Step) -> tuple[bool, str]:
    label = ", ".join(f"{k}={v}" for k, v in step.expect.items())
    began = time.monotonic()
    while True:
        wrong = mismatches(step.expect, observe(rack))
        if not wrong:
            break
        if time.monotonic() - began > step.within:
            return False, f"expect {label} within {step.within:g}s: {'; '.join(wrong)}"
        time.sleep(POLL_S)
    took = time.monotonic() - began
    hold_until = time.monotonic() + step.hold
    while time.monotonic() < hold_until:
        wrong = mismatches(step.expect, observe(rack))
        if wrong:
            return False, f"expect {label} to hold {step.hold:g}s: broke after " \
                          f"{step.hold - (hold_until - time.monotonic()):.2f}s: {'; '.join(wrong)}"
        time.sleep(POLL_S)
    held = f", held {step.hold:g}s" if step.hold else ""
    return True, f"expect {label} (after {took:.2f}s{held})"


def shipped() -> list[Path]:
    """Every scenario file shipped in sim/scenarios/."""
    return sorted((Path(__file__).parent / "scenarios").glob("*.toml"))
