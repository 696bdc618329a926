"""Grow the data partition to the end of the disk (first boot): voicemail and the call database need room.

The image's data partition is the last one and 256 MiB, whatever disk it is flashed to. At first boot
(``tandem firstboot``, as root, with the partition mounted) this moves the GPT's backup header to the
end of the disk, extends the partition over the free space (sfdisk), tells the kernel (partx) and grows
the mounted ext4 file system (resize2fs, online). A partition that already reaches the end is left
alone, so running it again changes nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DATA = Path("/dev/disk/by-partlabel/data")
SLACK_SECTORS = 2048 + 34   # alignment and the backup GPT: less free space than this is "full"


class GrowError(RuntimeError):
    """A step of growing failed; the message names the command and what it said."""


def _run(argv: list[str], text_input: str | None = None) -> None:
    done = subprocess.run(argv, input=text_input, capture_output=True, text=True)
    if done.returncode != 0:
        raise GrowError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip() or done.returncode}")


def _number(path: Path) -> int:
    return int(path.read_text().strip())


def grow_data(data: Path = DATA, sysfs: Path = Path("/sys/class/block")) -> str:
    """Grow the data partition and its file system to the end of the disk; what was done, in words."""
    partition = data.resolve()
    part_dir = sysfs / partition.name
    number = _number(part_dir / "partition")
    disk = Path("/dev") / part_dir.resolve().parent.name
    disk_sectors = _number(sysfs / disk.name / "size")
    end = _number(part_dir / "start") + _number(part_dir / "size")
    if disk_sectors - end <= SLACK_SECTORS:
        return f"{partition} already reaches the end of {disk}"
    _run(["sfdisk", "--quiet", "--relocate", "gpt-bak-std", str(disk)])
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N", str(number), str(disk)], ", +\n")
    _run(["partx", "--update", "--nr", str(number), str(disk)])
    _run(["resize2fs", str(partition)])
    grown = _number(part_dir / "size") * 512 // 2**20
    return f"{partition} grown to the end of {disk}: {grown} MiB"
