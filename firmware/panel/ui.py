"""The panel's brain: pages, menu, confirmation, hold-to-confirm, PIN, alarms, timeouts.

`PanelUi` is a pure state machine. It does no I/O, starts no threads and reads
no clock: every call takes ``now`` (``time.monotonic()`` in the runner), and
what it wants done comes back as effects:

- `RunCommand` — send this command to the daemon (the runner does it on a
  worker and reports back with `PanelUi.command_result`);
- `SetBacklight` — the backlight level changed. `PanelUi.backlight` answers
  the same question as a query; the effects are emitted only on a change.

The runner's loop is: for each input `handle_key`; then `tick`; then
`screen` (which also records the status it was given, so the next key acts on
what the operator saw: the alarm overlay, the menu labels, the page length);
`indicators` for the LEDs and buzzer; `next_change` to know how soon to look
again without input.

Behaviour in brief:

- UP/DOWN scroll a long page and then move to the next/previous page
  (wrapping); LEFT/RIGHT move by page; BACK goes home; ENTER opens the menu.
- Every command is confirmed on a No/Yes screen that starts on No, except
  "Silence alarm" (harmless and urgent). Promote, demote, shutdown and reboot
  also need ENTER held for ``hold_confirm_s`` with a countdown; releasing
  early cancels. Then "working…", then the daemon's answer until a key or
  ``result_s``.
- With a PIN (``pin_hash``, the SHA-256 hex of the digits), the menu opens
  only after the PIN is entered. Three wrong PINs are free; then each wrong
  PIN locks the panel for 30 s, 60 s, … up to 15 min. The panel relocks after
  ``relock_s`` without a key press, or from the menu's "Lock panel".
- ``view_only``: ENTER explains that control is disabled; no command is ever
  produced.
- "Factory reset" (offered by an appliance, ``factory_reset`` in the status) is in
  the menu only when the panel has a PIN; it asks for the PIN again, even on
  an unlocked panel, then for Yes and the hold.
- An unpaired box (``setup`` in the status, `tandem setup`) shows UNPAIRED and
  offers "Pair with peer"; when both panels show the pairing code, the panel
  asks on its own whether the other box shows the same (Yes or No are both
  answers; either is sent).
- Unsilenced alarms take over the screen (any key acknowledges them until a
  new alarm arrives), force the backlight on and blink it at 1 Hz between
  full and the dim level (off by default), blink the fault LED and sound the buzzer.
- The backlight dims after ``backlight_timeout_s`` without a key; the key
  that wakes it does nothing else. Menus and dialogs fall back to the home
  page after ``menu_timeout_s`` without a key, and so does any other page
  unless page rotation (``page_rotation_s``) is on.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from enum import Enum, auto
from typing import Any

from firmware.panel import screens
from firmware.panel.base import Blink, Key, KeyEvent
from firmware.panel.netedit import CANCEL, NetworkEditor
from firmware.panel.screens import Screen

__all__ = [
    "COMMANDS", "DANGEROUS", "Effect", "PanelOptions", "PanelUi", "Report", "RunCommand", "SetBacklight", "lockout_delay",
]

COMMANDS: tuple[str, ...] = ("promote", "demote", "poweroff", "reboot", "maintenance-on", "maintenance-off",
                             "alarm-silence", "network-undo", "pair-start", "pair-cancel", "pair-confirm",
                             "pair-reject", "factory-reset", "network-set", "setup-shared-ip")
"""Every command the panel can send (as ``{"cmd": …, "source": "panel"}``)."""

DANGEROUS = frozenset({"promote", "demote", "poweroff", "reboot", "network-undo", "factory-reset", "network-set"})
"""Commands that need hold-to-confirm."""

FREE_PIN_ATTEMPTS = 3
LOCKOUT_FIRST_S = 30.0
LOCKOUT_MAX_S = 900.0


def lockout_delay(failures: int) -> float:
    """Seconds the panel stays locked after ``failures`` consecutive wrong PINs."""
    if failures <= FREE_PIN_ATTEMPTS:
        return 0.0
    return min(LOCKOUT_FIRST_S * 2 ** (failures - FREE_PIN_ATTEMPTS - 1), LOCKOUT_MAX_S)


@dataclass(frozen=True)
class PanelOptions:
    """How the panel behaves (from the node config's ``[panel]`` section)."""

    view_only: bool = False
    """Show status only; the menu never opens and no command is ever sent."""
    pin_hash: str | None = None
    """SHA-256 hex digest of the PIN's digits, or None for no PIN (no PIN ships by default)."""
    pin_length: int = 4
    """Digits in the PIN (the hash does not tell)."""
    relock_s: float = 120.0
    backlight_timeout_s: float = 60.0
    menu_timeout_s: float = 30.0
    hold_confirm_s: float = 3.0
    page_rotation_s: float | None = None
    """Advance the page every so many seconds while idle; None (default) for off."""
    refresh_s: float = 1.0
    """How often the runner fetches the status without being notified."""
    result_s: float = 10.0
    """How long a command's result or a notice stays up without a key."""
    backlight_level: int = 100
    backlight_dim_level: int = 0

    def __post_init__(self) -> None:
        if self.pin_hash is not None:
            digest = self.pin_hash.strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("pin_hash must be a SHA-256 hex digest (64 hex digits) or None")
            object.__setattr__(self, "pin_hash", digest)
        if not 1 <= self.pin_length <= 12:
            raise ValueError("pin_length must be 1-12")
        for name in ("relock_s", "backlight_timeout_s", "menu_timeout_s", "hold_confirm_s", "refresh_s", "result_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        if self.page_rotation_s is not None and not self.page_rotation_s > 0:
            raise ValueError("page_rotation_s must be more than 0 or None")
        for name in ("backlight_level", "backlight_dim_level"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be 0-100")


@dataclass(frozen=True)
class RunCommand:
    """Send ``cmd`` (with ``params``) to the daemon with source "panel"; report back with `PanelUi.command_result`."""

    cmd: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetBacklight:
    """Set the display's backlight to ``level`` (0–100)."""

    level: int


@dataclass(frozen=True)
class Report:
    """Something the daemon should journal as coming from the panel (PIN accepted or wrong, locked)."""

    event: str
    detail: str = ""


Effect = RunCommand | SetBacklight | Report


class _Mode(Enum):
    PAGES = auto()
    MENU = auto()
    CONFIRM = auto()
    HOLD = auto()
    WORKING = auto()
    RESULT = auto()
    PIN = auto()
    MESSAGE = auto()
    NETWORK = auto()


_LABELS = {"promote": "Promote", "demote": "Demote", "poweroff": "Shutdown", "reboot": "Reboot",
           "maintenance-on": "Maintenance on", "maintenance-off": "Maintenance off",
           "alarm-silence": "Silence alarm", "network-undo": "Network undo", "pair-start": "Pair",
           "pair-cancel": "Cancel pairing", "pair-confirm": "Code same", "pair-reject": "Code differs",
           "factory-reset": "Factory reset", "network-set": "Network set", "setup-shared-ip": "Shared IP"}
_QUESTIONS = {
    "promote": ("Promote {node}?", "take over the calls"),
    "demote": ("Demote {node}?", "hand calls to {peer}"),
    "poweroff": ("Shut down {node}?", "power off this box"),
    "reboot": ("Reboot {node}?", "restart this box"),
    "maintenance-on": ("Maintenance on?", "{node} won't take over"),
    "maintenance-off": ("Maintenance off?", "{node} may take over"),
    "network-undo": ("Undo network change?", "ports as before it"),
    "pair-start": ("Pair {as}?", "start it on both"),
    "setup-shared-ip": ("Shared IP {setting}?", "on {port}, both boxes"),
    "pair-cancel": ("Cancel pairing?", "nothing is written"),
    "pair-confirm": ("Code {code}", "same on other box?"),
    "factory-reset": ("Factory reset {node}?", "wipes keys+data, reboots"),
    "network-set": ("Set {port}?", "{setting}"),
}
_WITH_PARAMS = frozenset({"network-set", "setup-shared-ip", "pair-start"})
"""Commands sent with the parameters the dialog before them gathered."""
_MENU_TIMED = (_Mode.MENU, _Mode.CONFIRM, _Mode.PIN, _Mode.NETWORK)


class PanelUi:
    """The front panel's state machine (see the module docstring)."""

    def __init__(self, options: PanelOptions, now: float, body_rows: int = 3, tz: tzinfo | None = None) -> None:
        """``body_rows``: lines a page shows under its title (3 on a 20×4 module, 1 on 16×2), the
        step UP/DOWN scroll by; ``tz``: time zone for event times (None: local time)."""
        self.options = options
        self.body_rows = max(1, body_rows)
        self.tz = tz
        self._mode = _Mode.PAGES
        self._page = 0
        self._scroll = 0
        self._page_lines = 0
        self._menu_index = 0
        self._pending: str | None = None
        self._choice = 0
        self._note: str | None = None
        self._hold_start = 0.0
        self._result: tuple[str, bool, str] = ("", True, "")
        self._message: Screen | None = None
        self._shown_at = now
        self._last_key = now
        self._lit_at = now
        self._last_rotation = now
        self._swallow: Key | None = None
        self._backlight_sent: int | None = None
        # PIN
        self._unlocked = options.pin_hash is None
        self._reports: list[Report] = []
        self._digits = [0] * options.pin_length
        self._position = 0
        self._pin_message: str | None = None
        self._failures = 0
        self._locked_until = -math.inf
        # What the last status said
        self._alarms: list[str] = []
        self._alarm_keys: frozenset[str] = frozenset()
        self._alarm_active = False
        self._acked: frozenset[str] = frozenset()
        self._overlay = False
        self._node = "-"
        self._peer = "-"
        self._maintenance = False
        self._network_undo = False  # the appliance extension offers `network-undo` (mgmt_network.undo)
        self._setup_phase: str | None = None  # an unpaired box (`tandem setup`): its pairing's phase
        self._code = "-"
        self._code_asked: str | None = None  # the pairing code the operator was last asked about
        self._factory_reset = False  # the appliance extension offers `factory-reset`
        self._net_ports: list[str] = []  # the box's own ports (mgmt_network.choices): "Network set"
        self._net_settings: Mapping[str, Any] = {}
        self._net: NetworkEditor | None = None
        self._params: dict[str, Any] = {}  # the pending command's parameters ("Network set")
        self._pin_for: str | None = None  # a command that asks for the PIN again before its Yes

    # ------------------------------------------------------------------ queries

    @property
    def unlocked(self) -> bool:
        """Whether the menu opens without a PIN right now."""
        return self._unlocked

    @property
    def mode(self) -> str:
        """The current mode's name in lower case (pages, menu, confirm, hold, working, result, pin, message)."""
        return self._mode.name.lower()

    @property
    def page(self) -> str:
        """The name of the status page shown in pages mode."""
        return screens.PAGES[self._page].name

    def backlight(self, now: float) -> int:
        """The backlight level the display should have at ``now``."""
        opts = self.options
        if self._alarm_active:
            # Off in the low half: many backlights (a PCF8574 backpack bit) are only on or off.
            return opts.backlight_level if now % 1.0 < 0.5 else opts.backlight_dim_level
        if self._is_dark(now):
            return opts.backlight_dim_level
        return opts.backlight_level

    def indicators(self, status: Mapping[str, Any] | None, now: float) -> tuple[Blink, Blink, bool]:
        """(role LED, fault LED, buzzer) for ``status``.

        Role: on when ACTIVE, slow when STANDBY, fast during TAKEOVER/RELEASING,
        otherwise off. Fault: fast while alarms are unsilenced, on while they
        are silenced, otherwise off. Buzzer: while alarms are unsilenced.
        """
        status = status or {}
        role: Blink = {"ACTIVE": "on", "STANDBY": "slow", "TAKEOVER": "fast",
                       "RELEASING": "fast"}.get(str(status.get("state")), "off")  # type: ignore[assignment]
        alarms = status.get("alarms") if isinstance(status.get("alarms"), list) else []
        silenced = bool(status.get("alarm_silenced", False))
        fault: Blink = "off" if not alarms else "on" if silenced else "fast"
        return role, fault, bool(alarms) and not silenced

    def next_change(self, now: float) -> float | None:
        """Seconds until the screen, backlight or state may change without any input (None: never)."""
        opts, idle = self.options, now - self._last_key
        soon: list[float] = []
        if self._mode is _Mode.HOLD:
            soon.append(0.05)
        if self._alarm_active:
            soon.append(0.5 - now % 0.5)
        if self._mode is _Mode.PIN and now < self._locked_until:
            soon.append((self._locked_until - now) % 1.0 or 1.0)
        soon.append(self._lit_at_or_key() + opts.backlight_timeout_s - now)
        if self._mode in _MENU_TIMED or (self._mode is _Mode.PAGES and self._page != 0 and not opts.page_rotation_s):
            soon.append(opts.menu_timeout_s - idle)
        if opts.pin_hash and self._unlocked:
            soon.append(opts.relock_s - idle)
        if self._mode in (_Mode.RESULT, _Mode.MESSAGE):
            soon.append(self._shown_at + opts.result_s - now)
        if opts.page_rotation_s and self._mode is _Mode.PAGES:
            soon.append(max(self._last_key, self._last_rotation) + opts.page_rotation_s - now)
        future = [s for s in soon if s > 0]
        return min(future) if future else None

    # ------------------------------------------------------------------ inputs

    def observe(self, status: Mapping[str, Any] | None, now: float) -> None:
        """Take in a status snapshot (`screen` does this itself)."""
        status = status if isinstance(status, Mapping) else {}
        self._alarms = screens.alarm_texts(status)
        self._alarm_keys = screens.alarm_keys(status)
        self._alarm_active = bool(self._alarms) and not bool(status.get("alarm_silenced", False))
        keys = self._alarm_keys
        if not self._alarm_active:
            self._acked = frozenset()
        overlay = self._alarm_active and not keys <= self._acked
        if overlay and not self._overlay and self._mode is _Mode.HOLD:
            self._cancel_hold("cancelled: alarm")  # the operator's attention just moved
        self._overlay = overlay
        self._node = str(status.get("node") or "-")
        peer = status.get("peer")
        self._peer = str(peer.get("name") or "-") if isinstance(peer, Mapping) else "-"
        self._maintenance = bool(status.get("maintenance", False))
        network = status.get("mgmt_network")
        self._network_undo = isinstance(network, Mapping) and network.get("undo") is True
        choices = network.get("choices") if isinstance(network, Mapping) else None
        self._net_ports = [str(port) for port in choices] if isinstance(choices, list) else []
        settings = network.get("settings") if isinstance(network, Mapping) else None
        self._net_settings = settings if isinstance(settings, Mapping) else {}
        self._factory_reset = status.get("factory_reset") is True
        setup = status.get("setup")
        self._setup_phase = str(setup.get("phase")) if isinstance(setup, Mapping) else None
        self._code = str(setup.get("code") or "-") if isinstance(setup, Mapping) else "-"
        if self._setup_phase == "code" and self._code != self._code_asked and \
                self._mode in (_Mode.PAGES, _Mode.MENU, _Mode.RESULT, _Mode.MESSAGE):
            self._ask_code()  # both panels show the code: the operator compares it now
        elif self._mode is _Mode.CONFIRM and self._pending == "pair-confirm" and self._setup_phase != "code":
            self._go_home()  # the question is moot (the other box said No, or the cable failed): show why

    def _ask_code(self) -> None:
        self._code_asked = self._code
        self._mode, self._pending, self._choice, self._note = _Mode.CONFIRM, "pair-confirm", 0, None

    def handle_key(self, event: KeyEvent, now: float) -> list[Effect]:
        """One key event (press, release or hold) at ``now``."""
        return self._handle_key(event, now) + self._drain_reports()

    def _report(self, event: str, detail: str = "") -> None:
        self._reports.append(Report(event, detail))

    def _drain_reports(self) -> list[Effect]:
        reports, self._reports = self._reports, []
        return list(reports)

    def _handle_key(self, event: KeyEvent, now: float) -> list[Effect]:
        if event.action == "release":
            # Judged by when the key came up, before letting the clock finish the hold.
            if (self._mode is _Mode.HOLD and event.key is Key.ENTER
                    and min(event.at, now) < self._hold_start + self.options.hold_confirm_s):
                self._cancel_hold("cancelled")  # whatever else was pending: an early release never confirms
            if self._swallow is event.key:
                self._swallow = None
            return self._expire(now) + self._backlight_effects(now)
        effects = self._expire(now)
        if event.action != "press":
            return effects  # sources' own "held" events: the hold is timed here
        woke = self._is_dark(now)
        self._last_key = self._last_rotation = now
        if woke or self._overlay:
            if self._overlay:  # acknowledged: viewable until a new alarm arrives
                self._acked = self._alarm_keys
                self._overlay = False
            self._swallow = event.key
            return effects + self._backlight_effects(now)
        effects += self._dispatch(event, now)
        return effects + self._backlight_effects(now)

    def tick(self, now: float) -> list[Effect]:
        """Let time pass: timeouts, relock, the end of a hold (which sends its command), backlight."""
        return self._expire(now) + self._backlight_effects(now) + self._drain_reports()

    def command_result(self, cmd: str, ok: bool, message: str, now: float) -> None:
        """The daemon's answer to a `RunCommand`: shown until a key or ``result_s``."""
        self._mode = _Mode.RESULT
        self._result = (_LABELS.get(cmd, cmd), ok, message)
        self._shown_at = self._lit_at = now
        self._pending = None

    # ------------------------------------------------------------------ the screen

    def screen(self, status: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]], now: float,
               error: str | None = None) -> Screen:
        """What to show now. ``status`` None (with ``error``) means the daemon did not answer."""
        self.observe(status, now)
        if self._overlay:
            return screens.alarm_screen(self._alarms)
        mode = self._mode
        if mode is _Mode.PAGES:
            return self._page_screen(status, events, error)
        if mode is _Mode.MENU:
            return screens.menu_screen([label for label, _ in self._menu_items()], self._menu_index)
        if mode is _Mode.CONFIRM:
            question, detail = self._question()
            return screens.confirm_screen(question, detail, self._choice, self._note)
        if mode is _Mode.HOLD:
            held = now - self._hold_start
            hold = self.options.hold_confirm_s
            return screens.hold_screen(self._label(), hold - held, held / hold)
        if mode is _Mode.WORKING:
            return screens.working_screen(self._label())
        if mode is _Mode.RESULT:
            label, ok, message = self._result
            return screens.result_screen(label, ok, message)
        if mode is _Mode.NETWORK and self._net is not None:
            return self._net.screen()
        if mode is _Mode.PIN:
            if now < self._locked_until:
                return screens.lockout_screen(self._locked_until - now, self._failures)
            return screens.pin_screen(self._digits, self._position, self.options.pin_length, self._pin_message)
        assert self._message is not None
        return self._message

    def _page_screen(self, status: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]],
                     error: str | None) -> Screen:
        page = screens.PAGES[self._page]
        if status is None and page.name == "home":
            screen = Screen(title="tandem", lines=("daemon not answering", error or "-"), wrap=True, tone="error")
        else:
            screen = page.build(status or {}, events, self.tz)
        self._page_lines = len(screen.lines)
        self._scroll = min(self._scroll, max(0, self._page_lines - 1))
        right = screen.title_right if page.name == "home" else f"{self._page + 1}/{len(screens.PAGES)}"
        return replace(screen, scroll=self._scroll, title_right=right)

    # ------------------------------------------------------------------ internals

    def _label(self) -> str:
        return _LABELS.get(self._pending or "", self._pending or "-")

    def _question(self) -> tuple[str, str]:
        question, detail = _QUESTIONS.get(self._pending or "", ("{cmd}?", ""))
        values = {"node": self._node, "peer": self._peer, "cmd": self._pending, "code": self._code,
                  "port": self._params.get("port", "-"),
                  "setting": "DHCP" if self._params.get("dhcp") else str(self._params.get("address")),
                  "as": "as primary" if self._params.get("primary") else "with peer"}
        return question.format(**values), detail.format(**values)

    def _menu_items(self) -> list[tuple[str, str]]:
        items = self._setup_items() if self._setup_phase is not None else self._cluster_items()
        if self._net_ports:
            items.append(("Network set", "network-set"))
        if self._network_undo:
            items.append(("Network undo", "network-undo"))
        if self.options.pin_hash and self._factory_reset:  # never without a PIN to ask again
            items.append(("Factory reset", "factory-reset"))
        if self.options.pin_hash:
            items.append(("Lock panel", "lock"))
        items.append(("Back", "back"))
        return items

    def _cluster_items(self) -> list[tuple[str, str]]:
        maintenance = ("Maintenance off", "maintenance-off") if self._maintenance else ("Maintenance on",
                                                                                        "maintenance-on")
        return [("Promote", "promote"), ("Demote", "demote"), ("Shutdown", "poweroff"), ("Reboot", "reboot"),
                maintenance, ("Silence alarm", "alarm-silence")]

    def _setup_items(self) -> list[tuple[str, str]]:
        """An unpaired box's menu: pair (or compare the code again, or cancel)."""
        phase = self._setup_phase
        items = []
        if phase in ("idle", "failed"):
            items += [("Pair with peer", "pair-start"), ("Pair as primary", "pair-primary"),
                      ("Shared IP", "setup-shared-ip")]
        if phase == "code":
            items.append(("Compare code", "compare"))
        if phase in ("waiting", "code", "confirmed"):
            items.append(("Cancel pairing", "pair-cancel"))
        return items

    def _lit_at_or_key(self) -> float:
        return max(self._last_key, self._lit_at)

    def _is_dark(self, now: float) -> bool:
        return not self._alarm_active and now - self._lit_at_or_key() >= self.options.backlight_timeout_s

    def _backlight_effects(self, now: float) -> list[Effect]:
        level = self.backlight(now)
        if level == self._backlight_sent:
            return []
        self._backlight_sent = level
        return [SetBacklight(level)]

    def _expire(self, now: float) -> list[Effect]:
        opts, idle = self.options, now - self._last_key
        effects: list[Effect] = []
        if self._mode is _Mode.HOLD and now >= self._hold_start + opts.hold_confirm_s:
            effects += self._send(self._pending or "", now)
        if opts.pin_hash and self._unlocked and idle >= opts.relock_s:
            self._unlocked = False
            self._report("panel.locked", f"no key for {opts.relock_s:g} s")
            if self._mode in (_Mode.MENU, _Mode.CONFIRM):
                self._go_home()
        dialog_expired = self._mode in _MENU_TIMED and idle >= opts.menu_timeout_s
        notice_expired = (self._mode in (_Mode.RESULT, _Mode.MESSAGE)
                          and now - max(self._shown_at, self._last_key) >= opts.result_s)
        if dialog_expired or notice_expired:
            self._go_home()
        elif self._mode is _Mode.PAGES and not self._overlay:
            if opts.page_rotation_s:
                if now - max(self._last_key, self._last_rotation) >= opts.page_rotation_s:
                    self._page, self._scroll = (self._page + 1) % len(screens.PAGES), 0
                    self._last_rotation = now
            elif self._page != 0 and idle >= opts.menu_timeout_s:
                self._go_home()
        return effects

    def _go_home(self) -> None:
        self._mode, self._page, self._scroll = _Mode.PAGES, 0, 0
        self._pending, self._note, self._pin_for = None, None, None

    def _cancel_hold(self, note: str) -> None:
        self._mode, self._choice, self._note = _Mode.CONFIRM, 0, note

    def _send(self, cmd: str, now: float) -> list[Effect]:
        if self.options.view_only or cmd not in COMMANDS:
            self._go_home()
            return []
        self._mode, self._pending = _Mode.WORKING, cmd
        return [RunCommand(cmd, dict(self._params) if cmd in _WITH_PARAMS else {})]

    def _show_message(self, title: str, lines: Sequence[str], now: float, tone: screens.Tone = "normal") -> None:
        self._mode = _Mode.MESSAGE
        self._message = screens.message_screen(title, lines, tone)
        self._shown_at = now

    def _dispatch(self, event: KeyEvent, now: float) -> list[Effect]:
        handler = {
            _Mode.PAGES: self._on_pages, _Mode.MENU: self._on_menu, _Mode.CONFIRM: self._on_confirm,
            _Mode.HOLD: self._on_hold, _Mode.PIN: self._on_pin, _Mode.NETWORK: self._on_network,
        }.get(self._mode)
        if handler is not None:
            return handler(event, now)
        if self._mode in (_Mode.RESULT, _Mode.MESSAGE):
            self._mode = _Mode.PAGES  # dismissed; stay on the page that was showing
            self._scroll = 0
        return []  # WORKING: wait for the answer

    def _on_pages(self, event: KeyEvent, now: float) -> list[Effect]:
        key, pages = event.key, len(screens.PAGES)
        if key is Key.DOWN:
            if self._scroll + self.body_rows < self._page_lines:
                self._scroll += self.body_rows
            else:
                self._page, self._scroll = (self._page + 1) % pages, 0
        elif key is Key.UP:
            if self._scroll > 0:
                self._scroll = max(0, self._scroll - self.body_rows)
            else:
                self._page, self._scroll = (self._page - 1) % pages, 0
        elif key in (Key.LEFT, Key.RIGHT):
            self._page = (self._page + (1 if key is Key.RIGHT else -1)) % pages
            self._scroll = 0
        elif key is Key.BACK:
            self._page, self._scroll = 0, 0
        elif key is Key.ENTER:
            self._open_menu(now)
        return []

    def _open_menu(self, now: float) -> None:
        if self.options.view_only:
            self._show_message("View only", ["panel control disabled by config"], now)
        elif not self._unlocked:
            self._mode, self._digits, self._position = _Mode.PIN, [0] * self.options.pin_length, 0
            self._pin_message, self._pin_for = None, None
        else:
            self._mode, self._menu_index = _Mode.MENU, 0

    def _on_menu(self, event: KeyEvent, now: float) -> list[Effect]:
        items = self._menu_items()
        key = event.key
        if key in (Key.UP, Key.DOWN):
            self._menu_index = (self._menu_index + (1 if key is Key.DOWN else -1)) % len(items)
        elif key in (Key.BACK, Key.LEFT):
            self._mode = _Mode.PAGES
        elif key in (Key.ENTER, Key.RIGHT):
            action = items[min(self._menu_index, len(items) - 1)][1]
            if action == "back":
                self._mode = _Mode.PAGES
            elif action == "lock":
                self._unlocked = False
                self._report("panel.locked", "Lock panel from the menu")
                self._show_message("Panel locked", ["PIN needed for the menu"], now)
            elif action == "alarm-silence":
                self._pending = action
                return self._send(action, now)
            elif action == "compare":
                self._ask_code()
            elif action in ("network-set", "setup-shared-ip"):
                self._mode, self._pending = _Mode.NETWORK, action
                self._net = NetworkEditor(self._net_ports, self._net_settings, shared_ip=action == "setup-shared-ip")
            elif action in ("pair-start", "pair-primary"):
                self._params = {"primary": action == "pair-primary"}
                self._mode, self._pending, self._choice, self._note = _Mode.CONFIRM, "pair-start", 0, None
            elif action == "factory-reset":
                self._pin_for = action
                self._mode, self._digits, self._position = _Mode.PIN, [0] * self.options.pin_length, 0
                self._pin_message = "PIN again to reset"
            else:
                self._mode, self._pending, self._choice, self._note = _Mode.CONFIRM, action, 0, None
        return []

    def _on_confirm(self, event: KeyEvent, now: float) -> list[Effect]:
        key = event.key
        if key in (Key.UP, Key.DOWN, Key.LEFT, Key.RIGHT):
            self._choice, self._note = 1 - self._choice, None
        elif key is Key.BACK:
            self._mode = _Mode.MENU
        elif key is Key.ENTER:
            if self._pending == "pair-confirm":  # No is an answer too: the codes differ, both boxes stop
                return self._send("pair-confirm" if self._choice == 1 else "pair-reject", now)
            if self._choice == 0:
                self._mode, self._pending = _Mode.MENU, None
            elif self._pending in DANGEROUS:
                self._mode, self._hold_start = _Mode.HOLD, min(event.at, now)
            else:
                return self._send(self._pending or "", now)
        return []

    def _on_network(self, event: KeyEvent, now: float) -> list[Effect]:
        assert self._net is not None
        outcome = self._net.key(event.key)
        if outcome == CANCEL:
            self._mode, self._net = _Mode.MENU, None
        elif isinstance(outcome, dict):
            self._params, self._net = outcome, None
            self._mode, self._choice, self._note = _Mode.CONFIRM, 0, None  # _pending: network-set or shared IP
        return []

    def _on_hold(self, event: KeyEvent, now: float) -> list[Effect]:
        if event.key is not Key.ENTER:  # any other key aborts
            self._cancel_hold("cancelled")
        return []

    def _on_pin(self, event: KeyEvent, now: float) -> list[Effect]:
        key = event.key
        if now < self._locked_until:
            if key in (Key.BACK, Key.LEFT):
                self._go_home()
            return []
        if key in (Key.UP, Key.DOWN):
            step = 1 if key is Key.UP else -1
            self._digits[self._position] = (self._digits[self._position] + step) % 10
            self._pin_message = None
        elif key in (Key.BACK, Key.LEFT):
            if self._position == 0:
                self._go_home()
            else:
                self._position -= 1
        elif key in (Key.ENTER, Key.RIGHT):
            if self._position < self.options.pin_length - 1:
                self._position += 1
                self._digits[self._position] = 0
            else:
                self._check_pin(now)
        return []

    def _check_pin(self, now: float) -> None:
        entered = hashlib.sha256("".join(map(str, self._digits)).encode()).hexdigest()
        self._digits, self._position = [0] * self.options.pin_length, 0
        if hmac.compare_digest(entered, self.options.pin_hash or ""):
            self._unlocked, self._failures, self._pin_message = True, 0, None
            if self._pin_for is not None:  # the PIN asked again for one command: on to its Yes
                self._mode, self._pending, self._choice, self._note = _Mode.CONFIRM, self._pin_for, 0, None
                self._pin_for = None
            else:
                self._mode, self._menu_index = _Mode.MENU, 0
            self._report("pin.accepted")
            return
        self._failures += 1
        delay = lockout_delay(self._failures)
        self._locked_until = now + delay if delay else -math.inf
        self._pin_message = "wrong PIN"
        self._report("pin.wrong", f"{self._failures} wrong in a row"
                     + (f"; locked for {delay:g} s" if delay else ""))
