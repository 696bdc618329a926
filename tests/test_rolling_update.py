"""The rolling update of the pair (issue 16) in the simulated rack: real daemons, the real bulk channel between
them, and the simulator's slots (sim.slots), whose boots the rack plays as GRUB and the boot gate would.

The VM tests (tests/test_vm_rack.py, `-m vm`) do the same with RAUC and GRUB; these check the order of
the stages and what happens to the calls at each of them, in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware.core.control import ControlError
from sim import slots
from sim.rack import NODES, TwoNodeRack

pytestmark = pytest.mark.integration

GOOD_AFTER_S = 2.0
UPDATE_TIMEOUT_S = 180.0  # two boots, two good gates, a handover: about 20 s here


def slot_state(rack: TwoNodeRack, name: str) -> dict[str, Any]:
    """The node's simulated slots (as the rack's simulated GRUB and boot gate left them)."""
    return slots.load(rack.update_dir(name))


def rolling(rack: TwoNodeRack, name: str) -> dict[str, Any] | None:
    """The node's ``update.rolling`` status (None if it does not answer or has none)."""
    status = rack.status(name) or {}
    return (status.get("update") or {}).get("rolling")


class Holders:
    """On a thread: which nodes say they are ACTIVE (or taking over), every 50 ms, while it runs."""

    def __init__(self, rack: TwoNodeRack) -> None:
        self.rack = rack
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            holding = tuple(name for name in NODES if self.rack.state(name) in ("ACTIVE", "TAKEOVER"))
            self.samples.append((time.monotonic(), holding))

    def both(self) -> list[float]:
        """When both said they held the calls."""
        return [at for at, holding in self.samples if len(holding) == 2]

    def longest_without(self) -> float:
        """The longest run of samples in which neither held the calls, in seconds."""
        longest, since = 0.0, None
        for at, holding in self.samples:
            if holding:
                if since is not None:
                    longest = max(longest, at - since)
                since = None
            elif since is None:
                since = at
        return longest


@contextmanager
def watching(rack: TwoNodeRack) -> Iterator[Holders]:
    """Who holds the calls, sampled for as long as the block runs."""
    holders = Holders(rack)
    holders.thread.start()
    try:
        yield holders
    finally:
        holders.stop.set()
        holders.thread.join(timeout=10)


def stages(rack: TwoNodeRack, name: str) -> list[str]:
    """The update stages and outcomes the node journaled, in order."""
    return [e["data"]["stage"] if e["kind"] == "update.stage" else e["kind"]
            for e in rack.journal_file(name) if e["kind"] in ("update.start", "update.stage", "update.done",
                                                              "update.failed", "update.aborted")]


@pytest.fixture
def updating_rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    return racks(bulk=True, extra={"update": {"good_after_s": GOOD_AFTER_S}}, trial_deadline_s=60.0)


def test_a_rolling_update_updates_the_standby_first_then_hands_over_and_updates_the_other(
        updating_rack: TwoNodeRack, tmp_path: Path) -> None:
    rack = updating_rack
    bundle = slots.write_bundle(tmp_path / "tandem-2.0.raucb", "2.0")
    with watching(rack) as holders:
        # The operator's command: it follows the update until its own box reboots into the new slot.
        cli = rack.cli("alpha", "update", str(bundle), timeout=UPDATE_TIMEOUT_S)
        rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("outcome") is not None, UPDATE_TIMEOUT_S,
                      interval=0.5, what="the rolling update to end")
        rack.wait_for(lambda: rack.state("alpha") == "STANDBY", 60, what="alpha to rejoin as STANDBY")
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].startswith("updating the pair to 2.0 (") and "copy, peer-install, peer-boot" in lines[0]
    # It ends when its own box reboots, or (the simulated reboot takes a second) once it saw the update done.
    assert lines[-1].startswith(("this box is rebooting into the new slot", "done: both boxes run the new release"))
    percents = [int(line[1:4]) for line in lines[1:] if line.startswith("[")]
    assert percents == sorted(percents) and percents, cli.stdout
    assert (rack.base / "alpha" / "inbox" / bundle.name).exists()  # where the helper installs from
    result = rolling(rack, "alpha")
    assert result is not None and result["outcome"] == "done", result
    assert result["percent"] == 100
    assert result["handover_ms"] > 0  # the handover was timed: demote to bravo announcing ACTIVE
    # Both boxes run the new release from the slot it went into, marked good, and nothing is on trial.
    for name in NODES:
        state = slot_state(rack, name)
        assert state["booted"] == "B" and state["slots"]["B"] == {"version": "2.0", "good": True, "breaks": None}, state
        assert state["trial"] is None
        assert not (rack.update_dir(name) / "trial").exists()
    assert rack.boots == {"alpha": 2, "bravo": 2}
    # In that order: bravo was updated and proven before alpha gave up the calls; alpha last.
    assert stages(rack, "alpha") == ["update.start", "peer-install", "peer-boot", "handover", "install", "trial",
                                     "update.done"]
    bravo_good = rack.event_time("bravo", "update.good", 0)
    alpha_handover = next(e["time"] for e in rack.journal_file("alpha")
                          if e["kind"] == "update.stage" and e["data"]["stage"] == "handover")
    assert bravo_good is not None and bravo_good <= alpha_handover
    # The calls: never on both boxes, and without a holder only for the planned handover.
    assert holders.both() == []
    assert holders.longest_without() < 5.0, holders.longest_without()
    assert rack.state("bravo") == "ACTIVE"  # failback "never": the calls stay on bravo


def test_a_release_that_cannot_start_is_rolled_back_and_the_active_keeps_the_calls(
        updating_rack: TwoNodeRack, tmp_path: Path) -> None:
    rack = updating_rack
    mark = rack.brief("alpha")
    assert mark is not None and mark["state"] == "ACTIVE"
    bundle = slots.write_bundle(tmp_path / "tandem-2.1.raucb", "2.1", breaks="key")
    rack.control("alpha", {"cmd": "update-start", "bundle": str(bundle)})
    rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("outcome") is not None, UPDATE_TIMEOUT_S,
                  interval=0.5, what="the rolling update to end")
    result = rolling(rack, "alpha")
    assert result is not None and result["outcome"] == "failed", result
    assert result["stage"] == "peer-boot"
    assert "bravo did not keep the new slot (rolled-back (Tandem could not run on it)" in result["reason"]
    status = rack.status("alpha")
    assert status is not None
    assert any("the update to 2.1 stopped at peer-boot" in a["text"] for a in status["alarms"]), status["alarms"]
    # bravo tried the new slot once, could not start, and is back on its old slot; B is not good.
    state = slot_state(rack, "bravo")
    assert state["booted"] == "A" and state["trial"] is None and state["slots"]["B"]["good"] is False
    rack.wait_state("bravo", "STANDBY", timeout=60)
    # alpha never gave up the calls, and never installed anything.
    changes = [e["data"] for e in rack.events("alpha", since=mark["event_id"]) if e["kind"] == "state"]
    assert changes == []
    assert slot_state(rack, "alpha")["slots"]["B"]["version"] is None


@pytest.mark.parametrize("kind, why", [
    ({"signature": "forged"}, "signature verification failed"),
    ({"compatible": "tandem-arm64"}, "it is for 'tandem-arm64' boards"),
    (None, "not a bundle"),
])
def test_a_bad_bundle_is_refused_before_anything_is_copied_or_installed(
        updating_rack: TwoNodeRack, tmp_path: Path, kind: dict[str, str] | None, why: str) -> None:
    rack = updating_rack
    bundle = tmp_path / "tandem-3.0.raucb"
    if kind is None:
        bundle.write_bytes(b"hsqs" + bytes(200))  # cut short: no manifest, no signature
    else:
        slots.write_bundle(bundle, "3.0", **kind)
    with pytest.raises(ControlError, match=why) as refused:
        rack.control("alpha", {"cmd": "update-start", "bundle": str(bundle)})
    assert "\n" not in str(refused.value)
    assert rolling(rack, "alpha") is None
    assert list((rack.base / "bravo" / "inbox").iterdir()) == []
    for name in NODES:
        assert slot_state(rack, name)["trial"] is None


def test_the_update_starts_only_on_the_active_node_of_a_joined_pair(updating_rack: TwoNodeRack,
                                                                    tmp_path: Path) -> None:
    rack = updating_rack
    bundle = slots.write_bundle(tmp_path / "tandem-2.0.raucb", "2.0")
    with pytest.raises(ControlError, match="a rolling update starts on the ACTIVE node; this one is STANDBY"):
        rack.control("bravo", {"cmd": "update-start", "bundle": str(bundle)})
    with pytest.raises(ControlError, match="hand them over first"):
        rack.control("alpha", {"cmd": "update-install", "bundle": str(bundle)})
    with pytest.raises(ControlError, match="no install is under way"):
        rack.control("alpha", {"cmd": "update-abort"})
    assert slot_state(rack, "alpha")["trial"] is None


@pytest.fixture
def slow_gate_rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    """A rack whose good gate takes long enough to act while the updated STANDBY is on trial."""
    return racks(bulk=True, extra={"update": {"good_after_s": 30.0}}, trial_deadline_s=120.0)


def update_until_bravo_is_on_trial(rack: TwoNodeRack, folder: Path) -> int:
    """Start an update to 2.0 on alpha and wait until bravo runs it on trial; alpha's journal id before it."""
    mark = rack.brief("alpha")
    assert mark is not None and mark["state"] == "ACTIVE"
    rack.control("alpha", {"cmd": "update-start", "bundle": str(slots.write_bundle(folder / "t.raucb", "2.0"))})
    rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("stage") == "peer-boot", 60, interval=0.2,
                  what="the update to reach peer-boot")
    rack.wait_for(lambda: (rack.update_dir("bravo") / "trial").exists() and rack.state("bravo") == "STANDBY", 60,
                  what="bravo up on trial")
    return mark["event_id"]


def test_an_abort_while_the_standby_is_on_trial_stops_the_update_and_the_calls_stay(
        slow_gate_rack: TwoNodeRack, tmp_path: Path) -> None:
    rack = slow_gate_rack
    mark = update_until_bravo_is_on_trial(rack, tmp_path)
    done = rack.cli("alpha", "update", "--abort")
    assert done.returncode == 0, done.stderr
    assert "bravo is on its new slot on trial (its good gate decides)" in done.stdout
    rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("outcome") == "aborted", 30, what="the abort")
    assert rolling(rack, "alpha")["reason"] == "called off at peer-boot"
    # Nothing more happens: no handover, no install on alpha; bravo's own gate still keeps its new slot.
    rack.wait_for(lambda: slot_state(rack, "bravo")["slots"]["B"]["good"], 90, what="bravo's gate to pass")
    assert slot_state(rack, "alpha")["slots"]["B"]["version"] is None
    assert [e["data"] for e in rack.events("alpha", since=mark) if e["kind"] == "state"] == []
    assert stages(rack, "alpha") == ["update.start", "peer-install", "peer-boot", "update.aborted"]
    with pytest.raises(ControlError, match="no install is under way"):  # nothing left to abort
        rack.control("alpha", {"cmd": "update-abort"})


def test_a_power_pull_of_the_standby_on_its_first_boot_takes_it_back_and_the_active_keeps_the_calls(
        slow_gate_rack: TwoNodeRack, tmp_path: Path) -> None:
    rack = slow_gate_rack
    mark = update_until_bravo_is_on_trial(rack, tmp_path)
    boots = rack.boots["bravo"]
    rack.kill("bravo")  # the power goes; when it comes back GRUB has spent the new slot's one try
    rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("outcome") is not None, UPDATE_TIMEOUT_S, interval=0.5,
                  what="the rolling update to end")
    result = rolling(rack, "alpha")
    assert result["outcome"] == "failed" and "bravo did not keep the new slot (rolled-back" in result["reason"]
    assert rack.boots["bravo"] == boots + 1
    state = slot_state(rack, "bravo")
    assert state["booted"] == "A" and state["trial"] is None and state["slots"]["B"]["good"] is False
    rack.wait_state("bravo", "STANDBY", timeout=60)
    assert [e["data"] for e in rack.events("alpha", since=mark) if e["kind"] == "state"] == []


def test_a_second_update_goes_the_other_way_from_the_box_that_holds_the_calls_now(
        updating_rack: TwoNodeRack, tmp_path: Path) -> None:
    """After an update bravo is ACTIVE, both boxes on slot B: the next one starts on bravo and ends on slot A."""
    rack = updating_rack
    for active, version in (("alpha", "2.0"), ("bravo", "3.0")):
        bundle = slots.write_bundle(tmp_path / f"tandem-{version}.raucb", version)
        rack.control(active, {"cmd": "update-start", "bundle": str(bundle)})
        rack.wait_for(lambda: (rolling(rack, active) or {}).get("outcome") is not None, UPDATE_TIMEOUT_S,
                      interval=0.5, what=f"the update to {version} to end")
        assert rolling(rack, active)["outcome"] == "done", rolling(rack, active)
        rack.wait_for(lambda: rack.state(active) == "STANDBY", 60, what=f"{active} to rejoin as STANDBY")
    for name in NODES:
        state = slot_state(rack, name)
        assert state["booted"] == "A" and state["slots"]["A"]["version"] == "3.0" and state["slots"]["A"]["good"]
    assert rack.state("alpha") == "ACTIVE"


def test_a_crash_of_the_updating_daemon_is_survived_the_update_goes_on_after_its_restart(
        slow_gate_rack: TwoNodeRack, tmp_path: Path) -> None:
    rack = slow_gate_rack
    update_until_bravo_is_on_trial(rack, tmp_path)
    rack.kill("alpha")  # SIGKILL: bravo (on trial) takes the calls, as from any dead peer
    rack.wait_state("bravo", "ACTIVE", timeout=30)
    rack.start_node("alpha")  # systemd starts it again; the saved plan says: waiting for bravo's gate
    rack.wait_for(lambda: (rolling(rack, "alpha") or {}).get("outcome") is not None, UPDATE_TIMEOUT_S,
                  interval=0.5, what="the rolling update to end")
    assert rolling(rack, "alpha")["outcome"] == "done", rolling(rack, "alpha")
    # No handover was needed (bravo had the calls already); alpha installed, rebooted and passed.
    assert stages(rack, "alpha") == ["update.start", "peer-install", "peer-boot", "handover", "install", "trial",
                                     "update.done"]
    assert [e for e in rack.journal_file("alpha") if e["kind"] == "request" and e["data"]["cmd"] == "demote"] == []
    for name in NODES:
        assert slot_state(rack, name)["slots"]["B"] == {"version": "2.0", "good": True, "breaks": None}
    rack.wait_for(lambda: rack.state("alpha") == "STANDBY", 60, what="alpha to rejoin as STANDBY")
