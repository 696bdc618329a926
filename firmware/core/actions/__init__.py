"""Takeover actions run when the node promotes (TAKEOVER) and demotes (RELEASING).

The daemon runs the plan's `promote()` on entering TAKEOVER and `demote()` on
entering RELEASING, off the heartbeat path, and tells the decision core when
they finished. Concrete actions (shared IP, PBX service, relays, hooks) plug
in here as `Action` objects; the plan runs them in order on promote and in
reverse order on demote.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class Action(Protocol):
    """One idempotent takeover action."""

    name: str

    async def ensure_present(self) -> None:
        """Acquire the resource (idempotent)."""

    async def ensure_absent(self) -> None:
        """Release the resource (idempotent)."""


@dataclass(frozen=True)
class ActionOutcome:
    """What happened to one action."""

    action: str
    ok: bool
    detail: str


class ActionPlan:
    """An ordered list of actions, each with a timeout."""

    def __init__(self, actions: list[Action] | None = None, timeout: float = 10.0) -> None:
        self.actions = list(actions or [])
        self.timeout = timeout

    async def promote(self) -> list[ActionOutcome]:
        """Run every action's ensure_present, in order."""
        return [await self._run(a, a.ensure_present) for a in self.actions]

    async def demote(self) -> list[ActionOutcome]:
        """Run every action's ensure_absent, in reverse order."""
        return [await self._run(a, a.ensure_absent) for a in reversed(self.actions)]

    async def _run(self, action: Action, method) -> ActionOutcome:  # noqa: ANN001 - bound method
        try:
            await asyncio.wait_for(method(), self.timeout)
        except asyncio.TimeoutError:
            return ActionOutcome(action.name, False, f"timed out after {self.timeout:g} s")
        except Exception as exc:  # an action's failure is reported, never fatal
            log.exception("action %s failed", action.name)
            return ActionOutcome(action.name, False, str(exc))
        return ActionOutcome(action.name, True, "done")
