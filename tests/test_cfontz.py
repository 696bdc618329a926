"""Crystalfontz packet panel driver (firmware.panel.cfa): codec, and the driver against the pty emulator end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.panel.base import Key, KeyEvent
from firmware.panel.cfa.adapters import CfaDisplay, CfaIndicators, CfaKeys
from firmware.panel.cfa.connection import CfaError, CfaPanel, CfaRejected, CfaTimeout
from firmware.panel.cfa.protocol import CMD_BACKLIGHT, CMD_TEXT, Packet, PacketDecoder, crc16, encode_packet
from sim.cfa635 import CfaEmulator
from sim.cfapanel import EmulatedCfaDisplay, EmulatedCfaKeys

from helpers import wait_for

TIMEOUT = 5.0  # generous: the CI box is a shared 2-core machine


def emu_wait(emu: CfaEmulator, predicate: Callable[[], bool], what: str) -> None:
    """Wait for a condition on the emulator's state, failing the test on timeout."""
    if not emu.wait_for(predicate, TIMEOUT):
        pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")


class Events:
    """Collects KeyEvents from any thread; tests wait on it with a timeout."""

    def __init__(self) -> None:
        self.events: list[KeyEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: KeyEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def actions(self) -> list[tuple[Key, str]]:
        with self._cond:
            return [(e.key, e.action) for e in self.events]

    def wait_count(self, count: int, timeout: float = TIMEOUT) -> list[tuple[Key, str]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= count, timeout):
                pytest.fail(f"expected {count} key events, got {self.actions()}")
        return self.actions()


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[CfaEmulator]:
    with CfaEmulator("cfa635", directory=tmp_path) as emulator:
        yield emulator


@pytest.fixture
def panel(emu: CfaEmulator) -> Iterator[CfaPanel]:
    driver = CfaPanel(emu.port, "cfa635", retry_interval=0.2)
    yield driver
    driver.close()


# ------------------------------------------------------------------------- codec


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x906E
    assert crc16(b"") == 0x0000


def test_worked_packets_from_the_reference_sheet() -> None:
    assert encode_packet(0) == bytes.fromhex("00 00 47 0F")
    assert encode_packet(0x80, b"\x05") == bytes.fromhex("80 01 05 55 84")


def test_decoder_takes_packets_split_into_any_chunks() -> None:
    stream = encode_packet(0x40) + encode_packet(0x80, b"\x05") + encode_packet(0x5F, b"")
    decoder = PacketDecoder()
    packets = [p for byte in stream for p in decoder.feed(bytes((byte,)))]
    assert packets == [Packet(0x40), Packet(0x80, b"\x05"), Packet(0x5F)]
    assert decoder.bad_packets == 0


def test_decoder_resyncs_after_garbage_and_a_bad_crc() -> None:
    bad = bytearray(encode_packet(0x80, b"\x01"))
    bad[-1] ^= 0x55
    stream = b"\xff\xfe" + bytes(bad) + encode_packet(0x80, b"\x07")
    decoder = PacketDecoder()
    assert decoder.feed(stream[:5]) == []
    assert decoder.feed(stream[5:]) == [Packet(0x80, b"\x07")]
    assert decoder.bad_packets == 1  # one run of garbage, counted once
    assert decoder.skipped_bytes == 2 + len(bad)


def test_decoder_does_not_wait_on_a_stray_length_byte() -> None:
    # 0x14 reads as "20 data bytes follow"; the real packet behind it must come out at once.
    decoder = PacketDecoder()
    assert decoder.feed(b"\x01\x14" + encode_packet(0x40)) == [Packet(0x40)]
    assert decoder.bad_packets == 1


def test_decoder_rejects_lengths_over_the_model_limit() -> None:
    decoder = PacketDecoder(max_data=18)
    assert decoder.feed(encode_packet(0x40, bytes(20)) + encode_packet(0x41)) == [Packet(0x41)]
    assert decoder.bad_packets == 1


# ------------------------------------------------------------------------- commands


def test_ping_echoes(panel: CfaPanel) -> None:
    assert panel.ping(b"tandem") == b"tandem"
    assert panel.connected and panel.retries == 0


def test_retry_after_a_dropped_ack(emu: CfaEmulator, panel: CfaPanel) -> None:
    emu.drop_next_acks(1)
    assert panel.ping(b"x") == b"x"
    assert panel.retries >= 1
    assert emu.dropped == 1


def test_retry_after_a_corrupted_answer(emu: CfaEmulator, panel: CfaPanel) -> None:
    emu.corrupt_next(1)
    assert panel.ping(b"y") == b"y"
    assert panel.bad_crc == 1 and panel.retries >= 1


def test_error_after_repeated_drops_then_recovers(emu: CfaEmulator, panel: CfaPanel) -> None:
    emu.drop_next_acks(3)
    with pytest.raises(CfaTimeout, match="no answer to command 0 after 3 tries"):
        panel.ping()
    assert panel.timeouts == 1
    assert panel.ping(b"ok") == b"ok"


def test_a_refused_command_raises_at_once(panel: CfaPanel) -> None:
    with pytest.raises(CfaRejected, match="rejected command 50"):
        panel.command(50)


def test_host_watchdog(emu: CfaEmulator, panel: CfaPanel) -> None:
    panel.set_host_watchdog(30)
    assert emu.host_watchdog == 30
    with pytest.raises(ValueError):
        panel.set_host_watchdog(256)


def test_garbage_and_bad_listeners_do_not_stop_the_reader(emu: CfaEmulator, panel: CfaPanel) -> None:
    def broken(packet: Packet) -> None:
        raise RuntimeError("listener bug")

    panel.add_report_listener(broken)
    emu.inject(b"\x80\x01\x05\x00\x00garbage" + encode_packet(0x80, b"\x05"))
    wait_for(lambda: panel.bad_crc >= 1, what="garbage counted")
    assert panel.ping(b"alive") == b"alive"


def test_cannot_open_names_the_port(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-tty")
    with pytest.raises(OSError, match="no-such-tty.*No such file"):
        CfaPanel(missing)
    with pytest.raises(ValueError, match="unknown Crystalfontz model"):
        CfaPanel(missing, model="cfa999")


# ------------------------------------------------------------------------- display


def test_text_appears_and_only_changed_rows_are_resent(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port, model="cfa635", baudrate=115200)
    try:
        assert (display.kind, display.columns, display.rows) == ("text", 20, 4)
        lines = ["Tandem  node-a", "ACTIVE", "peer: standby", "alarms: none"]
        display.show_text(lines)
        assert display.panel.flush(TIMEOUT)
        assert emu.text_rows() == [line.ljust(20) for line in lines]
        assert emu.commands_seen[CMD_TEXT] == 4

        display.show_text(lines[:2] + ["peer: DEAD", lines[3]])
        assert display.panel.flush(TIMEOUT)
        assert emu.text_rows()[2] == "peer: DEAD".ljust(20)
        assert emu.commands_seen[CMD_TEXT] == 5

        display.show_text(lines[:2] + ["peer: DEAD", lines[3]])  # nothing changed: nothing sent
        assert display.panel.flush(TIMEOUT)
        assert emu.commands_seen[CMD_TEXT] == 5
    finally:
        display.close()


def test_non_ascii_is_never_sent(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port)
    try:
        display.show_text(["Température 25°C", "naïve", "", ""])
        assert display.panel.flush(TIMEOUT)
        assert emu.text_rows()[:2] == ["Temp?rature 25?C".ljust(20), "na?ve".ljust(20)]
    finally:
        display.close()


def test_backlight(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port)
    try:
        display.set_backlight(35)
        assert display.panel.flush(TIMEOUT)
        assert emu.backlight == 35
        display.set_backlight(250)  # clamped
        assert display.panel.flush(TIMEOUT)
        assert emu.backlight == 100
    finally:
        display.close()


def test_frame_renders_the_text(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port)
    try:
        blank = display.frame()
        assert (blank.size, blank.mode) == ((100, 32), "1")
        assert blank.getbbox() is None
        display.show_text(["A", "", "", ""])
        box = display.frame().getbbox()
        assert box is not None and box[2] <= 5 and box[3] <= 8  # one glyph, in the first 5×8 cell
        with pytest.raises(TypeError):
            display.show_image(blank)
    finally:
        display.close()


def test_a_silent_module_is_retried_in_the_background(emu: CfaEmulator, panel: CfaPanel) -> None:
    emu.drop_next_acks(3)
    panel.set_backlight(10)  # returns at once; the first push times out, the next one lands
    assert panel.flush(TIMEOUT)
    assert emu.backlight == 10
    assert panel.errors >= 1 and emu.commands_seen[CMD_BACKLIGHT] >= 4


# ------------------------------------------------------------------------- keys


def test_key_reports_become_events(emu: CfaEmulator) -> None:
    keys = CfaKeys(port=emu.port, hold_time=5.0)
    events = Events()
    try:
        assert not emu.press(Key.ENTER)  # masks not set yet: the module stays quiet
        keys.start(events)
        emu_wait(emu, lambda: emu.key_masks == (0x3F, 0x3F), "key masks set")
        for key in (Key.UP, Key.DOWN, Key.LEFT, Key.RIGHT, Key.ENTER, Key.BACK):
            assert emu.press(key)
            assert emu.release(key)
        got = events.wait_count(12)
        assert got == [(key, action) for key in (Key.UP, Key.DOWN, Key.LEFT, Key.RIGHT, Key.ENTER, Key.BACK)
                       for action in ("press", "release")]
        assert all(e.at <= time.monotonic() for e in events.events)
    finally:
        keys.close()


def test_hold_after_the_hold_time(emu: CfaEmulator) -> None:
    keys = CfaKeys(port=emu.port, hold_time=0.3)
    held = threading.Event()
    events = Events()

    def callback(event: KeyEvent) -> None:
        events(event)
        if event.action == "hold":
            held.set()

    try:
        keys.start(callback)
        emu_wait(emu, lambda: emu.key_masks == (0x3F, 0x3F), "key masks set")
        emu.press(Key.ENTER)
        assert held.wait(TIMEOUT)
        emu.release(Key.ENTER)
        assert events.wait_count(3) == [(Key.ENTER, "press"), (Key.ENTER, "hold"), (Key.ENTER, "release")]
        press_at, hold_at = events.events[0].at, events.events[1].at
        assert hold_at - press_at >= 0.3

        held.clear()
        emu.press(Key.UP)  # a short press: no hold
        emu.release(Key.UP)
        events.wait_count(5)
        assert not held.wait(0.9)
        assert events.actions()[3:] == [(Key.UP, "press"), (Key.UP, "release")]
    finally:
        keys.close()


# ------------------------------------------------------------------------- LEDs


def test_leds_map_to_the_right_indexes(emu: CfaEmulator) -> None:
    indicators = CfaIndicators(port=emu.port, model="cfa635")
    panel = indicators.panel
    try:
        indicators.set_role("on")
        indicators.set_fault("on")
        panel.set_led(2, "amber")
        panel.set_led(3, "red", level=40)
        assert panel.flush(TIMEOUT)
        # LED n: green 11 - 2n, red 12 - 2n
        assert emu.leds == {11: 100, 12: 0, 9: 0, 10: 100, 7: 100, 8: 100, 5: 0, 6: 40}
        indicators.set_buzzer(True)  # no buzzer: recorded only
        assert indicators.buzzer is True
        with pytest.raises(ValueError):
            panel.set_led(4, "green")
    finally:
        indicators.close()
    assert emu.leds == dict.fromkeys(range(5, 13), 0)  # close() turns them off


def test_role_led_blinks(emu: CfaEmulator) -> None:
    indicators = CfaIndicators(port=emu.port)
    try:
        indicators.set_role("fast")  # 4 Hz: 125 ms on, 125 ms off
        for level in (100, 0, 100, 0):
            emu_wait(emu, lambda level=level: emu.leds[11] == level, f"role LED at {level}")
        assert emu.leds[12] == 0
        indicators.set_role("off")
        assert indicators.panel.flush(TIMEOUT)
        assert emu.leds[11] == 0
    finally:
        indicators.close()


# ------------------------------------------------------------------------- sharing and reconnect


def test_one_connection_per_port(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port)
    keys = CfaKeys(port=emu.port)
    indicators = CfaIndicators(port=emu.port)
    try:
        assert display.panel is keys.panel is indicators.panel
        with pytest.raises(ValueError, match="already open as a cfa635"):
            CfaDisplay(port=emu.port, model="cfa533")
    finally:
        display.close()
        keys.close()
        assert indicators.panel.connected  # still referenced
        indicators.close()
    assert not indicators.panel.connected


def test_reconnect_after_unplug_resends_the_state(emu: CfaEmulator) -> None:
    display = CfaDisplay(port=emu.port)
    indicators = CfaIndicators(port=emu.port)
    keys = CfaKeys(port=emu.port)
    panel = display.panel
    lost = threading.Event()
    back = threading.Event()
    panel.add_connection_listener(lambda up: (back if up else lost).set())
    lines = ["ACTIVE", "node-a", "", "ok"]
    try:
        keys.start(Events())
        display.show_text(lines)
        display.set_backlight(40)
        indicators.set_role("on")
        assert panel.flush(TIMEOUT)

        emu.unplug()
        assert lost.wait(TIMEOUT)
        assert not panel.connected
        display.show_text(lines[:3] + ["changed while away"])  # must not block or raise
        emu.replug()
        assert emu.text_rows()[1].strip() == "CFA635"  # the module's boot screen
        assert back.wait(TIMEOUT)
        want = lines[:3] + ["changed while away"]
        emu_wait(emu, lambda: emu.text_rows() == [line.ljust(20) for line in want], "text re-sent")
        assert panel.flush(TIMEOUT)
        assert emu.backlight == 40
        assert emu.leds[11] == 100
        assert emu.key_masks == (0x3F, 0x3F)
        assert panel.reconnects == 1
    finally:
        keys.close()
        indicators.close()
        display.close()


def test_command_while_unplugged_fails_fast(emu: CfaEmulator, panel: CfaPanel) -> None:
    emu.unplug()
    wait_for(lambda: not panel.connected, what="the port lost")
    retries, timeouts = panel.retries, panel.timeouts
    with pytest.raises(CfaError, match="not connected"):
        panel.ping()
    # Failed at the first send: not 3 tries × 250 ms waited out (how fast: bench/timeouts.py).
    assert (panel.retries, panel.timeouts) == (retries, timeouts)


def test_a_vanished_device_node_is_noticed_and_reopened(emu: CfaEmulator, panel: CfaPanel) -> None:
    # The pty stays open, so no read fails: only the vanished path shows the device is gone.
    target = os.readlink(emu.port)
    os.unlink(emu.port)
    wait_for(lambda: not panel.connected, what="the vanished port noticed")
    os.symlink(target, emu.port)
    wait_for(lambda: panel.connected, what="the port reopened")
    assert panel.reconnects == 1
    assert panel.ping(b"back") == b"back"


# ------------------------------------------------------------------------- CFA-533


@pytest.fixture
def emu533(tmp_path: Path) -> Iterator[CfaEmulator]:
    with CfaEmulator("cfa533", directory=tmp_path) as emulator:
        yield emulator


def test_cfa533_text_at_19200(emu533: CfaEmulator) -> None:
    display = CfaDisplay(port=emu533.port, model="cfa533")
    try:
        assert display.panel.baudrate == 19200
        assert (display.columns, display.rows) == (16, 2)
        display.show_text(["0123456789abcdefXYZ", "node-b STANDBY"])
        assert display.panel.flush(TIMEOUT)
        assert emu533.line_baudrate == 19200
        assert emu533.text_rows() == ["0123456789abcdef", "node-b STANDBY  "]
        assert display.frame().size == (80, 16)
    finally:
        display.close()


def test_cfa533_has_no_leds_set_role_is_a_no_op(emu533: CfaEmulator) -> None:
    indicators = CfaIndicators(port=emu533.port, model="cfa533")
    try:
        assert not indicators.has_leds
        indicators.set_role("slow")
        indicators.set_fault("fast")
        assert (indicators.role, indicators.fault) == ("slow", "fast")
        assert indicators.panel.ping(b"p") == b"p"
        assert emu533.commands_seen[34] == 0
        with pytest.raises(ValueError, match="cfa533 has no LEDs"):
            indicators.panel.set_led(0, "green")
    finally:
        indicators.close()


def test_cfa533_at_the_wrong_baud_rate_hears_nothing(emu533: CfaEmulator) -> None:
    panel = CfaPanel(emu533.port, "cfa533", baudrate=115200, tries=1, timeout=0.2)
    try:
        with pytest.raises(CfaTimeout):
            panel.ping()
        assert emu533.noise_bytes > 0
    finally:
        panel.close()


def test_the_emulator_uses_only_the_protocol_part_of_the_driver() -> None:
    code = ("import sys, sim.cfa635; "
            "print(sorted(m for m in sys.modules if m.startswith('firmware.panel.cfa') or m == 'serial'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['firmware.panel.cfa', 'firmware.panel.cfa.protocol']"


def test_emulated_drivers_share_one_emulator_until_the_last_closes() -> None:
    display = EmulatedCfaDisplay(emulator="test-shared")
    keys = EmulatedCfaKeys(emulator="test-shared")
    try:
        assert keys.emulator is display.emulator and display.emulator.plugged
        assert display.panel is keys.panel  # and the drivers one connection, as on one USB port
    finally:
        display.close()
        display.close()  # idempotent: still one release
        assert keys.emulator.plugged
        keys.close()
    assert not keys.emulator.plugged
    again = EmulatedCfaKeys(emulator="test-shared")  # a new emulator after the last one closed
    try:
        assert again.emulator is not keys.emulator and again.emulator.plugged
    finally:
        again.close()
