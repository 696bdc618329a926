"""Import cost of modules: wall time and peak RSS in a fresh interpreter (docs/library-decisions.md).

    .venv/bin/python bench/imports.py RUNS "import scapy.all" "import rich" …

Each statement runs RUNS times in a new interpreter (this one's, with this
process's environment, so PYTHONPATH reaches packages installed elsewhere);
prints the median import time and the median peak RSS, and the RSS above an
interpreter that imports nothing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

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
    """Measure each statement given on the command line."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    _, base = measure("pass", runs)
    print(f"{'(nothing)':60s}            RSS {base:6.1f} MiB")
    for stmt in sys.argv[2:]:
        ms, rss = measure(stmt, runs)
        print(f"{stmt[:60]:60s} {ms:7.1f} ms  RSS {rss:6.1f} MiB (+{rss - base:5.1f})  median of {runs}")


if __name__ == "__main__":
    main()
