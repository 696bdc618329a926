"""Runs the front panel on its own thread: inputs in, frames, backlight, LEDs and commands out.

The daemon's event loop never waits on the panel: key sources and `notify`
only put items on a queue or set a flag. A fetcher thread gets the status
(and new events) through ``control`` when notified, else every
``refresh_s``, and queues it; the panel thread feeds keys and statuses to the
pure `PanelUi` in arrival order, renders, and pushes a frame to the display
only when it differs from the last one. Because no fetch runs on the panel
thread, a slow daemon never delays a key: a release is always judged before
a hold-to-confirm can complete. Commands run on a worker
thread each, so a promote that waits for the handover never freezes the
display; their answer comes back through the same queue.

The ``control`` callable (e.g. ``functools.partial(firmware.core.control.request, socket_path)``)
takes one request dict, returns the ``result`` member of the daemon's answer,
and raises an exception whose text is the daemon's reason when it refuses or
cannot be reached. It is called from the panel thread and from command
workers, never from the daemon's event loop, and should have a timeout.

The optional ``events`` callable takes the last journal id the panel has seen
(0 at first) and returns the records after it, oldest first
(``{"id", "time", "kind", "data"}``); the panel keeps the newest
``max_events``. Without it the "Last events" page says "no events".
"""

from __future__ import annotations

import collections
import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from PIL import Image

from firmware.panel.base import Blink, Display, Indicators, KeyEvent, KeySource
from firmware.panel.render import body_rows, graphic_layout, render_for, render_text
from firmware.panel.screens import Screen
from firmware.panel.text import to_unicode
from firmware.panel.ui import Effect, PanelOptions, PanelUi, Report, RunCommand, SetBacklight

__all__ = ["Control", "EventsFetcher", "PanelOptions", "PanelRunner", "describe_result"]

log = logging.getLogger(__name__)

Control = Callable[[dict[str, Any]], Any]
EventsFetcher = Callable[[int], Sequence[Mapping[str, Any]]]


def describe_result(result: Any) -> str:
    """The daemon's answer to a command as one line for the panel."""
    if isinstance(result, Mapping):
        for key in ("outcome", "message", "state"):
            if result.get(key):
                return str(result[key])
        return "done"
    if result is None or result == "":
        return "done"
    return str(result)


class PanelRunner:
    """The panel thread: owns the display, key sources and indicators it is given.

    Call `start` to begin and `close` to stop (which also closes the drivers).
    """

    def __init__(self, display: Display, keys: list[KeySource], indicators: Indicators | None,
                 control: Control, options: PanelOptions, events: EventsFetcher | None = None,
                 tz: tzinfo | None = None, max_events: int = 20) -> None:
        """``tz``: time zone for event times on the "Last events" page (None: local time)."""
        self.display = display
        self.keys = list(keys)
        self.indicators = indicators
        self.options = options
        self._control = control
        self._events_fetcher = events
        self._clock = time.monotonic
        self.ui = PanelUi(options, self._clock(), body_rows(display), tz)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()  # display access
        self._frame_lock = threading.Lock()  # the published frame (never held during display I/O)
        self._thread = threading.Thread(target=self._run, name="tandem-panel", daemon=True)
        # Status and events are fetched on a thread of their own, so a slow daemon never holds up
        # key handling: a release queued behind a fetch must be judged before the hold completes.
        self._fetch_wanted = threading.Event()
        self._fetcher = threading.Thread(target=self._fetch_loop, name="tandem-panel-fetch", daemon=True)
        self._last_good: Mapping[str, Any] | None = None
        self._started = self._closed = False
        self._status: Mapping[str, Any] | None = None
        self._error: str | None = "no status yet"
        self._events: collections.deque[Mapping[str, Any]] = collections.deque(maxlen=max_events)
        self._last_event_id = 0
        self._events_wanted = True
        self._screen: Screen | None = None
        self._pushed: object = None
        self._backlight: int | None = None
        self._leds: tuple[Blink, Blink, bool] | None = None
        self._failures: dict[str, str] = {}
        self.fetches = 0
        """Status fetches so far (tests wait on it)."""

    # ------------------------------------------------------------------ public

    def start(self) -> PanelRunner:
        """Start the panel thread and the key sources; returns self."""
        if self._started:
            return self
        self._started = True
        self._thread.start()
        self._fetcher.start()
        for source in self.keys:
            source.start(self.key)
        return self

    def key(self, event: KeyEvent) -> None:
        """A key event from any thread (this is the callback given to every key source)."""
        self._queue.put(("key", event))

    def notify(self) -> None:
        """The daemon's state changed: fetch the status now (safe from any thread, never blocks)."""
        self._events_wanted = True
        self._fetch_wanted.set()

    def frame_text(self) -> list[str]:
        """What the panel shows, as readable Unicode lines.

        A text display: exactly the lines on the glass. A graphic display: the
        current screen laid out as text on that display's character grid.
        """
        with self._frame_lock:
            if self.display.kind == "text":
                lines = self._pushed if isinstance(self._pushed, tuple) else ()
                return [to_unicode(line) for line in lines]
            if self._screen is None:
                return []
            layout = graphic_layout(self.display.width, self.display.height)
            return [to_unicode(line) for line in render_text(self._screen, layout.columns, layout.body_rows + 1)]

    def frame_png(self) -> bytes:
        """The display's current frame (``Display.frame()``) as PNG bytes."""
        with self._lock:
            image: Image.Image = self.display.frame()
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads, then close the key sources, indicators and display.

        A fetch still waiting on the daemon is abandoned (its thread is a daemon
        thread that ends with its request's timeout).
        """
        if self._closed:
            return
        self._closed = True
        for source in self.keys:
            self._safely("keys.close", source.close)
        if self._started:
            self._queue.put(("stop", None))
            self._fetch_wanted.set()
            self._thread.join(timeout)
        if self.indicators is not None:
            self._safely("indicators.close", self.indicators.close)
        with self._lock:
            self._safely("display.close", self.display.close)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            now = self._clock()
            wait = 1.0
            hint = self.ui.next_change(now)
            if hint is not None:
                wait = min(wait, hint)
            items: list[tuple[str, Any]] = []
            try:
                items.append(self._queue.get(timeout=wait))
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            if any(kind == "stop" for kind, _ in items):
                return
            try:
                self._step(items)
            except Exception:  # a bug or a driver failure must not end the panel
                log.exception("panel: update failed")

    def _step(self, items: list[tuple[str, Any]]) -> None:
        now = self._clock()
        effects: list[Effect] = []
        for kind, payload in items:
            if kind == "key":
                effects += self.ui.handle_key(payload, now)
            elif kind == "status":
                self._status, self._error, records = payload
                self._events.extend(records)
                if self._status is not None:
                    self._last_good = self._status
                self.ui.observe(self._status, now)  # an alarm that just arrived stops a hold before tick() ends it
            elif kind == "result":
                self.ui.command_result(*payload, now)
                self.notify()
        effects += self.ui.tick(now)
        screen = self.ui.screen(self._status, list(self._events), now, self._error)
        effects += self.ui.tick(now)  # the status just seen may start or end an alarm's blinking
        self._apply(effects)
        self._push(screen)
        self._drive_indicators(now)

    def _fetch_loop(self) -> None:
        """On its own thread: fetch the status (and new events) when notified, else every refresh_s."""
        while not self._closed:
            self._fetch_wanted.wait(self.options.refresh_s)
            self._fetch_wanted.clear()
            if self._closed:
                return
            try:
                self._fetch()
            except Exception:  # the next round tries again
                log.exception("panel: fetch failed")

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            status = self._control({"cmd": "status"})
            error = None if isinstance(status, Mapping) else "the daemon's status is not a JSON object"
            status = status if isinstance(status, Mapping) else None
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is shown on the glass
            status, error = None, str(exc) or type(exc).__name__
        records: list[Mapping[str, Any]] = []
        on_events_page = self.ui.mode == "pages" and self.ui.page == "events"
        if self._events_fetcher is not None and (self._events_wanted or on_events_page):
            try:
                for record in self._events_fetcher(self._last_event_id):
                    record_id = record.get("id")
                    if isinstance(record_id, int) and record_id > self._last_event_id:
                        records.append(record)
                        self._last_event_id = record_id
                self._events_wanted = False
            except Exception as exc:  # noqa: BLE001 - the events page is optional; logged once
                self._note_failure("events", exc)
        self._queue.put(("status", (status, error, records)))

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SetBacklight) and effect.level != self._backlight:
                with self._lock:
                    if self._safely("display.set_backlight", self.display.set_backlight, effect.level):
                        self._backlight = effect.level
            elif isinstance(effect, RunCommand) and not self.options.view_only:
                threading.Thread(target=self._command, args=(effect.cmd, effect.params),
                                 name=f"tandem-panel-{effect.cmd}", daemon=True).start()
            elif isinstance(effect, Report):
                threading.Thread(target=self._send_report, args=(effect,), name="tandem-panel-report",
                                 daemon=True).start()

    def _send_report(self, report: Report) -> None:
        """Have the daemon journal what happened at the panel (PIN attempts, locking)."""
        try:
            self._control({"cmd": "panel.report", "event": report.event, "detail": report.detail})
        except Exception as exc:  # noqa: BLE001 - the panel works on; the failure is logged once
            self._note_failure("report", exc)

    def _command(self, cmd: str, params: Mapping[str, Any]) -> None:
        try:
            ok, message = True, describe_result(self._control({"cmd": cmd, "source": "panel", **params}))
        except Exception as exc:  # noqa: BLE001 - the refusal or failure reason is the message
            ok, message = False, str(exc) or type(exc).__name__
        log.info("panel: %s %s: %s", cmd, "done" if ok else "refused", message)
        self._queue.put(("result", (cmd, ok, message)))

    def _push(self, screen: Screen) -> None:
        frame = render_for(self.display, screen)
        key: object = tuple(frame) if isinstance(frame, list) else (frame.mode, frame.size, frame.tobytes())
        with self._frame_lock:
            self._screen = screen
            if key == self._pushed:
                return
        with self._lock:
            if isinstance(frame, list):
                done = self._safely("display.show_text", self.display.show_text, frame)
            else:
                done = self._safely("display.show_image", self.display.show_image, frame)
        if done:
            with self._frame_lock:
                self._pushed = key

    def _drive_indicators(self, now: float) -> None:
        if self.indicators is None:
            return
        if self._status is None and self._last_good is not None:
            # The daemon stopped answering: keep showing the role and alarms last known, and flash the
            # fault LED (going dark and quiet exactly when the daemon wedges would hide the problem).
            role, _, buzzer = self.ui.indicators(self._last_good, now)
            leds: tuple[Blink, Blink, bool] = (role, "fast", buzzer)
        else:
            leds = self.ui.indicators(self._status, now)
        if leds == self._leds:
            return
        role, fault, buzzer = leds
        old = self._leds or (None, None, None)
        ok = True
        if role != old[0]:
            ok &= self._safely("indicators.set_role", self.indicators.set_role, role)
        if fault != old[1]:
            ok &= self._safely("indicators.set_fault", self.indicators.set_fault, fault)
        if buzzer != old[2]:
            ok &= self._safely("indicators.set_buzzer", self.indicators.set_buzzer, buzzer)
        self._leds = leds if ok else None

    def _safely(self, what: str, function: Callable[..., Any], *args: Any) -> bool:
        try:
            function(*args)
        except Exception as exc:  # noqa: BLE001 - a failing driver must not stop the panel; logged once
            self._note_failure(what, exc)
            return False
        self._failures.pop(what, None)
        return True

    def _note_failure(self, what: str, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if self._failures.get(what) != text:  # log each distinct failure once, not every frame
            log.warning("panel: %s failed: %s", what, text)
            self._failures[what] = text
