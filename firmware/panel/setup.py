"""Building the front panel a board profile names, wired to the daemon's control socket."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from firmware.config import Config
from firmware.core.control import request, stream
from firmware.drivers import load_driver
from firmware.panel.runner import PanelRunner
from firmware.panel.ui import PanelOptions

CONTROL_TIMEOUT_S = 5.0  # a status fetch; commands wait longer (a promote waits for the handover)
COMMAND_TIMEOUT_S = 120.0
RECENT_EVENTS = 20


def _control(socket: Path, payload: dict[str, Any]) -> Any:
    """One request as the panel makes it: quick for status, patient for commands."""
    timeout = CONTROL_TIMEOUT_S if payload.get("cmd") == "status" else COMMAND_TIMEOUT_S
    return request(socket, payload, timeout)


def _events(socket: Path, since: int) -> list[dict[str, Any]]:
    """Journal records after ``since`` (only the newest few the first time)."""
    payload = {"cmd": "events", "since": since, "last": RECENT_EVENTS}
    return [item["event"] for item in stream(socket, payload, timeout=CONTROL_TIMEOUT_S)]


def panel_options(config: Config) -> PanelOptions:
    """The panel's behaviour from the node config's ``[panel]`` section."""
    panel = config.node.panel
    return PanelOptions(view_only=panel.view_only, pin_hash=panel.pin_sha256, pin_length=panel.pin_length,
                        relock_s=panel.relock_s, backlight_timeout_s=panel.backlight_timeout_s,
                        menu_timeout_s=panel.menu_timeout_s, hold_confirm_s=panel.hold_confirm_s)


def open_panel(config: Config, socket: Path) -> PanelRunner | None:
    """The board's panel (not yet started), or None when it has none or the node config disables it.

    Every driver that cannot be opened is a ConfigError naming its profile key
    (``panel.display.driver``, ``panel.keys.<name>.driver``, ``panel.indicators.driver``).
    """
    profile = config.board.panel
    if profile is None or not config.node.panel.enabled:
        return None
    options = panel_options(config)  # before any driver is opened: nothing to close if it is wrong
    where = config.board_path
    opened: list[Any] = []
    try:
        display = load_driver(profile.display.driver, "panel.display.driver", where, **profile.display.kwargs)
        opened.append(display)
        keys = []
        for name, table in profile.keys.items():
            keys.append(load_driver(table.driver, f"panel.keys.{name}.driver", where, **table.kwargs))
            opened.append(keys[-1])
        indicators = None
        if profile.indicators is not None:
            indicators = load_driver(profile.indicators.driver, "panel.indicators.driver", where,
                                     **profile.indicators.kwargs)
    except Exception:
        for driver in reversed(opened):
            driver.close()
        raise
    return PanelRunner(display, keys, indicators, functools.partial(_control, socket), options,
                       events=functools.partial(_events, socket))
