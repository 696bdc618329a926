"""A seeded corpus of mutated configs for `tandem check-config` (issue 14, hardening).

Every mutation starts from one valid node config, its board profile and key
file (:data:`BASE_CONFIG`, :data:`BASE_BOARD`) and changes something: a wrong
type in a field, a number out of range, NaN, an unknown or missing key, a
duplicate, bytes that are not UTF-8, a NUL byte, nesting thousands deep, a
huge string, a driver that is no driver, a bad address, time or key. Each
says whether it is nonsense (must be refused) or still a valid config (must
be accepted, so over-rejection shows too), and for nonsense, which file and
key the error must name.

:func:`run_corpus` runs them all through the CLI's own `main()` in this
process (fast), and a sample through the real `tandem check-config` in a
subprocess, and counts tracebacks, nonsense accepted and valid configs
refused. ``bench/abuse.py`` imports it; keep its signature.

    .venv/bin/python tests/config_corpus.py [workdir]     # prints the figures
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VALID_KEY = "1 " + "3c" * 4 + "".join(f"{i:02x}" for i in range(1, 29)) + "\n"
PIN = "03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4"  # sha256("1234")
EX_CONFIG = 78


class Raw(str):
    """A TOML value written as-is (``+694``, ``0x64``, ``nan``, a deeply nested array)."""


DELETE = object()  # as a mutation's value: remove the key


# ----------------------------------------------------------------------------- the valid base

BASE_CONFIG: dict[str, Any] = {
    "node": "alpha",
    "peer": "bravo",
    "role": "primary",
    "board": "board.toml",
    "key_file": "cluster.key",
    "state_dir": "state",
    "control_socket": "control.sock",
    "timers": {"heartbeat_ms": 100, "deadtime_ms": 400, "initdead_ms": 3000, "handover_timeout_ms": 5000,
               "shutdown_timeout_ms": 10000},
    "witness": {"targets": ["icmp://192.0.2.254", "tcp://192.0.2.253:443"], "require": "any", "timeout_ms": 150,
                "min_health": 0},
    "health": {"critical": 30, "warning_factor": 0.5, "unknown_factor": 0.5, "history": True},
    "failback": {"policy": "window", "hold_down_s": 60.0, "min_uptime_s": 300.0, "window": "02:00-04:00"},
    "flap": {"max_failures": 3, "window_min": 30.0},
    "journal": {"max_bytes": 1048576, "keep": 5},
    "hooks": {"dir": "hooks.d", "timeout_ms": 10000},
    "service": {"mode": "cold", "start": ["systemctl", "start", "asterisk.service"],
                "stop": ["systemctl", "stop", "asterisk.service"],
                "status": ["systemctl", "is-active", "--quiet", "asterisk.service"],
                "ready": ["asterisk", "-rx", "core waitfullybooted"], "timeout_ms": 30000, "ready_timeout_ms": 60000},
    "watchdog": {"device": "/dev/watchdog", "timeout_s": 10},
    "arbitration": {"enabled": True, "control": ["192.0.2.1"], "peer_address": "192.0.2.3", "round_ms": 40,
                    "confirm_ms": 150, "claim_delay_ms": 500, "held_escalate_s": 5.0},
    "fencing": {"isolated": True, "stall_ms": 0,
                "device": {"agent": "true", "timeout_s": 30.0, "monitor_every_s": 60.0, "retry_s": 5.0,
                           "options": {"ip": "198.51.100.21", "username": "tandem", "lanplus": True, "ipport": 623}}},
    "actions": {"order": ["shared_ips", "relays", "service"], "on_failure": "handover", "veto_backoff_s": 10.0},
    "panel": {"enabled": True, "view_only": False, "pin_sha256": PIN, "pin_length": 4, "relock_s": 120.0,
              "backlight_timeout_s": 60.0, "menu_timeout_s": 30.0, "hold_confirm_s": 3.0},
    "bulk": {"listen": "192.0.2.4:7140", "peer": "192.0.2.5", "peer_identity": "ab" * 32, "identity": "identity.key",
             "record": "paired.json", "inbox": "inbox", "max_mib": 4096},
    "links": [
        {"name": "lan", "kind": "udp", "bind": "192.0.2.4:694", "peer": "192.0.2.5:694"},
        {"name": "serial", "kind": "serial", "port": "/dev/ttyS1", "baud": 115200},
    ],
    "shared_ips": [
        {"address": "192.0.2.10/24", "interface": "eth0", "vlan": 100, "announce_count": 5,
         "announce_interval_ms": 200, "refresh_s": 0.0, "router": False, "probe": False, "probe_timeout_ms": 300,
         "force": False, "route_source": False},
        {"address": "2001:db8::10/64", "interface": "eth1"},
    ],
    "relay_groups": [
        {"name": "trunks", "outputs": ["trunk:1", "trunk:2"], "energized_when_active": True,
         "feedback": ["trunk-sense:1", "trunk-sense:2"], "on_mismatch": "alarm", "settle_ms": 200},
    ],
    "sensors": [
        {"name": "load", "type": "load", "enabled": True, "interval_s": 10.0, "timeout_s": 5.0, "weight": 10.0,
         "clear_after": 2, "thresholds": {"load1": {"warn_above": 4.0, "crit_above": 8.0, "hysteresis": 0.5}}},
    ],
}

BASE_BOARD: dict[str, Any] = {
    "name": "corpus-board",
    "description": "the simulated board, for the config corpus",
    "extensions": ["sim.extension:install"],
    "network": "sim.network:RecordingNetwork",
    "power": {"driver": "sim.power:RecordingPower"},
    "watchdog_pulse": {"pin": 5, "pin_factory": "mock", "interval_ms": 100},
    "relays": {"trunk": {"driver": "firmware.drivers.relays.gpio:GpioRelays", "pins": [17, 27],
                         "active_high": False, "pin_factory": "mock"}},
    "feedback": {"trunk-sense": {"driver": "sim.relaysim:ContactSense", "pins": [17, 27], "active_high": False}},
    "sensor_host": {"driver": "sim.chassis:SimChassis"},
    "sensors": [
        {"name": "psu1", "type": "pmbus", "bus": 1, "address": 0x58, "interval_s": 2, "timeout_s": 1, "weight": 40},
        {"name": "inlet", "type": "lm75", "bus": 1, "address": 0x48, "interval_s": 2, "timeout_s": 1, "weight": 30,
         "thresholds": {"temp": {"warn_above": 40, "crit_above": 50, "hysteresis": 2}}},
    ],
    "panel": {
        "display": {"driver": "firmware.panel.dummy:DummyTextDisplay", "columns": 20, "rows": 4},
        "keys": {"buttons": {"driver": "sim.panelkeys:SimGpioKeys",
                             "pins": {"up": 22, "down": 23, "enter": 24, "back": 25}, "pin_factory": "mock"}},
        "indicators": {"driver": "firmware.panel.gpio:GpioIndicators", "role_pin": 6, "fault_pin": 13,
                       "buzzer_pin": 19, "pin_factory": "mock"},
    },
}


# ----------------------------------------------------------------------------- TOML writing


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """One TOML value (strings as basic strings: JSON's escapes are TOML's)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A TOML document: scalars and inline values first, then [tables] and [[arrays of tables]]."""
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + to_toml(v, name)
        elif _is_table_array(v):
            for item in v:
                out += f"\n[[{name}]]\n" + to_toml(item, name)
    return out


# ----------------------------------------------------------------------------- mutations


@dataclass
class Mutation:
    """One mutated config: what it is, whether it must be refused, and where the error must point."""

    name: str
    nonsense: bool
    config: str | bytes = ""
    board: str | bytes = ""
    key: str | bytes = VALID_KEY
    key_mode: int = 0o600
    where: str = "config"  # the file the error must name: config or board
    expect: list[str] = field(default_factory=list)  # keys the error must name (each on some line)
    extra_files: dict[str, str | bytes] = field(default_factory=dict)  # more files beside the config


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    data = copy.deepcopy(data)
    target = data
    for part in path[:-1]:
        target = target[part]
    if value is DELETE:
        del target[path[-1]]
    elif isinstance(target, list) and path[-1] == len(target):
        target.append(value)
    else:
        target[path[-1]] = value
    return data


def key_text(path: tuple[Any, ...]) -> str:
    """A path as the key an error names: ``links[0].bind``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + str(part)
    return text


class Builder:
    """Collects mutations of the base config and board."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.items: list[Mutation] = []

    def add(self, name: str, nonsense: bool, config: Any = None, board: Any = None, **kw: Any) -> None:
        config = BASE_CONFIG if config is None else config
        board = BASE_BOARD if board is None else board
        self.items.append(Mutation(
            name=name, nonsense=nonsense,
            config=config if isinstance(config, (str, bytes)) else to_toml(config),
            board=board if isinstance(board, (str, bytes)) else to_toml(board), **kw))

    def node(self, name: str, path: tuple[Any, ...], value: Any, nonsense: bool = True,
             expect: str | None = None) -> None:
        """The base config with one key set (or deleted); nonsense must name ``expect`` (default: the key)."""
        self.add(name, nonsense, config=_set(BASE_CONFIG, path, value),
                 expect=[key_text(path) if expect is None else expect] if nonsense else [])

    def nodes(self, name: str, changes: dict[tuple[Any, ...], Any], nonsense: bool = True,
              expect: list[str] | None = None) -> None:
        data = BASE_CONFIG
        for path, value in changes.items():
            data = _set(data, path, value)
        self.add(name, nonsense, config=data, expect=expect or [])

    def board(self, name: str, path: tuple[Any, ...], value: Any, nonsense: bool = True,
              expect: str | None = None) -> None:
        self.add(name, nonsense, board=_set(BASE_BOARD, path, value), where="board",
                 expect=[key_text(path) if expect is None else expect] if nonsense else [])


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    found = []
    if isinstance(data, dict):
        for k, v in data.items():
            found += _leaves(v, path + (k,))
    elif _is_table_array(data):
        for i, v in enumerate(data):
            found += _leaves(v, path + (i,))
    else:
        found.append((path, data))
    return found


def _wrong_types(value: Any, rng: random.Random) -> list[Any]:
    """Values of another TOML type than ``value``'s (an int is a valid float, so never offered for one)."""
    if isinstance(value, bool):
        return [1, 0, "true", "yes"]
    if isinstance(value, int):
        return [str(value), value + 0.5, True, [value]]
    if isinstance(value, float):
        return [str(value), True, [value], {"value": value}]
    if isinstance(value, str):
        return [rng.randint(1, 9), True, [value], 1.5]
    if isinstance(value, list):
        return [", ".join(map(str, value)) or "x", 7, {"x": 1}]
    return []


def _skip_type_mutation(path: tuple[Any, ...]) -> bool:
    # Fence-agent options take any scalar; a sensor's family keys are the family's (firmware/core/sensors).
    return path[:3] == ("fencing", "device", "options") or (
        path[0] == "sensors" and path[2] not in ("name", "type", "enabled", "interval_s", "timeout_s", "weight",
                                                   "clear_after", "thresholds"))


def _numbers(b: Builder) -> None:
    """Each number: values at its limits (valid) and past them, negative, huge, NaN and inf (nonsense)."""
    table: list[tuple[tuple[Any, ...], list[Any], list[Any]]] = [
        (("timers", "heartbeat_ms"), [10, 150, 200], [9, 0, 201, 10001]),
        (("timers", "deadtime_ms"), [200, 600000], [199, 29, 600001]),
        (("timers", "initdead_ms"), [0, 600000], [600001]),
        (("timers", "handover_timeout_ms"), [100, 600000], [99]),
        (("timers", "shutdown_timeout_ms"), [0, 600000], [600001]),
        (("witness", "timeout_ms"), [10, 10000], [9, 10001]),
        (("witness", "min_health"), [0, 100], [101]),
        (("health", "critical"), [0, 100], [101]),
        (("health", "warning_factor"), [0, 1, 0.25], [1.01, 2]),
        (("health", "unknown_factor"), [0.0, 1.0], [1.5]),
        (("failback", "hold_down_s"), [0, 3600.5], [1e9]),
        (("failback", "min_uptime_s"), [0, 86400], [1e12]),
        (("flap", "max_failures"), [1, 10], [0]),
        (("flap", "window_min"), [0.5, 1440], [0]),
        (("journal", "max_bytes"), [4096, 10**9], [4095, 0]),
        (("journal", "keep"), [1, 100], [0, 101]),
        (("hooks", "timeout_ms"), [100, 600000], [99]),
        (("shared_ips", 0, "vlan"), [1, 4094], [0, 4095]),
        (("shared_ips", 0, "announce_count"), [0, 100], [101]),
        (("shared_ips", 0, "announce_interval_ms"), [10, 10000], [9]),
        (("shared_ips", 0, "refresh_s"), [0, 30], [1e12]),
        (("shared_ips", 0, "probe_timeout_ms"), [10], [0, 10001]),
        (("service", "timeout_ms"), [100, 600000], [99]),
        (("service", "ready_timeout_ms"), [100], [600001]),
        (("relay_groups", 0, "settle_ms"), [0, 60000], [60001]),
        (("watchdog", "timeout_s"), [1, 3600], [0, 3601]),
        (("fencing", "stall_ms"), [0, 200, 300], [199, 301]),
        (("fencing", "device", "timeout_s"), [1, 600], [0.5, 601]),
        (("fencing", "device", "monitor_every_s"), [0, 1, 86400], [0.5, 86401]),
        (("fencing", "device", "retry_s"), [0.5, 600], [0.4, 601]),
        (("fencing", "device", "delay_s"), [0, 600], [601]),
        (("arbitration", "round_ms"), [10, 300], [9, 301]),
        (("arbitration", "confirm_ms"), [0, 10000], [10001]),
        (("arbitration", "claim_delay_ms"), [0, 60000], [60001]),
        (("arbitration", "held_escalate_s"), [1, 3600], [0.5, 3601]),
        (("actions", "veto_backoff_s"), [0, 600], [1e15]),
        (("sensors", 0, "interval_s"), [0.5, 86400], [0.4, 0]),
        (("sensors", 0, "timeout_s"), [0.1, 600], [0, 601]),
        (("sensors", 0, "weight"), [0, 100], [101]),
        (("sensors", 0, "clear_after"), [1, 100], [0, 101]),
        (("panel", "pin_length"), [4, 8], [3, 9]),
        (("panel", "relock_s"), [10, 86400], [9]),
        (("panel", "backlight_timeout_s"), [5], [4]),
        (("panel", "menu_timeout_s"), [5, 3600], [3601]),
        (("panel", "hold_confirm_s"), [1, 10], [0.5, 11]),
        (("links", 1, "baud"), [9600, 921600], [9601, 0, 115200.0]),
    ]
    for path, valid, bad in table:
        is_float = any(isinstance(v, float) for v in valid + bad) or path[-1].endswith("_s") or path[-1] in (
            "warning_factor", "unknown_factor", "window_min")
        for value in valid:
            b.node(f"number {key_text(path)} = {value!r} (in range)", path, value, nonsense=False)
        for value in [*bad, -1, 10**18]:
            b.node(f"number {key_text(path)} = {value!r} (out of range)", path, value)
        if is_float:
            for value in (float("nan"), float("inf"), float("-inf")):
                b.node(f"number {key_text(path)} = {value!r}", path, value)
    # Thresholds: any finite number, in order, with an OK band wider than the hysteresis.
    limits = ("sensors", 0, "thresholds", "load1")
    for name, value in (("warn_above", float("nan")), ("crit_above", float("inf")), ("warn_above", float("-inf")),
                        ("hysteresis", float("nan")), ("hysteresis", -1), ("crit_below", float("nan")),
                        ("warn_above", "4"), ("crit_above", True), ("hysteresis", float("inf"))):
        b.node(f"threshold {name} = {value!r}", limits + (name,), value, expect=key_text(limits + (name,)))
    b.node("threshold crit_above below warn_above", limits + ("crit_above",), 3.0, expect=key_text(limits))
    b.node("threshold band narrower than the hysteresis", limits,
           {"warn_below": 3.8, "warn_above": 4.0, "hysteresis": 0.5}, expect=key_text(limits))
    b.node("threshold negative levels", limits, {"warn_below": -20, "crit_below": -30.5}, nonsense=False)
    b.node("threshold huge but finite", limits + ("crit_above",), 1e300, nonsense=False)
    b.node("threshold int levels", limits, {"warn_above": 4, "crit_above": 8}, nonsense=False)
    # TOML's own ways of writing an integer are fine.
    for raw in ("+100", "1_00", "0x64", "0o144", "0b1100100"):
        b.node(f"heartbeat_ms written {raw} (valid TOML integer)", ("timers", "heartbeat_ms"), Raw(raw),
               nonsense=False)
    b.node("hold_down_s written 6e1 (valid TOML float)", ("failback", "hold_down_s"), Raw("6e1"), nonsense=False)
    b.node("announce_count written +5", ("shared_ips", 0, "announce_count"), Raw("+5"), nonsense=False)


def _types(b: Builder) -> None:
    """A value of the wrong type in every field of the node config and the board's own keys."""
    for path, value in _leaves(BASE_CONFIG):
        if _skip_type_mutation(path):
            continue
        for wrong in _wrong_types(value, b.rng):
            b.node(f"type {key_text(path)} = {toml_value(wrong)}", path, wrong)
        if isinstance(value, list) and value and not isinstance(value[0], (dict, list)):
            element = path + (b.rng.randrange(len(value)),)
            b.node(f"type {key_text(element)} = 5", element, 5)
    for section in ("timers", "witness", "health", "failback", "flap", "journal", "hooks", "service", "watchdog",
                    "arbitration", "fencing", "actions", "panel"):
        b.node(f"type {section} is a number", (section,), 5)
        b.node(f"type {section} is an array", (section,), [1, 2])
    for section in ("links", "shared_ips", "relay_groups", "sensors"):
        b.node(f"type {section} is a table", (section,), {"x": 1})
        b.node(f"type {section} is a string", (section,), "x")
        b.node(f"type {section}[0] is a string", (section, 0), "x")
    for path, value in _leaves(BASE_BOARD):
        if path[0] in ("name", "description", "extensions", "network", "watchdog_pulse") or path[-1] == "driver":
            for wrong in _wrong_types(value, b.rng)[:3]:
                b.board(f"board type {key_text(path)} = {toml_value(wrong)}", path, wrong)
    for path, value in (((("sensors", 0, "weight")), "40"), (("sensors", 1, "interval_s"), True),
                        (("sensors", 1, "thresholds", "temp", "warn_above"), "40"), (("panel",), "lcd"),
                        (("relays",), ["trunk"]), (("relays", "trunk"), "gpio"), (("power",), "sim.power:X"),
                        (("sensor_host",), 1), (("panel", "keys"), [1]), (("sensors",), {"a": 1})):
        b.board(f"board type {key_text(path)} = {toml_value(value)}", path, value)


def _structure(b: Builder) -> None:
    """Unknown keys, missing keys, duplicates, bad TOML."""
    tables = [(), ("timers",), ("links", 0), ("links", 1), ("witness",), ("health",), ("failback",), ("flap",),
              ("journal",), ("hooks",), ("shared_ips", 0), ("service",), ("relay_groups", 0), ("watchdog",),
              ("arbitration",), ("fencing",), ("fencing", "device"), ("actions",), ("panel",), ("sensors", 0),
              ("sensors", 0, "thresholds", "load1")]
    for table in tables:
        name = b.rng.choice(["bogus", "colour", "heartbeat", "timeout", "Name", "enable", "x_y"])
        b.node(f"unknown key {key_text(table + (name,))}", table + (name,), 1)
    for name, path in (("typo [timer]", ("timer",)), ("typo [hook]", ("hook",)), ("typo links[0].binds", ("links", 0, "binds")),
                       ("typo [[shared_ip]]", ("shared_ip",)), ("[fencing.devices]", ("fencing", "devices"))):
        b.node(f"unknown key: {name}", path, {"a": 1} if len(path) == 1 else "x")
    for board_table in ((), ("watchdog_pulse",), ("panel",), ("power",)):
        b.board(f"board unknown key {key_text(board_table + ('bogus',))}", board_table + ("bogus",), 1,
                expect=key_text(board_table + ("bogus",)) if board_table != ("power",) else "power")
    required = [("node",), ("peer",), ("board",), ("links",), ("links", 0, "name"), ("links", 0, "kind"),
                ("links", 0, "bind"), ("links", 0, "peer"), ("links", 1, "port"), ("links", 1, "name"),
                ("shared_ips", 0, "address"), ("shared_ips", 0, "interface"), ("relay_groups", 0, "name"),
                ("relay_groups", 0, "outputs"), ("sensors", 0, "name"), ("sensors", 0, "type")]
    for path in required:
        b.node(f"missing {key_text(path)}", path, DELETE)
    for path in [("name",), ("relays", "trunk", "driver"), ("panel", "display"), ("power", "driver")]:
        b.board(f"board missing {key_text(path)}", path, DELETE,
                expect="relays" if path[0] == "relays" else None)
    optional = ["role", "state_dir", "control_socket", "timers", "witness", "health", "failback",
                "flap", "journal", "hooks", "service", "watchdog", "actions", "panel", "shared_ips", "relay_groups",
                "sensors"]
    for name in optional:
        changes: dict[tuple[Any, ...], Any] = {(name,): DELETE}
        if name == "shared_ips":
            changes[("arbitration",)] = DELETE
            changes[("fencing", "device")] = DELETE
        b.nodes(f"valid: without {name}", changes, nonsense=False)
    b.nodes("valid: without arbitration and fence device", {("arbitration",): DELETE, ("fencing", "device"): DELETE},
            nonsense=False)
    b.nodes("valid: without fencing", {("fencing",): DELETE}, nonsense=False)
    for path in (("sensor_host",), ("panel",), ("extensions",), ("watchdog_pulse",), ("sensors",), ("description",),
                 ("power",), ("network",), ("panel", "indicators"), ("panel", "keys")):
        b.board(f"valid board without {key_text(path)}", path, DELETE, nonsense=False)
    # Duplicates.
    two_lans = _set(BASE_CONFIG, ("links", 1), {"name": "lan", "kind": "udp", "bind": "192.0.2.4:695",
                                               "peer": "192.0.2.5:695"})
    b.add("duplicate link names", True, config=two_lans, expect=["links"])
    b.node("duplicate sensor names", ("sensors", 1), copy.deepcopy(BASE_CONFIG["sensors"][0]), expect="sensors")
    b.board("duplicate board sensor names", ("sensors", 1, "name"), "psu1", expect="sensors")
    b.node("duplicate relay group names", ("relay_groups", 1),
           {"name": "trunks", "outputs": ["trunk:3"]}, expect="relay_groups")
    b.node("relay channel in two groups", ("relay_groups", 1), {"name": "more", "outputs": ["trunk:2"]},
           expect="relay_groups")
    b.node("relay channel twice in a group", ("relay_groups", 0, "outputs"), ["trunk:1", "trunk:1"],
           expect="relay_groups[0].outputs")
    b.node("duplicate shared IP", ("shared_ips", 1), {"address": "192.0.2.10/24", "interface": "eth1"},
           expect="shared_ips")
    b.node("duplicate shared IP, other prefix", ("shared_ips", 1), {"address": "192.0.2.10/25", "interface": "eth0"},
           expect="shared_ips")
    b.node("duplicate action", ("actions", "order"), ["shared_ips", "service", "shared_ips"], expect="actions.order")
    b.node("node equal to peer", ("peer",), "alpha")
    text = to_toml(BASE_CONFIG)
    b.add("TOML duplicate key", True, config=text.replace('role = "primary"', 'role = "primary"\nrole = "secondary"'),
          expect=[""])
    b.add("TOML table defined twice", True, config=text + "\n[timers]\nheartbeat_ms = 100\n", expect=[""])
    b.add("TOML unterminated string", True, config=text.replace('"alpha"', '"alpha'), expect=[""])
    b.add("TOML missing bracket", True, config=text.replace("[timers]", "[timers"), expect=[""])
    b.add("TOML bare word", True, config=text.replace('role = "primary"', "role = primary"), expect=[""])
    b.add("TOML raw NUL byte", True, config=text.replace('role = "primary"', 'role = "pri\x00mary"'), expect=[""])
    b.add("TOML raw control character", True, config=text.replace('role = "primary"', 'role = "pri\x07mary"'),
          expect=[""])
    b.add("empty config file", True, config="", expect=["node"])
    b.add("config is only a comment", True, config="# nothing here\n", expect=["node"])
    b.add("config with CRLF line ends", False, config=text.replace("\n", "\r\n"))
    b.add("config with comments everywhere (emoji, umlauts)", False,
          config="# Konfiguration für alpha ✓ 🚀\n" + text.replace("\n[timers]", "\n# ☎ timers\n[timers]"))
    b.add("config as literal strings", False, config=text.replace('"board.toml"', "'board.toml'"))


def _strings(b: Builder) -> None:
    """NUL bytes, empty and blank strings, huge strings, non-ASCII where only ASCII makes sense."""
    paths = [("state_dir",), ("control_socket",), ("key_file",), ("hooks", "dir"), ("links", 1, "port"),
             ("watchdog", "device"), ("fencing", "device", "agent"), ("board",)]
    for path in paths:
        value = _get(BASE_CONFIG, path)
        b.node(f"NUL byte in {key_text(path)}", path, value[:3] + "\x00" + value[3:])
    for path in [("service", "start", 0), ("service", "stop", 1), ("service", "status", 3), ("service", "ready", 2),
                 ("witness", "targets", 0), ("arbitration", "control", 0), ("relay_groups", 0, "outputs", 0),
                 ("fencing", "device", "options", "ip"), ("node",), ("shared_ips", 0, "interface"),
                 ("sensors", 0, "type"), ("failback", "window")]:
        value = _get(BASE_CONFIG, path)
        b.node(f"NUL byte in {key_text(path)}", path, value + "\x00",
               expect=key_text(path[:-1]) if isinstance(path[-1], int) else None)
    b.node("NUL byte in a key name", ("timers", "heart\x00beat_ms"), 100, expect="timers")
    b.board("NUL byte in board description", ("description",), "board\x00")
    b.board("NUL byte in a relay driver parameter", ("relays", "trunk", "pin_factory"), "mo\x00ck")
    b.board("NUL byte in a relay driver name", ("relays", "trunk", "driver"),
            "firmware.drivers.relays.gpio:Gpio\x00Relays", expect="relays")
    for path in [("state_dir",), ("control_socket",), ("key_file",), ("hooks", "dir"), ("links", 1, "port"),
                 ("board",), ("node",), ("peer",), ("links", 0, "name"), ("links", 0, "bind"),
                 ("shared_ips", 0, "interface"), ("shared_ips", 0, "address"), ("relay_groups", 0, "name"),
                 ("sensors", 0, "name"), ("sensors", 0, "type"), ("failback", "window"), ("panel", "pin_sha256")]:
        for blank in ("", "   "):
            b.node(f"{'empty' if not blank else 'blank'} {key_text(path)}", path, blank)
    for path in [("service", "start"), ("service", "stop"), ("service", "status"), ("service", "ready")]:
        b.node(f"empty program in {key_text(path)}", path, [""], expect=key_text(path))
        b.node(f"empty program, arguments after it, in {key_text(path)}", path, ["", "start", "x"])
    b.node("service cold without a start command", ("service", "start"), [], expect="service")
    b.nodes("valid: service none without commands", {("service", "mode"): "none", ("service", "start"): [],
                                                      ("service", "stop"): [], ("service", "status"): []},
            nonsense=False)
    b.node("valid: an empty argument after the program", ("service", "start"), ["systemctl", "start", ""],
           nonsense=False)
    b.node("valid: non-ASCII argument", ("service", "start"), ["/usr/local/bin/pbx-stärt", "–now"], nonsense=False)
    b.node("valid: hooks dir with a space", ("hooks", "dir"), "hook scripts", nonsense=False)
    b.node("valid: watchdog unused", ("watchdog", "device"), "", nonsense=False)
    b.node("valid: fence agent by absolute path", ("fencing", "device", "agent"), "/bin/true", nonsense=False)
    b.node("valid: no fence agent", ("fencing", "device", "agent"), "", nonsense=False)
    b.node("valid: control_group", ("control_group",), "tandem", nonsense=False)
    b.node("pin hash upper case", ("panel", "pin_sha256"),
           PIN.upper())
    b.node("pin hash too short", ("panel", "pin_sha256"), PIN[:60])
    b.node("pin hash not hex", ("panel", "pin_sha256"), "z" * 64)
    b.node("control_group with a space", ("control_group",), "tandem users")
    b.node("control_group empty", ("control_group",), "")
    # Huge strings.
    b.node("huge node name", ("node",), "a" * 100_000)
    b.node("huge board name", ("board",), "b" * 100_000)
    b.node("huge state_dir", ("state_dir",), "/var/" + "x" * 5000)
    b.node("state_dir component longer than a file name", ("state_dir",), "/var/" + "x" * 300 + "/tandem")
    b.node("huge key_file path", ("key_file",), "/etc/" + "k" * 5000)
    b.node("control socket path longer than a Unix socket allows", ("control_socket",), "/run/" + "s" * 200 + ".sock")
    b.node("huge serial port", ("links", 1, "port"), "/dev/" + "t" * 5000)
    b.node("huge interface name", ("shared_ips", 0, "interface"), "eth" * 1000)
    b.node("interface '..'", ("shared_ips", 0, "interface"), "..")
    b.node("valid: interface eth0.100", ("shared_ips", 0, "interface"), "eth0.100", nonsense=False)
    b.node("valid: interface br-lan", ("shared_ips", 0, "interface"), "br-lan", nonsense=False)
    b.node("huge service argument", ("service", "start"), ["systemctl", "x" * 100_000], nonsense=False)
    b.board("valid: long board description", ("description",), "Ä" * 100_000, nonsense=False)
    b.add("config larger than 1 MiB", True, config=to_toml(BASE_CONFIG) + "# " + "x" * (1 << 20) + "\n",
          expect=[""])
    b.add("board profile larger than 1 MiB", True, board=to_toml(BASE_BOARD) + "# " + "x" * (1 << 20) + "\n",
          where="board", expect=[""])
    # Names: only ASCII letters and digits where the pattern says so.
    for path, value in ((("node",), "ａlpha"), (("node",), "al pha"), (("node",), "-alpha"), (("node",), "a" * 17),
                        (("peer",), "brävo"), (("links", 0, "name"), "l\u0430n"), (("relay_groups", 0, "name"), "t r"),
                        (("sensors", 0, "name"), "load!"), (("role",), "master"), (("role",), "Primary"),
                        (("links", 0, "kind"), "tcp"), (("links", 0, "kind"), "UDP"), (("witness", "require"), "most"),
                        (("failback", "policy"), "sometimes"), (("service", "mode"), "warm"),
                        (("actions", "on_failure"), "panic"), (("relay_groups", 0, "on_mismatch"), "ignore"),
                        (("actions", "order", 1), "fencing")):
        b.node(f"bad name or choice {key_text(path)} = {value!r}", path, value,
               expect=key_text(path[:-1]) if isinstance(path[-1], int) else None)
    for value in ("a", "alpha-2", "A.b_c-9", "a" * 16):
        b.node(f"valid: node name {value!r}", ("node",), value, nonsense=False)


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _addresses(b: Builder) -> None:
    """Ports, hosts, peers and binds; shared addresses; witness and arbitration targets; failback windows."""
    for value in ("192.0.2.4:+694", "192.0.2.4:６９４", "192.0.2.4: 694", "192.0.2.4:6_94", "192.0.2.4:",
                  "192.0.2.4:70000", "192.0.2.4:0", "192.0.2.4:-1", "192.0.2.4:0x2b6", "[2001:db8::4]:+694",
                  "١٩٢.0.2.4:694", "example.com:694", "localhost", "192.0.2.4:694:1", "192.0.2.4%eth0:694",
                  "192.0.2.256:694", "224.0.0.1:694", " 192.0.2.4:694x", "192.0.2.4:٦٩٤", "[192.0.2.4:694"):
        b.node(f"bind {value!r}", ("links", 0, "bind"), value)
    for value in ("192.0.2.5:+694", "192.0.2.5:６９４", "0.0.0.0:694", "255.255.255.255:694", "224.0.0.1:694",
                  "[ff02::1]:694", "[::]:694", "[2001:db8::5]:694", "192.0.2.5:99999"):
        b.node(f"peer {value!r}", ("links", 0, "peer"), value)
    b.node("peer is this node's own bind address", ("links", 0, "peer"), "192.0.2.4:694", expect="links")
    for value in ("example.com:7140", "192.0.2.5:+7140", "192.0.2.5:70000", ""):
        b.node(f"bulk peer {value!r}", ("bulk", "peer"), value)
    for value in ("ab" * 31, "AB" * 32, "xy" * 32, 7):
        b.node(f"bulk peer_identity {value!r}", ("bulk", "peer_identity"), value)
    b.node("valid: bulk on IPv6", ("bulk", "listen"), "[2001:db8::4]:7140", nonsense=False)
    two_udp = _set(BASE_CONFIG, ("links", 1), {"name": "lan2", "kind": "udp", "bind": "192.0.2.4:694",
                                               "peer": "192.0.2.5:695"})
    b.add("two links bind the same address", True, config=two_udp, expect=["links"])
    two_udp = _set(BASE_CONFIG, ("links", 1), {"name": "lan2", "kind": "udp", "bind": "0.0.0.0:694",
                                               "peer": "192.0.2.6:694"})
    b.add("a wildcard bind overlaps another link's port", True, config=two_udp, expect=["links"])
    two_udp = _set(BASE_CONFIG, ("links", 1), {"name": "lan2", "kind": "udp", "bind": "192.0.2.6:694",
                                               "peer": "192.0.2.4:694"})
    b.add("a link sends to another link's own bind", True, config=two_udp, expect=["links"])
    two_serial = _set(BASE_CONFIG, ("links", 2), {"name": "serial2", "kind": "serial", "port": "/dev/ttyS1"})
    b.add("two serial links on one port", True, config=two_serial, expect=["links"])
    two_serial = _set(BASE_CONFIG, ("links", 2), {"name": "serial2", "kind": "serial", "port": "/dev/../dev/ttyS1"})
    b.add("two serial links on one port, written differently", True, config=two_serial, expect=["links"])
    valid_links = [
        {"name": "lan2", "kind": "udp", "bind": "192.0.2.4:695", "peer": "192.0.2.5:695"},
        {"name": "v6", "kind": "udp", "bind": "[2001:db8::4]:694", "peer": "[2001:db8::5]:694"},
        {"name": "ll", "kind": "udp", "bind": "[fe80::4%eth2]:694", "peer": "[fe80::5%eth2]:694"},
        {"name": "any", "kind": "udp", "bind": "0.0.0.0:700", "peer": "192.0.2.5:700"},
        {"name": "dflt", "kind": "udp", "bind": "198.51.100.4", "peer": "198.51.100.5"},
        {"name": "serial2", "kind": "serial", "port": "/dev/ttyUSB0", "baud": 9600},
        {"name": "rel", "kind": "serial", "port": "ttyS7"},
    ]
    for link in valid_links:
        b.node(f"valid: extra link {link['name']}", ("links", 2), link, nonsense=False)
    b.node("IPv4 bind, IPv6 peer", ("links", 0, "peer"), "[2001:db8::5]:694", expect="links[0]")
    b.node("no links", ("links",), [], expect="links")
    nine = [{"name": f"n{i}", "kind": "udp", "bind": f"192.0.2.4:{1000 + i}", "peer": f"192.0.2.5:{1000 + i}"}
            for i in range(9)]
    b.node("nine links", ("links",), nine, expect="links")
    b.node("serial link with a bind key", ("links", 1, "bind"), "192.0.2.4:694")
    b.node("udp link with a port key", ("links", 0, "port"), "/dev/ttyS0")
    # Shared addresses.
    for value in ("0.0.0.0/0", "192.0.2.10/0", "0.0.0.0/24", "127.0.0.1/8", "224.0.0.5/24", "::/0", "::1/128",
                  "192.0.2.0/24", "192.0.2.255/24", "192.0.2.10", "192.0.2.10/33", "192.0.2.10/２４",
                  "2001:db8::10/129", "192.0.2.10/24/24", "fe80::10%eth0/64", "192.0.2.4/24", "192.0.2.5/24",
                  "١٩٢.0.2.10/24", "192.0.2.10/-1", "ff02::1/64"):
        b.node(f"shared address {value!r}", ("shared_ips", 0, "address"), value,
               expect="shared_ips" if value in ("192.0.2.4/24", "192.0.2.5/24") else None)
    for value in ("192.0.2.10/32", "192.0.2.11/31", "10.0.0.1/8", "192.0.2.10/255.255.255.0", "2001:db8::1/128"):
        b.nodes(f"valid: shared address {value} (no arbitration)", {("shared_ips", 0, "address"): value,
                                                                   ("arbitration",): DELETE,
                                                                   ("fencing", "device"): DELETE}, nonsense=False)
    b.node("valid: shared address 192.0.2.100/25", ("shared_ips", 0, "address"), "192.0.2.100/25", nonsense=False)
    # Witness and arbitration.
    for value in ("http://192.0.2.1", "tcp://192.0.2.1", "tcp://192.0.2.1:٤٤٣", "tcp://192.0.2.1:+443",
                  "icmp://0.0.0.0", "icmp://224.0.0.1", "icmp://gateway", "icmp://", "tcp://:443",
                  "icmp://١٩٢.0.2.1"):
        b.node(f"witness target {value!r}", ("witness", "targets", 0), value, expect="witness.targets")
    for value in ("icmp://[2001:db8::1]", "tcp://[2001:db8::1]:443", "icmp://198.51.100.1"):
        b.node(f"valid: witness target {value}", ("witness", "targets", 0), value, nonsense=False)
    b.node("valid: no witness targets", ("witness", "targets"), [], nonsense=False)
    for value in ("0.0.0.0", "255.255.255.255", "224.0.0.1", "gateway", "192.0.2.999", "2001:db8::1",
                  "198.51.100.1", "192.0.2.1/24", "١٩٢.0.2.1"):
        b.node(f"arbitration control {value!r}", ("arbitration", "control"), [value], expect="arbitration")
    b.node("arbitration peer_address 0.0.0.0", ("arbitration", "peer_address"), "0.0.0.0")
    b.node("arbitration peer_address off-subnet", ("arbitration", "peer_address"), "198.51.100.9",
           expect="arbitration")
    b.node("valid: arbitration without peer_address", ("arbitration", "peer_address"), "", nonsense=False)
    b.node("arbitration without control", ("arbitration", "control"), [], expect="arbitration")
    b.nodes("arbitration without shared addresses", {("shared_ips",): []}, expect=["arbitration"])
    b.nodes("fence device without arbitration", {("arbitration", "enabled"): False}, expect=["fencing"])
    b.node("fence agent not on PATH", ("fencing", "device", "agent"), "fence_nonexistent_corpus")
    b.node("fence options set the action", ("fencing", "device", "options", "action"), "reboot",
           expect="fencing.device.options")
    b.node("fence option spans lines", ("fencing", "device", "options", "plug"), "1\naction=on",
           expect="fencing.device.options")
    b.node("fence option key with '='", ("fencing", "device", "options", "a=b"), "c", expect="fencing.device.options")
    b.node("fence option NaN", ("fencing", "device", "options", "ipport"), float("nan"),
           expect="fencing.device.options.ipport")
    b.node("fence option a table", ("fencing", "device", "options", "ipport"), {"x": 1},
           expect="fencing.device.options.ipport")
    b.node("fence option an array", ("fencing", "device", "options", "ipport"), [623],
           expect="fencing.device.options.ipport")
    b.node("valid: fence option float", ("fencing", "device", "options", "power_wait"), 2.5, nonsense=False)
    # Failback windows.
    for value in ("02:00-02:00", "24:00-04:00", "02:60-04:00", "2:00-4:00", "０２:00-04:00", "02:00–04:00",
                  "02:00-04:00-06:00", "02:00", "٠٢:00-04:00", "99:99-99:99", "23:59-23:59"):
        b.node(f"failback window {value!r}", ("failback", "window"), value)
    for value in ("22:00-02:00", "00:00-23:59", "23:59-00:00"):
        b.node(f"valid: failback window {value}", ("failback", "window"), value, nonsense=False)
    # Relay groups against the board's banks.
    for value in (["trunk:0"], ["trunk:١"], ["trunk"], ["nosuch:1"], ["trunk:1", "trunk:"], ["trunk:-1"],
                  ["trunk:3"], ["trunk:99999"]):
        b.node(f"relay outputs {value!r}", ("relay_groups", 0, "outputs"), value,
               expect="relay_groups[0].outputs")
    b.node("relay feedback count differs from outputs", ("relay_groups", 0, "feedback"), ["trunk-sense:1"],
           expect="relay_groups[0]")
    b.node("relay feedback names a relay bank", ("relay_groups", 0, "feedback"), ["nosuch:1", "nosuch:2"],
           expect="relay_groups[0].feedback")
    b.node("relay group without outputs", ("relay_groups", 0, "outputs"), [], expect="relay_groups[0].outputs")
    b.nodes("valid: relay group without feedback", {("relay_groups", 0, "feedback"): []}, nonsense=False)
    b.nodes("valid: one-channel relay group", {("relay_groups", 0, "outputs"): ["trunk:2"],
                                              ("relay_groups", 0, "feedback"): ["trunk-sense:2"]}, nonsense=False)
    b.node("watchdog device relative", ("watchdog", "device"), "watchdog")
    b.node("valid: IPv6 only link", ("links", 0), {"name": "lan", "kind": "udp", "bind": "[2001:db8::4]:694",
                                                     "peer": "[2001:db8::5]:694"}, nonsense=False)


def _drivers(b: Builder) -> None:
    """Driver import paths: malformed, relative, standard library, not a class, the wrong interface."""
    slots = [("relays", "trunk", "driver"), ("feedback", "trunk-sense", "driver"), ("network",), ("power", "driver"),
             ("sensor_host", "driver"), ("panel", "display", "driver"), ("panel", "keys", "buttons", "driver"),
             ("panel", "indicators", "driver"), ("extensions", 0)]
    bad = [".x:Y", "..x:Y", ".firmware.drivers:GpioRelays", "x.:Y", "x..y:Z", "x:", ":Y", "x:Y:Z", "x", "x:Y.Z",
           "os:system", "subprocess:Popen", "builtins:eval", "importlib:import_module", "os.path:join",
           "firmware.nosuch:Y", "nosuchpackage.mod:Y", "firmware.drivers:_relay_methods",
           "firmware.drivers.relays.gpio:Gpio\u0420elays", "firmware.cli:main", "firmware.errors:ConfigError",
           "firmware.drivers.relays.gpio:NoSuchClass", "firmware.drivers:SPEC_PATTERN"]
    for slot in slots:
        # An extension is any function taking the node: firmware.cli:main would pass that test.
        choices = [spec for spec in bad if slot[0] != "extensions" or spec != "firmware.cli:main"]
        for spec in b.rng.sample(choices, 9) + ["os:system", ".x:Y"]:
            b.board(f"driver {key_text(slot)} = {spec!r}", slot, spec)
    wrong_interface = {
        ("relays", "trunk", "driver"): ["firmware.drivers.relays.gpio:GpioInputs", "sim.network:RecordingNetwork",
                                        "firmware.core.daemon:Daemon", "sim.extension:install",
                                        "firmware.drivers.relays.base:RelayDriver"],
        ("feedback", "trunk-sense", "driver"): ["firmware.drivers.relays.gpio:GpioRelays", "sim.power:RecordingPower"],
        ("network",): ["sim.power:RecordingPower", "firmware.drivers.relays.gpio:GpioRelays", "sim.extension:install",
                       "firmware.core.actions.network:NetworkBackend"],
        ("power", "driver"): ["sim.network:RecordingNetwork", "firmware.config:NodeConfig"],
        ("sensor_host", "driver"): ["sim.power:RecordingPower", "firmware.core.sensors.base:SensorContext.command",
                                    "firmware.core.sensors.base:run_command"],
        ("panel", "display", "driver"): ["firmware.panel.gpio:GpioKeys", "firmware.panel.base:Display",
                                         "firmware.panel.gpio:GpioIndicators"],
        ("panel", "keys", "buttons", "driver"): ["firmware.panel.dummy:DummyTextDisplay",
                                                 "firmware.panel.base:KeySource"],
        ("panel", "indicators", "driver"): ["firmware.panel.gpio:GpioKeys"],
        ("extensions", 0): ["sim.power:RecordingPower", "firmware.drivers.relays.gpio:GpioRelays"],
    }
    for slot, specs in wrong_interface.items():
        for spec in specs:
            b.board(f"driver {key_text(slot)} = {spec} (wrong interface)", slot, spec)
    valid = {
        ("relays", "trunk", "driver"): "firmware.drivers.relays.gpio:GpioRelays",
        ("network",): "firmware.core.actions.netlink:NetlinkNetwork",
        ("power", "driver"): "firmware.core.actions.power:SystemPower",
    }
    for slot, spec in valid.items():
        b.board(f"valid: driver {key_text(slot)} = {spec}", slot, spec, nonsense=False)
    b.board("valid: sensor host made by host_context", ("sensor_host",),
            {"driver": "firmware.core.sensors.base:host_context", "sysfs": "/sys", "procfs": "/proc"}, nonsense=False)
    b.board("valid: a USB relay board", ("relays", "trunk"),
            {"driver": "firmware.drivers.relays.usb:UsbRelayBoard", "port": "/dev/ttyUSB0", "channels": 2},
            nonsense=False)
    b.board("valid: PCF8574 relays", ("relays", "trunk"),
            {"driver": "firmware.drivers.relays.pcf8574:Pcf8574Relays", "bus": 1, "address": 0x20, "channels": 2},
            nonsense=False)
    # Parameters the driver does not take, or cannot use.
    for path, value, expect in ((("relays", "trunk", "bogus"), 1, "relays.trunk"),
                                (("relays", "trunk", "pins"), [], "relays.trunk"),
                                (("relays", "trunk", "pins"), "17", "relays.trunk"),
                                (("relays", "trunk", "pins"), [17, -1], "relays.trunk"),
                                (("feedback", "trunk-sense", "pins"), [], "feedback.trunk-sense"),
                                (("feedback", "trunk-sense", "colour"), "red", "feedback.trunk-sense"),
                                (("power", "bogus"), 1, "power"),
                                (("sensor_host", "bogus"), 1, "sensor_host"),
                                (("panel", "display", "bogus_option"), 1, "panel.display"),
                                (("panel", "indicators", "bogus_option"), 1, "panel.indicators")):
        b.board(f"driver parameter {key_text(path)} = {value!r}", path, value, expect=expect)
    b.board("relay bank name with a space", ("relays",), {"trunk a": BASE_BOARD["relays"]["trunk"]},
            expect="relays")
    b.board("extension as a table", ("extensions",), [{"x": 1}])
    b.board("watchdog pulse pin -1", ("watchdog_pulse", "pin"), -1)
    b.board("watchdog pulse pin '5'", ("watchdog_pulse", "pin"), "5")
    b.board("watchdog pulse interval 5 ms", ("watchdog_pulse", "interval_ms"), 5)
    b.board("watchdog pulse active_high 1", ("watchdog_pulse", "active_high"), 1)
    b.board("board name empty", ("name",), "")
    b.board("board sensor weight NaN", ("sensors", 0, "weight"), float("nan"))
    b.board("board sensor threshold inf", ("sensors", 1, "thresholds", "temp", "crit_above"), float("inf"))
    b.board("board sensor type '.x:Y'", ("sensors", 0, "type"), ".x:Y")
    b.board("board sensor type 'os:system'", ("sensors", 0, "type"), "os:system")
    b.board("board sensor type not a Sensor", ("sensors", 0, "type"), "firmware.cli:main")
    b.board("valid: board with unicode description", ("description",), "Größe 1U – ☎", nonsense=False)
    b.board("valid: two key sources", ("panel", "keys", "more"),
            {"driver": "firmware.panel.gpio:GpioKeys", "pins": {"up": 2}, "pin_factory": "mock"}, nonsense=False)


def _deep(kind: str, depth: int) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "1" + "]" * depth)
    return Raw("{a = " * depth + "1" + "}" * depth)


def _bytes_and_nesting(b: Builder) -> None:
    """Files that are not UTF-8, and nesting far deeper than any config."""
    text = to_toml(BASE_CONFIG).encode()
    board = to_toml(BASE_BOARD).encode()
    bad_bytes = [b"caf\xe9", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80",
                 b"abc\xe2\x82"]
    for raw in bad_bytes:
        b.add(f"config not UTF-8: {raw!r} in a comment", True, config=text + b"# " + raw + b"\n", expect=[""])
        b.add(f"config not UTF-8: {raw!r} in a string", True,
              config=text.replace(b'"primary"', b'"prim' + raw + b'ary"'), expect=[""])
        b.add(f"board not UTF-8: {raw!r} in the description", True,
              board=board.replace(b"for the config corpus", raw), where="board", expect=[""])
    b.add("config in UTF-16", True, config=to_toml(BASE_CONFIG).encode("utf-16"), expect=[""])
    b.add("board in Latin-1", True, board=(to_toml(BASE_BOARD) + '# Größe\n').encode("latin-1"), where="board",
          expect=[""])
    b.add("config with a NUL byte between lines", True, config=text + b"\x00\n", expect=[""])
    for kind in ("array", "table"):
        for depth in (20, 100, 1000, 5000, 50_000):
            b.node(f"{kind} nested {depth} deep in the config", ("service", "ready"), _deep(kind, depth),
                   expect="service.ready" if depth < 100 else "")
            b.board(f"{kind} nested {depth} deep in a driver parameter", ("relays", "trunk", "pins"),
                    _deep(kind, depth), expect="relays.trunk" if depth < 100 else "")
        b.node(f"{kind} nested 20 deep at the top", ("extra_deep",), _deep(kind, 20), expect="extra_deep")
    b.node("valid: nesting as deep as a config goes", ("fencing", "device", "options", "ip"), "198.51.100.21",
           nonsense=False)


def _keys(b: Builder) -> None:
    """The key file: zero keys, digits of other scripts, bad hex, bad permissions."""
    body = "3c" * 4 + "".join(f"{i:02x}" for i in range(1, 29))
    other = "".join(f"{(i * 7 + 3) % 256:02x}" for i in range(32))
    for name, key in (("all-zero key", "1 " + "00" * 32 + "\n"), ("one repeated byte", "1 " + "ff" * 32 + "\n"),
                      ("key id in Arabic-Indic digits", "١ " + body + "\n"),
                      ("key id in full-width digits", "１ " + body + "\n"), ("key id +1", "+1 " + body + "\n"),
                      ("key id 1_0", "1_0 " + body + "\n"), ("key id 0x1", "0x1 " + body + "\n"),
                      ("key id 256", "256 " + body + "\n"), ("key id -1", "-1 " + body + "\n"),
                      ("short key", "1 " + body[:62] + "\n"), ("non-hex key", "1 " + "zz" * 32 + "\n"),
                      ("key in full-width hex", "1 " + "３" * 64 + "\n"), ("two keys, one id", VALID_KEY + "1 " + other + "\n"),
                      ("empty key file", ""), ("only a comment", "# no key yet\n"), ("three fields", "1 " + body + " x\n"),
                      ("NUL in the key file", "1 " + body + "\x00\n")):
        b.add(f"key file: {name}", True, key=key, expect=["key_file"])
    b.add("key file: not UTF-8", True, key=b"1 " + body.encode() + b"\n# caf\xe9\n", expect=["key_file"])
    b.add("key file readable by others", True, key_mode=0o644, expect=["key_file"])
    b.node("key file missing", ("key_file",), "nosuch.key")
    b.node("key file is a directory", ("key_file",), ".")
    b.add("valid: key rotation, two keys", False, key=VALID_KEY + "2 " + other + "\n")
    b.add("valid: key file with comments", False, key="# cluster key\n" + VALID_KEY + "# end\n")
    b.add("valid: key id 0", False, key="0 " + body + "\n")
    b.add("valid: key id 255, upper-case hex", False, key="255 " + body.upper() + "\n")
    b.add("valid: key id 007", False, key="007 " + body + "\n")
    b.add("valid: key file mode 0400", False, key_mode=0o400)


def _board_files(b: Builder) -> None:
    """The board key itself: missing profiles, odd paths."""
    b.node("board profile missing", ("board",), "nosuch.toml")
    b.node("board profile by unknown name", ("board",), "no-such-board")
    b.node("board name with a space", ("board",), "my board")
    b.node("board profile is a directory", ("board",), "sub/.toml")
    b.node("board path through a symlink loop", ("board",), "loop/board.toml")
    b.add("board profile is not TOML", True, board="this is not toml\n", where="board", expect=[""])
    b.add("board profile is empty", True, board="", where="board", expect=["name"])
    b.node("valid: board profile by name", ("board",), "sim", nonsense=False)
    b.node("valid: board profile by absolute name of a shipped profile", ("board",),
           str(ROOT / "board_profiles" / "sim-cfa635.toml"), nonsense=False)


def _combined(b: Builder, count: int) -> None:
    """Several independent problems in one config: every one must be reported, one line each."""
    singles = [
        (("timers", "initdead_ms"), "3000"), (("health", "history"), 1), (("journal", "keep"), 0),
        (("panel", "pin_length"), 99), (("witness", "require"), "most"), (("flap", "window_min"), float("nan")),
        (("hooks", "dir"), ""), (("state_dir",), "st\x00ate"), (("links", 0, "bind"), "192.0.2.4:+694"),
        (("shared_ips", 0, "vlan"), "100"), (("service", "timeout_ms"), 1.5), (("watchdog", "timeout_s"), True),
        (("actions", "veto_backoff_s"), float("inf")), (("failback", "window"), "02:00-02:00"),
        (("relay_groups", 0, "settle_ms"), -1), (("sensors", 0, "weight"), "10"), (("role",), "master"),
        (("arbitration", "confirm_ms"), 10**18), (("links", 1, "baud"), 12345), (("panel", "view_only"), "no"),
        (("shared_ips", 1, "address"), "0.0.0.0/0"), (("control_socket",), ""),
        (("timers", "bogus"), 1), (("fencing", "device", "timeout_s"), "30"),
    ]
    for n in range(count):
        picked = b.rng.sample(singles, b.rng.randint(2, 4))
        changes = {path: value for path, value in picked}
        b.nodes(f"combined #{n}: " + ", ".join(key_text(p) for p in changes), changes,
                expect=[key_text(p) for p in changes])


def mutations(seed: int = 14) -> list[Mutation]:
    """The corpus: every mutation, in a fixed order for a seed (the seed picks values, samples and combinations)."""
    b = Builder(random.Random(seed))
    b.add("valid: the base config", False)
    _numbers(b)
    _types(b)
    _structure(b)
    _strings(b)
    _addresses(b)
    _drivers(b)
    _bytes_and_nesting(b)
    _keys(b)
    _board_files(b)
    _combined(b, 60)
    return b.items


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What check-config did with one mutation."""

    status: int | None  # exit status; None: it raised (a traceback)
    stdout: str
    stderr: str


def write_mutation(directory: Path, mutation: Mutation) -> Path:
    """Write the config, board profile and key file into ``directory``; the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in (("tandem.toml", mutation.config), ("board.toml", mutation.board),
                          ("cluster.key", mutation.key), *mutation.extra_files.items()):
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    os.chmod(directory / "cluster.key", mutation.key_mode)
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / ".toml").mkdir(exist_ok=True)
    loop = directory / "loop"
    if not loop.is_symlink():
        loop.symlink_to("loop")
    return directory / "tandem.toml"


def check_in_process(config: Path) -> Outcome:
    """`tandem check-config CONFIG` through the CLI's own main(), in this process."""
    from firmware.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check-config", str(config)])
    except BaseException:  # noqa: BLE001 - anything escaping main() is a traceback for the user
        return Outcome(None, out.getvalue(), err.getvalue() + traceback.format_exc())
    return Outcome(status, out.getvalue(), err.getvalue())


def check_subprocess(config: Path) -> Outcome:
    """The real `tandem check-config CONFIG` in a subprocess (a traceback shows in stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "check-config", str(config)], cwd=ROOT, env=env,
                            capture_output=True, text=True, errors="replace", timeout=120)
    status = None if "Traceback" in result.stderr or result.returncode not in (0, EX_CONFIG) else result.returncode
    return Outcome(status, result.stdout, result.stderr)


LINE = re.compile(r"^tandem: config error: (?P<file>/[^:]*): (?:(?P<key>[^ :][^:]*?): )?(?P<reason>\S.*)$")


def judge(mutation: Mutation, config: Path, outcome: Outcome) -> tuple[str, str] | None:
    """``(kind, description)`` of a failure, or None if check-config did the right thing."""
    label = f"{mutation.name!r} ({config})"
    if outcome.status is None:
        last = (outcome.stderr.strip().splitlines() or ["?"])[-1]
        return "tracebacks", f"{label}: traceback: {last}"
    if outcome.status not in (0, EX_CONFIG):
        return "tracebacks", f"{label}: exit status {outcome.status}: {outcome.stderr.strip()[-300:]}"
    if not mutation.nonsense:
        if outcome.status != 0:
            return "valid_rejected", f"{label}: valid config refused: {outcome.stderr.strip()[:600]}"
        return None
    if outcome.status == 0:
        return "nonsense_accepted", f"{label}: nonsense accepted"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    files = {"config": str(config), "board": str(config.parent / "board.toml")}
    for line in lines:
        match = LINE.match(line)
        if not match or not match.group("reason").strip():
            return "misreported", f"{label}: not a `file: key: reason` line: {line[:300]!r}"
    wanted = files[mutation.where]
    named = [match.group("key") or "" for line in lines
             if (match := LINE.match(line)) and match.group("file") == wanted]
    for key in mutation.expect:
        if not named or key and not any(_related(found, key) for found in named):
            return "misreported", f"{label}: no line names {wanted} and key {key!r}: {lines[:4]}"
    if not mutation.expect and not any(wanted in line for line in lines):
        return "misreported", f"{label}: no line names {wanted}: {lines[:4]}"
    return None


def _related(found: str, wanted: str) -> bool:
    """Whether an error's key names ``wanted``, a key inside it, or a table around it (not the whole file)."""
    def inside(key: str, outer: str) -> bool:
        return key == outer or key.startswith(outer) and key[len(outer):][:1] in (".", "[")
    return bool(found) and (inside(found, wanted) or inside(wanted, found))


def run_corpus(workdir: Path, seed: int = 14, subprocess_sample: int = 12,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run every mutation through `tandem check-config`; the figures and a description of each failure.

    In process through ``firmware.cli.main`` (any exception escaping it is a traceback), plus
    ``subprocess_sample`` mutations (chosen by the seed) through the real CLI in a subprocess,
    whose verdict must agree. Returns ``{"configs", "tracebacks", "nonsense_accepted",
    "valid_rejected", "misreported", "subprocess_checked", "seconds", "failures"}``.
    """
    started = time.monotonic()
    workdir = Path(workdir)
    corpus = mutations(seed)
    counts = {"tracebacks": 0, "nonsense_accepted": 0, "valid_rejected": 0, "misreported": 0}
    failures: list[str] = []
    paths = []
    for index, mutation in enumerate(corpus):
        config = write_mutation(workdir / f"{index:04d}", mutation)
        paths.append(config)
        found = judge(mutation, config, check_in_process(config))
        if found:
            counts[found[0]] += 1
            failures.append(f"[{found[0]}] #{index} {found[1]}")
        if progress:
            progress(index + 1, len(corpus))
    sample = sorted(random.Random(seed).sample(range(len(corpus)), min(subprocess_sample, len(corpus))))
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda i: check_subprocess(paths[i]), sample))
    for index, outcome in zip(sample, outcomes):
        found = judge(corpus[index], paths[index], outcome)
        if found:
            counts[found[0]] += 1
            failures.append(f"[{found[0]}] #{index} (subprocess) {found[1]}")
    return {"configs": len(corpus), **counts, "subprocess_checked": len(sample),
            "seconds": round(time.monotonic() - started, 1), "failures": failures}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="tandem-corpus-") as tmp:
        result = run_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp))
    for failure in result.pop("failures"):
        print(failure)
    print(json.dumps(result, indent=2))
