"""The interactive lab screen (textual): the verdict, both nodes side by side, a scrolling log, a command line.

Refreshes twice a second. Commands (see sim/commands.py, or type `help`) run
on a worker thread so the screen stays live while, say, a handover
completes; their results and the help go to the log, which scrolls (mouse
wheel, PgUp/PgDn once clicked) and keeps the last 500 lines. The command line
suggests completions (→ accepts one) and recalls earlier commands (↑/↓).

textual is the ``lab`` extra (``pip install -e '.[lab]'``, which ``./dev``
does); the appliance never needs it. Why textual and not curses or rich:
docs/library-decisions.md.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.widgets import Header, Input, RichLog, Static

from sim.commands import HELP, CommandError, execute
from sim.lab import (QUIET_EVENTS, REFRESH_S, cluster_verdict, event_line, fence_summary, lan_summary, panel_text,
                     sensor_summary)
from sim.rack import NODES, TwoNodeRack

EVENTS_SHOWN = 6
LOG_LINES = 500
GREETING = "Type a command and Enter; `help` lists them, `quit` leaves."
STATE_STYLES = {"ACTIVE": "bold green", "STANDBY": "bold cyan", "TAKEOVER": "bold yellow",
                "RELEASING": "bold yellow", "STARTING": "bold yellow"}
BAD = "red"


def command_suggestions() -> list[str]:
    """Whole command lines the command line offers as completions, most common first."""
    per_node = ["kill", "start", "term", "promote", "demote", "shutdown", "maintenance", "silence", "health",
                "set", "press", "stuck"]
    lines = [f"{verb} {node}" for verb in per_node for node in NODES]
    lines += [f"{verb} {medium}" for verb in ("cut", "restore") for medium in ("net", "serial")]
    return lines + ["witness down", "witness up", "noise", "help", "quit"]


def node_text(rack: TwoNodeRack, name: str, status: dict[str, Any] | None) -> Text:
    """One node's column: state, why, health, shared IP, PBX, relays, links, alarms, sensors, panel, events."""
    text = Text()
    text.append(f"{name} ({rack.roles[name]})\n", "bold underline")
    if status is None:
        text.append(f"NOT RUNNING  (start {name})\n", f"bold {BAD}")
        return text
    state = status["state"]
    text.append(f"{state:<9}", STATE_STYLES.get(state, "bold"))
    text.append(f" for {status['since_s']:.0f}s\n{status['reason']}\n")
    text.append(f"health {status['health']:>3}   epoch {status['epoch']}\n")
    owned = [ip["address"] for ip in status.get("shared_ips") or [] if ip.get("present")]
    text.append("shared IP " + (", ".join(owned) if owned else "-") + "\n", "green" if owned else "")
    service = status.get("service")
    text.append("PBX " + ("-" if service is None else
                          f"{'running' if service['running'] else 'stopped'} ({service['mode']})") + "\n")
    text.append(lan_summary(status) + "\n")
    if status.get("fence"):
        text.append(fence_summary(status) + "\n", BAD if status["fence"]["device"] == "failed" else "")
    for group in (status.get("relays") or [])[:1]:  # the first group fits the column; status --json has them all
        positions = " ".join(f"{o['output']}={'ON' if o['energized'] else 'off'}" for o in group["outputs"])
        text.append(f"relays {group['group']}: {positions}" + (" MISMATCH" if group["mismatch"] else "") + "\n",
                    BAD if group["mismatch"] else "")
    text.append("links      state  heard   lost  bad\n", "dim")
    for link in status["links"]:
        heard = "never" if link["last_heard_s"] is None else f"{link['last_heard_s']:.2f}s"
        text.append(f"{link['name']:<10} {link['state']:<6} {heard:>6} {link['lost']:>5} {link['rejected_total']:>4}\n",
                    "green" if link["state"] == "up" else BAD)
    alarms = [alarm["text"] for alarm in status["alarms"]]
    text.append(f"alarms: {len(alarms) or 'none'}\n", BAD if alarms else "")
    for alarm in alarms[:2]:
        text.append(f"! {alarm}\n", BAD)
    text.append(sensor_summary(status) + "\n", BAD if alarms else "")
    panel = panel_text(rack, name)
    for offset, line in enumerate(panel):
        text.append(line + "\n", "reverse" if 0 < offset < len(panel) - 1 else "")
    text.append("recent events\n", "dim")
    recent = [e for e in rack.events(name) if e["kind"] not in QUIET_EVENTS][-EVENTS_SHOWN:]
    for event in recent:
        text.append(event_line(event) + "\n")
    return text


class CommandLine(Input):
    """The command input, with ↑/↓ through the commands entered before."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("up", "older", show=False),
                                             Binding("down", "newer", show=False)]

    def __init__(self, **kwargs: Any) -> None:
        """An empty history; the rest as for `Input`."""
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._back = 0  # how far back ↑ went; 0 = the line being typed

    def remember(self, line: str) -> None:
        """Add an entered command to the history (not twice in a row)."""
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self._back = 0

    def action_older(self) -> None:
        """Show the previous command."""
        if self._back < len(self.history):
            self._back += 1
            self.value = self.history[-self._back]
            self.cursor_position = len(self.value)

    def action_newer(self) -> None:
        """Show the next command, or an empty line after the newest."""
        if self._back > 0:
            self._back -= 1
            self.value = self.history[-self._back] if self._back else ""
            self.cursor_position = len(self.value)


class LabView(App[None]):
    """The lab screen: the cluster verdict and the cables, a column per node, the log, the command line.

    The verdict comes first so that it shows on the smallest terminal; the
    node columns scroll when they do not fit.
    """

    CSS = """
    #cluster { height: 2; padding: 0 1; }
    #nodes { height: 3fr; }
    .node { width: 1fr; height: 100%; padding: 0 1; border: round $primary; overflow-y: auto; }
    #log { height: 1fr; min-height: 5; border: round $secondary; }
    """
    TITLE = "Tandem lab"
    SUB_TITLE = "two simulated nodes joined by a network link (net0) and a serial cable (serial0)"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+c", "quit", "Quit", priority=True)]

    def __init__(self, rack: TwoNodeRack, duration: float | None = None) -> None:
        """Show ``rack``; leave by itself after ``duration`` seconds if given."""
        super().__init__()
        self.rack = rack
        self.duration = duration
        self.busy: str | None = None
        self.statuses: dict[str, dict[str, Any] | None] = {}
        self.refreshed = threading.Event()
        """Set after each refresh of the node columns (tests wait on it)."""

    def compose(self) -> ComposeResult:
        """The widgets, top to bottom."""
        yield Header(show_clock=True)
        yield Static(id="cluster")
        with Horizontal(id="nodes"):
            for name in NODES:
                yield Static(id=name, classes="node")
        yield RichLog(id="log", wrap=True, max_lines=LOG_LINES)
        yield CommandLine(placeholder="command, e.g. kill alpha   (help lists them, → completes, ↑ recalls)",
                          suggester=SuggestFromList(command_suggestions(), case_sensitive=False))

    def on_mount(self) -> None:
        """Greet, focus the command line, start refreshing."""
        self.say(GREETING)
        self.query_one(CommandLine).focus()
        self.set_interval(REFRESH_S, self.refresh_status)
        self.refresh_status()
        if self.duration is not None:
            self.set_timer(self.duration, self.exit)

    def say(self, *lines: str) -> None:
        """Append lines to the log."""
        log = self.query_one("#log", RichLog)
        for line in lines:
            log.write(Text(line))

    @work(thread=True, exclusive=True, group="status")
    def refresh_status(self) -> None:
        """Ask both nodes for their status (blocking socket calls, so on a worker thread) and show it."""
        statuses = {name: self.rack.status(name) for name in NODES}
        texts = {name: node_text(self.rack, name, statuses[name]) for name in NODES}
        self.call_from_thread(self._show, statuses, texts)

    def _show(self, statuses: dict[str, dict[str, Any] | None], texts: dict[str, Text]) -> None:
        self.statuses = statuses
        for name in NODES:
            self.query_one(f"#{name}", Static).update(texts[name])
        verdict, healthy = cluster_verdict(statuses)
        wires = (f"cables: network {self.rack.wiring('net')}   serial {self.rack.wiring('serial')}   "
                 f"witness {'up' if self.rack.witness and self.rack.witness.is_up else 'down'}")
        self.query_one("#cluster", Static).update(
            Text.assemble((wires + "\n", "bold"), (f"cluster: {verdict}", "bold green" if healthy else f"bold {BAD}")))
        self.refreshed.set()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Run the entered command line."""
        line = event.value.strip()
        event.input.value = ""
        if isinstance(event.input, CommandLine):
            event.input.remember(line)
        self.submit(line)

    def submit(self, line: str) -> None:
        """Carry out one command line: help and quit at once, the rest on a worker thread."""
        if not line:
            return
        if line in ("quit", "exit", "q"):
            self.exit()
            return
        if line in ("help", "?"):
            self.say(*HELP.splitlines())
            return
        if self.busy:
            self.say(f"still running: {self.busy}")
            return
        self.busy = line
        self.run_command(line)

    @work(thread=True, group="command")
    def run_command(self, line: str) -> None:
        """Run a lab command (sim/commands.py) and log what it did."""
        try:
            result = f"> {line}: {execute(self.rack, line)}"
        except (CommandError, ValueError) as exc:
            result = f"> {line}: {exc}"
        finally:
            self.busy = None
        self.call_from_thread(self.say, result)
        self.call_from_thread(self.refresh_status)


def run_interactive(rack: TwoNodeRack, duration: float | None = None) -> None:
    """Run the lab screen until `quit`, Ctrl-C or `duration`."""
    try:
        LabView(rack, duration).run()
    except KeyboardInterrupt:
        pass
