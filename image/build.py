#!/usr/bin/env python3
"""Build Tandem's appliance disk image: ``./dev image`` runs this.

Three stages, each cached by what goes into it:

1. **Base root filesystem** (mmdebstrap, minbase): the Debian packages of
   ``image/packages.txt`` plus the maker's extra list, and a virtual environment
   in ``/opt/tandem`` holding Tandem's Python dependencies, installed from wheels
   built on this machine (the image has no compiler). Cached in
   ``$TANDEM_IMAGE_CACHE/base-<key>`` (default ``/var/cache/tandem-image``),
   keyed by the package lists, the dependency list, the apt sources and this
   stage's recipe, so a code change never rebuilds it.
2. **Slot root filesystem**: a copy of the base with Tandem's own wheel, the
   overlay (``image/overlay`` then the maker's ``--overlay``), the tandem user's
   groups and the first-boot clean-up (nothing unique stays in the image).
3. **Disk** (``image/disk.py``): GPT with BIOS boot, ESP, rootfs A and B and the
   data partition, built without mounts apart from grub-bios-setup's scratch
   directory; then ``.bmap``, ``.xz`` and ``SHA256SUMS``.

Everything runs as root (mmdebstrap --mode=root, chroot). The output directory
(default ``build/image``) gets ``tandem.img``, ``tandem.img.bmap``,
``tandem.img.xz``, ``SHA256SUMS``, ``vmlinuz`` and ``initrd.img`` (for direct
kernel boot in the VM tests) and ``build.json`` (sizes and times).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import disk  # noqa: E402  (image/disk.py, beside this file)
from disk import run  # noqa: E402  (one way to run a build step)
from pki import dev_pki  # noqa: E402  (image/pki.py: the development PKI, made on first use)

DEFAULT_CACHE = Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image"))
# RAUC's name for the board family a bundle is for: every x86 board profile (qemu-x86, x86-1u-*)
# runs the same root file system. A maker's own family gets its own string (--compatible).
DEFAULT_COMPATIBLE = "tandem-x86_64"
SUITE = "bookworm"
# Bump when the base stage's recipe changes in a way the inputs below do not show.
BASE_RECIPE = "4"
TANDEM_UID = 901
KEEP_BASES = 2
USRMERGE_AND_PERL = ("usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl", "perl",
                     "libperl5.36", "perl-modules-5.36")

# dpkg never unpacks these: documentation, translations, and kernel module trees no supported
# board needs (GPUs, sound, wireless, media, InfiniBand, exotic file systems). The boards are
# x86 rack servers and Raspberry-class boards with wired Ethernet, USB serial, I2C and a watchdog.
DPKG_EXCLUDES = [
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/linda/*",
    *[f"{prefix}/modules/*/kernel/{tree}/*" for prefix in ("/lib", "/usr/lib") for tree in (
        "sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless",
        "drivers/staging", "drivers/bluetooth", "drivers/isdn", "drivers/iio", "drivers/input/touchscreen",
        "drivers/input/joystick", "drivers/input/tablet", "drivers/input/misc", "drivers/net/can",
        "drivers/net/ethernet/mellanox", "drivers/net/ethernet/qlogic", "drivers/net/ethernet/chelsio",
        "drivers/net/ethernet/cavium", "drivers/net/ethernet/sfc", "drivers/net/wwan", "drivers/nfc",
        "drivers/thunderbolt", "drivers/target", "drivers/scsi/lpfc", "drivers/scsi/qla2xxx",
        "drivers/scsi/qla4xxx", "drivers/scsi/bfa", "drivers/scsi/be2iscsi", "drivers/scsi/bnx2fc",
        "drivers/scsi/fcoe", "drivers/scsi/csiostor", "drivers/scsi/cxgbi", "drivers/atm", "drivers/mtd",
        "drivers/platform/chrome", "drivers/hid/amd-sfh-hid", "drivers/video", "drivers/misc/habanalabs",
        "drivers/accel", "net/bluetooth", "net/wireless", "net/mac80211", "net/sunrpc", "net/ceph",
        "net/rxrpc", "net/tipc", "net/sctp", "net/rds", "net/9p",
        "fs/btrfs", "fs/xfs", "fs/ocfs2", "fs/gfs2", "fs/nfs", "fs/nfsd", "fs/ceph", "fs/smb", "fs/cifs",
        "fs/f2fs", "fs/jfs", "fs/reiserfs", "fs/ntfs3", "fs/ubifs", "fs/afs", "fs/coda", "fs/orangefs",
        "fs/dlm", "fs/nilfs2", "fs/hfsplus", "fs/hfs", "fs/udf", "fs/isofs", "fs/9p", "fs/bcachefs",
        "fs/erofs", "fs/lockd", "fs/nfs_common",
        # Buses, radios and NICs no rack PBX or single-board controller of ours has.
        "drivers/comedi", "drivers/firewire", "drivers/pcmcia", "drivers/parport", "drivers/memstick",
        "drivers/net/hamradio", "drivers/net/fddi", "drivers/net/arcnet", "drivers/net/plip",
        "drivers/net/slip", "drivers/net/wan", "drivers/net/ieee802154", "drivers/net/thunderbolt",
        "drivers/net/hippi", "drivers/net/ethernet/huawei", "drivers/net/ethernet/pensando",
        "drivers/net/ethernet/netronome", "drivers/net/ethernet/emulex", "drivers/net/ethernet/brocade",
        "drivers/net/ethernet/cisco", "drivers/net/ethernet/amazon", "drivers/net/ethernet/google",
        "drivers/net/ethernet/microsoft", "drivers/net/ethernet/fungible", "drivers/net/ethernet/ibm",
        "drivers/net/ethernet/3com", "drivers/net/ethernet/adaptec", "drivers/net/ethernet/agere",
        "drivers/net/ethernet/alacritech", "drivers/net/ethernet/alteon", "drivers/net/ethernet/dec",
        "drivers/net/ethernet/dlink", "drivers/net/ethernet/myricom", "drivers/net/ethernet/natsemi",
        "drivers/net/ethernet/neterion", "drivers/net/ethernet/ni", "drivers/net/ethernet/nvidia",
        "drivers/net/ethernet/packetengines", "drivers/net/ethernet/rdc", "drivers/net/ethernet/rocker",
        "drivers/net/ethernet/silan", "drivers/net/ethernet/sis", "drivers/net/ethernet/sun",
        "drivers/net/ethernet/tehuti", "drivers/net/ethernet/via", "drivers/net/ethernet/wangxun",
        "drivers/net/ethernet/xircom",
        "drivers/scsi/aic7xxx", "drivers/scsi/aic94xx", "drivers/scsi/mvsas", "drivers/scsi/pm8001",
        "drivers/scsi/isci", "drivers/scsi/esas2r", "drivers/scsi/snic", "drivers/scsi/fnic",
        "drivers/scsi/qedi", "drivers/scsi/qedf", "drivers/scsi/sym53c8xx_2", "drivers/scsi/bnx2i",
        "drivers/scsi/pcmcia", "drivers/scsi/mpi3mr", "arch/x86/kvm",
        "net/ieee802154", "net/6lowpan", "net/nfc", "net/batman-adv", "net/x25", "net/lapb", "net/can",
        "net/phonet", "net/mac802154", "net/caif", "net/dccp", "net/netrom", "net/rose", "net/ax25")],
]
DPKG_INCLUDES = ["/usr/share/doc/*/copyright"]

# The initramfs holds only what finds and mounts the root file system on the supported boards.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "nvme", "sd_mod", "xhci_pci",
                     "ehci_pci", "usb_storage", "uas", "mmc_block", "sdhci_pci", "ext4", "crc32c_generic"]


def log(message: str) -> None:
    """One progress line on stderr, with the time since the build started."""
    print(f"image: [{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


def read_list(path: Path) -> list[str]:
    """Package names from a list file: one per line, '#' comments and blank lines ignored."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.extend(line.split())
    return names


def runtime_requirements() -> list[str]:
    """Tandem's run-time Python dependencies, from pyproject.toml (not the test or lab extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def apt_sources() -> Path:
    """The host's deb822 apt sources file: the image comes from the archive the machine already uses."""
    for candidate in (Path("/etc/apt/sources.list.d/debian.sources"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))):
        if candidate.is_file():
            return candidate
    raise SystemExit("image: no deb822 apt sources file in /etc/apt/sources.list.d (mmdebstrap needs the Debian mirror)")


def base_key(packages: list[str], requirements: list[str], sources: Path) -> str:
    """What the base root file system is made of, hashed: its cache key."""
    recipe = {"recipe": BASE_RECIPE, "suite": SUITE, "packages": sorted(set(packages)),
              "requirements": requirements, "sources": sources.read_text(), "excludes": DPKG_EXCLUDES,
              "includes": DPKG_INCLUDES, "initramfs": INITRAMFS_MODULES, "uid": TANDEM_UID,
              "python": sys.version_info[:2]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def build_wheels(requirements: list[str], into: Path) -> None:
    """Wheels of the dependencies for this Python (the image's: Debian 12's 3.11), compiled here if need be."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "requirements.txt").write_text("\n".join(requirements) + "\n")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(into), "-r", str(into / "requirements.txt")])


def build_base(cache: Path, packages: list[str], requirements: list[str]) -> Path:
    """The cached base root file system, built (about 2 minutes) when its inputs changed."""
    sources = apt_sources()
    key = base_key(packages, requirements, sources)
    base = cache / f"base-{key}"
    if (base / ".complete").exists():
        log(f"base root file system {base} is cached")
        os.utime(base)  # most recently used: kept when older bases are dropped
        return base
    log(f"building the base root file system {base} (mmdebstrap, {len(packages)} packages)")
    scratch = cache / f"base-{key}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    wheels = cache / f"wheels-{key}"
    shutil.rmtree(wheels, ignore_errors=True)
    build_wheels(requirements, wheels)
    modules = "\n".join(INITRAMFS_MODULES) + "\n"
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=directory",
            f"--include={','.join(sorted(set(packages)))}",
            # Only what the listed packages depend on, not what they recommend: a box carries nothing
            # it does not need.
            "--aptopt=APT::Install-Recommends \"false\"",
            *[f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES],
            *[f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES],
            # Before the kernel is unpacked: a small initramfs and no suggested kernel helpers.
            "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\"",
            "--essential-hook=printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1/etc/initramfs-tools/conf.d/tandem.conf\"",
            f"--essential-hook=printf '{modules}' > \"$1/etc/initramfs-tools/modules\"",
            f"--customize-hook=mkdir -p \"$1/tmp/wheels\" && cp {wheels}/* \"$1/tmp/wheels/\"",
            "--customize-hook=chroot \"$1\" python3 -m venv /opt/tandem",
            "--customize-hook=chroot \"$1\" /opt/tandem/bin/pip install -q --no-index --find-links /tmp/wheels "
            "-r /tmp/wheels/requirements.txt",
            "--customize-hook=rm -rf \"$1/tmp/wheels\"",
            SUITE, str(scratch), str(sources)]
    run(argv)
    (scratch / ".complete").write_text(json.dumps({"key": key, "built": time.time()}))
    shutil.rmtree(wheels, ignore_errors=True)
    scratch.rename(base)
    # Keep the two most recently used bases (the release image and the VM tests' image differ by a
    # package list); drop older ones and any half-built leftovers.
    bases = sorted((p for p in cache.glob("base-*") if p.is_dir() and (p / ".complete").exists()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in bases[KEEP_BASES:] + [p for p in cache.glob("base-*.partial") if p != scratch]:
        shutil.rmtree(stale, ignore_errors=True)
    return base


def tandem_wheel(into: Path) -> Path:
    """Tandem's own wheel (pure Python), built from this checkout."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(into), str(ROOT)])
    wheels = list(into.glob("tandem_firmware-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"image: expected one tandem wheel in {into}, found {wheels}")
    return wheels[0]


def tandem_version() -> str:
    """Tandem's version, from pyproject.toml."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def build_id() -> str:
    """This build: UTC time and the checkout's commit (``+dirty`` when it has changes), e.g. 20261207T1420Z-acc14ff."""
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    head = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty=+dirty"], capture_output=True,
                          text=True)
    return f"{stamp}-{head.stdout.strip()}" if head.returncode == 0 else stamp


def chroot(root: Path, *argv: str) -> None:
    """Run a command inside the slot root file system."""
    run(["chroot", str(root), *argv])


def sync_overlay(source: Path, root: Path) -> None:
    """Copy an overlay tree onto the root file system (files owned by root, modes kept)."""
    run(["cp", "-a", "--no-preserve=ownership", f"{source}/.", str(root)])


def build_slot_root(base: Path, work: Path, overlays: list[Path], pbx: list[str]) -> Path:
    """The slot's root file system: base + Tandem + overlays + users, scrubbed of anything unique."""
    root = work / "rootfs"
    if root.exists():
        run(["rm", "-rf", str(root)])
    log("copying the base root file system")
    run(["cp", "-a", str(base), str(root)])
    (root / ".complete").unlink(missing_ok=True)
    wheel = tandem_wheel(work / "wheel")
    shutil.copy(wheel, root / "tmp" / wheel.name)
    log(f"installing {wheel.name}")
    chroot(root, "/opt/tandem/bin/pip", "install", "-q", "--no-deps", "--no-index", f"/tmp/{wheel.name}")
    (root / "tmp" / wheel.name).unlink()
    # Nothing installs Python packages on the box: pip leaves with the build.
    chroot(root, "/opt/tandem/bin/pip", "uninstall", "-q", "-y", "pip")
    (root / "usr/local/bin/tandem").unlink(missing_ok=True)
    (root / "usr/local/bin/tandem").symlink_to("/opt/tandem/bin/tandem")
    # Board profiles and the installer's documentation travel with the firmware.
    share, doc = root / "usr/share/tandem", root / "usr/share/doc/tandem"
    for target in (share / "board_profiles", doc):
        if target.exists():
            shutil.rmtree(target)
    shutil.copytree(ROOT / "board_profiles", share / "board_profiles")
    shutil.copytree(ROOT / "hardware_docs", doc / "hardware_docs")
    shutil.copy(ROOT / "README.md", doc / "README.md")
    for mount_point in ("data", "boot/efi"):
        (root / mount_point).mkdir(parents=True, exist_ok=True)
    for path, target in PERSISTENT_ETC.items():
        run(["rm", "-rf", str(root / path)])
        (root / path).symlink_to(target)
    for overlay in overlays:
        log(f"overlay {overlay}")
        sync_overlay(overlay, root)
    pbx_units(root, pbx)
    log("users, units, and removing what must be unique per box")
    for group in ("i2c", "gpio", "watchdog"):
        chroot(root, "groupadd", "--system", "-f", group)
    chroot(root, "groupadd", "--system", "--gid", str(TANDEM_UID), "tandem")
    chroot(root, "useradd", "--system", "--uid", str(TANDEM_UID), "--gid", str(TANDEM_UID),
           "--groups", "dialout,i2c,gpio,watchdog", "--home-dir", "/var/lib/tandem", "--no-create-home",
           "--shell", "/usr/sbin/nologin", "tandem")
    chroot(root, "systemctl", "enable", "tandem-firstboot.service", "tandem-bootreason.service",
           "tandem-factory-reset.service", "tandem-helper.socket", "tandem.service",
           "tandem-setup.service", "tandem-machine-id.service", "tandem-growdata.service",
           "tandem-bootgate.service", "tandem-bootgate.timer",
           "systemd-networkd.service",
           "systemd-resolved.service", "systemd-timesyncd.service")
    # Nothing that writes to the flash on a timer, and no second SMART poller beside Tandem's sensor.
    chroot(root, "systemctl", "mask", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
           "e2scrub_reap.service", "dpkg-db-backup.timer", "smartmontools.service")
    # An apt-free box: packages come only as whole signed bundles. usrmerge only converts a system
    # to merged /usr, which this one is from the start; it holds perl (46 MB) in the image.
    chroot(root, "dpkg", "--purge", "--force-remove-essential", "--force-depends", "apt", *[
        package for package in USRMERGE_AND_PERL if list((root / "var/lib/dpkg/info").glob(f"{package}[.:]*list"))])
    for path in ("etc/machine-id", "var/lib/dbus/machine-id"):
        (root / path).unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")  # empty: systemd makes one at boot (first boot semantics)
    for unique in ("var/lib/systemd/random-seed", "var/lib/systemd/credential.secret"):
        (root / unique).unlink(missing_ok=True)
    for leftover in ("var/cache/apt", "var/lib/apt", "var/cache/debconf/templates.dat-old",
                     "var/log/apt", "var/log/dpkg.log", "var/log/alternatives.log", "var/log/bootstrap.log"):
        run(["rm", "-rf", str(root / leftover)])
    return root


def setup_env(root: Path, board: str, pair_port: str, heartbeat_port: str) -> None:
    """What tandem-setup.service needs to know of the box: its board, the cable's port, the heartbeat port."""
    if not (ROOT / "board_profiles" / f"{board}.toml").is_file():
        raise SystemExit(f"image: --board {board}: no board_profiles/{board}.toml")
    env = root / "usr/lib/tandem/setup.env"
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text("# Written by image/build.py: tandem-setup.service's view of the box.\n"
                   f"TANDEM_BOARD={board}\nTANDEM_PAIR_PORT={pair_port}\nTANDEM_HEARTBEAT_PORT={heartbeat_port}\n")


def data_skeleton(work: Path, root: Path) -> Path:
    """The data partition's first content: the slot's /var (bound from /data/var at run time).

    The rest (Tandem's directories) is made at boot by tmpfiles.d, so a factory reset, which empties
    the partition, leaves a box that boots the same way.
    """
    skeleton = work / "data"
    if skeleton.exists():
        run(["rm", "-rf", str(skeleton)])
    skeleton.mkdir()
    run(["cp", "-a", str(root / "var"), str(skeleton / "var")])
    run(["rm", "-rf", str(root / "var")])
    (root / "var").mkdir()
    # The factory copy a reset makes the data partition from (firmware/appliance/factoryreset.py).
    factory = root / "usr/share/tandem/factory-data"
    factory.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", str(skeleton / "var"), str(factory / "var")])
    return skeleton


RAUC_SYSTEM_CONF = """# Written by Tandem's image build (image/build.py): RAUC's view of this box's A/B slots.
[system]
compatible={compatible}
bootloader=grub
grubenv=/boot/efi/EFI/BOOT/grubenv
statusfile=/data/rauc.status
bundle-formats=verity

[keyring]
path=/etc/rauc/keyring.pem

[slot.rootfs.0]
device=/dev/disk/by-partlabel/rootfs-a
type=ext4
bootname=A

[slot.rootfs.1]
device=/dev/disk/by-partlabel/rootfs-b
type=ext4
bootname=B
"""


def rauc_config(root: Path, compatible: str, keyring: Path) -> None:
    """RAUC's system config (the slots, GRUB's env, the board family) and the keyring bundles must chain to."""
    if not keyring.is_file():
        raise SystemExit(f"image: --keyring {keyring}: no such file")
    conf = root / "etc/rauc/system.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(RAUC_SYSTEM_CONF.format(compatible=compatible))
    shutil.copy(keyring, root / "etc/rauc/keyring.pem")


def package_manifest(root: Path, out: Path) -> Path:
    """Every Debian package in the slot with its version and source package (``packages.manifest``).

    Bundles carry it (what an update changes, and the list for a GPL source offer).
    """
    done = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                "-f=${Package}\t${Version}\t${source:Package}\t${source:Version}\n"],
               capture_output=True, text=True)
    manifest = out / "packages.manifest"
    manifest.write_text("# package\tversion\tsource\tsource version\n" + "".join(sorted(done.stdout.splitlines(True))))
    return manifest


def pbx_units(root: Path, units: list[str]) -> None:
    """Tie the PBX units to Tandem: never started at boot, stopped with Tandem, and startable by it.

    Tandem starts and stops them with ``systemctl`` as its own user, which goes over systemd's D-Bus
    API; the polkit rule written here allows exactly start, stop and restart of exactly these units
    (plus power-off and reboot for the panel, and networkd's reload and reconfigure for the panel's
    "Network undo"), and nothing else.
    """
    quoted = ", ".join(json.dumps(unit) for unit in units)
    rule = root / "etc/polkit-1/rules.d/50-tandem.rules"
    rule.parent.mkdir(parents=True, exist_ok=True)
    rule.write_text(POLKIT_RULE.replace("@UNITS@", quoted))
    for unit in units:
        dropin = root / f"etc/systemd/system/{unit}.d/10-tandem.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(PBX_DROPIN)
        if (root / f"lib/systemd/system/{unit}").exists():
            chroot(root, "systemctl", "disable", "--quiet", unit)


POLKIT_RULE = """// Written by Tandem's image build. The tandem daemon starts and stops the PBX with systemctl, over
// systemd's D-Bus API; this allows exactly that for exactly the PBX units, tandem.service itself
// (`tandem setup` starts it once the box is paired at the panel), the panel's power-off and reboot,
// and networkd's reload and reconfigure (the panel's "Network undo" applies the box's own port
// settings). Nothing else: every other request of the tandem user falls through to polkit's defaults.
polkit.addRule(function(action, subject) {
    if (subject.user != "tandem")
        return polkit.Result.NOT_HANDLED;
    if (action.id == "org.freedesktop.systemd1.manage-units") {
        var units = [@UNITS@, "tandem.service", "poweroff.target", "reboot.target"];
        var verbs = ["start", "stop", "restart"];
        if (units.indexOf(action.lookup("unit")) >= 0 && verbs.indexOf(action.lookup("verb")) >= 0)
            return polkit.Result.YES;
    }
    // The -multiple-sessions and -ignore-inhibit variants: logind asks for them while anyone else is
    // logged in (an installer on the console or over SSH) or holds an inhibitor; an operator's or an
    // update's reboot must not wait for either (the daemon has left the cluster before it asks).
    var power = ["org.freedesktop.login1.power-off", "org.freedesktop.login1.reboot",
                 "org.freedesktop.login1.power-off-multiple-sessions",
                 "org.freedesktop.login1.reboot-multiple-sessions",
                 "org.freedesktop.login1.power-off-ignore-inhibit",
                 "org.freedesktop.login1.reboot-ignore-inhibit"];
    if (power.indexOf(action.id) >= 0)
        return polkit.Result.YES;
    if (action.id == "org.freedesktop.network1.reload" || action.id == "org.freedesktop.network1.reconfigure")
        return polkit.Result.YES;
    return polkit.Result.NOT_HANDLED;
});
"""

PBX_DROPIN = """# Written by Tandem's image build: Tandem owns this unit on a clustered box. It is never started at
# boot by itself (the unit is disabled; only the ACTIVE node's Tandem starts it), and it stops when
# Tandem stops, so a stopped Tandem never leaves a PBX running. Tandem's ExecStopPost
# (`tandem release`) stops it too when the daemon dies.
[Unit]
PartOf=tandem.service
"""

# Paths of /etc that change at run time live on the data partition (the slot is read-only).
PERSISTENT_ETC = {"etc/tandem": "/data/etc/tandem", "etc/systemd/network": "/data/etc/network"}


def main(argv: list[str] | None = None) -> int:
    """Command line: build the image, print where it is."""
    parser = argparse.ArgumentParser(description="Build Tandem's appliance disk image (as root).")
    parser.add_argument("--out", type=Path, default=ROOT / "build/image", help="output directory")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache of the base root file system")
    parser.add_argument("--packages", type=Path, action="append", default=[],
                        help="extra Debian packages (a list file, one name per line); repeatable")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="a directory copied over the root file system after Tandem's own; repeatable")
    parser.add_argument("--pbx-unit", action="append", default=[],
                        help="the PBX's systemd unit Tandem owns (default asterisk.service); repeatable")
    parser.add_argument("--board", default="qemu-x86",
                        help="the board profile of the box this image is for (its front panel, for pairing at it)")
    parser.add_argument("--pair-port", default="/dev/ttyS1", help="the serial crossover cable's port")
    parser.add_argument("--heartbeat-port", default="hb0",
                        help="the network port whose address a box offers for heartbeats when paired at the panel")
    parser.add_argument("--compatible", default=DEFAULT_COMPATIBLE,
                        help=f"RAUC's board family string: bundles for another are refused (default {DEFAULT_COMPATIBLE})")
    parser.add_argument("--keyring", type=Path,
                        help="the CA certificate (PEM) update bundles must chain to (default: the development "
                             "PKI, made on first use in $TANDEM_PKI_DIR or ~/.local/share/tandem/dev-pki)")
    parser.add_argument("--no-xz", action="store_true", help="skip the .xz (the VM tests need only the .img)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("image: building the image needs root (mmdebstrap --mode=root, chroot)")
    packages = read_list(HERE / "packages.txt")
    for extra in args.packages:
        packages += read_list(extra)
    for overlay in args.overlay:
        if not overlay.is_dir():
            raise SystemExit(f"image: --overlay {overlay}: not a directory")
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float | int | str] = {}
    t0 = time.monotonic()
    base = build_base(args.cache, packages, runtime_requirements())
    figures["base_s"] = round(time.monotonic() - t0, 1)
    work = args.cache / "work"
    work.mkdir(exist_ok=True)
    t1 = time.monotonic()
    root = build_slot_root(base, work, [HERE / "overlay", *args.overlay], args.pbx_unit or ["asterisk.service"])
    setup_env(root, args.board, args.pair_port, args.heartbeat_port)
    rauc_config(root, args.compatible, args.keyring or dev_pki().keyring)
    package_manifest(root, args.out)
    skeleton = data_skeleton(work, root)
    result = disk.build_disk(root, skeleton, HERE / "grub.cfg", args.out, work, log=log)
    figures.update(result)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy(root / name, args.out / name)
    if not args.no_xz:
        log("compressing (xz -6 -T0)")
        figures["xz_mib"] = disk.compress(args.out / "tandem.img")
    disk.write_sums(args.out)
    figures["image_s"] = round(time.monotonic() - t1, 1)
    figures["rootfs_used_mib"] = disk.tree_mib(root)
    figures.update(compatible=args.compatible, version=tandem_version(), build=build_id())
    (args.out / "build.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(f"done: {args.out}/tandem.img  {json.dumps(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
