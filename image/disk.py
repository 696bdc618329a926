"""The GPT disk image: BIOS boot, ESP, rootfs A and B, data; built without mounting the image.

Layout (partition numbers are what GRUB and RAUC name the slots by; PARTUUIDs are fixed so the
kernel command line can name the root by them):

| # | label     | start     | size     | content                                         |
|---|-----------|-----------|----------|-------------------------------------------------|
| 5 | bios-boot | 1 MiB     | 1 MiB    | GRUB i386-pc core.img (BIOS path)                |
| 1 | esp       | 2 MiB     | 64 MiB   | FAT32 7A4D-0001: BOOTX64.EFI, grub.cfg, grubenv  |
| 2 | rootfs-a  | 66 MiB    | 1 GiB    | ext4, the slot this image boots first            |
| 3 | rootfs-b  |           | 1 GiB    | empty until the first update                     |
| 4 | data      | last      | 256 MiB  | ext4, grown at first boot to the end of the disk |

The data partition is last so that first boot can grow it to the end of the disk
(firmware/appliance/growdata.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

MIB = 1024 * 1024
ESP_MIB = 64
SLOT_MIB = 1024
DATA_MIB = 256
ESP_VOLUME_ID = "7A4D0001"   # mkfs.vfat -i; GRUB searches for it as 7A4D-0001
DISK_GUID = "7a4d0000-0000-4000-8000-000000000000"
PARTUUID = {"esp": "7a4d0000-0000-4000-8000-000000000001", "rootfs-a": "7a4d0000-0000-4000-8000-00000000000a",
            "rootfs-b": "7a4d0000-0000-4000-8000-00000000000b", "data": "7a4d0000-0000-4000-8000-0000000000da",
            "bios-boot": "7a4d0000-0000-4000-8000-0000000000b1"}
ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GRUB_PC = Path("/usr/lib/grub/i386-pc")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run one step; a failure stops the build naming the command."""
    try:
        return subprocess.run(argv, check=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"image: {' '.join(map(str, argv))} failed with exit status {exc.returncode}") from None


def tree_mib(path: Path) -> int:
    """Disk use of a directory tree, MiB (du)."""
    out = subprocess.run(["du", "-s", "--block-size=1M", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def make_esp(grub_cfg: Path, work: Path) -> Path:
    """The FAT32 ESP: UEFI's standalone GRUB, BIOS GRUB's modules, the shared grub.cfg and grubenv."""
    esp_dir = work / "esp"
    shutil.rmtree(esp_dir, ignore_errors=True)
    esp_dir.mkdir()
    efi = esp_dir / "BOOTX64.EFI"
    # The modules are preloaded, not left to autoload from the memdisk: without `fat` (and the search
    # modules) in the core, `search --fs-uuid 7A4D-0001` finds no device ("error: no such device"), $esp
    # stays empty, load_env reads nothing and every slot looks bad (A_OK=0). That was the reference
    # build's UEFI grubenv failure; the BIOS core image always listed them.
    run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
         "--modules=part_gpt fat ext2 search search_fs_uuid regexp loadenv test linux echo serial terminal",
         f"boot/grub/grub.cfg={grub_cfg}"])
    env = esp_dir / "grubenv"
    run(["grub-editenv", str(env), "create"])
    run(["grub-editenv", str(env), "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"])
    image = work / "esp.vfat"
    image.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-F", "32", "-i", ESP_VOLUME_ID, "-n", "ESP", str(image), str(ESP_MIB * 1024)],
        stdout=subprocess.DEVNULL)
    mtools = ["-i", str(image)]
    run(["mmd", *mtools, "::EFI", "::EFI/BOOT", "::boot", "::boot/grub", "::boot/grub/i386-pc"])
    run(["mcopy", *mtools, str(efi), str(env), "::EFI/BOOT/"])
    run(["mcopy", *mtools, str(grub_cfg), "::boot/grub/grub.cfg"])
    modules = sorted(str(p) for p in GRUB_PC.glob("*.mod")) + sorted(str(p) for p in GRUB_PC.glob("*.lst"))
    run(["mcopy", *mtools, *modules, "::boot/grub/i386-pc/"])
    return image


def make_ext4(label: str, source: Path, size_mib: int, into: Path) -> Path:
    """An ext4 file system image populated from a directory (mke2fs -d: no mount)."""
    into.unlink(missing_ok=True)
    run(["mke2fs", "-q", "-t", "ext4", "-L", label, "-E", "root_owner=0:0", "-d", str(source), str(into), f"{size_mib}M"])
    return into


def partition(image: Path) -> None:
    """Write the GPT (sfdisk), with fixed PARTUUIDs."""
    esp_start = 2
    a_start = esp_start + ESP_MIB
    b_start = a_start + SLOT_MIB
    data_start = b_start + SLOT_MIB
    table = "\n".join([
        "label: gpt", f"label-id: {DISK_GUID}",
        f"start={esp_start}MiB, size={ESP_MIB}MiB, type=uefi, name=esp, uuid={PARTUUID['esp']}",
        f"start={a_start}MiB, size={SLOT_MIB}MiB, type={ROOT_X86_64}, name=rootfs-a, uuid={PARTUUID['rootfs-a']}",
        f"start={b_start}MiB, size={SLOT_MIB}MiB, type={ROOT_X86_64}, name=rootfs-b, uuid={PARTUUID['rootfs-b']}",
        f"start={data_start}MiB, size={DATA_MIB}MiB, type=linux, name=data, uuid={PARTUUID['data']}",
        f"start=1MiB, size=1MiB, type={BIOS_BOOT}, name=bios-boot, uuid={PARTUUID['bios-boot']}",
    ]) + "\n"
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(image)], input=table.encode())


def place(part: Path, image: Path, start_mib: int) -> None:
    """Copy a file system image into the disk image at an offset, keeping holes."""
    run(["dd", f"if={part}", f"of={image}", "bs=1M", f"seek={start_mib}", "conv=notrunc,sparse", "status=none"])


class NoLoopDevice(RuntimeError):
    """This machine cannot loop-mount (a container without loop devices): no BIOS boot code then."""


def install_bios_grub(image: Path, work: Path) -> None:
    """GRUB's BIOS boot code: boot.img in the MBR gap, core.img in the BIOS boot partition.

    grub-bios-setup insists on reading boot.img and core.img from a block device it can open (it has no
    option to skip that), so they go into a small loop-mounted scratch file system: the build's only mount.
    """
    pc = work / "pcboot"
    shutil.rmtree(pc, ignore_errors=True)
    pc.mkdir()
    early = pc / "early.cfg"
    early.write_text("search --no-floppy --fs-uuid --set=root 7A4D-0001\nset prefix=($root)/boot/grub\n")
    run(["grub-mkimage", "-O", "i386-pc", "-o", str(pc / "core.img"), "-c", str(early), "-p", "/boot/grub",
         "biosdisk", "part_gpt", "fat", "search", "search_fs_uuid"])
    shutil.copy(GRUB_PC / "boot.img", pc / "boot.img")
    scratch = work / "pc.ext4"
    scratch.unlink(missing_ok=True)
    run(["mke2fs", "-q", "-t", "ext4", "-d", str(pc), str(scratch), "8M"])
    with tempfile.TemporaryDirectory(dir=work) as mnt:
        mounted = subprocess.run(["mount", "-o", "loop,ro", str(scratch), mnt], capture_output=True, text=True)
        if mounted.returncode != 0:
            raise NoLoopDevice((mounted.stderr or mounted.stdout).strip() or f"exit {mounted.returncode}")
        try:
            device_map = work / "device.map"
            device_map.write_text(f"(hd0) {image}\n")
            run([str(GRUB_PC / "grub-bios-setup"), "-s", "-d", mnt, "-m", str(device_map), str(image)],
                stdout=subprocess.DEVNULL)
        finally:
            run(["umount", mnt])


def build_disk(root: Path, data: Path, grub_cfg: Path, out: Path, work: Path,
               log: Callable[[str], None] = print) -> dict[str, float | int]:
    """Assemble ``out/tandem.img`` and its ``.bmap``; return sizes and times."""
    started = time.monotonic()
    log("ESP (grub-mkstandalone, mkfs.vfat, mtools)")
    esp = make_esp(grub_cfg, work)
    log("rootfs-a (mke2fs -d)")
    slot = make_ext4("rootfs-a", root, SLOT_MIB, work / "rootfs.ext4")
    data_fs = make_ext4("data", data, DATA_MIB, work / "data.ext4")
    image = out / "tandem.img"
    image.unlink(missing_ok=True)
    total_mib = 2 + ESP_MIB + 2 * SLOT_MIB + DATA_MIB + 1
    with image.open("wb") as handle:
        handle.truncate(total_mib * MIB)
    partition(image)
    place(esp, image, 2)
    place(slot, image, 2 + ESP_MIB)
    place(data_fs, image, 2 + ESP_MIB + 2 * SLOT_MIB)
    log("BIOS boot code (grub-bios-setup)")
    bios_boot = True
    try:
        install_bios_grub(image, work)
    except NoLoopDevice as exc:
        # The image still boots by UEFI (and the VM tests boot its kernel directly); say so loudly.
        log(f"WARNING: no BIOS boot code in this image: grub-bios-setup needs a loop mount, which failed: {exc}")
        bios_boot = False
    # The slot image also goes out on its own: it is what an update bundle carries.
    shutil.copy(slot, out / "rootfs.ext4")
    log("bmap")
    run(["bmaptool", "-q", "create", "-o", str(out / "tandem.img.bmap"), str(image)])
    allocated = os.stat(image).st_blocks * 512
    return {"disk_s": round(time.monotonic() - started, 1), "image_mib": total_mib, "bios_boot": bios_boot,
            "image_allocated_mib": round(allocated / MIB, 1)}


def compress(image: Path) -> float:
    """``image.xz`` beside the image (xz -6, all cores); its size in MiB."""
    target = image.with_name(image.name + ".xz")
    target.unlink(missing_ok=True)
    run(["xz", "-6", "-T0", "-k", "-f", str(image)])
    return round(target.stat().st_size / MIB, 1)


def write_sums(out: Path) -> None:
    """SHA256SUMS for what a maker publishes (image, bmap, xz, slot image)."""
    lines = []
    for name in ("tandem.img", "tandem.img.bmap", "tandem.img.xz", "rootfs.ext4"):
        path = out / name
        if path.exists():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(4 * MIB), b""):
                    digest.update(block)
            lines.append(f"{digest.hexdigest()}  {name}\n")
    (out / "SHA256SUMS").write_text("".join(lines))
