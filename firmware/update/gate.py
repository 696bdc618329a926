"""The good gate: a slot an update installed is marked good only once Tandem on it has proven itself.

Marking a new slot good as soon as it boots makes rollback worthless. At boot, the boot gate
(``/usr/libexec/tandem/bootgate``, a systemd unit, no Tandem code) names the slot on trial in
``[update] trial_flag``. While that file names a slot, this gate watches the node. It must be:

* STANDBY or ACTIVE;
* joined with its peer on every configured link (each carries heartbeats both ways);
* healthy (its health at or above the critical level).

A box updated on its own (``tandem update --single``: the flag says ``single``) has no peer to
join: only the first and the last count.

Once all of them have held for ``good_after_s`` without a break, it runs ``mark_good`` (``bootgate
pass`` through the privileged helper), once; a failed run is tried again every `RETRY_S`. Any
break starts the count again. A slot that never passes is left by the boot gate's timer, which
reboots the box whatever this daemon does, and GRUB takes it back to the slot it came from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.config.node import UpdateConfig
from firmware.core.actions.service import run_command
from firmware.core.alarms import Alarm
from firmware.core.cluster import ClusterState, Settings
from firmware.core.cluster.election import healthy
from firmware.core.states import NodeState

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
RETRY_S = 30.0
MARK_GOOD_TIMEOUT_S = 60.0


def not_proven(settings: Settings, state: ClusterState | None, health: int, single: bool = False) -> str | None:
    """Why the node does not count as proven at this instant (for the gate), or None if it does.

    `single`: updated on its own, so its peer does not count.
    """
    if state is None or state.state not in (NodeState.STANDBY, NodeState.ACTIVE):
        return f"{state.state.name if state else 'not started'}, not STANDBY or ACTIVE"
    if not single:
        if not state.peer.alive:
            return f"{settings.peer} not heard"
        down = [link.name for link in state.peer.links if not (link.rx and link.tx)]
        if down:
            return f"{', '.join(down)} not carrying heartbeats both ways"
    if not healthy(health, settings):
        return f"health {health} below {settings.critical_health}"
    return None


def read_key_values(path: Path) -> dict[str, str] | None:
    """A ``key=value`` file (the boot gate's result), or None if there is none or it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


CAUSES = {"deadline": "not in time", "daemon-failed": "Tandem could not run on it"}
"""Why the boot gate left a slot on trial (its result file's ``cause``), in an operator's words."""


def left_because(last: dict[str, str]) -> str:
    """`` (why)`` for a boot gate result that names its cause; empty if it names none."""
    cause = last.get("cause")
    return f" ({CAUSES.get(cause, cause)})" if cause else ""


class GoodGate:
    """Watches a node running a slot on trial and marks the slot good once the node has proven itself."""

    def __init__(self, config: UpdateConfig, settings: Settings, view: Callable[[], tuple[ClusterState | None, int]],
                 record: Callable[[str, dict[str, Any]], Any], clock: Callable[[], float]) -> None:
        """`view()`: the node's cluster state and health now; `record`: the journal's; `clock`: monotonic."""
        self.config = config
        self.settings = settings
        self.view = view
        self.record = record
        self.clock = clock
        self.trial: str | None = None  # the slot on trial, read once at start
        self.single = False  # ... updated on its own (no peer to join)
        self.passed = False
        self.blocker: str | None = "not checked yet"
        self.proven_since: float | None = None
        self.failure: str | None = None  # the last failed mark_good run
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Read which slot is on trial; watch the node if one is."""
        try:
            words = self.config.trial_flag.read_text(encoding="utf-8", errors="replace").split()
            self.trial = words[0] if words else None
            self.single = words[1:2] == ["single"]
        except FileNotFoundError:
            self.trial = None
        except OSError as exc:
            log.error("update: cannot read %s: %s; no slot is taken to be on trial", self.config.trial_flag, exc)
            self.trial = None
        if self.trial is not None:
            log.info("update: slot %s is on trial: marked good after %g s %s", self.trial,
                     self.config.good_after_s, self._needs())
            self.record("update.trial", {"slot": self.trial, "single": self.single,
                                         "good_after_s": self.config.good_after_s})
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while not self.passed:
            self.check()
            if self.proven_since is not None and self.clock() - self.proven_since >= self.config.good_after_s:
                await self._mark_good()
                if not self.passed:
                    await asyncio.sleep(RETRY_S)
                    continue
            await asyncio.sleep(CHECK_EVERY_S)

    def check(self) -> None:
        """Look at the node now: start, keep or break the count."""
        state, health = self.view()
        self.blocker = not_proven(self.settings, state, health, self.single)
        if self.blocker is not None:
            self.proven_since = None
        elif self.proven_since is None:
            self.proven_since = self.clock()

    async def _mark_good(self) -> None:
        held = round(self.clock() - (self.proven_since or self.clock()), 1)
        code, output = await run_command(self.config.mark_good, MARK_GOOD_TIMEOUT_S)
        if code == 0:
            self.passed, self.failure = True, None
            log.info("update: slot %s passed the good gate (%g s joined and healthy): marked good", self.trial, held)
            self.record("update.good", {"slot": self.trial, "held_s": held})
            return
        self.failure = output or f"exit status {code}"
        log.error("update: marking slot %s good failed: %s; trying again in %g s", self.trial, self.failure, RETRY_S)
        self.record("update.mark_good_failed", {"slot": self.trial, "error": self.failure})

    def status(self) -> dict[str, Any]:
        """The ``update`` status section: the slot on trial and the gate's progress, and the last outcome."""
        gate: dict[str, Any] | None = None
        if self.trial is not None:
            held = 0.0 if self.proven_since is None else round(self.clock() - self.proven_since, 1)
            gate = {"passed": self.passed, "single": self.single, "held_s": held, "needed_s": self.config.good_after_s,
                    "waiting_for": None if self.passed else self.blocker, "error": self.failure}
        return {"update": {"trial": self.trial, "gate": gate, "last": read_key_values(self.config.result_file)}}

    def alarms(self) -> list[Alarm]:
        """A warning while the slot is on trial (critical if marking it good failed: the box will leave it),
        and one while the last update's slot was not kept (until the next update begins)."""
        if self.trial is None or self.passed:
            last = read_key_values(self.config.result_file) or {}
            if last.get("event") != "rolled-back":
                return []
            return [Alarm("update", "warning", f"the last update did not stay: slot {last.get('slot', '?')} was "
                                               f"not marked good{left_because(last)}, and at {last.get('at', '?')} the"
                                               f" box went back to slot {last.get('running', '?')} "
                                               "(journalctl -u tandem-bootgate)")]
        if self.failure is not None:
            return [Alarm("update", "critical", f"slot {self.trial} proved itself but could not be marked good "
                                                f"({self.failure}): the boot gate will take the box back to the "
                                                "other slot")]
        return [Alarm("update", "warning", f"slot {self.trial} is on trial: marked good after "
                                           f"{self.config.good_after_s:g} s {self._needs()} "
                                           f"(now: {self.blocker or 'counting'})")]

    def _needs(self) -> str:
        return "healthy (updated on its own)" if self.single else "joined on every link and healthy"
