"""Why the box last booted: the watchdog's boot status, pstore, the clean-shutdown marker."""

from __future__ import annotations

from pathlib import Path

from firmware.appliance import bootreason
from firmware.panel.screens import version


def _watchdog(root: Path, name: str, status: str, identity: str = "i6300ESB timer") -> None:
    device = root / "sys/class/watchdog" / name
    device.mkdir(parents=True)
    (device / "bootstatus").write_text(status + "\n")
    (device / "identity").write_text(identity + "\n")


def test_an_orderly_shutdown_then_a_power_loss(tmp_path: Path) -> None:
    state, root = tmp_path / "state", tmp_path / "root"
    _watchdog(root, "watchdog0", "0")
    bootreason.at_shutdown(state)
    assert bootreason.at_boot(state, root).reason == bootreason.CLEAN
    # The marker was spent: the next boot without an orderly shutdown is a power loss.
    assert bootreason.at_boot(state, root).reason == bootreason.POWER
    assert bootreason.last_boot(state)["reason"] == bootreason.POWER


def test_the_watchdogs_card_reset_flag_wins_over_everything(tmp_path: Path) -> None:
    state, root = tmp_path / "state", tmp_path / "root"
    _watchdog(root, "watchdog0", "0")
    _watchdog(root, "watchdog1", "32", "iTCO_wdt")   # WDIOF_CARDRESET
    bootreason.at_shutdown(state)
    verdict = bootreason.at_boot(state, root)
    assert verdict.reason == bootreason.WATCHDOG and "watchdog1 (iTCO_wdt)" in verdict.detail


def test_a_pstore_record_means_the_kernel_crashed(tmp_path: Path) -> None:
    state, root = tmp_path / "state", tmp_path / "root"
    archived = root / "var/lib/systemd/pstore/1700000000/dmesg-efi-170000000001"
    archived.parent.mkdir(parents=True)
    archived.write_text("Kernel panic - not syncing")
    verdict = bootreason.at_boot(state, root)
    assert verdict.reason == bootreason.CRASH and "dmesg-efi" in verdict.detail


def test_the_panel_shows_the_last_boot_reason() -> None:
    screen = version({"version": "1.0", "uptime_s": 60, "board": "x",
                      "last_boot": {"reason": bootreason.WATCHDOG, "detail": "…"}})
    assert "last boot: watchdog reset" in screen.lines
