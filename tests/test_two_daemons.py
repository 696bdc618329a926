"""Two real `tandem run` processes joined by loopback UDP (through a relay) and a pty cable.

Every test starts from a settled rack: alpha (primary) ACTIVE, bravo
(secondary) STANDBY (the ``rack`` fixture, tests/conftest.py). Waiting is
always on a condition with a generous timeout; "nothing happens" is checked
over several deadtimes counted by the daemons' own heartbeat ticks, and by
their journals showing no change of state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import assert_steady, state_events
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration

HEARTBEATS_PER_DEADTIME = 3  # 100 ms heartbeat, 300 ms deadtime


def link(rack: TwoNodeRack, name: str, link_name: str) -> dict:
    """One link's row of the node's status (one full status request)."""
    status = rack.status(name)
    assert status is not None, f"{name} did not answer"
    return {row["name"]: row for row in status["links"]}[link_name]


def test_sigkill_of_active_makes_standby_active(rack: TwoNodeRack) -> None:
    rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    takeover = state_events(rack, "bravo", "TAKEOVER")[-1]
    assert "silent on every link" in takeover["data"]["reason"]
    lost = [e for e in rack.events("bravo") if e["kind"] == "peer.lost"]
    assert lost and lost[-1]["data"]["planned"] is False


def alarm_with(text: str) -> Callable[[dict], bool]:
    """A wait condition on a node's light state: an active alarm mentions ``text``."""
    return lambda brief: any(text in alarm["text"] for alarm in brief["alarms"])


def test_network_cut_raises_link_alarm_without_failover(rack: TwoNodeRack) -> None:
    rack.cut_network()
    for name in ("alpha", "bravo"):
        rack.wait_until(name, alarm_with("net0"), 10, what=f"net0 alarm on {name}")
    assert_steady(rack, ("ACTIVE", "STANDBY"), heartbeats=6 * HEARTBEATS_PER_DEADTIME)
    assert link(rack, "bravo", "net0")["state"] == "down" and link(rack, "bravo", "serial0")["state"] == "up"
    rack.restore_network()
    for name in ("alpha", "bravo"):
        rack.wait_until(name, lambda brief: not brief["alarms"], 10, what=f"alarms to clear on {name}")
    assert any(e["kind"] == "link.down" and e["data"]["link"] == "net0" for e in rack.events("bravo"))


def test_serial_cut_raises_link_alarm_without_failover(rack: TwoNodeRack) -> None:
    rack.cut_serial()
    for name in ("alpha", "bravo"):
        rack.wait_until(name, alarm_with("serial0"), 10, what=f"serial0 alarm on {name}")
    assert_steady(rack, ("ACTIVE", "STANDBY"), heartbeats=6 * HEARTBEATS_PER_DEADTIME)


def test_one_way_network_failure_is_visible(rack: TwoNodeRack) -> None:
    rack.cut_network("alpha->bravo")
    # Each side judges the link from its own heartbeats: alpha hears bravo, bravo does not hear alpha.
    for name, rx_tx in (("alpha", (True, False)), ("bravo", (False, True))):
        rack.wait_until(name, lambda status: [(row["rx"], row["tx"]) for row in status["links"]
                                              if row["name"] == "net0"] == [rx_tx],
                        10, what=f"net0 one-way on {name}", full=True)
    # The alarm is raised by the same judgement; wait for it rather than sampling it once.
    rack.wait_until("alpha", alarm_with("peer does not hear us"), 10, what="alpha's one-way alarm")
    assert_steady(rack, ("ACTIVE", "STANDBY"), heartbeats=4 * HEARTBEATS_PER_DEADTIME)


def test_both_links_cut_with_witness_reachable_standby_promotes_then_heal_leaves_one(rack: TwoNodeRack) -> None:
    rack.cut_network()
    rack.cut_serial()
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    assert rack.state("alpha") == "ACTIVE"  # a real partition: both sides carry calls until they meet
    rack.restore_network()
    rack.restore_serial()
    # Healing passes through RELEASING on the loser: wait for the pair to settle, not just for one ACTIVE.
    winner = rack.wait_pair(timeout=15)
    # bravo promoted last, so it has the higher epoch and keeps the calls.
    assert winner == "bravo"
    assert_steady(rack, ("STANDBY", "ACTIVE"), heartbeats=4 * HEARTBEATS_PER_DEADTIME)
    assert any(e["kind"] == "dual_active" for e in rack.events("alpha"))


def test_both_links_cut_with_witness_unreachable_standby_stays(racks: Callable[..., TwoNodeRack]) -> None:
    # Self-fencing off: here the witness is down for both nodes, and this test is about the standby.
    rack = racks(extra={"fencing": {"isolated": False}})
    assert rack.witness is not None
    rack.witness.down()
    rack.cut_network()
    rack.cut_serial()
    rack.wait_until("bravo", lambda brief: "witness unreachable" in brief["reason"], 10,
                    what="bravo to report the unreachable witness")
    assert_steady(rack, ("ACTIVE", "STANDBY"), heartbeats=6 * HEARTBEATS_PER_DEADTIME)
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
    rack.wait_until("alpha", lambda brief: not brief["peer_alive"], 10, what="alpha to lose bravo")
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
    # alpha stops once bravo holds the resources (TAKEOVER); bravo's actions may still be finishing.
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    _assert_break_before_make(rack, "alpha", "bravo")
    took = state_events(rack, "bravo", "TAKEOVER")[-1]
    assert "handed over" in took["data"]["reason"]  # by consent, not by timeout
    stopped = rack.events("alpha")[-1]
    assert stopped["kind"] == "daemon.stop"
    assert took["time"] <= stopped["time"], "alpha exited before bravo took over"


def serial_state(name: str) -> Callable[[dict], bool]:
    """A wait condition on a node's full status: its serial0 link is in state ``name``."""
    return lambda status: [row["state"] for row in status["links"] if row["name"] == "serial0"] == [name]


def test_serial_adapter_unplugged_and_replugged_is_reopened(rack: TwoNodeRack) -> None:
    rack.cable.unplug("a")
    rack.wait_until("alpha", serial_state("down"), 10, what="alpha's serial link down", full=True)
    rack.cable.replug("a")
    for name in ("alpha", "bravo"):
        rack.wait_until(name, serial_state("up"), 10, what=f"{name}'s serial link back up after replug", full=True)
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
    import queue
    import threading

    last = rack.events("bravo")[-1]["id"]
    proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("bravo")),
                             "events", "--follow", "--json", "--since", str(last)],
                            stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()  # a reader thread: several events may arrive in one read
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert rack.cli("bravo", "maintenance", "on").returncode == 0
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(e["kind"] == "command" for e in seen):
            try:
                seen.append(json.loads(lines.get(timeout=1.0)))
            except queue.Empty:
                continue
        command = [e for e in seen if e["kind"] == "command"]
        assert command and command[0]["data"]["command"] == "maintenance-on"
        # The request was on disk (and streamed) before the command ran.
        assert [e["data"] for e in seen if e["kind"] == "request"] == [
            {"cmd": "maintenance-on", "source": "cli", "force": False}]
        assert all(e["id"] > last for e in seen)
    finally:
        proc.kill()
        proc.wait()


def test_link_that_cannot_bind_is_a_clear_startup_error(tmp_path: Path) -> None:
    import socket

    rack = TwoNodeRack(tmp_path)
    rack.write_configs()  # the configs only: nothing of the rack is started
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
    rack.wait_until("bravo", lambda status: [row["rejected_total"] for row in status["links"]
                                             if row["name"] == "serial0"][0] > 0,
                    10, what="bravo to count the noise", full=True)
    assert link(rack, "bravo", "serial0")["rejected"].get("malformed", 0) > 0
    assert link(rack, "alpha", "serial0")["sent"] > 0 and link(rack, "bravo", "serial0")["received"] > 0
    result = rack.cli("bravo", "links")
    assert result.returncode == 0 and "serial0" in result.stdout


def test_control_requests_with_the_wrong_types_are_refused_not_coerced(racks: Callable[..., TwoNodeRack]) -> None:
    """Issue 14: ``"force": "false"`` forced a demote with the peer dead; ``"follow": "no"`` streamed forever."""
    from firmware.core.control import ControlError, stream

    rack = racks(nodes=("alpha",), settle=False)
    rack.wait_state("alpha", "ACTIVE", timeout=30)  # alone: a plain demote is refused, a forced one obeyed
    with pytest.raises(ControlError, match="force: Input should be a valid boolean"):
        rack.control("alpha", {"cmd": "demote", "force": "false"})
    with pytest.raises(ControlError, match="stepping down would leave no ACTIVE node"):
        rack.control("alpha", {"cmd": "demote"})
    assert rack.state("alpha") == "ACTIVE"
    with pytest.raises(ControlError, match="follow: Input should be a valid boolean"):
        list(stream(rack.socket_path("alpha"), {"cmd": "events", "follow": "no"}, timeout=10))
    events = list(stream(rack.socket_path("alpha"), {"cmd": "events", "follow": False}, timeout=10))  # it ends
    assert [e["event"]["data"]["force"] for e in events if e["event"]["kind"] == "refused"] == [False]
