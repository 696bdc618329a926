"""Building the front panel a board profile names, and the control commands it answers.

The panel runs in the daemon's process and talks to it in-process (a
:class:`~firmware.core.endpoints.LocalClient`), through the same command path
as the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from firmware.config import Config, PanelProfile
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, LocalClient, Params
from firmware.core.journal import Journal
from firmware.drivers import load_driver
from firmware.panel.runner import Control, EventsFetcher, PanelRunner
from firmware.panel.ui import PanelOptions

CONTROL_TIMEOUT_S = 5.0  # a status fetch; commands wait longer (a promote waits for the handover)
COMMAND_TIMEOUT_S = 120.0
RECENT_EVENTS = 20
PANEL_REPORTS = ("pin.accepted", "pin.wrong", "panel.locked")


def _control(client: LocalClient, payload: dict[str, Any]) -> Any:
    """One request as the panel makes it: quick for status, patient for commands."""
    timeout = CONTROL_TIMEOUT_S if payload.get("cmd") == "status" else COMMAND_TIMEOUT_S
    return client.request(payload, timeout)


def _events(client: LocalClient, since: int) -> list[dict[str, Any]]:
    """Journal records after ``since`` (only the newest few the first time)."""
    payload = {"cmd": "events", "since": since, "last": RECENT_EVENTS}
    return [item["event"] for item in client.stream(payload, timeout=CONTROL_TIMEOUT_S)]


def panel_options(config: Config) -> PanelOptions:
    """The panel's behaviour from the node config's ``[panel]`` section."""
    panel = config.node.panel
    return PanelOptions(view_only=panel.view_only, pin_hash=panel.pin_sha256, pin_length=panel.pin_length,
                        relock_s=panel.relock_s, backlight_timeout_s=panel.backlight_timeout_s,
                        menu_timeout_s=panel.menu_timeout_s, hold_confirm_s=panel.hold_confirm_s)


def open_panel(config: Config, client: LocalClient) -> PanelRunner | None:
    """The board's panel (not yet started), or None when it has none or the node config disables it.

    Every driver that cannot be opened is a ConfigError naming its profile key
    (``panel.display.driver``, ``panel.keys.<name>.driver``, ``panel.indicators.driver``).
    """
    profile = config.board.panel
    if profile is None or not config.node.panel.enabled:
        return None
    options = panel_options(config)  # before any driver is opened: nothing to close if it is wrong
    return open_board_panel(profile, config.board_path, options, functools.partial(_control, client),
                            functools.partial(_events, client))


def open_board_panel(profile: PanelProfile, where: Path, options: PanelOptions, control: Control,
                     events: EventsFetcher | None = None) -> PanelRunner:
    """The panel a board profile describes (not yet started), talking through `control`.

    `open_panel` for the daemon; `tandem setup` (an unpaired box, no node config) calls it directly.
    """
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
    return PanelRunner(display, keys, indicators, control, options, events=events)


def register_panel_commands(endpoints: Endpoints, panel: PanelRunner | None, journal: Journal) -> None:
    """``panel.frame`` (what the panel shows, as text and PNG) and ``panel.report`` (what happened at it)."""

    async def frame(request: dict[str, Any]) -> dict[str, Any]:
        if panel is None:
            raise ControlError("this node has no front panel (none in the board profile, or [panel] enabled = false)")
        shown: dict[str, Any] = {"text": panel.frame_text()}
        if request["png"]:
            shown["png"] = base64.b64encode(await asyncio.to_thread(panel.frame_png)).decode()
        return shown

    def report(request: dict[str, Any]) -> str:
        # The panel journals what happened at it (PIN attempts, locking).
        event = request["event"]
        if event not in PANEL_REPORTS:
            raise ControlError(f"panel.report: unknown event {event!r}")
        journal.record("panel", {"event": event, "detail": request["detail"][:200], "source": "panel"})
        return "journaled"

    endpoints.add_command("panel.frame", frame, FrameParams)
    endpoints.add_command("panel.report", report, ReportParams)


class FrameParams(Params):
    """``panel.frame``: the text, and unless ``png`` is false the PNG of what the panel shows."""

    png: bool = True


class ReportParams(Params):
    """``panel.report``: something that happened at the panel (`PANEL_REPORTS`), journaled."""

    event: Annotated[str, Field(max_length=64)]
    detail: Annotated[str, Field(max_length=4096)] = ""
