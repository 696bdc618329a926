"""The interactive lab screen (curses): both nodes side by side, a command line below.

Refreshes twice a second. Commands (see sim/commands.py, or type `help`) run
in a background thread so the screen stays live while, say, a handover
completes.
"""

from __future__ import annotations

import curses
import threading
import time
from datetime import datetime
from typing import Any

from sim.commands import HELP, CommandError, execute
from sim.rack import NODES, TwoNodeRack

REFRESH_S = 0.5
EVENTS_SHOWN = 6
QUIET_EVENTS = {"hook", "action"}


class LabView:
    """State of the interactive screen."""

    def __init__(self, rack: TwoNodeRack) -> None:
        self.rack = rack
        self.input = ""
        self.messages: list[str] = ["Type a command and Enter; `help` lists them, `quit` leaves."]
        self.busy: str | None = None
        self._lock = threading.Lock()
        self.quit = False

    # ------------------------------------------------------------------ commands

    def submit(self, line: str) -> None:
        """Run a command line in the background."""
        line = line.strip()
        if not line:
            return
        if line in ("quit", "exit", "q"):
            self.quit = True
            return
        if line in ("help", "?"):
            self._say(*HELP.splitlines())
            return
        if self.busy:
            self._say(f"still running: {self.busy}")
            return
        self.busy = line
        threading.Thread(target=self._run, args=(line,), daemon=True).start()

    def _run(self, line: str) -> None:
        try:
            self._say(f"> {line}: {execute(self.rack, line)}")
        except (CommandError, ValueError) as exc:
            self._say(f"> {line}: {exc}")
        finally:
            self.busy = None

    def _say(self, *lines: str) -> None:
        with self._lock:
            self.messages = (self.messages + list(lines))[-8:]

    # ------------------------------------------------------------------ drawing

    def draw(self, screen: Any, statuses: dict[str, dict[str, Any] | None]) -> None:
        """Draw one frame."""
        screen.erase()
        height, width = screen.getmaxyx()
        col = max(30, (width - 3) // 2)
        title = "Tandem lab: two simulated nodes joined by a network link (net0) and a serial cable (serial0)"
        _put(screen, 0, 0, title[: width - 1], curses.A_BOLD)
        _put(screen, 0, max(0, width - 9), time.strftime("%H:%M:%S"))
        bottom = max(self._draw_node(screen, 2, 1 + index * (col + 1), col, name, statuses[name])
                     for index, name in enumerate(NODES))
        y = min(height - 8, bottom + 1)
        wires = (f"cables: network {self.rack.wiring('net')}   serial {self.rack.wiring('serial')}   "
                 f"witness {'up' if self.rack.witness and self.rack.witness.is_up else 'down'}")
        _put(screen, y, 1, wires[: width - 2], curses.A_BOLD)
        active = [n for n, s in statuses.items() if s and s["state"] == "ACTIVE"]
        verdict = (f"{active[0]} carries the calls" if len(active) == 1 else
                   "NO node is ACTIVE" if not active else "BOTH nodes ACTIVE (they cannot hear each other)")
        _put(screen, y + 1, 1, f"cluster: {verdict}", _colour("ACTIVE" if len(active) == 1 else "bad"))
        with self._lock:
            messages = list(self.messages)
        for offset, message in enumerate(messages[-(height - y - 5):]):
            _put(screen, y + 3 + offset, 1, message[: width - 2])
        prompt = f"command> {self.input}" + ("   (running…)" if self.busy else "")
        _put(screen, height - 1, 0, prompt[: width - 1], curses.A_BOLD)

    def _draw_node(self, screen: Any, y: int, x: int, width: int, name: str, status: dict[str, Any] | None) -> int:
        """Draw one node's column; return the row below it."""
        role = self.rack.roles[name]
        _put(screen, y, x, f"{name} ({role})", curses.A_BOLD | curses.A_UNDERLINE)
        if status is None:
            _put(screen, y + 1, x, "NOT RUNNING  (start " + name + ")", _colour("bad"))
            return y + 2
        state = status["state"]
        _put(screen, y + 1, x, f"{state:<9}", _colour(state) | curses.A_BOLD)
        _put(screen, y + 1, x + 10, f"for {status['since_s']:.0f}s"[: width - 10])
        _put(screen, y + 2, x, status["reason"][:width])
        _put(screen, y + 3, x, f"health {status['health']:>3}   epoch {status['epoch']}"[:width])
        ips = status.get("shared_ips") or []
        owned = [ip["address"] for ip in ips if ip.get("present")]
        _put(screen, y + 4, x, ("shared IP " + (", ".join(owned) if owned else "-"))[:width],
             _colour("ACTIVE") if owned else 0)
        service = status.get("service")
        pbx = "PBX " + ("-" if service is None else
                        f"{'running' if service['running'] else 'stopped'} ({service['mode']})")
        _put(screen, y + 5, x, pbx[:width])
        relays = status.get("relays") or []
        for group in relays[:1]:  # the first group fits the column; status --json has them all
            positions = " ".join(f"{o['output']}={'ON' if o['energized'] else 'off'}" for o in group["outputs"])
            text = f"relays {group['group']}: {positions}" + (" MISMATCH" if group["mismatch"] else "")
            _put(screen, y + 6, x, text[:width], _colour("bad") if group["mismatch"] else 0)
        top = y + 6 + min(len(relays), 1)
        _put(screen, top, x, "links      state  heard   lost  bad", curses.A_DIM)
        for offset, link in enumerate(status["links"]):
            heard = "never" if link["last_heard_s"] is None else f"{link['last_heard_s']:.2f}s"
            text = f"{link['name']:<10} {link['state']:<6} {heard:>6} {link['lost']:>5} {link['rejected_total']:>4}"
            _put(screen, top + 1 + offset, x, text[:width], _colour("ACTIVE" if link["state"] == "up" else "bad"))
        row = top + 1 + len(status["links"])
        alarms = [alarm["text"] for alarm in status["alarms"]]
        _put(screen, row, x, f"alarms: {len(alarms) or 'none'}"[:width], _colour("bad") if alarms else 0)
        for offset, alarm in enumerate(alarms[:2]):
            _put(screen, row + 1 + offset, x, ("! " + alarm)[:width], _colour("bad"))
        row += 3
        _put(screen, row, x, sensor_summary(status)[:width], _colour("bad") if status["alarms"] else 0)
        panel = panel_text(self.rack, name)
        for offset, line in enumerate(panel):
            _put(screen, row + 1 + offset, x, line[:width], curses.A_REVERSE if 0 < offset < len(panel) - 1 else 0)
        row += 1 + len(panel)
        _put(screen, row, x, "recent events", curses.A_DIM)
        recent = [e for e in self.rack.events(name) if e["kind"] not in QUIET_EVENTS][-EVENTS_SHOWN:]
        for offset, event in enumerate(recent):
            _put(screen, row + 1 + offset, x, _event_line(event)[:width])
        return row + 1 + len(recent)


def sensor_summary(status: dict[str, Any]) -> str:
    """One line: how many sensors and the worst of them."""
    sensors = status.get("sensors") or []
    if not sensors:
        return "sensors: none"
    bad = [s for s in sensors if s["state"] != "OK"]
    return f"sensors: {len(sensors)}, " + (f"{bad[0]['name']} {bad[0]['state']}" + (
        f" (+{len(bad) - 1} more)" if len(bad) > 1 else "") if bad else "all OK")


def panel_text(rack: TwoNodeRack, name: str) -> list[str]:
    """The node's front panel as a small framed text block (empty if it has none or is down)."""
    try:
        lines = rack.control(name, {"cmd": "panel.frame", "png": False}, timeout=2)["text"]
    except Exception:  # a stopped node or a board without a panel: nothing to show
        return []
    width = max((len(line) for line in lines), default=0)
    return ["┌" + "─" * width + "┐", *(f"│{line:<{width}}│" for line in lines), "└" + "─" * width + "┘"]


def _event_line(event: dict[str, Any]) -> str:
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


_COLOURS: dict[str, int] = {}


def _colour(key: str) -> int:
    return curses.color_pair(_COLOURS.get(key, 0)) if _COLOURS else 0


def _put(screen: Any, y: int, x: int, text: str, attr: int = 0) -> None:
    height, width = screen.getmaxyx()
    if 0 <= y < height and 0 <= x < width:
        try:
            screen.addstr(y, x, text[: max(0, width - x - 1)], attr)
        except curses.error:
            pass


def _setup_colours() -> None:
    if not curses.has_colors():
        return
    curses.start_color()
    curses.use_default_colors()
    for number, (key, colour) in enumerate((("ACTIVE", curses.COLOR_GREEN), ("STANDBY", curses.COLOR_CYAN),
                                           ("TAKEOVER", curses.COLOR_YELLOW), ("RELEASING", curses.COLOR_YELLOW),
                                           ("STARTING", curses.COLOR_YELLOW), ("bad", curses.COLOR_RED)), start=1):
        curses.init_pair(number, colour, -1)
        _COLOURS[key] = number


def run_interactive(rack: TwoNodeRack, duration: float | None = None) -> None:
    """Run the curses screen until `quit`, Ctrl-C or `duration`."""
    view = LabView(rack)

    def main(screen: Any) -> None:
        _setup_colours()
        screen.timeout(int(REFRESH_S * 1000))
        started = time.monotonic()
        last_draw = 0.0
        while not view.quit and (duration is None or time.monotonic() - started < duration):
            if time.monotonic() - last_draw >= REFRESH_S:
                view.draw(screen, {n: rack.status(n) for n in NODES})
                last_draw = time.monotonic()
            try:
                key = screen.get_wch()
            except curses.error:  # the refresh timeout passed without a key
                continue
            if key in ("\n", "\r"):
                view.submit(view.input)
                view.input = ""
            elif key in (curses.KEY_BACKSPACE, "\x7f", "\b"):
                view.input = view.input[:-1]
            elif isinstance(key, str) and key.isprintable():
                view.input += key
            last_draw = 0.0  # echo the key at once

    try:
        curses.wrapper(main)
    except KeyboardInterrupt:
        pass
