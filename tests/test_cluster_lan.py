"""LAN arbitration in the decision core: the shared address proven free on the wire before a claim.

A standby whose peer fell silent takes over only when probe rounds started
after the silence find nobody answering for the shared address; a held
address blocks with the holder's MAC in the alarm; when neither node held the
calls, the statically preferred node claims first; an ACTIVE node that finds
another holder yields unless it is the preferred one. The shell's probe rounds
come in as `Inputs.lan`; the cadence it must run them at goes out as
`Outputs.probe_every_s`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware.core.cluster import (
    ActionsReport,
    Command,
    BlockCode,
    ClusterState,
    Inputs,
    LanProbe,
    LanVerdict,
    Outputs,
    Persisted,
    Settings,
    WitnessResult,
    alarms,
    initial_state,
    step,
)
from firmware.core.message import Heartbeat
from firmware.core.peer import LinkView, PeerView
from firmware.core.states import Flag, NodeState, Role

MAC = "52:54:00:12:34:56"
HEARD_AT = 0.1           # the peer's last heartbeat in these tests
DEAD_AT = HEARD_AT + 0.3  # ... and the default deadtime after it


def _settings(role: Role = Role.SECONDARY, **overrides) -> Settings:
    return Settings(node="alpha", peer="bravo", role=role, lan_arbitration=True, **overrides)


def _peer(heard_at: float | None, state: NodeState = NodeState.ACTIVE, role: Role = Role.PRIMARY) -> PeerView:
    if heard_at is None:
        return PeerView(())
    msg = Heartbeat(node="bravo", state=state, role=role, health=100, flags=Flag(0), epoch=1,
                    tick=int(heard_at * 10))
    return PeerView((LinkView("lan", rx_at=heard_at, tx_ok_at=heard_at),), message=msg, message_at=heard_at,
                    boot_id=b"bravo-1")


def _inputs(now: float, peer: PeerView, **changes) -> Inputs:
    return Inputs(now=now, wall=now, minute_of_day=0, tick=int(now * 10), peer=peer, **changes)


def _probe(started_at: float, verdict: LanVerdict = LanVerdict.FREE, holder: str = "") -> LanProbe:
    return LanProbe(started_at, verdict, holder=holder, detail="192.0.2.10 on eth0")


def _standby_behind(settings: Settings, peer_state: NodeState = NodeState.ACTIVE) -> ClusterState:
    """A STANDBY node that heard its peer (in `peer_state`) last at HEARD_AT."""
    st, _ = initial_state(settings, Persisted(), 0.0, 0.0)
    st, _ = step(settings, st, _inputs(HEARD_AT, _peer(HEARD_AT, peer_state)))
    assert st.state == NodeState.STANDBY
    return st


def _run(settings: Settings, st: ClusterState, peer: PeerView, until: float, lan=None, every: float = 0.02,
         start: float = HEARD_AT + 0.02, **changes) -> tuple[ClusterState, list[Outputs]]:
    """Decide every `every` seconds up to `until`; `lan(now)` is the latest probe round at that instant."""
    outputs = []
    now = start
    while now <= until + 1e-9:
        st, out = step(settings, st, _inputs(now, peer, lan=lan(now) if lan else None, **changes))
        outputs.append(out)
        if st.state != NodeState.STANDBY:
            break
        now = round(now + every, 6)
    return st, outputs


def _rounds(first: float, verdict: LanVerdict = LanVerdict.FREE, holder: str = "", length: float = 0.04):
    """Back-to-back rounds from `first` on: at `now`, the newest one that has finished."""
    def latest(now: float) -> LanProbe | None:
        if now < first + length:
            return None
        done = int((now - first - length) / length + 1e-9)
        return _probe(round(first + done * length, 6), verdict, holder)
    return latest


def _guard_code(st: ClusterState) -> BlockCode | None:
    return st.guard.code if st.guard is not None else None


def test_a_held_address_blocks_the_takeover_and_the_alarm_names_the_holder() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, outs = _run(settings, st, silent, DEAD_AT + 0.5, lan=_rounds(0.22, LanVerdict.HELD, MAC))
    assert st.state == NodeState.STANDBY
    assert _guard_code(st) is BlockCode.ADDRESS_HELD
    [alarm] = [a for a in alarms(settings, st) if a.source == "lan"]
    assert alarm.level == "warning" and MAC in alarm.text and "192.0.2.10" in alarm.text
    assert MAC in st.reason
    blocked = [e.data for out in outs for e in out.events if e.kind == "takeover.blocked"]
    assert blocked == [{"code": "address_held", "reason": st.guard.text}]


def test_an_address_held_long_after_the_silence_escalates_to_a_critical_alarm() -> None:
    settings = _settings(held_escalate_s=1.0)
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), HEARD_AT + 1.5, lan=_rounds(0.22, LanVerdict.HELD, MAC))
    assert _guard_code(st) is BlockCode.ADDRESS_HELD_LONG
    [alarm] = [a for a in alarms(settings, st) if a.source == "lan"]
    assert alarm.level == "critical" and MAC in alarm.text
    assert "tandem release" in alarm.text and "power bravo off" in alarm.text
    # One event per kind of block, however many rounds came back the same.
    codes = [e.data["code"] for out in outs for e in out.events if e.kind == "takeover.blocked"]
    assert codes == ["address_held", "address_held_long"]
    # After escalation the standby keeps probing, slowly.
    assert outs[-1].probe_every_s == 0.25


def test_the_address_free_for_the_confirm_time_lets_the_standby_take_over() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    # No round yet: probing, and no journal event for that usual wait.
    probing, outs = _run(settings, st, silent, DEAD_AT + 0.1)
    assert probing.state == NodeState.STANDBY and _guard_code(probing) is BlockCode.PROBING_LAN
    assert not [e for out in outs for e in out.events if e.kind == "takeover.blocked"]
    # Rounds find it free from 0.22 on: by the deadtime (0.4) it has been free 0.18 s > 0.15 s.
    taken, outs = _run(settings, st, silent, DEAD_AT + 0.1, lan=_rounds(0.22))
    assert taken.state == NodeState.TAKEOVER
    assert outs[-1].run is not None
    assert DEAD_AT <= taken.since < DEAD_AT + 0.03
    assert not [e for out in outs for e in out.events if e.kind == "takeover.blocked"]


def test_a_free_address_not_yet_confirmed_waits_and_asks_to_be_woken_when_it_is() -> None:
    settings = _settings(lan_confirm_s=0.3)
    st = _standby_behind(settings)
    st, out = step(settings, st, _inputs(DEAD_AT + 0.01, _peer(HEARD_AT), lan=_probe(0.35)))
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.LAN_CONFIRMING
    assert st.lan_free_since == 0.35
    assert out.wake_at == pytest.approx(0.35 + 0.3, abs=1e-3)


def test_rounds_from_before_the_silence_or_too_old_prove_nothing() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    before_silence = _probe(HEARD_AT - 0.05)
    st1, _ = step(settings, st, _inputs(DEAD_AT + 0.01, silent, lan=before_silence))
    assert st1.state == NodeState.STANDBY and _guard_code(st1) is BlockCode.PROBING_LAN and st1.lan is None
    stale = _probe(0.2)  # started after the silence, but 0.31 s old by now
    st2, _ = step(settings, st, _inputs(0.2 + settings.lan_fresh_s + 0.01, silent, lan=stale))
    assert st2.state == NodeState.STANDBY and _guard_code(st2) is BlockCode.PROBING_LAN


def test_a_free_streak_broken_by_a_held_round_starts_over() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, _ = step(settings, st, _inputs(0.3, silent, lan=_probe(0.22)))
    st, _ = step(settings, st, _inputs(0.34, silent, lan=_probe(0.26, LanVerdict.HELD, MAC)))
    assert st.lan_free_since is None
    st, _ = step(settings, st, _inputs(DEAD_AT + 0.01, silent, lan=_probe(0.36)))
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.LAN_CONFIRMING
    st, _ = step(settings, st, _inputs(0.52, silent, lan=_probe(0.48)))
    assert st.state == NodeState.TAKEOVER


def _never_heard(settings: Settings) -> ClusterState:
    st, _ = initial_state(settings, Persisted(), 0.0, 0.0)
    return st


def test_when_neither_node_held_the_calls_the_preferred_one_claims_first() -> None:
    no_peer = _peer(None)
    preferred = _settings(role=Role.PRIMARY)
    st, _ = _run(preferred, _never_heard(preferred), no_peer, 3.3, lan=_rounds(3.0), start=3.0)
    assert st.state == NodeState.TAKEOVER and st.since == pytest.approx(3.16, abs=0.021)
    other = _settings(role=Role.SECONDARY)
    st, _ = _run(other, _never_heard(other), no_peer, 3.3, lan=_rounds(3.0), start=3.0)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.CLAIM_DELAY
    st, _ = _run(other, st, no_peer, 3.8, lan=_rounds(3.0), start=3.32)
    assert st.state == NodeState.TAKEOVER and st.since >= 3.0 + other.lan_claim_delay_s


def test_a_contended_round_makes_the_other_node_yield_while_the_preferred_one_claims() -> None:
    no_peer = _peer(None)
    contended = _rounds(3.0, LanVerdict.CONTENDED, MAC)
    preferred = _settings(role=Role.PRIMARY)
    st, _ = _run(preferred, _never_heard(preferred), no_peer, 3.5, lan=contended, start=3.0)
    assert st.state == NodeState.TAKEOVER
    other = _settings(role=Role.SECONDARY)
    st, _ = _run(other, _never_heard(other), no_peer, 5.0, lan=contended, start=3.0)
    assert st.state == NodeState.STANDBY and _guard_code(st) is BlockCode.CLAIM_DELAY and MAC in st.guard.text


def test_equal_roles_prefer_the_name_that_sorts_first() -> None:
    no_peer = _peer(None)
    contended = _rounds(3.0, LanVerdict.CONTENDED, MAC)
    alpha = Settings(node="alpha", peer="bravo", lan_arbitration=True)
    bravo = Settings(node="bravo", peer="alpha", lan_arbitration=True)
    st_a, _ = _run(alpha, _never_heard(alpha), no_peer, 4.0, lan=contended, start=3.0)
    st_b, _ = _run(bravo, _never_heard(bravo), no_peer, 4.0, lan=contended, start=3.0)
    assert (st_a.state, st_b.state) == (NodeState.TAKEOVER, NodeState.STANDBY)


def test_an_inconclusive_round_leaves_the_decision_to_the_witness() -> None:
    settings = _settings(witness_required=True)
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    inconclusive = _rounds(0.22, LanVerdict.INCONCLUSIVE)
    failing = WitnessResult(False, started_at=0.3, detail="refused")
    st_f, _ = _run(settings, st, silent, DEAD_AT + 0.2, lan=inconclusive, witness=failing)
    assert st_f.state == NodeState.STANDBY and _guard_code(st_f) is BlockCode.WITNESS_UNREACHABLE
    [alarm] = [a for a in alarms(settings, st_f) if a.source == "lan"]
    assert alarm.level == "warning" and "proves nothing" in alarm.text
    ok = WitnessResult(True, started_at=0.3)
    st_ok, _ = _run(settings, st, silent, DEAD_AT + 0.2, lan=inconclusive, witness=ok)
    assert st_ok.state == NodeState.TAKEOVER


def _active(settings: Settings) -> tuple[ClusterState, PeerView]:
    """ACTIVE after taking over from a peer silent since HEARD_AT (the LAN was free)."""
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, _ = _run(settings, st, silent, DEAD_AT + 0.1, lan=_rounds(0.22))
    assert st.state == NodeState.TAKEOVER
    st, _ = step(settings, st, _inputs(0.6, silent, actions=ActionsReport(st.transition)))
    assert st.state == NodeState.ACTIVE
    return st, silent


def test_an_active_node_that_finds_another_holder_yields_unless_it_is_preferred() -> None:
    other = _settings(role=Role.SECONDARY)
    st, silent = _active(other)
    st, out = step(other, st, _inputs(1.7, silent, lan=_probe(1.6, LanVerdict.HELD, MAC)))
    assert st.state == NodeState.RELEASING and MAC in st.reason
    [event] = [e for e in out.events if e.kind == "address.conflict"]
    assert event.data["holder"] == MAC and event.data["yield"] is True
    preferred = _settings(role=Role.PRIMARY)
    st, silent = _active(preferred)
    st, out = step(preferred, st, _inputs(1.7, silent, lan=_probe(1.6, LanVerdict.HELD, MAC)))
    assert st.state == NodeState.ACTIVE
    [alarm] = [a for a in alarms(preferred, st) if a.source == "lan"]
    assert alarm.level == "critical" and MAC in alarm.text


def test_probing_starts_at_the_first_missed_heartbeat_and_stops_when_the_peer_is_back() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    _, out = step(settings, st, _inputs(HEARD_AT + 0.05, _peer(HEARD_AT + 0.05)))
    assert out.probe_every_s is None  # heard: no rounds
    _, out = step(settings, st, _inputs(HEARD_AT + 0.11, _peer(HEARD_AT)))
    assert out.probe_every_s is None  # one heartbeat late is not yet a miss
    st, out = step(settings, st, _inputs(HEARD_AT + 0.13, _peer(HEARD_AT)))
    assert out.probe_every_s == 0.0  # back to back, well before the deadtime runs out
    _, out = step(settings, st, _inputs(HEARD_AT + 0.2, _peer(HEARD_AT + 0.19)))
    assert out.probe_every_s is None
    active, silent = _active(settings)
    _, out = step(settings, active, _inputs(1.0, silent))
    assert out.probe_every_s == 1.0  # an ACTIVE node with a silent peer watches slowly


def test_a_node_that_may_not_take_over_probes_only_once_a_second() -> None:
    """Back to back it would hold a claimable peer back; not at all would leave a forced promote blind."""
    settings = _settings()
    st = _standby_behind(settings)
    st = replace(st, persisted=replace(st.persisted, maintenance=True))
    _, out = step(settings, st, _inputs(DEAD_AT + 0.05, _peer(HEARD_AT)))
    assert out.probe_every_s == 1.0


def test_a_forced_promote_without_a_lan_verdict_is_refused() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    st, out = step(settings, st, _inputs(DEAD_AT + 0.05, _peer(HEARD_AT), command=Command("promote", force=True)))
    assert out.reply is not None and not out.reply.ok and "has not been probed" in out.reply.message
    assert st.state == NodeState.STANDBY
    free = _rounds(DEAD_AT + 0.06)
    st, out = step(settings, st, _inputs(DEAD_AT + 0.2, _peer(HEARD_AT), lan=free(DEAD_AT + 0.2),
                                         command=Command("promote", force=True)))
    assert out.reply is not None and out.reply.ok and st.state == NodeState.TAKEOVER


def test_without_lan_arbitration_nothing_changes() -> None:
    settings = Settings(node="alpha", peer="bravo", role=Role.SECONDARY)
    st = _standby_behind(settings)
    held = _rounds(0.22, LanVerdict.HELD, MAC)
    st, outs = _run(settings, st, _peer(HEARD_AT), DEAD_AT + 0.1, lan=held)
    assert st.state == NodeState.TAKEOVER
    assert all(out.probe_every_s is None for out in outs)
    assert not [a for a in alarms(settings, st) if a.source == "lan"]


def test_not_even_a_forced_promote_claims_an_address_another_box_answers_for() -> None:
    settings = _settings()
    st = _standby_behind(settings)
    silent = _peer(HEARD_AT)
    st, _ = _run(settings, st, silent, DEAD_AT + 0.1, lan=_rounds(0.22, LanVerdict.HELD, MAC))
    st, out = step(settings, st, _inputs(0.6, silent, lan=_probe(0.55, LanVerdict.HELD, MAC),
                                         command=Command("promote", force=True)))
    assert st.state == NodeState.STANDBY and not out.reply.ok
    assert MAC in out.reply.message and "tandem release" in out.reply.message
    # Once the address is free, the same forced promote takes over at once.
    st, out = step(settings, st, _inputs(0.7, silent, lan=_probe(0.65), command=Command("promote", force=True)))
    assert st.state == NodeState.TAKEOVER and out.reply.ok


def test_a_new_silence_starts_afresh_after_the_peer_was_heard_again() -> None:
    settings = _settings(held_escalate_s=1.0)
    st = _standby_behind(settings)
    st, outs = _run(settings, st, _peer(HEARD_AT), HEARD_AT + 1.5, lan=_rounds(0.22, LanVerdict.HELD, MAC))
    assert _guard_code(st) is BlockCode.ADDRESS_HELD_LONG
    back = 2.0
    st, _ = step(settings, st, _inputs(back, _peer(back)))  # heard again
    assert st.guard is None
    st, outs = _run(settings, st, _peer(back), back + 0.5, lan=_rounds(back + 0.12, LanVerdict.HELD, MAC),
                    start=back + 0.02)
    # The same holder in a new silence is news again, and the fast cadence comes back.
    codes = [e.data["code"] for out in outs for e in out.events if e.kind == "takeover.blocked"]
    assert codes == ["address_held"]
    assert outs[-1].probe_every_s == 0.0
