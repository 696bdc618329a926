"""The fence-agent runner and the simulated BMC: key=value options on stdin, exit codes, timeouts, real ipmi_sim.

The first tests drive `run_agent` with small agents written here (what a
fence agent reads, what its exit codes mean, that an overrunning agent and
its children are killed). The rest run the real `fence_ipmilan` (and with
it `ipmitool`) against OpenIPMI's `ipmi_sim`, whose chassis power is a
simulated box (`sim.bmcpower`): power off kills the box's processes at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from firmware.config.node import FenceDeviceConfig
from firmware.core.cluster import FenceReport
from firmware.core.fencing import AgentRun, Fencer, agent_input, run_agent
from firmware.core.journal import Journal
from sim.bmc import SimulatedBmc, missing_tools
from sim.bmcpower import powered, write_spec

AGENT = """#!{python}
import sys, json, time, subprocess
options = dict(line.split("=", 1) for line in sys.stdin.read().splitlines() if line)
open({record!r}, "a").write(json.dumps(options) + "\\n")
action = options["action"]
if options.get("hang"):
    subprocess.Popen(["sleep", "300"])  # a child that must die with the agent
    time.sleep(300)
if options.get("broken"):
    print("Failed: Unable to connect")
    sys.exit(1)
if options.get("binary"):
    sys.stdout.buffer.write(b"\\xff\\xfe not UTF-8\\n")
print("Status: OFF" if action == "status" else "Success: " + action)
sys.exit({{"status": 2, "monitor": 0, "off": 0}}.get(action, 1))
"""


def _agent(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "record.jsonl"
    agent = tmp_path / "fence_test"
    agent.write_text(AGENT.format(python=sys.executable, record=str(record)))
    agent.chmod(0o755)
    return agent, record


def test_the_agent_reads_its_action_and_options_as_key_value_lines(tmp_path: Path) -> None:
    assert agent_input("off", {"ip": "192.0.2.5", "ipport": 623, "lanplus": True, "verbose": False}) == \
        "action=off\nip=192.0.2.5\nipport=623\nlanplus=1\nverbose=0\n"
    agent, record = _agent(tmp_path)
    run = run_agent(str(agent), {"ip": "192.0.2.5", "plug": "3"}, "off", timeout_s=20)
    assert run.ok and run.exit_code == 0 and run.output == "Success: off"
    assert json.loads(record.read_text()) == {"action": "off", "ip": "192.0.2.5", "plug": "3"}


def test_status_exit_codes_mean_on_and_off(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    status = run_agent(str(agent), {}, "status", timeout_s=20)
    assert status.ok and status.power == "off"
    assert AgentRun("status", 0, "", 0.1).power == "on"
    assert not AgentRun("status", 1, "Failed", 0.1).ok and AgentRun("status", 1, "", 0.1).power is None
    assert not run_agent(str(agent), {}, "reboot", timeout_s=20).ok  # our fake knows no reboot: exit 1


def test_an_agent_that_overruns_is_killed_with_its_children(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    started = time.monotonic()
    run = run_agent(str(agent), {"hang": 1}, "off", timeout_s=1.0)
    assert run.exit_code is None and not run.ok and "did not end within 1 s" in run.output
    assert time.monotonic() - started < 10
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "300"]
                 and p.ppid() in (1, os.getpid())]
    time.sleep(0.2)
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_output_that_is_not_text_is_kept_not_raised(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path)
    run = run_agent(str(agent), {"binary": 1}, "off", timeout_s=20)
    assert run.ok and "not UTF-8" in run.output and "\ufffd" in run.output


def test_a_missing_agent_is_a_failed_run_not_an_exception(tmp_path: Path) -> None:
    run = run_agent(str(tmp_path / "fence_nothing"), {}, "monitor", timeout_s=5)
    assert run.exit_code is None and "cannot run" in run.output


needs_ipmi = pytest.mark.skipif(bool(missing_tools()), reason=f"needs Debian packages {', '.join(missing_tools())} "
                                                              "(ipmi_sim, fence_ipmilan, ipmitool)")


@needs_ipmi
def test_fence_ipmilan_switches_a_simulated_box_off_through_ipmi_sim(tmp_path: Path) -> None:
    box = subprocess.Popen(["sleep", "300"])  # stands for the box's daemon
    spec = tmp_path / "alpha.json"
    write_spec(spec, node="alpha", power_file=str(tmp_path / "alpha.power"), pid=box.pid)
    bmc = SimulatedBmc(tmp_path / "bmc", "alpha", port=_free_udp_port(), spec=spec)
    bmc.start()
    try:
        options = bmc.fence_options(power_wait=0)
        assert run_agent("fence_ipmilan", options, "monitor", 30).ok
        assert run_agent("fence_ipmilan", options, "status", 30).power == "on"
        off = run_agent("fence_ipmilan", options, "off", 30)
        assert off.ok, off.summary()
        assert box.wait(timeout=10) == -9  # a hard power loss: SIGKILL, no chance to hand over
        assert not powered(spec)
        assert run_agent("fence_ipmilan", options, "status", 30).power == "off"
        assert run_agent("fence_ipmilan", options, "on", 30).ok and powered(spec)
    finally:
        bmc.stop()
        if box.poll() is None:
            box.kill()


def _free_udp_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fencer(tmp_path: Path, **options: object) -> tuple[Fencer, Journal, list[FenceReport], Path]:
    agent, record = _agent(tmp_path)
    device = FenceDeviceConfig(agent=str(agent), options=options, timeout_s=10, retry_s=0.5, monitor_every_s=0)
    journal = Journal(tmp_path / "journal")
    reports: list[FenceReport] = []
    return Fencer(device, "bravo", journal, reports.append, time.monotonic), journal, reports, record


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_fencer_fences_off_then_checks_status_and_reports(tmp_path: Path) -> None:
    fencer, journal, reports, record = _fencer(tmp_path, ip="198.51.100.21")

    async def scenario() -> None:
        fencer.start()
        await _until(lambda: fencer.check is not None)
        fencer.want(True)
        fencer.want(True)  # one attempt at a time
        await _until(lambda: reports)
    try:
        asyncio.run(scenario())
    finally:
        fencer.close()
        journal.close()
    assert [json.loads(line)["action"] for line in record.read_text().splitlines()] == ["monitor", "off", "status"]
    assert reports[0].fenced and "Status: OFF" in reports[0].detail
    kinds = [r["kind"] for r in journal.recent]
    assert kinds == ["fence.device", "fence.start", "fence.done"]
    assert fencer.status()["fence"]["device"] == "ok" and fencer.alarms() == []


def test_a_failed_fence_is_reported_journaled_and_retried_only_after_retry_s(tmp_path: Path) -> None:
    fencer, journal, reports, record = _fencer(tmp_path, broken=1)

    async def scenario() -> None:
        fencer.start()
        await _until(lambda: fencer.check is not None)
        fencer.want(True)
        await _until(lambda: reports)
        fencer.want(True)  # within retry_s: no second attempt yet
        await asyncio.sleep(0.1)
        assert fencer.attempts == 1
        await asyncio.sleep(0.5)
        fencer.want(True)
        await _until(lambda: len(reports) == 2)
    try:
        asyncio.run(scenario())
    finally:
        fencer.close()
        journal.close()
    assert not reports[0].fenced and "Unable to connect" in reports[0].detail
    assert [json.loads(line)["action"] for line in record.read_text().splitlines()] == ["monitor", "off", "off"]
    assert [r["kind"] for r in journal.recent if r["kind"].startswith("fence.")] == \
        ["fence.device", "fence.start", "fence.failed", "fence.start", "fence.failed"]
    assert fencer.alarms()[0].source == "fence-device" and "Unable to connect" in fencer.alarms()[0].text


def test_without_an_agent_the_fencer_does_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    fencer = Fencer(FenceDeviceConfig(), "bravo", journal, lambda report: None, time.monotonic)
    fencer.start()
    fencer.want(True)
    assert fencer.status() == {"fence": None} and fencer.attempts == 0 and fencer.alarms() == []
    journal.close()
