"""Failover relays: trunk lines (T1/E1 PRI, analog FXO) switched to the ACTIVE node.

A relay group is a set of relay channels (on banks the board profile names)
that take one position while this node is ACTIVE and the other while it is not.
Break-before-make comes from the decision core: a node enters TAKEOVER only
after its peer has released (its demote actions, relays included, finished)
or has been declared dead. This action adds an interlock on top (it never
energizes while the peer reports holding resources on any link) and a settle
delay before closing. Optional contact-feedback inputs are read back after
every switch; a mismatch raises an alarm and, by configuration, blocks the
takeover.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from firmware.config import RelayGroupConfig
from firmware.core.actions import ActionError
from firmware.drivers.relays.base import RelayError

FEEDBACK_DELAY_S = 0.05  # contacts need a moment to follow the coil
TIMELINE_KEPT = 200


def parse_ref(ref: str) -> tuple[str, int]:
    """`bank:channel` → (bank, channel)."""
    bank, _, channel = ref.partition(":")
    return bank, int(channel)


class RelayAction:
    """Ensure-present (ACTIVE position) / ensure-absent (released position) of one relay group."""

    kind = "relays"

    def __init__(self, group: RelayGroupConfig, banks: dict[str, Any], inputs: dict[str, Any],
                 interlock: Callable[[], str | None], report: Callable[[str, dict[str, Any]], None]) -> None:
        self.group = group
        self.banks = banks
        self.inputs = inputs
        self.interlock = interlock
        self.report = report
        self.name = f"relays {group.name}"
        self.position: str | None = None  # "active" / "released"
        self.mismatch: str | None = None
        self.timeline: list[dict[str, Any]] = []

    def check(self) -> None:
        """At start-up: every referenced bank and channel exists."""
        for refs, banks, kind in ((self.group.outputs, self.banks, "relay bank"),
                                  (self.group.feedback, self.inputs, "feedback bank")):
            for ref in refs:
                bank, channel = parse_ref(ref)
                if bank not in banks:
                    raise ActionError(f"{ref}: no {kind} {bank!r} in the board profile")
                if not 1 <= channel <= banks[bank].channels:
                    raise ActionError(f"{ref}: {bank} has channels 1-{banks[bank].channels}")

    async def prepare(self) -> None:
        """Nothing to do before joining."""

    async def ensure_present(self) -> None:
        """After the settle delay, and only if the peer holds nothing, switch to the ACTIVE position."""
        self._refuse_if_peer_holds()
        await asyncio.sleep(self.group.settle_ms / 1000)
        self._refuse_if_peer_holds()  # the peer may have been heard again during the delay
        await self._switch(self.group.energized_when_active, "active")
        problem = await self._verify(self.group.energized_when_active)
        if problem and self.group.on_mismatch == "block":
            await self._switch(not self.group.energized_when_active, "released")
            raise ActionError(f"{problem}; takeover blocked (on_mismatch = block)")

    async def ensure_absent(self) -> None:
        """Switch to the released position (always allowed)."""
        await self._switch(not self.group.energized_when_active, "released")
        problem = await self._verify(not self.group.energized_when_active)
        if problem:
            raise ActionError(problem)

    async def holds(self) -> bool | None:
        """Whether a feedback contact reads the ACTIVE position; None without feedback contacts
        (a relay board that cannot be read back keeps no state a new process could ask)."""
        if not self.group.feedback:
            return None
        seen = []
        for ref in self.group.feedback:
            bank, channel = parse_ref(ref)
            try:
                seen.append(await asyncio.to_thread(self.inputs[bank].read, channel))
            except RelayError:
                return None
        return any(value == self.group.energized_when_active for value in seen)

    def _refuse_if_peer_holds(self) -> None:
        reason = self.interlock()
        if reason:
            raise ActionError(f"interlock: {reason}; relays stay open")

    async def _switch(self, energized: bool, position: str) -> None:
        # Releasing tries every output even if one fails: one dead bank must not keep another closed.
        releasing = energized != self.group.energized_when_active
        errors = []
        for ref in self.group.outputs:
            bank, channel = parse_ref(ref)
            try:
                await asyncio.to_thread(self.banks[bank].set, channel, energized)
            except RelayError as exc:
                errors.append(str(exc))
                if not releasing:
                    break
                continue
            self.timeline.append({"time": time.time(), "output": ref, "energized": energized})
        del self.timeline[:-TIMELINE_KEPT]
        if errors:
            raise ActionError("; ".join(errors))
        self.position = position

    def release_now(self) -> None:
        """From any thread, without the event loop: every output to the released position.

        Used by the stall fence while the loop is stuck; errors are swallowed (it is a last resort).
        """
        energized = not self.group.energized_when_active
        for ref in self.group.outputs:
            bank, channel = parse_ref(ref)
            try:
                self.banks[bank].set(channel, energized)
                self.timeline.append({"time": time.time(), "output": ref, "energized": energized})
            except (RelayError, ValueError):
                pass
        self.position = "released (stall fence)"

    async def _verify(self, energized: bool) -> str | None:
        """Read the feedback contacts back; record and report a mismatch."""
        if not self.group.feedback:
            return None
        await asyncio.sleep(FEEDBACK_DELAY_S)
        wrong = []
        for out_ref, in_ref in zip(self.group.outputs, self.group.feedback):
            bank, channel = parse_ref(in_ref)
            try:
                seen = await asyncio.to_thread(self.inputs[bank].read, channel)
            except RelayError as exc:
                wrong.append(f"{in_ref} unreadable ({exc})")
                continue
            if seen != energized:
                wrong.append(f"{out_ref} commanded {'on' if energized else 'off'} but contact {in_ref} "
                             f"reads {'on' if seen else 'off'}")
        problem = "feedback mismatch: " + "; ".join(wrong) if wrong else None
        if problem != self.mismatch:
            self.report("relay.mismatch" if problem else "relay.match",
                        {"group": self.group.name, "detail": problem or "feedback agrees again"})
        self.mismatch = problem
        return problem

    def status(self) -> dict[str, Any]:
        """For the status snapshot."""
        outputs = []
        for ref in self.group.outputs:
            bank, channel = parse_ref(ref)
            outputs.append({"output": ref, "energized": self.banks[bank].get(channel)})
        return {"group": self.group.name, "position": self.position, "outputs": outputs,
                "mismatch": self.mismatch, "timeline": self.timeline[-20:]}


def open_banks(specs: dict[str, dict[str, Any]], key: str, profile: Any, loader: Callable[..., Any]) -> dict[str, Any]:
    """Construct and open every bank the board profile names; errors name `key.<bank>`."""
    from firmware.errors import ConfigError

    banks: dict[str, Any] = {}
    try:
        for bank, params in specs.items():
            options = {k: v for k, v in params.items() if k != "driver"}
            driver = loader(params["driver"], f"{key}.{bank}", profile, **options)
            try:
                driver.open()
            except RelayError as exc:
                raise ConfigError(profile, f"{key}.{bank}", str(exc)) from None
            banks[bank] = driver
    except BaseException:
        for driver in banks.values():
            driver.release()
        raise
    return banks
