"""Why the box last booted: a clean shutdown, a watchdog reset, a kernel crash, or lost power.

An operator who finds a box that rebooted overnight must see why, on the panel and in
``tandem status``. Three pieces of evidence, read once at boot by ``tandem boot-reason start``
(tandem-bootreason.service, as root, early):

- the hardware watchdog's boot status: ``/sys/class/watchdog/watchdog*/bootstatus`` has
  WDIOF_CARDRESET (0x20) when the watchdog reset the machine (i6300esb, iTCO_wdt, sp5100_tco …);
- pstore: records of the previous kernel's last words (``/sys/fs/pstore``, archived by
  systemd-pstore to ``/var/lib/systemd/pstore``) after a panic or oops;
- a marker written by the same unit's ``ExecStop`` during an orderly shutdown or reboot: present
  means the last boot ended cleanly.

None of these: the power went, or the reset button, or a hang without a watchdog. The verdict goes
to ``/var/lib/tandem/last-boot.json``; the daemon shows it in its status snapshot (``last_boot``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware import paths
from firmware.core.journal import write_atomically

WDIOF_CARDRESET = 0x0020
STATE_DIR = paths.STATE_DIR
RECORD = "last-boot.json"
CLEAN_MARKER = "shutdown-clean"

CLEAN = "clean shutdown"
WATCHDOG = "watchdog reset"
CRASH = "kernel crash"
POWER = "power loss or reset"


@dataclass(frozen=True)
class BootReason:
    """The verdict on the previous boot's end, with the evidence behind it."""

    reason: str
    detail: str
    time: float


def watchdog_resets(sys_root: Path = Path("/")) -> list[str]:
    """The watchdogs whose boot status says they reset the machine (e.g. ``watchdog0 (i6300ESB timer)``)."""
    found = []
    for device in sorted((sys_root / "sys/class/watchdog").glob("watchdog*")):
        try:
            status = int((device / "bootstatus").read_text().strip(), 0)
        except (OSError, ValueError):
            continue
        if status & WDIOF_CARDRESET:
            try:
                identity = (device / "identity").read_text().strip()
            except OSError:
                identity = "?"
            found.append(f"{device.name} ({identity})")
    return found


def pstore_records(sys_root: Path = Path("/")) -> list[str]:
    """Names of the kernel's crash records left by the previous boot (pstore, or systemd-pstore's archive)."""
    names: list[str] = []
    for directory in (sys_root / "sys/fs/pstore", sys_root / "var/lib/systemd/pstore"):
        try:
            names += sorted(p.name for p in directory.rglob("*") if p.is_file())
        except OSError:
            continue
    return names


def judge(clean_marker: bool, watchdogs: list[str], crashes: list[str], now: float) -> BootReason:
    """The verdict from the evidence (pure): the hardware's word first, then the kernel's, then ours."""
    if watchdogs:
        return BootReason(WATCHDOG, f"the hardware watchdog reset the box: {', '.join(watchdogs)}", now)
    if crashes:
        return BootReason(CRASH, f"the previous kernel left crash records: {', '.join(crashes[:4])}", now)
    if clean_marker:
        return BootReason(CLEAN, "the previous boot ended with an orderly shutdown or reboot", now)
    return BootReason(POWER, "no orderly shutdown, no watchdog, no crash record: power lost, reset button, "
                             "or a hang with no watchdog armed", now)


def at_boot(state_dir: Path = STATE_DIR, sys_root: Path = Path("/")) -> BootReason:
    """Judge the previous boot, record the verdict, and clear the clean-shutdown marker for this boot."""
    marker = state_dir / CLEAN_MARKER
    verdict = judge(marker.exists(), watchdog_resets(sys_root), pstore_records(sys_root), time.time())
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(state_dir / RECORD, (json.dumps(asdict(verdict)) + "\n").encode(), mode=0o644)
    marker.unlink(missing_ok=True)
    return verdict


def at_shutdown(state_dir: Path = STATE_DIR) -> None:
    """Leave the marker that says this boot ended in order (the unit's ExecStop)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(state_dir / CLEAN_MARKER, f"{time.time()}\n".encode(), mode=0o644)


def last_boot(state_dir: Path = STATE_DIR) -> dict[str, object] | None:
    """The recorded verdict for the status snapshot, or None where nothing judged this boot."""
    try:
        return json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
