"""Power fencing in the decision core: a silent peer is switched off where the LAN cannot prove its release.

With a fence device, a STANDBY whose peer is silent and whose LAN verdict is
inconclusive (or shows the address held for too long) asks the shell to fence
the peer (`Outputs.fence_peer`) and takes over only once a `FenceReport`
started after the silence says the peer is off. The statically preferred node
fences at once, the other after its delay; a failed fence blocks with a
critical alarm; an isolated node and an ACTIVE node never fence.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster import (
    ActionsReport,
    BlockCode,
    ClusterState,
    Command,
    FenceReport,
    LanProbe,
    LanVerdict,
    Persisted,
    Settings,
    WitnessResult,
    alarms,
    initial_state,
    step,
)
from firmware.core.cluster.fencing import DEFAULT_FENCE_DELAY_S
from firmware.core.peer import PeerView
from firmware.core.states import NodeState, Role

from test_cluster_lan import DEAD_AT, HEARD_AT, MAC, _guard_code, _inputs, _peer, _rounds, _run, _standby_behind


def _fencing(role: Role = Role.SECONDARY, **overrides) -> Settings:
    overrides = {"fence_delay_s": 0.0, "fencing": True, **overrides}
    return Settings(node="alpha", peer="bravo", role=role, lan_arbitration=True, **overrides)


INCONCLUSIVE = _rounds(HEARD_AT + 0.12, LanVerdict.INCONCLUSIVE)


def _peer_silent_on_the_lan(first: float = HEARD_AT + 0.12):
    """Rounds that find the shared address free and the peer's own address silent."""
    free = _rounds(first)

    def latest(now: float) -> LanProbe | None:
        probe = free(now)
        return None if probe is None else replace(probe, peer_seen=False)
    return latest


PEER_SILENT = _peer_silent_on_the_lan()


def test_an_inconclusive_lan_fences_the_peer_then_takes_over() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, outs = _run(settings, st, silent, DEAD_AT + 0.2, lan=INCONCLUSIVE)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.FENCING
    assert outs[-1].fence_peer
    assert [a for a in alarms(settings, st) if a.source == "fence"][0].level == "warning"
    fenced = FenceReport(started_at=DEAD_AT + 0.01, fenced=True, detail="Success: Powered OFF")
    st, out = step(settings, st, _inputs(DEAD_AT + 2.3, silent, lan=INCONCLUSIVE(DEAD_AT + 2.3), fence=fenced))
    assert st.state == NodeState.TAKEOVER and not out.fence_peer


def test_without_fencing_an_inconclusive_lan_lets_the_witness_decide() -> None:
    settings = _fencing(fencing=False)
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.2, lan=INCONCLUSIVE)
    assert st.state == NodeState.TAKEOVER and not any(o.fence_peer for o in outs)


def test_a_failed_fence_blocks_with_a_critical_alarm_and_keeps_asking() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    failed = FenceReport(started_at=DEAD_AT + 0.01, fenced=False, detail="Connection timed out")
    st, outs = _run(settings, st, silent, DEAD_AT + 3.0, lan=INCONCLUSIVE, fence=failed)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.FENCE_FAILED
    assert outs[-1].fence_peer
    alarm = [a for a in alarms(settings, st) if a.source == "fence"][0]
    assert alarm.level == "critical" and "Connection timed out" in alarm.text


def test_a_fence_from_before_the_silence_proves_nothing() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    old = FenceReport(started_at=HEARD_AT - 0.05, fenced=True)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.5, lan=INCONCLUSIVE, fence=old)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.FENCING and outs[-1].fence_peer


def _waits_then_fences(settings: Settings, st: ClusterState, silent: PeerView, lan, delay: float) -> None:
    """From the first decision that needs a fence, FENCE_DELAY for `delay`, woken when it ends, then FENCING."""
    st, outs = _run(settings, st, silent, DEAD_AT + 1.0, lan=lan, every=0.1)
    assert _guard_code(st) is BlockCode.FENCE_DELAY and st.fence_since is not None
    ends = st.fence_since + delay
    st, more = _run(settings, st, silent, ends - 0.05, lan=lan, every=0.1, start=DEAD_AT + 1.1)
    assert _guard_code(st) is BlockCode.FENCE_DELAY and not any(o.fence_peer for o in outs + more)
    assert abs(more[-1].wake_at - ends) < 0.01  # woken when the delay runs out
    st, out = step(settings, st, _inputs(ends + 0.01, silent, lan=lan(ends)))
    assert _guard_code(st) is BlockCode.FENCING and out.fence_peer


def test_when_neither_held_the_calls_the_node_that_is_not_preferred_waits_its_fence_delay() -> None:
    settings = _fencing(fence_delay_s=None)  # the default: 0 on the preferred node, else the static delay
    st = _standby_behind(settings, NodeState.STANDBY)  # SECONDARY next to a PRIMARY: not preferred
    _waits_then_fences(settings, st, _peer(HEARD_AT, NodeState.STANDBY), PEER_SILENT, DEFAULT_FENCE_DELAY_S)


def test_a_node_that_cannot_see_its_own_lan_waits_longer_when_neither_held_the_calls() -> None:
    settings = _fencing(role=Role.PRIMARY, fence_delay_s=None)  # preferred, but blind on the LAN
    st = _standby_behind(settings, NodeState.STANDBY)
    silent = _peer(HEARD_AT, NodeState.STANDBY, role=Role.SECONDARY)
    # Longer than the other node's delay: the node that sees the LAN fences first.
    _waits_then_fences(settings, st, silent, INCONCLUSIVE, 2 * DEFAULT_FENCE_DELAY_S)


def test_the_delay_counts_from_when_a_fence_was_first_needed_not_from_the_silence() -> None:
    """Both nodes reach the fence stage at the same instant after a long initdead (no peer ever heard):
    their delays must still differ by the static delay, or they fence each other."""
    settings = _fencing(fence_delay_s=None, initdead_s=20.0)
    st, _ = initial_state(settings, Persisted(), 0.0, 0.0)
    outs = []
    for tenth in range(1, 206):  # STARTING for the whole initdead, then STANDBY with nobody heard
        now = tenth / 10
        st, out = step(settings, st, _inputs(now, _peer(None), lan=INCONCLUSIVE(now)))
        outs.append(out)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.FENCE_DELAY
    assert st.fence_since is not None and st.fence_since >= 20.0
    assert not any(o.fence_peer for o in outs)


def test_a_local_probe_failure_never_fences() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    broken = _rounds(HEARD_AT + 0.12, LanVerdict.INCONCLUSIVE)

    def local(now: float):
        probe = broken(now)
        return None if probe is None else replace(probe, local_failure=True)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 1.0, lan=local)
    assert not any(o.fence_peer for o in outs)  # the witness decides, as without a fence device


def test_one_round_without_the_peers_answer_is_not_a_vanished_peer() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    free = _rounds(HEARD_AT + 0.12)

    def one_lost_reply(now: float):
        probe = free(now)
        if probe is None:
            return None
        lost = abs(probe.started_at - (DEAD_AT - 0.06)) < 0.005  # the latest round when the deadtime runs out
        return replace(probe, peer_seen=not lost)
    st, outs = _run(settings, st, silent, DEAD_AT + 1.0, lan=one_lost_reply)
    assert st.state == NodeState.TAKEOVER and not any(o.fence_peer for o in outs)


def test_an_operator_hold_stops_a_fence_at_once() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, outs = _run(settings, st, silent, DEAD_AT + 0.2, lan=INCONCLUSIVE)
    assert outs[-1].fence_peer
    st, out = step(settings, st, _inputs(DEAD_AT + 0.25, silent, lan=INCONCLUSIVE(DEAD_AT + 0.25),
                                         command=Command("maintenance-on")))
    assert out.reply is not None and out.reply.ok and not out.fence_peer


def test_a_peer_silent_on_the_lan_is_fenced_though_the_address_looks_free() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, outs = _run(settings, st, silent, DEAD_AT + 0.3, lan=PEER_SILENT)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.FENCING and outs[-1].fence_peer
    assert "does not answer on the LAN" in st.guard.text
    fenced = FenceReport(started_at=DEAD_AT + 0.01, fenced=True)
    st, _ = _run(settings, st, silent, DEAD_AT + 1.0, lan=PEER_SILENT, start=DEAD_AT + 0.5, fence=fenced)
    assert st.state == NodeState.TAKEOVER


def test_a_standby_whose_peer_held_the_calls_fences_at_once() -> None:
    settings = _fencing(fence_delay_s=None)  # not preferred, but the ACTIVE peer never fences back
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.1, lan=INCONCLUSIVE)
    assert _guard_code(st) is BlockCode.FENCING and outs[-1].fence_peer


def test_an_explicit_fence_delay_applies_always() -> None:
    settings = _fencing(role=Role.PRIMARY, fence_delay_s=2.0)
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 1.9, lan=INCONCLUSIVE, every=0.1)
    assert _guard_code(st) is BlockCode.FENCE_DELAY and not any(o.fence_peer for o in outs)


def test_the_preferred_node_fences_at_once() -> None:
    settings = _fencing(role=Role.PRIMARY, fence_delay_s=None)
    st = _standby_behind(settings, NodeState.STANDBY)
    st, outs = _run(settings, st, _peer(HEARD_AT, NodeState.STANDBY, role=Role.SECONDARY), DEAD_AT + 0.1,
                    lan=PEER_SILENT)
    assert _guard_code(st) is BlockCode.FENCING and outs[-1].fence_peer


def test_an_address_held_too_long_is_fenced_and_then_claimed_once_free() -> None:
    settings = _fencing(held_escalate_s=1.0)
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    held = _rounds(HEARD_AT + 0.12, LanVerdict.HELD, MAC)
    st, outs = _run(settings, st, silent, HEARD_AT + 0.9, lan=held)
    assert _guard_code(st) is BlockCode.ADDRESS_HELD and not any(o.fence_peer for o in outs)
    st, outs = _run(settings, st, silent, HEARD_AT + 1.2, lan=held, start=HEARD_AT + 1.02)
    assert _guard_code(st) is BlockCode.FENCING and outs[-1].fence_peer
    fenced = FenceReport(started_at=HEARD_AT + 1.03, fenced=True)
    # Still answered after the fence: somebody else holds it; the held-address block stays.
    st, outs = _run(settings, st, silent, HEARD_AT + 3.0, lan=held, start=HEARD_AT + 2.0, fence=fenced)
    assert _guard_code(st) is BlockCode.ADDRESS_HELD_LONG and not outs[-1].fence_peer
    # The box is off: the next rounds find the address free, and the LAN rules let it be claimed.
    free = _rounds(HEARD_AT + 3.0, LanVerdict.FREE)
    st, _ = _run(settings, st, silent, HEARD_AT + 4.0, lan=free, start=HEARD_AT + 3.05, fence=fenced)
    assert st.state == NodeState.TAKEOVER


def test_a_free_lan_needs_no_fence() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.5, lan=_rounds(HEARD_AT + 0.12))
    assert st.state == NodeState.TAKEOVER and not any(o.fence_peer for o in outs)


def test_an_isolated_node_never_fences() -> None:
    settings = _fencing(witness_required=True)
    st = _standby_behind(settings)
    failed = WitnessResult(False, DEAD_AT - 0.1, "no answer from 192.0.2.1")
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 1.0, lan=INCONCLUSIVE, witness=failed)
    assert _guard_code(st) is BlockCode.WITNESS_UNREACHABLE and not any(o.fence_peer for o in outs)


def test_an_active_node_never_fences() -> None:
    settings = _fencing()
    st = _standby_behind(settings)
    st, _ = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.5, lan=_rounds(HEARD_AT + 0.12))
    assert st.state == NodeState.TAKEOVER
    st, _ = step(settings, st, _inputs(DEAD_AT + 0.6, _peer(HEARD_AT), actions=ActionsReport(st.transition)))
    assert st.state == NodeState.ACTIVE
    for now in (DEAD_AT + 1, DEAD_AT + 5, DEAD_AT + 10):
        st, out = step(settings, st, _inputs(now, _peer(HEARD_AT), actions=ActionsReport(st.transition),
                                             lan=INCONCLUSIVE(now)))
        assert st.state == NodeState.ACTIVE and not out.fence_peer
