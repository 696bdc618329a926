"""The simulator's A/B slots: an update's install, boot and good gate played in a JSON file.

The board-profile driver :class:`SimSlots` (``slots = { driver = "sim.slots:SimSlots" }``) does what
the appliance's RAUC and boot gate do, in ``slots.json`` beside the node's ``[update] result_file``,
and writes the same result file (``event=``, ``slot=``, ``running=``, ``at=`` lines) and trial flag
(``SLOT MODE``) as ``/usr/libexec/tandem/bootgate``, so the daemon's good gate and rolling update
read them as on a box. The rack keeps all three in one folder per node (``DIR/slots.json``,
``DIR/result``, ``DIR/trial``). :func:`boot` plays GRUB and the boot gate at a simulated boot (sim.rack
calls it before it starts a node's daemon), and ``python -m sim.slots pass DIR`` is the good gate's
``mark_good`` in the simulated rack.

A simulated bundle is a JSON file (:func:`write_bundle`): ``{"sim_bundle": 1, "compatible":
"tandem-sim", "version": ..., "signature": "good"}``; any other signature or compatible is refused
as RAUC would refuse it. ``"breaks": "key"`` is a release that looks for the cluster key in the wrong
place (sim.rack starts it with such a config): it cannot start, so it cannot pass the good gate.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from firmware.config.node import UpdateConfig
from firmware.core.journal import write_atomically
from firmware.update.bundle import BundleInfo, UpdateError
from firmware.update.gate import read_key_values

COMPATIBLE = "tandem-sim"
FIRST_VERSION = "installed"  # the release a simulated box was built with
STATE_FILE = "slots.json"
SEND_BACK = ("deadline", "daemon-failed")  # the boot gate's events for a box it reboots off a slot on trial


def write_bundle(path: Path, version: str, compatible: str = COMPATIBLE, signature: str = "good",
                 breaks: str | None = None) -> Path:
    """Write a simulated bundle at `path`."""
    path.write_text(json.dumps({"sim_bundle": 1, "compatible": compatible, "version": version,
                                "signature": signature, "breaks": breaks}))
    return path


class SimSlots:
    """Two slots, A and B, in ``slots.json`` in the directory of the node's ``[update] result_file``."""

    def __init__(self, update: UpdateConfig) -> None:
        self.folder = update.result_file.parent
        self.result = update.result_file

    def check(self, bundle: Path) -> BundleInfo:
        """The simulated bundle's identity; UpdateError as RAUC would refuse it."""
        try:
            data = json.loads(bundle.read_text())
        except OSError as exc:
            raise UpdateError(f"{bundle}: {exc.strerror or exc}") from None
        except ValueError:
            raise UpdateError(f"{bundle}: not a bundle (no signature found)") from None
        if not isinstance(data, dict) or data.get("sim_bundle") != 1:
            raise UpdateError(f"{bundle}: not a bundle (no signature found)")
        if data.get("signature") != "good":
            raise UpdateError(f"{bundle}: signature verification failed")
        if data.get("compatible") != COMPATIBLE:
            raise UpdateError(f"{bundle}: it is for {data.get('compatible')!r} boards, and this box is {COMPATIBLE!r}")
        return BundleInfo(bundle, COMPATIBLE, str(data.get("version")), None, None, bundle.stat().st_size, "")

    def install(self, bundle: Path, mode: str) -> str:
        """What ``bootgate install`` does: the other slot gets the bundle, on trial from the next boot."""
        info = self.check(bundle)
        state = load(self.folder)
        booted, other = state["booted"], _other(state["booted"])
        if state["trial"] == booted:
            raise UpdateError(f"slot {booted} is itself on trial: pass it (or let it go back) first")
        if not state["slots"][booted]["good"]:
            raise UpdateError(f"slot {booted} is not marked good: an update starts only from a proven slot")
        _result(self.result, "begin", other, booted)
        breaks = json.loads(bundle.read_text()).get("breaks")
        state["slots"][other] = {"version": info.version, "good": False, "breaks": breaks}
        state.update(trial=other, trial_mode=mode, tried=False)
        save(self.folder, state)
        return f"installed into slot {other}: it boots on trial at the next reboot"

    def abort(self) -> str:
        """What ``bootgate abort`` does."""
        state = load(self.folder)
        trial = state["trial"]
        if trial is None:
            raise UpdateError("no update to abort (no slot on trial)")
        if trial == state["booted"]:
            raise UpdateError(f"slot {trial} is running on trial: reboot to go back, or pass it")
        state.update(trial=None, tried=False)
        save(self.folder, state)
        _result(self.result, "aborted", trial, state["booted"])
        return f"update into slot {trial} aborted: slot {state['booted']} stays"


def load(folder: Path) -> dict[str, Any]:
    """The slots' state (a box as built: slot A good, B empty)."""
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"booted": "A", "trial": None, "trial_mode": None, "tried": False,
                "slots": {"A": {"version": FIRST_VERSION, "good": True, "breaks": None},
                          "B": {"version": None, "good": False, "breaks": None}}}


def save(folder: Path, state: dict[str, Any]) -> None:
    """Write the slots' state atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / STATE_FILE, json.dumps(state, indent=1).encode())


def boot(folder: Path) -> dict[str, Any]:
    """A simulated boot of a box whose slots, result file and trial flag are in `folder` (``slots.json``,
    ``result``, ``trial``: sim.rack's layout): GRUB picks the slot (a slot on trial gets one try), then the
    boot gate writes the trial flag, or rolls a slot that had its try back. Returns the slot booted (its
    state entry, with ``name``)."""
    state, flag = load(folder), folder / "trial"
    trial = state["trial"]
    if trial is not None and not state["tried"]:
        state.update(booted=trial, tried=True)  # GRUB spends the one try of the slot on trial
    elif trial is not None and state["booted"] == trial:
        state["booted"] = _other(trial)  # its try spent and not passed: GRUB takes the box back
    booted = state["booted"]
    if trial is None:
        flag.unlink(missing_ok=True)
    elif trial == booted:
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(f"{booted} {state['trial_mode'] or 'pair'}\n")
    else:
        state.update(trial=None, tried=False)
        state["slots"][trial]["good"] = False
        flag.unlink(missing_ok=True)
        cause = (read_key_values(folder / "result") or {}).get("event")
        _result(folder / "result", "rolled-back", trial, booted, cause if cause in SEND_BACK else None)
    save(folder, state)
    return {"name": booted, **state["slots"][booted]}


def send_back(folder: Path, event: str) -> None:
    """What ``bootgate deadline`` (`event` "deadline") and ``bootgate failed`` ("daemon-failed") write before
    the reboot that leaves a slot on trial (sim.rack's layout, as :func:`boot`); nothing off trial."""
    assert event in SEND_BACK
    state = load(folder)
    if state["trial"] is not None and state["trial"] == state["booted"]:
        _result(folder / "result", event, state["booted"], state["booted"])


def pass_trial(folder: Path) -> str:
    """What ``bootgate pass`` does (sim.rack's layout, as :func:`boot`): the slot on trial that booted is marked
    good."""
    state, flag = load(folder), folder / "trial"
    booted = state["booted"]
    if state["trial"] is None and state["slots"][booted]["good"]:
        return f"slot {booted} is good already (passed before)"
    if state["trial"] != booted:
        raise UpdateError(f"slot {booted} is not on trial: nothing to pass")
    state["slots"][booted]["good"] = True
    state.update(trial=None, tried=False)
    save(folder, state)
    flag.unlink(missing_ok=True)
    _result(folder / "result", "good", booted, booted)
    return f"slot {booted} passed Tandem's gate: marked good"


def _other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def _result(path: Path, event: str, slot: str, running: str, cause: str | None = None) -> None:
    """The boot gate's result file, replaced whole (its `at` has a finer grain than the boot gate's: two
    results of one simulated second must differ)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"event={event}\nslot={slot}\nrunning={running}\nat={at}\n" + (f"cause={cause}\n" if cause else "")
    write_atomically(path, text.encode())


def main(argv: list[str]) -> int:
    """``pass DIR``: mark the slot on trial good (the good gate's mark_good in the simulated rack)."""
    if len(argv) != 2 or argv[0] != "pass":
        print("usage: python -m sim.slots pass DIR (DIR holds slots.json, result and trial)", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    try:
        print(pass_trial(folder))
    except UpdateError as exc:
        print(f"sim.slots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
