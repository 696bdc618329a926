"""Letting go when the daemon dies: the release order, what it journals, `tandem release`, the
simulated LAN that keeps a dead daemon's addresses, and the rack's supervisor (systemd's ExecStopPost)."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from firmware.core.actions import ActionError, ActionPlan
from sim.lan import HOST_ENV, LAN_ENV, SimulatedLan, host_mac
from sim.network import RecordingNetwork
from sim.rack import TwoNodeRack

from helpers import new_rack

SHARED = {"address": "192.0.2.10/24", "interface": "eth0"}


class Held:
    """A fake action of one kind that holds its resource (or cannot tell) and logs what is asked of it."""

    def __init__(self, kind: str, log: list[str], held: bool | None = True, fail: bool = False) -> None:
        self.kind, self.name, self.log, self.held, self.fail = kind, f"{kind} one", log, held, fail

    def check(self) -> None:
        pass

    async def prepare(self) -> None:
        pass

    async def ensure_present(self) -> None:
        self.log.append(f"+{self.kind}")

    async def ensure_absent(self) -> None:
        self.log.append(f"-{self.kind}")
        if self.fail:
            raise ActionError("welded shut")

    async def holds(self) -> bool | None:
        self.log.append(f"?{self.kind}")
        return self.held

    def status(self) -> dict:
        return {}


def test_release_lets_the_shared_ip_go_last_whatever_the_configured_order() -> None:
    log: list[str] = []
    # The configured order would demote relays first and the address second-to-last.
    plan = ActionPlan([Held("service", log), Held("shared_ip", log), Held("relays", log)])
    result = asyncio.run(plan.release())
    assert log == ["?relays", "-relays", "?service", "-service", "?shared_ip", "-shared_ip"]
    assert result.ok and [o.found for o in result.outcomes] == [True, True, True]


def test_release_record_says_what_was_found_unseen_and_failed() -> None:
    log: list[str] = []
    plan = ActionPlan([Held("shared_ip", log, held=False), Held("service", log, held=True),
                       Held("relays", log, held=None, fail=True)])
    record = asyncio.run(plan.release()).release_record()
    assert record["found"] == ["service one"]
    assert record["failed"] == ["relays one: welded shut"]
    assert not record["ok"]
    assert "let go of service one" in record["detail"] and "FAILED relays one: welded shut" in record["detail"]
    nothing = asyncio.run(ActionPlan([Held("shared_ip", [], held=False)]).release()).release_record()
    assert nothing["detail"] == "nothing found held" and nothing["ok"]


def test_simulated_lan_keeps_a_box_addresses_across_processes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    address = ipaddress.ip_interface("192.0.2.10/24")
    monkeypatch.setenv(LAN_ENV, str(tmp_path / "lan"))
    monkeypatch.setenv(HOST_ENV, "alpha")
    RecordingNetwork().add_address("eth0", address)
    again = RecordingNetwork()  # a new process on the same box: the address is still configured
    assert again.has_address("eth0", address)
    monkeypatch.setenv(HOST_ENV, "bravo")
    other = RecordingNetwork()
    assert not other.has_address("eth0", address)
    assert other.probe("eth0", address.ip, 0.1).holder == host_mac("alpha")  # alpha answers for it
    holders = SimulatedLan(tmp_path / "lan").holders("192.0.2.10")
    assert [(h["host"], h["mac"]) for h in holders] == [("alpha", host_mac("alpha"))]
    monkeypatch.setenv(HOST_ENV, "alpha")
    RecordingNetwork().remove_address("eth0", address)
    assert not other.probe("eth0", address.ip, 0.1).in_use


@pytest.mark.integration
def test_a_killed_daemon_is_released_by_its_guardian_and_the_supervisor_finds_nothing(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], service="cold")
    assert rack.holders("192.0.2.10") == ["alpha"] and rack.pbx_running("alpha")
    guardian = rack.status("alpha")["guardian"]
    assert guardian["alive"] and psutil.Process(guardian["pid"]).ppid() == rack.procs["alpha"].pid
    rack.kill("alpha")  # SIGKILL: the box stays up, nothing of the daemon runs its demote
    result = rack.wait_released("alpha")  # the supervisor (systemd's ExecStopPost) runs after the guardian
    assert result.returncode == 0, result.stderr
    assert not rack.pbx_running("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    rack.wait_for(lambda: rack.holders("192.0.2.10") == ["bravo"], 10, what="bravo the only holder")
    released = [e["data"] for e in rack.journal_file("alpha") if e["kind"] == "release"]
    assert [r["source"] for r in released] == ["guardian", "supervisor"]
    assert released[0]["found"] == ["service", "shared_ip 192.0.2.10/24"]  # the PBX first, the address last
    assert released[1]["found"] == [] and released[1]["detail"] == "nothing found held"
    assert not psutil.pid_exists(guardian["pid"]) or psutil.Process(guardian["pid"]).status() == "zombie"


@pytest.mark.integration
def test_without_its_guardian_the_supervisor_still_releases_and_an_alarm_said_so(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], service="cold")
    guardian = rack.status("alpha")["guardian"]["pid"]
    psutil.Process(guardian).kill()
    alarm = rack.wait_until("alpha", lambda s: [a for a in s["alarms"] if a["source"] == "guardian"], full=True)
    assert alarm[0]["level"] == "critical" and "ExecStopPost" in alarm[0]["text"]
    rack.kill("alpha")
    result = rack.wait_released("alpha")
    assert result.returncode == 0 and result.stdout.strip() == "let go of service, shared_ip 192.0.2.10/24"
    assert [e["data"]["source"] for e in rack.journal_file("alpha") if e["kind"] == "release"] == ["supervisor"]


@pytest.mark.integration
def test_a_clean_exit_leaves_the_guardian_nothing_to_do(racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], service="cold")
    rack.kill("alpha", signal.SIGTERM)  # hands over, then exits cleanly
    assert rack.wait_exit("alpha") == 0
    rack.wait_released("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    assert [e["data"]["source"] for e in rack.journal_file("alpha") if e["kind"] == "release"] == ["supervisor"]


@pytest.mark.integration
def test_tandem_release_refuses_while_the_daemon_answers_and_works_with_a_broken_config(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], service="cold", supervise=False)
    refused = rack.cli("alpha", "release")
    assert refused.returncode == 1 and "tandem demote" in refused.stderr
    assert rack.holders("192.0.2.10") == ["alpha"]
    rack.kill("alpha")
    config = rack.config_path("alpha")
    # A broken timer makes the daemon's config unloadable; the resource sections still are.
    config.write_text(config.read_text().replace("heartbeat_ms = 100", "heartbeat_ms = -5"))
    assert rack.cli("alpha", "check-config").returncode == 78
    released = rack.cli("alpha", "release")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == "let go of service, shared_ip 192.0.2.10/24"
    assert rack.holders("192.0.2.10") in ([], ["bravo"]) and not rack.pbx_running("alpha")
    again = rack.cli("alpha", "release")  # idempotent
    assert again.returncode == 0 and again.stdout.strip() == "nothing found held"


def test_tandem_release_names_the_file_and_key_of_a_broken_resource_section(tmp_path: Path) -> None:
    rack = new_rack(tmp_path, shared_ips=[{"address": "192.0.2.300/24", "interface": "eth0"}])
    rack.write_configs()
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")),
                             "release"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert str(rack.config_path("alpha")) in result.stderr and "shared_ips" in result.stderr
