"""What 100 sensors cost the daemon: CPU use and heartbeat lateness, against no sensors.

Runs the simulated rack (two real `tandem run` processes, 100 ms heartbeat)
twice, each time on a generated board profile: first with no sensors, then
with 100 simulated sensors (sim/chassis.py: 30 PMBus supplies, 30 LM75s,
20 hwmon channels, 10 md RAID, 7 device-presence, 3 SMART disks through the
fake smartctl) and rrdtool history on. For each run it waits for the pair to
settle plus WARMUP_S (the history files are created on the first flush),
then measures over IDLE_S:

- each daemon's CPU use in % of one core (psutil, user + system);
- heartbeat lateness: how late each heartbeat tick ran against its schedule,
  from the daemon's own tick log (the `lateness` control request), p50/p99/max
  over the ticks of the window.

The figures are the worse of the two daemons.

Usage (from the repository root, after `./dev test` or `./dev lab` set up .venv):
    .venv/bin/python bench/sensors.py
The last line is JSON: cpu_pct_100_sensors, hb_lateness_p99_ms_no_sensors, hb_lateness_p99_ms_100_sensors
(plus cpu_pct_no_sensors and the p50/max figures).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.rack import NODES, TwoNodeRack  # noqa: E402

IDLE_S = float(os.environ.get("BENCH_IDLE_S", "60"))
WARMUP_S = float(os.environ.get("BENCH_WARMUP_S", "25"))
SENSOR_MIX = (  # (count, type, options, interval_s)
    (30, "pmbus", lambda i: {"bus": 1, "address": 0x58 + i % 2}, 5),
    (30, "lm75", lambda i: {"bus": 1, "address": 0x48,
                            "thresholds": {"temp": {"warn_above": 40, "crit_above": 50, "hysteresis": 2}}}, 5),
    (20, "hwmon", lambda i: {"chip": "coretemp"}, 5),
    (10, "mdraid", lambda i: {"array": "md0"}, 10),
    (7, "device", lambda i: {"path": "/dev/null"}, 5),
    (3, "smart", lambda i: {"device": "/dev/sda"}, 60),
)


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def board_profile(directory: Path, sensors: bool) -> Path:
    """The sim board profile without its sensors, or with the 100-sensor mix."""
    base = (ROOT / "board_profiles" / "sim.toml").read_text()
    base = base.split("\n# The simulated chassis")[0]  # everything before the chassis and its sensors
    lines = [base.replace('name = "sim"', f'name = "bench-{"100" if sensors else "no"}-sensors"')]
    if sensors:
        lines += ['[sensor_host]', 'driver = "sim.chassis:SimChassis"']
        for count, kind, options, interval in SENSOR_MIX:
            for i in range(count):
                lines += ["", "[[sensors]]", f'name = "{kind}{i}"', f'type = "{kind}"', f"interval_s = {interval}",
                          "timeout_s = 4", "weight = 1",
                          *(f"{k} = {_toml(v)}" for k, v in options(i).items())]
    path = directory / f"board-{'100' if sensors else 'no'}-sensors.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(directory: Path, sensors: bool) -> dict[str, float]:
    """Run the rack on one board profile; return the worse daemon's CPU and lateness figures."""
    rack = TwoNodeRack(directory / ("with" if sensors else "without"), timers={"initdead_ms": 1500},
                       history=sensors, board=str(board_profile(directory, sensors)))
    rack.start()
    try:
        rack.wait_for(rack.settled, 60, what="a settled pair")
        if sensors:
            count = len(rack.status("alpha")["sensors"])
            assert count == 100, f"expected 100 sensors, the daemon runs {count}"
        time.sleep(WARMUP_S)
        procs = {name: psutil.Process(rack.procs[name].pid) for name in NODES}
        ticks = {name: rack.control(name, {"cmd": "lateness"})["tick"] for name in NODES}
        before = {n: p.cpu_times() for n, p in procs.items()}
        started = time.monotonic()
        time.sleep(IDLE_S)
        elapsed = time.monotonic() - started
        after = {n: p.cpu_times() for n, p in procs.items()}
        cpu = {n: 100 * ((after[n].user + after[n].system) - (before[n].user + before[n].system)) / elapsed
               for n in NODES}
        late = {n: rack.control(n, {"cmd": "lateness", "since_tick": ticks[n]}) for n in NODES}
        for n in NODES:
            print(f"{'100 sensors' if sensors else 'no sensors '}  {n}: cpu {cpu[n]:.2f} %  lateness "
                  f"p50 {late[n]['p50']:.2f} ms  p99 {late[n]['p99']:.2f} ms  max {late[n]['max']:.2f} ms "
                  f"({late[n]['samples']} ticks)", flush=True)
            if sensors:
                history = rack.status(n)["history"]
                print(f"             {n}: history files {history['files']}, writes {history['writes']}, "
                      f"errors {history['errors']}", flush=True)
        return {"cpu": max(cpu.values()), "p50": max(l["p50"] for l in late.values()),
                "p99": max(l["p99"] for l in late.values()), "max": max(l["max"] for l in late.values())}
    finally:
        rack.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-bench-sensors-") as tmp:
        without = measure(Path(tmp), sensors=False)
        with_sensors = measure(Path(tmp), sensors=True)
    print(json.dumps({
        "cpu_pct_100_sensors": round(with_sensors["cpu"], 2),
        "cpu_pct_no_sensors": round(without["cpu"], 2),
        "hb_lateness_p99_ms_no_sensors": round(without["p99"], 2),
        "hb_lateness_p99_ms_100_sensors": round(with_sensors["p99"], 2),
        "hb_lateness_p50_ms_no_sensors": round(without["p50"], 2),
        "hb_lateness_p50_ms_100_sensors": round(with_sensors["p50"], 2),
        "hb_lateness_max_ms_100_sensors": round(with_sensors["max"], 2),
        "idle_s": IDLE_S,
    }))


if __name__ == "__main__":
    main()
