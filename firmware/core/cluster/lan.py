"""LAN arbitration: prove on the wire that the shared address is free before claiming it (RFC 5227).

Silence on every heartbeat link does not prove that the peer let go: both
heartbeat links may be cut while both boxes are still on the LAN, or the
peer's daemon may have died with its box still up. With `lan_arbitration`
on, the shell runs probe rounds while the peer is silent (`probe_cadence`):
an ARP probe (sender 0.0.0.0) for each shared IPv4 address, a DAD neighbour
solicitation for each IPv6 one, and a question to a control target that must
answer (gateway, witness, or a configured address). Each round comes back as
a `LanProbe` with one verdict:

* FREE: nobody answered for the address and the control target did;
* HELD: somebody answered (its MAC is the `holder`);
* CONTENDED: nobody holds it, but another host probed for it in the same round;
* INCONCLUSIVE: not even the control target answered; proves nothing;
* LINK_DOWN: this node's own interface to that LAN has no carrier.

Rules for a standby whose peer is silent (`lan_block`, part of the guard):

* only a round started after the silence began counts, and only while it is
  fresh (`lan_fresh_s` plus the pause between rounds at the current
  cadence): no verdict yet is PROBING_LAN;
* HELD blocks (ADDRESS_HELD, naming who answers); seen held in every round
  for `held_escalate_s` it becomes ADDRESS_HELD_LONG, a critical alarm that
  says what the operator must do (or, with a fence device, a fence);
* FREE must last `lan_confirm_s` (about two rounds) before a claim;
* CONTENDED (the other box probes for the address too, so it is about to
  claim it) blocks the node that is not statically preferred, whatever the
  peer held: the preferred one claims first, and the other then sees HELD. A
  box probes back to back only while it could claim (`guard.may_claim`);
  otherwise once a second (for an operator's forced promote), so a preferred
  box that may not claim holds the other back for a round at most;
* when the peer held nothing when it fell silent (both could be claiming),
  the node that is not statically preferred also waits `lan_claim_delay_s`,
  in case the preferred one starts probing a little later;
* INCONCLUSIVE does not block on its own: the witness and isolation rules
  decide, as without arbitration (and a fence device, see `fencing`);
* LINK_DOWN blocks (LAN_LINK_DOWN): a node off the LAN would serve nobody,
  and must not fence a peer that may well be serving the calls.

An ACTIVE node whose peer is silent keeps probing slowly (`conflict`): if
somebody else answers for its address, the node that is not statically
preferred yields.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import statically_preferred
from firmware.core.cluster.observe import silent_since
from firmware.core.cluster.records import Decision, Event, Inputs, LanProbe, LanVerdict
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.cluster.transitions import release
from firmware.core.states import NodeState

HELD_CODES = frozenset({BlockCode.ADDRESS_HELD, BlockCode.ADDRESS_HELD_LONG})
"""The LAN shows the shared address held by another box: nothing, not even a forced promote, may claim it."""

PROBING_LAN = Blocked(BlockCode.PROBING_LAN, "probing the LAN for the shared address")
LAN_CONFIRMING = Blocked(BlockCode.LAN_CONFIRMING, "the shared address looks free; confirming")

ACTIVE_PROBE_EVERY_S = 1.0     # an ACTIVE node watches for another holder this often while the peer is silent
ESCALATED_PROBE_EVERY_S = 0.25  # after escalation a standby keeps probing, more gently (3 frames a round)
PROBE_AFTER_HEARTBEATS = 1.2   # a standby starts probing at the first missed heartbeat


def counting_probe(settings: Settings, st: ClusterState, inp: Inputs) -> LanProbe | None:
    """The latest probe round that counts now: started after the silence began, and still fresh."""
    probe = inp.lan
    if probe is None or probe.started_at < silent_since(settings, st, inp):
        return None
    if inp.now - probe.started_at > settings.lan_fresh_s + _spacing(st):
        return None
    return probe


def _spacing(st: ClusterState) -> float:
    """The pause between rounds at the cadence `probe_cadence` asks for in this state."""
    if st.state is NodeState.ACTIVE:
        return ACTIVE_PROBE_EVERY_S
    if st.guard is not None and st.guard.code is BlockCode.ADDRESS_HELD_LONG:
        return ESCALATED_PROBE_EVERY_S
    return 0.0


def observe_lan(settings: Settings, st: ClusterState, inp: Inputs) -> ClusterState:
    """Keep the counting round and since when the address has been seen free."""
    if not settings.lan_arbitration:
        return st
    probe = counting_probe(settings, st, inp)
    # Nobody holds the address in a contended round either; who claims it is `lan_block`'s question.
    # Rounds a holder runs (to spot a conflict) never count towards a later claim of its own.
    standby = probe is not None and not st.state.holds_resources
    free = standby and probe.verdict in (LanVerdict.FREE, LanVerdict.CONTENDED)
    held = standby and probe.verdict is LanVerdict.HELD
    unseen = probe is not None and probe.peer_seen is False
    unknown = probe is not None and probe.peer_seen is None and probe.verdict is not LanVerdict.LINK_DOWN
    changes = {
        "lan": probe,
        "lan_free_since": _since(st.lan_free_since, probe, free),
        "lan_held_since": _since(st.lan_held_since, probe, held),
        # A round whose probe of the peer failed neither proves nor breaks the peer's silence.
        "peer_unseen_since": st.peer_unseen_since if unknown else _since(st.peer_unseen_since, probe, unseen),
    }
    if all(getattr(st, key) == value for key, value in changes.items()):
        return st
    return replace(st, **changes)


def _since(previous: float | None, probe: LanProbe | None, holds: bool) -> float | None:
    """Since when a fact has held in every counting round: kept, started by this round, or ended."""
    if not holds or probe is None:
        return None
    return previous if previous is not None else probe.started_at


def peer_held_calls(inp: Inputs) -> bool:
    """Whether the peer's last heartbeat said it held (or was taking) the calls."""
    msg = inp.peer.message
    return msg is not None and msg.state.holds_resources


def lan_block(settings: Settings, st: ClusterState, inp: Inputs) -> Blocked | None:
    """Why the LAN does not (yet) let this node claim the shared address, or None."""
    if not settings.lan_arbitration:
        return None
    probe = st.lan
    if probe is None:
        return PROBING_LAN
    race = not peer_held_calls(inp) and not statically_preferred(settings, inp)
    if probe.verdict is LanVerdict.HELD:
        # Counted from this node's first round that saw it held: a node that became STANDBY in the
        # middle of a silence (an isolated ACTIVE that released) does not escalate at once.
        held_for = inp.now - (st.lan_held_since if st.lan_held_since is not None else probe.started_at)
        if held_for >= settings.held_escalate_s:
            return Blocked(BlockCode.ADDRESS_HELD_LONG,
                           f"shared address still held by {probe.holder} after {held_for:.0f} s while "
                           f"{settings.peer} is silent: its daemon is dead or its release failed, or both "
                           f"heartbeat links are cut while it runs. Reconnect the links; else power "
                           f"{settings.peer} off or run `tandem release` on it")
        return Blocked(BlockCode.ADDRESS_HELD, f"shared address held by {probe.holder} ({probe.detail})")
    if probe.verdict is LanVerdict.CONTENDED and not statically_preferred(settings, inp):
        return Blocked(BlockCode.CLAIM_DELAY, f"{probe.holder} is probing for the shared address too: "
                                              f"letting {settings.peer} claim it first")
    if probe.verdict is LanVerdict.LINK_DOWN:
        return Blocked(BlockCode.LAN_LINK_DOWN, f"this node is off the LAN ({probe.detail}): taking over would "
                                                "serve nobody")
    if probe.verdict is LanVerdict.INCONCLUSIVE:
        return None  # proves nothing: the witness and isolation rules decide
    free_since = st.lan_free_since if st.lan_free_since is not None else probe.started_at
    if race and inp.now - free_since < settings.lan_claim_delay_s:
        return Blocked(BlockCode.CLAIM_DELAY, f"neither node held the calls: letting {settings.peer} claim first")
    if inp.now - free_since < settings.lan_confirm_s:
        return LAN_CONFIRMING
    return None


def conflict(settings: Settings, st: ClusterState, inp: Inputs) -> Decision | None:
    """ACTIVE, peer silent, and somebody else answers for the address: the non-preferred node yields.

    The preferred node keeps the calls; its alarm names the other holder (`status`).
    """
    if not settings.lan_arbitration or st.peer.alive:
        return None
    probe = st.lan
    if probe is None or probe.verdict is not LanVerdict.HELD or statically_preferred(settings, inp):
        return None
    why = f"address conflict: {probe.holder} also answers for the shared address and {settings.peer} is preferred"
    event = Event("address.conflict", {"holder": probe.holder, "detail": probe.detail, "yield": True})
    return Decision(release(st, inp, why), (event,))


def probe_cadence(settings: Settings, st: ClusterState, inp: Inputs, claimable: bool) -> float | None:
    """How often the shell should run probe rounds now (0: back to back), or None for none.

    ``claimable``: this node could take over from a silent peer but for the LAN.
    Rounds start at the first missed heartbeat, so the verdict is there when
    the deadtime runs out: arbitration adds no latency to a takeover.
    """
    if not settings.lan_arbitration:
        return None
    if st.state is NodeState.ACTIVE:
        return None if st.peer.alive else _spacing(st)
    if st.state not in (NodeState.STARTING, NodeState.STANDBY):
        return None
    silent_for = inp.now - silent_since(settings, st, inp)
    if silent_for < PROBE_AFTER_HEARTBEATS * settings.heartbeat_s:
        return None
    # A node that may not claim (its witness failed, say) still looks once a second, so an operator's
    # forced promote has a verdict to go by; it holds the other node back for one round at most.
    return _spacing(st) if claimable else ACTIVE_PROBE_EVERY_S


def lan_deadline(settings: Settings, st: ClusterState) -> float | None:
    """When a wait of the LAN rules runs out (confirming, claim delay), so the shell decides again then."""
    if not settings.lan_arbitration or st.guard is None or st.lan_free_since is None:
        return None
    if st.guard.code is BlockCode.LAN_CONFIRMING:
        return st.lan_free_since + settings.lan_confirm_s + 1e-4
    if st.guard.code is BlockCode.CLAIM_DELAY:
        return st.lan_free_since + max(settings.lan_claim_delay_s, settings.lan_confirm_s) + 1e-4
    return None
