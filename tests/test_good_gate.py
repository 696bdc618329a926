"""The update's good gate in a real daemon: a slot on trial is marked good only once the node has proven itself.

Bravo restarts "into" slot B on trial: the boot gate of tests/raucbox.py (the real script, the real
RAUC service on a private bus, GRUB's env in a file) put it there and named it in the trial flag.
Bravo's daemon must then mark it good through ``bootgate pass``, but only after it has been joined
with alpha on every link and healthy for ``good_after_s``; with the serial cable cut, never.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import wait_for
from raucbox import BOOTGATE, WHY_NOT, Box, boot_b_on_trial, installed_into_b
from sim.rack import TwoNodeRack

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)]

GOOD_AFTER_S = 3.0


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path / "box")
    try:
        made.boot("A")
        yield made
    finally:
        made.close()


def rack_with_gate(racks: Callable[..., TwoNodeRack], box: Box) -> TwoNodeRack:
    """A settled rack whose nodes' good gate looks at the box's trial flag and passes with its boot gate."""
    return racks(extra={"update": {"good_after_s": GOOD_AFTER_S, "trial_flag": str(box.flag),
                                   "result_file": str(box.result), "mark_good": [str(BOOTGATE), "pass"]}})


def restart_on_trial(rack: TwoNodeRack, box: Box) -> None:
    """Bravo's box installs into B and boots it on trial; bravo's daemon starts there."""
    installed_into_b(box)
    rack.kill("bravo")
    rack.wait_released("bravo")
    boot_b_on_trial(box)
    started = box.gate("boot")
    assert started.returncode == 0 and box.flag.read_text().split()[0] == "B", started.stderr
    rack.start_node("bravo", env=box.daemon_env())


def gate_of(rack: TwoNodeRack, name: str) -> dict | None:
    status = rack.status(name)
    return status["update"]["gate"] if status else None


def test_the_slot_on_trial_is_marked_good_once_joined_and_healthy_long_enough(racks, box: Box) -> None:
    rack = rack_with_gate(racks, box)
    assert gate_of(rack, "alpha") is None  # alpha runs a proven slot: no gate
    restart_on_trial(rack, box)
    rack.wait_until("bravo", lambda brief: any("slot B is on trial" in a["text"] for a in brief["alarms"]),
                    what="bravo's on-trial warning")
    passed = wait_for(lambda: (gate_of(rack, "bravo") or {}).get("passed"), timeout=60, what="the gate to pass")
    assert passed
    assert box.boot_status() == {"A": "good", "B": "good"}
    assert box.env_vars()["TRIAL"] == "" and not box.flag.exists()
    assert box.last_result()["event"] == "good"
    events = {e["kind"]: e["data"] for e in rack.events("bravo") if e["kind"].startswith("update.")}
    assert events["update.trial"]["slot"] == "B"
    assert events["update.good"]["slot"] == "B" and events["update.good"]["held_s"] >= GOOD_AFTER_S
    assert rack.status("bravo")["update"]["last"]["event"] == "good"
    assert not any(a["source"] == "update" for a in rack.brief("bravo")["alarms"])


def test_a_slot_on_trial_not_joined_on_every_link_is_never_marked_good(racks, box: Box) -> None:
    rack = rack_with_gate(racks, box)
    rack.cut_serial()
    restart_on_trial(rack, box)
    gate = rack.wait_until("bravo", lambda _: (gate_of(rack, "bravo") or {}).get("waiting_for") == (
        "serial0 not carrying heartbeats both ways") and gate_of(rack, "bravo"), what="bravo's gate to wait on serial0")
    assert gate["passed"] is False and gate["held_s"] == 0
    # Several times the gate's time, by bravo's own heartbeat ticks: still on trial, still not good.
    mark = rack.brief("bravo")
    rack.wait_ticks("bravo", int(4 * GOOD_AFTER_S / 0.1), start=mark["tick"])
    assert gate_of(rack, "bravo")["passed"] is False
    assert box.boot_status()["B"] == "bad" and box.env_vars()["TRIAL"] == "B"
    assert not [e for e in rack.events("bravo") if e["kind"] == "update.good"]
    # The boot gate's deadline: the box reboots, GRUB passes B over, and back on A the rollback is made
    # permanent. Bravo's daemon starts again there and tells the operator the update did not stay.
    assert box.gate("deadline").returncode == 0 and box.reboots.exists()
    rack.kill("bravo")
    rack.wait_released("bravo", count=2)
    box.boot("A")
    assert box.gate("boot").returncode == 0
    rack.start_node("bravo")
    alarm = rack.wait_until("bravo", lambda brief: [a["text"] for a in brief["alarms"] if a["source"] == "update"],
                            what="bravo's alarm about the update")
    assert "slot B was not marked good" in alarm[0] and "went back to slot A" in alarm[0]
    assert rack.status("bravo")["update"] == {"trial": None, "gate": None, "last": box.last_result(),
                                              "install": None, "rolling": None}


def test_a_box_updated_on_its_own_needs_no_peer_to_keep_its_slot(racks, box: Box) -> None:
    """`tandem update --single` on an unpaired box writes `single`: paired afterwards, its daemon asks
    only for a healthy node (here with the serial cable cut, which would hold a pair's gate forever)."""
    rack = rack_with_gate(racks, box)
    rack.cut_serial()
    installed_into_b(box)
    box.set("TRIAL_MODE=single")  # what `bootgate install BUNDLE single` sets (no bundle installs on this machine)
    rack.kill("bravo")
    rack.wait_released("bravo")
    boot_b_on_trial(box)
    assert box.gate("boot").returncode == 0 and box.flag.read_text().split() == ["B", "single"]
    rack.start_node("bravo", env=box.daemon_env())
    wait_for(lambda: (gate_of(rack, "bravo") or {}).get("passed"), timeout=60, what="the single gate to pass")
    assert box.boot_status()["B"] == "good"
    assert [e["data"]["single"] for e in rack.events("bravo") if e["kind"] == "update.trial"] == [True]
