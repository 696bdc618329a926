"""First boot of a freshly flashed box: its name from the hardware, its own keys, "unpaired".

The image carries nothing unique. On the box's first boot (and after a factory reset) this names the
box from its hardware (the DMI system serial number, else the device tree's serial number, else the
first Ethernet port's permanent MAC address) and makes its Ed25519 identity key, which pairing and the
bulk channel use. The cluster key and the node config come only from pairing.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware import paths
from firmware.appliance.mgmtnet import ethernet_ports
from firmware.core.journal import write_atomically
from firmware.pairing.identity import load_or_create_identity, public_hex

STATE_DIR = paths.STATE_DIR
BOX_RECORD = paths.BOX_RECORD_NAME
IDENTITY_KEY = paths.IDENTITY_KEY_NAME
# Firmware placeholders that are not serial numbers (seen on white-box boards and in dmidecode's docs).
PLACEHOLDERS = {"", "0", "none", "n/a", "default string", "to be filled by o.e.m.", "system serial number",
                "not specified", "not applicable", "0123456789", "chassis serial number", "123456789"}


@dataclass(frozen=True)
class BoxIdentity:
    """Who this box is: its serial number, where that came from, and its identity key's public half."""

    serial: str
    source: str
    identity: str
    created: float


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("ascii", "replace").strip()
    except OSError:
        return ""


def hardware_serial(sys_root: Path = Path("/")) -> tuple[str, str]:
    """The box's serial number and its source (``dmi``, ``devicetree``, ``mac``); ValueError if none."""
    dmi = _read(sys_root / "sys/class/dmi/id/product_serial")
    if dmi.lower() not in PLACEHOLDERS:
        return dmi, "dmi"
    tree = _read(sys_root / "sys/firmware/devicetree/base/serial-number")
    if tree.lower() not in PLACEHOLDERS:
        return tree, "devicetree"
    net = sys_root / "sys/class/net"
    for name in ethernet_ports(net):
        mac = _read(net / name / "address")
        if mac and mac != "00:00:00:00:00:00":
            return mac.replace(":", "").upper(), "mac"
    raise ValueError("no serial number: DMI and the device tree have none and there is no Ethernet port")


def first_boot(state_dir: Path = STATE_DIR, sys_root: Path = Path("/"), owner: str | None = "tandem") -> BoxIdentity:
    """Name the box and make its identity key, once; the record it writes (or finds)."""
    record = state_dir / BOX_RECORD
    if record.exists():
        return BoxIdentity(**json.loads(record.read_text()))
    serial, source = hardware_serial(sys_root)
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path = state_dir / IDENTITY_KEY
    key = load_or_create_identity(key_path)
    box = BoxIdentity(serial=serial, source=source, identity=public_hex(key), created=time.time())
    write_atomically(record, (json.dumps(asdict(box), indent=2) + "\n").encode(), mode=0o640)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        for path in (state_dir, key_path, record):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return box


def load_box(state_dir: Path | None = None) -> BoxIdentity | None:
    """The first-boot record, or None on a box that has not had its first boot (or a development PC)."""
    try:
        return BoxIdentity(**json.loads(((state_dir or STATE_DIR) / BOX_RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None
