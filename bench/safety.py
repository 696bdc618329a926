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

  fencing    on a second rack: no witness, each box with a simulated BMC
             (OpenIPMI's ipmi_sim, reachable only from the peer's namespace),
             each node fencing its peer with the real fence_ipmilan at its
             default timings (power_wait 2 s). FENCE_TRIALS times, a total
             partition: the switch hangs (its bridge down, every link keeping
             its carrier: LAN and heartbeat net gone) and the serial cable is cut while one node is
             ACTIVE; from the cut to the standby's ACTIVE in its journal
             (`fenced_takeover_p99_ms`). FENCE_TRIALS times more, a cold start
             into a total partition (both daemons restarted while it lasts, so
             neither holds the calls and both would fence). `mutual_fences`:
             trials, of both kinds, that ended with both boxes switched off.
             Without ipmi_sim, fence_ipmilan or ipmitool both keys are null.

Usage, from the repository root after `./dev test` set up .venv:
    .venv/bin/python bench/safety.py        (BENCH_TRIALS=20, BENCH_FENCE_TRIALS=10 by default)
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

from sim.bmc import missing_tools  # noqa: E402
from sim.holderwatch import HolderWatch  # noqa: E402
from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

TRIALS = int(os.environ.get("BENCH_TRIALS", "20"))
FENCE_TRIALS = int(os.environ.get("BENCH_FENCE_TRIALS", "10"))
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


def _partition(rack: TwoNodeRack) -> None:
    rack.cut_network()
    rack.cut_serial()
    rack.hang_switch()


def _heal(rack: TwoNodeRack) -> None:
    """End the partition, switch every box back on (booting its daemon) and wait for one ACTIVE."""
    rack.hang_switch(False)
    rack.restore_network()
    rack.restore_serial()
    for name in NODES:
        if not rack.powered(name):
            rack.power_on(name)
    rack.wait_pair(timeout=60)


def fenced_partition_trial(rack: TwoNodeRack) -> tuple[float, bool]:
    """A total partition with one node ACTIVE: (cut -> standby ACTIVE in ms, both boxes switched off)."""
    active = rack.wait_pair(timeout=60)
    standby = NODES[1 - NODES.index(active)]
    cut = time.time()
    _partition(rack)
    ended = rack.wait_for(lambda: rack.state_time(standby, "ACTIVE", cut) or _both_off(rack), 60,
                          what=f"{standby} ACTIVE in its journal, or both boxes off")
    mutual = _both_off(rack)
    _heal(rack)
    return (float("nan") if mutual else (ended - cut) * 1000), mutual


def _both_off(rack: TwoNodeRack) -> bool:
    return not any(rack.powered(name) for name in NODES)


def fenced_cold_start_trial(rack: TwoNodeRack) -> tuple[str, bool]:
    """Both daemons restarted into a total partition: (who ends ACTIVE, both boxes switched off)."""
    rack.wait_pair(timeout=60)
    for name in NODES:  # stopped first: partitioned with one node ACTIVE, the standby would fence it at once
        releases = len(rack.releases[name])
        rack.kill(name)
        rack.wait_released(name, count=releases + 1, timeout=30)
    _partition(rack)
    for name in NODES:
        rack.start_node(name)
    def outcome() -> str | None:
        if _both_off(rack):
            return "nobody"
        return next((n for n in NODES if rack.powered(n) and rack.state(n) == "ACTIVE"
                     and not all(rack.powered(m) for m in NODES)), None)
    winner = rack.wait_for(outcome, 60, interval=0.05, what="one box fenced and the other ACTIVE, or both off")
    mutual = _both_off(rack)
    _heal(rack)
    return winner, mutual


def fencing_trials() -> tuple[list[float], int]:
    """The fenced takeovers (ms) and the number of trials that ended with both boxes off."""
    takeovers: list[float] = []
    mutual = 0
    with tempfile.TemporaryDirectory(prefix="tandem-fencing-") as tmp:
        rack = TwoNodeRack(Path(tmp), netns=True, arbitration=True, witness=False, fencing=True,
                           timers={"initdead_ms": 1500}, extra={"flap": {"max_failures": 1000}},
                           shared_ips=[{"address": f"{SHARED}/24", "interface": "eth0"}])
        try:
            rack.start()
            for trial in range(FENCE_TRIALS):
                took, both_off = fenced_partition_trial(rack)
                if not both_off:
                    takeovers.append(took)
                mutual += both_off
                print(f"fenced partition {trial + 1:>2}/{FENCE_TRIALS}: standby ACTIVE {took:.0f} ms after the cut"
                      f"{'; BOTH BOXES OFF' if both_off else ''}", flush=True)
            for trial in range(FENCE_TRIALS):
                winner, both_off = fenced_cold_start_trial(rack)
                mutual += both_off
                print(f"fenced cold start {trial + 1:>2}/{FENCE_TRIALS}: {winner} survived"
                      f"{'; BOTH BOXES OFF' if both_off else ''}", flush=True)
        finally:
            rack.stop()
    return takeovers, mutual


def main() -> None:
    """Run the kinds of trials (fencing on a rack of its own) and print the figures, the JSON line last."""
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
                           extra={"flap": {"max_failures": 1000}},
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
    missing = missing_tools()
    fenced, mutual = fencing_trials() if not missing else ([], None)
    print(f"\n{TRIALS} trials each:")
    print(f"  partition: two holders max {max(partition):.0f} ms")
    print(f"  crash: two holders max {max(crash_dual):.0f} ms; kill -> GARP p50 {percentile(crash_takeover, 50):.0f}"
          f"  p99 {percentile(crash_takeover, 99):.0f}  max {max(crash_takeover):.0f} ms")
    print(f"  box dead: deadtime -> takeover decision p50 {percentile(verdict, 50):.0f}"
          f"  p99 {percentile(verdict, 99):.0f} ms")
    if missing:
        print(f"  fencing: not measured, this machine lacks {', '.join(missing)} (null)")
    else:
        print(f"  fencing ({FENCE_TRIALS} partitions, {FENCE_TRIALS} cold starts): cut -> standby ACTIVE p50 "
              f"{percentile(fenced, 50):.0f}  p99 {percentile(fenced, 99):.0f} ms; both boxes off in {mutual}")
    print(json.dumps({
        "partition_dual_holder_ms_max": round(max(partition), 1),
        "crash_dual_holder_ms_max": round(max(crash_dual), 1),
        "crash_takeover_p99_ms": round(percentile(crash_takeover, 99), 1),
        "probe_verdict_after_deadtime_p99_ms": round(percentile(verdict, 99), 1),
        "fenced_takeover_p99_ms": round(percentile(fenced, 99), 1) if fenced else None,
        "mutual_fences": mutual,
    }))


if __name__ == "__main__":
    main()
