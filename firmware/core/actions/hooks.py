"""Operator hook scripts, run on journal events.

Layout (run-parts style): every executable in `<hooks dir>/<event kind>/` runs,
in name order, when an event of that kind is journaled, and every executable
in `<hooks dir>/all/` runs for every journaled event. The takeover phases
(`promote.before`, `promote.after`, `demote.before`, `demote.after`) run only
their own folder, so a slow notification hook in `all/` cannot veto a
promotion. Each hook gets the event as JSON
on stdin and `TANDEM_*` variables in its environment, runs with a timeout in
its own process group (killed whole on timeout), and its exit code and output
are journaled as a `hook` event. Hooks run as asyncio subprocesses, so they
never hold up a heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096
ALL_EVENTS = "all"


@dataclass(frozen=True)
class HookResult:
    """What one hook did."""

    hook: str
    event: str
    exit_code: int | None  # None: killed after the timeout, or could not start
    duration_ms: float
    output: str

    @property
    def ok(self) -> bool:
        """Whether the hook exited 0."""
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        """Journal data for this result."""
        return {"hook": self.hook, "event": self.event, "exit_code": self.exit_code,
                "duration_ms": round(self.duration_ms, 1), "output": self.output}


class HookRunner:
    """Finds and runs the hooks for an event kind."""

    def __init__(self, directory: Path | None, timeout: float = 10.0) -> None:
        self.directory = directory
        self.timeout = timeout

    def hooks_for(self, kind: str, include_all: bool = True) -> list[Path]:
        """Executables that run for `kind`, in order: the kind's own, then (optionally) those for all events."""
        if self.directory is None:
            return []
        found = []
        folders = [self.directory / kind] + ([self.directory / ALL_EVENTS] if include_all else [])
        for folder in folders:
            try:
                entries = sorted(folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
            found += [p for p in entries if p.is_file() and os.access(p, os.X_OK) and not p.name.startswith(".")]
        return found

    async def run(self, kind: str, record: dict[str, Any], environment: dict[str, str],
                  include_all: bool = True) -> list[HookResult]:
        """Run every hook for `kind` one after another; return their results."""
        results = []
        for hook in self.hooks_for(kind, include_all):
            results.append(await self._run_one(hook, kind, record, environment))
        return results

    async def _run_one(self, hook: Path, kind: str, record: dict[str, Any],
                       environment: dict[str, str]) -> HookResult:
        env = {**os.environ, **environment, "TANDEM_EVENT": kind}
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                str(hook), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            return HookResult(hook.name, kind, None, 0.0, f"could not start: {exc}")
        payload = json.dumps(record, default=str).encode()
        try:
            output = await asyncio.wait_for(_exchange(proc, payload), self.timeout)
            code: int | None = proc.returncode
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            output = b""
            if proc.stdout is not None:
                try:
                    output = await asyncio.wait_for(proc.stdout.read(OUTPUT_LIMIT), 1.0)
                except (asyncio.TimeoutError, OSError):
                    pass
            await proc.wait()
            code = None
            output += f"\n[killed after the {self.timeout:g} s timeout]".encode()
        text = output[-OUTPUT_LIMIT:].decode(errors="replace").strip()
        return HookResult(hook.name, kind, code, (time.monotonic() - started) * 1000, text)


async def _exchange(proc: asyncio.subprocess.Process, payload: bytes) -> bytes:
    """Give the hook its stdin (it may not read it) and collect its output until it exits."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(payload)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a hook that ignores stdin is fine
    finally:
        proc.stdin.close()
    output = await proc.stdout.read()
    await proc.wait()
    return output


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def hook_environment(status: dict[str, Any]) -> dict[str, str]:
    """The TANDEM_* variables for hooks, from a status snapshot."""
    peer = status.get("peer", {})
    return {
        "TANDEM_NODE": str(status.get("node", "")),
        "TANDEM_PEER": str(peer.get("name", "")),
        "TANDEM_ROLE": str(status.get("role", "")),
        "TANDEM_STATE": str(status.get("state", "")),
        "TANDEM_EPOCH": str(status.get("epoch", "")),
        "TANDEM_HEALTH": str(status.get("health", "")),
        "TANDEM_PEER_STATE": str(peer.get("state") or ""),
    }


class EventHooks:
    """A journal listener that runs the hooks of every journaled event and journals their results.

    Each event's hooks run as a task of their own (``spawn``), so a slow hook
    never holds up the heartbeat or the next event.
    """

    def __init__(self, runner: HookRunner, record: Callable[[str, dict[str, Any]], Any],
                 environment: Callable[[], dict[str, str]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.runner = runner
        self.record = record
        self.environment = environment
        self.spawn = spawn

    def __call__(self, record: dict[str, Any]) -> None:
        """Journal listener: start the hooks for ``record`` (never for the hooks' own results)."""
        if record["kind"] == "hook" or not self.runner.hooks_for(record["kind"]):
            return
        self.spawn(self._run(record))

    async def _run(self, record: dict[str, Any]) -> None:
        for result in await self.runner.run(record["kind"], record, self.environment()):
            self.record("hook", result.to_json())
            if not result.ok:
                log.warning("hook %s for %s: exit %s: %s", result.hook, result.event, result.exit_code, result.output)
