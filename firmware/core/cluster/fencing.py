"""Power fencing: switch a silent peer off before claiming what it may still hold.

LAN arbitration proves a release on the wire, but not always. With a fence
device (`Settings.fencing`), a STANDBY node whose peer is silent and whose
other guard rules passed (its witness, if any, answered; its own LAN link is
up) fences the peer before it takes over when the LAN cannot prove the
release:

* a round is INCONCLUSIVE because the LAN itself is silent (the control
  target did not answer); not when this node's own probing failed
  (`LanProbe.local_failure`): a local fault must not switch off a box that
  may be serving the calls;
* the address has been held in every round for `held_escalate_s`
  (ADDRESS_HELD_LONG): its daemon is dead, its release failed, or both
  heartbeat links are cut while it runs;
* the address looks free but the peer's own address (`peer_address`) has
  not answered for `lan_confirm_s`: a box cut off from the LAN may keep the
  address and answer for it when its cable returns. Until confirmed this
  blocks as LAN_CONFIRMING.

Then:

* FENCE_DELAY: the node waits its fence delay (`fence_delay`), counted from
  `ClusterState.fence_since`, the first decision of this silence that needed
  a fence. Only a node that wants to claim fences (an ACTIVE node never
  does), so two nodes race only when neither held the calls; the statically
  preferred node then fences first (Pacemaker's static delay);
* FENCING: `Outputs.fence_peer` asks the shell to fence (off, then a
  `status` that says off); it reports each attempt as a `FenceReport`, and
  only an attempt started after the silence began counts;
* fenced: the block is gone (the peer is off, so it holds nothing); a held
  address frees itself once the box is off and the LAN rules see it free;
  still held after a successful fence, somebody else answers and the
  held-address block stays;
* FENCE_FAILED: no takeover, a critical alarm, and the shell keeps trying.
"""

from __future__ import annotations

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import statically_preferred
from firmware.core.cluster.lan import LAN_CONFIRMING, peer_held_calls
from firmware.core.cluster.observe import silent_since
from firmware.core.cluster.records import Inputs, LanVerdict
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState
from firmware.core.states import NodeState

DEFAULT_FENCE_DELAY_S = 5.0
"""The static fence delay of the node that is not statically preferred (when none is configured)."""

FENCE_CODES = frozenset({BlockCode.FENCE_DELAY, BlockCode.FENCING, BlockCode.FENCE_FAILED})


def fence_delay(settings: Settings, st: ClusterState, inp: Inputs) -> float:
    """How long this node waits before fencing (an explicit `fence_delay_s` applies always).

    By default none when the peer held the calls (a holder never fences back).
    When neither held them, both may want to fence: the node that is not
    statically preferred waits `DEFAULT_FENCE_DELAY_S`, and a node that cannot
    see its own LAN (its probe is inconclusive) waits two more, so a node that
    can serve the calls wins the race.
    """
    if settings.fence_delay_s is not None:
        return settings.fence_delay_s
    if peer_held_calls(inp):
        return 0.0
    delay = 0.0 if statically_preferred(settings, inp) else DEFAULT_FENCE_DELAY_S
    if st.lan is not None and st.lan.verdict is LanVerdict.INCONCLUSIVE:
        delay += 2 * DEFAULT_FENCE_DELAY_S
    return delay


def _need(settings: Settings, st: ClusterState, now: float, lan: Blocked | None) -> str | Blocked | None:
    """Why the peer must be fenced before a claim; a block while that is still being confirmed; None if
    the LAN proves enough."""
    probe = st.lan
    if lan is not None and lan.code is BlockCode.ADDRESS_HELD_LONG:
        holder = probe.holder if probe is not None else "another host"
        return f"the shared address is still held by {holder}"
    if lan is not None or probe is None:
        return None
    if probe.verdict is LanVerdict.INCONCLUSIVE and not probe.local_failure:
        return f"the LAN probe proves nothing ({probe.detail})"
    if probe.verdict is LanVerdict.FREE and probe.peer_seen is False:
        # One lost reply is not a vanished box: the peer must stay silent for the confirmation time.
        unseen = st.peer_unseen_since if st.peer_unseen_since is not None else probe.started_at
        if now - unseen < settings.lan_confirm_s:
            return LAN_CONFIRMING
        return (f"{settings.peer} does not answer on the LAN: it may be cut off from it with the shared address "
                f"still on its interface")
    return None


def fence_block(settings: Settings, st: ClusterState, inp: Inputs, lan: Blocked | None) -> Blocked | None:
    """Why fencing keeps this node from claiming now, or `lan` (None or ADDRESS_HELD_LONG) unchanged.

    Called by the guard once every other rule passed; `lan` is what the LAN
    rules said (`lan.lan_block`). The delay counts from `ClusterState.fence_since`,
    the first decision of this silence that needed a fence (now, if this is it).
    """
    if not settings.fencing:
        return lan
    need = _need(settings, st, inp.now, lan)
    if need is None:
        return lan
    if isinstance(need, Blocked):
        return need
    report = inp.fence  # only an attempt started in this silence counts
    if report is not None and report.started_at < silent_since(settings, st, inp):
        report = None
    if report is not None and report.fenced:
        return lan  # INCONCLUSIVE: the peer is off. Still held: somebody else answers.
    if report is not None:
        return Blocked(BlockCode.FENCE_FAILED,
                       f"fencing {settings.peer} failed ({report.detail}): not taking over, retrying. Check the "
                       f"fence device, or power {settings.peer} off by hand")
    wait = _delay_ends(settings, st, inp) - inp.now
    if wait > 0:
        return Blocked(BlockCode.FENCE_DELAY, f"{need}; fencing {settings.peer} in {wait:.1f} s (fence delay)")
    return Blocked(BlockCode.FENCING, f"{need}: fencing {settings.peer} before taking over")


def _delay_ends(settings: Settings, st: ClusterState, inp: Inputs) -> float:
    needed_since = st.fence_since if st.fence_since is not None else inp.now
    return needed_since + fence_delay(settings, st, inp)


def fence_since(st: ClusterState, blocked: Blocked | None, now: float) -> float | None:
    """`ClusterState.fence_since` after a decision whose guard said `blocked`."""
    if blocked is None or blocked.code not in FENCE_CODES:
        return None
    return st.fence_since if st.fence_since is not None else now


def wants_fence(settings: Settings, st: ClusterState) -> bool:
    """Whether the shell should fence the peer now (again, after a failure)."""
    return (settings.fencing and st.guard is not None and st.state in (NodeState.STARTING, NodeState.STANDBY)
            and st.guard.code in (BlockCode.FENCING, BlockCode.FENCE_FAILED))


def fence_deadline(settings: Settings, st: ClusterState, inp: Inputs) -> float | None:
    """When the fence delay runs out, so the shell decides again then."""
    if not settings.fencing or st.guard is None or st.guard.code is not BlockCode.FENCE_DELAY:
        return None
    return _delay_ends(settings, st, inp) + 1e-4
