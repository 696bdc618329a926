"""What the sensor history writes to the flash per hour, at the old and the new flush interval (issue 15).

An ext4 file system on a loop device (as the data partition is), mounted with the appliance's options
(noatime, commit=30), gets an hour of history for ``METRICS`` metrics (34: what the simulated chassis
records), simulated: values every 10 s with timestamps an hour long, written by ``History.flush()``
every ``flush_s`` of simulated time, each flush followed by ``sync`` so that every flush reaches the
device (the worst case: the kernel's own writeback could merge flushes that fall into one commit
window). The device's written sectors (``/sys/block/loopN/stat``) give the bytes per hour.

  history_mib_per_hour_10s    flushing every 10 s (the old default)
  history_mib_per_hour_300s   flushing every 300 s (the appliance's default, health.history_flush_s)
  history_files_mib           the files' allocated size (created once, two years of retention)

Needs root (loop mount). Usage, from the repository root after the README's setup:
    .venv/bin/python bench/flash_writes.py
The last line is JSON with the keys above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware.core.history import History  # noqa: E402

METRICS = int(os.environ.get("BENCH_METRICS", "34"))
HOUR = 3600
STEP = 10


def written_sectors(device: str) -> int:
    """Sectors written to a block device since it appeared (field 7 of its stat file)."""
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[6])


def one_hour(flush_s: int, scratch: Path) -> tuple[float, float]:
    """MiB written to the device for an hour of history flushed every `flush_s`; and the files' MiB."""
    image = scratch / f"data-{flush_s}.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(image), "256M"], check=True)
    mount = scratch / f"mnt-{flush_s}"
    mount.mkdir()
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        subprocess.run(["mount", "-o", "noatime,commit=30", device, str(mount)], check=True)
        try:
            history = History(mount / "history", flush_interval_s=flush_s)
            start = 1_800_000_000
            # The first hour creates the files (two years of rows each): not counted.
            for t in range(start - HOUR, start, STEP):
                for m in range(METRICS):
                    history.record(f"sensor{m}.value", float(m + t % 7), at=t)
            history.flush()
            subprocess.run(["sync"], check=True)
            before = written_sectors(device)
            for t in range(start, start + HOUR, STEP):
                for m in range(METRICS):
                    history.record(f"sensor{m}.value", float(m + t % 7), at=t)
                if (t - start + STEP) % flush_s == 0:
                    history.flush()
                    subprocess.run(["sync"], check=True)
            written = (written_sectors(device) - before) * 512 / 2**20
            files = sum(p.stat().st_blocks * 512 for p in (mount / "history").rglob("*.rrd")) / 2**20
            history.close()
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    return round(written, 2), round(files, 1)


def main() -> int:
    """Measure both intervals; the last line is JSON."""
    if os.geteuid() != 0:
        raise SystemExit("bench/flash_writes.py needs root (a loop-mounted ext4)")
    with tempfile.TemporaryDirectory(prefix="tandem-flash-") as scratch:
        old, files = one_hour(10, Path(scratch))
        new, _ = one_hour(300, Path(scratch))
    print(f"{METRICS} metrics, one hour, sync after each flush: every 10 s {old} MiB, every 300 s {new} MiB")
    print(json.dumps({"history_mib_per_hour_10s": old, "history_mib_per_hour_300s": new,
                      "history_files_mib": files, "metrics": METRICS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
