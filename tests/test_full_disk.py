"""A full disk under a real daemon (issue 14): an alarm, commands refused not lost, failover never waits on it.

Needs root: the ACTIVE node's state folder is a 2 MiB tmpfs of its own, filled
to the last byte while the daemon runs.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.core.journal import read_journal
from helpers import new_rack
from sim.rack import TwoNodeRack

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs as a node's state folder")]


class SmallDisk:
    """A tmpfs mounted at `path`, filled and freed on demand."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the disk refuses one more byte."""
        with open(self.filler, "ab", buffering=0) as handle:
            for block in (65536, 4096, 1):
                try:
                    while handle.write(b"\0" * block):
                        pass
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        # The filler is full size now; a journal line no longer fits.

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def full_disk_rack(tmp_path: Path) -> Iterator[tuple[TwoNodeRack, SmallDisk]]:
    rack = new_rack(tmp_path)
    disk = SmallDisk(rack.base / "alpha" / "state")
    try:
        with rack:  # starts both nodes
            rack.wait_settled(timeout=60)
            yield rack, disk
    finally:
        disk.unmount()


def fill_journal_slack(rack: TwoNodeRack, name: str) -> None:
    """Journal events until the disk refuses one: the journal file's last block had room left."""
    for _ in range(500):
        rack.control(name, {"cmd": "sim.health", "value": 100})  # journals a `health` event each time
        if "journal/critical" in alarm_keys(rack.brief(name)):
            return
    raise AssertionError(f"{name}'s journal never reported the full disk")


def alarm_keys(brief: dict | None) -> list[str]:
    """The keys of the alarms in a node's `state` answer."""
    return [] if brief is None else [a["key"] for a in brief["alarms"]]


def test_a_full_disk_refuses_commands_raises_an_alarm_and_never_stalls_a_failover(full_disk_rack) -> None:
    rack, disk = full_disk_rack
    disk.fill()
    fill_journal_slack(rack, "alpha")
    # An operator command that cannot be made durable is refused, and nothing changes.
    refused = rack.cli("alpha", "demote")
    assert refused.returncode != 0 and "disk full" in refused.stderr, refused
    assert rack.state("alpha") == "ACTIVE"
    assert "journal/critical" in alarm_keys(rack.brief("alpha"))
    # A failover decision never waits on the disk: a health drop hands over although the state
    # file cannot be written (it used to stay in RELEASING: the failing save kept the report back).
    rack.control("alpha", {"cmd": "sim.health", "value": 10})
    rack.wait_state("bravo", "ACTIVE", timeout=30)
    rack.wait_state("alpha", "STANDBY", timeout=30)
    # Space is freed: the journal writes what it kept, the alarm goes, commands work again.
    disk.free()
    rack.wait_until("alpha", lambda b: "journal/critical" not in alarm_keys(b), 15,
                    what="the journal alarm gone on alpha")
    kinds = [r["kind"] for r in read_journal(rack.journal_path("alpha"))]
    assert kinds.count("request") == 0, kinds  # the refused demote left no record
    rack.control("alpha", {"cmd": "sim.health", "value": None})
    assert rack.cli("alpha", "maintenance", "on").returncode == 0
    requests = [r["data"] for r in read_journal(rack.journal_path("alpha")) if r["kind"] == "request"]
    assert requests == [{"cmd": "maintenance-on", "source": "cli", "force": False}]


def test_a_restart_on_a_full_disk_starts_with_an_alarm(full_disk_rack) -> None:
    """Issue 14: a restart with a full disk exited with a traceback."""
    rack, disk = full_disk_rack
    rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=30)
    disk.fill()
    rack.start_node("alpha")  # its first events fill the journal's last block, then the disk refuses
    rack.wait_state("alpha", "STANDBY", timeout=60)
    # boot.json (rewritten at every start) could not be written: the alarm says so.
    assert "disk:boot record/critical" in alarm_keys(rack.brief("alpha"))
    assert "Traceback" not in rack.log_path("alpha").read_text()
