"""The pure panel state machine, driven by key sequences with an explicit clock."""

from __future__ import annotations

import copy

import pytest
from panel_samples import (
    alarm,
    ACTIVE_HEALTHY,
    ALARMS,
    ALARMS_SILENCED,
    MINIMAL,
    NO_SENSORS,
    PIN,
    PIN_HASH,
    STANDBY_PEER_SILENT,
    Panel,
    hold_start,
)

from firmware.panel import screens
from firmware.panel.base import Key, KeyEvent
from firmware.panel.render import render_text
from firmware.panel.text import to_unicode
from firmware.panel.ui import (
    PanelOptions,
    PanelUi,
    Report,
    RunCommand,
    SetBacklight,
    lockout_delay,
)

U, D, L, R, E, B = Key.UP, Key.DOWN, Key.LEFT, Key.RIGHT, Key.ENTER, Key.BACK


# ---------------------------------------------------------------- pages

def test_up_down_walk_the_pages_and_wrap() -> None:
    p = Panel()
    assert p.ui.page == "home" and p.screen.big == "ACTIVE"
    seen = []
    for _ in range(20):
        seen.append(p.ui.page)
        p.keys(D)
    order = [page.name for page in screens.PAGES]
    assert [name for i, name in enumerate(seen) if i == 0 or name != seen[i - 1]][:9] == order + ["home"]
    p.keys(B)
    assert p.ui.page == "home"
    p.keys(U)
    assert p.ui.page == "version"
    p.keys(R, R)
    assert p.ui.page == "peer"
    p.keys(L)
    assert p.ui.page == "home"


def test_a_long_page_scrolls_before_the_next_page() -> None:
    p = Panel()
    p.keys(D)
    assert p.ui.page == "peer" and len(p.screen.lines) > 3
    p.keys(D)
    assert p.ui.page == "peer" and p.screen.scroll == 3
    assert "witness" in p.text()
    p.keys(U)
    assert p.ui.page == "peer" and p.screen.scroll == 0
    p.keys(D, D)
    assert p.ui.page == "links"


def test_16x2_home_shows_two_lines_and_scrolls_through_the_rest() -> None:
    p = Panel(body_rows=1)
    lines = render_text(p.screen, 16, 2)
    assert [to_unicode(x) for x in lines] == ["pbx-a ACTV pri  ", "100% peer STBY  "]
    p.keys(D)
    assert p.ui.page == "home" and "lan0:up" in to_unicode(render_text(p.screen, 16, 2)[1])
    p.keys(D)
    assert "192.0.2.10" in to_unicode(render_text(p.screen, 16, 2)[1])
    p.keys(D)
    assert p.ui.page == "peer"


def test_pages_show_their_number_and_the_home_screen_its_role() -> None:
    p = Panel()
    assert p.text().splitlines()[0] == "pbx-a ACTIVE     pri"
    p.keys(D, D, D)
    assert p.text().splitlines()[0] == "Links            3/8"


def test_every_page_survives_missing_keys() -> None:
    for status in (MINIMAL, {}, {"links": "nonsense", "peer": 3, "sensors": [None, 1]}, NO_SENSORS):
        p = Panel(status=status)
        for _ in screens.PAGES:
            assert len(render_text(p.screen, 20, 4)) == 4
            p.keys(R)
    p = Panel(status=MINIMAL)
    assert "health - peer -" in p.text()


def test_no_status_says_the_daemon_is_not_answering() -> None:
    p = Panel(status=None)
    screen = p.ui.screen(None, [], p.now, error="cannot reach the daemon: no socket")
    text = "\n".join(render_text(screen, 20, 4))
    assert "daemon not answering" in text and "cannot reach" in text


def test_sensors_worst_first_and_no_sensors() -> None:
    p = Panel(status=ALARMS)
    p.keys(B)  # acknowledge the alarm
    p.keys(R, R, R)
    assert p.ui.page == "sensors"
    assert [line.split()[1] for line in p.screen.lines] == ["CRIT", "WARN", "UNKN", "ok"]
    p.status = NO_SENSORS
    assert p.show().lines == ("no sensors",)


def test_events_page_newest_first_in_the_given_time_zone() -> None:
    p = Panel()
    p.keys(R, R, R, R, R)
    assert p.ui.page == "events"
    assert p.screen.lines[0] == "09:29 link.down lan0"
    assert p.screen.lines[1] == "09:10 state ACTIVE"


# ---------------------------------------------------------------- menu and confirmation

def test_enter_opens_the_menu_and_back_leaves() -> None:
    p = Panel()
    p.keys(E)
    assert p.screen.kind == "menu" and p.screen.highlight == 0
    assert p.screen.lines == ("Promote", "Demote", "Shutdown", "Reboot", "Maintenance on", "Silence alarm", "Back")
    p.keys(D, D)
    assert p.screen.highlight == 2
    p.keys(B)
    assert p.ui.mode == "pages"
    p.keys(E, U)
    assert p.screen.highlight == 6  # wraps to "Back"
    p.keys(E)
    assert p.ui.mode == "pages" and p.commands() == []


def test_maintenance_label_follows_the_status() -> None:
    p = Panel(status=NO_SENSORS)  # maintenance: true
    p.keys(E)
    assert "Maintenance off" in p.screen.lines


def test_confirmation_defaults_to_no() -> None:
    p = Panel()
    p.keys(E, E)
    assert p.screen.kind == "confirm" and p.screen.choice == 0
    assert p.screen.title == "Promote pbx-a?"
    assert "[No]" in p.text() and "[Yes]" not in p.text()
    p.keys(E)
    assert p.ui.mode == "menu" and p.commands() == []


def test_confirmation_toggles_with_any_arrow() -> None:
    p = Panel()
    p.keys(E, E)
    for key, expected in ((D, 1), (U, 0), (R, 1), (L, 0)):
        p.keys(key)
        assert p.screen.choice == expected
    p.keys(B)
    assert p.ui.mode == "menu"


def test_promote_needs_the_hold_with_a_visible_countdown() -> None:
    p = Panel(PanelOptions(hold_confirm_s=3.0))
    hold_start(p, 0)
    assert p.screen.kind == "hold" and p.screen.progress == 0.0
    assert "hold 3 s more" in p.text()
    p.tick(1.5)
    assert p.commands() == []
    assert p.screen.progress == pytest.approx(0.5)
    assert "hold 2 s more" in p.text()
    assert p.tick(1.4) == [] and p.commands() == []
    p.tick(0.1)
    assert p.commands() == ["promote"]
    assert p.screen.kind == "working" and "working" in p.text()
    p.release(E)  # the release after the end changes nothing
    assert p.commands() == ["promote"] and p.ui.mode == "working"
    p.keys(D)  # keys wait while the daemon works
    assert p.ui.mode == "working"


def test_releasing_early_cancels() -> None:
    p = Panel()
    hold_start(p, 0)
    p.at(2.9)
    p.release(E)
    assert p.screen.kind == "confirm" and p.screen.choice == 0
    assert "cancelled" in p.text()
    p.tick(10)
    assert p.commands() == []


def test_a_release_that_came_early_is_judged_by_its_time() -> None:
    p = Panel()
    hold_start(p, 0)
    started = p.now
    p.at(3.5)  # the panel thread was slow, but the key came up at 1 s
    p.ui.handle_key(KeyEvent(E, "release", started + 1.0), p.now)
    assert p.show().kind == "confirm" and p.commands() == []


def test_another_key_during_the_hold_cancels() -> None:
    p = Panel()
    hold_start(p, 1)
    assert p.screen.title == "Demote: hold ENTER"
    p.at(1).press(B)
    assert p.screen.kind == "confirm"
    p.tick(5)
    assert p.commands() == []


@pytest.mark.parametrize("item, cmd", [(1, "demote"), (2, "poweroff"), (3, "reboot")])
def test_dangerous_commands_all_need_the_hold(item: int, cmd: str) -> None:
    p = Panel()
    hold_start(p, item)
    assert p.screen.kind == "hold"
    p.tick(3.0)
    assert p.commands() == [cmd]


def test_maintenance_needs_confirmation_but_no_hold() -> None:
    p = Panel()
    p.keys(E, D, D, D, D, E)
    assert p.screen.title == "Maintenance on?"
    p.keys(D)
    assert p.keys(E) == [RunCommand("maintenance-on")]


def test_network_undo_is_offered_when_the_box_has_a_change_to_undo_and_needs_the_hold() -> None:
    appliance = {**copy.deepcopy(ACTIVE_HEALTHY),
                 "mgmt_network": {"ports": ["lan0 192.0.2.1/24 gw 192.0.2.254"], "undo": True}}
    p = Panel(status=appliance)
    p.keys(E)
    assert p.screen.lines[-2:] == ("Network undo", "Back")
    p.keys(B)
    hold_start(p, 6)
    assert p.screen.title == "Network undo: hold ENTER"
    p.tick(3.0)
    assert p.commands() == ["network-undo"]
    p.ui.command_result("network-undo", True, "undone: lan0 DHCP", p.now)
    assert p.text().splitlines()[:2] == ["Network undo: done  ", "undone: lan0 DHCP   "]


def test_no_network_undo_without_a_change_or_off_an_appliance() -> None:
    for status in (ACTIVE_HEALTHY, {**ACTIVE_HEALTHY, "mgmt_network": {"ports": [], "undo": False}}):
        p = Panel(status=status)
        p.keys(E)
        assert "Network undo" not in p.screen.lines


def test_the_network_page_shows_the_boxs_own_ports() -> None:
    p = Panel(status={**ACTIVE_HEALTHY, "mgmt_network": {"ports": ["lan0.7 DHCP"], "undo": False}})
    p.keys(*[R] * [page.name for page in screens.PAGES].index("network"))
    assert p.screen.title == "Network" and "lan0.7 DHCP" in p.screen.lines
    p = Panel(status={**ACTIVE_HEALTHY, "mgmt_network": {"ports": [], "undo": False}})
    p.keys(*[R] * [page.name for page in screens.PAGES].index("network"))
    assert "ports: DHCP" in p.screen.lines


def _unpaired(phase: str, code: str | None = None, message: str = "") -> dict:
    return {"node": "TANDEM-ALPHA", "state": "UNPAIRED", "setup": {"phase": phase, "code": code, "message": message}}


def test_an_unpaired_box_says_so_and_offers_pairing() -> None:
    p = Panel(status=_unpaired("idle", message="not paired: Pair with peer from the menu"))
    assert p.screen.big == "UNPAIRED" and p.screen.title == "UNPAIRED" and p.screen.lines[0] == "TANDEM-ALPHA"
    assert "not paired" in p.text()
    p.keys(E)
    assert p.screen.lines == ("Pair with peer", "Pair as primary", "Shared IP", "Back")
    p.keys(E)
    assert p.screen.title == "Pair with peer?" and p.screen.choice == 0
    p.keys(D)
    # No hold: pairing itself needs both operators' Yes.
    assert p.keys(E) == [RunCommand("pair-start", {"primary": False})]


def test_one_box_can_pair_as_the_primary() -> None:
    p = Panel(status=_unpaired("idle"))
    p.keys(E, D, E)
    assert p.screen.title == "Pair as primary?"
    p.keys(D)
    assert p.keys(E) == [RunCommand("pair-start", {"primary": True})]


def test_the_shared_ip_is_entered_at_an_unpaired_box() -> None:
    status = {**_unpaired("idle"), "mgmt_network": {"ports": [], "settings": {}, "undo": False,
                                                    "choices": ["hb0", "lan0"]}}
    p = Panel(status=status)
    p.keys(E, D, D, E)  # Shared IP
    assert p.screen.title == "Network: port"
    p.keys(D, E)  # lan0: straight to the address (no DHCP, no gateway)
    assert p.screen.title == "lan0 address" and p.screen.lines[0] == "192.168.001.010/24"
    p.keys(*[E] * 11, U, U, U, U, E, E, E)  # .014, prefix 24
    assert p.screen.kind == "confirm" and p.screen.title == "Shared IP 192.168.1.14/24?"
    p.keys(D)
    assert p.keys(E) == [RunCommand("setup-shared-ip", {"port": "lan0", "address": "192.168.1.14/24"})]


def test_both_panels_ask_about_the_code_and_no_is_an_answer() -> None:
    for choice, command in ((1, "pair-confirm"), (0, "pair-reject")):
        p = Panel(status=_unpaired("waiting"))
        p.keys(E)
        assert p.screen.lines == ("Cancel pairing", "Back")
        p.keys(B)
        p.status = _unpaired("code", "042 917")
        p.show()
        assert p.screen.kind == "confirm" and p.screen.title == "Code 042 917" and p.screen.choice == 0
        p.keys(*[D] * choice)
        assert p.keys(E) == [RunCommand(command)]


def test_a_code_prompt_left_with_back_can_be_reopened_from_the_menu() -> None:
    p = Panel(status=_unpaired("code", "042 917"))
    assert p.screen.kind == "confirm"
    p.keys(B, B)
    assert p.ui.mode == "pages" and p.screen.big == "042 917"  # asked once, not again on every refresh
    p.keys(E)
    assert p.screen.lines == ("Compare code", "Cancel pairing", "Back")
    p.keys(E)
    assert p.screen.title == "Code 042 917"
    p.keys(D)
    assert p.keys(E) == [RunCommand("pair-confirm")]


def test_a_code_prompt_made_moot_by_the_other_box_gives_way_to_why() -> None:
    p = Panel(status=_unpaired("code", "042 917"))
    assert p.screen.kind == "confirm"
    p.status = _unpaired("failed", message="the other box ended the pairing: different codes")
    p.show()
    assert p.ui.mode == "pages" and p.screen.tone == "error" and "pairing failed" in p.text()


def test_a_failed_pairing_shows_why_and_can_be_tried_again() -> None:
    p = Panel(status=_unpaired("failed", message="the codes differ: pairing refused; nothing was written"))
    assert p.screen.tone == "error" and "codes differ" in p.text()
    p.keys(E)
    assert p.screen.lines[0] == "Pair with peer"


_NETWORK = {"ports": ["lan0 192.0.2.10/24 gw 192.0.2.254"], "undo": False, "choices": ["hb0", "lan0"],
            "settings": {"lan0": {"mode": "static", "address": "192.0.2.10/24", "gateway": "192.0.2.254",
                                  "dns": [], "vlan": None}}}


def _network_set(p: Panel) -> None:
    p.keys(E)
    assert p.screen.lines[6] == "Network set"
    p.keys(*[D] * 6, E)
    assert p.screen.title == "Network: port" and p.screen.lines == ("hb0", "lan0", "Back")


def test_network_set_a_static_address_digit_by_digit_then_confirm_and_hold() -> None:
    p = Panel(status={**copy.deepcopy(ACTIVE_HEALTHY), "mgmt_network": _NETWORK})
    _network_set(p)
    p.keys(D, E)
    assert p.screen.title == "lan0: address by" and p.screen.lines == ("DHCP", "Static", "Back")
    p.keys(D, E)
    assert p.screen.title == "lan0 address" and p.screen.lines[:2] == ("192.000.002.010/24", "^")
    p.keys(*[E] * 11, U)  # to the last digit of the last number, and up: .011
    assert p.screen.lines[:2] == ("192.000.002.011/24", "              ^")
    p.keys(E, E, E)  # through the prefix: on to the gateway, as it was
    assert p.screen.title == "lan0 gateway" and p.screen.lines[0] == "192.000.002.254"
    p.keys(*[E] * 12)
    assert p.screen.kind == "confirm" and p.screen.title == "Set lan0?" and "192.0.2.11/24" in p.text()
    p.keys(D)
    p.at(0.1).press(E, release=False)
    p.tick(3.0)
    assert p.effects[-1] == RunCommand("network-set", {"port": "lan0", "dhcp": False, "address": "192.0.2.11/24",
                                                       "gateway": "192.0.2.254"})


def test_network_set_dhcp_on_a_port_not_set_yet() -> None:
    p = Panel(status={**copy.deepcopy(ACTIVE_HEALTHY), "mgmt_network": _NETWORK})
    _network_set(p)
    p.keys(E, E)  # hb0, DHCP
    assert p.screen.title == "Set hb0?" and "DHCP" in p.text()
    p.keys(D)
    p.at(0.1).press(E, release=False)
    p.tick(3.0)
    assert p.effects[-1] == RunCommand("network-set", {"port": "hb0", "dhcp": True})


def test_network_set_refuses_a_number_over_255_and_back_leaves() -> None:
    p = Panel(status={**copy.deepcopy(ACTIVE_HEALTHY), "mgmt_network": _NETWORK})
    _network_set(p)
    p.keys(E, D, E)  # hb0, Static: the default address
    assert p.screen.lines[0] == "192.168.001.010/24"
    p.keys(U, U)  # 392…
    p.keys(*[E] * 14)
    assert "over 255" in p.text() and p.screen.title == "hb0 address"
    p.keys(B)
    assert p.ui.mode == "menu" and p.commands() == []


def test_result_is_shown_until_a_key_or_ten_seconds() -> None:
    p = Panel()
    hold_start(p, 0)
    p.tick(3)
    p.ui.command_result("promote", True, "this node is ACTIVE", p.now)
    assert p.show().kind == "result" and "Promote: done" in p.text() and "this node is ACTIVE" in p.text()
    p.tick(9.9)
    assert p.ui.mode == "result"
    p.tick(0.1)
    assert p.ui.mode == "pages" and p.ui.page == "home"


def test_refusal_reason_is_shown() -> None:
    p = Panel()
    hold_start(p, 0)
    p.tick(3)
    p.ui.command_result("promote", False, "pbx-b is ACTIVE and healthy; use --force", p.now)
    text = p.text()
    assert "Promote: refused" in text and "pbx-b is ACTIVE" in text and "healthy" in text
    assert p.screen.tone == "error"
    p.keys(D)
    assert p.ui.mode == "pages"


# ---------------------------------------------------------------- PIN

def test_pin_is_entered_with_the_keys_before_the_menu() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E)
    assert p.screen.kind == "pin" and p.screen.lines[0] == "0 _ _ _"
    p.keys(U, U, E)          # 2
    p.keys(U, U, U, U, U, E)  # 5
    p.keys(D, D)              # 0 → 9 → 8
    assert p.screen.lines[0] == "* * 8 _"
    p.keys(E)
    p.keys(L)                 # back to the third digit …
    assert p.screen.lines[0] == "* * 8 _"
    p.keys(R)                 # … and on again (the digit restarts at 0)
    p.keys(E)                 # 0, submit
    assert p.screen.kind == "menu" and p.ui.unlocked


def test_factory_reset_asks_for_the_pin_again_then_yes_and_the_hold() -> None:
    appliance = {**copy.deepcopy(ACTIVE_HEALTHY), "factory_reset": True}
    p = Panel(PanelOptions(pin_hash=PIN_HASH), status=appliance)
    p.keys(E)
    p.enter_pin(PIN)
    assert p.screen.kind == "menu" and p.screen.lines[-3:] == ("Factory reset", "Lock panel", "Back")
    p.keys(*[D] * 6, E)
    assert p.screen.kind == "pin" and "PIN again" in p.text()  # unlocked, yet asked again
    p.enter_pin("1111")
    assert p.screen.kind == "pin" and p.commands() == []
    p.enter_pin(PIN)
    assert p.screen.kind == "confirm" and p.screen.title == "Factory reset pbx-a?" and p.screen.choice == 0
    p.keys(D)
    p.at(0.1).press(E, release=False)
    assert p.screen.kind == "hold"
    p.tick(3.0)
    assert p.commands() == ["factory-reset"]


def test_no_factory_reset_at_a_panel_without_a_pin() -> None:
    p = Panel(status={**copy.deepcopy(ACTIVE_HEALTHY), "factory_reset": True})
    p.keys(E)
    assert "Factory reset" not in p.screen.lines


def test_leaving_the_factory_reset_pin_does_not_arm_the_next_unlock() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH), status={**copy.deepcopy(ACTIVE_HEALTHY), "factory_reset": True})
    p.keys(E)
    p.enter_pin(PIN)
    p.keys(*[D] * 6, E)
    p.keys(B)  # out of the PIN, home
    assert p.ui.mode == "pages"
    p.keys(E)
    assert p.screen.kind == "menu"  # the panel is still unlocked: the menu, not the reset's Yes


def test_back_on_the_first_digit_leaves_pin_entry() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E, B)
    assert p.ui.mode == "pages"


def test_wrong_pins_back_off_with_the_remaining_time_shown() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E)
    for _ in range(3):
        p.enter_pin("1111")
        assert p.screen.kind == "pin" and "wrong PIN" in p.text()
    p.enter_pin("1111")
    assert p.screen.kind == "lockout"
    assert "try again in 0:30" in p.text() and "4 wrong PINs" in p.text()
    p.keys(U, E, E)  # ignored while locked out
    assert p.screen.kind == "lockout"
    p.tick(20)
    assert "try again in 0:10" in p.text()  # 20.6 s of 30 gone
    p.tick(10)
    assert p.ui.mode == "pages"  # the lockout screen timed out like any dialog
    p.keys(E)
    assert p.screen.kind == "pin"
    p.enter_pin("9999")
    assert "try again in 1:00" in p.text()
    p.tick(60)
    p.keys(E, E)  # the first only wakes the backlight
    p.enter_pin(PIN)
    assert p.screen.kind == "menu"


def test_lockout_doubles_up_to_fifteen_minutes() -> None:
    assert [lockout_delay(n) for n in range(1, 11)] == [0, 0, 0, 30, 60, 120, 240, 480, 900, 900]


def test_panel_relocks_after_idle() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH, relock_s=120, backlight_timeout_s=600))
    p.keys(E)
    p.enter_pin(PIN)
    assert p.ui.unlocked
    p.keys(B)
    p.tick(119)
    assert p.ui.unlocked
    p.tick(1)
    assert not p.ui.unlocked
    p.keys(E)
    assert p.screen.kind == "pin"


def test_lock_panel_relocks_at_once() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E)
    p.enter_pin(PIN)
    assert p.screen.lines[-2:] == ("Lock panel", "Back")
    p.keys(U, U, E)
    assert not p.ui.unlocked and "Panel locked" in p.text()
    p.keys(D, E)
    assert p.screen.kind == "pin"


def test_pin_attempts_and_locking_are_reported_for_the_journal() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH, relock_s=60))
    p.keys(E)
    for _ in range(4):
        p.enter_pin("1111")
    reports = [e for e in p.effects if isinstance(e, Report)]
    assert [r.event for r in reports] == ["pin.wrong"] * 4
    assert reports[-1].detail == "4 wrong in a row; locked for 30 s"
    p.tick(31)
    p.keys(E)
    p.enter_pin(PIN)
    assert p.ui.unlocked and isinstance(p.effects[-1], Report) and p.effects[-1].event == "pin.accepted"
    p.tick(61)
    assert Report("panel.locked", "no key for 60 s") in p.effects


def test_no_pin_means_no_lock_item() -> None:
    p = Panel()
    p.keys(E)
    assert "Lock panel" not in p.screen.lines


def test_bad_pin_hash_is_rejected() -> None:
    with pytest.raises(ValueError, match="pin_hash"):
        PanelOptions(pin_hash="1234")


# ---------------------------------------------------------------- view only

def test_view_only_never_produces_a_command() -> None:
    p = Panel(PanelOptions(view_only=True, hold_confirm_s=0.5))
    p.keys(E)
    assert p.screen.kind == "message" and "panel control disabled by config" in " ".join(p.screen.lines)
    assert "View only" in p.text()
    for key in [E, D, E, D, E, R, E, U, E, B, E, E, D, E] * 3:
        p.at(0.1)
        p.press(key, release=False)
        p.tick(1.0)
        p.release(key)
    p.status = ALARMS
    p.keys(E, E, D, D, D, D, D, E, E)
    assert p.commands() == []
    assert not any(isinstance(e, RunCommand) for e in p.effects)


# ---------------------------------------------------------------- alarms

def test_alarm_takes_over_until_a_key_acknowledges_it() -> None:
    p = Panel()
    p.keys(E, D)
    assert p.ui.mode == "menu"
    p.status = ALARMS
    p.show()
    assert p.screen.kind == "alarm" and p.screen.alarm
    assert "ALARM (3)" in p.text() and "psu1 CRITICAL" in p.text()
    p.keys(D)  # acknowledges only
    assert p.screen.kind == "menu" and p.screen.highlight == 1
    live = copy.deepcopy(ALARMS)
    live["alarms"][1] = alarm("sensor:cpu", "warning", "cpu WARNING: temp 72.5 °C")  # same alarm, new reading
    p.status = live
    assert p.show().kind == "menu"
    live = copy.deepcopy(live)
    live["alarms"].append(alarm("relay-bank:pcf0", "critical", "relay bank pcf0 is not reachable"))
    p.status = live
    assert p.show().kind == "alarm"


def test_silence_alarm_from_the_menu() -> None:
    p = Panel(status=ALARMS)
    p.keys(B)  # acknowledge
    p.keys(E, U, U)
    assert p.screen.lines[p.screen.highlight or 0] == "Silence alarm"
    p.keys(E)
    assert p.commands() == ["alarm-silence"]
    p.ui.command_result("alarm-silence", True, "silenced 3 alarms", p.now)
    p.status = ALARMS_SILENCED
    assert p.show().kind == "result" and "silenced 3 alarms" in p.text()
    p.keys(D)
    assert p.screen.kind == "page"


def test_an_alarm_cancels_a_hold_in_progress() -> None:
    p = Panel()
    hold_start(p, 0)
    p.at(1)
    p.status = ALARMS
    assert p.show().kind == "alarm"
    p.tick(5)
    assert p.commands() == []
    p.keys(B)
    assert p.screen.kind == "confirm" and "cancelled: alarm" in p.text()


def test_alarm_forces_the_backlight_on_and_blinks_it() -> None:
    p = Panel(PanelOptions(backlight_timeout_s=60, backlight_dim_level=0))
    p.tick(100)
    assert p.ui.backlight(p.now) == 0
    p.status = ALARMS
    p.show()
    p.now = 2000.0
    assert p.ui.backlight(2000.0) == 100
    assert p.ui.backlight(2000.6) == 0  # off, not dimmer: on/off backlights must visibly blink too
    assert p.ui.backlight(2001.1) == 100
    levels = [e.level for e in p.ui.tick(2000.6) + p.ui.tick(2001.0) + p.ui.tick(2001.5)]
    assert levels == [100, 0]  # only changes are sent: it was already off (dark) at 2000.6
    assert p.ui.next_change(2000.2) == pytest.approx(0.3)
    p.status = ALARMS_SILENCED
    p.show()
    assert p.ui.backlight(2001.0) == 0  # silenced: dims like any idle panel


def test_indicators() -> None:
    ui = PanelUi(PanelOptions(), 0.0)
    assert ui.indicators(ACTIVE_HEALTHY, 0) == ("on", "off", False)
    assert ui.indicators(STANDBY_PEER_SILENT, 0) == ("slow", "off", False)
    assert ui.indicators({**ACTIVE_HEALTHY, "state": "TAKEOVER"}, 0)[0] == "fast"
    assert ui.indicators({**ACTIVE_HEALTHY, "state": "RELEASING"}, 0)[0] == "fast"
    assert ui.indicators({**ACTIVE_HEALTHY, "state": "STOPPED"}, 0)[0] == "off"
    assert ui.indicators(ALARMS, 0) == ("on", "fast", True)
    assert ui.indicators(ALARMS_SILENCED, 0) == ("on", "on", False)
    assert ui.indicators(None, 0) == ("off", "off", False)


# ---------------------------------------------------------------- timeouts

def test_backlight_dims_when_idle_and_the_first_key_only_wakes() -> None:
    p = Panel(PanelOptions(backlight_timeout_s=60, backlight_dim_level=5))
    assert p.tick() == [SetBacklight(100)]
    assert p.tick(59.9) == []
    assert p.tick(0.1) == [SetBacklight(5)]
    assert p.ui.next_change(p.now) is None or p.ui.next_change(p.now) > 0
    got = p.at(1).press(D)
    assert got == [SetBacklight(100)]
    assert p.ui.page == "home"  # woke only
    p.keys(D)
    assert p.ui.page == "peer"


def test_the_waking_enter_does_not_open_the_menu() -> None:
    p = Panel()
    p.tick(61)
    p.keys(E)
    assert p.ui.mode == "pages"
    p.keys(E)
    assert p.ui.mode == "menu"


def test_menu_times_out_to_home() -> None:
    p = Panel(PanelOptions(menu_timeout_s=30))
    p.keys(D, D, E, D)
    assert p.ui.mode == "menu"
    p.tick(29.9)
    assert p.ui.mode == "menu"
    p.tick(0.1)
    assert p.ui.mode == "pages" and p.ui.page == "home"


def test_confirm_and_pin_time_out_too_and_pages_return_home() -> None:
    p = Panel(PanelOptions(pin_hash=PIN_HASH))
    p.keys(E, U)
    p.tick(30)
    assert p.ui.mode == "pages"
    p.keys(R, R)
    assert p.ui.page == "links"
    p.tick(30)
    assert p.ui.page == "home"


def test_page_rotation_is_off_by_default_and_optional() -> None:
    p = Panel()
    p.tick(300)
    assert p.ui.page == "home"
    p = Panel(PanelOptions(page_rotation_s=5))
    p.tick(5)
    assert p.ui.page == "peer"
    p.tick(5)
    assert p.ui.page == "links"
    p.status = ALARMS
    p.show()
    p.tick(5)
    assert p.ui.page == "links"  # the alarm overlay stops the rotation


def test_next_change_is_prompt_during_a_hold() -> None:
    p = Panel()
    assert p.ui.next_change(p.now) == pytest.approx(60.0)  # the backlight timeout
    p.keys(D)
    assert p.ui.next_change(p.now) == pytest.approx(30.0)  # back home from another page
    hold_start(p, 0)
    assert p.ui.next_change(p.now) == pytest.approx(0.05)
