"""The front panel inside two real daemons (sim board: 20×4 dummy LCD, keys and LEDs on mock pins).

Keys are pressed through the control socket (`panel.press` drives the mock
pins), so each press goes through gpiozero, the panel thread, the UI and,
for actions, back into the daemon over the control socket like the CLI.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import wait_for
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration


# Hold-to-confirm takes 1 s in these racks (the shortest allowed), and the tests hold for 3 s: the
# default 3 s with a 3.6 s hold left the panel thread only 0.6 s to see the hold out before the release.
PANEL = {"hold_confirm_s": 1.0}
HOLD_S = 3.0


@pytest.fixture
def rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    return racks(extra={"panel": PANEL})


def frame(rack: TwoNodeRack, node: str) -> str:
    """The node's LCD text now (`panel.frame`: the panel's last frame, no status snapshot)."""
    return "\n".join(rack.control(node, {"cmd": "panel.frame"})["text"])


def wait_frame(rack: TwoNodeRack, node: str, text: str, what: str, present: bool = True) -> None:
    """Wait until the node's LCD shows ``text`` (or, with ``present`` False, no longer shows it)."""
    wait_for(lambda: (text in frame(rack, node)) == present, 10, what=f"{what} ({node}'s LCD: {frame(rack, node)!r})")


def press(rack: TwoNodeRack, node: str, *keys: str) -> None:
    for key in keys:
        rack.control(node, {"cmd": "panel.press", "key": key, "action": "click"})


def test_home_screen_shows_the_node_and_a_png_frame(rack: TwoNodeRack) -> None:
    wait_frame(rack, "alpha", "ACTIVE", "alpha's panel to show ACTIVE")
    text = frame(rack, "alpha")
    assert "alpha" in text and len(text.splitlines()) == 4
    png = base64.b64decode(rack.control("alpha", {"cmd": "panel.frame"})["png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = rack.cli("bravo", "panel", "show")
    assert shown.returncode == 0 and "STANDBY" in shown.stdout


def test_demote_the_active_from_its_panel_hands_over(rack: TwoNodeRack) -> None:
    wait_frame(rack, "alpha", "ACTIVE", "alpha's panel to show ACTIVE")
    press(rack, "alpha", "enter", "down", "enter")  # menu, Demote, its confirmation
    wait_frame(rack, "alpha", "Demote", "the demote confirmation")
    assert rack.state("alpha") == "ACTIVE"  # confirming defaults to No: nothing yet
    press(rack, "alpha", "down")  # Yes
    rack.control("alpha", {"cmd": "panel.press", "key": "enter", "action": "hold", "seconds": HOLD_S})
    rack.wait_state("bravo", "ACTIVE", timeout=15)
    assert rack.state("alpha") == "STANDBY"
    commands = [e["data"] for e in rack.events("alpha") if e["kind"] == "command"]
    assert commands[-1]["command"] == "demote" and commands[-1]["source"] == "panel"


def test_a_refusal_is_shown_on_the_panel(rack: TwoNodeRack) -> None:
    rack.kill("bravo")
    rack.wait_until("alpha", lambda brief: not brief["peer_alive"], 10, what="alpha to see bravo gone")
    # The silent peer is an alarm: it takes over the LCD, and the first key only acknowledges it.
    wait_frame(rack, "alpha", "ALARM", "the alarm screen")
    press(rack, "alpha", "back")
    wait_frame(rack, "alpha", "ALARM", "the alarm to be acknowledged", present=False)
    press(rack, "alpha", "enter", "down", "enter", "down")
    rack.control("alpha", {"cmd": "panel.press", "key": "enter", "action": "hold", "seconds": HOLD_S})
    wait_for(lambda: "refused" in frame(rack, "alpha").lower(), 10, what="the refusal on the LCD")
    assert rack.state("alpha") == "ACTIVE"
    refused = [e["data"] for e in rack.events("alpha") if e["kind"] == "refused"]
    assert refused and refused[-1]["source"] == "panel"


def test_panel_press_is_refused_for_unknown_keys(rack: TwoNodeRack) -> None:
    result = rack.cli("alpha", "panel", "press", "select")
    assert result.returncode == 1 and "no panel key 'select'" in result.stderr


def test_a_cfa635_panel_on_the_emulated_module(racks: Callable[..., TwoNodeRack]) -> None:
    """The sim-cfa635 board: the real Crystalfontz driver over a pty, keys pressed on the module."""
    rack = racks(board="sim-cfa635")
    wait_frame(rack, "alpha", "ACTIVE", "alpha's CFA-635 to show ACTIVE")
    press(rack, "alpha", "down")
    wait_frame(rack, "alpha", "Peer", "the peer page after DOWN")
    press(rack, "alpha", "back", "enter")  # BACK is the module's EXIT key; ENTER opens the menu
    wait_frame(rack, "alpha", "Promote", "the menu")


def test_a_wrong_pin_at_the_panel_is_journaled(racks: Callable[..., TwoNodeRack]) -> None:
    import hashlib

    rack = racks(extra={"panel": {**PANEL, "pin_sha256": hashlib.sha256(b"4711").hexdigest()}})
    wait_frame(rack, "alpha", "ACTIVE", "alpha's panel to show ACTIVE")
    press(rack, "alpha", "enter")  # the menu asks for the PIN first
    wait_frame(rack, "alpha", "PIN", "the PIN entry")
    press(rack, "alpha", "enter", "enter", "enter", "enter")  # 0000
    event = rack.wait_event("alpha", lambda e: e["kind"] == "panel", timeout=10,
                            what="the wrong PIN in the journal")["data"]
    assert event == {"event": "pin.wrong", "detail": "1 wrong in a row", "source": "panel"}
    wait_frame(rack, "alpha", "wrong PIN", "the wrong PIN on the LCD")  # drawn after it is journaled


def test_a_panel_that_cannot_be_opened_stops_the_daemon_naming_the_profile_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    profile = (root / "board_profiles" / "sim.toml").read_text().replace(
        'driver = "firmware.panel.dummy:DummyTextDisplay"',
        'driver = "firmware.panel.displays:Hd44780Display"\nbus = 99\naddress = 0x27')
    board = tmp_path / "broken-panel.toml"
    board.write_text(profile.replace('name = "sim"', 'name = "broken-panel"'))
    rack = TwoNodeRack(tmp_path / "rack", board=str(board))
    rack.write_configs()
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert f"{board}: panel.display.driver:" in result.stderr and "/dev/i2c-99" in result.stderr
