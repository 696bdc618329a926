"""The README's main command (the lab), the shipped example config and board profile, systemd notify."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.config import load_config
from helpers import NotifyListener, wait_for, wait_for_async
from sim.rack import TwoNodeRack

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_valid_and_documented() -> None:
    config = load_config(ROOT / "examples" / "tandem.toml")
    assert config.board.extensions == ["sim.extension:install"] and config.node.timers.heartbeat_ms == 100
    assert [link.kind for link in config.node.links] == ["udp", "serial"]
    text = (ROOT / "examples" / "tandem.toml").read_text()
    for key in ("heartbeat_ms", "deadtime_ms", "initdead_ms", "targets", "policy", "max_failures",
                "warning_factor", "hold_confirm_s", "view_only"):
        assert f"{key} =" in text
    from firmware.core.health import sensor_options

    checked = {entry.name: (cls.family, options) for entry, cls, options in sensor_options(config)}
    # The example's own sensors (with their family options) plus the sim board's chassis.
    assert {"asterisk", "pbx-process", "itsp", "root-disk", "gateway", "psu1", "inlet"} <= set(checked)
    assert checked["pbx-process"][1].process == "asterisk"
    assert checked["asterisk"][1].timeout_s == 5.0  # the sensor's timeout_s reaches the AMI client


@pytest.mark.integration
def test_lab_starts_both_nodes_and_shows_one_active(tmp_path: Path) -> None:
    import threading

    # Stopped (SIGTERM, as `kill` or `timeout` would) once a whole screen shows the settled pair, rather
    # than a fixed --duration that is waited out in full when all is well and may run out before the
    # pair settles on a loaded box.
    errors = tmp_path / "lab.err"
    with open(errors, "w") as stderr:
        lab = subprocess.Popen([sys.executable, "-m", "firmware.cli", "sim", "lab", "--dir", str(tmp_path / "lab"),
                                "--duration", "300"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(lab.stdout), name="lab-stdout", daemon=True)
    reader.start()

    def settled_screen() -> str | None:  # whole screens only: the ones another screen follows
        whole = "".join(lines).split("Tandem simulated rack")[1:-1]
        return next((screen for screen in whole if "alpha carries the calls" in screen), None)

    try:
        screen = wait_for(settled_screen, 60, what="a screen showing alpha carrying the calls")
    finally:
        lab.terminate()  # the lab stops its rack on SIGTERM as on Ctrl-C
        lab.wait(timeout=60)
        reader.join(10)
    assert lab.returncode == 0, errors.read_text()
    assert "alpha (primary)" in screen and "bravo (secondary)" in screen
    assert "serial0" in screen and "net0" in screen
    assert "Stopping the lab" in "".join(lines)


@pytest.mark.integration
def test_daemon_notifies_systemd_ready_and_watchdog(racks: Callable[..., TwoNodeRack], tmp_path: Path) -> None:
    rack = racks(nodes=())
    with NotifyListener(tmp_path / "notify.sock") as listener:
        rack.start_node("alpha", env=listener.env(watchdog_usec=400_000))
        listener.wait_count("WATCHDOG", "1", 3, timeout=20)
        assert listener.with_field("READY", "1")
        assert listener.with_field("STATUS")


@pytest.mark.integration
def test_interactive_lab_takes_commands_and_redraws(tmp_path: Path) -> None:
    import fcntl
    import pty
    import signal
    import struct
    import termios
    import threading

    from firmware.core.control import request

    pid, fd = pty.fork()
    if pid == 0:  # child: the lab on a 150x45 terminal, answering Ctrl-C even if the test runs with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # An explicit environment: under pytest, GNU readline has exported COLUMNS=80 and LINES=24 into the
        # process's C environment (not os.environ), and execv would pass them on to override the pty's size.
        env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm"
        os.execve(sys.executable, [sys.executable, "-m", "firmware.cli", "sim", "lab", "--dir", str(tmp_path),
                                   "--duration", "40"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 150, 0, 0))
    screen = bytearray()  # everything the lab drew (curses sends only what changed)

    def drain() -> None:  # keeps the pty read, so the lab never blocks on its output
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the lab has exited and its end of the pty is closed
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, name="lab-screen", daemon=True)
    reader.start()

    def bravo_state() -> str | None:
        try:
            return request(tmp_path / "bravo" / "control.sock", {"cmd": "state"}, 5)["state"]
        except Exception:
            return None

    def exited() -> bool:
        return os.waitpid(pid, os.WNOHANG)[0] == pid

    done = False
    try:
        first_screen = (b"carries the calls", b"alpha (primary)", b"shared IP 192.0.2.10/24")
        # the screen is drawn in pieces, the verdict at the top first: wait for all of it
        wait_for(lambda: all(part in screen for part in first_screen), 60, what="the whole first screen")
        os.write(fd, b"kill alpha\r")
        wait_for(lambda: bravo_state() == "ACTIVE", 20, what="bravo ACTIVE after `kill alpha`")
        wait_for(lambda: b"NOT RUNNING" in screen and b"alpha killed" in screen, 10, what="the killed node on screen")
        os.write(fd, b"quit\r")
        wait_for(lambda: b"Stopping the lab" in screen, 20, what="the lab to stop")
        # The lab stops its rack (daemons, fake PBXs) before it exits: wait for that, do not cut it short.
        done = wait_for(exited, 60, what="the lab to exit after stopping its rack")
    finally:
        if not done:  # a failed test: interrupt the lab (it stops its rack on Ctrl-C), kill only if that fails
            os.kill(pid, signal.SIGINT)
            try:
                wait_for(exited, 60, what="the interrupted lab to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        reader.join(10)
        os.close(fd)


class FakeRack:
    """Just enough of TwoNodeRack for the lab screen and the lab commands: alpha ACTIVE, bravo STANDBY."""

    roles = {"alpha": "primary", "bravo": "secondary"}

    def __init__(self) -> None:
        self.up = {"alpha": True, "bravo": True}
        self.witness = None
        self.killed: list[tuple[str, int]] = []

    def status(self, name: str) -> dict | None:
        if not self.up[name]:
            return None
        active = name == "alpha"
        return {"state": "ACTIVE" if active else "STANDBY", "since_s": 12.0,
                "reason": "carrying the calls" if active else "alpha is ACTIVE", "health": 100, "epoch": 3,
                "shared_ips": [{"address": "192.0.2.10/24", "present": active}],
                "service": {"running": active, "mode": "cold"}, "relays": [],
                "links": [{"name": "net0", "state": "up", "last_heard_s": 0.05, "lost": 0, "rejected_total": 0}],
                "alarms": [] if active else [{"key": "peer/critical", "source": "peer", "level": "critical",
                                              "text": "peer alpha silent on every link"}],
                "sensors": [{"name": "psu1", "state": "OK"}]}

    def events(self, name: str) -> list[dict]:
        return [{"time": 0.0, "kind": "state", "data": {"from": "STANDBY", "to": "ACTIVE", "reason": "test"}}]

    def control(self, name: str, payload: dict, timeout: float = 30.0) -> object:
        raise ConnectionRefusedError("no panel in the fake rack")

    def wiring(self, medium: str) -> str:
        return "ok"

    def running(self, name: str) -> bool:
        return self.up[name]

    def kill(self, name: str, sig: int) -> float:
        self.killed.append((name, sig))
        self.up[name] = False
        return 0.0


def test_lab_view_headless_shows_nodes_runs_commands_and_keeps_help() -> None:
    """The textual lab screen driven by keys against a fake rack: no daemons, no terminal."""
    import asyncio
    import signal

    from textual.widgets import Input, RichLog, Static

    from sim.commands import HELP
    from sim.labview import LabView

    rack = FakeRack()
    app = LabView(rack)  # type: ignore[arg-type]

    def text_of(selector: str) -> str:
        return str(app.query_one(selector, Static).content)

    def log_lines() -> list[str]:
        return [strip.text.rstrip() for strip in app.query_one("#log", RichLog).lines]

    async def until(pilot, predicate, what: str) -> None:
        await wait_for_async(predicate, 10, what, pause=pilot.pause)

    async def drive() -> None:
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: app.statuses, "the first refresh")
            assert "ACTIVE" in text_of("#alpha") and "shared IP 192.0.2.10/24" in text_of("#alpha")
            assert "! peer alpha silent on every link" in text_of("#bravo")
            assert "cluster: alpha carries the calls" in text_of("#cluster")
            await pilot.press(*"help", "enter")
            help_lines = HELP.splitlines()
            await until(pilot, lambda: len(log_lines()) > len(help_lines), "the help in the log")
            shown = " ".join(" ".join(log_lines()).split())  # a long line may be wrapped
            assert [line for line in help_lines if " ".join(line.split()) not in shown] == [], log_lines()
            await pilot.press(*"kill alpha", "enter")
            await until(pilot, lambda: "> kill alpha: alpha killed (SIGKILL)" in log_lines(), "the kill result")
            assert rack.killed == [("alpha", signal.SIGKILL)]
            await until(pilot, lambda: "NOT RUNNING" in text_of("#alpha"), "alpha shown as not running")
            await until(pilot, lambda: "cluster: NO node is ACTIVE" in text_of("#cluster"), "the new verdict")
            await pilot.press(*"bogus", "enter")
            await until(pilot, lambda: any("unknown command 'bogus'" in line for line in log_lines()), "the error")
            await pilot.press("up")
            assert app.query_one(Input).value == "bogus"
            await pilot.press("up")
            assert app.query_one(Input).value == "kill alpha"
            await pilot.press("down", "down")
            assert app.query_one(Input).value == ""
            await pilot.press(*"quit", "enter")
            await until(pilot, lambda: app.return_code is not None, "the screen to close")

    asyncio.run(drive())
    assert app.return_code == 0
