"""Letting go of everything a node holds while its daemon is not running: `tandem release`.

systemd runs it after the daemon stopped, whatever the reason (the unit's
``ExecStopPost=``), and the simulated rack's supervisor does the same for a
daemon that died, so a crash, a kill or a failed start never leaves the
shared IP, the PBX or the trunk relays held by a box whose daemon is gone.

The order is the one `ActionPlan.release` keeps: the relays open first (they
open as soon as their banks are opened, which de-energizes every channel),
then the PBX stops (cold mode), then the shared IPs go. The standby reads
"the address is free" as "everything is free", so the address is the last
thing let go. Nothing here needs the daemon or its hooks; every action has
the plan's timeout, and a relay bank that cannot be opened does not stop the
rest from being released.
"""

from __future__ import annotations

import asyncio
import fcntl
from typing import Any

from firmware.config import ReleaseConfig
from firmware.core.actions import ActionOutcome, ActionPlan, PlanResult, build_plan
from firmware.core.actions.hooks import HookRunner
from firmware.core.actions.relays import open_banks
from firmware.core.journal import Journal
from firmware.drivers import load_driver
from firmware.errors import ConfigError


def release_node(config: ReleaseConfig, source: str) -> PlanResult:
    """Release the node's relays, PBX and shared IPs (in that order); journal what was found as `release`.

    ``source`` says who asked (``guardian``, ``systemd``, ``supervisor``, ``cli``) for the journal. One
    release at a time per node (a lock in the state directory): the guardian's and systemd's, started
    together after a crash, run one after the other, and the second finds nothing.
    """
    config.node.state_dir.mkdir(parents=True, exist_ok=True)
    with open(config.node.state_dir / "release.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _release(config, source)


def _release(config: ReleaseConfig, source: str) -> PlanResult:
    banks: dict[str, Any] = {}
    failed: list[ActionOutcome] = []
    try:
        banks = open_banks(config.board.relays, "relays", config.board_path, load_driver)
        feedback = open_banks(config.board.feedback, "feedback", config.board_path, load_driver)
    except ConfigError as exc:
        for bank in banks.values():
            bank.release()
        banks, feedback = {}, {}
        failed = [ActionOutcome(f"relays {group.name}", "relays", False, f"relay bank not opened: {exc}")
                  for group in config.node.relay_groups]
    try:
        network = load_driver(config.board.network, "network", config.board_path) if config.node.shared_ips else None
        plan = build_plan(config, network, HookRunner(None), dict, banks, feedback)
        if failed:
            plan = ActionPlan([a for a in plan.actions if a.kind != "relays"], plan.timeout)
        result = asyncio.run(plan.release())
    finally:
        for bank in [*banks.values(), *feedback.values()]:
            bank.release()
    if failed:
        result = ActionPlan.result_of(failed + list(result.outcomes), [])
    journal = Journal(config.node.state_dir, config.node.journal.max_bytes, config.node.journal.keep)
    try:
        journal.record("release", {"source": source, **result.release_record()})
    finally:
        journal.close()
    return result
