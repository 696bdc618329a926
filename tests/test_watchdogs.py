"""Watchdogs are fed only by a healthy heartbeat tick: systemd notify, /dev/watchdog, the GPIO pulse."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import NotifyListener, wait_for
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration


def test_stalled_loop_stops_systemd_watchdog_pings(racks: Callable[..., TwoNodeRack], tmp_path: Path) -> None:
    rack = racks(nodes=())
    with NotifyListener(tmp_path / "notify.sock") as listener:
        rack.start_node("alpha", env=listener.env(watchdog_usec=200_000))
        listener.wait_count("WATCHDOG", "1", 5)
        stall_s = 1.5
        rack.control("alpha", {"cmd": "sim.stall", "seconds": stall_s}, timeout=20)  # returns when it ends
        count = len(listener.with_field("WATCHDOG", "1"))
        listener.wait_count("WATCHDOG", "1", count + 3)  # the pings resume after the stall
        # The stall began when the daemon journaled it and lasted stall_s at least. The pings carry the
        # kernel's stamp of when they were sent, so the window is exact however loaded the machine is
        # (1 ms off each end: the journal's time is rounded to the millisecond).
        began = next(e["time"] for e in reversed(rack.events("alpha")) if e["kind"] == "sim.stall")
        during = [m.at - began for m in listener.with_field("WATCHDOG", "1") if began + 0.001 < m.at < began + stall_s - 0.001]
        assert during == [], f"{len(during)} pings while the loop was stalled, at {during} s into the stall"


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
