"""Unit tests of the decision core's own interface (imports, records, typed outputs).

The behaviour of the core is tested in the two-node model
(test_cluster_scenarios.py, test_cluster_properties.py); these tests pin the
shape the shell relies on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from firmware.core.cluster import (
    ActionKind,
    ActionsReport,
    BlockCode,
    Blocked,
    ClusterState,
    Command,
    Inputs,
    LinkStatus,
    PeerFacts,
    Persisted,
    Reply,
    RunActions,
    Settings,
    WitnessResult,
    alarms,
    initial_state,
    relay_interlock,
    step,
)
from firmware.core.cluster.guard import guard
from firmware.core.message import Heartbeat
from firmware.core.peer import LinkView, PeerView
from firmware.core.states import Flag, NodeState, Role

ROOT = Path(__file__).resolve().parent.parent


def test_the_core_imports_without_cryptography() -> None:
    # The core reads and builds heartbeats; only the wire format (protocol) needs the AEAD.
    code = textwrap.dedent("""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "cryptography" or name.startswith("cryptography."):
                    raise ImportError(f"{name} is blocked for this test")
                return None

        sys.meta_path.insert(0, Blocker())
        import firmware.core.cluster
        import firmware.core.message
        import firmware.core.peer
        assert not [m for m in sys.modules if m.split(".")[0] == "cryptography"]
        try:
            import firmware.core.protocol
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not block: this test proves nothing")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _starting(**overrides) -> tuple[Settings, ClusterState]:
    settings = Settings(node="alpha", peer="bravo", **overrides)
    st, _ = initial_state(settings, Persisted(), 0.0, 0.0)
    return settings, st


def _inputs(now: float, **changes) -> Inputs:
    return Inputs(now=now, wall=now, minute_of_day=0, tick=int(now * 10), peer=PeerView(()), **changes)


def test_a_command_comes_in_through_step_and_its_reply_goes_out() -> None:
    settings, st = _starting()
    after, out = step(settings, st, _inputs(0.5, command=Command("promote", source="panel")))
    assert out.reply == Reply(False, "still starting: listening for bravo for another 2.5 s; try again then")
    assert [(e.kind, e.data["source"]) for e in out.events] == [("refused", "panel")]
    assert after.state == NodeState.STARTING
    _, out = step(settings, st, _inputs(0.5, command=Command("reboot-now")))
    assert out.reply == Reply(False, "unknown command 'reboot-now'")
    assert "source" not in out.events[0].data
    _, out = step(settings, st, _inputs(0.5))
    assert out.reply is None


def test_the_outputs_say_which_actions_to_run_once_per_transition() -> None:
    settings, st = _starting()
    st, out = step(settings, st, _inputs(3.0))  # initdead over, peer silent, no witness configured
    assert st.state == NodeState.TAKEOVER
    assert out.run == RunActions(ActionKind.PROMOTE, st.transition) and out.run.state == NodeState.TAKEOVER
    st, out = step(settings, st, _inputs(3.1))
    assert st.state == NodeState.TAKEOVER and out.run is None  # already running
    st, out = step(settings, st, _inputs(3.2, actions=ActionsReport(st.transition)))
    assert st.state == NodeState.ACTIVE and out.run is None
    st, out = step(settings, st, _inputs(3.3, command=Command("demote", force=True)))
    assert st.state == NodeState.RELEASING
    assert out.run == RunActions(ActionKind.DEMOTE, st.transition) and out.run.state == NodeState.RELEASING


def test_why_a_takeover_is_blocked_is_a_typed_value() -> None:
    settings, st = _starting(witness_required=True)
    st, out = step(settings, st, _inputs(3.0))
    assert st.state == NodeState.STANDBY and guard(settings, st, _inputs(3.0)).code is BlockCode.CHECKING_WITNESS
    assert not [e for e in out.events if e.kind == "takeover.blocked"]  # the usual wait is not news
    failed = _inputs(3.2, witness=WitnessResult(False, started_at=3.1, detail="refused"))
    st, out = step(settings, st, failed)
    blocked = guard(settings, st, failed)
    assert blocked.code is BlockCode.WITNESS_UNREACHABLE and not blocked.held
    assert [e.data["reason"] for e in out.events if e.kind == "takeover.blocked"] == [blocked.text]
    assert st.reason == f"bravo silent on every link; {blocked.text}" and st.blocked is None


def test_a_hold_is_announced_once_and_shown_as_the_reason() -> None:
    settings = Settings(node="alpha", peer="bravo")
    st, _ = initial_state(settings, Persisted(maintenance=True), 0.0, 0.0)
    st, out = step(settings, st, _inputs(3.0))
    assert st.state == NodeState.STANDBY
    assert st.blocked is not None and st.blocked.code is BlockCode.MAINTENANCE and st.blocked.held
    assert st.reason == st.blocked.text
    assert [e.data["reason"] for e in out.events if e.kind == "takeover.blocked"] == [st.blocked.text]
    st, out = step(settings, st, _inputs(3.1))
    assert not [e for e in out.events if e.kind == "takeover.blocked"]


def test_the_relay_interlock_refuses_while_the_peer_may_hold_its_relays() -> None:
    settings = Settings(node="alpha", peer="bravo")
    links = (LinkStatus("lan", rx=True, tx=True), LinkStatus("serial", rx=False, tx=True))
    st = ClusterState(state=NodeState.TAKEOVER, since=0.0, started_at=0.0, persisted=Persisted(),
                      peer=PeerFacts(alive=True, links=links))

    def heard(state: NodeState, flags: Flag = Flag.NONE) -> PeerView:
        message = Heartbeat(node="bravo", state=state, role=Role.EQUAL, health=100, flags=flags, epoch=1, tick=9)
        return PeerView(links=(LinkView("lan", 1.0, 1.0), LinkView("serial", None, 1.0)), message=message)

    holds = relay_interlock(settings, st, heard(NodeState.RELEASING))
    assert holds == Blocked(BlockCode.PEER_HOLDS, "bravo reports RELEASING (heard on lan)")
    failed = relay_interlock(settings, st, heard(NodeState.STANDBY, Flag.RELEASE_FAILED))
    assert failed is not None and failed.code is BlockCode.PEER_RELEASE_FAILED and "its release failed" in failed.text
    assert relay_interlock(settings, st, heard(NodeState.STANDBY)) is None
    silent = replace(st, peer=PeerFacts(alive=False, links=links))
    assert relay_interlock(settings, silent, heard(NodeState.ACTIVE)) is None  # silence is judged by the guard


def test_the_cores_alarms_have_a_key_that_does_not_depend_on_their_text() -> None:
    settings = Settings(node="alpha", peer="bravo")
    st = ClusterState(state=NodeState.ACTIVE, since=0.0, started_at=0.0,
                      persisted=Persisted(maintenance=True, flap_hold=True), action_alarm="demote actions failed: x")
    found = alarms(settings, st)
    assert [(a.source, a.level) for a in found] == [
        ("peer", "critical"), ("flap-hold", "critical"), ("maintenance", "warning"), ("actions", "critical")]
    reworded = alarms(settings, replace(st, action_alarm="demote actions failed: y"))
    assert [a.key for a in reworded] == [a.key for a in found] and reworded[-1].text != found[-1].text
    links = (LinkStatus("lan", rx=True, tx=True), LinkStatus("serial", rx=True, tx=False))
    alive = replace(st, peer=PeerFacts(alive=True, links=links), persisted=Persisted(), action_alarm=None)
    assert [a.key for a in alarms(settings, alive)] == ["link:serial/warning"]
