"""A fake PBX service for the lab: a small process that the service action starts and stops.

    python -m sim.fakepbx start  --dir DIR   # start the "PBX" in the background (idempotent)
    python -m sim.fakepbx stop   --dir DIR   # stop it (idempotent)
    python -m sim.fakepbx status --dir DIR   # exit 0 if it runs, 3 if not (like systemctl is-active)

The running process writes its pid to DIR/pbx.pid and touches DIR/pbx.alive
every 100 ms, so the lab and tests can see which node's PBX runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "pbx.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def start(directory: Path) -> int:
    """Start the fake PBX unless it already runs."""
    if _pid(directory) is not None:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "sim.fakepbx", "run", "--dir", str(directory)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 5
    while _pid(directory) != proc.pid:
        if time.monotonic() > deadline or proc.poll() is not None:
            print("fake PBX did not start", file=sys.stderr)
            return 1
        time.sleep(0.01)
    return 0


def stop(directory: Path) -> int:
    """Stop the fake PBX if it runs."""
    pid = _pid(directory)
    if pid is None:
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _pid(directory) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    return 0


def run(directory: Path) -> int:
    """The PBX process itself."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    (directory / "pbx.pid").write_text(str(os.getpid()))
    try:
        while True:
            (directory / "pbx.alive").touch()
            time.sleep(0.1)
    finally:
        (directory / "pbx.pid").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sim.fakepbx")
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "status":
        return 0 if _pid(args.dir) is not None else 3
    return {"start": start, "stop": stop, "run": run}[args.command](args.dir)


if __name__ == "__main__":
    sys.exit(main())
