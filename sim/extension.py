"""The simulator's fault injection, plugged into a node through its board profile.

The simulator board profiles name :func:`install` in ``extensions``; the
composition root (firmware/node.py) calls it with the composed node. It adds
control commands that only make sense on simulated hardware:

* ``sim.stall {seconds}``: block the daemon's event loop (a stalled daemon);
* ``sim.contact {input, value}``: stick a relay's feedback contact on/off, or clear it;
* ``sim.health {value}``: pin the health score (None: follow the sensors again);
* ``sim.set {target, settings}``: a chassis fault (``psu1 ac=lost``);
* ``panel.press {key, action, seconds}``: press, release, click or hold a front-panel key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from pydantic import Field

from firmware.core.actions.relays import parse_ref
from firmware.core.control import ControlError
from firmware.core.endpoints import Params
from firmware.node import Node
from sim.chassis import SimChassis
from sim.panelkeys import Finger, find_source
from sim.relaysim import ContactSense

MAX_STALL_S = 30.0
MAX_HOLD_S = 30.0


class StallParams(Params):
    """``sim.stall``: block the event loop this long (capped at MAX_STALL_S)."""

    seconds: Annotated[float, Field(ge=0)] = 1.0


class ContactParams(Params):
    """``sim.contact``: stick a simulated feedback input (``bank:channel``) on or off; null clears it."""

    input: Annotated[str, Field(max_length=64)]
    value: bool | None = None


class HealthParams(Params):
    """``sim.health``: pin the health score (0-100); null follows the sensors again."""

    value: Annotated[int, Field(ge=0, le=100)] | None = None


class SetParams(Params):
    """``sim.set``: a chassis fault, e.g. target ``psu1`` with settings ``{"ac": "lost"}``."""

    target: Annotated[str, Field(max_length=64)]
    settings: dict[str, str]


class PressParams(Params):
    """``panel.press``: a simulated front-panel key."""

    key: Annotated[str, Field(max_length=32)]
    action: Literal["press", "release", "click", "hold"] = "click"
    seconds: Annotated[float, Field(ge=0)] = 1.0


def install(node: Node) -> None:
    """Register the simulator's commands on ``node``."""
    daemon = node.daemon
    endpoints, journal, monitoring = daemon.endpoints, daemon.journal, daemon.monitoring
    pinned: dict[str, int | None] = {"health": None}

    def stall(request: dict[str, Any]) -> str:
        seconds = min(request["seconds"], MAX_STALL_S)
        journal.record("sim.stall", {"seconds": seconds})
        time.sleep(seconds)  # deliberately blocks the event loop: a fault injection
        return f"stalled the event loop for {seconds:g} s"

    def contact(request: dict[str, Any]) -> str:
        ref, value = request["input"], request["value"]
        banks = daemon.takeover.feedback_banks
        try:
            bank, channel = parse_ref(ref)
            sense = banks[bank]
        except (ValueError, KeyError):
            raise ControlError(f"no simulated feedback input {ref!r} (banks: {', '.join(banks)})") from None
        if not isinstance(sense, ContactSense):
            raise ControlError(f"feedback bank {bank!r} is not simulated")
        sense.inject(channel, value)
        journal.record("sim.contact", {"input": ref, "stuck": value})
        return f"{ref} {'cleared' if value is None else 'stuck ' + ('on' if value else 'off')}"

    def health(request: dict[str, Any]) -> str:
        value = request["value"]
        if value is None:  # back to the sensors' score
            pinned["health"] = None
            journal.record("health", {"health": monitoring.monitor.score, "source": "sensors"})
            monitoring.refresh()
            return f"health follows the sensors again ({monitoring.monitor.score})"
        pinned["health"] = value
        journal.record("health", {"health": value, "source": "simulator"})
        monitoring.refresh()
        return f"health set to {value}"

    def chassis_fault(request: dict[str, Any]) -> str:
        settings = request["settings"]
        host, target = monitoring.host, request["target"]
        if not isinstance(host, SimChassis):
            raise ControlError("this board's sensor host has nothing to inject into")
        try:
            detail = host.inject(target, settings)
        except (KeyError, ValueError) as exc:
            raise ControlError(str(exc).strip("'\"")) from None
        journal.record("sim.set", {"target": target, "settings": settings})
        monitoring.poll_now()
        return detail or f"{target}: set {settings}"

    async def press(request: dict[str, Any]) -> str:
        if node.panel is None:
            raise ControlError("this node has no front panel (none in the board profile, or [panel] enabled = false)")
        key, action = request["key"].lower(), request["action"]
        try:
            source = find_source(node.panel.keys, key)
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        if not isinstance(source, Finger):
            raise ControlError(f"panel key {key!r} is not simulated: it cannot be pressed from here")
        if action in ("press", "click", "hold"):
            source.inject(key, "press")
        if action == "hold":
            await asyncio.sleep(min(request["seconds"], MAX_HOLD_S))
        if action in ("release", "click", "hold"):
            source.inject(key, "release")
        return f"{key} {action}"

    monitoring.add_adjuster(lambda score: score if pinned["health"] is None else pinned["health"])
    endpoints.add_command("sim.stall", stall, StallParams)
    endpoints.add_command("sim.contact", contact, ContactParams)
    endpoints.add_command("sim.health", health, HealthParams)
    endpoints.add_command("sim.set", chassis_fault, SetParams)
    endpoints.add_command("panel.press", press, PressParams)
