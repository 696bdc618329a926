"""The board's power backend: a power-off or reboot that is refused is said, and the daemon comes back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from firmware.core.actions.power import PowerError, SystemPower
from sim.rack import TwoNodeRack

ROOT = Path(__file__).resolve().parents[1]
REFUSED = ["sh", "-c", "echo 'Access denied' >&2; exit 1"]


def test_the_command_run_is_described() -> None:
    assert SystemPower(reboot=["true"]).request("reboot") == "ran true"


@pytest.mark.parametrize("argv, words", [(REFUSED, "exited 1: Access denied"),
                                         (["/nonexistent/systemctl", "reboot"], "No such file")])
def test_a_refused_or_missing_command_raises_with_its_reason(argv: list[str], words: str) -> None:
    with pytest.raises(PowerError, match=words):
        SystemPower(poweroff=argv).request("poweroff")


def test_the_default_commands_do_not_wait_for_logged_in_users() -> None:
    """An unprivileged `systemctl reboot` refuses while anyone else is logged in; the daemon's must not."""
    power = SystemPower()
    assert power.commands["reboot"] == ["systemctl", "reboot", "--check-inhibitors=no"]
    assert power.commands["poweroff"] == ["systemctl", "poweroff", "--check-inhibitors=no"]


@pytest.mark.integration
def test_a_reboot_the_box_refuses_is_journaled_and_the_daemon_exits_to_be_restarted(
        racks: Callable[..., TwoNodeRack], tmp_path: Path) -> None:
    profile = (ROOT / "board_profiles/sim.toml").read_text()
    old = 'power = { driver = "sim.power:RecordingPower" }'
    assert old in profile
    board = tmp_path / "refusing-power.toml"  # a JSON array of strings is a TOML one
    board.write_text(profile.replace(old, f'power = {{ driver = "firmware.core.actions.power:SystemPower", '
                                          f'reboot = {json.dumps(REFUSED)} }}'))
    rack = racks(board=str(board))
    done = rack.cli("bravo", "reboot")
    assert done.returncode == 0, done.stderr  # bravo left the cluster as asked
    proc = rack.procs["bravo"]
    assert proc.wait(timeout=60) == 1  # not 0: systemd's Restart=on-failure starts it again
    power = [r["data"] for r in rack.journal_file("bravo") if r["kind"] == "power"]
    assert power == [{"action": "reboot", "detail": "sh -c echo 'Access denied' >&2; exit 1 exited 1: Access denied",
                      "failed": True}]
