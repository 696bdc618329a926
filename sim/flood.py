"""A client that floods a daemon's control socket with pipelined requests, in a process of its own.

    python -m sim.flood SOCKET REQUEST_JSON NBYTES [TIMEOUT_S]

writes NBYTES of one request (its JSON line repeated) on one connection in one
go, shuts its end for writing, reads every reply on a second thread until the
daemon closes, and prints one JSON object: ``requests``, ``replies``, ``ok``,
``reply_bytes``, ``seconds`` and ``error`` (the first error reply or socket
error, else null).

Tests and benchmarks run it as a separate process (:func:`flood_in_process`)
on purpose: the lab's cables and UDP relay are threads of the test's own
process, and a flood loop beside them would share their interpreter lock and
garbage collections (a collection in the test process took up to 93 ms during
a flood), so a heartbeat held up on its way could pass for a stall of the
daemon's. A hostile client is another process on a real box too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def flood(path: Path, payload: dict[str, Any], nbytes: int, timeout: float = 600.0) -> dict[str, Any]:
    """`nbytes` of one pipelined request written in one go; replies read concurrently until the daemon
    closes (it does after the last reply, once our end is shut for writing)."""
    line = json.dumps(payload).encode() + b"\n"
    count = -(-nbytes // len(line))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    got: dict[str, Any] = {"requests": count, "replies": 0, "ok": 0, "reply_bytes": 0, "error": None}

    def read() -> None:
        buffer = b""
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                got["reply_bytes"] += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for reply in lines:
                    got["replies"] += 1
                    if reply.startswith(b'{"ok": true'):
                        got["ok"] += 1
                    elif got["error"] is None:
                        got["error"] = reply[:200].decode(errors="replace")
        except OSError as exc:
            got["error"] = got["error"] or f"reading: {exc}"

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        sock.sendall(line * count)
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        got["error"] = got["error"] or f"writing: {exc}"
    reader.join()  # each recv is bounded by `timeout`
    got["seconds"] = time.monotonic() - started
    sock.close()
    return got


def flood_in_process(path: Path, payload: dict[str, Any], nbytes: int, timeout: float = 600.0) -> dict[str, Any]:
    """:func:`flood` run by a child Python process (see the module's docstring); its result."""
    argv = [sys.executable, "-m", "sim.flood", str(path), json.dumps(payload), str(nbytes), str(timeout)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the flood client failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    """Run one flood as the command line says; print its result as one JSON line."""
    if len(argv) not in (3, 4):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    timeout = float(argv[3]) if len(argv) == 4 else 600.0
    print(json.dumps(flood(Path(argv[0]), json.loads(argv[1]), int(argv[2]), timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
