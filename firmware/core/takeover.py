"""Carrying out the decision core's effects: the promote and demote actions, and the relay banks.

The core says "run the promote actions" or "run the demote actions" for one
transition; :class:`TakeoverRunner` runs the node's :class:`ActionPlan` off the
heartbeat path, one plan at a time, and reports the outcome back as an
:class:`~firmware.core.cluster.ActionsReport`. It also owns what the actions
need beyond one run:

* the relay and feedback banks, opened with every channel de-energized (the
  safe state) before anything else, and released on every way out;
* the release of whatever a crashed run left behind, before the node joins;
* a watch on every relay bank (reopen a lost one; once it is back while
  ACTIVE, put the relays back in the ACTIVE position behind the interlock);
* the stall fence's last resort: release the relays from another thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from firmware.config import Config
from firmware.core.actions import ActionError, ActionPlan, build_plan
from firmware.core.actions.hooks import HookRunner
from firmware.core.actions.relays import RelayAction, open_banks
from firmware.core.actions.sharedip import SharedIpAction
from firmware.core.alarms import Alarm
from firmware.core.cluster import ActionsReport
from firmware.core.journal import Journal
from firmware.core.states import NodeState
from firmware.drivers import load_driver
from firmware.drivers.relays.base import RelayDriver
from firmware.errors import ConfigError

log = logging.getLogger(__name__)

BANK_CHECK_S = 1.0


class TakeoverRunner:
    """Runs promote and demote plans one at a time and owns the relay banks they switch."""

    def __init__(self, config: Config, journal: Journal, hooks: HookRunner,
                 hook_environment: Callable[[], dict[str, str]], interlock: Callable[[], str | None],
                 plan: ActionPlan | None = None) -> None:
        self.journal = journal
        self.stalls: Callable[[], int] = lambda: 0  # how often the stall fence fired (the daemon wires it)
        # Relay banks are opened (all channels de-energized: the safe state) before anything else runs.
        self.relay_banks = open_banks(config.board.relays, "relays", config.board_path, load_driver)
        self.feedback_banks = open_banks(config.board.feedback, "feedback", config.board_path, load_driver)
        if plan is None:
            network = load_driver(config.board.network, "network", config.board_path) if config.node.shared_ips else None
            plan = build_plan(config, network, hooks, hook_environment, self.relay_banks,
                              self.feedback_banks, interlock, journal.record)
        self.plan = plan
        try:
            self.plan.check()
        except ActionError as exc:
            self.release_banks()
            raise ConfigError(config.path, exc.key, str(exc)) from None
        self.relay_actions: list[RelayAction] = [a for a in plan.of_kind("relays") if isinstance(a, RelayAction)]
        self.shared_ip_actions = [a for a in plan.of_kind("shared_ip") if isinstance(a, SharedIpAction)]
        self.bank_ok: dict[str, bool] = {name: True for name in self.relay_banks}
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ running plans

    def start(self, state: NodeState, transition: int, reason: str, save_state: Callable[[], None],
              report: Callable[[ActionsReport], None]) -> None:
        """Run the promote (TAKEOVER) or demote (RELEASING) plan for ``transition``; ``report`` gets the outcome.

        One plan at a time: a demote that interrupts a promote cancels it and
        waits for it, so a late promote can never re-acquire what the demote released.
        """
        previous = self._task
        self._task = asyncio.ensure_future(self._run(state, transition, reason, previous, save_state, report))

    async def _run(self, state: NodeState, transition: int, reason: str, previous: asyncio.Task | None,
                   save_state: Callable[[], None], report: Callable[[ActionsReport], None]) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        # The new epoch and last_state go to disk alongside the actions, not before them: an fsync
        # must not delay the gratuitous ARP, and a restart releases leftovers whatever the file says.
        saved = asyncio.ensure_future(asyncio.to_thread(save_state))
        promoting = state == NodeState.TAKEOVER
        event = {"kind": "promote" if promoting else "demote", "transition": transition, "reason": reason}
        stalls = self.stalls()
        halt = (lambda: "this node's loop stalled during the takeover (the stall fence fired): the peer may "
                        "have taken over meanwhile" if self.stalls() > stalls else None)
        result = await (self.plan.promote(event, halt) if promoting else self.plan.demote(event))
        await saved
        for hook in result.hooks:
            self.journal.record("hook", hook.to_json())
        for outcome in result.outcomes:
            self.journal.record("action", {"action": outcome.action, "ok": outcome.ok, "detail": outcome.detail,
                                           "duration_ms": round(outcome.duration_ms, 1), "for": state.name})
        report(ActionsReport(transition, ok=result.ok, vetoed=result.vetoed, detail=result.detail,
                             relays_released=promoting or result.relays_ok))

    async def release_leftovers(self) -> None:
        """Before joining: release whatever a crashed run may have left (relays, PBX in cold mode, shared IPs)
        in the release order, and journal what was actually found."""
        if not self.plan.actions:
            return
        result = await self.plan.release()
        self.journal.record("startup.release", result.release_record())
        for action in self.plan.actions:
            try:
                await action.prepare()
            except ActionError as exc:
                self.journal.record("action", {"action": action.name, "ok": False, "detail": str(exc),
                                               "for": "STARTING"})

    # ------------------------------------------------------------------ relays

    def holding_relays(self) -> bool:
        """Whether any relay group is in its ACTIVE position."""
        return any(a.position == "active" for a in self.relay_actions)

    def release_relays_now(self) -> None:
        """The stall fence's last resort (runs on its own thread while the loop is stuck)."""
        for action in self.relay_actions:
            action.release_now()

    async def watch_banks(self, active: Callable[[], bool]) -> None:
        """Every second, off the loop: is each relay bank reachable? Reopen lost ones; while ``active()``,
        put the relays back in the ACTIVE position once a bank is back (behind the interlock)."""
        while True:
            await asyncio.sleep(BANK_CHECK_S)
            for name, bank in list(self.relay_banks.items()):
                ok = await asyncio.to_thread(_probe_bank, bank)
                came_back = ok and not self.bank_ok.get(name, True)
                self.bank_ok[name] = ok
                if came_back:
                    await self._bank_back(name, active)

    async def _bank_back(self, name: str, active: Callable[[], bool]) -> None:
        self.journal.record("relay.bank", {"bank": name, "detail": "reachable again"})
        if not active():
            return
        for action in self.relay_actions:
            try:
                await action.ensure_present()
            except ActionError as exc:
                self.journal.record("action", {"action": action.name, "ok": False, "detail": str(exc), "for": "ACTIVE"})

    def release_banks(self) -> None:
        """Every relay to its safe (de-energized) state and the lines handed back (idempotent)."""
        for bank in list(self.relay_banks.values()) + list(self.feedback_banks.values()):
            bank.release()
        self.relay_banks, self.feedback_banks = {}, {}

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The status snapshot's ``shared_ips``, ``service`` and ``relays`` keys."""
        service = self.plan.of_kind("service")
        return {"shared_ips": [a.status() for a in self.plan.of_kind("shared_ip")],
                "service": service[0].status() if service else None,
                "relays": [a.status() for a in self.relay_actions]}

    def alarms(self) -> list[Alarm]:
        """A relay group whose contacts disagree, a relay bank that cannot be reached."""
        found = [Alarm(f"relays:{a.group.name}", "critical", f"relays {a.group.name}: {a.mismatch}")
                 for a in self.relay_actions if a.mismatch]
        found += [Alarm(f"relay-bank:{name}", "critical",
                        f"relay bank {name} ({bank.name}) is not reachable; retrying every {BANK_CHECK_S:g} s")
                  for name, bank in self.relay_banks.items() if not self.bank_ok.get(name, True)]
        return found


def _probe_bank(bank: RelayDriver) -> bool:
    """Whether a relay bank answers (reopening it if it was lost); runs in a worker thread."""
    try:
        if bank.connected:
            return True
        bank.open()
        return bool(bank.connected)
    except Exception:
        return False

