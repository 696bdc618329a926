"""Operator commands: promote, demote, maintenance, shutdown, power off and reboot.

Every front end (CLI, panel, remote console) sends these through the control
path, so the same safety checks apply everywhere: the decision core accepts or
refuses each one with its reason. An accepted command is answered once it has
taken effect (bounded by the handover and shutdown timeouts), with what
happened. ``poweroff`` and ``reboot`` leave the cluster exactly as ``shutdown``
does, then ask the board's power driver.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from firmware.core.actions.power import PowerError
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, SourceParams
from firmware.core.states import NodeState

if TYPE_CHECKING:
    from firmware.core.daemon import Daemon

CLUSTER_COMMANDS = ("promote", "demote", "shutdown", "maintenance-on", "maintenance-off")


class CommandParams(SourceParams):
    """An operator command's parameters: ``force`` (a JSON boolean) and who sent it."""

    force: bool = False


log = logging.getLogger(__name__)

POWER_COMMANDS = ("poweroff", "reboot")
EXIT_POWER_FAILED = 1  # the daemon's exit status when the power request after it left the cluster failed


class OperatorCommands:
    """Answers the operator commands on behalf of the daemon and runs the power request at exit."""

    def __init__(self, daemon: Daemon, power: Any) -> None:
        self.daemon = daemon
        self.power = power
        self.power_after: str | None = None  # poweroff/reboot, once the node has left the cluster
        daemon.at_exit(self._power_request)

    def register(self, endpoints: Endpoints) -> None:
        """The commands, each answered by :meth:`run`."""
        for name in CLUSTER_COMMANDS:
            endpoints.add_command(name, lambda request, name=name: self.run(name, request), CommandParams,
                                  journaled=True)
        for name in POWER_COMMANDS:
            endpoints.add_command(name, lambda request, name=name: self._power(name, request), CommandParams,
                                  journaled=True)

    async def run(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one command; answer once it took effect, or raise ControlError with the refusal."""
        reply = self.daemon.command(name, request["force"], request["source"])
        if not reply.ok:
            raise ControlError(reply.message)
        outcome = await self._outcome(name)
        state = self.daemon.state
        assert state is not None
        return {"message": reply.message, "outcome": outcome, "state": state.state.name}

    async def _power(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        # Leave the cluster exactly as `shutdown` does (same checks), then power off or reboot.
        previous, self.power_after = self.power_after, name
        try:
            return await self.run("shutdown", request)
        except ControlError:
            self.power_after = previous
            raise

    def _power_request(self) -> None:
        if self.power_after is None:
            return
        try:
            detail = self.power.request(self.power_after)
        except PowerError as exc:
            # Exit with a failure: systemd starts the daemon again and the node rejoins; staying out of
            # the cluster on a box that did not power off would leave it idle with no one told.
            log.error("%s was not done: %s; the daemon exits with a failure to be started again", self.power_after,
                      exc)
            self.daemon.journal.record("power", {"action": self.power_after, "detail": str(exc), "failed": True})
            self.daemon.exit_status = EXIT_POWER_FAILED
            return
        self.daemon.journal.record("power", {"action": self.power_after, "detail": detail})

    async def _outcome(self, name: str) -> str:
        """Wait (bounded) until a command has taken effect; describe what happened."""
        daemon, settings = self.daemon, self.daemon.settings

        def state() -> Any:
            assert daemon.state is not None
            return daemon.state

        limit = settings.handover_timeout_s + 2 * settings.deadtime_s + 1.0
        before = state()
        if name == "promote":
            done = await daemon.waiters.wait_for(lambda: state().state == NodeState.ACTIVE
                                         or state().request is None and not state().state.holds_resources,
                                         limit)
            if state().state == NodeState.ACTIVE:
                return "this node is ACTIVE"
            raise ControlError(f"promotion did not complete: {state().reason}" if done else
                               f"promotion did not complete within {limit:g} s: {state().reason}")
        if name in ("demote", "maintenance-on") and (before.state.holds_resources
                                                     or before.state == NodeState.RELEASING):
            await daemon.waiters.wait_for(lambda: not state().state.holds_resources, limit)
            if await daemon.waiters.wait_for(self._peer_active, limit):
                return f"{settings.peer} is ACTIVE"
            return f"this node released; {settings.peer} has not taken over ({state().reason})"
        if name == "shutdown":
            await daemon.waiters.wait_for(lambda: state().state == NodeState.STOPPED, settings.shutdown_timeout_s + limit)
            return "left the cluster"
        return state().reason

    def _peer_active(self) -> bool:
        message = self.daemon.peer_message()
        return message is not None and message.state == NodeState.ACTIVE
