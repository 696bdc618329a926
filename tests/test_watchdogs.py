"""Watchdogs are fed only by a healthy heartbeat tick: systemd notify, /dev/watchdog, the GPIO pulse."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import wait_for
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration


def test_stalled_loop_stops_systemd_watchdog_pings(tmp_path: Path) -> None:
    rack = TwoNodeRack(tmp_path)
    rack.write_configs()
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pings: list[float] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                if b"WATCHDOG=1" in listener.recv(4096):
                    pings.append(time.monotonic())
            except socket.timeout:
                continue

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        rack.wait_for(lambda: len(pings) >= 5, 20, what="regular watchdog pings")
        stalled_at = time.monotonic()
        rack.control("alpha", {"cmd": "sim.stall", "seconds": 1.5}, timeout=20)
        resumed_at = time.monotonic()
        count = len(pings)
        rack.wait_for(lambda: len(pings) >= count + 3, 10, what="pings to resume after the stall")
        during = [t for t in pings if stalled_at + 0.2 < t < resumed_at - 0.05]
        assert during == [], f"{len(during)} pings while the loop was stalled"
    finally:
        stop.set()
        proc.kill()
        proc.wait()
        rack.relay.stop()
        listener.close()


def test_hardware_watchdog_is_fed_and_magic_closed(racks: Callable[..., TwoNodeRack], tmp_path: Path) -> None:
    device = tmp_path / "watchdog"  # a regular file stands in for the device (no ioctls: writes only)
    device.touch()
    rack = racks(base=tmp_path / "rack", nodes=("alpha",),
                 extra={"watchdog": {"device": str(device), "timeout_s": 5}})
    wait_for(lambda: device.stat().st_size >= 5, 20, what="keepalive writes")
    status = rack.status("alpha")["watchdog"]
    assert status["armed"] and status["device"] == str(device)
    rack.kill("alpha", signal.SIGTERM)
    assert rack.wait_exit("alpha", 20) == 0
    data = device.read_bytes()
    assert data.endswith(b"V") and set(data[:-1]) == {0}


def test_missing_watchdog_device_is_a_startup_error(tmp_path: Path) -> None:
    rack = TwoNodeRack(tmp_path, extra={"watchdog": {"device": str(tmp_path / "no-such-watchdog")}})
    rack.write_configs()  # the configs only: nothing of the rack is started
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                            capture_output=True, text=True, timeout=30)
    rack.relay.stop()
    assert result.returncode == 78
    assert "watchdog.device" in result.stderr and "no-such-watchdog" in result.stderr


def pulse_toggles(status: dict) -> int:
    return status["watchdog_pulse"]["toggles"]


def test_watchdog_pulse_toggles_only_on_the_active_node(rack: TwoNodeRack) -> None:
    first = pulse_toggles(rack.status("alpha"))
    rack.wait_until("alpha", lambda status: pulse_toggles(status) >= first + 5, 10, what="the pulse on the ACTIVE node",
                    full=True)
    assert rack.status("bravo")["watchdog_pulse"]["toggles"] == 0
    assert rack.status("bravo")["watchdog_pulse"]["level"] is False
