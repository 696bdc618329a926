"""What the panel shows, as data: the status pages and the screens of menus and dialogs.

A `Screen` is layout-free: a title, lines in order of importance, and a few
typed extras (a highlighted line, a countdown, Yes/No choices, big role text,
a health bar, link icons) that `render` lays out for a 16×2 character module,
a 20×4 one or a graphic display. All text is Unicode; transliteration happens
in the renderer.

Every builder takes the status snapshot as a plain mapping and is defensive:
a missing key shows as "-" and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

__all__ = [
    "PAGES",
    "LinkIcon",
    "Page",
    "Screen",
    "ScreenKind",
    "Tone",
    "alarm_screen",
    "confirm_screen",
    "duration",
    "hold_screen",
    "lockout_screen",
    "menu_screen",
    "message_screen",
    "pin_screen",
    "result_screen",
    "state_abbr",
    "working_screen",
]

ScreenKind = Literal["page", "menu", "confirm", "hold", "working", "result", "pin", "lockout", "message", "alarm"]
Tone = Literal["normal", "ok", "warning", "error"]
Status = Mapping[str, Any]
Event = Mapping[str, Any]

DASH = "-"


@dataclass(frozen=True)
class LinkIcon:
    """One heartbeat link for the graphic home screen's link icons."""

    name: str
    state: str
    """``up``, ``one-way``, ``down`` or ``-`` (unknown)."""


@dataclass(frozen=True)
class Screen:
    """One screenful, independent of the display it ends up on."""

    title: str
    lines: tuple[str, ...] = ()
    """Body lines, most important first."""
    kind: ScreenKind = "page"
    title_right: str = ""
    """Flush-right part of the title line (page number, role, alarm count)."""
    narrow_title: str | None = None
    narrow_lines: tuple[str, ...] | None = None
    """Alternatives for displays narrower than 20 columns (the 16×2 home screen)."""
    highlight: int | None = None
    """Index of the selected line (menus); the renderer keeps it in view."""
    scroll: int = 0
    """Index of the first body line shown (pages longer than the display)."""
    wrap: bool = False
    """Wrap long lines instead of cutting them (alarms, refusal reasons)."""
    progress: float | None = None
    """0–1 for a countdown bar (hold-to-confirm)."""
    choices: tuple[str, ...] = ()
    choice: int | None = None
    """Selected index into ``choices`` (confirmation screens)."""
    big: str | None = None
    """Large text for graphic layouts (the node's state on the home screen)."""
    big_title: str | None = None
    """Header text when ``big`` is shown (the node's name)."""
    big_sub: str | None = None
    """Small line under ``big`` (role, time in state)."""
    health: int | None = None
    """0–100 for a health bar on graphic layouts."""
    links: tuple[LinkIcon, ...] = ()
    details: tuple[str, ...] = ()
    """Small lines under the big layout's widgets (peer, shared IP)."""
    alarm: bool = False
    """An unsilenced alarm is on screen: draw it as an alarm."""
    alarm_count: int = 0
    """Active alarms (silenced or not), for an icon in graphic headers."""
    tone: Tone = "normal"
    """Colour hint for graphic layouts (result screens, the node's state)."""


PageBuilder = Callable[[Status, Sequence[Event], "tzinfo | None"], "Screen"]


@dataclass(frozen=True)
class Page:
    """A status page: a short name and the function that builds its screen."""

    name: str
    build: PageBuilder


# ---------------------------------------------------------------- formatting helpers

def _get(data: Any, *path: str) -> Any:
    """``data[path0][path1]…`` or None when any step is missing or not a mapping."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _s(value: Any) -> str:
    """A value as display text; None and empty strings become "-"."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def duration(seconds: Any) -> str:
    """A compact duration: ``42ms``, ``3.2s``, ``45s``, ``12m05s``, ``3h04m``, ``2d03h``; "-" if unknown."""
    value = _num(seconds)
    if value is None or value < 0:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 10:
        return f"{value:.1f}s"
    whole = int(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_STATE_ABBR = {"ACTIVE": "ACTV", "STANDBY": "STBY", "TAKEOVER": "TKOV", "RELEASING": "RELS",
               "STARTING": "STRT", "STOPPED": "STOP"}
_ROLE_ABBR = {"primary": "pri", "secondary": "sec", "equal": "eq"}
_LINK_ABBR = {"up": "up", "one-way": "1w", "down": "dn"}
_SENSOR_ABBR = {"OK": "ok", "WARNING": "WARN", "CRITICAL": "CRIT", "UNKNOWN": "UNKN"}
_SENSOR_ORDER = {"CRITICAL": 0, "WARNING": 1, "UNKNOWN": 2, "OK": 3}


def state_abbr(state: Any) -> str:
    """A node state in four letters (``STBY``); unknown states as given, None as "-"."""
    return _STATE_ABBR.get(str(state), _s(state)) if state else DASH


def _peer_word(status: Status) -> str:
    alive = _get(status, "peer", "alive")
    if alive is False:
        return "lost"
    return state_abbr(_get(status, "peer", "state"))


def _state_tone(state: Any) -> Tone:
    return {"ACTIVE": "ok", "TAKEOVER": "warning", "RELEASING": "warning", "STOPPED": "error"}.get(str(state), "normal")


def _links(status: Status) -> list[Mapping[str, Any]]:
    links = status.get("links")
    return [link for link in links if isinstance(link, Mapping)] if isinstance(links, list) else []


def _loss(link: Mapping[str, Any]) -> str:
    lost, received = _num(link.get("lost")), _num(link.get("received"))
    if lost is None or received is None or lost + received <= 0:
        return DASH
    percent = 100 * lost / (lost + received)
    if percent == 0:
        return "0%"
    return f"{percent:.1f}%" if percent < 10 else f"{percent:.0f}%"


def _short_link(name: str, many: bool) -> str:
    """``serial0`` → ``ser0`` (``se0`` when there are many links): names for the one-line summary."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    keep = 2 if many else 3
    return (stem[:keep] if digits else stem[:keep + 1]) + digits[:2]


def _alarm_records(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    alarms = status.get("alarms")
    return [a for a in alarms if isinstance(a, Mapping)] if isinstance(alarms, list) else []


def alarm_texts(status: Mapping[str, Any]) -> list[str]:
    """The texts of the status snapshot's active alarms, for people."""
    return [str(a.get("text", "")) for a in _alarm_records(status)]


def alarm_keys(status: Mapping[str, Any]) -> frozenset[str]:
    """The stable keys of the active alarms, for acknowledging (texts carry live values)."""
    return frozenset(str(a.get("key", "")) for a in _alarm_records(status))


def _address(entry: Any) -> str:
    return _s(_get(entry, "address")).split("/")[0]


# ---------------------------------------------------------------- pages

_SETUP_PHASES = {"idle": "not paired", "waiting": "pairing...", "code": "compare the code",
                 "confirmed": "code confirmed", "done": "paired", "failed": "pairing failed"}


def setup_home(status: Status) -> Screen:
    """An unpaired box (`tandem setup`): UNPAIRED, where its pairing is, and what to do."""
    setup = status.get("setup") if isinstance(status.get("setup"), Mapping) else {}
    phase = str(setup.get("phase"))
    big = f"{setup['code']}" if phase in ("code", "confirmed") and setup.get("code") else "UNPAIRED"
    tone: Tone = "error" if phase == "failed" else "normal"
    lines = (_s(status.get("serial") or status.get("node")), _SETUP_PHASES.get(phase, phase), _s(setup.get("message")))
    return Screen(title="UNPAIRED", lines=lines, wrap=True, big=big, big_title=_s(status.get("node")),
                  big_sub=_SETUP_PHASES.get(phase, phase), tone=tone)


def home(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """Node, state and role; health and peer; every link; the shared IP; alarm count (or `setup_home`)."""
    if isinstance(status.get("setup"), Mapping):
        return setup_home(status)
    node, state = _s(status.get("node")), status.get("state")
    role = _ROLE_ABBR.get(str(status.get("role")), _s(status.get("role")))
    alarms = alarm_texts(status)
    right = role + (" M" if status.get("maintenance") else "") + (f" !{len(alarms)}" if alarms else "")
    health = _num(status.get("health"))
    health_text = DASH if health is None else f"{health:.0f}"
    peer = _peer_word(status)
    links = _links(status)
    link_line = " ".join(f"{_short_link(_s(link.get('name')), len(links) > 2)}:{_LINK_ABBR.get(str(link.get('state')), '?')}"
                         for link in links) or "no links"
    ips = status.get("shared_ips") if isinstance(status.get("shared_ips"), list) else []
    ip_line = DASH if not ips else f"IP {_address(ips[0])}" + (" here" if _get(ips[0], "present") else "")
    lines = (f"health {health_text} peer {peer}", link_line, ip_line)
    narrow = (f"{health_text}{'%' if health is not None else ''} peer {peer}", link_line, ip_line)
    narrow_title = f"{node} {state_abbr(state)} " + (f"!{len(alarms)}" if alarms else role)
    since = duration(status.get("since_s"))
    return Screen(
        title=f"{node} {_s(state)}", title_right=right, lines=lines,
        narrow_title=narrow_title, narrow_lines=narrow,
        big=_s(state), big_title=node, details=(f"peer {_s(_get(status, 'peer', 'name'))} {peer}", ip_line),
        big_sub=f"{_s(status.get('role'))} for {since}"
        + (" maint." if status.get("maintenance") else ""),
        health=None if health is None else int(max(0, min(100, health))),
        links=tuple(LinkIcon(_s(link.get("name")), str(link.get("state") or DASH)) for link in links),
        alarm_count=len(alarms), tone=_state_tone(state),
    )


def peer(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """The peer: state, role, health, when it was last heard; the witness."""
    alive = _get(status, "peer", "alive")
    heard = duration(_get(status, "peer", "last_heard_s"))
    witness_ok = _get(status, "witness", "ok")
    witness = ("not configured" if _get(status, "witness", "configured") is False
               else "ok" if witness_ok is True else "FAIL" if witness_ok is False else DASH)
    lines = [
        f"{_s(_get(status, 'peer', 'name'))} {_s(_get(status, 'peer', 'state')) if alive is not False else 'silent'}",
        (f"heard {heard} ago" if heard != DASH else "heard -") if alive is not False else f"silent for {heard}",
        f"role {_s(_get(status, 'peer', 'role'))}",
        f"health {_s(_get(status, 'peer', 'health'))}",
        f"witness {witness}",
    ]
    detail = _get(status, "witness", "detail")
    if detail:
        lines.append(str(detail))
    return Screen(title="Peer", lines=tuple(lines))


def links(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """Each heartbeat link: state, loss, last heard."""
    lines = [f"{_s(link.get('name'))[:7]} {_s(link.get('state'))} {_loss(link)} {duration(link.get('last_heard_s'))}"
             for link in _links(status)]
    return Screen(title="Links", lines=tuple(lines) or ("no links",),
                  links=tuple(LinkIcon(_s(link.get("name")), str(link.get("state") or DASH))
                              for link in _links(status)))


def _sensor_value(sensor: Mapping[str, Any]) -> str:
    if sensor.get("state") != "OK" and sensor.get("summary"):
        return str(sensor["summary"])  # why it is not OK says more than a number
    values, units = sensor.get("values"), sensor.get("units")
    if isinstance(values, Mapping):
        for name, value in values.items():
            number = _num(value)
            if number is not None:
                unit = units.get(name, "") if isinstance(units, Mapping) else ""
                shown = f"{number:.0f}" if abs(number) >= 100 or number == int(number) else f"{number:.1f}"
                return f"{shown}{'' if unit in ('°C', '%') else ' '}{unit}".rstrip()
    return _s(sensor.get("summary"))


def sensors(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """Every sensor, worst first: state and its first reading."""
    rows = status.get("sensors")
    rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
    rows.sort(key=lambda r: (_SENSOR_ORDER.get(str(r.get("state")), 2), _s(r.get("name"))))
    lines = tuple(f"{_s(r.get('name'))} {_SENSOR_ABBR.get(str(r.get('state')), '?')} {_sensor_value(r)}" for r in rows)
    return Screen(title="Sensors", lines=lines or ("no sensors",))


def alarms_page(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """The active alarms (whether or not silenced)."""
    alarms = alarm_texts(status)
    lines = (["(silenced)"] if alarms and status.get("alarm_silenced") else []) + alarms
    return Screen(title="Alarms", lines=tuple(lines) or ("no alarms",), wrap=True, alarm_count=len(alarms))


def _event_text(record: Mapping[str, Any]) -> str:
    kind, data = _s(record.get("kind")), record.get("data")
    data = data if isinstance(data, Mapping) else {}
    if kind == "state":
        return f"state {_s(data.get('to'))}"
    if kind in ("command", "refused"):
        return f"{kind} {_s(data.get('command'))}" + (f" ({data['source']})" if data.get("source") else "")
    if kind == "action":
        return f"{_s(data.get('action'))} {'ok' if data.get('ok') else 'FAILED'}"
    if kind in ("link.up", "link.down"):
        return f"{kind} {_s(data.get('link') or data.get('name'))}"
    if kind == "health" and "health" in data:
        return f"health {_s(data.get('health'))}"
    return kind


def _event_time(value: Any, tz: tzinfo | None) -> str:
    stamp = _num(value)
    if stamp is None:
        return "--:--"
    try:
        return datetime.fromtimestamp(stamp, tz).strftime("%H:%M")
    except (OverflowError, OSError, ValueError):
        return "--:--"


def events_page(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """The most recent journal events, newest first (times in ``tz``, local time if None)."""
    records = [e for e in events if isinstance(e, Mapping)]
    records.sort(key=lambda e: _num(e.get("id")) or 0, reverse=True)
    lines = tuple(f"{_event_time(e.get('time'), tz)} {_event_text(e)}" for e in records[:20])
    return Screen(title="Last events", lines=lines or ("no events",))


def network(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """Shared addresses (held here or not), the PBX service, the trunk relays, this box's own ports."""
    lines: list[str] = []
    ips = status.get("shared_ips")
    for entry in ips if isinstance(ips, list) else []:
        lines.append(_s(_get(entry, "address")))
        lines.append(f" {_s(_get(entry, 'interface'))} {'here' if _get(entry, 'present') else 'not here'}")
    if isinstance(status.get("service"), Mapping):
        running = _get(status, "service", "running")
        lines.append(f"PBX {'running' if running else 'stopped' if running is False else DASH}")
    relays = status.get("relays")
    for relay in relays if isinstance(relays, list) else []:
        lines.append(f"relays {_s(_get(relay, 'group'))} {_s(_get(relay, 'position'))}"
                     + (" MISMATCH" if _get(relay, "mismatch") else ""))
    own = _get(status, "mgmt_network", "ports")
    if isinstance(own, list):  # an appliance: the ports `tandem network` set (the rest use DHCP)
        lines += [_s(port) for port in own] or ["ports: DHCP"]
    return Screen(title="Network", lines=tuple(lines) or ("no shared addresses",))


def version(status: Status, events: Sequence[Event] = (), tz: tzinfo | None = None) -> Screen:
    """Software version, uptime, board, the chassis model and serial if known, and why the box last booted."""
    lines = [f"tandem {_s(status.get('version'))}", f"up {duration(status.get('uptime_s'))}",
             f"board {_s(status.get('board'))}" + (" (sim)" if status.get("simulator") else "")]
    system = _get(status, "inventory", "system")
    if isinstance(system, Mapping):
        model = " ".join(str(system[k]) for k in ("manufacturer", "product_name") if system.get(k))
        if model:
            lines.append(model)
        if system.get("serial_number"):
            lines.append(f"S/N {system['serial_number']}")
    last_boot = _get(status, "last_boot", "reason")
    if last_boot:
        lines.append(f"last boot: {last_boot}")
    return Screen(title="Version", lines=tuple(lines))


PAGES: tuple[Page, ...] = (
    Page("home", home),
    Page("peer", peer),
    Page("links", links),
    Page("sensors", sensors),
    Page("alarms", alarms_page),
    Page("events", events_page),
    Page("network", network),
    Page("version", version),
)
"""The status pages in UP/DOWN order; the first is the home screen."""


# ---------------------------------------------------------------- dialog screens

def menu_screen(items: Sequence[str], selected: int) -> Screen:
    """The action menu with ``selected`` highlighted."""
    return Screen(title="Menu", lines=tuple(items), kind="menu", highlight=selected)


def confirm_screen(question: str, detail: str, choice: int, note: str | None = None) -> Screen:
    """"Promote pbx-a?" with No/Yes; ``choice`` 0 is No (the default)."""
    lines = (detail,) + ((note,) if note else ())
    return Screen(title=question, lines=lines, kind="confirm", choices=("No", "Yes"), choice=choice,
                  tone="warning" if note else "normal")


def hold_screen(label: str, remaining_s: float, progress: float) -> Screen:
    """The hold-to-confirm countdown: keep ENTER down until the bar is full."""
    seconds = max(0, math.ceil(remaining_s - 1e-9))
    return Screen(title=f"{label}: hold ENTER", lines=(f"hold {seconds} s more", "release to cancel"),
                  kind="hold", progress=max(0.0, min(1.0, progress)), tone="warning")


def working_screen(label: str) -> Screen:
    """A command was sent and the daemon has not answered yet."""
    return Screen(title=label, lines=("working…",), kind="working")


def result_screen(label: str, ok: bool, message: str) -> Screen:
    """The daemon's answer: done, or its refusal reason."""
    return Screen(title=f"{label}: {'done' if ok else 'refused'}", lines=(message or DASH,), kind="result",
                  wrap=True, tone="ok" if ok else "error")


def pin_screen(digits: Sequence[int], position: int, length: int, message: str | None = None) -> Screen:
    """PIN entry: digits entered so far as ``*``, the current one shown, the rest ``_``."""
    cells = ["*" if i < position else str(digits[i]) if i == position else "_" for i in range(length)]
    hints = (message,) if message else ("UP/DOWN: digit", "ENTER: next digit")
    return Screen(title="Enter PIN", lines=(" ".join(cells), *hints), kind="pin",
                  tone="error" if message else "normal")


def lockout_screen(remaining_s: float, failures: int) -> Screen:
    """Too many wrong PINs: how long until the next try."""
    whole = max(0, math.ceil(remaining_s))
    return Screen(title="Panel locked", lines=(f"{failures} wrong PINs", f"try again in {whole // 60}:{whole % 60:02d}"),
                  kind="lockout", tone="error")


def message_screen(title: str, lines: Sequence[str], tone: Tone = "normal") -> Screen:
    """A short notice ("view only …", "panel locked") until a key or a timeout."""
    return Screen(title=title, lines=tuple(lines), kind="message", wrap=True, tone=tone)


def alarm_screen(alarms: Sequence[str]) -> Screen:
    """The alarm overlay: every unsilenced alarm, above whatever else was showing."""
    return Screen(title=f"ALARM ({len(alarms)})", title_right="", lines=tuple(alarms), kind="alarm",
                  wrap=True, alarm=True, alarm_count=len(alarms), tone="error")
