"""The node's health as a daemon component: sensors, history, hot-plug, inventory and the score.

:class:`~firmware.core.health.HealthMonitor` reads the sensors on threads of
their own; this component wires it into the daemon: it opens the board's
sensor host, keeps the rrdtool history, re-reads the sensors a hot-plug event
names, reads the inventory once at start, journals what the sensors report
(on the event loop, whatever thread it came from), and tells the daemon when
the health score changed. It owns the status snapshot's ``sensors``,
``inventory`` and ``history`` keys and the ``sensors`` command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from firmware.config import Config
from firmware.core.alarms import Alarm, AlarmBoard
from firmware.core.endpoints import Endpoints
from firmware.core.health import HealthMonitor, build_sensors, sensor_alarm_source
from firmware.core.hotplug import DeviceEvent, HotplugWatcher, sensors_watching
from firmware.core.journal import Journal
from firmware.core.logsetup import event_fields
from firmware.core.sensors.base import SensorContext
from firmware.drivers import load_driver
from firmware.errors import ConfigError

log = logging.getLogger(__name__)

Events = list[tuple[str, dict[str, Any]]]
ScoreAdjuster = Callable[[int], int]


def open_sensor_host(config: Config) -> SensorContext:
    """The board's sensor host (the real host unless the profile names another)."""
    host = config.board.sensor_host
    if host is None:
        return SensorContext()
    context = load_driver(host.driver, "sensor_host.driver", config.board_path, **host.kwargs)
    if not isinstance(context, SensorContext):
        raise ConfigError(config.board_path, "sensor_host.driver",
                          f"{host.driver} returned {type(context).__name__}, not a SensorContext")
    return context


class Monitoring:
    """Sensors, history, hot-plug and inventory, and the health score the decision core sees."""

    def __init__(self, config: Config, journal: Journal, alarms: AlarmBoard,
                 on_score: Callable[[int], None]) -> None:
        node = config.node
        self.journal = journal
        self.alarm_board = alarms
        self.on_score = on_score
        self.host = open_sensor_host(config)
        self.history = None
        if node.health.history:
            from firmware.core.history import History  # rrdtool loads only when history is kept

            self.history = History(node.state_dir / "history", flush_interval_s=node.health.history_flush_s)
        self.monitor = HealthMonitor(
            build_sensors(config, self.host), warning_factor=node.health.warning_factor,
            unknown_factor=node.health.unknown_factor, on_change=self._from_thread,
            record=self.history.record if self.history else None)
        self.hotplug = HotplugWatcher(self._on_hotplug)
        self.inventory: dict[str, Any] | None = None
        self.score = 100
        self._adjusters: list[ScoreAdjuster] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inventory_task: asyncio.Task | None = None
        alarms.add_source(self.alarms)

    def register(self, endpoints: Endpoints) -> None:
        """The ``sensors`` command and the ``sensors``, ``inventory`` and ``history`` status keys."""
        endpoints.add_command("sensors", lambda request: self.monitor.snapshot())
        endpoints.add_status(lambda: {"sensors": self.monitor.snapshot(), "inventory": self.inventory,
                                      "history": self.history.status() if self.history else None})

    def start(self) -> None:
        """Start reading (call on the event loop)."""
        self._loop = asyncio.get_running_loop()
        if self.history is not None:
            self.history.start()
        self.monitor.start()
        if self.monitor.sensors:
            self.hotplug.start()
        self._inventory_task = asyncio.ensure_future(self._read_inventory())

    def close(self) -> None:
        """Stop every thread and release the sensor host (idempotent)."""
        self.hotplug.close()
        self.monitor.close()
        if self.history is not None:
            self.history.close()
        self.host.close()

    def alarms(self) -> list[Alarm]:
        """One alarm per sensor that is not OK."""
        return self.monitor.alarms()

    def add_adjuster(self, adjuster: ScoreAdjuster) -> None:
        """Pass the sensors' score through ``adjuster`` before the core sees it (board extensions)."""
        self._adjusters.append(adjuster)

    def refresh(self) -> None:
        """Recompute the score; tell the daemon if it changed."""
        score = self.monitor.score
        for adjust in self._adjusters:
            score = adjust(score)
        if score != self.score:
            self.score = score
            self.on_score(score)

    def poll_now(self, names: list[str] | None = None) -> None:
        """Read these sensors (all when None) at once instead of at their next interval."""
        self.monitor.poll_now(names)

    async def _read_inventory(self) -> None:
        from firmware.core.sensors.dmi import read_inventory

        try:
            self.inventory = await asyncio.to_thread(read_inventory, self.host)
        except Exception as exc:  # inventory is informative; its failure must not stop the node
            self.inventory = {"error": str(exc)}
            log.warning("inventory could not be read: %s", exc)

    def _on_hotplug(self, event: DeviceEvent) -> None:
        """On pyudev's thread: poll the sensors that watch this device now, and journal it."""
        watching = sensors_watching(event, ((m.config.name, m.sensor.options) for m in self.monitor.sensors))
        if not watching:
            return
        self.monitor.poll_now(watching)
        self._from_thread([("hotplug", {"action": event.action, "device": event.node or event.name,
                                        "subsystem": event.subsystem, "sensors": watching})])

    def _from_thread(self, events: Events) -> None:
        """Called on the health scheduler's (or pyudev's) thread: hand the events to the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_events, events)

    def _on_events(self, events: Events) -> None:
        for kind, data in events:
            self.journal.record(kind, data)
            if kind.startswith("alarm."):
                log.warning("%s %s", kind, data["message"], extra=event_fields(kind, data))
            if kind == "alarm.cleared":
                self.alarm_board.forget(sensor_alarm_source(data["sensor"]))
        self.refresh()
