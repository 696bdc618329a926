"""Power fencing: switch a silent peer off before claiming what it may still hold.

LAN arbitration proves a release on the wire, but not always: when no control
target answers, a probe round proves nothing (INCONCLUSIVE); and when the
address stays held while the peer stays silent (its daemon dead, its release
failed, its kernel still answering ARP), only switching the peer off frees it.
With a fence device configured (`Settings.fencing`), a STANDBY node whose
peer is silent, whose witness (if any) passed, and whose LAN verdict is one
of those two, fences the peer before it takes over:

* FENCE_DELAY: it first waits its fence delay, counted from the moment
  fencing became necessary. Only a node that wants to claim ever fences (an
  ACTIVE node never does), so two nodes race to fence each other only when
  neither held the calls; the statically preferred node then fences at once
  and the other waits `DEFAULT_FENCE_DELAY_S` (Pacemaker's static delay), so
  the preferred one has switched it off before its own delay runs out. A
  standby whose peer held the calls fences at once: the holder never fences
  back. An explicit `fence_delay_s` applies always;
* FENCING: `Outputs.fence_peer` asks the shell to fence (off, then a
  `status` that says off). The shell reports each attempt as a
  `FenceReport`, a fact with a time: only an attempt started after the
  silence began counts;
* what needs a fence: an INCONCLUSIVE round, an address held for
  `held_escalate_s`, or (with the peer's own address probed) a FREE round in
  which the peer itself did not answer: a box cut off from the LAN may still
  have the address on its interface and answer for it when the cable returns;
* fenced: an INCONCLUSIVE LAN (or a silent peer) no longer blocks (the peer is off, so it holds
  nothing); a held address frees itself once the peer's box is off, and the
  LAN rules then see it free. Still held after a successful fence: somebody
  else answers, and the held-address block stays;
* FENCE_FAILED: no takeover, a critical alarm, and the shell keeps trying.
"""

from __future__ import annotations

from firmware.core.cluster.blocked import BlockCode, Blocked
from firmware.core.cluster.election import statically_preferred
from firmware.core.cluster.lan import lan_block, peer_held_calls
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


def _need(settings: Settings, st: ClusterState, inp: Inputs, lan: Blocked | None) -> tuple[str, float] | None:
    """Why the peer must be fenced before a claim, and since when; None if the LAN proves enough."""
    since = silent_since(settings, st, inp)
    if lan is not None and lan.code is BlockCode.ADDRESS_HELD_LONG:
        holder = st.lan.holder if st.lan is not None else "another host"
        return f"the shared address is still held by {holder}", since + settings.held_escalate_s
    if lan is None and st.lan is not None and st.lan.verdict is LanVerdict.INCONCLUSIVE:
        return f"the LAN probe proves nothing ({st.lan.detail})", since + settings.deadtime_s
    if lan is None and st.lan is not None and st.lan.verdict is LanVerdict.FREE and st.lan.peer_seen is False:
        return (f"{settings.peer} does not answer on the LAN: it may be cut off from it with the shared address "
                f"still on its interface", since + settings.deadtime_s)
    return None


def fence_block(settings: Settings, st: ClusterState, inp: Inputs, lan: Blocked | None) -> Blocked | None:
    """Why fencing keeps this node from claiming now, or `lan` (None or ADDRESS_HELD_LONG) unchanged.

    Called by the guard once every other rule passed; `lan` is what the LAN
    rules said (`lan.lan_block`).
    """
    if not settings.fencing:
        return lan
    need = _need(settings, st, inp, lan)
    if need is None:
        return lan
    why, needed_since = need
    report = inp.fence
    counts = report is not None and report.started_at >= silent_since(settings, st, inp)
    if counts and report is not None and report.fenced:
        return lan  # INCONCLUSIVE: the peer is off. Still held: somebody else answers.
    if counts and report is not None:
        return Blocked(BlockCode.FENCE_FAILED,
                       f"fencing {settings.peer} failed ({report.detail}): not taking over, retrying. Check the "
                       f"fence device, or power {settings.peer} off by hand")
    wait = needed_since + fence_delay(settings, st, inp) - inp.now
    if wait > 0:
        return Blocked(BlockCode.FENCE_DELAY, f"{why}; fencing {settings.peer} in {wait:.1f} s (fence delay)")
    return Blocked(BlockCode.FENCING, f"{why}: fencing {settings.peer} before taking over")


def wants_fence(settings: Settings, st: ClusterState) -> bool:
    """Whether the shell should fence the peer now (again, after a failure)."""
    return (settings.fencing and st.guard is not None and st.state in (NodeState.STARTING, NodeState.STANDBY)
            and st.guard.code in (BlockCode.FENCING, BlockCode.FENCE_FAILED))


def fence_deadline(settings: Settings, st: ClusterState, inp: Inputs) -> float | None:
    """When the fence delay runs out, so the shell decides again then."""
    if not settings.fencing or st.guard is None or st.guard.code is not BlockCode.FENCE_DELAY:
        return None
    need = _need(settings, st, inp, lan_block(settings, st, inp))
    return need[1] + fence_delay(settings, st, inp) + 1e-4 if need is not None else None
