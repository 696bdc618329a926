"""The front panel inside two real daemons (sim board: 20×4 dummy LCD, keys and LEDs on mock pins).

Keys are pressed through the control socket (`panel.press` drives the mock
pins), so each press goes through gpiozero, the panel thread, the UI and,
for actions, back into the daemon over the control socket like the CLI.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration


@pytest.fixture
def rack(tmp_path: Path):
    with TwoNodeRack(tmp_path) as rack:
        rack.wait_settled(timeout=20)
        yield rack


def frame(rack: TwoNodeRack, node: str) -> str:
    return "\n".join(rack.control(node, {"cmd": "panel.frame"})["text"])


def press(rack: TwoNodeRack, node: str, *keys: str) -> None:
    for key in keys:
        rack.control(node, {"cmd": "panel.press", "key": key, "action": "click"})


def test_home_screen_shows_the_node_and_a_png_frame(rack: TwoNodeRack) -> None:
    rack.wait_for(lambda: "ACTIVE" in frame(rack, "alpha"), 10, what="alpha's panel to show ACTIVE")
    text = frame(rack, "alpha")
    assert "alpha" in text and len(text.splitlines()) == 4
    png = base64.b64decode(rack.control("alpha", {"cmd": "panel.frame"})["png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = rack.cli("bravo", "panel", "show")
    assert shown.returncode == 0 and "STANDBY" in shown.stdout


def test_demote_the_active_from_its_panel_hands_over(rack: TwoNodeRack) -> None:
    rack.wait_for(lambda: "ACTIVE" in frame(rack, "alpha"), 10, what="alpha's panel to show ACTIVE")
    press(rack, "alpha", "enter", "down", "enter")  # menu, Demote, its confirmation
    rack.wait_for(lambda: "Demote" in frame(rack, "alpha"), 5, what="the demote confirmation")
    assert rack.state("alpha") == "ACTIVE"  # confirming defaults to No: nothing yet
    press(rack, "alpha", "down")  # Yes
    rack.control("alpha", {"cmd": "panel.press", "key": "enter", "action": "hold", "seconds": 3.6})
    rack.wait_state("bravo", "ACTIVE", timeout=15)
    assert rack.state("alpha") == "STANDBY"
    commands = [e["data"] for e in rack.events("alpha") if e["kind"] == "command"]
    assert commands[-1]["command"] == "demote" and commands[-1]["source"] == "panel"


def test_a_refusal_is_shown_on_the_panel(rack: TwoNodeRack) -> None:
    rack.kill("bravo")
    rack.wait_for(lambda: not rack.status("alpha")["peer"]["alive"], 10, what="alpha to see bravo gone")
    # The silent peer is an alarm: it takes over the LCD, and the first key only acknowledges it.
    rack.wait_for(lambda: "ALARM" in frame(rack, "alpha"), 10, what="the alarm screen")
    press(rack, "alpha", "back")
    rack.wait_for(lambda: "ALARM" not in frame(rack, "alpha"), 5, what="the alarm to be acknowledged")
    press(rack, "alpha", "enter", "down", "enter", "down")
    rack.control("alpha", {"cmd": "panel.press", "key": "enter", "action": "hold", "seconds": 3.6})
    rack.wait_for(lambda: "refused" in frame(rack, "alpha").lower(), 10, what="the refusal on the LCD")
    assert rack.state("alpha") == "ACTIVE"
    refused = [e["data"] for e in rack.events("alpha") if e["kind"] == "refused"]
    assert refused and refused[-1]["source"] == "panel"


def test_panel_press_is_refused_for_unknown_keys(rack: TwoNodeRack) -> None:
    result = rack.cli("alpha", "panel", "press", "select")
    assert result.returncode == 1 and "no panel key 'select'" in result.stderr


def test_a_cfa635_panel_on_the_emulated_module(tmp_path: Path) -> None:
    """The sim-cfa635 board: the real Crystalfontz driver over a pty, keys pressed on the module."""
    with TwoNodeRack(tmp_path, board="sim-cfa635") as rack:
        rack.wait_settled(timeout=20)
        rack.wait_for(lambda: "ACTIVE" in frame(rack, "alpha"), 10, what="alpha's CFA-635 to show ACTIVE")
        press(rack, "alpha", "down")
        rack.wait_for(lambda: "Peer" in frame(rack, "alpha"), 10, what="the peer page after DOWN")
        press(rack, "alpha", "back", "enter")  # BACK is the module's EXIT key; ENTER opens the menu
        rack.wait_for(lambda: "Promote" in frame(rack, "alpha"), 10, what="the menu")


def test_a_wrong_pin_at_the_panel_is_journaled(tmp_path: Path) -> None:
    import hashlib

    with TwoNodeRack(tmp_path, extra={"panel": {"pin_sha256": hashlib.sha256(b"4711").hexdigest()}}) as rack:
        rack.wait_settled(timeout=20)
        rack.wait_for(lambda: "ACTIVE" in frame(rack, "alpha"), 10, what="alpha's panel to show ACTIVE")
        press(rack, "alpha", "enter")  # the menu asks for the PIN first
        rack.wait_for(lambda: "PIN" in frame(rack, "alpha"), 5, what="the PIN entry")
        press(rack, "alpha", "enter", "enter", "enter", "enter")  # 0000
        rack.wait_for(lambda: any(e["kind"] == "panel" for e in rack.events("alpha")), 10,
                      what="the wrong PIN in the journal")
        event = next(e["data"] for e in rack.events("alpha") if e["kind"] == "panel")
        assert event == {"event": "pin.wrong", "detail": "1 wrong in a row", "source": "panel"}
        assert "wrong PIN" in frame(rack, "alpha")


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
