"""The panel thread with a dummy display, a fake daemon and a fake keypad.

Every wait is on a condition with a generous deadline, never a bare sleep.
"""

from __future__ import annotations

import copy
import io
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import pytest
from panel_samples import ACTIVE_HEALTHY, ALARMS, EVENTS, STANDBY_PEER_SILENT
from PIL import Image

from firmware.core.control import ControlError
from firmware.panel.base import Blink, Indicators, Key, KeyCallback, KeyEvent, KeySource
from firmware.panel.dummy import DummyGraphicDisplay, DummyTextDisplay
from firmware.panel.runner import PanelOptions, PanelRunner, describe_result

from helpers import wait_for

TIMEOUT = 10.0


class FakeDaemon:
    """A control callable: answers status, refuses or blocks chosen commands, records requests."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.status = copy.deepcopy(status or ACTIVE_HEALTHY)
        self.requests: list[dict[str, Any]] = []
        self.refuse: dict[str, str] = {}
        self.block: dict[str, threading.Event] = {}
        self.down = False
        self.status_delay = 0.0
        self.slow_answers = 0  # status requests answered after a status_delay
        self.slow_status = threading.Event()  # set while a status request is being held up
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Any:
        with self._lock:
            self.requests.append(dict(request))
            status = copy.deepcopy(self.status)
        if self.down:
            raise ControlError("cannot reach the daemon: /run/tandem/control.sock does not exist")
        cmd = request["cmd"]
        if cmd == "status":
            if self.status_delay:
                self.slow_status.set()
                time.sleep(self.status_delay)  # a daemon slow to answer
                self.slow_status.clear()
                self.slow_answers += 1
            return status
        if cmd in self.block:
            self.block[cmd].wait(TIMEOUT)
        if cmd in self.refuse:
            raise ControlError(self.refuse[cmd])
        if cmd == "alarm-silence":
            return "silenced 3 alarms (a new alarm sounds again)"
        return {"message": f"{cmd} accepted", "outcome": "this node is ACTIVE", "state": "ACTIVE"}

    def commands(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["cmd"] != "status"]


class FakeKeys(KeySource):
    """A keypad the test presses."""

    def __init__(self) -> None:
        self.callback: KeyCallback | None = None
        self.closed = False

    def start(self, callback: KeyCallback) -> None:
        self.callback = callback

    def send(self, key: Key, action: str) -> None:
        assert self.callback is not None, "the runner did not start the key source"
        self.callback(KeyEvent(key, action, time.monotonic()))  # type: ignore[arg-type]

    def tap(self, *keys: Key) -> None:
        for key in keys:
            self.send(key, "press")
            self.send(key, "release")

    def close(self) -> None:
        self.closed = True


class FakeLeds(Indicators):
    """Remembers the last LED and buzzer settings."""

    def __init__(self) -> None:
        self.role: Blink = "off"
        self.fault: Blink = "off"
        self.buzzer = False
        self.closed = False

    def set_role(self, mode: Blink) -> None:
        self.role = mode

    def set_fault(self, mode: Blink) -> None:
        self.fault = mode

    def set_buzzer(self, on: bool) -> None:
        self.buzzer = on

    def close(self) -> None:
        self.closed = True


class Rig:
    """A started runner plus its fakes."""

    def __init__(self, options: PanelOptions | None = None, display: Any = None, status: Any = None,
                 events: Any = None) -> None:
        self.daemon = FakeDaemon(status)
        self.keys = FakeKeys()
        self.leds = FakeLeds()
        self.display = display or DummyTextDisplay(20, 4)
        self.runner = PanelRunner(self.display, [self.keys], self.leds, self.daemon,
                                  options or PanelOptions(refresh_s=0.05), events=events, tz=UTC).start()

    def text(self) -> str:
        return "\n".join(self.runner.frame_text())

    def wait_text(self, fragment: str) -> None:
        wait_for(lambda: fragment in self.text(), what=f"{fragment!r} on the display (showing {self.text()!r})")


@pytest.fixture
def rigs() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.runner.close()


def test_a_key_press_leads_to_a_new_frame(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.wait_text("pbx-a ACTIVE")
    assert rig.display.text()[0] == "pbx-a ACTIVE     pri"
    rig.keys.tap(Key.RIGHT)
    rig.wait_text("Peer")
    assert rig.display.text()[0] == "Peer             2/8"


def test_frames_are_pushed_only_when_they_change(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.wait_text("pbx-a ACTIVE")
    pushed, fetches = rig.display.frames_pushed, rig.runner.fetches
    for _ in range(3):
        before = rig.runner.fetches
        rig.runner.notify()
        wait_for(lambda before=before: rig.runner.fetches > before, what="a status fetch after notify()")
    wait_for(lambda: rig.runner.fetches >= fetches + 10, what="ten more status fetches")
    assert rig.display.frames_pushed == pushed
    rig.daemon.status = copy.deepcopy(STANDBY_PEER_SILENT)
    rig.runner.notify()
    rig.wait_text("pbx-b STANDBY")
    assert rig.display.frames_pushed == pushed + 1


def _promote(rig: Rig) -> None:
    rig.keys.tap(Key.ENTER)           # menu
    rig.wait_text("Promote")
    rig.keys.tap(Key.ENTER, Key.DOWN)  # confirm, Yes
    rig.wait_text("[Yes]")
    rig.keys.send(Key.ENTER, "press")
    rig.wait_text("hold ENTER")


def test_a_refused_command_shows_the_daemons_reason(rigs: Callable[..., Rig]) -> None:
    rig = rigs(options=PanelOptions(refresh_s=0.05, hold_confirm_s=0.3))
    rig.daemon.refuse["promote"] = "pbx-b is ACTIVE and healthy; promoting needs --force"
    rig.wait_text("pbx-a ACTIVE")
    _promote(rig)
    wait_for(lambda: rig.daemon.commands(), what="the promote command")
    rig.keys.send(Key.ENTER, "release")
    rig.wait_text("Promote: refused")
    assert "pbx-b is ACTIVE and" in rig.text()
    assert rig.daemon.commands() == [{"cmd": "promote", "source": "panel"}]
    rig.keys.tap(Key.DOWN)  # any key dismisses the result
    rig.wait_text("pbx-a ACTIVE")


def test_an_early_release_sends_nothing(rigs: Callable[..., Rig]) -> None:
    rig = rigs(options=PanelOptions(refresh_s=0.05, hold_confirm_s=2.0))
    rig.wait_text("pbx-a ACTIVE")
    _promote(rig)
    rig.keys.send(Key.ENTER, "release")
    rig.wait_text("cancelled")
    assert rig.daemon.commands() == []


def test_a_release_during_a_slow_status_fetch_still_cancels_the_hold(rigs: Callable[..., Rig]) -> None:
    rig = rigs(options=PanelOptions(refresh_s=0.05, hold_confirm_s=1.0))
    rig.wait_text("pbx-a ACTIVE")
    rig.keys.tap(Key.ENTER)           # menu
    rig.wait_text("Promote")
    rig.keys.tap(Key.ENTER, Key.DOWN)  # confirm, Yes
    rig.wait_text("[Yes]")
    answered = rig.daemon.slow_answers
    rig.daemon.status_delay = 2.5
    assert rig.daemon.slow_status.wait(TIMEOUT), "no status fetch was held up"
    rig.keys.send(Key.ENTER, "press")  # ENTER is down while a fetch hangs: the countdown runs
    rig.wait_text("hold ENTER")
    hold_ends_by = time.monotonic() + 1.0  # the runner's clock is time.monotonic too
    rig.keys.send(Key.ENTER, "release")  # long before the second is up, while the fetch still hangs
    rig.wait_text("cancelled")
    # Nothing may happen once the hold's second is over: judged by the panel's own steps, not a sleep.
    # After that second, a new status (alpha silent: the role LED blinks slowly) is shown only by a
    # panel step that ran later, and by then a hold still running would have sent its command.
    wait_for(lambda: time.monotonic() > hold_ends_by, what="the hold's second to be over")
    rig.daemon.status_delay = 0.0
    rig.daemon.status = copy.deepcopy(STANDBY_PEER_SILENT)
    wait_for(lambda: rig.daemon.slow_answers > answered, what="the slow fetch to be answered")
    rig.runner.notify()
    wait_for(lambda: rig.leds.role == "slow", what="the panel to show a status fetched after the hold's second")
    assert rig.daemon.commands() == []


def test_a_daemon_that_stops_answering_keeps_the_role_and_flashes_the_fault_led(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    wait_for(lambda: rig.leds.role == "on", what="the role LED on for ACTIVE")
    rig.daemon.down = True
    wait_for(lambda: rig.leds.fault == "fast", what="the fault LED flashing")
    assert rig.leds.role == "on"


def test_a_slow_command_does_not_freeze_the_display(rigs: Callable[..., Rig]) -> None:
    rig = rigs(options=PanelOptions(refresh_s=0.05, hold_confirm_s=0.2))
    release = rig.daemon.block["promote"] = threading.Event()
    rig.wait_text("pbx-a ACTIVE")
    _promote(rig)
    rig.wait_text("working")
    rig.keys.send(Key.ENTER, "release")
    fetches = rig.runner.fetches
    wait_for(lambda: rig.runner.fetches >= fetches + 3, what="status fetches while the command waits")
    rig.daemon.status = copy.deepcopy(ALARMS)  # the display still follows the daemon
    rig.runner.notify()
    rig.wait_text("ALARM (3)")
    release.set()
    rig.keys.tap(Key.BACK)  # acknowledge the alarm: the result is underneath
    rig.wait_text("Promote: done")
    assert "this node is ACTIVE" in rig.text()


def test_view_only_never_sends_a_command(rigs: Callable[..., Rig]) -> None:
    rig = rigs(options=PanelOptions(refresh_s=0.05, view_only=True, hold_confirm_s=0.1))
    rig.wait_text("pbx-a ACTIVE")
    rig.keys.tap(Key.ENTER)
    rig.wait_text("View only")
    assert "panel control" in rig.text()
    rig.keys.tap(Key.ENTER, Key.ENTER, Key.DOWN, Key.ENTER)
    rig.keys.send(Key.ENTER, "press")
    fetches = rig.runner.fetches
    wait_for(lambda: rig.runner.fetches >= fetches + 10, what="the panel to go on refreshing")
    rig.keys.send(Key.ENTER, "release")
    assert rig.daemon.commands() == []


def test_leds_buzzer_and_backlight_follow_the_status(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    wait_for(lambda: rig.leds.role == "on", what="the role LED on for ACTIVE")
    assert (rig.leds.fault, rig.leds.buzzer, rig.display.backlight) == ("off", False, 100)
    rig.daemon.status = copy.deepcopy(ALARMS)
    rig.runner.notify()
    wait_for(lambda: rig.leds.buzzer and rig.leds.fault == "fast", what="the buzzer and fast fault LED")
    rig.wait_text("ALARM (3)")
    wait_for(lambda: rig.display.backlight == 0, what="the backlight blinking off")
    wait_for(lambda: rig.display.backlight == 100, what="the backlight blinking high")
    rig.keys.tap(Key.BACK, Key.ENTER)  # acknowledge, menu
    rig.wait_text("Promote")
    rig.keys.tap(Key.UP, Key.UP, Key.ENTER)  # Back, Silence alarm
    wait_for(lambda: rig.daemon.commands(), what="the alarm-silence command")
    assert rig.daemon.commands() == [{"cmd": "alarm-silence", "source": "panel"}]
    rig.wait_text("silenced 3 alarms")


def test_an_unreachable_daemon_is_shown(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.daemon.down = True
    rig.wait_text("daemon not answering")
    rig.daemon.down = False
    rig.runner.notify()
    rig.wait_text("pbx-a ACTIVE")


def test_the_events_page_fetches_only_new_records(rigs: Callable[..., Rig]) -> None:
    asked: list[int] = []

    def events(since: int) -> list[dict[str, Any]]:
        asked.append(since)
        return [e for e in EVENTS if e["id"] > since]

    rig = rigs(events=events)
    rig.wait_text("pbx-a ACTIVE")
    rig.keys.tap(*[Key.RIGHT] * 5)
    rig.wait_text("Last events")
    assert "09:29 link.down lan0" in rig.text()
    wait_for(lambda: len(asked) >= 3, what="the events page to refresh")
    assert asked[0] == 0 and set(asked[1:]) == {107}


def test_graphic_display_frame_png_and_text(rigs: Callable[..., Rig]) -> None:
    display = DummyGraphicDisplay(160, 128, "RGB")
    rig = rigs(display=display)
    wait_for(lambda: display.frames_pushed >= 1, what="a first frame")
    rig.wait_text("pbx-a ACTIVE")
    png = rig.runner.frame_png()
    assert png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (160, 128)


def test_text_frame_png_is_the_glass(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.wait_text("pbx-a ACTIVE")
    with Image.open(io.BytesIO(rig.runner.frame_png())) as image:
        assert image.size == rig.display.frame().size


def test_close_stops_the_thread_and_the_drivers(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.wait_text("pbx-a ACTIVE")
    rig.runner.close()
    assert rig.keys.closed and rig.leds.closed
    assert not rig.runner._thread.is_alive()
    rig.runner.close()  # twice is harmless


def test_describe_result() -> None:
    assert describe_result({"message": "asking pbx-b", "outcome": "this node is ACTIVE"}) == "this node is ACTIVE"
    assert describe_result({"message": "ok"}) == "ok"
    assert describe_result("silenced 2 alarms") == "silenced 2 alarms"
    assert describe_result(None) == "done"
