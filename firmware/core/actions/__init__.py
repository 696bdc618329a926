"""Takeover actions run when the node promotes (TAKEOVER) and demotes (RELEASING).

The daemon runs the plan's `promote()` on entering TAKEOVER and `demote()` on
entering RELEASING, off the heartbeat path, and tells the decision core how
it went. A plan is:

    promote: promote.before hooks (any non-zero exit vetoes the promotion),
             each action's ensure_present in the configured order,
             promote.after hooks
    demote:  demote.before hooks, each action's ensure_absent in reverse order,
             demote.after hooks
    release: what a node lets go of when its daemon is gone or starts again:
             the relays, then the PBX, then the shared IPs (`RELEASE_ORDER`),
             no hooks; each action first says whether it still held anything

Every action is idempotent and has a timeout; each outcome is journaled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from firmware.core.actions.hooks import HookResult, HookRunner
from firmware.errors import TandemError

log = logging.getLogger(__name__)


class ActionError(TandemError):
    """An action that could not do its job; the message goes to the journal and status.

    The message says what went wrong, not which action: the plan names the
    action (the journal's ``action`` field, ``"<action>: <message>"`` in details).

    ``key`` is the node-config key of the action that failed (``shared_ips``,
    ``relay_groups``, ``service``) once the plan has attributed the error.
    """

    def __init__(self, message: str, key: str = "") -> None:
        self.key = key
        super().__init__(message)


# Each action kind and the node-config key that configures it (for errors that name it).
CONFIG_KEYS = {"shared_ip": "shared_ips", "relays": "relay_groups", "service": "service"}

# A release lets the shared IPs go last: the standby reads "the address is free" as "everything is free".
RELEASE_ORDER = ("relays", "service", "shared_ip")


class Action(Protocol):
    """One idempotent takeover action."""

    name: str
    kind: str  # one of CONFIG_KEYS: what the action moves, for status and decisions (never parsed from name)

    def check(self) -> None:
        """At daemon start: raise ActionError if this action could never work here."""

    async def prepare(self) -> None:
        """At start-up, after leftovers were released and before joining (e.g. start a hot-standby PBX)."""

    async def ensure_present(self) -> None:
        """Acquire the resource (idempotent)."""

    async def ensure_absent(self) -> None:
        """Release the resource (idempotent)."""

    async def holds(self) -> bool | None:
        """Whether this box holds the resource right now, asked of the system (None: cannot tell)."""

    def status(self) -> dict[str, Any]:
        """What the status snapshot shows about it."""


@dataclass(frozen=True)
class ActionOutcome:
    """What happened to one action."""

    action: str
    kind: str
    ok: bool
    detail: str
    duration_ms: float = 0.0
    found: bool | None = None  # a release: whether the resource was still held (None: could not tell)


@dataclass(frozen=True)
class PlanResult:
    """The outcome of a whole promote or demote."""

    ok: bool
    vetoed: bool = False
    detail: str = ""
    outcomes: tuple[ActionOutcome, ...] = ()
    hooks: tuple[HookResult, ...] = field(default=())

    @property
    def relays_ok(self) -> bool:
        """Whether every relay group reached its position (a failed release keeps the peer's relays open)."""
        return all(o.ok for o in self.outcomes if o.kind == "relays")

    def release_record(self) -> dict[str, Any]:
        """A release for the journal: what was found held and let go, what could not be seen, what failed."""
        found = [o.action for o in self.outcomes if o.found and o.ok]
        unseen = [o.action for o in self.outcomes if o.found is None and o.ok]
        failed = [f"{o.action}: {o.detail}" for o in self.outcomes if not o.ok]
        parts = [f"let go of {', '.join(found)}"] if found else ["nothing found held"]
        if unseen:
            parts.append(f"made sure of {', '.join(unseen)} (cannot be read back)")
        if failed:
            parts.append(f"FAILED {'; '.join(failed)}")
        return {"ok": self.ok, "found": found, "unseen": unseen, "failed": failed, "detail": "; ".join(parts)}


class ActionPlan:
    """An ordered list of actions, each with a timeout, wrapped in before/after hooks."""

    def __init__(self, actions: list[Action] | None = None, timeout: float = 30.0,
                 hooks: HookRunner | None = None,
                 environment: Callable[[], dict[str, str]] = dict) -> None:
        self.actions = list(actions or [])
        self.timeout = timeout
        self.hooks = hooks or HookRunner(None)
        self.environment = environment

    def check(self) -> None:
        """Check every action at start-up; raises ActionError naming the first problem and its config key."""
        for action in self.actions:
            try:
                action.check()
            except ActionError as exc:
                raise ActionError(f"{action.name}: {exc}", key=exc.key or CONFIG_KEYS[action.kind]) from None

    def of_kind(self, kind: str) -> list[Action]:
        """The plan's actions of one kind (``shared_ip``, ``relays``, ``service``), in order."""
        return [a for a in self.actions if a.kind == kind]

    async def promote(self, event: dict[str, Any], halt: Callable[[], str | None] = lambda: None) -> PlanResult:
        """Run the promote sequence; a failing promote.before hook vetoes it before any action.

        `halt` is asked before each action: a reason stops the promote there (the
        actions not run fail with it), e.g. the loop stalled meanwhile and the peer
        may have taken over.
        """
        before = await self.hooks.run("promote.before", event, self.environment(), include_all=False)
        vetoes = [h for h in before if not h.ok]
        if vetoes:
            v = vetoes[0]
            return PlanResult(False, vetoed=True, hooks=tuple(before),
                              detail=f"promote.before hook {v.hook} exited {v.exit_code}: {v.output or 'no output'}")
        outcomes = []
        for action in self.actions:
            reason = halt()
            outcomes.append(ActionOutcome(action.name, action.kind, False, f"not run: {reason}") if reason
                            else await self._run(action, action.ensure_present))
        after = await self.hooks.run("promote.after", event, self.environment(), include_all=False)
        return self.result_of(outcomes, before + after)

    async def demote(self, event: dict[str, Any]) -> PlanResult:
        """Run the demote sequence (every action is attempted even if one fails)."""
        before = await self.hooks.run("demote.before", event, self.environment(), include_all=False)
        outcomes = [await self._run(a, a.ensure_absent) for a in reversed(self.actions)]
        after = await self.hooks.run("demote.after", event, self.environment(), include_all=False)
        return self.result_of(outcomes, before + after)

    async def release(self) -> PlanResult:
        """Let go of everything in `RELEASE_ORDER`, recording what each action found still held.

        Every action is attempted even if one fails; no hooks run (a release must
        not depend on anything but the resources themselves).
        """
        outcomes = []
        for kind in RELEASE_ORDER:
            for action in reversed(self.of_kind(kind)):
                found = await self._found(action)
                outcome = await self._run(action, action.ensure_absent)
                outcomes.append(replace(outcome, found=found))
        return self.result_of(outcomes, [])

    async def _found(self, action: Action) -> bool | None:
        try:
            return await asyncio.wait_for(action.holds(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - not knowing is an answer; the release goes on
            log.warning("%s: could not tell whether it is held: %s", action.name, exc)
            return None

    @staticmethod
    def result_of(outcomes: list[ActionOutcome], hooks: list[HookResult]) -> PlanResult:
        """The plan's result from its outcomes and hooks: ok when no action failed."""
        failed = [o for o in outcomes if not o.ok]
        detail = "; ".join(f"{o.action}: {o.detail}" for o in failed)
        return PlanResult(not failed, detail=detail, outcomes=tuple(outcomes), hooks=tuple(hooks))

    async def _run(self, action: Action, method: Callable[[], Any]) -> ActionOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(method(), self.timeout)
        except asyncio.TimeoutError:
            return ActionOutcome(action.name, action.kind, False, f"timed out after {self.timeout:g} s",
                                 (loop.time() - started) * 1000)
        except ActionError as exc:
            return ActionOutcome(action.name, action.kind, False, str(exc), (loop.time() - started) * 1000)
        except Exception as exc:  # a bug in one action is reported, never fatal
            log.exception("action %s failed", action.name)
            return ActionOutcome(action.name, action.kind, False, f"internal error: {exc}",
                                 (loop.time() - started) * 1000)
        return ActionOutcome(action.name, action.kind, True, "done", (loop.time() - started) * 1000)

    def status(self) -> list[dict[str, Any]]:
        """Status of every action."""
        return [a.status() for a in self.actions]


def build_plan(config: Any, network: Any, hooks: HookRunner, environment: Callable[[], dict[str, str]],
               relays: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
               interlock: Callable[[], str | None] = lambda: None,
               report: Callable[[str, dict[str, Any]], None] = lambda kind, data: None) -> ActionPlan:
    """The plan for a node config: shared IPs, relay groups and the PBX service in the configured order."""
    from firmware.core.actions.relays import RelayAction
    from firmware.core.actions.service import ServiceAction
    from firmware.core.actions.sharedip import SharedIpAction

    node = config.node
    groups: dict[str, list[Action]] = {
        "shared_ips": [SharedIpAction(ip, network) for ip in node.shared_ips],
        "relays": [RelayAction(group, relays or {}, inputs or {}, interlock, report) for group in node.relay_groups],
        "service": [ServiceAction(node.service)] if node.service.mode != "none" else [],
    }
    order = node.actions.order + [name for name in groups if name not in node.actions.order]
    actions = [a for name in order for a in groups[name]]
    timeout = max([node.service.timeout_ms / 1000 + node.service.ready_timeout_ms / 1000, 10.0])
    return ActionPlan(actions, timeout=timeout, hooks=hooks, environment=environment)
