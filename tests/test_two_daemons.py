"""Two real `tandem run` processes joined by loopback UDP (through a relay) and a pty cable.

Every test starts from a settled rack: alpha (primary) ACTIVE, bravo
(secondary) STANDBY. Waiting is always on a condition with a generous
timeout; "nothing happens" is checked by watching over several deadtimes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration

DEADTIME = 0.3


@pytest.fixture
def rack(tmp_path: Path):
    with TwoNodeRack(tmp_path) as rack:
        rack.wait_settled(timeout=20)
        yield rack


def state_events(rack: TwoNodeRack, name: str, to: str) -> list[dict]:
    return [e for e in rack.events(name) if e["kind"] == "state" and e["data"]["to"] == to]


def watch_states(rack: TwoNodeRack, seconds: float) -> set[tuple[str | None, str | None]]:
    """Every (alpha, bravo) state pair seen while polling for `seconds`."""
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add((rack.state("alpha"), rack.state("bravo")))
    return seen


def alarms(rack: TwoNodeRack, name: str) -> list[str]:
    return rack.alarms(name)


def test_sigkill_of_active_makes_standby_active(rack: TwoNodeRack) -> None:
    rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    takeover = state_events(rack, "bravo", "TAKEOVER")[-1]
    assert "silent on every link" in takeover["data"]["reason"]
    lost = [e for e in rack.events("bravo") if e["kind"] == "peer.lost"]
    assert lost and lost[-1]["data"]["planned"] is False


def test_network_cut_raises_link_alarm_without_failover(rack: TwoNodeRack) -> None:
    rack.cut_network()
    for name in ("alpha", "bravo"):
        rack.wait_for(lambda n=name: any("net0" in a for a in alarms(rack, n)), 10, what=f"net0 alarm on {name}")
    assert watch_states(rack, 6 * DEADTIME) == {("ACTIVE", "STANDBY")}
    links = {l["name"]: l for l in rack.status("bravo")["links"]}
    assert links["net0"]["state"] == "down" and links["serial0"]["state"] == "up"
    rack.restore_network()
    for name in ("alpha", "bravo"):
        rack.wait_for(lambda n=name: not alarms(rack, n), 10, what=f"alarms to clear on {name}")
    assert any(e["kind"] == "link.down" and e["data"]["link"] == "net0" for e in rack.events("bravo"))


def test_serial_cut_raises_link_alarm_without_failover(rack: TwoNodeRack) -> None:
    rack.cut_serial()
    for name in ("alpha", "bravo"):
        rack.wait_for(lambda n=name: any("serial0" in a for a in alarms(rack, n)), 10, what=f"serial0 alarm on {name}")
    assert watch_states(rack, 6 * DEADTIME) == {("ACTIVE", "STANDBY")}


def test_one_way_network_failure_is_visible(rack: TwoNodeRack) -> None:
    rack.cut_network("alpha->bravo")

    def one_way() -> bool:
        a = {l["name"]: l for l in rack.status("alpha")["links"]}
        b = {l["name"]: l for l in rack.status("bravo")["links"]}
        return (a["net0"]["rx"], a["net0"]["tx"]) == (True, False) and (b["net0"]["rx"], b["net0"]["tx"]) == (False, True)

    rack.wait_for(one_way, 10, what="net0 one-way on both nodes")
    assert any("peer does not hear us" in a for a in alarms(rack, "alpha"))
    assert watch_states(rack, 4 * DEADTIME) == {("ACTIVE", "STANDBY")}


def test_both_links_cut_with_witness_reachable_standby_promotes_then_heal_leaves_one(rack: TwoNodeRack) -> None:
    rack.cut_network()
    rack.cut_serial()
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    assert rack.state("alpha") == "ACTIVE"  # a real partition: both sides carry calls until they meet
    rack.restore_network()
    rack.restore_serial()
    rack.wait_for(lambda: len(rack.active_nodes()) == 1, 10, what="exactly one ACTIVE after healing")
    winner = rack.active_nodes()[0]
    # bravo promoted last, so it has the higher epoch and keeps the calls.
    assert winner == "bravo"
    assert watch_states(rack, 4 * DEADTIME) == {("STANDBY", "ACTIVE")}
    assert any(e["kind"] == "dual_active" for e in rack.events("alpha"))


def test_both_links_cut_with_witness_unreachable_standby_stays(tmp_path: Path) -> None:
    # Self-fencing off: here the witness is down for both nodes, and this test is about the standby.
    rack = TwoNodeRack(tmp_path, extra={"fencing": {"isolated": False}})
    rack.start()
    try:
        rack.wait_settled(timeout=20)
        _standby_stays_without_witness(rack)
    finally:
        rack.stop()


def _standby_stays_without_witness(rack: TwoNodeRack) -> None:
    assert rack.witness is not None
    rack.witness.down()
    rack.cut_network()
    rack.cut_serial()
    rack.wait_for(lambda: "witness unreachable" in (rack.status("bravo") or {}).get("reason", ""), 10,
                  what="bravo to report the unreachable witness")
    assert watch_states(rack, 6 * DEADTIME) == {("ACTIVE", "STANDBY")}
    blocked = [e for e in rack.events("bravo") if e["kind"] == "takeover.blocked"]
    assert blocked and "witness" in blocked[-1]["data"]["reason"]
    # Once the witness answers again the standby takes over.
    rack.witness.up()
    rack.wait_state("bravo", "ACTIVE", timeout=10)


def _assert_break_before_make(rack: TwoNodeRack, releaser: str, taker: str) -> None:
    released = state_events(rack, releaser, "STANDBY")[-1]
    took = state_events(rack, taker, "TAKEOVER")[-1]
    assert released["time"] <= took["time"], (released, took)


def test_graceful_demote_then_promote_hand_over_break_before_make(rack: TwoNodeRack) -> None:
    result = rack.cli("alpha", "demote")
    assert result.returncode == 0, result.stderr
    assert "bravo is ACTIVE" in result.stdout
    assert (rack.state("alpha"), rack.state("bravo")) == ("STANDBY", "ACTIVE")
    _assert_break_before_make(rack, "alpha", "bravo")

    result = rack.cli("alpha", "promote")
    assert result.returncode == 0, result.stderr
    assert "this node is ACTIVE" in result.stdout
    rack.wait_state("bravo", "STANDBY", timeout=5)
    assert rack.state("alpha") == "ACTIVE"
    _assert_break_before_make(rack, "bravo", "alpha")
    commands = [e for e in rack.events("alpha") if e["kind"] == "command"]
    assert [c["data"]["command"] for c in commands[-2:]] == ["demote", "promote"]
    assert all(c["data"]["source"] == "cli" for c in commands)


def test_unsafe_demote_is_refused_with_reason(rack: TwoNodeRack) -> None:
    rack.kill("bravo")
    rack.wait_for(lambda: not rack.status("alpha")["peer"]["alive"], 10, what="alpha to lose bravo")
    result = rack.cli("alpha", "demote")
    assert result.returncode == 1
    assert "silent on every link" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert rack.state("alpha") == "ACTIVE"
    refused = [e for e in rack.events("alpha") if e["kind"] == "refused"]
    assert refused and refused[-1]["data"]["command"] == "demote"


def test_sigterm_of_active_hands_over_before_exiting(rack: TwoNodeRack) -> None:
    rack.kill("alpha", signal.SIGTERM)
    assert rack.wait_exit("alpha", timeout=20) == 0
    assert rack.state("bravo") == "ACTIVE"
    _assert_break_before_make(rack, "alpha", "bravo")
    took = state_events(rack, "bravo", "TAKEOVER")[-1]
    assert "handed over" in took["data"]["reason"]  # by consent, not by timeout
    assert rack.events("alpha")[-1]["kind"] == "daemon.stop"


def test_serial_adapter_unplugged_and_replugged_is_reopened(rack: TwoNodeRack) -> None:
    def serial_state(name: str) -> str:
        return {l["name"]: l for l in rack.status(name)["links"]}["serial0"]["state"]

    rack.cable.unplug("a")
    rack.wait_for(lambda: serial_state("alpha") == "down", 10, what="alpha's serial link down")
    rack.cable.replug("a")
    rack.wait_for(lambda: serial_state("alpha") == "up" and serial_state("bravo") == "up", 10,
                  what="serial link back up after replug")
    assert rack.running("alpha") and rack.state("alpha") == "ACTIVE"


def test_status_json_and_events_cli(rack: TwoNodeRack) -> None:
    result = rack.cli("bravo", "status", "--json")
    assert result.returncode == 0
    status = json.loads(result.stdout)
    for key in ("node", "role", "state", "health", "peer", "links", "sensors", "alarms", "shared_ips", "relays"):
        assert key in status
    assert status["peer"]["name"] == "alpha" and status["peer"]["state"] == "ACTIVE"
    events = rack.cli("bravo", "events", "--json")
    ids = [json.loads(line)["id"] for line in events.stdout.splitlines()]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) and ids
    later = rack.cli("bravo", "events", "--since", str(ids[-2]), "--json")
    assert [json.loads(line)["id"] for line in later.stdout.splitlines()] == [ids[-1]]


def test_bad_config_exits_with_code_and_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "tandem.toml"
    config.write_text('node = "a"\npeer = "b"\nboard = "sim"\n[timers]\nheartbeat_ms = 100\ndeadtime = 5\n'
                      '[[links]]\nname = "net0"\nkind = "udp"\nbind = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n')
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(config), "run"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert str(config) in result.stderr and "timers.deadtime" in result.stderr and "unknown key" in result.stderr


def test_critical_health_on_active_hands_over_to_healthy_peer(rack: TwoNodeRack) -> None:
    result = rack.cli("alpha", "sim", "health", "10")
    assert result.returncode == 0, result.stderr
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    assert rack.state("alpha") == "STANDBY"
    _assert_break_before_make(rack, "alpha", "bravo")
    critical = [e for e in rack.events("alpha") if e["kind"] == "health.critical"]
    assert critical and critical[-1]["data"]["health"] == 10


def test_events_follow_streams_new_events(rack: TwoNodeRack) -> None:
    import select

    last = rack.events("bravo")[-1]["id"]
    proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("bravo")),
                             "events", "--follow", "--json", "--since", str(last)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert rack.cli("bravo", "maintenance", "on").returncode == 0
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(e["kind"] == "command" for e in seen):
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                seen.append(json.loads(proc.stdout.readline()))
        command = [e for e in seen if e["kind"] == "command"]
        assert command and command[0]["data"]["command"] == "maintenance-on"
        assert all(e["id"] > last for e in seen)
    finally:
        proc.kill()
        proc.wait()


def test_link_that_cannot_bind_is_a_clear_startup_error(tmp_path: Path) -> None:
    import socket

    rack = TwoNodeRack(tmp_path)
    rack.write_configs()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", rack.node_ports["alpha"]))
    try:
        result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")),
                                 "run"], capture_output=True, text=True, timeout=30)
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"link net0: cannot bind 127.0.0.1:{rack.node_ports['alpha']}" in result.stderr


def test_links_figures_count_sends_and_serial_noise(rack: TwoNodeRack) -> None:
    rack.cable.inject_noise(300, toward="b", seed=7)
    def serial(name: str) -> dict:
        return {l["name"]: l for l in rack.status(name)["links"]}["serial0"]

    rack.wait_for(lambda: serial("bravo")["rejected_total"] > 0, 10, what="bravo to count the noise")
    assert serial("bravo")["rejected"].get("malformed", 0) > 0
    assert serial("alpha")["sent"] > 0 and serial("bravo")["received"] > 0
    result = rack.cli("bravo", "links")
    assert result.returncode == 0 and "serial0" in result.stdout
