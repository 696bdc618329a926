"""A box's RAUC for tests: the real RAUC service on a private system bus, GRUB's env in a file.

RAUC's service runs on a dbus-daemon of the test's own, with a system config like the image's:
GRUB's backend writes a grubenv file in the test's directory with the real `grub-editenv`, and
``--override-boot-slot`` says which slot "booted". What GRUB itself does at a boot (pick a slot,
spend the try of the slot on trial) is set in grubenv by the test; the VM tests boot the real GRUB.
`systemctl` is replaced by a recorder: the boot gate's reboot is asked for, not done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers import wait_for
from sim.vm.update import rauc_slots

ROOT = Path(__file__).resolve().parent.parent
BOOTGATE = ROOT / "image/overlay/usr/libexec/tandem/bootgate"
TOOLS = {"rauc": "rauc", "grub-editenv": "grub-common", "dbus-daemon": "dbus-daemon"}
MISSING = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
WHY_NOT = f"needs {', '.join(MISSING)}; ./dev test installs them" if MISSING else ""

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"""

# The image's /etc/rauc/system.conf (image/build.py), with the test's grubenv, status file and slots.
SYSTEM_CONF = """[system]
compatible=tandem-x86_64
bootloader=grub
grubenv={base}/grubenv
statusfile={base}/rauc.status

[slot.rootfs.0]
device={base}/rootfs-a
type=ext4
bootname=A

[slot.rootfs.1]
device={base}/rootfs-b
type=ext4
bootname=B
"""


class Box:
    """One box's RAUC service and grubenv; `boot(slot)` restarts the service as if `slot` had booted."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.grubenv = base / "grubenv"
        self.result = base / "data/update-result"
        self.flag = base / "run/trial"
        self.reboots = base / "reboots"
        socket = base / "bus.sock"
        (base / "bus.conf").write_text(BUS_CONF.format(socket=socket))
        (base / "system.conf").write_text(SYSTEM_CONF.format(base=base))
        for slot in ("rootfs-a", "rootfs-b"):
            (base / slot).write_bytes(b"")
        shims = base / "bin"
        shims.mkdir()
        (shims / "systemctl").write_text(f"#!/bin/sh\necho \"$*\" >> {self.reboots}\n")
        (shims / "systemctl").chmod(0o755)
        # The image's first grubenv (image/disk.py): slot A good and first.
        subprocess.run(["grub-editenv", str(self.grubenv), "create"], check=True)
        self.set("ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0")
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket}",
                    "PATH": f"{shims}:{os.environ['PATH']}", "TANDEM_GRUBENV": str(self.grubenv),
                    "TANDEM_UPDATE_RESULT": str(self.result), "TANDEM_TRIAL_FLAG": str(self.flag),
                    "TANDEM_BOOTGATE_LOCK": str(base / "bootgate.lock")}
        self.bus = subprocess.Popen(["dbus-daemon", "--nofork", "--config-file", str(base / "bus.conf")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(socket.exists, timeout=30, what="the private system bus")
        self.service: subprocess.Popen | None = None

    def boot(self, slot: str) -> None:
        """Start RAUC's service as it starts on a box whose kernel was given rauc.slot=`slot`."""
        self.stop_service()
        self.service = subprocess.Popen(
            ["rauc", "service", f"--conf={self.base / 'system.conf'}", f"--override-boot-slot={slot}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.rauc("status", "--output-format=shell").returncode == 0, timeout=30,
                 what="RAUC's service on the private bus")

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.terminate()
            self.service.wait(timeout=30)
            self.service = None

    def close(self) -> None:
        self.stop_service()
        self.bus.terminate()
        self.bus.wait(timeout=30)

    def rauc(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rauc", *args], env=self.env, capture_output=True, text=True, timeout=60)

    def daemon_env(self) -> dict[str, str]:
        """What a daemon on this box needs in its environment to run its boot gate (bus, paths, shims)."""
        return {key: value for key, value in self.env.items()
                if key in ("DBUS_SYSTEM_BUS_ADDRESS", "PATH") or key.startswith("TANDEM_")}

    def gate(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the boot gate with `args` as this box's root would (`env`: more of its environment)."""
        return subprocess.run([str(BOOTGATE), *args], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=60)

    def set(self, *assignments: str) -> None:
        """What GRUB (or RAUC) writes into grubenv."""
        subprocess.run(["grub-editenv", str(self.grubenv), "set", *assignments], check=True)

    def env_vars(self) -> dict[str, str]:
        listing = subprocess.run(["grub-editenv", str(self.grubenv), "list"], check=True, capture_output=True,
                                 text=True).stdout
        return dict(line.split("=", 1) for line in listing.splitlines() if "=" in line)

    def boot_status(self) -> dict[str, str]:
        """Each slot's boot status as RAUC reports it, by bootname."""
        return rauc_slots(self.rauc("status", "--output-format=shell").stdout)[1]

    def last_result(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.result.read_text().splitlines())


def installed_into_b(box: Box) -> None:
    """`bootgate begin`, then what `rauc install` leaves in grubenv when it is done: B first and good."""
    done = box.gate("begin")
    assert done.returncode == 0, done.stderr
    assert box.env_vars()["TRIAL"] == "B"
    activated = box.rauc("status", "mark-active", "other")  # the bootloader half of an install
    assert activated.returncode == 0, activated.stderr


def boot_b_on_trial(box: Box) -> None:
    """GRUB picks B (first in ORDER, good, try unspent) and, B being on trial, spends its try."""
    assert box.env_vars()["ORDER"] == "B A" and box.env_vars()["B_TRY"] == "0"
    box.set("B_TRY=1")
    box.boot("B")
