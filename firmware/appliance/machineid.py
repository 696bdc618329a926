"""A machine id that lasts from boot to boot on a read-only root: kept in GRUB's environment block.

The slot is read-only and ships an empty ``/etc/machine-id`` (nothing unique in the image), so systemd
makes a new, transient id at every boot. journald files each boot under ``/var/log/journal/<id>/``
and ``journalctl`` reads only the current id's directory: after a watchdog reset, ``journalctl -b -1``
would find nothing. The id must be the same from the very start of the boot, before the data
partition is mounted, so it is kept where GRUB can read it: first boot writes it as ``MACHINE_ID``
into the grubenv on the ESP (``grub-editenv``), and ``image/grub.cfg`` passes it to the kernel as
``systemd.machine_id=``, which systemd takes as the machine id.

`tandem-machine-id.service` (``python -m firmware.appliance.machineid``) keeps it at every boot whose
kernel command line has none yet: the first boot, the boot after a factory reset, or a boot whose
ESP could not be mounted the time before. It keeps the id systemd made for that boot, so that
boot's journal is found later too.
A factory reset removes ``MACHINE_ID`` when it is asked for, so the boot that wipes the data runs
with a new transient id, which the first boot after the wipe keeps: nothing of the old box's
identity survives.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

GRUBENV = Path("/boot/efi/EFI/BOOT/grubenv")
VARIABLE = "MACHINE_ID"
_ID = re.compile(r"^[0-9a-f]{32}$")


class MachineIdError(RuntimeError):
    """The machine id could not be read or kept; the message says which step failed."""


def choose(current: str) -> str:
    """The id to keep: this boot's (systemd made it), or a new one if it is not a machine id."""
    current = current.strip()
    return current if _ID.match(current) else uuid.uuid4().hex


def keep(grubenv: Path = GRUBENV, machine_id: Path = Path("/etc/machine-id"), editenv: str = "grub-editenv") -> str:
    """Write the id GRUB passes to every later boot; the id (first boot, as root)."""
    try:
        chosen = choose(machine_id.read_text())
    except OSError as exc:
        raise MachineIdError(f"cannot read this boot's machine id: {exc}") from None
    _editenv(editenv, grubenv, "set", f"{VARIABLE}={chosen}")
    return chosen


def main() -> int:
    """Keep this boot's machine id (tandem-machine-id.service); 1 with the reason if it cannot."""
    try:
        print(f"machine id {keep()} kept for every boot (grubenv)")
    except MachineIdError as exc:
        print(f"tandem: the machine id was not kept: {exc}", file=sys.stderr)
        return 1
    return 0


def forget(grubenv: Path = GRUBENV, editenv: str = "grub-editenv") -> None:
    """Remove the kept id (a factory reset): the next first boot makes a new one."""
    _editenv(editenv, grubenv, "unset", VARIABLE)


def _editenv(editenv: str, grubenv: Path, *args: str) -> None:
    if not grubenv.exists():
        raise MachineIdError(f"{grubenv} does not exist (is the ESP mounted?)")
    try:
        done = subprocess.run([editenv, str(grubenv), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MachineIdError(f"{editenv}: {exc}") from None
    if done.returncode != 0:
        raise MachineIdError(f"{editenv} {grubenv} {' '.join(args)}: {(done.stderr or done.stdout).strip()}")


if __name__ == "__main__":
    sys.exit(main())
