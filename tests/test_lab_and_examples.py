"""The README's main command (the lab), the shipped example config and board profile, systemd notify."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.config import load_config
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
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "sim", "lab", "--dir", str(tmp_path),
                             "--duration", "6"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last_screen = result.stdout.split("Tandem simulated rack")[-1]
    assert "alpha (primary)" in last_screen and "bravo (secondary)" in last_screen
    assert "alpha carries the calls" in last_screen
    assert "serial0" in last_screen and "net0" in last_screen


@pytest.mark.integration
def test_daemon_notifies_systemd_ready_and_watchdog(tmp_path: Path) -> None:
    rack = TwoNodeRack(tmp_path)
    rack.write_configs()
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 3:
            messages.append(listener.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert sum("WATCHDOG=1" in m for m in messages) >= 3
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
    finally:
        proc.kill()
        proc.wait()
        listener.close()


@pytest.mark.integration
def test_interactive_lab_takes_commands_and_redraws(tmp_path: Path) -> None:
    import fcntl
    import pty
    import select
    import struct
    import termios

    from firmware.core.control import request

    pid, fd = pty.fork()
    if pid == 0:  # child: the lab on a 150x45 terminal
        os.environ["TERM"] = "xterm"
        os.execv(sys.executable, [sys.executable, "-m", "firmware.cli", "sim", "lab", "--dir", str(tmp_path),
                                  "--duration", "40"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 150, 0, 0))
    screen = b""

    def read_until(predicate, timeout: float) -> bool:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    break
        return predicate()

    def bravo_state() -> str | None:
        try:
            return request(tmp_path / "bravo" / "control.sock", {"cmd": "status"}, 5)["state"]
        except Exception:
            return None

    try:
        assert read_until(lambda: b"carries the calls" in screen, 60), screen[-2000:]
        assert b"alpha (primary)" in screen and b"shared IP 192.0.2.10/24" in screen
        os.write(fd, b"kill alpha\r")
        assert read_until(lambda: bravo_state() == "ACTIVE", 20)
        # curses sends only what changed, so look in everything drawn so far
        assert read_until(lambda: b"NOT RUNNING" in screen and b"alpha killed" in screen, 10), screen[-2000:]
        os.write(fd, b"quit\r")
        assert read_until(lambda: b"Stopping the lab" in screen, 20)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
