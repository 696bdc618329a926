"""The boot gate (image/overlay/usr/libexec/tandem/bootgate) with the real RAUC service, on this machine.

The box is tests/raucbox.py's: RAUC's service on a private system bus, GRUB's env in a file. What
GRUB does at a boot is set in grubenv by each test, as the line before each boot says; the VM tests
boot the real GRUB (tests/test_vm_rack.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wait_for
from raucbox import WHY_NOT, Box, boot_b_on_trial, installed_into_b

pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)

@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path)
    try:
        made.boot("A")
        yield made
    finally:
        made.close()


def test_an_ordinary_boot_marks_the_running_slot_good(box: Box) -> None:
    box.set("A_TRY=1")  # as RAUC's example GRUB script leaves it: not good until marked
    assert box.boot_status()["A"] == "bad"
    done = box.gate("boot")
    assert done.returncode == 0, done.stderr
    assert "slot A is proven: marked good" in done.stdout
    assert box.boot_status()["A"] == "good"
    assert not box.flag.exists()


def test_a_new_slot_stays_on_trial_until_tandem_passes_it(box: Box) -> None:
    installed_into_b(box)
    boot_b_on_trial(box)
    done = box.gate("boot")
    assert done.returncode == 0, done.stderr
    assert "slot B is on trial" in done.stdout
    assert box.flag.read_text().split() == ["B", "pair"]  # what Tandem's gate looks for
    assert box.boot_status()["B"] == "bad"  # not marked good by the boot: a reboot now goes back to A
    passed = box.gate("pass")
    assert passed.returncode == 0, passed.stderr
    assert box.boot_status() == {"A": "good", "B": "good"}
    assert box.env_vars()["TRIAL"] == "" and not box.flag.exists()  # good and cleared in one write
    assert box.last_result()["event"] == "good" and box.last_result()["slot"] == "B"
    # From now on B boots as a proven slot.
    box.boot("B")
    assert "slot B is proven" in box.gate("boot").stdout
    assert box.gate("deadline").returncode == 0 and not box.reboots.exists()


def test_a_slot_not_passed_by_the_deadline_is_left_and_marked_bad(box: Box) -> None:
    installed_into_b(box)
    boot_b_on_trial(box)
    box.gate("boot")
    done = box.gate("deadline")
    assert done.returncode == 0, done.stderr
    assert box.reboots.read_text().split() == ["reboot"]
    assert box.last_result()["event"] == "deadline"
    # GRUB passes B over (its try is spent) and boots A, the next in ORDER.
    assert box.env_vars()["B_TRY"] == "1" and box.env_vars()["A_OK"] == "1"
    box.boot("A")
    back = box.gate("boot")
    assert back.returncode == 0, back.stderr
    assert "slot B was not marked good" in back.stdout
    assert box.boot_status() == {"A": "good", "B": "bad"}
    env = box.env_vars()
    assert env["ORDER"] == "A B" and "TRIAL" not in env
    assert env["B_OK"] == "0"  # not just its try spent: GRUB's "no slot left" reset can never bring it back
    assert box.last_result()["event"] == "rolled-back" and box.last_result()["slot"] == "B"
    assert box.last_result()["running"] == "A" and box.last_result()["cause"] == "deadline"


def test_a_slot_on_trial_whose_tandem_cannot_run_goes_back_at_once_with_the_cause(box: Box) -> None:
    """`bootgate failed` (tandem.service's OnFailure=) after the daemon refused to start (exit 78): a box on
    trial reboots now, not at the deadline, and the rollback at the next boot keeps the cause; on a proven
    slot it does nothing, nor after any other failure of the unit (a stop that timed out)."""
    refused = {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_STATUS": "78"}
    assert box.gate("failed", env=refused).returncode == 0 and not box.reboots.exists()  # slot A, proven
    installed_into_b(box)
    boot_b_on_trial(box)
    box.gate("boot")
    for other in ({"MONITOR_SERVICE_RESULT": "timeout", "MONITOR_EXIT_STATUS": "9"},
                  {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_STATUS": "1"}, {}):
        ignored = box.gate("failed", env=other)
        assert ignored.returncode == 0 and "not a refused start: nothing to do" in ignored.stdout, other
        assert not box.reboots.exists() and box.flag.exists()
    done = box.gate("failed", env=refused)
    assert done.returncode == 0, done.stderr
    assert "slot B is left: Tandem cannot run on it" in done.stdout
    assert box.reboots.read_text().split() == ["reboot"]
    assert box.last_result()["event"] == "daemon-failed"
    box.boot("A")
    assert "slot B was not marked good" in box.gate("boot").stdout
    assert box.boot_status() == {"A": "good", "B": "bad"}
    assert box.last_result()["event"] == "rolled-back" and box.last_result()["cause"] == "daemon-failed"


def test_an_install_cut_short_is_rolled_back_at_the_next_boot(box: Box) -> None:
    assert box.gate("begin").returncode == 0  # then the power goes before RAUC switched the slots
    box.boot("A")
    back = box.gate("boot")
    assert back.returncode == 0, back.stderr
    assert box.boot_status() == {"A": "good", "B": "bad"}
    assert box.last_result()["event"] == "rolled-back" and "TRIAL" not in box.env_vars()


def test_an_update_aborted_before_its_reboot_leaves_the_running_slot(box: Box) -> None:
    installed_into_b(box)
    done = box.gate("abort")
    assert done.returncode == 0, done.stderr
    env = box.env_vars()
    assert env["ORDER"] == "A B" and "TRIAL" not in env
    assert box.boot_status() == {"A": "good", "B": "bad"}
    assert box.last_result()["event"] == "aborted"


def test_an_install_that_fails_marks_the_other_slot_bad_and_keeps_the_running_one(box: Box, tmp_path: Path) -> None:
    # A bundle RAUC cannot install (here: junk; on this machine a real one fails too, for want of
    # device-mapper): the trial set before the install is undone at once.
    junk = tmp_path / "junk.raucb"
    junk.write_bytes(bytes(4096))
    done = box.gate("install", str(junk), "single")
    assert done.returncode == 1 and "rauc install" in done.stderr and "slot A stays" in done.stderr
    env = box.env_vars()
    assert env["ORDER"] == "A B" and "TRIAL" not in env and "TRIAL_MODE" not in env
    assert box.boot_status() == {"A": "good", "B": "bad"}
    assert box.last_result()["event"] == "install-failed" and box.last_result()["slot"] == "B"
    refused = box.gate("install", str(junk), "alone")
    assert refused.returncode == 1 and "pair or single" in refused.stderr
    link = tmp_path / "link.raucb"
    link.symlink_to(junk)
    os.mkfifo(tmp_path / "pipe.raucb")
    for odd in (link, tmp_path / "pipe.raucb", tmp_path / "gone.raucb"):
        refused = box.gate("install", str(odd), "pair")
        assert refused.returncode == 1 and "not a plain file" in refused.stderr, odd
    assert "TRIAL" not in box.env_vars()


def test_pass_and_abort_refuse_what_they_cannot_mean(box: Box) -> None:
    again = box.gate("pass")  # a proven slot: passed before (by hand, or a reply that was lost)
    assert again.returncode == 0 and "good already" in again.stdout
    refused = box.gate("abort")
    assert refused.returncode == 1 and "no update to abort" in refused.stderr
    installed_into_b(box)
    refused = box.gate("pass")
    assert refused.returncode == 1 and "slot A is not on trial" in refused.stderr
    boot_b_on_trial(box)
    refused = box.gate("abort")
    assert refused.returncode == 1 and "running on trial" in refused.stderr
    # Nor an update from a slot on trial: it would overwrite the only proven slot.
    refused = box.gate("begin")
    assert refused.returncode == 1 and "slot B is itself on trial" in refused.stderr
    assert box.env_vars()["TRIAL"] == "B" and box.boot_status()["A"] == "good"
    assert box.gate("nonsense").returncode == 1


def test_without_rauc_the_gate_says_so_and_changes_nothing(box: Box) -> None:
    box.stop_service()
    before = box.grubenv.read_bytes()
    started = time.monotonic()
    done = box.gate("boot")
    assert done.returncode == 1 and "rauc status failed" in done.stderr
    assert box.grubenv.read_bytes() == before
    assert time.monotonic() - started < 60


def test_a_result_that_cannot_be_written_stops_the_update_before_anything_changes(box: Box, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    box.env["TANDEM_UPDATE_RESULT"] = str(blocker / "result")  # its folder cannot be made (as a read-only /var)
    before = box.env_vars()
    bundle = tmp_path / "any.raucb"
    bundle.write_bytes(bytes(4096))
    done = box.gate("install", str(bundle), "pair")
    assert done.returncode == 1 and "cannot create" in done.stderr
    assert box.env_vars() == before and box.boot_status() == {"A": "good", "B": "bad"}


def test_one_boot_gate_at_a_time(box: Box, tmp_path: Path) -> None:
    """A second install (or an abort) while one runs would undo the trial under RAUC's feet."""
    lock = tmp_path / "bootgate.lock"
    box.env["TANDEM_BOOTGATE_LOCK"] = str(lock)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)
    try:
        wait_for(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 1, timeout=30,
                 what="the lock to be held")
        before = box.env_vars()
        busy = box.gate("pass")
        assert busy.returncode == 1 and "another bootgate is running" in busy.stderr
        assert box.env_vars() == before
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and the sleep holding the lock with it
        holder.wait()
    assert box.gate("pass").returncode == 0  # free again
