"""The rolling update of the pair, run by the ACTIVE node: the calls never leave a box that holds them
before the other one has proven the new release (hardware_docs/updates.md §7).

Stages, in order (each one journaled as ``update.stage`` and saved before it starts, so a restart
of this daemon, and this box's own reboot at the end, go on where they were):

1. ``copy``: the bundle into the STANDBY's inbox over the bulk channel;
2. ``peer-install``: the STANDBY's ``update-install`` (over the bulk channel): it checks the
   bundle, installs it into its other slot and reboots into it, on trial;
3. ``peer-boot``: the STANDBY boots the new slot; its good gate marks it good once it is joined
   on every link and healthy for ``good_after_s``. If it is not marked good, its boot gate takes it
   back to the old slot, and the update stops here: this box never gave up the calls;
4. ``handover``: this box demotes itself (break-before-make, as an operator's demote), and the
   updated peer takes the calls;
5. ``install``: this box installs the bundle into its own other slot;
6. ``trial``: this box reboots into it, on trial, and its own good gate decides. Done when it is
   marked good; if it is not, it comes back on the old release as STANDBY of an updated peer.

``update-abort`` stops it: before the STANDBY reboots, its install is called off (the running
slots stay); after that, nothing more is done (the STANDBY's good gate still decides its slot),
and the calls stay where they are. The update's progress (stage, percent, an estimate of the time
left) is the status key ``update.rolling`` and an alarm on the panel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firmware.core.alarms import Alarm
from firmware.core.cluster import ClusterState
from firmware.core.control import ControlError
from firmware.core.endpoints import SourceParams
from firmware.core.journal import read_json, write_atomically
from firmware.core.states import NodeState
from firmware.errors import TandemError
from firmware.update.bundle import UpdateError
from firmware.update.gate import left_because
from firmware.update.install import FINISHED, LocalInstall
from firmware.update.slots import Slots

log = logging.getLogger(__name__)

# Stage and its share of the whole, in percent (a rough measure of the time each takes).
STAGES: tuple[tuple[str, int], ...] = (("copy", 10), ("peer-install", 25), ("peer-boot", 25), ("handover", 5),
                                       ("install", 25), ("trial", 10))
POLL_S = 1.0
INSTALL_TIMEOUT_S = 1900.0  # the peer's install: the helper's own limit, and then some
BOOT_TIMEOUT_S = 1500.0  # the peer's reboot and good gate: the boot gate's 15-minute deadline, and a reboot back
SETTLE_TIMEOUT_S = 120.0  # after a restart: the node finds its peer again
MISSED_POLLS = 3  # unanswered looks at the peer before it is taken to be rebooting
PLAN_FILE = "rolling-update.json"


class StartParams(SourceParams):
    """``update-start``: the bundle (an absolute path, or a file name in this box's inbox)."""

    bundle: str


class PeerChannel(Protocol):
    """What the rolling update needs of the peer (the bulk channel's client); each call blocks."""

    def put(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Copy a file into the peer's inbox."""

    def call(self, request: dict[str, Any]) -> Any:
        """Run an update command on the peer."""

    def status(self) -> Any:
        """The peer's status snapshot."""


class StageFailed(TandemError):
    """A stage cannot go on: the update stops with this reason."""


@dataclass
class Plan:
    """A rolling update as saved on disk (``state_dir/rolling-update.json``)."""

    bundle: str
    version: str
    peer: str
    stage: str = "copy"
    started: float = field(default_factory=time.time)  # wall clock
    stage_started: float = field(default_factory=time.time)
    outcome: str | None = None  # done, failed or aborted
    reason: str | None = None
    # The update outcome each box's boot gate had on record before its install (`update.last`): what
    # comes after it is this update's (the result file has no update id of its own).
    peer_last_before: dict[str, str] | None = None
    own_last_before: dict[str, str] | None = None
    abort_requested: bool = False
    handover_ms: float | None = None  # the handover: from this box's demote to the peer announcing ACTIVE


def on_trial(update: dict[str, Any]) -> bool:
    """Whether a box's ``update`` status says it runs a slot on trial that has not passed its good gate."""
    return bool(update.get("trial")) and not (update.get("gate") or {}).get("passed")


def progress(plan: Plan, now: float) -> tuple[int, float | None]:
    """Percent done (stages passed) and an estimate of the seconds left (None until one stage is done)."""
    if plan.outcome == "done":
        return 100, 0.0
    done = 0
    for stage, share in STAGES:
        if stage == plan.stage:
            break
        done += share
    elapsed = max(0.0, now - plan.started)
    return done, (round(elapsed * (100 - done) / done) if done and plan.outcome is None else None)


class RollingUpdate:
    """Runs the stages of one rolling update at a time, on the node that was ACTIVE when it started."""

    def __init__(self, state_dir: Path, slots: Slots, install: LocalInstall, peer: Callable[[], PeerChannel],
                 view: Callable[[], ClusterState | None], peer_state: Callable[[], NodeState | None],
                 command: Callable[[str], Awaitable[Any]],
                 gate: Callable[[], dict[str, Any]], record: Callable[[str, dict[str, Any]], Any],
                 peer_name: str) -> None:
        """`peer()`: a channel to the peer (TandemError if there is none); `peer_state()`: the state the peer
        announces (None while it is not heard); `command(name)`: run an operator
        command here (``demote``, ``reboot``); `gate()`: this box's ``update`` status (the good gate's);
        `record`: the journal's."""
        self.path = state_dir / PLAN_FILE
        self.slots = slots
        self.install = install
        self.peer = peer
        self.view = view
        self.peer_state = peer_state
        self.command = command
        self.gate = gate
        self.record = record
        self.peer_name = peer_name
        self.plan: Plan | None = None
        self._task: asyncio.Task | None = None
        self._starting = asyncio.Lock()
        self._saving = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Go on with an update that was under way when the daemon stopped (e.g. this box's own reboot)."""
        try:
            saved = read_json(self.path)
            if saved is None:
                return
            self.plan = Plan(**saved)
        except (OSError, ValueError, TypeError) as exc:  # never keeps the daemon from starting
            log.error("update: %s is not a rolling update this release can read (%s); it is left alone", self.path,
                      exc)
            return
        if self.plan.outcome is None:
            log.info("update: going on with the rolling update to %s at stage %s", self.plan.version, self.plan.stage)
            self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        """Stop following the update (the daemon is going down; the plan on disk says where it was)."""
        if self._task is not None:
            self._task.cancel()

    @property
    def running(self) -> bool:
        """Whether an update is under way."""
        return self.plan is not None and self.plan.outcome is None

    # ------------------------------------------------------------------ commands

    async def begin(self, request: dict[str, Any]) -> dict[str, Any]:
        """The ``update-start`` command: check the bundle and the pair, then start (answered at once)."""
        if self._starting.locked():
            raise ControlError("an update is being started already")
        async with self._starting:  # one start at a time: the checks below wait on threads
            return await self._begin(request)

    async def _begin(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.running:
            assert self.plan is not None
            raise ControlError(f"an update to {self.plan.version} is under way ({self.plan.stage}); "
                               "`tandem update --abort` stops it")
        if self.install.running:
            raise ControlError("an install is under way on this box")
        bundle = self.install.resolve(request["bundle"])
        state = self.view()
        if state is None or state.state != NodeState.ACTIVE:
            raise ControlError(f"a rolling update starts on the ACTIVE node; this one is "
                               f"{state.state.name if state else 'starting'} (run it on {self.peer_name})")
        if not state.peer.alive or self.peer_state() != NodeState.STANDBY:
            raise ControlError(f"{self.peer_name} is not a STANDBY that answers: the pair cannot be updated in turn "
                               "(update a box on its own with --single)")
        if on_trial(self.gate()):
            raise ControlError("this box runs a slot on trial: it must pass its good gate before the next update")
        try:
            info = await asyncio.to_thread(self.slots.check, bundle)
            channel = self.peer()
            peer_status = await asyncio.to_thread(channel.status)
        except (UpdateError, TandemError, OSError) as exc:
            raise ControlError(f"update: {exc}") from None
        peer_update = peer_status.get("update") or {}
        if on_trial(peer_update):
            raise ControlError(f"{self.peer_name} runs a slot on trial: it must pass its good gate first")
        if (peer_update.get("rolling") or {}).get("outcome", "none") is None:
            raise ControlError(f"{self.peer_name} is running an update of its own")
        peer_job = peer_update.get("install") or {}
        if peer_job and peer_job.get("stage") not in FINISHED:
            raise ControlError(f"{self.peer_name} is installing {Path(peer_job.get('bundle', '?')).name} "
                               f"({peer_job.get('stage')}): wait for it to end")
        plan = Plan(str(bundle), info.version, self.peer_name, peer_last_before=peer_update.get("last"))
        try:  # on disk before the answer, or not started: a restart would lose it
            await asyncio.to_thread(write_atomically, self.path, json.dumps(asdict(plan), indent=1).encode())
        except OSError as exc:
            raise ControlError(f"update: cannot save {self.path}: {exc.strerror or exc}") from None
        self.plan = plan
        self.record("update.start", {"bundle": str(bundle), "version": info.version, "peer": self.peer_name})
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self.status()

    async def abort(self) -> str:
        """The ``update-abort`` command for the rolling update; what it does, in a sentence."""
        plan = self.plan
        if plan is None or plan.outcome is not None:
            raise ControlError("no rolling update is under way")
        if plan.stage == "trial":
            raise ControlError("too late: this box is rebooting into, or running, the new slot on trial "
                               "(its good gate decides)")
        # The stages see the flag: a waiting one within POLL_S, the others once their step is done (a
        # copy or an install on a thread cannot be stopped halfway).
        plan.abort_requested = True
        stage = plan.stage
        await self._save()
        if stage == "peer-install":
            try:
                said = await asyncio.to_thread(self.peer().call, {"cmd": "update-abort"})
            except (TandemError, OSError) as exc:
                if "no install is under way" in str(exc):
                    return f"stopped before {self.peer_name} installed anything"
                return (f"stopped; {self.peer_name} could not call its install off ({exc}): if it reboots into the "
                        "new slot, its good gate decides")
            return f"stopped; {self.peer_name}: {said}"
        return {"copy": "called off once the copy is done; nothing is installed",
                "peer-boot": f"stopped; {self.peer_name} is on its new slot on trial (its good gate decides)",
                "handover": "stopped after the handover",
                "install": "this box's install is called off once RAUC is done; its running slot stays",
                }.get(stage, "stopped")

    # ------------------------------------------------------------------ the stages

    async def _run(self) -> None:
        plan = self.plan
        assert plan is not None
        steps: dict[str, Callable[[Plan], Awaitable[str | None]]] = {
            "copy": self._copy, "peer-install": self._peer_install, "peer-boot": self._peer_boot,
            "handover": self._handover, "install": self._install, "trial": self._trial}
        order = [stage for stage, _ in STAGES]
        try:
            await self._settled()
            while plan.outcome is None:
                if plan.abort_requested and plan.stage != "trial":
                    await self._finish("aborted", f"called off at {plan.stage}")
                    return
                following = await steps[plan.stage](plan)
                if following is None:  # the last stage is done
                    await self._finish("done", None)
                    return
                assert following in order
                plan.stage, plan.stage_started = following, time.time()
                await self._save()
                self.record("update.stage", {"stage": following, "version": plan.version})
                log.info("update: stage %s", following)
        except StageFailed as exc:
            await self._finish("aborted" if plan.abort_requested else "failed", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug stops the update with its reason; the calls stay where they are
            log.exception("update: the rolling update failed")
            await self._finish("failed", f"internal error: {exc}")

    async def _peer_call(self, what: str, call: Callable[[PeerChannel], Any]) -> Any:
        try:
            channel = self.peer()
            return await asyncio.to_thread(call, channel)
        except (TandemError, OSError) as exc:
            raise StageFailed(f"{what}: {exc}") from None

    async def _settled(self) -> None:
        """Wait (bounded) until this node is STANDBY or ACTIVE and hears its peer: after a restart of the
        daemon, a stage must not judge the pair before the node has found it again."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self.view()
            if (state is not None and state.state in (NodeState.STANDBY, NodeState.ACTIVE)
                    and self.peer_state() is not None):
                return
            await asyncio.sleep(POLL_S)

    async def _peer_update(self) -> dict[str, Any] | None:
        """The peer's ``update`` status section, after a pause of POLL_S (None while it does not answer)."""
        await asyncio.sleep(POLL_S)
        try:
            status = await asyncio.to_thread(lambda: self.peer().status())
        except (TandemError, OSError):
            return None
        return status.get("update") or {}

    async def _peer_answer(self) -> dict[str, Any]:
        """The peer's ``update`` status section once it answers (StageFailed if it does not within
        SETTLE_TIMEOUT_S): what it says decides whether to ask it for anything."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            update = await self._peer_update()
            if update is not None:
                return update
        raise StageFailed(f"{self.peer_name} does not answer on the bulk channel")

    async def _copy(self, plan: Plan) -> str:
        bundle = Path(plan.bundle)
        await self._peer_call(f"copying {bundle.name} to {self.peer_name}", lambda c: c.put(bundle, bundle.name))
        return "peer-install"

    async def _peer_install(self, plan: Plan) -> str:
        name = Path(plan.bundle).name
        # The peer's install and reboot may both be over before the next look: what tells this update's
        # outcome from an earlier one is that it came after `peer_last_before` (read at the start).
        update = await self._peer_answer()
        job = update.get("install") or {}
        if update.get("last") != plan.peer_last_before:
            return "peer-boot"  # its install has begun already (this daemon restarted since it asked)
        if Path(job.get("bundle", "")).name != name or job.get("stage") in FINISHED:
            if plan.abort_requested:
                raise StageFailed(f"called off before {self.peer_name} was asked to install")
            await self._peer_call(f"{self.peer_name} refused the install",
                                  lambda c: c.call({"cmd": "update-install", "bundle": name, "mode": "pair",
                                                    "reboot": True}))
        deadline, missed = time.monotonic() + INSTALL_TIMEOUT_S, 0
        while time.monotonic() < deadline:
            update = await self._peer_update()
            if update is None:
                missed += 1
                if missed >= MISSED_POLLS:
                    return "peer-boot"  # it stopped answering: it is rebooting
                continue
            missed = 0
            job = update.get("install")
            if job is None or Path(job.get("bundle", "")).name != name:
                return "peer-boot"  # a daemon that knows of no such install: it has rebooted already
            if job.get("stage") == "failed":
                raise StageFailed(f"{self.peer_name} could not install the bundle: {job.get('error')}")
            if job.get("stage") == "aborted":
                raise StageFailed(f"{self.peer_name}'s install was called off; its running slot stays")
            if job.get("stage") == "rebooting":
                return "peer-boot"
        raise StageFailed(f"{self.peer_name} did not finish its install within {INSTALL_TIMEOUT_S:g} s")

    async def _peer_boot(self, plan: Plan) -> str:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if plan.abort_requested:
                raise StageFailed("called off at peer-boot")
            update = await self._peer_update()
            if update is None:
                continue  # still rebooting
            last = update.get("last") or {}
            if last == (plan.peer_last_before or {}):
                continue  # nothing of this update's yet
            if last.get("event") == "good":
                return "handover"
            if last.get("event") in ("rolled-back", "deadline", "daemon-failed", "install-failed", "aborted"):
                raise StageFailed(f"{self.peer_name} did not keep the new slot ({last.get('event')}"
                                  f"{left_because(last)} at {last.get('at', '?')}): it runs its old release again, "
                                  "and this box kept the calls")
        raise StageFailed(f"{self.peer_name} was not marked good within {BOOT_TIMEOUT_S:g} s of its reboot")

    async def _handover(self, plan: Plan) -> str:
        state = self.view()
        if state is not None and state.state == NodeState.STANDBY and self.peer_state() == NodeState.ACTIVE:
            return "install"  # the calls are with the updated peer already (a failover, or a handover before)
        began = time.monotonic()
        try:
            reply = await self.command("demote")
        except ControlError as exc:
            raise StageFailed(f"the handover to {self.peer_name} was refused: {exc}") from None
        outcome = str((reply.get("result") or {}).get("outcome", ""))
        if not outcome.endswith("is ACTIVE"):
            raise StageFailed(f"the handover to {self.peer_name} did not complete: {outcome}")
        plan.handover_ms = round((time.monotonic() - began) * 1000, 1)
        self.record("update.handover", {"peer": self.peer_name, "ms": plan.handover_ms})
        return "install"

    async def _install(self, plan: Plan) -> str:
        state = self.view()
        if state is None or state.state.holds_resources:
            return "handover"  # the calls came back (failback) since the handover: hand them over again
        plan.own_last_before = self.gate().get("last")
        await self._save()
        try:
            await asyncio.to_thread(self.slots.install, Path(plan.bundle), "pair")
        except UpdateError as exc:
            raise StageFailed(f"this box could not install the bundle: {exc}; {self.peer_name} holds the calls "
                              "on the new release, this box stays on the old one") from None
        if plan.abort_requested:
            await self._undo_install()
            raise StageFailed("called off after this box's install: its running slot stays")
        return "trial"

    async def _undo_install(self) -> None:
        """Call this box's install off (``bootgate abort``): the running slot stays first."""
        try:
            await asyncio.to_thread(self.slots.abort)
        except UpdateError as exc:
            raise StageFailed(f"calling this box's install off failed: {exc}; it boots the new slot on trial at "
                              "its next reboot") from None

    async def _trial(self, plan: Plan) -> str | None:
        # The boot gate's result file tells where this box is: `begin` (written by the install) until the
        # new slot passes (`good`) or is left (`rolled-back`, `deadline`); the daemon's gate says whether the
        # slot it booted is on trial now (a trial of an earlier update stays in its status, passed).
        while True:
            gate = self.gate()
            last = gate.get("last") or {}
            if last == (plan.own_last_before or {}):
                raise StageFailed("this box's install left no outcome in the boot gate's result file")
            if last.get("event") == "good":
                return None
            if last.get("event") != "begin":
                raise StageFailed(f"this box did not keep the new slot ({last.get('event')}{left_because(last)} at "
                                  f"{last.get('at', '?')}):"
                                  f" it runs its old release as STANDBY; {self.peer_name} holds the calls on the "
                                  "new one")
            if not on_trial(gate):
                break
            await asyncio.sleep(POLL_S)  # booted on trial: its good gate decides
        # Installed, not booted yet: reboot into the slot on trial; the saved plan goes on after it.
        self.record("update.reboot", {"version": plan.version})
        try:
            await self.command("reboot")
        except ControlError as exc:
            await self._undo_install()
            raise StageFailed(f"this box could not reboot into the new slot: {exc}; the install is undone, "
                              "the running slot stays") from None
        await asyncio.Event().wait()  # the daemon leaves; this stage goes on after the reboot
        return None

    # ------------------------------------------------------------------ bookkeeping

    async def _finish(self, outcome: str, reason: str | None) -> None:
        plan = self.plan
        assert plan is not None
        plan.outcome, plan.reason = outcome, reason
        await self._save()
        self.record(f"update.{outcome}", {"version": plan.version, "stage": plan.stage, "reason": reason})
        (log.info if outcome == "done" else log.error)("update: rolling update to %s %s%s", plan.version, outcome,
                                                       f" at {plan.stage}: {reason}" if reason else "")

    async def _save(self) -> None:
        """The plan onto disk, off the heartbeat loop; a failure is logged and the update goes on (after a
        restart it would not)."""
        assert self.plan is not None
        async with self._saving:  # one write at a time: they share the temporary file
            try:
                await asyncio.to_thread(write_atomically, self.path,
                                        json.dumps(asdict(self.plan), indent=1).encode())
            except OSError as exc:
                log.error("update: cannot save %s: %s", self.path, exc)

    def status(self) -> dict[str, Any] | None:
        """The ``update.rolling`` status key (None: no rolling update on record)."""
        plan = self.plan
        if plan is None:
            return None
        percent, eta = progress(plan, time.time())
        return {"version": plan.version, "bundle": plan.bundle, "peer": plan.peer, "stage": plan.stage,
                "stages": [stage for stage, _ in STAGES], "percent": percent, "eta_s": eta,
                "started": plan.started, "outcome": plan.outcome, "reason": plan.reason,
                "handover_ms": plan.handover_ms}

    def alarms(self) -> list[Alarm]:
        """A warning while the update runs (its stage and percent) and after it failed."""
        plan = self.plan
        if plan is None:
            return []
        if plan.outcome is None:
            percent, _ = progress(plan, time.time())
            return [Alarm("update", "warning", f"updating the pair to {plan.version}: {plan.stage} ({percent}%)")]
        if plan.outcome == "failed":
            return [Alarm("update", "warning", f"the update to {plan.version} stopped at {plan.stage}: {plan.reason}")]
        return []
