"""The lab's command language, shared by the interactive view and scenario files.

    cut serial|net [alpha->bravo]     restore serial|net [alpha->bravo]
    noise [BYTES]                     witness down|up
    kill NODE   start NODE   term NODE (SIGTERM)
    release NODE                      (`tandem release` for a node whose daemon is not running)
    unplug NODE   plug NODE           (the node's LAN cable: the shared addresses' LAN)
    switch hang|ok                    (the LAN switch hangs: links stay up, nothing passes)
    power NODE off|on                 (through the box's simulated BMC with ipmitool; on boots its daemon)
    promote NODE [--force]   demote NODE [--force]   shutdown NODE [--force]
    maintenance NODE on|off           health NODE 0-100
    stuck NODE INPUT on|off|clear     (a relay feedback contact, e.g. stuck alpha trunk-sense:1 off)
    set NODE DEVICE KEY=VALUE…        (chassis fault, e.g. set alpha psu1 ac=lost; set alpha inlet temp=55)
    press NODE KEY… [--hold S]        (front-panel keys: up down enter back; --hold for hold-to-confirm)
    silence NODE                      (silence the node's alarms)
"""

from __future__ import annotations

import shlex
import signal

from firmware.core.control import ControlError
from sim.rack import NODES, TwoNodeRack

HELP = __doc__.split("\n\n", 1)[1].rstrip()


class CommandError(Exception):
    """A command the lab cannot carry out; the message says why."""


def _node(word: str) -> str:
    if word not in NODES:
        raise CommandError(f"unknown node {word!r} (nodes: {', '.join(NODES)})")
    return word


def _direction(words: list[str]) -> str | None:
    if not words:
        return None
    direction = words[0]
    parts = direction.split("->")
    if len(parts) != 2 or any(p not in NODES for p in parts) or parts[0] == parts[1]:
        raise CommandError(f"direction must be alpha->bravo or bravo->alpha, not {direction!r}")
    return direction


def execute(rack: TwoNodeRack, line: str) -> str:
    """Carry out one command; return a short description of what happened."""
    words = shlex.split(line)
    if not words:
        return ""
    verb, args = words[0].lower(), words[1:]
    if verb in ("cut", "restore"):
        if not args or args[0] not in ("serial", "net"):
            raise CommandError(f"usage: {verb} serial|net [alpha->bravo]")
        direction = _direction(args[1:])
        method = getattr(rack, f"{verb}_{'serial' if args[0] == 'serial' else 'network'}")
        method(direction)
        return f"{verb} {args[0]}" + (f" {direction}" if direction else " (both ways)")
    if verb == "noise":
        count = int(args[0]) if args else 64
        rack.cable.inject_noise(count)
        return f"{count} noise bytes injected on the serial cable"
    if verb == "witness":
        if rack.witness is None or not args or args[0] not in ("up", "down"):
            raise CommandError("usage: witness up|down")
        getattr(rack.witness, args[0])()
        return f"witness {args[0]}"
    if verb in ("kill", "start", "term"):
        if not args:
            raise CommandError(f"usage: {verb} NODE")
        name = _node(args[0])
        if verb == "start":
            if rack.running(name):
                return f"{name} is already running"
            rack.start_node(name)
            return f"{name} started"
        if not rack.running(name):
            return f"{name} is not running"
        rack.kill(name, signal.SIGKILL if verb == "kill" else signal.SIGTERM)
        return f"{name} {'killed (SIGKILL)' if verb == 'kill' else 'sent SIGTERM'}"
    if verb == "release":
        if not args:
            raise CommandError("usage: release NODE")
        name = _node(args[0])
        done = rack.cli(name, "release", "--source", "lab")
        return f"{name}: {(done.stdout or done.stderr).strip() or f'exit status {done.returncode}'}"
    if verb in ("unplug", "plug"):
        if not args:
            raise CommandError(f"usage: {verb} NODE")
        name = _node(args[0])
        (rack.unplug_lan if verb == "unplug" else rack.plug_lan)(name)
        return f"{name}'s LAN cable {'pulled' if verb == 'unplug' else 'back in'}"
    if verb == "switch":
        if not args or args[0] not in ("hang", "ok"):
            raise CommandError("usage: switch hang|ok")
        rack.hang_switch(args[0] == "hang")
        return "the LAN switch hangs (links up, nothing passes)" if args[0] == "hang" else "the LAN switch works"
    if verb == "power":
        return _power(rack, args)
    if verb == "stuck":
        if len(args) != 3 or args[2] not in ("on", "off", "clear"):
            raise CommandError("usage: stuck NODE INPUT on|off|clear")
        value = None if args[2] == "clear" else args[2] == "on"
        try:
            return f"{_node(args[0])}: {rack.control(args[0], {'cmd': 'sim.contact', 'input': args[1], 'value': value})}"
        except ControlError as exc:
            return f"{args[0]}: refused: {exc}"
    if verb in ("promote", "demote", "shutdown", "maintenance", "health"):
        return _control(rack, verb, args)
    if verb in ("set", "press", "silence"):
        return _hardware(rack, verb, args)
    raise CommandError(f"unknown command {verb!r}; try: help")


def _power(rack: TwoNodeRack, args: list[str]) -> str:
    if len(args) != 2 or args[1] not in ("on", "off"):
        raise CommandError("usage: power NODE off|on")
    name = _node(args[0])
    if name not in rack.bmcs:
        raise CommandError("this rack has no BMCs (start it with fencing)")
    if args[1] == "on":
        if rack.powered(name):
            return f"{name} is already on"
        rack.power_on(name)
        return f"{name} powered on, its daemon booting"
    done = rack.bmcs[name].ipmitool("chassis", "power", "off")
    return f"{name}: {(done.stdout or done.stderr).strip()}"


def _hardware(rack: TwoNodeRack, verb: str, args: list[str]) -> str:
    """Simulated hardware: chassis faults, panel keys, alarm silence."""
    usage = {"set": "set NODE DEVICE KEY=VALUE…", "press": "press NODE KEY… [--hold SECONDS]",
             "silence": "silence NODE"}[verb]
    if not args or (verb != "silence" and len(args) < 2):
        raise CommandError(f"usage: {usage}")
    name = _node(args[0])
    try:
        if verb == "silence":
            return f"{name}: {rack.control(name, {'cmd': 'alarm-silence', 'source': 'lab'})}"
        if verb == "set":
            settings = dict(item.split("=", 1) for item in args[2:] if "=" in item)
            if not settings or len(settings) != len(args[2:]):
                raise CommandError(f"usage: {usage}")
            return f"{name}: {rack.control(name, {'cmd': 'sim.set', 'target': args[1], 'settings': settings})}"
        keys, hold = args[1:], None
        if "--hold" in keys:
            at = keys.index("--hold")
            try:
                hold = float(keys[at + 1])
            except (IndexError, ValueError):
                raise CommandError(f"usage: {usage}") from None
            keys = keys[:at] + keys[at + 2:]
        for key in keys:
            payload = {"cmd": "panel.press", "key": key, "action": "hold" if hold else "click"}
            if hold:
                payload["seconds"] = hold
            rack.control(name, payload, timeout=60)
        return f"{name}: pressed {' '.join(keys)}" + (f" (held {hold:g} s)" if hold else "")
    except ControlError as exc:
        return f"{name}: refused: {exc}"


def _control(rack: TwoNodeRack, verb: str, args: list[str]) -> str:
    if not args:
        raise CommandError(f"usage: {verb} NODE …")
    name = _node(args[0])
    force = "--force" in args[1:]
    if verb == "health":
        if len(args) < 2 or not args[1].isdigit():
            raise CommandError("usage: health NODE 0-100")
        payload = {"cmd": "sim.health", "value": int(args[1])}
    elif verb == "maintenance":
        if len(args) < 2 or args[1] not in ("on", "off"):
            raise CommandError("usage: maintenance NODE on|off")
        payload = {"cmd": f"maintenance-{args[1]}", "force": force, "source": "lab"}
    else:
        payload = {"cmd": verb, "force": force, "source": "lab"}
    try:
        result = rack.control(name, payload, timeout=30)
    except ControlError as exc:
        return f"{name}: refused: {exc}"
    if isinstance(result, dict):
        return f"{name}: {result.get('message', '')}: {result.get('outcome', '')}"
    return f"{name}: {result}"
