"""Front panel: key press to new frame on the device, and what an idle panel costs the daemon.

1. Key to frame, dummy display: the panel runner with the sim board's drivers
   (gpiozero buttons on the mock pin factory, a 20×4 dummy LCD) and a status
   snapshot taken from a real simulated daemon. Each press drives a mock pin
   low (gpiozero runs the callback inside that call) and is timed until the
   display has been handed the new frame. DOWN and UP alternate, so every
   press changes the page. PRESSES presses.
2. Key to frame, CFA-635 emulator: the same with the Crystalfontz driver on
   the pty emulator at 115200 baud. Timed from the emulator sending the key
   report until the emulator's own text buffer shows the new page (every
   changed row sent and acknowledged).
3. Idle CPU: the simulated rack (two real daemons) on the sim board, and on
   the same board without its [panel]; each daemon's CPU over IDLE_S with the
   panel on its home page. The figure is the difference of the means.

Usage (from the repository root, after `./dev test` or `./dev lab` set up .venv):
    .venv/bin/python bench/panel.py
The last line is JSON: key_to_frame_p50_ms, key_to_frame_p99_ms, cfa_key_to_frame_p99_ms, panel_idle_cpu_pct
(plus cfa_key_to_frame_p50_ms and the two idle CPU figures).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from gpiozero.pins.mock import MockFactory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from firmware.panel.cfa.adapters import CfaDisplay, CfaKeys  # noqa: E402
from firmware.panel.dummy import DummyTextDisplay  # noqa: E402
from firmware.panel.gpio import GpioKeys  # noqa: E402
from firmware.panel.runner import PanelOptions, PanelRunner  # noqa: E402
from sim.cfa635 import CfaEmulator  # noqa: E402
from sim.rack import NODES, TwoNodeRack  # noqa: E402
from stats import percentile  # noqa: E402

PRESSES = int(os.environ.get("BENCH_PRESSES", "600"))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "60"))
OPTIONS = PanelOptions(backlight_timeout_s=3600, menu_timeout_s=3600, relock_s=3600)
PINS = {"up": 22, "down": 23, "enter": 24, "back": 25}


def snapshot() -> dict[str, Any]:
    """A real status snapshot from a simulated daemon (what the panel renders)."""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-panel-") as tmp:
        rack = TwoNodeRack(Path(tmp))
        rack.start()
        try:
            rack.wait_for(rack.settled, 30, what="a settled pair")
            return rack.status("alpha")
        finally:
            rack.stop()


def wait(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("no new frame within 5 s")
        time.sleep(0.0002)


def dummy_key_to_frame(status: dict[str, Any]) -> list[float]:
    """Mock-pin press to a frame handed to the dummy display, in ms."""
    factory = MockFactory()
    display = DummyTextDisplay(20, 4)
    keys = GpioKeys(PINS, pin_factory=factory)
    runner = PanelRunner(display, [keys], None, lambda request: copy.deepcopy(status) if request["cmd"] == "status"
                         else None, OPTIONS).start()
    try:
        wait(lambda: display.frames_pushed > 0)
        times = []
        for index in range(PRESSES):
            pin = factory.pin(PINS["down" if index % 2 == 0 else "up"])
            before = display.frames_pushed
            started = time.perf_counter()
            pin.drive_low()
            wait(lambda: display.frames_pushed > before)
            times.append((time.perf_counter() - started) * 1000)
            pin.drive_high()
        return times
    finally:
        runner.close()


def cfa_key_to_frame(status: dict[str, Any]) -> list[float]:
    """Emulator key report to the new page in the emulator's text buffer, in ms."""
    with CfaEmulator("cfa635") as emulator:
        display = CfaDisplay(port=emulator.port, model="cfa635", baudrate=115200)
        keys = CfaKeys(port=emulator.port, model="cfa635", baudrate=115200)
        runner = PanelRunner(display, [keys], None, lambda request: copy.deepcopy(status)
                             if request["cmd"] == "status" else None, OPTIONS).start()
        try:
            wait(lambda: "alpha" in "".join(emulator.text_rows()))
            wait(lambda: emulator.key_masks != (0, 0))
            times = []
            for index in range(PRESSES):
                key = "down" if index % 2 == 0 else "up"
                before = runner.frame_text()
                started = time.perf_counter()
                emulator.press(key)
                # The new page is on the device when every row of the panel's new frame is in the module.
                wait(lambda: runner.frame_text() != before and emulator.text_rows() == runner.frame_text())
                times.append((time.perf_counter() - started) * 1000)
                emulator.release(key)
            return times
        finally:
            runner.close()


def board_without_panel(directory: Path) -> Path:
    """The sim board profile with its [panel] tables removed (everything else unchanged)."""
    text = (ROOT / "board_profiles" / "sim.toml").read_text()
    text = text.split("\n# The front panel:")[0].replace('name = "sim"', 'name = "sim-no-panel"')
    path = directory / "sim-no-panel.toml"
    path.write_text(text + "\n")
    return path


def idle_cpu(directory: Path, board: str | None) -> float:
    """Mean CPU (% of one core) of the two daemons over IDLE_S once settled."""
    rack = TwoNodeRack(directory, board=board)
    rack.start()
    try:
        rack.wait_for(rack.settled, 60, what="a settled pair")
        time.sleep(5)
        procs = [psutil.Process(rack.procs[name].pid) for name in NODES]
        before = [p.cpu_times() for p in procs]
        started = time.monotonic()
        time.sleep(IDLE_S)
        elapsed = time.monotonic() - started
        after = [p.cpu_times() for p in procs]
        return sum(100 * (a.user + a.system - b.user - b.system) / elapsed for a, b in zip(after, before)) / len(procs)
    finally:
        rack.stop()


def main() -> None:
    status = snapshot()
    dummy = dummy_key_to_frame(status)
    print(f"dummy display: {len(dummy)} presses, p50 {percentile(dummy, 50):.2f} ms, "
          f"p99 {percentile(dummy, 99):.2f} ms, max {max(dummy):.2f} ms", flush=True)
    cfa = cfa_key_to_frame(status)
    print(f"CFA-635 emulator at 115200: {len(cfa)} presses, p50 {percentile(cfa, 50):.2f} ms, "
          f"p99 {percentile(cfa, 99):.2f} ms, max {max(cfa):.2f} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-panel-") as tmp:
        without = idle_cpu(Path(tmp) / "without", board_without_panel(Path(tmp)).as_posix())
        with_panel = idle_cpu(Path(tmp) / "with", None)
    print(f"idle CPU per daemon: {without:.2f} % without a panel, {with_panel:.2f} % with the panel "
          f"on its home page", flush=True)
    print(json.dumps({
        "key_to_frame_p50_ms": round(percentile(dummy, 50), 2),
        "key_to_frame_p99_ms": round(percentile(dummy, 99), 2),
        "cfa_key_to_frame_p50_ms": round(percentile(cfa, 50), 2),
        "cfa_key_to_frame_p99_ms": round(percentile(cfa, 99), 2),
        "panel_idle_cpu_pct": round(with_panel - without, 2),
        "idle_cpu_pct_without_panel": round(without, 2),
        "idle_cpu_pct_with_panel": round(with_panel, 2),
        "presses": PRESSES, "idle_s": IDLE_S,
    }))


if __name__ == "__main__":
    main()
