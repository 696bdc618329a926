"""Never two holders, measured from the switch: partitions, crashes and dead boxes in network namespaces.

Needs root. Two real daemons in the namespace lab (sim.netns) with the
netlink shared-IP backend (192.0.2.100/24 on eth0), LAN arbitration on (the
lab switch, 192.0.2.254, as control target) and the rack's supervisor running
`tandem release` after a daemon dies, as systemd's ExecStopPost does. From
the switch, sim.holderwatch asks who holds the address every 4 ms; a box
holds it while its kernel answers ARP for it.

  partition  TRIALS times: both heartbeat links cut for 1.5 s while the LAN
             is up; the longest time two boxes answered (`partition_dual_holder_ms_max`).
  crash      TRIALS times: SIGKILL of the ACTIVE daemon, its box alive; the
             longest double answer (`crash_dual_holder_ms_max`) and kill ->
             first gratuitous ARP from the standby (`crash_takeover_p99_ms`).
  box dead   TRIALS times: the ACTIVE daemon killed and its eth0 taken down at
             once (a power cut). From the instant the standby's deadtime ran
             out (its journal's `peer.lost`) to its takeover decision (state ->
             TAKEOVER), both from the standby's own journal
             (`probe_verdict_after_deadtime_p99_ms`): how late the LAN verdict
             reached the core. An upper bound: the decision also waits for the
             witness. Journal times have millisecond resolution.

Fencing is not built yet: `fenced_takeover_p99_ms` and `mutual_fences` are null.

Usage, from the repository root after `./dev test` set up .venv:
    .venv/bin/python bench/safety.py        (BENCH_TRIALS=20 by default)
The last line is JSON with exactly the keys above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.holderwatch import HolderWatch  # noqa: E402
from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

TRIALS = int(os.environ.get("BENCH_TRIALS", "20"))
SHARED = "192.0.2.100"
PARTITION_S = 1.5
KEYS = ("partition_dual_holder_ms_max", "crash_dual_holder_ms_max", "crash_takeover_p99_ms",
        "probe_verdict_after_deadtime_p99_ms", "fenced_takeover_p99_ms", "mutual_fences")


def partition_trial(rack: TwoNodeRack, watch: HolderWatch) -> float:
    """Cut both heartbeat links for PARTITION_S; the longest double answer in ms."""
    rack.wait_pair(timeout=30)
    started = time.time()
    rack.cut_network()
    rack.cut_serial()
    time.sleep(PARTITION_S)  # the length of the partition is what is measured over, not a wait for a condition
    rack.restore_network()
    rack.restore_serial()
    rack.wait_pair(timeout=30)
    return watch.dual_ms(SHARED, since=started)


def crash_trial(rack: TwoNodeRack, watch: HolderWatch, macs: dict[str, str]) -> tuple[float, float]:
    """SIGKILL the ACTIVE daemon (its box stays up); (longest double answer, kill -> standby's first GARP) in ms."""
    active = rack.wait_pair(timeout=30)
    standby = NODES[1 - NODES.index(active)]
    releases = len(rack.releases[active])
    killed = rack.kill(active)
    garp = watch.sniffer.wait_for(kind="garp", ip=SHARED, mac=macs[standby], since=killed, timeout=20)["t"]
    rack.wait_released(active, count=releases + 1, timeout=30)
    rack.wait_state(standby, "ACTIVE", timeout=20)
    rack.wait_ticks(standby, 10)
    dual = watch.dual_ms(SHARED, since=killed)
    rack.start_node(active)
    return dual, (garp - killed) * 1000


def box_dead_trial(rack: TwoNodeRack) -> float:
    """Kill the ACTIVE daemon and take its eth0 down at once; standby's peer.lost -> TAKEOVER in ms."""
    active = rack.wait_pair(timeout=30)
    standby = NODES[1 - NODES.index(active)]
    namespace = rack.namespace(active)
    killed = rack.kill(active)
    subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "down"], check=True)
    decided = rack.wait_for(lambda: rack.state_time(standby, "TAKEOVER", killed), 20, interval=0.01,
                            what="the takeover decision")
    lost = rack.event_time(standby, "peer.lost", killed)
    assert lost is not None, "the standby journaled no peer.lost"
    rack.wait_state(standby, "ACTIVE", timeout=20)
    subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "up"], check=True)
    rack.start_node(active)
    return max(0.0, (decided - lost) * 1000)


def main() -> None:
    """Run the three kinds of trials on one rack and print the figures, the JSON line last."""
    if os.geteuid() != 0:
        print("bench/safety.py needs root (it builds network namespaces)", file=sys.stderr)
        print(json.dumps({key: None for key in KEYS}))
        return
    partition: list[float] = []
    crash_dual: list[float] = []
    crash_takeover: list[float] = []
    verdict: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tandem-safety-") as tmp:
        rack = TwoNodeRack(Path(tmp), netns=True, arbitration=True, timers={"initdead_ms": 1500},
                           extra={"flap": {"max_failures": 10_000}},
                           shared_ips=[{"address": f"{SHARED}/24", "interface": "eth0"}])
        try:
            rack.start()
            rack.wait_pair(timeout=30)
            macs = {name: rack.lab.nodes[i].mac for i, name in enumerate(NODES)}
            with HolderWatch(rack.lab, [SHARED]) as watch:
                for trial in range(TRIALS):
                    partition.append(partition_trial(rack, watch))
                    print(f"partition {trial + 1:>2}/{TRIALS}: two holders for {partition[-1]:.0f} ms", flush=True)
                    watch.sniffer.clear()
                for trial in range(TRIALS):
                    dual, takeover = crash_trial(rack, watch, macs)
                    crash_dual.append(dual)
                    crash_takeover.append(takeover)
                    print(f"crash {trial + 1:>2}/{TRIALS}: two holders for {dual:.0f} ms, "
                          f"first GARP {takeover:.0f} ms after the kill", flush=True)
                    watch.sniffer.clear()
            for trial in range(TRIALS):
                verdict.append(box_dead_trial(rack))
                print(f"box dead {trial + 1:>2}/{TRIALS}: takeover {verdict[-1]:.0f} ms after the deadtime",
                      flush=True)
        finally:
            rack.stop()
    print(f"\n{TRIALS} trials each:")
    print(f"  partition: two holders max {max(partition):.0f} ms")
    print(f"  crash: two holders max {max(crash_dual):.0f} ms; kill -> GARP p50 {percentile(crash_takeover, 50):.0f}"
          f"  p99 {percentile(crash_takeover, 99):.0f}  max {max(crash_takeover):.0f} ms")
    print(f"  box dead: deadtime -> takeover decision p50 {percentile(verdict, 50):.0f}"
          f"  p99 {percentile(verdict, 99):.0f} ms")
    print("  fencing: not built yet (null)")
    print(json.dumps({
        "partition_dual_holder_ms_max": round(max(partition), 1),
        "crash_dual_holder_ms_max": round(max(crash_dual), 1),
        "crash_takeover_p99_ms": round(percentile(crash_takeover, 99), 1),
        "probe_verdict_after_deadtime_p99_ms": round(percentile(verdict, 99), 1),
        "fenced_takeover_p99_ms": None,
        "mutual_fences": None,
    }))


if __name__ == "__main__":
    main()
