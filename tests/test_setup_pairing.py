"""Pairing at the front panel: two unpaired boxes (`tandem setup` processes) on a real pty null-modem.

Each box runs `tandem setup` with the simulator's board (a dummy 20×4 display). The test sends what the
panel sends (`pair-start`, `pair-confirm`, `pair-reject`, `pair-cancel`) over each box's control socket
and reads what the glass shows with `panel.frame`; the key presses that produce those commands are the
pure panel state machine's tests (tests/test_panel_ui.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import load_config
from firmware.core.control import ControlError, request
from helpers import wait_for
from sim.cable import NullModemCable

pytestmark = pytest.mark.integration
NAMES = {"alpha": ("a", "TANDEM-ALPHA"), "bravo": ("b", "TANDEM-BRAVO")}


class UnpairedBoxes:
    """Two `tandem setup` processes, one on each end of a null-modem cable."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cable = NullModemCable(base / "cable")
        self.cable.start()
        self.procs: dict[str, subprocess.Popen] = {}
        for name, (end, serial) in NAMES.items():
            state = base / name / "state"
            state.mkdir(parents=True)
            # What first boot leaves: the box's serial number (its node name) and identity key.
            (state / "box.json").write_text(json.dumps({"serial": serial, "source": "dmi", "identity": "-",
                                                        "created": 0.0}))
            argv = [sys.executable, "-m", "firmware.cli", "-c", str(self.config(name)), "--socket",
                    str(self.socket(name)), "setup", "--board", "sim", "--port", str(self.cable.path(end)),
                    "--state-dir", str(state), "--then", f"touch {base / name / 'daemon-started'}"]
            self.procs[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in NAMES:
            wait_for(lambda name=name: self._answers(name), timeout=60, what=f"{name}'s setup answers")

    def config(self, name: str) -> Path:
        return self.base / name / "etc" / "tandem.toml"

    def socket(self, name: str) -> Path:
        return self.base / name / "control.sock"

    def _answers(self, name: str) -> bool:
        assert self.procs[name].poll() is None, self.procs[name].stdout.read()  # type: ignore[union-attr]
        try:
            return request(self.socket(name), {"cmd": "status"}, timeout=5)["state"] == "UNPAIRED"
        except (ControlError, OSError):
            return False

    def call(self, name: str, cmd: str) -> str:
        return request(self.socket(name), {"cmd": cmd, "source": "panel"}, timeout=30)

    def setup(self, name: str) -> dict:
        return request(self.socket(name), {"cmd": "status"}, timeout=10)["setup"]

    def glass(self, name: str) -> str:
        return "\n".join(request(self.socket(name), {"cmd": "panel.frame", "png": False}, timeout=10)["text"])

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict:
        wait_for(lambda: self.setup(name)["phase"] == phase, timeout=timeout, what=f"{name} {phase}")
        return self.setup(name)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.cable.stop()


@pytest.fixture
def boxes(tmp_path: Path) -> Iterator[UnpairedBoxes]:
    pair = UnpairedBoxes(tmp_path)
    yield pair
    pair.close()


def test_an_unpaired_box_shows_unpaired_on_its_panel(boxes: UnpairedBoxes) -> None:
    shown = wait_for(lambda: "UNPAIRED" in boxes.glass("alpha") and boxes.glass("alpha"), timeout=20,
                     what="UNPAIRED on alpha's glass")
    assert "TANDEM-ALPHA" in shown and "not paired" in shown
    assert boxes.setup("bravo")["phase"] == "idle"


def test_pairing_at_both_panels_writes_the_same_key_and_a_config_each(boxes: UnpairedBoxes) -> None:
    with pytest.raises(ControlError, match="setup-shared-ip: .*needs a prefix length"):  # as the config checks it
        request(boxes.socket("alpha"), {"cmd": "setup-shared-ip", "source": "panel", "port": "lan0",
                                        "address": "198.51.100.100"}, timeout=10)
    shared = request(boxes.socket("alpha"), {"cmd": "setup-shared-ip", "source": "panel", "port": "lan0",
                                             "address": "198.51.100.100/24"}, timeout=10)
    assert "both boxes get it" in shared
    assert "start pairing on the other box" in request(boxes.socket("alpha"), {
        "cmd": "pair-start", "source": "panel", "primary": True}, timeout=10)
    assert "start pairing on the other box" in boxes.call("bravo", "pair-start")
    codes = {name: boxes.wait_phase(name, "code")["code"] for name in NAMES}
    assert codes["alpha"] == codes["bravo"]
    for name in NAMES:  # the panel put the question on the glass by itself
        wait_for(lambda name=name: f"Code {codes[name]}" in boxes.glass(name), timeout=20, what="the code shown")
        boxes.call(name, "pair-confirm")
    for name, proc in boxes.procs.items():
        assert proc.wait(60) == 0, proc.stdout.read()  # type: ignore[union-attr]
        assert (boxes.base / name / "daemon-started").exists()  # `--then`: systemctl start on a box
    keys = {name: (boxes.config(name).parent / "cluster.key").read_bytes() for name in NAMES}
    assert keys["alpha"] == keys["bravo"]
    for name, peer, role in (("alpha", "TANDEM-BRAVO", "primary"), ("bravo", "TANDEM-ALPHA", "secondary")):
        node = load_config(boxes.config(name)).node
        assert node.node == NAMES[name][1] and node.peer == peer and node.role == role
        assert [link.kind for link in node.links] == ["serial"]
        assert [str(ip.ip) for ip in node.shared_ips] == ["198.51.100.100/24"]  # entered at alpha's panel


def test_no_at_one_panel_ends_it_on_both_and_writes_nothing(boxes: UnpairedBoxes) -> None:
    for name in NAMES:
        boxes.call(name, "pair-start")
    for name in NAMES:
        boxes.wait_phase(name, "code")
    boxes.call("alpha", "pair-reject")
    assert "codes differ" in boxes.wait_phase("alpha", "failed")["message"]
    assert "different codes" in boxes.wait_phase("bravo", "failed")["message"]
    wait_for(lambda: "pairing failed" in boxes.glass("bravo"), timeout=20, what="the failure on bravo's glass")
    for name in NAMES:
        assert not boxes.config(name).exists() and not (boxes.config(name).parent / "cluster.key").exists()
        assert not (boxes.base / name / "daemon-started").exists()
        assert boxes.procs[name].poll() is None  # still unpaired, still serving the panel
    # ... and the boxes can try again.
    for name in NAMES:
        boxes.call(name, "pair-start")
    assert boxes.wait_phase("alpha", "code")["code"] == boxes.wait_phase("bravo", "code")["code"]


def test_a_pairing_nobody_answers_can_be_cancelled(boxes: UnpairedBoxes) -> None:
    boxes.call("alpha", "pair-start")
    with pytest.raises(ControlError, match="already under way"):
        boxes.call("alpha", "pair-start")
    time.sleep(0.5)  # let it send a HELLO or two into the silent cable
    boxes.call("alpha", "pair-cancel")
    assert boxes.wait_phase("alpha", "failed")["message"] == "cancelled: nothing was written"
    with pytest.raises(ControlError, match="no code to compare"):
        boxes.call("alpha", "pair-confirm")


def test_a_box_paired_with_the_cli_leaves_the_panel_to_the_daemon(boxes: UnpairedBoxes) -> None:
    boxes.config("alpha").parent.mkdir(parents=True, exist_ok=True)
    boxes.config("alpha").write_text("# written by `tandem pair --write-config`\n")
    assert boxes.procs["alpha"].wait(30) == 0
    assert not (boxes.base / "alpha" / "daemon-started").exists()  # the integrator starts it after editing
    assert boxes.procs["bravo"].poll() is None
