"""Named scenarios of the decision core, run in the two-node model (simulated time).

Each one is a story an operator or integrator would tell; the model also checks
the safety and liveness invariants after every event.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from clustermodel import DIRECTIONS, LINKS, TwoNodeModel
from firmware.core.protocol import PROTOCOL_VERSION
from firmware.core.states import NodeState, Role

A, B = 0, 1
ACTIVE, STANDBY = NodeState.ACTIVE, NodeState.STANDBY


def started(**overrides) -> TwoNodeModel:
    """A settled pair: alpha (primary) ACTIVE, bravo (secondary) STANDBY."""
    model = TwoNodeModel(seed=1, **overrides)
    model.nodes[A].settings = replace(model.nodes[A].settings, role=Role.PRIMARY)
    model.nodes[B].settings = replace(model.nodes[B].settings, role=Role.SECONDARY)
    model.start(A)
    model.start(B)
    model.run_until(2.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    return model


def cut(model: TwoNodeModel, links=LINKS, directions=DIRECTIONS) -> None:
    for link in links:
        for d in directions:
            model.set_mode(link, d, "down")


def heal(model: TwoNodeModel) -> None:
    for link in LINKS:
        for d in DIRECTIONS:
            model.set_mode(link, d, "up")


def events(model: TwoNodeModel, index: int, kind: str) -> list[tuple[float, dict]]:
    return [(t, data) for t, k, data in model.nodes[index].events if k == kind]


def state_times(model: TwoNodeModel, index: int, to: NodeState) -> list[float]:
    return [t for t, data in events(model, index, "state") if data["to"] == to.name]


@pytest.fixture(autouse=True)
def _no_violations(request):
    yield
    model = getattr(request.node, "model", None)
    if model is not None:
        assert not model.violations, model.violations[:3]


def test_both_start_together_primary_becomes_active(request) -> None:
    request.node.model = started()


def test_sigkill_of_active_standby_takes_over_within_deadtime(request) -> None:
    model = request.node.model = started()
    model.run_until(3.0)
    model.kill(A)
    model.run_until(3.0 + 0.3 + 0.12 + 0.06)  # deadtime + one heartbeat + actions
    assert model.state_of(B) == ACTIVE


def test_one_link_lost_never_fails_over_and_raises_link_alarm(request) -> None:
    model = request.node.model = started()
    cut(model, links=("net0",))
    model.run_until(10.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    assert any(e[1]["link"] == "net0" for e in events(model, B, "link.down"))
    from firmware.core.cluster import alarms
    assert any("net0" in a.text and a.source == "link:net0"
               for a in alarms(model.nodes[B].settings, model.nodes[B].state))


def test_all_links_lost_witness_reachable_standby_promotes(request) -> None:
    model = request.node.model = started()
    cut(model)
    model.run_until(3.0)
    assert model.state_of(B) == ACTIVE
    took = [d for _, d in events(model, B, "state") if d["to"] == "TAKEOVER"][-1]
    assert "silent on every link" in took["reason"]


def test_all_links_lost_witness_unreachable_standby_stays_and_says_why(request) -> None:
    model = request.node.model = started()
    model.nodes[B].witness_reachable = False
    cut(model)
    model.run_until(6.0)
    assert model.state_of(B) == STANDBY
    assert "witness unreachable" in model.nodes[B].state.reason
    assert events(model, B, "takeover.blocked")


def test_heal_after_partition_leaves_exactly_the_newer_epoch_active(request) -> None:
    model = request.node.model = started()
    cut(model)
    model.run_until(3.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, ACTIVE)
    heal(model)
    model.run_until(4.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert events(model, A, "dual_active")


def test_planned_demote_is_break_before_make(request) -> None:
    model = request.node.model = started()
    reply = model.command(A, "demote")
    assert reply.ok
    model.run_until(3.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert state_times(model, A, STANDBY)[-1] <= state_times(model, B, NodeState.TAKEOVER)[-1]


def test_promote_on_standby_is_a_planned_handover(request) -> None:
    model = request.node.model = started()
    assert model.command(B, "promote").ok
    model.run_until(3.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert state_times(model, A, STANDBY)[-1] <= state_times(model, B, NodeState.TAKEOVER)[-1]


def test_demote_with_dead_peer_is_refused_and_force_enters_maintenance(request) -> None:
    model = request.node.model = started()
    model.kill(B)
    model.run_until(3.0)
    reply = model.command(A, "demote")
    assert not reply.ok and "silent on every link" in reply.message and "--force" in reply.message
    assert model.state_of(A) == ACTIVE
    assert model.command(A, "demote", force=True).ok
    model.run_until(5.0)
    assert model.state_of(A) == STANDBY and model.nodes[A].persisted.maintenance


def test_critical_health_on_active_hands_over_to_healthy_peer(request) -> None:
    model = request.node.model = started()
    model.nodes[A].health = 10
    model.run_until(3.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert events(model, A, "health.critical") and events(model, A, "failure")


def test_critical_health_with_unhealthy_peer_stays_active(request) -> None:
    model = request.node.model = started()
    model.nodes[B].health = 5
    model.nodes[A].health = 10
    model.run_until(4.0)
    assert model.state_of(A) == ACTIVE


def test_flapping_node_is_held_standby_until_an_operator_acts(request) -> None:
    model = request.node.model = started(flap_max_failures=2)
    t = 2.0
    for failure in range(2):  # alpha fails twice: each time its health drops, then recovers
        model.nodes[A].health = 10
        model.run_until(t := t + 1.0)
        model.nodes[A].health = 100
        model.run_until(t := t + 0.3)  # bravo hears the recovered health
        if failure == 0:
            assert model.command(B, "demote").ok  # hand back to alpha for the next failure
            model.run_until(t := t + 1.0)
    assert model.nodes[A].persisted.flap_hold
    refused = model.command(B, "demote")
    assert not refused.ok and "flap hold" in refused.message
    assert events(model, A, "flap.hold")
    model.kill(B)
    model.run_until(t + 3.0)
    assert model.state_of(A) == STANDBY and "flap hold" in model.nodes[A].state.reason
    assert model.command(A, "promote").ok
    model.run_until(t + 4.0)
    assert model.state_of(A) == ACTIVE


def _failback_model(policy: str, window=(120, 240)) -> TwoNodeModel:
    model = started()
    model.nodes[A].settings = replace(model.nodes[A].settings, failback=policy, failback_hold_down_s=2.0,
                                      failback_min_uptime_s=1.0, failback_window_minutes=window)
    model.kill(A)
    model.run_until(3.0)
    assert model.state_of(B) == ACTIVE
    model.start(A)
    return model


def test_failback_never_keeps_the_secondary_active(request) -> None:
    model = request.node.model = _failback_model("never")
    model.run_until(20.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)


def test_failback_auto_waits_for_hold_down_then_hands_back(request) -> None:
    model = request.node.model = _failback_model("auto")
    model.run_until(4.5)  # peer heard for less than the 2 s hold-down
    assert model.state_of(A) == STANDBY
    model.run_until(8.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    assert state_times(model, B, STANDBY)[-1] <= state_times(model, A, NodeState.TAKEOVER)[-1]


def test_no_failback_while_an_update_holds_it_off(request) -> None:
    """A primary being updated (or on trial) leaves the calls where the update put them until it is done."""
    model = request.node.model = _failback_model("auto")
    model.nodes[A].failback_held = True
    model.run_until(12.0)  # well past the hold-down: without the hold it fails back by 8 s
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    model.nodes[A].failback_held = False
    model.run_until(16.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)


def test_failback_window_only_inside_the_window(request) -> None:
    # The model's clock: minute_of_day = simulated seconds // 60. Window minute 1 = seconds 60-120.
    model = request.node.model = _failback_model("window", window=(1, 2))
    model.run_until(50.0)
    assert model.state_of(A) == STANDBY
    model.run_until(65.0)
    assert model.state_of(A) == ACTIVE


def test_maintenance_node_hands_over_and_never_takes_over(request) -> None:
    model = request.node.model = started()
    assert model.command(A, "maintenance-on").ok
    model.run_until(3.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    model.kill(B)
    model.run_until(6.0)
    assert model.state_of(A) == STANDBY and "maintenance" in model.nodes[A].state.reason


def test_sigterm_of_active_hands_over_then_stops(request) -> None:
    model = request.node.model = started()
    model.sigterm(A)
    model.run_until(3.0)
    assert model.state_of(A) is None and model.state_of(B) == ACTIVE
    assert state_times(model, A, STANDBY)[-1] <= state_times(model, B, NodeState.TAKEOVER)[-1]
    assert model.nodes[A].persisted.clean_exit
    took = [d for _, d in events(model, B, "state") if d["to"] == "TAKEOVER"][-1]
    assert "handed over" in took["reason"]


def test_one_way_link_dual_active_is_resolved_by_the_node_that_hears(request) -> None:
    model = request.node.model = started()
    cut(model, directions=("0->1",))  # bravo no longer hears alpha; alpha still hears bravo
    model.run_until(4.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert events(model, A, "dual_active")


def test_restarting_standby_never_takes_over_from_a_live_active(request) -> None:
    model = request.node.model = started()
    model.kill(B)
    model.run_until(2.5)
    model.start(B)
    model.run_until(6.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    assert not state_times(model, B, NodeState.TAKEOVER)


def test_crash_while_active_counts_as_a_failure(request) -> None:
    model = request.node.model = started()
    model.kill(A)
    model.run_until(3.0)
    model.start(A)
    model.run_until(5.0)
    assert [d["reason"] for _, d in events(model, A, "failure")] == ["restarted after a crash while ACTIVE"]


def test_vetoed_takeover_backs_off_and_retries(request) -> None:
    model = request.node.model = started(takeover_backoff_s=2.0)
    model.nodes[B].promote_result = "veto"
    model.kill(A)
    model.run_until(3.0)
    assert model.state_of(B) == STANDBY and "vetoed" in model.nodes[B].state.reason
    vetoes = events(model, B, "promote.vetoed")
    assert len(vetoes) == 1
    model.nodes[B].promote_result = "ok"
    model.run_until(5.5)
    assert model.state_of(B) == ACTIVE


def test_failed_takeover_hands_back_to_the_healthy_peer(request) -> None:
    model = request.node.model = started()
    model.nodes[B].promote_result = "fail"
    assert model.command(A, "demote").ok
    model.run_until(4.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    failed = events(model, B, "promote.failed")
    assert failed and "handing back" in failed[0][1]["action"]
    assert events(model, B, "failure")


def test_a_failed_takeover_alone_lets_go_and_tries_again_never_active_without_resources(request) -> None:
    model = request.node.model = started(takeover_backoff_s=2.0)
    model.nodes[B].promote_result = "fail"
    model.kill(A)
    model.run_until(3.5)
    node = model.nodes[B]
    assert model.state_of(B) == STANDBY and not node.address and not node.relays_closed
    failed = events(model, B, "promote.failed")
    assert len(failed) == 1 and "retrying in 2 s" in failed[0][1]["action"]
    from firmware.core.cluster import alarms
    assert any(a.source == "actions" and "not carrying the calls" in a.text
               for a in alarms(node.settings, node.state))
    node.promote_result = "ok"  # whatever failed is fixed: the next try after the back-off succeeds
    model.run_until(6.5)
    assert model.state_of(B) == ACTIVE and node.address
    assert len(events(model, B, "promote.failed")) == 1


def test_failed_takeover_is_tolerated_when_configured(request) -> None:
    model = request.node.model = started(on_action_failure="tolerate")
    model.nodes[B].promote_result = "fail"
    model.kill(A)
    model.run_until(3.0)
    assert model.state_of(B) == ACTIVE
    from firmware.core.cluster import alarms
    assert any("promote actions failed" in a.text and a.source == "actions"
               for a in alarms(model.nodes[B].settings, model.nodes[B].state))


def test_forced_promote_while_still_starting_is_refused(request) -> None:
    model = request.node.model = started()
    model.kill(B)
    model.run_until(2.5)
    model.start(B)
    model.run_until(2.501)  # bravo has not heard alpha yet
    reply = model.command(B, "promote", force=True)
    assert not reply.ok and "still starting" in reply.message
    model.run_until(5.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)


def test_dual_active_tie_break_is_epoch_then_health_then_role_then_name() -> None:
    from firmware.core import cluster
    from firmware.core.cluster import Persisted, Settings
    from firmware.core.cluster.election import self_wins_dual_active
    from firmware.core.peer import PeerView

    primary = Settings(node="alpha", peer="bravo", role=Role.PRIMARY)
    secondary = Settings(node="bravo", peer="alpha", role=Role.SECONDARY)

    def wins(epochs: tuple[int, int], healths: tuple[int, int]) -> bool:
        st, _ = cluster.initial_state(primary, Persisted(epoch=epochs[0]), 0.0, 0.0)
        peer_state, _ = cluster.initial_state(secondary, Persisted(epoch=epochs[1]), 0.0, 0.0)
        msg = cluster.build_heartbeat(secondary, peer_state, healths[1], 1, b"\0" * 4, ())
        inputs = cluster.Inputs(now=1.0, wall=1.0, minute_of_day=0, tick=1, peer=PeerView(()), health=healths[0])
        return self_wins_dual_active(primary, st, inputs, msg)

    assert wins((6, 5), (10, 100))       # the newer epoch wins, whatever the health
    assert not wins((5, 5), (40, 100))   # equal epochs: the healthier secondary beats the primary
    assert wins((5, 5), (100, 100))      # equal epochs and health: the primary
    assert wins((5, 5), (100, 90))


def test_slow_release_does_not_cancel_an_operator_promote(request) -> None:
    model = request.node.model = started(handover_timeout_s=1.0)
    model.nodes[A].action_delay = 2.5  # alpha's demote actions outlast the handover timeout
    assert model.command(B, "promote").ok
    model.run_until(8.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert not events(model, B, "handover.timeout")


def test_isolated_active_fences_itself_before_the_peers_deadtime(request) -> None:
    model = request.node.model = started()
    model.nodes[A].witness_reachable = False  # alpha is the one cut off from the world
    model.run_until(2.5)
    cut(model)
    model.run_until(4.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert [d["cause"] for _, d in events(model, A, "fence")] == ["isolated"]
    assert state_times(model, A, STANDBY)[-1] <= state_times(model, B, NodeState.TAKEOVER)[-1]


def test_active_with_a_reachable_witness_does_not_fence(request) -> None:
    model = request.node.model = started()
    cut(model)
    model.run_until(4.0)
    assert model.state_of(A) == ACTIVE and not events(model, A, "fence")


def test_stalled_active_fences_itself_when_it_resumes(request) -> None:
    model = request.node.model = started()
    model.run_until(2.5)
    model.stall(A, 1.0)
    model.run_until(6.0)
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, ACTIVE)
    assert [d["cause"] for _, d in events(model, A, "fence")] == ["stall"]


# ------------------------------------------------------------- mixed releases during an update

NEXT_GENERATION = 0x10  # a release whose heartbeats this one cannot read
NEXT_REVISION = 0x02    # a release that only appends fields: this one reads it


def restart_as(model: TwoNodeModel, index: int, version: int) -> None:
    model.kill(index)
    model.nodes[index].protocol_version = version
    model.start(index)


def test_a_standby_of_an_unreadable_release_never_takes_the_calls_from_a_live_peer(request) -> None:
    model = request.node.model = started()
    restart_as(model, B, NEXT_GENERATION)  # the standby was updated to an incompatible release
    model.run_until(12.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    assert not state_times(model, B, NodeState.TAKEOVER)
    assert not model.nodes[A].state.peer.alive and model.nodes[A].state.peer.foreign_version == NEXT_GENERATION
    assert model.nodes[B].state.peer.foreign_version == PROTOCOL_VERSION  # bravo hears alpha's older generation
    blocked = events(model, B, "takeover.blocked")
    assert [d["code"] for _, d in blocked] == ["peer_incompatible"]
    assert "speaks heartbeat protocol generation 0 revision 1" in model.nodes[B].state.reason
    from firmware.core.cluster import alarms
    (alarm,) = [a for a in alarms(model.nodes[A].settings, model.nodes[A].state) if a.source == "peer"]
    assert alarm.level == "critical" and "generation 1 revision 0" in alarm.text and "cannot read" in alarm.text
    assert [d["version"] for _, d in events(model, A, "peer.incompatible")] == ["generation 1 revision 0"]
    # Once the unreadable peer really goes silent, the guard lets the standby take over as usual.
    model.kill(A)
    died = model.now
    model.run_until(died + 0.3 + 0.3)
    assert model.state_of(B) == ACTIVE
    assert "silent on every link" in [d for _, d in events(model, B, "state") if d["to"] == "TAKEOVER"][-1]["reason"]


def test_two_boxes_of_unreadable_releases_both_wait_and_say_why() -> None:
    model = TwoNodeModel(seed=3)
    model.nodes[B].protocol_version = NEXT_GENERATION
    model.start(A)
    model.start(B)
    model.run_until(10.0)
    # Neither can tell whether the other holds the calls: idle, and both say so, rather than two holders.
    assert (model.state_of(A), model.state_of(B)) == (STANDBY, STANDBY)
    assert all(v.split(": ", 1)[1].startswith(("alpha good since", "bravo good since")) for v in model.violations)
    for index in (A, B):
        assert model.nodes[index].state.blocked.code.value == "peer_incompatible"
    # Rolling bravo back to this release: the pair elects a holder at once.
    restart_as(model, B, PROTOCOL_VERSION)
    model.violations.clear()
    model.run_until(14.0)
    assert ACTIVE in (model.state_of(A), model.state_of(B))
    assert not model.violations


def test_a_newer_revision_of_this_generation_pairs_normally(request) -> None:
    model = request.node.model = started()
    restart_as(model, B, NEXT_REVISION)
    model.run_until(6.0)
    assert (model.state_of(A), model.state_of(B)) == (ACTIVE, STANDBY)
    assert model.nodes[A].state.peer.alive and model.nodes[B].state.peer.alive
    assert model.nodes[A].state.peer.foreign_version is None
    model.kill(A)
    died = model.now
    model.run_until(died + 0.3 + 0.12 + 0.06)
    assert model.state_of(B) == ACTIVE
