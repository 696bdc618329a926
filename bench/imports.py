"""Import cost of modules: wall time and peak RSS in a fresh interpreter (docs/library-decisions.md).

    .venv/bin/python bench/imports.py RUNS "import scapy.all" "import rich" …
    .venv/bin/python bench/imports.py            (11 runs of DEFAULT_STATEMENTS)

Each statement runs RUNS times in a new interpreter (this one's, with this
process's environment, so PYTHONPATH reaches packages installed elsewhere);
prints the median import time and the median peak RSS, and the RSS above an
interpreter that imports nothing. The last line is JSON: base_rss_mib and,
per statement, its import_ms and rss_added_mib.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

# What the daemon pays for at start-up, as the library decisions discuss it (docs/library-decisions.md).
DEFAULT_STATEMENTS = ("import pyroute2", "import pydantic", "import cryptography.hazmat.primitives.ciphers.aead",
                      "import firmware.core.daemon")
PROBE = ("import time, resource; t = time.perf_counter(); {stmt}; d = time.perf_counter() - t; "
         "print(d, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def measure(stmt: str, runs: int) -> tuple[float, float]:
    """Median (import ms, peak RSS MiB) of ``stmt`` over ``runs`` fresh interpreters."""
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE.format(stmt=stmt)], capture_output=True, text=True,
                             check=True).stdout.split()
        times.append(float(out[0]) * 1000)
        rss.append(int(out[1]) / 1024)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    """Measure each statement given on the command line (DEFAULT_STATEMENTS without any)."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    statements = sys.argv[2:] or list(DEFAULT_STATEMENTS)
    _, base = measure("pass", runs)
    print(f"{'(nothing)':60s}            RSS {base:6.1f} MiB")
    figures: dict[str, object] = {"base_rss_mib": round(base, 1)}
    for stmt in statements:
        ms, rss = measure(stmt, runs)
        print(f"{stmt[:60]:60s} {ms:7.1f} ms  RSS {rss:6.1f} MiB (+{rss - base:5.1f})  median of {runs}")
        figures[stmt] = {"import_ms": round(ms, 1), "rss_added_mib": round(rss - base, 1)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
