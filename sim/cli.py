"""`tandem sim …`: the simulator's subcommands, plugged into the `tandem` CLI as an entry point.

`pyproject.toml` names :func:`register` in the ``tandem.cli`` entry-point
group; the firmware's CLI discovers it, so the firmware never imports the
simulator. The fault-injection commands (``health``, ``set``) are answered by
the simulator's board extension (:mod:`sim.extension`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from firmware.cli import EXIT_FAILURE, call
from firmware.core.control import ControlError


def register(sub: Any) -> None:
    """Add `tandem sim lab|run|health|set` to the CLI's subparsers."""
    p = sub.add_parser("sim", help="simulator: the two-node lab and fault injection")
    simsub = p.add_subparsers(dest="sim_command", required=True, metavar="SIMCOMMAND")
    lab = simsub.add_parser("lab", help="start two simulated nodes and show their live status")
    lab.add_argument("--dir", help="working folder (default: a new temporary folder)")
    lab.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    lab.add_argument("--board", help="simulator board profile (default sim; sim-cfa635 has a CFA-635 panel)")
    lab.add_argument("--netns", action="store_true",
                     help="root: each node in its own network namespace, so the shared IP really moves")
    scenario = simsub.add_parser("run", help="run scenario files and print a pass/fail timeline")
    scenario.add_argument("files", nargs="+", help="scenario TOML files (see sim/scenarios/)")
    health = simsub.add_parser("health", help="override a simulated node's health (0-100, or `sensors` to follow them)")
    health.add_argument("value", help="0-100, or sensors")
    inject = simsub.add_parser("set", help="inject a simulated hardware fault, e.g. `sim set psu1 ac=lost`")
    inject.add_argument("target", help="simulated device: psu1, psu2, inlet, sda, md0, chassis")
    inject.add_argument("settings", nargs="+", help="key=value, e.g. ac=lost, present=no, temp=75")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    """Run one `tandem sim` subcommand."""
    if args.sim_command == "lab":
        from sim.lab import run_lab

        if args.netns and os.geteuid() != 0:
            raise ControlError("sim lab --netns needs root (it creates network namespaces)")
        if args.board and args.netns:
            raise ControlError("sim lab: --board and --netns cannot be combined (the namespace lab has its own board)")
        return run_lab(base=Path(args.dir) if args.dir else None, duration=args.duration, netns=args.netns,
                       board=args.board)
    if args.sim_command == "run":
        from sim.scenario import ScenarioError, load, run

        try:
            scenarios = [load(Path(path)) for path in args.files]
        except ScenarioError as exc:
            raise ControlError(str(exc)) from None
        results = [run(scenario) for scenario in scenarios]
        return 0 if all(results) else EXIT_FAILURE
    if args.sim_command == "health":
        value = None if args.value == "sensors" else int(args.value)
        print(call(args, {"cmd": "sim.health", "value": value}))
        return 0
    if args.sim_command == "set":
        settings = {}
        for item in args.settings:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ControlError(f"{item!r}: settings are key=value, e.g. ac=lost")
            settings[key] = value
        print(call(args, {"cmd": "sim.set", "target": args.target, "settings": settings}))
        return 0
    raise ControlError(f"unknown sim command {args.sim_command}")
