"""PBX service action: start and stop the PBX with the node's role.

`cold`: the PBX runs only on the ACTIVE node (started on promote, stopped on
demote). `hot`: it always runs on both nodes and only the network and relays
move; promote just makes sure it is running. Commands are argv lists from the
config (systemd units by default); readiness is confirmed by an optional
command retried until it succeeds or its timeout passes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from firmware.config import ServiceConfig
from firmware.core.actions import ActionError

OUTPUT_LIMIT = 2000
READY_RETRY_S = 0.2


async def run_command(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Run argv; return (exit code or None on timeout, combined output)."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return None, f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        return None, f"{' '.join(argv)} timed out after {timeout:g} s"
    return proc.returncode, output[-OUTPUT_LIMIT:].decode(errors="replace").strip()


class ServiceAction:
    """Ensure-present / ensure-absent of the PBX service."""

    kind = "service"

    name = "service"

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.timeout = config.timeout_ms / 1000
        self.running: bool | None = None
        self.detail = "not checked yet"

    def check(self) -> None:
        """At start-up: the configured commands must exist."""
        for argv in (self.config.start, self.config.stop, self.config.status):
            if not argv:
                continue
            program = argv[0]
            if os.sep in program:
                if not os.access(program, os.X_OK):
                    raise ActionError(f"{program} is not an executable file")
            elif not any(os.access(os.path.join(d, program), os.X_OK)
                         for d in os.environ.get("PATH", os.defpath).split(os.pathsep)):
                raise ActionError(f"{program} is not on PATH")

    async def is_running(self) -> bool:
        """Ask the status command (exit 0 = running)."""
        code, output = await run_command(self.config.status, self.timeout)
        self.running = code == 0
        self.detail = output or ("running" if self.running else "stopped")
        return self.running

    async def prepare(self) -> None:
        """At start-up, before joining: hot mode starts the PBX; cold mode leaves it to promote."""
        if self.config.mode == "hot" and not await self.is_running():
            await self._start()

    async def ensure_present(self) -> None:
        """Make sure the PBX runs and is ready."""
        if not await self.is_running():
            await self._start()
        await self._wait_ready()

    async def ensure_absent(self) -> None:
        """Cold mode: stop the PBX. Hot mode: leave it running."""
        if self.config.mode != "cold":
            return
        if await self.is_running():
            code, output = await run_command(self.config.stop, self.timeout)
            if code != 0:
                raise ActionError(f"stop failed (exit {code}): {output}")
        if await self.is_running():
            raise ActionError("still running after the stop command")

    async def holds(self) -> bool | None:
        """Cold mode: whether the PBX runs (the status command). Hot mode runs it on both nodes: None."""
        if self.config.mode != "cold":
            return None
        return await self.is_running()

    async def _start(self) -> None:
        code, output = await run_command(self.config.start, self.timeout)
        if code != 0:
            raise ActionError(f"start failed (exit {code}): {output}")
        self.running = True

    async def _wait_ready(self) -> None:
        if not self.config.ready:
            return
        deadline = time.monotonic() + self.config.ready_timeout_ms / 1000
        while True:
            code, output = await run_command(self.config.ready, self.timeout)
            if code == 0:
                return
            if time.monotonic() >= deadline:
                raise ActionError(f"not ready after {self.config.ready_timeout_ms / 1000:g} s: {output}")
            await asyncio.sleep(READY_RETRY_S)

    def status(self) -> dict[str, Any]:
        """For the status snapshot."""
        return {"mode": self.config.mode, "running": self.running, "detail": self.detail}
