"""Takeover actions: the plan, shared IPs on the recording backend, the PBX service, and the
same in two real daemons (cold and hot service modes)."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.config import ServiceConfig, SharedIpConfig
from firmware.core.actions import ActionError, ActionPlan
from firmware.core.actions.hooks import HookRunner
from firmware.core.actions.service import ServiceAction
from firmware.core.actions.sharedip import SharedIpAction
from helpers import wait_for, wait_for_async
from sim.network import RecordingNetwork
from sim.rack import TwoNodeRack

from test_hooks import make_hook


class Recorder:
    """A fake action that records calls and can fail."""

    kind = "service"

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def check(self) -> None:
        pass

    async def prepare(self) -> None:
        pass

    async def ensure_present(self) -> None:
        self.log.append(f"+{self.name}")
        if self.fail:
            raise ActionError(f"{self.name} broke")

    async def ensure_absent(self) -> None:
        self.log.append(f"-{self.name}")

    async def holds(self) -> bool | None:
        self.log.append(f"?{self.name}")
        return None

    def status(self) -> dict:
        return {}


def test_plan_orders_promote_and_reverses_demote() -> None:
    log: list[str] = []
    plan = ActionPlan([Recorder("ip", log), Recorder("pbx", log)])
    assert asyncio.run(plan.promote({})).ok
    assert asyncio.run(plan.demote({})).ok
    assert log == ["+ip", "+pbx", "-pbx", "-ip"]


def test_failed_action_is_reported_and_the_rest_still_run() -> None:
    log: list[str] = []
    result = asyncio.run(ActionPlan([Recorder("ip", log, fail=True), Recorder("pbx", log)]).promote({}))
    assert not result.ok and not result.vetoed and "ip broke" in result.detail
    assert [o.ok for o in result.outcomes] == [False, True]



def test_a_promote_halts_when_told_and_acquires_nothing_after_that() -> None:
    """The loop stalled during the takeover (the stall fence fired): the rest of the promote is not run."""
    log: list[str] = []
    stalled: list[bool] = [False]

    def halt() -> str | None:
        return "the loop stalled" if stalled[0] else None

    class Stalling(Recorder):
        async def ensure_present(self) -> None:
            await super().ensure_present()
            stalled[0] = True  # the stall fence fires while this action runs

    result = asyncio.run(ActionPlan([Stalling("relays", log), Recorder("ip", log)]).promote({}, halt))
    assert log == ["+relays"] and not result.ok
    assert [(o.action, o.ok) for o in result.outcomes] == [("relays", True), ("ip", False)]
    assert "not run: the loop stalled" in result.detail


def test_promote_before_hook_vetoes_before_any_action(tmp_path: Path) -> None:
    make_hook(tmp_path / "promote.before", "10-trunks", "echo trunk card missing; exit 1")
    log: list[str] = []
    plan = ActionPlan([Recorder("ip", log)], hooks=HookRunner(tmp_path, 5))
    result = asyncio.run(plan.promote({"kind": "promote"}))
    assert result.vetoed and not result.ok and log == []
    assert "10-trunks exited 1: trunk card missing" in result.detail


def test_action_timeout() -> None:
    class Slow(Recorder):
        async def ensure_present(self) -> None:
            await asyncio.sleep(10)

    result = asyncio.run(ActionPlan([Slow("slow", [])], timeout=0.2).promote({}))
    assert not result.ok and "timed out after 0.2 s" in result.detail


def shared_ip(**overrides) -> SharedIpConfig:
    values = {"address": "192.0.2.10/24", "interface": "eth0", "announce_interval_ms": 10}
    values.update(overrides)
    return SharedIpConfig(**values)


def test_shared_ip_added_announced_and_removed() -> None:
    async def scenario() -> None:
        net = RecordingNetwork()
        action = SharedIpAction(shared_ip(), net)
        action.check()
        await action.ensure_present()
        await action.ensure_present()  # idempotent
        # the rest of the burst goes out in the background, on this loop
        await wait_for_async(lambda: len([c for c in net.calls if c["op"] == "garp"]) >= 5,
                             what="the burst of five announcements")
        assert net.has_address("eth0", ipaddress.ip_interface("192.0.2.10/24"))
        assert net.addresses["eth0"] == {"192.0.2.10/24"}
        await action.ensure_absent()
        assert not net.has_address("eth0", ipaddress.ip_interface("192.0.2.10/24"))
        garps = [c for c in net.calls if c["op"] == "garp"]
        assert len(garps) >= 5  # first burst of 5 (the second ensure_present restarts it)
    asyncio.run(scenario())


def test_shared_ip_ipv6_vlan_and_route_source() -> None:
    async def scenario() -> None:
        net = RecordingNetwork()
        action = SharedIpAction(shared_ip(address="2001:db8::10/64", vlan=100, route_source=True,
                                          router=True, announce_count=1), net)
        await action.ensure_present()
        assert net.has_address("eth0.100", ipaddress.ip_interface("2001:db8::10/64"))
        assert net.route_sources[("eth0.100", "2001:db8::/64")] == "2001:db8::10"
        na = [c for c in net.calls if c["op"] == "na"]
        assert len(na) == 1 and na[0]["router"] == "True"
        await action.ensure_absent()
        assert not net.route_sources
    asyncio.run(scenario())


def test_duplicate_probe_refuses_an_address_in_use_unless_forced() -> None:
    net = RecordingNetwork()
    net.taken.add("192.0.2.10")
    with pytest.raises(ActionError, match="already answers"):
        asyncio.run(SharedIpAction(shared_ip(probe=True), net).ensure_present())
    asyncio.run(SharedIpAction(shared_ip(probe=True, force=True), net).ensure_present())
    assert net.has_address("eth0", ipaddress.ip_interface("192.0.2.10/24"))


def test_missing_interface_fails_at_check_time() -> None:
    with pytest.raises(ActionError, match="eth9 does not exist"):
        SharedIpAction(shared_ip(interface="eth9"), RecordingNetwork()).check()


def fake_pbx_service(tmp_path: Path, mode: str) -> ServiceConfig:
    pbx = [sys.executable, "-m", "sim.fakepbx"]
    where = ["--dir", str(tmp_path)]
    return ServiceConfig(mode=mode, start=pbx + ["start"] + where, stop=pbx + ["stop"] + where,
                         status=pbx + ["status"] + where)


def test_cold_service_starts_on_promote_and_stops_on_demote(tmp_path: Path) -> None:
    action = ServiceAction(fake_pbx_service(tmp_path, "cold"))
    action.check()
    assert not asyncio.run(action.is_running())
    asyncio.run(action.ensure_present())
    assert asyncio.run(action.is_running())
    asyncio.run(action.ensure_absent())
    assert not asyncio.run(action.is_running())


def test_hot_service_keeps_running_on_demote(tmp_path: Path) -> None:
    action = ServiceAction(fake_pbx_service(tmp_path, "hot"))
    asyncio.run(action.prepare())
    assert asyncio.run(action.is_running())
    asyncio.run(action.ensure_absent())
    assert asyncio.run(action.is_running())
    asyncio.run(ServiceAction(fake_pbx_service(tmp_path, "cold")).ensure_absent())


def test_service_readiness_timeout_and_missing_program(tmp_path: Path) -> None:
    config = fake_pbx_service(tmp_path, "cold").model_copy(update={"ready": ["false"], "ready_timeout_ms": 300})
    action = ServiceAction(config)
    with pytest.raises(ActionError, match="not ready after 0.3 s"):
        asyncio.run(action.ensure_present())
    asyncio.run(action.ensure_absent())
    with pytest.raises(ActionError, match="not on PATH"):
        ServiceAction(ServiceConfig(mode="cold", start=["no-such-pbxctl"], stop=["true"], status=["true"])).check()


def shared_ip_present(status: dict) -> bool:
    """A wait condition on a node's full status: its shared address is on."""
    return status["shared_ips"][0]["present"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["cold", "hot"])
def test_service_modes_follow_the_active_node_in_two_daemons(racks: Callable[..., TwoNodeRack], mode: str) -> None:
    rack = racks(shared_ips=[{"address": "192.0.2.10/24", "interface": "eth0"}], service=mode)
    status = rack.status("alpha")
    assert status["shared_ips"][0]["present"] is True and status["service"]["running"] is True
    assert rack.status("bravo")["shared_ips"][0]["present"] is False
    assert rack.pbx_running("alpha")
    assert rack.pbx_running("bravo") == (mode == "hot")
    assert rack.cli("alpha", "demote").returncode == 0
    rack.wait_until("bravo", shared_ip_present, 10, what="the address on bravo", full=True)
    assert rack.pbx_running("bravo")
    wait_for(lambda: rack.pbx_running("alpha") == (mode == "hot"), 10, what="alpha's PBX per mode")
    assert rack.status("alpha")["shared_ips"][0]["present"] is False


@pytest.mark.integration
def test_restarted_node_stops_a_leftover_cold_pbx_before_joining(racks: Callable[..., TwoNodeRack]) -> None:
    # Nothing runs `tandem release` after the crash here (no supervisor): the restart must do it.
    rack = racks(service="cold", settle=False, supervise=False)
    rack.wait_state("alpha", "ACTIVE", timeout=30)
    assert rack.pbx_running("alpha")
    rack.kill("alpha")  # the daemon dies; its PBX keeps running
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    assert rack.pbx_running("alpha")
    rack.start_node("alpha")
    rack.wait_state("alpha", "STANDBY", timeout=30)
    assert not rack.pbx_running("alpha")
    released = [e["data"] for e in rack.events("alpha") if e["kind"] == "startup.release"]
    assert released[-1]["found"] == ["service"], released  # journaled as what it found, not "nothing"


def test_unknown_interface_is_refused_at_startup_not_at_failover(tmp_path: Path) -> None:
    import subprocess

    rack = TwoNodeRack(tmp_path, shared_ips=[{"address": "192.0.2.10/24", "interface": "eth9"}])
    rack.write_configs()
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                            capture_output=True, text=True, timeout=30)
    rack.relay.stop()
    assert result.returncode == 78
    assert "eth9 does not exist" in result.stderr and "shared_ip 192.0.2.10/24" in result.stderr
