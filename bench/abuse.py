"""Abuse (issue 14, hardening): floods, idle connections, a replaying attacker, crashes mid-command, bad configs.

Runs two simulated racks (sim.rack: two real `tandem run` processes, loopback
UDP through sim.netrelay.UdpRelay and a pty serial cable, 100 ms heartbeat,
300 ms deadtime, flap damping out of the way). No root needed. Times are this
machine's wall clock; a node's state changes are read from its own journal
(millisecond resolution). Figures, as printed in the last line:

  pipeline_failovers / pipeline_max_tick_lateness_ms
      ROUNDS rounds; in each, for each request kind (`ping`, `lateness`,
      `links`, `maintenance-off`, `promote`), PIPELINE_BYTES of that request
      (one JSON line repeated) written in one go on one connection to the
      ACTIVE node's control socket by a client process of its own (sim.flood:
      not beside the lab's relay and cable threads), its replies read on a
      second thread so the socket never blocks. Failovers: the ACTIVE leaving ACTIVE (its journal's
      `state` events) or the standby entering TAKEOVER/ACTIVE (its journal),
      events closer than 2 s counted as one, judged once every flood is over
      and the journal writers caught up, flood by flood by record ids; a
      poller asking both nodes' `state` every 100 ms during each flood is a
      second witness (what it saw is printed, and a failover it saw that the
      journals lack counts too). `peer.lost` events on either node are
      counted apart (`pipeline_peer_lost`). Tick lateness: the ACTIVE's
      `lateness` command (over the ticks after a given tick), read every 30 s
      and at the end of each flood, each read going on from the last, from
      just before the first flood to after the journal writer caught up with
      the last, so no tick goes unmeasured (the daemon keeps 3000); the key
      is the worst tick's lateness (printed p99s: the worst read's). Every `promote` and
      `maintenance-off` is journaled, and how far the journal file lagged
      behind the replies at the end of each flood is printed; this rack's
      journal may grow to 128 MiB before rotating (config [journal]), lest a
      flood rotate the state events it is judged by out of the journal.

  normal_takeover_ms / idle_conn_takeover_ms
      On a second rack whose daemons run with RLIMIT_NOFILE soft = hard =
      NOFILE (1024), TRIALS pairs of trials, alternating: the ACTIVE SIGKILLed
      with nothing else going on (normal), then, once the pair settled again,
      IDLE_CONNECTIONS (2,000) idle connections opened to the STANDBY's
      control socket (non-blocking; what cannot connect is retried for a
      second and counted as refused) and held, and the ACTIVE SIGKILLed
      (how many of them the daemon closed meanwhile, and its log's
      warnings, errors and "Too many open files" lines, are printed).
      Each: the kill -> the standby's journal records state ACTIVE (polled
      every 10 ms). If that has not happened IDLE_HOLD_S after the kill, the
      connections are closed and the trial records the time it did take (read
      from the daemon's own memory if its journal file lacks the record); such
      trials are printed and counted (`idle_conn_stuck_trials`). Median
      (the key) and max (`..._max`) of each.

  replay_takeover_ms
      On the same rack, REPLAY_TRIALS times an on-path attacker: the UDP
      relay's ACTIVE -> standby direction is cut and captured for CAPTURE_S
      (the serial cable still carries the heartbeats), the ACTIVE is
      SIGKILLed, and the captured datagrams are sent on to the standby, oldest
      first, REPLAY_PER_S per second, from the relay port the standby hears
      its peer on. Kill -> standby ACTIVE in its journal; median (the key)
      and max. A trial where the standby is not ACTIVE by the end of the
      replay plus 10 s records that bound (printed).

  acked_unjournaled
      On the same rack, KILLS times: a client on one connection sends the
      STANDBY `maintenance-on` / `maintenance-off` alternately, one at a time,
      each with a unique "source": "abuse-<n>", and notes every one answered
      {"ok": true}; after a random 50-500 ms (seeded) the daemon is SIGKILLed
      and started again (after the rack's supervisor ran `tandem release`, as
      systemd would), and its journal files are read: acknowledged commands
      whose source is in no record's data. (The contract: an acknowledged
      command is journaled, kind "command", before its reply.)

  config_tracebacks / config_nonsense_accepted
      tests/config_corpus.py's run_corpus(workdir, seed=14) (another module):
      its "tracebacks" and "nonsense_accepted". Null, with a note on stderr,
      when that module does not exist (yet) or fails.

Usage, from the repository root after `./dev test` set up .venv:
    .venv/bin/python bench/abuse.py
    (BENCH_ROUNDS=5, BENCH_PIPELINE_BYTES=1000000, BENCH_TRIALS=5, BENCH_REPLAY_TRIALS=5, BENCH_KILLS=100)
The last line is JSON with the keys above (and a few more: medians' maxima, counts, elapsed_s).
The run time is mostly the `maintenance-off` and `promote` floods (about 90,000 journaled commands a
round): with each command's journal record written before its reply, 37 minutes on a loaded 2-core
machine when this was written (the rest takes about 8); BENCH_PIPELINE_BYTES or BENCH_ROUNDS shorten it.
Targets (issue 14): no failover, lateness <= 50 ms, both takeovers within 1.5x normal, 0 unjournaled,
0 tracebacks, 0 nonsense accepted; this script only measures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firmware.core.control import ControlError  # noqa: E402
from firmware.core.journal import journal_files, read_journal  # noqa: E402
from sim.flood import flood_in_process  # noqa: E402
from sim.rack import NODES, TwoNodeRack  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PIPELINE_BYTES = int(os.environ.get("BENCH_PIPELINE_BYTES", "1000000"))
PIPELINE_KINDS = ("ping", "lateness", "links", "maintenance-off", "promote")
TRIALS = int(os.environ.get("BENCH_TRIALS", "5"))
REPLAY_TRIALS = int(os.environ.get("BENCH_REPLAY_TRIALS", "5"))
KILLS = int(os.environ.get("BENCH_KILLS", "100"))
NOFILE = 1024
IDLE_CONNECTIONS = 2000
IDLE_HOLD_S = 15.0
CAPTURE_S = 3.0
REPLAY_PER_S = 4.0
FAILOVER_GAP_S = 2.0
LATENESS_EVERY_S = 30.0
SEED = 14
KEYS = ("pipeline_failovers", "pipeline_max_tick_lateness_ms", "idle_conn_takeover_ms", "normal_takeover_ms",
        "replay_takeover_ms", "acked_unjournaled", "config_tracebacks", "config_nonsense_accepted")
RACK_OPTIONS: dict[str, Any] = {"timers": {"initdead_ms": 1500}}


def other(name: str) -> str:
    return NODES[1 - NODES.index(name)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def clock(wall: float) -> str:
    """A wall time as HH:MM:SS.mmm (local)."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"


# ---------------------------------------------------------------------------------------------- journals


def journal_scan(path: Path, since: int, needles: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """Records after id `since` whose line holds one of `needles` (only those are parsed: a flooded
    journal holds hundreds of thousands of command records), oldest first."""
    found = []
    for file in journal_files(path):
        try:
            with open(file, "rb") as handle:
                for line in handle:
                    if not any(n in line for n in needles):
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("id", 0) > since:
                        found.append(record)
        except FileNotFoundError:
            continue
    return sorted(found, key=lambda r: r["id"])


def journal_last_id(path: Path) -> int:
    """The id of the last whole record in the journal's current file (0 if none)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 65536))
            tail = handle.read()
    except FileNotFoundError:
        return 0
    for line in reversed(tail.split(b"\n")):
        try:
            return int(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def took_active(rack: TwoNodeRack, name: str, after: float) -> float | None:
    """Wall time of `name`'s journaled change to ACTIVE at or after `after`, from its journal file."""
    for record in journal_scan(rack.journal_path(name), 0, (b"ACTIVE",)):
        if record["kind"] == "state" and record["data"].get("to") == "ACTIVE" and record["time"] >= after:
            return record["time"]
    return None


def wait_took_active(rack: TwoNodeRack, name: str, after: float, within: float) -> float | None:
    """Poll :func:`took_active` every 10 ms for up to `within` seconds; None if it never did."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        became = took_active(rack, name, after)
        if became is not None:
            return became
        time.sleep(0.01)
    return None


def took_active_in_memory(rack: TwoNodeRack, name: str, after: float) -> float | None:
    """The same, asked of the running daemon (its journal in memory, even what never reached the file)."""
    for event in rack.events(name):
        if event["kind"] == "state" and event["data"].get("to") == "ACTIVE" and event["time"] >= after:
            return event["time"]
    return None


# ---------------------------------------------------------------------------------------------- pipelining


class StatePoller:
    """On a thread: asks both nodes' light `state` every 100 ms and remembers what was not the settled pair;
    every LATENESS_EVERY_S reads the ACTIVE's tick lateness since the last read (the daemon keeps the
    last 3000 ticks, five minutes: a long flood is read in pieces, so no tick goes unseen)."""

    def __init__(self, rack: TwoNodeRack, active: str, tick: int) -> None:
        self.rack, self.active, self.standby = rack, active, other(active)
        self.tick = tick
        self.late: dict[str, Any] = {"samples": 0, "max": 0.0, "p99": 0.0}
        self.anomalies: list[str] = []
        self.unanswered = {name: 0 for name in NODES}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "StatePoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def lateness(self) -> None:
        """Take in the ticks since the last read (p99: the worst read's)."""
        try:
            late = self.rack.control(self.active, {"cmd": "lateness", "since_tick": self.tick}, timeout=30.0)
        except (ControlError, OSError, ValueError):
            return
        self.tick = late["tick"]
        if late.get("samples"):
            self.late["samples"] += late["samples"]
            self.late["max"] = max(self.late["max"], late["max"])
            self.late["p99"] = max(self.late["p99"], late["p99"])

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.1):
            self.polls += 1
            for name, fine in ((self.active, ("ACTIVE",)), (self.standby, ("STANDBY", "STARTING"))):
                state = self.rack.state(name)
                if state is None:
                    self.unanswered[name] += 1
                elif state not in fine:
                    self.anomalies.append(f"{name} {state} at {time.time():.3f}")
            if time.monotonic() - last >= LATENESS_EVERY_S:
                self.lateness()
                last = time.monotonic()

    @property
    def saw_failover(self) -> bool:
        return any(a.startswith(f"{self.active} ") or a.split()[1] in ("TAKEOVER", "ACTIVE")
                   for a in self.anomalies)


def failover_times(records: dict[str, list[dict[str, Any]]], active: str, after: dict[str, int],
                   until: dict[str, float]) -> tuple[list[float], list[str], int]:
    """From both nodes' `state`/`peer.lost` records with ids in (after, until]: (times of the ACTIVE leaving
    ACTIVE or the standby entering TAKEOVER/ACTIVE, descriptions, peer.lost events on either node)."""
    standby = other(active)
    times, what, lost = [], [], 0
    for name in NODES:
        for record in records[name]:
            if not after[name] < record["id"] <= until[name]:
                continue
            data = record["data"]
            stamp = clock(record["time"])
            if record["kind"] == "peer.lost":
                lost += 1
                what.append(f"{stamp} {name} peer.lost {data}")
            elif record["kind"] != "state":
                continue
            elif (name == active and data.get("from") == "ACTIVE") or (
                    name == standby and data.get("to") in ("TAKEOVER", "ACTIVE")):
                times.append(record["time"])
                what.append(f"{stamp} {name} {data.get('from')} -> {data.get('to')} ({data.get('reason')})")
    return sorted(times), what, lost


def incidents(times: list[float]) -> int:
    """Failover events closer than FAILOVER_GAP_S to the previous one belong to the same failover."""
    count, last = 0, None
    for t in times:
        if last is None or t - last > FAILOVER_GAP_S:
            count += 1
        last = t
    return count


def journal_behind(rack: TwoNodeRack, name: str) -> int:
    """How many records the node has made that its journal file does not hold yet (-1: no answer)."""
    brief = rack.brief(name)
    return -1 if brief is None else brief["event_id"] - journal_last_id(rack.journal_path(name))


def wait_journal_drained(rack: TwoNodeRack, name: str, timeout: float = 300.0) -> float:
    """Wait until the node's journal file holds every record it had made when asked; the seconds it took."""
    brief = rack.brief(name)
    started = time.monotonic()
    if brief is not None:
        while (journal_last_id(rack.journal_path(name)) < brief["event_id"]
               and time.monotonic() - started < timeout):
            time.sleep(0.05)
    return time.monotonic() - started


def fmt_late(late: dict[str, Any]) -> str:
    if not late.get("samples"):
        return "no ticks"
    return f"p99 {late['p99']:.1f} max {late['max']:.1f} ms ({late['samples']} ticks)"


def pipeline(base: Path) -> dict[str, Any]:
    """ROUNDS x each kind of flood against the ACTIVE; failovers and tick lateness.

    The tick lateness is read in contiguous windows (each from where the last ended), so the journal
    writer catching up after one flood counts in the next flood's window, and after the last flood in
    a window of its own. The journals are judged once at the end, flood by flood by their record ids."""
    rack = TwoNodeRack(base, **RACK_OPTIONS,
                       extra={"flap": {"max_failures": 1000}, "journal": {"max_bytes": 128 * 2**20, "keep": 2}})
    floods: list[dict[str, Any]] = []
    worst, worst_where = 0.0, ""
    try:
        rack.start()
        active, tick = None, -1
        for round_ in range(ROUNDS):
            for kind in PIPELINE_KINDS:
                label = f"round {round_ + 1}/{ROUNDS} {kind}"
                current = rack.wait_pair(timeout=60)
                if current != active:  # the first flood, or a failover: a new window on the new ACTIVE
                    if active is not None:
                        print(f"    {current} is ACTIVE now; lateness windows go on there", flush=True)
                    active, tick = current, rack.control(current, {"cmd": "lateness"})["tick"]
                marks = {name: rack.brief(name)["event_id"] for name in NODES}
                with StatePoller(rack, active, tick) as poller:
                    started = time.monotonic()
                    got = flood_in_process(rack.socket_path(active), {"cmd": kind}, PIPELINE_BYTES)
                    behind = journal_behind(rack, active)
                poller.lateness()
                late, tick = poller.late, poller.tick
                window = time.monotonic() - started
                if late["max"] > worst:
                    worst, worst_where = late["max"], label
                floods.append({"label": label, "active": active, "marks": marks, "poller": poller})
                print(f"{label:<25} {got['requests']} requests in {got['seconds']:.1f} s, {got['ok']}/{got['replies']}"
                      f" ok, {got['reply_bytes'] / 1e6:.1f} MB of replies; journal file {behind} records behind;"
                      f" tick lateness {fmt_late(late)}", flush=True)
                if got["error"] or got["replies"] != got["requests"]:
                    print(f"    replies: {got['replies']} of {got['requests']}; first error: {got['error']}",
                          flush=True)
                if window > 2.0 and late.get("samples", 0) < 0.8 * window / 0.1:
                    print(f"    only {late.get('samples', 0)} tick samples in {window:.1f} s "
                          "(ticks were missed)", flush=True)
                if poller.anomalies or any(poller.unanswered.values()):
                    print(f"    poller ({poller.polls} polls): unanswered {poller.unanswered}; "
                          f"not the settled pair: {poller.anomalies[:5]}", flush=True)
        with StatePoller(rack, active, tick) as poller:
            drained = max(wait_journal_drained(rack, name) for name in NODES)
            time.sleep(0.5)  # a late failover decision still shows in the journals
        poller.lateness()
        late = poller.late
        if late["max"] > worst:
            worst, worst_where = late["max"], "after the last flood"
        print(f"after the last flood: the journal caught up in {drained:.1f} s; tick lateness {fmt_late(late)}",
              flush=True)
        records = {name: journal_scan(rack.journal_path(name), 0, (b"state", b"peer.lost")) for name in NODES}
    finally:
        rack.stop()
    failovers, lost = 0, 0
    for index, entry in enumerate(floods):
        until = floods[index + 1]["marks"] if index + 1 < len(floods) else {name: float("inf") for name in NODES}
        times, what, peer_lost = failover_times(records, entry["active"], entry["marks"], until)
        count = incidents(times)
        if not count and entry["poller"].saw_failover:
            count = 1
            what.append("the poller saw a failover the journals do not show")
        failovers += count
        lost += peer_lost
        if count or peer_lost:
            print(f"{entry['label']}: {count} failovers, {peer_lost} peer.lost", flush=True)
            for line in what:
                print(f"    {line}", flush=True)
    print(f"pipelining: {failovers} failovers, {lost} peer.lost, worst tick lateness {worst:.1f} ms ({worst_where})",
          flush=True)
    return {"pipeline_failovers": failovers, "pipeline_max_tick_lateness_ms": round(worst, 1),
            "pipeline_peer_lost": lost}


# ---------------------------------------------------------------------------------------------- takeovers


def open_idle(path: Path, count: int, patience: float = 1.0) -> tuple[list[socket.socket], int]:
    """Up to `count` connections to a control socket, opened without blocking and held; (held, refused).
    Once a connect would block (the daemon no longer accepts and its backlog is full), the rest are
    retried for `patience` seconds."""
    held: list[socket.socket] = []
    giving_up = None
    while len(held) < count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except (BlockingIOError, InterruptedError, ConnectionRefusedError, OSError):
            sock.close()
            giving_up = giving_up or time.monotonic() + patience
            if time.monotonic() > giving_up:
                break
            time.sleep(0.01)
            continue
        held.append(sock)
    return held, count - len(held)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the daemon closed (or reset) this idle connection (what it said before is read and dropped)."""
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def log_size(rack: TwoNodeRack, name: str) -> int:
    try:
        return rack.log_path(name).stat().st_size
    except FileNotFoundError:
        return 0


def log_since(rack: TwoNodeRack, name: str, offset: int) -> str:
    with open(rack.log_path(name), "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def takeover_trial(rack: TwoNodeRack, idle: int) -> tuple[float, dict[str, Any]]:
    """SIGKILL the ACTIVE (with `idle` connections held on the standby); kill -> standby ACTIVE in s."""
    active = rack.wait_pair(timeout=60)
    standby = other(active)
    time.sleep(0.3)  # a few heartbeats in the steady state
    note: dict[str, Any] = {"killed": active}
    held: list[socket.socket] = []
    offset = log_size(rack, standby)
    if idle:
        held, note["refused"] = open_idle(rack.socket_path(standby), idle)
        note["held"] = len(held)
        time.sleep(1.0)  # the daemon accepts what it can
    try:
        killed = rack.kill(active)
        hold = IDLE_HOLD_S if idle else 20.0
        became = wait_took_active(rack, standby, killed, hold)
        if became is None:
            note["stuck"] = True
    finally:
        note["closed_by_daemon"] = sum(closed_by_peer(sock) for sock in held)
        for sock in held:
            sock.close()
    if became is None:
        rack.wait_state(standby, "ACTIVE", timeout=60)
        became = took_active(rack, standby, killed)
        if became is None:
            note["not_in_journal_file"] = True
            became = took_active_in_memory(rack, standby, killed)
    text = log_since(rack, standby, offset)
    note["emfile_log_lines"] = sum("Too many open files" in line for line in text.splitlines())
    errors = [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]
    note["log_errors"] = len(errors)
    note["log_warnings"] = sum(" WARNING " in line for line in text.splitlines())
    if errors:
        note["first_error"] = errors[0][:200]
    rack.start_node(active)
    return (became - killed) if became is not None else float("inf"), note


def replay_trial(rack: TwoNodeRack) -> tuple[float, dict[str, Any]]:
    """Capture and cut ACTIVE -> standby on UDP, SIGKILL the ACTIVE, replay the capture; kill -> standby ACTIVE."""
    active = rack.wait_pair(timeout=60)
    standby = other(active)
    direction = f"{active}->{standby}"
    time.sleep(0.3)
    rack.capture_network(direction)
    rack.cut_network(direction)
    time.sleep(CAPTURE_S)
    killed = rack.kill(active)
    rack.capture_network(direction, on=False)
    packets = [data for _, data in rack.captured_network(direction)]
    done = threading.Event()
    sent = [0]

    def replay() -> None:
        for data in packets:
            if done.is_set():
                return
            rack.inject_network(direction, data)
            sent[0] += 1
            done.wait(1 / REPLAY_PER_S)

    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    bound = len(packets) / REPLAY_PER_S + 10.0
    became = wait_took_active(rack, standby, killed, bound)
    done.set()
    thread.join()
    rack.restore_network(direction)
    note = {"killed": active, "captured": len(packets), "replayed_before_active": sent[0]}
    if became is None:
        note["not_active_within_s"] = round(bound, 1)
    rack.start_node(active)
    return (became - killed) if became is not None else bound, note


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


# ---------------------------------------------------------------------------------------------- crashes


def answering(rack: TwoNodeRack, name: str, timeout: float = 30.0) -> None:
    rack.wait_for(lambda: _ping(rack, name), timeout, interval=0.02, what=f"{name} to answer")


def _ping(rack: TwoNodeRack, name: str) -> bool:
    try:
        return rack.control(name, {"cmd": "ping"}, timeout=5.0) == "pong"
    except (ControlError, OSError, ValueError):
        return False


def command_stream(path: Path, first: int, acked: list[str], stop: threading.Event) -> None:
    """Send maintenance-on/-off alternately, one at a time, each with source abuse-<n>; note the acked."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        sock.connect(str(path))
    except OSError:
        return
    buffer, n = b"", first
    try:
        while not stop.is_set():
            source = f"abuse-{n}"
            cmd = "maintenance-on" if n % 2 else "maintenance-off"
            sock.sendall(json.dumps({"cmd": cmd, "source": source}).encode() + b"\n")
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            if json.loads(line).get("ok") is True:
                acked.append(source)
            n += 1
    except (OSError, ValueError):
        return
    finally:
        sock.close()


def crashes(rack: TwoNodeRack) -> dict[str, Any]:
    """KILLS SIGKILLs of the standby during a stream of acknowledged commands; acked ones not journaled."""
    rng = random.Random(SEED)
    missing_total, acked_total, counter = 0, 0, 0
    worst: list[str] = []
    cycles_with_loss = 0
    standby = other(rack.wait_pair(timeout=60))
    for kill in range(KILLS):
        answering(rack, standby)
        acked: list[str] = []
        stop = threading.Event()
        client = threading.Thread(target=command_stream, args=(rack.socket_path(standby), counter, acked, stop),
                                  daemon=True)
        client.start()
        time.sleep(rng.uniform(0.05, 0.5))
        rack.kill(standby)
        stop.set()
        client.join(timeout=30)
        counter += 100_000  # sources stay unique whatever a cycle sent
        rack.start_node(standby)  # after the supervisor's release, as systemd would
        sources = {record["data"].get("source") for record in read_journal(rack.journal_path(standby), keep=2)
                   if isinstance(record.get("data"), dict)}
        missing = [s for s in acked if s not in sources]
        missing_total += len(missing)
        acked_total += len(acked)
        cycles_with_loss += bool(missing)
        if missing and len(worst) < 10:
            worst.extend(missing[:10 - len(worst)])
        if (kill + 1) % 10 == 0 or missing:
            print(f"kill {kill + 1:>3}/{KILLS}: {len(acked)} acknowledged, {len(missing)} not journaled"
                  f"{' (the last ' + str(len(acked) - acked.index(missing[0])) + ' acked)' if missing else ''};"
                  f" so far {missing_total} of {acked_total}", flush=True)
    answering(rack, standby)
    rack.control(standby, {"cmd": "maintenance-off", "source": "abuse-end"})
    print(f"crashes: {missing_total} of {acked_total} acknowledged commands not journaled, in {cycles_with_loss} of "
          f"{KILLS} kills; e.g. {worst[:5]}", flush=True)
    return {"acked_unjournaled": missing_total, "acked_total": acked_total, "acked_loss_kills": cycles_with_loss}


def takeovers(base: Path) -> dict[str, Any]:
    """Normal and idle-connection takeovers, replays and crashes, on one rack with RLIMIT_NOFILE = NOFILE."""
    rack = TwoNodeRack(base, **RACK_OPTIONS, extra={"flap": {"max_failures": 1000}}, nofile=NOFILE)
    normal: list[float] = []
    idle: list[float] = []
    replay: list[float] = []
    stuck = 0
    try:
        rack.start()
        for trial in range(TRIALS):
            took, note = takeover_trial(rack, 0)
            normal.append(took)
            print(f"normal {trial + 1}/{TRIALS}: {note['killed']} killed, peer ACTIVE after {took * 1000:.0f} ms",
                  flush=True)
            took, note = takeover_trial(rack, IDLE_CONNECTIONS)
            idle.append(took)
            stuck += bool(note.get("stuck"))
            print(f"idle   {trial + 1}/{TRIALS}: {note['held']} connections opened, {note['refused']} refused, "
                  f"{note['closed_by_daemon']} of them closed by the daemon by the end; "
                  f"{note['killed']} killed, peer ACTIVE after {took * 1000:.0f} ms"
                  f"{' (only after the connections were closed)' if note.get('stuck') else ''}"
                  f"{'; the journal FILE lacks the state change' if note.get('not_in_journal_file') else ''}; "
                  f"its log: {note['emfile_log_lines']} 'Too many open files' lines, {note['log_warnings']} warnings, "
                  f"{note['log_errors']} errors"
                  f"{': ' + note['first_error'] if note.get('first_error') else ''}", flush=True)
        for trial in range(REPLAY_TRIALS):
            took, note = replay_trial(rack)
            replay.append(took)
            late = f"; NOT ACTIVE within {note['not_active_within_s']} s" if "not_active_within_s" in note else ""
            print(f"replay {trial + 1}/{REPLAY_TRIALS}: {note['killed']} killed, {note['captured']} datagrams captured,"
                  f" peer ACTIVE after {took * 1000:.0f} ms ({note['replayed_before_active']} replayed by then){late}",
                  flush=True)
        crashed = crashes(rack)
    finally:
        rack.stop()
    print(f"takeover: normal {summary(normal)}; 2,000 idle connections {summary(idle)} ({stuck} stuck); "
          f"replay {summary(replay)}", flush=True)
    return {"normal_takeover_ms": ms(statistics.median(normal)), "normal_takeover_ms_max": ms(max(normal)),
            "idle_conn_takeover_ms": ms(statistics.median(idle)), "idle_conn_takeover_ms_max": ms(max(idle)),
            "idle_conn_stuck_trials": stuck,
            "replay_takeover_ms": ms(statistics.median(replay)), "replay_takeover_ms_max": ms(max(replay)),
            **crashed}


# ---------------------------------------------------------------------------------------------- configs


def configs(base: Path) -> dict[str, Any]:
    """tests/config_corpus.py's run_corpus, if it exists."""
    nothing = {"config_tracebacks": None, "config_nonsense_accepted": None}
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from config_corpus import run_corpus
    except ImportError as exc:
        print(f"config corpus: not measured, tests/config_corpus.py cannot be imported ({exc}); null",
              file=sys.stderr, flush=True)
        return nothing
    try:
        result = run_corpus(base, seed=SEED)
    except Exception:
        print("config corpus: run_corpus failed; null\n" + traceback.format_exc(), file=sys.stderr, flush=True)
        return nothing
    print(f"config corpus: {result.get('configs')} configs, {result.get('tracebacks')} tracebacks, "
          f"{result.get('nonsense_accepted')} nonsense accepted, {result.get('valid_rejected')} valid rejected",
          flush=True)
    for failure in list(result.get("failures") or [])[:10]:
        print(f"    {str(failure)[:300]}", flush=True)
    return {"config_tracebacks": result.get("tracebacks"), "config_nonsense_accepted": result.get("nonsense_accepted"),
            "config_valid_rejected": result.get("valid_rejected")}


def main() -> None:
    """Each part on a rack of its own (or none), the figures as they come, the JSON line last."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # racks are stopped on the way out
    started = time.monotonic()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-abuse-") as tmp:
        figures.update(pipeline(Path(tmp) / "pipeline"))
        figures.update(takeovers(Path(tmp) / "takeover"))
        figures.update(configs(Path(tmp) / "configs"))
    figures["elapsed_s"] = round(time.monotonic() - started)
    ordered = {key: figures.get(key) for key in KEYS}
    ordered.update({k: v for k, v in figures.items() if k not in ordered})
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()
