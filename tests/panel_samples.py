"""Realistic status snapshots and journal events for the front-panel tests.

Shaped like the daemon's ``{"cmd": "status"}`` answer (the status snapshot),
trimmed to what a panel reads plus some noise it must ignore.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC
from typing import Any

from firmware.core.alarms import Alarm
from firmware.panel import screens
from firmware.panel.base import Key, KeyEvent
from firmware.panel.render import render_text
from firmware.panel.text import to_unicode
from firmware.panel.ui import PanelOptions, PanelUi, RunCommand

PIN = "2580"
PIN_HASH = hashlib.sha256(PIN.encode()).hexdigest()

# 2024-05-14 09:30:00 UTC, so event times render the same everywhere (tests pass tz=UTC).
T0 = 1715679000.0


def alarm(source: str, level: str, text: str) -> dict[str, str]:
    """One alarm as the status snapshot shows it."""
    return Alarm(source, level, text).to_json()


def _link(name: str, kind: str, state: str, lost: int, received: int, last_heard_s: float | None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "rx": state != "down", "tx": state == "up", "state": state,
            "open": True, "detail": "", "sent": received + 12, "send_dropped": 0, "received": received,
            "lost": lost, "pending": 0, "rejected": {}, "rejected_total": 0, "last_heard_s": last_heard_s,
            "lateness_ms": {"<=10ms": received}, "late_over_50ms": 0}


ACTIVE_HEALTHY: dict[str, Any] = {
    "node": "pbx-a",
    "role": "primary",
    "state": "ACTIVE",
    "reason": "peer agreed",
    "since_s": 11580.4,
    "health": 100,
    "epoch": 17,
    "flags": ["resources"],
    "maintenance": False,
    "version": "0.1.0",
    "uptime_s": 273845.2,
    "board": "supermicro-x11scl",
    "extensions": [],
    "peer": {"name": "pbx-b", "alive": True, "state": "STANDBY", "role": "secondary", "health": 96,
             "epoch": 17, "flags": [], "last_heard_s": 0.042},
    "links": [_link("lan0", "udp", "up", 3, 98211, 0.042), _link("serial0", "serial", "up", 0, 98190, 0.051)],
    "witness": {"configured": True, "targets": ["192.0.2.1"], "ok": True, "detail": "192.0.2.1 answered", "age_s": 2.1},
    "alarms": [],
    "alarm_silenced": False,
    "sensors": [
        {"name": "cpu", "type": "lm75", "state": "OK", "summary": "temp 48.5 °C", "values": {"temp": 48.5},
         "units": {"temp": "°C"}},
        {"name": "psu1", "type": "pmbus", "state": "OK", "summary": "AC ok, 212 W", "values": {"power": 212.0},
         "units": {"power": "W"}},
        {"name": "fan1", "type": "psutil", "state": "OK", "summary": "4200 rpm", "values": {"rpm": 4200},
         "units": {"rpm": "rpm"}},
        {"name": "raid", "type": "mdstat", "state": "OK", "summary": "md0 [UU]", "values": {}, "units": {}},
    ],
    "inventory": {"system": {"manufacturer": "Supermicro", "product_name": "SYS-5019C",
                             "serial_number": "S41234567"}},
    "shared_ips": [{"address": "192.0.2.10/24", "interface": "eth0", "present": True, "announcements": 3}],
    "service": {"mode": "systemd", "running": True, "detail": "asterisk.service active"},
    "relays": [{"group": "trunks", "position": "active", "outputs": [], "mismatch": None, "timeline": []}],
    "heartbeat": {"interval_ms": 100.0, "deadtime_ms": 300.0, "max_tick_lag_ms": 1.2, "tick": 982113},
}

STANDBY_PEER_SILENT: dict[str, Any] = copy.deepcopy(ACTIVE_HEALTHY)
STANDBY_PEER_SILENT.update({
    "node": "pbx-b", "role": "secondary", "state": "STANDBY", "reason": "peer silent; waiting for initdead",
    "since_s": 42.7, "health": 72, "flags": [],
    "peer": {"name": "pbx-a", "alive": False, "state": None, "role": None, "health": None, "epoch": None,
             "flags": [], "last_heard_s": 12.4},
    "links": [_link("lan0", "udp", "down", 124, 98011, 12.4), _link("lan1", "udp", "one-way", 40, 97002, 3.2),
              _link("serial0", "serial", "up", 0, 98190, 0.06)],
    "witness": {"configured": True, "targets": ["192.0.2.1"], "ok": False, "detail": "192.0.2.1 timed out",
                "age_s": 1.0},
    "shared_ips": [{"address": "192.0.2.10/24", "interface": "eth0", "present": False, "announcements": 0}],
    "service": {"mode": "systemd", "running": False, "detail": "asterisk.service inactive"},
    "relays": [{"group": "trunks", "position": "standby", "outputs": [], "mismatch": None, "timeline": []}],
})

ALARMS: dict[str, Any] = copy.deepcopy(ACTIVE_HEALTHY)
ALARMS.update({
    "health": 35,
    "alarms": [alarm("sensor:psu1", "critical", "psu1 CRITICAL: AC input lost"),
               alarm("sensor:cpu", "warning", "cpu WARNING: temp 71.5 °C"),
               alarm("link:lan0", "warning", "link lan0 down")],
    "alarm_silenced": False,
    "sensors": [
        {"name": "cpu", "type": "lm75", "state": "WARNING", "summary": "temp 71.5 °C", "values": {"temp": 71.5},
         "units": {"temp": "°C"}},
        {"name": "fan1", "type": "psutil", "state": "OK", "summary": "4200 rpm", "values": {"rpm": 4200},
         "units": {"rpm": "rpm"}},
        {"name": "psu1", "type": "pmbus", "state": "CRITICAL", "summary": "AC input lost", "values": {"power": 0},
         "units": {"power": "W"}},
        {"name": "disk0", "type": "smart", "state": "UNKNOWN", "summary": "smartctl timed out", "values": {},
         "units": {}},
    ],
})
ALARMS["links"][0]["state"] = "down"

ALARMS_SILENCED: dict[str, Any] = copy.deepcopy(ALARMS)
ALARMS_SILENCED["alarm_silenced"] = True

NO_SENSORS: dict[str, Any] = copy.deepcopy(ACTIVE_HEALTHY)
NO_SENSORS.update({"sensors": [], "inventory": None, "maintenance": True})

MINIMAL: dict[str, Any] = {"node": "pbx-a", "state": "STARTING"}
"""Almost nothing known yet: every missing key must show as "-"."""

EVENTS: list[dict[str, Any]] = [
    {"id": 101, "time": T0 - 3600, "kind": "daemon.start", "data": {"version": "0.1.0", "node": "pbx-a"}},
    {"id": 102, "time": T0 - 3590, "kind": "peer.found", "data": {"peer": "pbx-b"}},
    {"id": 103, "time": T0 - 1200, "kind": "command", "data": {"command": "promote", "force": False,
                                                              "message": "asking pbx-b", "source": "panel"}},
    {"id": 104, "time": T0 - 1198, "kind": "state", "data": {"from": "STANDBY", "to": "TAKEOVER"}},
    {"id": 105, "time": T0 - 1197, "kind": "action", "data": {"action": "shared_ip 192.0.2.10", "ok": True}},
    {"id": 106, "time": T0 - 1196, "kind": "state", "data": {"from": "TAKEOVER", "to": "ACTIVE"}},
    {"id": 107, "time": T0 - 60, "kind": "link.down", "data": {"link": "lan0"}},
]


class Panel:
    """A PanelUi driven by hand: a clock, a status, and the last screen it showed."""

    def __init__(self, options: PanelOptions | None = None, status: Any = ACTIVE_HEALTHY, body_rows: int = 3) -> None:
        self.now = 1000.0
        self.status = status
        self.ui = PanelUi(options or PanelOptions(), self.now, body_rows=body_rows, tz=UTC)
        self.effects: list[Any] = []
        self.show()

    def show(self) -> screens.Screen:
        self.screen = self.ui.screen(self.status, EVENTS, self.now)
        return self.screen

    def text(self) -> str:
        return "\n".join(to_unicode(line) for line in render_text(self.show(), 20, 4))

    def at(self, seconds: float) -> Panel:
        self.now += seconds
        return self

    def press(self, key: Key, *, release: bool = True) -> list[Any]:
        got = self.ui.handle_key(KeyEvent(key, "press", self.now), self.now)
        if release:
            got += self.ui.handle_key(KeyEvent(key, "release", self.now), self.now)
        self.effects += got
        self.show()
        return got

    def release(self, key: Key) -> list[Any]:
        got = self.ui.handle_key(KeyEvent(key, "release", self.now), self.now)
        self.effects += got
        self.show()
        return got

    def keys(self, *keys: Key) -> list[Any]:
        got: list[Any] = []
        for key in keys:
            self.at(0.2)
            got += self.press(key)
        return got

    def tick(self, seconds: float = 0.0) -> list[Any]:
        self.at(seconds)
        got = self.ui.tick(self.now)
        self.effects += got
        self.show()
        return got

    def commands(self) -> list[str]:
        return [e.cmd for e in self.effects if isinstance(e, RunCommand)]

    def enter_pin(self, pin: str) -> None:
        for digit in pin:
            self.keys(*[Key.UP] * int(digit))
            self.keys(Key.ENTER)


def hold_start(p: Panel, item: int) -> None:
    """Menu item ``item`` (a dangerous one), Yes, and ENTER pressed and kept down."""
    p.keys(Key.ENTER, *[Key.DOWN] * item, Key.ENTER, Key.DOWN)
    assert p.screen.choice == 1
    p.at(0.2)
    p.press(Key.ENTER, release=False)
