"""Grow the data partition to the end of the disk (first boot): voicemail and the call database need room.

The image's data partition is the last one and 256 MiB, whatever disk it is flashed to.
`tandem-growdata.service` runs ``python -m firmware.appliance.growdata`` at every boot, before the
partition is mounted. It moves the GPT's backup header to the end of the disk, extends the partition
over the free space (sfdisk), tells the kernel (partx), checks the file system (e2fsck -f) and grows it
(resize2fs). A partition that already reaches the end is left alone, so later boots change nothing.
(Growing it while mounted, as first boot once did, had systemd stop /data and everything on it
in VM runs.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA = Path("/dev/disk/by-partlabel/data")
SLACK_SECTORS = 2048 + 34   # alignment and the backup GPT: less free space than this is "full"


class GrowError(RuntimeError):
    """A step of growing failed; the message names the command and what it said."""


def _run(argv: list[str], text_input: str | None = None, ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(argv, input=text_input, capture_output=True, text=True)
    if done.returncode not in ok:
        raise GrowError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip() or done.returncode}")


def _number(path: Path) -> int:
    return int(path.read_text().strip())


def mounted(device: Path, mounts: Path = Path("/proc/self/mounts")) -> bool:
    """Whether `device` is mounted (resize2fs grows a mounted ext4 online, an unmounted one once checked)."""
    try:
        return any(line.split()[0] == str(device) for line in mounts.read_text().splitlines() if line)
    except OSError:
        return False


def main() -> int:
    """Grow the data partition (tandem-growdata.service, before data.mount); 1 with the reason if it failed."""
    try:
        print(grow_data(), flush=True)
    except (GrowError, OSError, ValueError) as exc:  # the box works on, with a small data partition
        print(f"tandem: the data partition was not grown: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


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
    if not mounted(partition):  # resize2fs grows an unmounted file system only once it is checked
        _run(["e2fsck", "-f", "-p", str(partition)], ok=(0, 1))  # 1: errors found and corrected
    _run(["resize2fs", str(partition)])
    grown = _number(part_dir / "size") * 512 // 2**20
    return f"{partition} grown to the end of {disk}: {grown} MiB"


if __name__ == "__main__":
    sys.exit(main())
