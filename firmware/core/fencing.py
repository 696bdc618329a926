"""Power fencing, the shell's side: run the fence agent the core asks for, and check the device meanwhile.

Fence agents follow the fence-agents conventions (the ClusterLabs project
behind Pacemaker's STONITH): the agent reads its options as ``key=value``
lines on stdin, ``action`` among them, and answers with its exit code. For
``status`` 0 means on and 2 means off; for every other action 0 means done.
`run_agent` runs one action with a timeout (the agent's whole process group
is killed when it overruns: `fence_ipmilan` runs `ipmitool`).

The `Fencer` checks the device with ``monitor`` at start and every
`monitor_every_s` (a broken device is an alarm before it is needed), and
fences when the decision core asks (`Outputs.fence_peer`): ``off``, then a
``status`` that must say off. Each attempt is journaled step by step and
reported to the core as a `FenceReport`; after a failure the next attempt
waits `retry_s`. The decisions stay in the core (`firmware.core.cluster.fencing`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from firmware.config.node import FenceDeviceConfig
from firmware.core.alarms import Alarm, AlarmBoard
from firmware.core.cluster import FenceReport
from firmware.core.endpoints import Endpoints
from firmware.core.journal import Journal

log = logging.getLogger(__name__)

STATUS_ON, STATUS_OFF = 0, 2  # the exit codes of a fence agent's `status` action
OUTPUT_TAIL = 400             # characters of an agent's output kept for the journal and the alarm


@dataclass(frozen=True)
class AgentRun:
    """One run of a fence agent: its exit code (None: it did not end in time, or did not start)."""

    action: str
    exit_code: int | None
    output: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Whether the action succeeded (for `status`: whether it got an answer, on or off)."""
        if self.action == "status":
            return self.exit_code in (STATUS_ON, STATUS_OFF)
        return self.exit_code == 0

    @property
    def power(self) -> str | None:
        """For `status`: "on" or "off"; None otherwise or without an answer."""
        if self.action != "status":
            return None
        return {STATUS_ON: "on", STATUS_OFF: "off"}.get(self.exit_code if self.exit_code is not None else -1)

    def summary(self) -> str:
        """One line for people: the action, its outcome and the agent's last words."""
        outcome = "timed out" if self.exit_code is None else f"exit {self.exit_code}"
        return f"{self.action}: {outcome} after {self.elapsed_s:.1f} s" + (f": {self.output}" if self.output else "")


def _option_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def agent_input(action: str, options: Mapping[str, str | int | float | bool]) -> str:
    """The agent's stdin: ``action=<action>``, then one ``key=value`` line per option."""
    lines = [f"action={action}"] + [f"{key}={_option_value(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _tail(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return " | ".join(lines)[-OUTPUT_TAIL:]


def run_agent(agent: str, options: Mapping[str, str | int | float | bool], action: str, timeout_s: float) -> AgentRun:
    """Run one action of a fence agent; never longer than `timeout_s` (then its process group is killed)."""
    started = time.monotonic()
    try:
        return _run_agent(agent, options, action, timeout_s, started)
    except Exception as exc:  # whatever went wrong is a failed run, never an exception in the fencer
        log.exception("fence agent %s %s", agent, action)
        return AgentRun(action, None, f"running {agent} failed: {exc}", time.monotonic() - started)


def _run_agent(agent: str, options: Mapping[str, str | int | float | bool], action: str, timeout_s: float,
               started: float) -> AgentRun:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # the agents are Python: keep their output to the point
    try:
        proc = subprocess.Popen([agent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True, env=env)
    except OSError as exc:
        return AgentRun(action, None, f"cannot run {agent}: {exc}", time.monotonic() - started)
    try:
        output, _ = proc.communicate(agent_input(action, options), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:  # a child that left the group could keep the pipe open: do not wait for it for ever
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        return AgentRun(action, None, f"{agent} did not end within {timeout_s:g} s (killed)",
                        time.monotonic() - started)
    return AgentRun(action, proc.returncode, _tail(output), time.monotonic() - started)


class Fencer:
    """Fences the peer when the core asks, and checks the fence device meanwhile (inert without an agent)."""

    def __init__(self, device: FenceDeviceConfig, peer: str, journal: Journal,
                 on_report: Callable[[FenceReport], None], clock: Callable[[], float]) -> None:
        self.device, self.peer, self.journal = device, peer, journal
        self.on_report, self.clock = on_report, clock
        self.enabled = bool(device.agent)
        self.latest: FenceReport | None = None       # the last finished attempt
        self.check: AgentRun | None = None           # the last monitor run
        self.attempts = 0
        self._running = False
        self._retry_at = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task] = set()

    def _run(self, action: str) -> asyncio.Future[AgentRun]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="fence")  # a fence never waits for a monitor
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, run_agent, self.device.agent, self.device.options, action,
                                    self.device.timeout_s)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        """Begin checking the device (at once, then every `monitor_every_s`)."""
        if self.enabled:
            self._spawn(self._monitor())

    async def _monitor(self) -> None:
        while True:
            try:
                run = await self._run("monitor")
            except Exception as exc:  # the check goes on; its failure is the alarm
                run = AgentRun("monitor", None, f"checking the device failed: {exc}", 0.0)
            if self.check is None or run.ok != self.check.ok:
                self.journal.record("fence.device", {"agent": self.device.agent, "ok": run.ok,
                                                     "detail": run.summary()})
                (log.info if run.ok else log.error)("fence device %s: %s", self.device.agent, run.summary())
            self.check = run
            if not self.device.monitor_every_s:
                return
            await asyncio.sleep(self.device.monitor_every_s)

    def want(self, wanted: bool) -> None:
        """The core's `Outputs.fence_peer`: start an attempt unless one runs or the last one failed just now."""
        if wanted and self.enabled and not self._running and self.clock() >= self._retry_at:
            self._running = True
            self._spawn(self._fence())

    async def _fence(self) -> None:
        started = self.clock()
        self.attempts += 1
        self.journal.record("fence.start", {"peer": self.peer, "agent": self.device.agent, "attempt": self.attempts})
        log.warning("fencing %s with %s", self.peer, self.device.agent)
        try:
            off = await self._run("off")
            status = await self._run("status") if off.ok else None
        except Exception as exc:  # never leave the core waiting without a report
            log.exception("fencing %s", self.peer)
            off, status = AgentRun("off", None, f"fencing failed: {exc}", self.clock() - started), None
        finally:
            self._running = False
        fenced = status is not None and status.power == "off"
        detail = off.summary() if status is None else f"{off.summary()}; {status.summary()}"
        elapsed = round(self.clock() - started, 3)
        self.journal.record("fence.done" if fenced else "fence.failed",
                            {"peer": self.peer, "agent": self.device.agent, "elapsed_s": elapsed, "detail": detail})
        (log.warning if fenced else log.error)("fencing %s %s: %s", self.peer, "done" if fenced else "failed", detail)
        if not fenced:
            self._retry_at = self.clock() + self.device.retry_s
        self.latest = FenceReport(started, fenced, detail)
        self.on_report(self.latest)

    def register(self, endpoints: Endpoints, board: AlarmBoard) -> None:
        """Add the fencer's status key (``fence``) and its alarm."""
        endpoints.add_status(self.status)
        board.add_source(self.alarms)

    def alarms(self) -> list[Alarm]:
        """A device that failed its last check (source ``fence-device``)."""
        if self.check is None or self.check.ok:
            return []
        return [Alarm("fence-device", "warning", f"fence device for {self.peer} failed its check "
                                                 f"({self.check.summary()}): fencing would not work now")]

    def status(self) -> dict[str, Any]:
        """The fencer's part of the status snapshot (key ``fence``; None without a device)."""
        if not self.enabled:
            return {"fence": None}
        check, latest = self.check, self.latest
        return {"fence": {
            "agent": self.device.agent, "peer": self.peer, "fencing": self._running, "attempts": self.attempts,
            "device": "unknown" if check is None else ("ok" if check.ok else "failed"),
            "checked": None if check is None else check.summary(),
            "last": None if latest is None else {"fenced": latest.fenced, "detail": latest.detail,
                                                 "started_at": round(latest.started_at, 3)},
        }}

    def close(self) -> None:
        """Stop checking; an agent run in flight ends by its own timeout."""
        for task in list(self._tasks):
            task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
