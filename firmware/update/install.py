"""One box's install job: a bundle into the other slot, then (if asked) a reboot into it on trial.

The ``update-install`` command starts it; a rolling update (firmware.update.rolling) sends that
command to the STANDBY over the bulk channel, with the bundle it copied into the STANDBY's inbox,
and follows the job in the STANDBY's ``update.install`` status. The job is refused on a node that
holds the calls (a pair is updated STANDBY first; the ACTIVE hands over before its own install),
and while another install runs. ``update-abort`` calls it off: an install still running is let
finish (RAUC cannot be stopped halfway safely) and then undone, so the running slot stays first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from firmware.core.alarms import Alarm
from firmware.core.cluster import ClusterState
from firmware.core.control import ControlError
from firmware.core.endpoints import SourceParams
from firmware.update.bundle import UpdateError
from firmware.update.slots import Slots

log = logging.getLogger(__name__)

Stage = Literal["checking", "installing", "installed", "rebooting", "failed", "aborted"]
FINISHED = ("installed", "failed", "aborted")


class InstallParams(SourceParams):
    """``update-install``: the bundle (a file name in this box's inbox, or an absolute path), the good gate's
    mode for the new slot, and whether to reboot into it once installed."""

    bundle: str
    mode: Literal["pair", "single"] = "pair"
    reboot: bool = True


@dataclass
class InstallJob:
    """The install this box runs or ran last (status ``update.install``)."""

    bundle: str
    mode: str
    stage: Stage = "checking"
    version: str | None = None
    error: str | None = None
    started: float = 0.0  # wall clock
    finished: float | None = None
    abort_requested: bool = False


class LocalInstall:
    """Runs :class:`InstallJob`s with the board's slots driver; journals each step."""

    def __init__(self, slots: Slots, inbox: Path | None, view: Callable[[], ClusterState | None],
                 record: Callable[[str, dict[str, Any]], Any], reboot: Callable[[], Awaitable[Any]]) -> None:
        """`inbox`: where the bulk channel puts the peer's files (None: no bulk channel); `view()`: the node's
        cluster state now; `record`: the journal's; `reboot()`: leave the cluster and reboot (the operator's
        ``reboot`` command)."""
        self.slots = slots
        self.inbox = inbox
        self.view = view
        self.record = record
        self.reboot = reboot
        self.job: InstallJob | None = None
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        """Whether an install job is under way (not finished)."""
        return self.job is not None and self.job.stage not in FINISHED

    def resolve(self, bundle: str) -> Path:
        """The bundle's path: a plain name is in the inbox; ControlError if it is neither that nor absolute."""
        if "/" not in bundle:
            if self.inbox is None:
                raise ControlError(f"{bundle}: a bundle by name comes from the inbox, and this box has no "
                                   "[bulk] channel")
            return self.inbox / bundle
        path = Path(bundle)
        if not path.is_absolute():
            raise ControlError(f"{bundle}: give the bundle's absolute path (or a name in the inbox)")
        return path

    async def begin(self, request: dict[str, Any]) -> dict[str, Any]:
        """The ``update-install`` command: refuse with the reason, or start the job and answer at once."""
        if self.running:
            raise ControlError(f"an install is already under way ({self.job.bundle}: {self.job.stage})")
        state = self.view()
        if state is None:
            raise ControlError("the node is still starting")
        if request["mode"] == "pair" and state.state.holds_resources:
            raise ControlError(f"this node is {state.state.name} and holds the calls: hand them over first "
                               "(a pair is updated STANDBY first)")
        bundle = self.resolve(request["bundle"])
        self.job = InstallJob(str(bundle), request["mode"], started=time.time())
        self._task = asyncio.get_running_loop().create_task(self._run(bundle, request["reboot"]))
        return {"bundle": str(bundle), "stage": self.job.stage}

    async def abort(self) -> str:
        """Call the running job off (see the module's docstring); what happens, in a sentence."""
        job = self.job
        if job is None or not self.running:
            raise ControlError("no install is under way")
        if job.stage == "rebooting":
            raise ControlError("too late: the box is rebooting into the new slot (it boots on trial: the good gate "
                               "or the boot gate's deadline decides)")
        job.abort_requested = True
        return "the install is called off: the running slot stays"

    async def _run(self, bundle: Path, reboot: bool) -> None:
        job = self.job
        assert job is not None
        try:
            info = await asyncio.to_thread(self.slots.check, bundle)
            job.version = info.version
            if job.abort_requested:
                return self._finish(job, "aborted", None)
            job.stage = "installing"
            self.record("update.install", {"bundle": job.bundle, "version": info.version, "mode": job.mode})
            said = await asyncio.to_thread(self.slots.install, bundle, job.mode)
            log.info("update: %s installed: %s", job.bundle, said.splitlines()[-1] if said else "")
            if job.abort_requested:
                await asyncio.to_thread(self.slots.abort)
                return self._finish(job, "aborted", None)
            if not reboot:
                return self._finish(job, "installed", None)
            job.stage = "rebooting"
            self.record("update.installed", {"bundle": job.bundle, "version": info.version, "reboot": True})
            try:
                await self.reboot()
            except ControlError as exc:  # e.g. it took the calls meanwhile: the install must not wait for a reboot
                await asyncio.to_thread(self.slots.abort)
                raise ControlError(f"the reboot was refused ({exc}); the install is undone") from None
        except (UpdateError, ControlError) as exc:
            self._finish(job, "failed", str(exc))
        except Exception as exc:  # a bug must end the job with its reason, not leave it "installing" forever
            log.exception("update: the install of %s failed", job.bundle)
            self._finish(job, "failed", f"internal error: {exc}")

    def _finish(self, job: InstallJob, stage: Stage, error: str | None) -> None:
        job.stage, job.error, job.finished = stage, error, time.time()
        self.record(f"update.install_{stage}", {"bundle": job.bundle, "error": error})
        (log.error if error else log.info)("update: install of %s %s%s", job.bundle, stage, f": {error}" if error else "")

    def start(self) -> None:
        """Nothing to do at start: a job lives only as long as the daemon (a reboot ends it)."""

    def close(self) -> None:
        """Stop following the job (the daemon is going down)."""
        if self._task is not None:
            self._task.cancel()

    def status(self) -> dict[str, Any] | None:
        """The job for the ``update.install`` status key (None: no install since the daemon started)."""
        return None if self.job is None else asdict(self.job)

    def alarms(self) -> list[Alarm]:
        """A warning while an install runs, and after one failed (until the next starts)."""
        job = self.job
        if job is None:
            return []
        if self.running:
            return [Alarm("update", "warning", f"installing {Path(job.bundle).name} into the other slot ({job.stage})")]
        if job.stage == "failed":
            return [Alarm("update", "warning", f"the install of {Path(job.bundle).name} failed: {job.error}; "
                                               "the running slot stays")]
        return []
