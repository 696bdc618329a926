"""LAN arbitration, the shell's side: probe rounds at the cadence the decision core asks for.

The core decides (`firmware.core.cluster.lan`); this module only looks. While
`Outputs.probe_every_s` is set it runs rounds, back to back (0) or spaced out.
A round probes every shared address and every control target at once, each
on its own thread of a pool that belongs to the arbiter (so a round never
waits for, nor delays, a takeover's own network calls), and comes back as one
`LanProbe` (`verdict_of`). Its start is taken on the event loop's clock, the
clock the core compares it with.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from firmware.core.actions.network import IPAddress, ProbeAnswer
from firmware.core.actions.sharedip import SharedIpAction
from firmware.core.cluster import LanProbe, LanVerdict

log = logging.getLogger(__name__)

Answer = ProbeAnswer | str  # a probe's answer, or why it failed
Target = tuple[str, SharedIpAction, IPAddress | None]  # label, the action whose LAN, the address (None: its own)


def verdict_of(started_at: float, addresses: Sequence[tuple[str, Answer]],
               controls: Sequence[tuple[str, Answer]], peer: tuple[str, Answer] | None = None) -> LanProbe:
    """One round's verdict from each probe's answer (labels such as ``192.0.2.10 on eth0``).

    HELD if anybody answered for a shared address; INCONCLUSIVE if a probe
    failed (`local_failure`: this node's fault) or no control target answered;
    CONTENDED if another host probed for a shared address meanwhile; else FREE.
    `peer` (the peer's own address, when configured) only sets `peer_seen`.
    """
    probe = _verdict(started_at, addresses, controls)
    if peer is None:
        return probe
    label, answer = peer
    if not isinstance(answer, ProbeAnswer):  # this node's probe failed: it says nothing about the peer
        return replace(probe, detail=f"{probe.detail}; peer {label}: {answer}")
    seen = answer.in_use
    return replace(probe, peer_seen=seen, detail=f"{probe.detail}; peer {label} {'answered' if seen else 'silent'}")


def _verdict(started_at: float, addresses: Sequence[tuple[str, Answer]],
             controls: Sequence[tuple[str, Answer]]) -> LanProbe:
    for label, answer in addresses:
        if isinstance(answer, ProbeAnswer) and answer.holder is not None:
            return LanProbe(started_at, LanVerdict.HELD, answer.holder, f"{label} answered by {answer.holder}")
    failed = [f"{label}: {answer}" for label, answer in (*addresses, *controls) if isinstance(answer, str)]
    if failed:
        return LanProbe(started_at, LanVerdict.INCONCLUSIVE, detail="; ".join(failed), local_failure=True)
    answered = [label for label, answer in controls if isinstance(answer, ProbeAnswer) and answer.in_use]
    if controls and not answered:
        silent = ", ".join(label for label, _ in controls)
        return LanProbe(started_at, LanVerdict.INCONCLUSIVE,
                        detail=f"control target {silent} did not answer: this node's LAN link may be down")
    for label, answer in addresses:
        if isinstance(answer, ProbeAnswer) and answer.contender is not None:
            return LanProbe(started_at, LanVerdict.CONTENDED, answer.contender,
                            f"{answer.contender} probes for {label} too")
    free = ", ".join(label for label, _ in addresses)
    return LanProbe(started_at, LanVerdict.FREE,
                    detail=f"nobody answers for {free}" + (f"; {answered[0]} answered" if answered else ""))


def _target(shared_ips: Sequence[SharedIpAction], address: str) -> Target:
    """A control target or the peer's address, asked on the LAN of the shared address whose subnet holds it
    (the config checked that one does)."""
    ip = ipaddress.ip_address(address)
    action = next(a for a in shared_ips if ip in a.config.ip.network)
    return f"{address} on {action.interface}", action, ip


class LanArbiter:
    """Runs probe rounds for the shared addresses while the decision core wants them."""

    def __init__(self, shared_ips: Sequence[SharedIpAction], control: Sequence[str], round_s: float,
                 on_round: Callable[[LanProbe], None], peer_address: str = "") -> None:
        self.round_s = round_s
        self.on_round = on_round
        self._addresses: list[Target] = [(f"{a.config.ip.ip} on {a.interface}", a, None) for a in shared_ips]
        self._controls: list[Target] = [_target(shared_ips, address) for address in control]
        self._peer: Target | None = _target(shared_ips, peer_address) if peer_address else None
        # The physical ports under the shared addresses, whose carrier each round reads first.
        self._ports = {action.config.interface: action for action in shared_ips}
        self.latest: LanProbe | None = None
        self.rounds = 0
        self._every: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    def cadence(self, every_s: float | None) -> None:
        """Run rounds every `every_s` seconds (0: back to back), or stop after the current round (None)."""
        if every_s == self._every:
            return
        self._every = every_s
        self._changed.set()
        if every_s is not None and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._rounds())

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._every is not None:
            started = loop.time()
            try:
                probe = await self.run_round(started)
            except Exception as exc:  # a broken round proves nothing; it never ends the rounds
                log.exception("LAN probe round failed")
                probe = LanProbe(started, LanVerdict.INCONCLUSIVE, detail=f"probe round failed: {exc}",
                                 local_failure=True)
            self.latest = probe
            self.rounds += 1
            self.on_round(probe)  # the decision it causes may change the cadence
            await self._pause(started)

    async def _pause(self, started: float) -> None:
        """Wait until the next round is due at the current cadence; a change of cadence re-times it."""
        loop = asyncio.get_running_loop()
        while self._every is not None:
            pause = self._every - (loop.time() - started)
            if pause <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), pause)
            except asyncio.TimeoutError:
                pass

    async def run_round(self, started: float) -> LanProbe:
        """Probe every shared address and control target at once; the round's verdict.

        First the links: with no carrier on a shared address's interface this
        node is off that LAN (LINK_DOWN), and the round only waits its length.
        """
        if self._pool is None:
            workers = len(self._addresses) + len(self._controls) + (self._peer is not None)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lan-probe")
        loop = asyncio.get_running_loop()
        states = await asyncio.gather(*(loop.run_in_executor(self._pool, a.link_up) for a in self._ports.values()))
        down = [name for name, up in zip(self._ports, states) if not up]
        if down:
            await asyncio.sleep(self.round_s)  # a round lasts its length even now: no busy loop while unplugged
            return LanProbe(started, LanVerdict.LINK_DOWN,
                            detail=f"{', '.join(down)} has no carrier: this node is off the shared addresses' LAN")

        async def ask(label: str, action: SharedIpAction, address: IPAddress | None) -> tuple[str, Answer]:
            try:
                return label, await loop.run_in_executor(self._pool, action.probe, self.round_s, address)
            except Exception as exc:  # NetworkError names what failed; anything else too
                return label, str(exc) or type(exc).__name__

        peer = [self._peer] if self._peer is not None else []
        addresses, controls, peers = await asyncio.gather(asyncio.gather(*(ask(*t) for t in self._addresses)),
                                                          asyncio.gather(*(ask(*t) for t in self._controls)),
                                                          asyncio.gather(*(ask(*t) for t in peer)))
        return verdict_of(started, addresses, controls, peers[0] if peers else None)

    def status(self) -> dict[str, Any]:
        """The arbiter's part of the status snapshot (key ``lan``)."""
        latest = self.latest
        return {"lan": {
            "probing": self._every is not None, "every_s": self._every, "rounds": self.rounds,
            "last": None if latest is None else {"verdict": latest.verdict.value, "holder": latest.holder,
                                                 "detail": latest.detail, "peer_seen": latest.peer_seen,
                                                 "started_at": round(latest.started_at, 3)},
        }}

    def close(self) -> None:
        """Stop the rounds and the probe threads (idempotent; a round in flight ends with its timeout)."""
        self._every = None
        if self._task is not None:
            self._task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
