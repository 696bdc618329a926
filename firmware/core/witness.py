"""Split-brain witness checks: can this node reach the addresses it must reach?

Targets are `tcp://HOST:PORT` (a TCP connect must succeed) or `icmp://HOST`
(an echo reply must come back; raw sockets as root, unprivileged ICMP
sockets otherwise). All targets are checked at once, each with a timeout.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

import icmplib

from firmware.config import parse_host_port


@dataclass(frozen=True)
class TargetResult:
    """Outcome for one target."""

    target: str
    ok: bool
    detail: str


async def check_tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Connect and close; ok if the handshake completes within `timeout`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return False, f"no answer within {timeout * 1000:.0f} ms"
    except OSError as exc:
        return False, os.strerror(exc.errno) if exc.errno else str(exc)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, "connected"


async def check_icmp(host: str, timeout: float) -> tuple[bool, str]:
    """One echo request; ok on a reply within `timeout`."""
    try:
        reply = await icmplib.async_ping(host, count=1, timeout=timeout, privileged=os.geteuid() == 0)
    except icmplib.ICMPLibError as exc:
        return False, str(exc) or type(exc).__name__
    except OSError as exc:
        return False, exc.strerror or str(exc)
    if reply.is_alive:
        return True, f"reply in {reply.avg_rtt:.1f} ms"
    return False, f"no reply within {timeout * 1000:.0f} ms"


async def check_target(target: str, timeout: float) -> TargetResult:
    """Check one `tcp://` or `icmp://` target."""
    scheme, _, rest = target.partition("://")
    if scheme == "tcp":
        host, port = parse_host_port(rest, default_port=0)
        ok, detail = await check_tcp(host, port, timeout)
    else:
        ok, detail = await check_icmp(rest.strip("[]"), timeout)
    return TargetResult(target, ok, detail)


async def _guarded(target: str, timeout: float) -> TargetResult:
    try:
        return await check_target(target, timeout)
    except Exception as exc:  # an unexpected failure is a failed check, never a dead witness task
        return TargetResult(target, False, f"check failed: {exc}")


class Witness:
    """The configured witness: several targets, `all` or `any` of which must answer."""

    def __init__(self, targets: list[str], require: str = "all", timeout: float = 0.25) -> None:
        self.targets = list(targets)
        self.require = require
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        """Whether any target is configured (no targets: the guard is off)."""
        return bool(self.targets)

    async def check(self) -> tuple[bool, str]:
        """Check every target at once; return (passed, a one-line summary)."""
        results = await asyncio.gather(*(_guarded(t, self.timeout) for t in self.targets))
        passed = all(r.ok for r in results) if self.require == "all" else any(r.ok for r in results)
        summary = "; ".join(f"{r.target} {r.detail}" for r in results)
        return passed, summary


class WitnessChecks:
    """Runs a witness check whenever the decision core wants one: one at a time, at most one per interval."""

    def __init__(self, witness: Witness, min_interval: float,
                 on_result: Callable[[bool, float, str], None]) -> None:
        self.witness = witness
        self.min_interval = min_interval
        self.on_result = on_result  # (passed, monotonic time the check started, summary)
        self._task: asyncio.Task | None = None
        self._started = -1e9

    def want(self, now: float) -> None:
        """Start a check at ``now`` (loop time) unless one runs or one started less than an interval ago."""
        busy = self._task is not None and not self._task.done()
        if busy or now - self._started < self.min_interval:
            return
        self._started = now
        self._task = asyncio.ensure_future(self._check(now))

    async def _check(self, started: float) -> None:
        passed, summary = await self.witness.check()
        self.on_result(passed, started, summary)
