"""`tandem sim lab`: start the simulated two-node rack and show both nodes live until Ctrl-C.

On a terminal the screen is interactive (sim/labview.py, textual: both nodes
side by side, a scrolling log, a command line); otherwise a plain text
snapshot of both nodes is printed twice a second (`render`), which is also
what tests and logs read.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sim.bmc import missing_tools
from sim.rack import NODES, TwoNodeRack

REFRESH_S = 0.5
QUIET_EVENTS = {"hook", "action"}
"""Event kinds left out of the lab's "recent events" (there is one per action and hook run)."""


def sensor_summary(status: dict[str, Any]) -> str:
    """One line: how many sensors and the worst of them."""
    sensors = status.get("sensors") or []
    if not sensors:
        return "sensors: none"
    bad = [s for s in sensors if s["state"] != "OK"]
    return f"sensors: {len(sensors)}, " + (f"{bad[0]['name']} {bad[0]['state']}" + (
        f" (+{len(bad) - 1} more)" if len(bad) > 1 else "") if bad else "all OK")


def lan_summary(status: dict[str, Any]) -> str:
    """One line: the node's LAN arbitration (last probe verdict, who answered) and its release guardian."""
    lan = status.get("lan") or {}
    last = lan.get("last")
    if last is None:
        probe = "probing" if lan.get("probing") else "idle"
    else:
        probe = last["verdict"] + (f" {last['holder']}" if last["holder"] else "") + (
            " (probing)" if lan.get("probing") else "")
    guardian = status.get("guardian")
    guard = "" if guardian is None else ("; guardian ok" if guardian["alive"] else "; guardian GONE")
    return f"LAN: {probe}{guard}"


def fence_summary(status: dict[str, Any]) -> str:
    """One line: the node's fence device (its check) and its last fence, or that it has none."""
    fence = status.get("fence")
    if not fence:
        return "fence: none"
    last = fence.get("last")
    done = "" if last is None else ("; fenced the peer" if last["fenced"] else "; last fence FAILED")
    running = "; FENCING" if fence.get("fencing") else ""
    return f"fence: {fence['agent']} {fence['device']}{running}{done}"


def panel_text(rack: TwoNodeRack, name: str) -> list[str]:
    """The node's front panel as a small framed text block (empty if it has none or is down)."""
    try:
        lines = rack.control(name, {"cmd": "panel.frame", "png": False}, timeout=2)["text"]
    except Exception:  # a stopped node or a board without a panel: nothing to show
        return []
    width = max((len(line) for line in lines), default=0)
    return ["┌" + "─" * width + "┐", *(f"│{line:<{width}}│" for line in lines), "└" + "─" * width + "┘"]


def event_line(event: dict[str, Any]) -> str:
    """One journal event as a line for people: time, what, and its most telling detail."""
    when = datetime.fromtimestamp(event["time"]).strftime("%H:%M:%S")
    data = event["data"]
    if event["kind"] == "state":
        return f"{when} {data['from']}→{data['to']}: {data['reason']}"
    if event["kind"] in ("link.up", "link.down"):
        return f"{when} {event['kind']} {data['link']}: {data['detail']}"
    if event["kind"] == "sensor.state":
        return f"{when} {data['sensor']} {data['from']}→{data['to']}: {data['summary']}"
    detail = (data.get("command") or data.get("peer") or data.get("reason") or data.get("detail")
              or data.get("message") or "")
    return f"{when} {event['kind']} {detail}"


def cluster_verdict(statuses: dict[str, dict[str, Any] | None]) -> tuple[str, bool]:
    """(one line saying who carries the calls, whether that is the healthy case of exactly one ACTIVE)."""
    if not any(statuses.values()):
        return "no node running", False
    active = [n for n, s in statuses.items() if s and s["state"] == "ACTIVE"]
    if len(active) == 1:
        return f"{active[0]} carries the calls", True
    if not active:
        return "NO node is ACTIVE", False
    return "BOTH nodes ACTIVE (they cannot hear each other)", False


def lan_holders(rack: TwoNodeRack) -> str:
    """Who answers for each shared address on the simulated LAN (dead daemons' boxes included)."""
    if rack.lab is not None:
        return "real addresses in the namespaces (ip -n <ns> addr)"
    found = []
    for table in rack.shared_ips:
        ip = table["address"].split("/")[0]
        holders = rack.holders(ip)
        found.append(f"{ip} held by {' AND '.join(holders) if holders else 'nobody'}")
    return "; ".join(found) or "no shared address"


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _link_cell(link: dict[str, Any]) -> str:
    heard = "never" if link["last_heard_s"] is None else f"{link['last_heard_s']:.2f}s ago"
    return f"{link['state']:<7} heard {heard}, lost {link['lost']}, bad {link['rejected_total']}"


def render(rack: TwoNodeRack, statuses: dict[str, dict[str, Any] | None], width: int = 38) -> str:
    """One screen of the lab: a column per node."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[Any]) -> None:
        rows.append((label, [_cell(v, width) for v in values]))

    row("node", [f"{n} ({rack.roles[n]})" for n in NODES])
    row("state", [s["state"] if s else "NOT RUNNING" for s in (statuses[n] for n in NODES)])
    row("why", [s["reason"] if s else "" for s in (statuses[n] for n in NODES)])
    row("health", [s["health"] if s else "" for s in (statuses[n] for n in NODES)])
    row("epoch", [s["epoch"] if s else "" for s in (statuses[n] for n in NODES)])
    link_names = next((([l["name"] for l in s["links"]]) for s in statuses.values() if s), [])
    for link in link_names:
        row(link, [_link_cell({l["name"]: l for l in s["links"]}[link]) if s else ""
                   for s in (statuses[n] for n in NODES)])
    row("alarms", [(str(len(s["alarms"])) + (": " + s["alarms"][0]["text"] if s["alarms"] else "")) if s else ""
                   for s in (statuses[n] for n in NODES)])
    row("sensors", [sensor_summary(s) if s else "" for s in (statuses[n] for n in NODES)])
    row("LAN", [lan_summary(s).removeprefix("LAN: ") if s else "" for s in (statuses[n] for n in NODES)])
    if rack.bmcs:
        row("fence", [fence_summary(s).removeprefix("fence: ") if s else "" for s in (statuses[n] for n in NODES)])
        row("power", ["on" if rack.powered(n) else "OFF (fenced)" for n in NODES])
    panels = [panel_text(rack, n) if statuses[n] else [] for n in NODES]
    for line in range(max(len(p) for p in panels)):
        row("panel" if line == 0 else "", [p[line] if line < len(p) else "" for p in panels])
    label_width = max(len(label) for label, _ in rows)
    lines = [f"Tandem simulated rack   {time.strftime('%H:%M:%S')}   (Ctrl-C stops the lab)", ""]
    for label, values in rows:
        lines.append(f"  {label:<{label_width}}  " + "  ".join(f"{v:<{width}}" for v in values))
    lines += ["", f"  cluster: {cluster_verdict(statuses)[0]}", f"  on the LAN: {lan_holders(rack)}"]
    return "\n".join(lines)


def run_lab(base: Path | None = None, duration: float | None = None, out: TextIO = sys.stdout,
            netns: bool = False, board: str | None = None) -> int:
    """Start the rack and refresh the live view until Ctrl-C (or `duration` seconds).

    With `netns` (root) each node runs in its own network namespace on a bridge, so the
    shared addresses (192.0.2.100/24, 2001:db8::100/64) really move and ARP is really sent.
    """
    own_dir = base is None
    base = Path(tempfile.mkdtemp(prefix="tandem-lab-")) if base is None else base
    if netns:
        shared = [{"address": "192.0.2.100/24", "interface": "eth0", "route_source": True},
                  {"address": "2001:db8::100/64", "interface": "eth0"}]
    else:
        shared = [{"address": "192.0.2.10/24", "interface": "eth0"}]
    trunks = [{"name": "trunks", "outputs": ["trunk:1", "trunk:2"],
               "feedback": ["trunk-sense:1", "trunk-sense:2"], "settle_ms": 200}]
    # Power fencing through simulated BMCs when ipmi_sim, fence_ipmilan and ipmitool are there (./dev installs them).
    rack = TwoNodeRack(base, shared_ips=shared, service="cold", netns=netns, relay_groups=trunks, history=True,
                       board=board, arbitration=True, fencing=not missing_tools(), fence={"options": {"power_wait": 0}})
    interactive = out.isatty()
    # `kill` (SIGTERM, as `timeout`, systemd or a test send it) stops the lab as Ctrl-C does, rack and
    # all: without this the daemons and their fake PBXs would outlive it.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    print(f"Starting two simulated nodes in {base} …", file=out, flush=True)
    try:
        rack.start()
        started = time.monotonic()
        rack.wait_for(lambda: all(rack.status(n) for n in NODES), 30, what="both nodes to answer")
        run_interactive = None
        if interactive:
            try:
                from sim.labview import run_interactive
            except ImportError as exc:  # the lab extra is not installed
                print(f"The interactive lab screen needs textual ({exc}): pip install -e '.[lab]' "
                      "(./dev does). Showing the plain view; Ctrl-C stops the lab.", file=out, flush=True)
        if run_interactive is not None:
            run_interactive(rack, duration)
        else:
            while duration is None or time.monotonic() - started < duration:
                out.write(render(rack, {n: rack.status(n) for n in NODES}) + "\n\n")
                out.flush()
                time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        pass
    finally:
        if on_main_thread:  # a second signal must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("Stopping the lab …", file=out, flush=True)
        for name in NODES:
            rack.kill(name)
        rack.stop()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: leave the lab as Ctrl-C does."""
    raise KeyboardInterrupt
