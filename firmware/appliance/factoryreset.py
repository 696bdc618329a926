"""Factory reset: the box goes back to "unpaired", its data partition wiped, as an installer can trust.

The data partition is in use while the box runs (the journal, Tandem's state, ``/var``), so the wipe
happens at the next boot, before the partition is mounted: ``request()`` leaves a flag on the ESP
and the caller reboots; ``tandem-factory-reset.service`` (ordered before ``data.mount``) finds the
flag and runs ``wipe()``: a new ext4 file system over the whole partition, made with discard (the
SSD forgets every old block) and filled with the image's factory ``/var``. Then the first boot runs
again: new identity key, no cluster key, no config, "unpaired".
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from firmware.appliance import machineid

from firmware.core.journal import write_atomically

log = logging.getLogger(__name__)

FLAG = Path("/boot/efi/tandem-factory-reset")
DATA_DEVICE = Path("/dev/disk/by-partlabel/data")
FACTORY_DATA = Path("/usr/share/tandem/factory-data")


class FactoryResetError(RuntimeError):
    """The reset could not be requested or carried out; the message says which step failed."""


def request(flag: Path = FLAG) -> None:
    """Ask for a wipe at the next boot (the ESP survives the wipe and is read before the data mount)."""
    if not flag.parent.is_dir():
        raise FactoryResetError(f"{flag.parent} is not mounted: cannot leave the reset flag on the ESP")
    write_atomically(flag, b"factory reset requested\n", mode=0o600)
    try:  # the box comes back with a new machine id too (firmware/appliance/machineid.py)
        machineid.forget(flag.parent / "EFI/BOOT/grubenv")
    except machineid.MachineIdError as exc:
        log.warning("factory reset: the machine id is kept: %s", exc)


def wipe(device: Path = DATA_DEVICE, factory: Path = FACTORY_DATA, flag: Path = FLAG) -> None:
    """Make the data file system anew from the factory content, then clear the flag (the boot unit)."""
    if not factory.is_dir():
        raise FactoryResetError(f"{factory} is missing: the image has no factory data to restore")
    done = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "data", "-E", "discard",
                           "-d", str(factory), str(device)], capture_output=True, text=True)
    if done.returncode != 0:
        raise FactoryResetError(f"mke2fs {device} failed: {(done.stderr or done.stdout).strip()}")
    flag.unlink(missing_ok=True)
