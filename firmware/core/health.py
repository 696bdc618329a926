"""Sensor scheduling, states with hysteresis, the health score and alarms.

Two layers:

- `SensorTracker` and `health_score` are pure: a reading (or a failure) and
  the wall time in, the committed state and any transition out. Tested
  without threads.
- `HealthMonitor` runs the sensors: a scheduler thread starts each due
  sensor's blocking ``read()`` on a daemon thread of its own and waits for
  results with the sensor's timeout. A sensor that raises or does not answer
  in time becomes UNKNOWN with the reason; a hung read keeps its thread until
  it returns, that sensor is not started again meanwhile (its next reading is
  taken once the old one comes back), and no other sensor waits for it. Nothing here runs on the daemon's
  event loop: results reach the daemon through the ``on_change`` callback,
  which the daemon hands to its loop thread-safely. So a slow sensor never
  delays a heartbeat (DESIGN.md, principle 2).

States change with hysteresis: worse at once; better only after
``clear_after`` consecutive better readings, and for a thresholded value only
once it has crossed back past the threshold by the ``hysteresis`` margin.
Either can be switched off (``clear_after = 1``, ``hysteresis = 0``).

The score is 100 minus, for each sensor, its weight times the factor of its
state (OK 0, WARNING ``warning_factor``, UNKNOWN ``unknown_factor``,
CRITICAL 1), clamped to 0..100. A weight is thus "the health points this
sensor takes away when CRITICAL".
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from firmware.config import SensorConfig, ThresholdConfig
from firmware.core.alarms import Alarm
from firmware.core.sensors.base import Level, Reading, Sensor

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
"""A journal event: (kind, data)."""


# ---------------------------------------------------------------------- pure part


Sides = tuple[Level, Level]
"""A value's level from its upper limits and from its lower limits, kept apart for hysteresis."""
CLEAR: Sides = (Level.OK, Level.OK)


def threshold_sides(value: float, limits: ThresholdConfig, current: Sides = CLEAR) -> Sides:
    """The levels of ``value`` against the upper and the lower limits, given where each side is now.

    Going worse needs only the threshold; going better needs the value to be
    back past the threshold that raised it by ``limits.hysteresis`` (so a
    value hovering at a threshold does not flap). Each side keeps its own
    margin: a high temperature clears by falling, not by reaching the low limits.
    """
    def upper(v: float) -> Level:
        if limits.crit_above is not None and v >= limits.crit_above:
            return Level.CRITICAL
        return Level.WARNING if limits.warn_above is not None and v >= limits.warn_above else Level.OK

    def lower(v: float) -> Level:
        if limits.crit_below is not None and v <= limits.crit_below:
            return Level.CRITICAL
        return Level.WARNING if limits.warn_below is not None and v <= limits.warn_below else Level.OK

    margin = limits.hysteresis
    above, below = upper(value), lower(value)
    if above < current[0]:
        above = max(above, min(current[0], upper(value + margin)))
    if below < current[1]:
        below = max(below, min(current[1], lower(value - margin)))
    return above, below


def threshold_level(value: float, limits: ThresholdConfig, current: Sides = CLEAR) -> Level:
    """The level of ``value`` against ``limits`` (the worse side; see `threshold_sides`)."""
    return max(threshold_sides(value, limits, current))


def describe_threshold(name: str, value: float, unit: str, limits: ThresholdConfig, level: Level) -> str:
    """Why a value is at ``level``: ``"temp 52.0 °C ≥ 50 (critical)"``."""
    shown = f"{name} {value:g}{(' ' + unit) if unit else ''}"
    for bound, sign, lvl in ((limits.crit_above, "≥", Level.CRITICAL), (limits.crit_below, "≤", Level.CRITICAL),
                             (limits.warn_above, "≥", Level.WARNING), (limits.warn_below, "≤", Level.WARNING)):
        if lvl == level and bound is not None and (value >= bound if sign == "≥" else value <= bound):
            return f"{shown} {sign} {bound:g} ({level.name.lower()})"
    return f"{shown} ({level.name.lower()}, clearing needs a {limits.hysteresis:g} margin)"


@dataclass
class SensorTracker:
    """One sensor's committed state, advanced by readings (pure: time is passed in)."""

    name: str
    thresholds: dict[str, ThresholdConfig] = field(default_factory=dict)
    clear_after: int = 2
    level: Level = Level.OK  # until the first reading: no alarm and no health penalty at start-up
    summary: str = "no reading yet"
    error: str | None = None
    reading: Reading | None = None
    since: float | None = None
    last_reading_at: float | None = None
    value_levels: dict[str, Sides] = field(default_factory=dict)
    better_count: int = 0
    readings: int = 0
    failures: int = 0
    first: bool = True

    def update(self, reading: Reading | None, error: str | None, wall: float) -> tuple[Level, Level] | None:
        """Take a reading (or the reason none could be taken); return ``(old, new)`` if the state changed."""
        self.last_reading_at = wall
        if reading is None:
            self.failures += 1
            raw, summary = Level.UNKNOWN, error or "no reading"
        else:
            self.readings += 1
            # Each value's sides carry their own hysteresis margin, so they advance on every reading;
            # `clear_after` applies to the sensor's overall level below.
            raw, summary, self.value_levels = self._judge(reading)
        self.error = error if reading is None else None
        if reading is not None:
            self.reading = reading
        old = self.level
        if self.first or self._worse(raw, old):
            commit = True
        elif raw == old:
            commit, self.better_count = False, 0
        else:
            self.better_count += 1
            commit = self.better_count >= self.clear_after
        if commit:
            self.first, self.better_count = False, 0
            self.level = raw
            if raw != old:
                self.since = wall
        self.summary = summary if commit or raw == old else f"{summary} (clearing {self.better_count}/{self.clear_after})"
        return (old, self.level) if commit and raw != old else None

    @staticmethod
    def _worse(new: Level, old: Level) -> bool:
        return Level.worst(new, old) == new and new != old

    def _judge(self, reading: Reading) -> tuple[Level, str, dict[str, Sides]]:
        levels = [reading.level]
        notes: list[str] = []
        value_levels: dict[str, Sides] = {}
        for value_name, limits in self.thresholds.items():
            value = reading.values.get(value_name)
            current = self.value_levels.get(value_name, CLEAR)
            if value is None or math.isnan(value):
                value_levels[value_name] = current
                notes.append(f"{value_name} missing")
                levels.append(Level.UNKNOWN)
                continue
            value_levels[value_name] = threshold_sides(value, limits, current)
            level = max(value_levels[value_name])
            levels.append(level)
            if level != Level.OK:
                notes.append(describe_threshold(value_name, value, reading.units.get(value_name, ""), limits, level))
        summary = "; ".join(part for part in [reading.summary, *notes] if part)
        return Level.worst(*levels), summary, value_levels


def alarm_text(sensor: str, level: Level, summary: str) -> str:
    """A sensor alarm as shown in the status: ``"psu1 CRITICAL: AC input lost, …"``."""
    return f"{sensor} {level.name}: {summary}"


def sensor_alarm_source(sensor: str) -> str:
    """The alarm source of a sensor (its alarms are keyed by it and their level)."""
    return f"sensor:{sensor}"


def sensor_alarm(sensor: str, level: Level, summary: str) -> Alarm:
    """The alarm of a sensor that is not OK: keyed by sensor and level, so live values never make it new."""
    return Alarm(sensor_alarm_source(sensor), level.name.lower(), alarm_text(sensor, level, summary))


def health_score(tracked: Iterable[tuple[float, Level]], warning_factor: float = 0.5,
                 unknown_factor: float = 0.5) -> int:
    """100 minus each sensor's weight times its state's factor, clamped to 0..100."""
    factor = {Level.OK: 0.0, Level.WARNING: warning_factor, Level.UNKNOWN: unknown_factor, Level.CRITICAL: 1.0}
    penalty = sum(weight * factor[level] for weight, level in tracked)
    return max(0, min(100, round(100 - penalty)))


# ------------------------------------------------------------------ the running part


@dataclass
class MonitoredSensor:
    """A sensor instance with its configuration and tracker."""

    config: SensorConfig
    sensor: Sensor
    tracker: SensorTracker
    next_due: float = 0.0
    in_flight: futures.Future | None = None
    started: float = 0.0
    timed_out: bool = False
    last_duration_ms: float | None = None


class HealthMonitor:
    """Runs the configured sensors off the event loop and keeps their states, the score and alarms."""

    def __init__(self, sensors: list[tuple[SensorConfig, Sensor]], *, warning_factor: float = 0.5,
                 unknown_factor: float = 0.5,
                 on_change: Callable[[list[Event]], None] | None = None,
                 record: Callable[[str, float | None, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        """``on_change`` gets journal events (from the scheduler thread); ``record`` gets every numeric value."""
        self.sensors = [MonitoredSensor(cfg, sensor, SensorTracker(cfg.name, dict(cfg.thresholds), cfg.clear_after))
                        for cfg, sensor in sensors]
        self.by_name = {m.config.name: m for m in self.sensors}
        self.warning_factor, self.unknown_factor = warning_factor, unknown_factor
        self.on_change = on_change
        self.record = record
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self._wake: futures.Future = futures.Future()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._score = self._compute_score()
        self._record_failed: set[str] = set()

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Start the scheduler thread (every sensor is read at once, then at its interval)."""
        now = self.clock()
        for m in self.sensors:
            m.next_due = now
        if self._thread is None and self.sensors:
            self._thread = threading.Thread(target=self._run, name="health", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop scheduling and close the sensors whose reads are not in flight.

        A read still hanging (a stuck bus) keeps its own daemon thread, which
        does not hold up the process's exit; its sensor is left open.
        """
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for m in self.sensors:
            if m.in_flight is not None and not m.in_flight.done():
                continue
            try:
                m.sensor.close()
            except Exception:  # closing must not stop the daemon's shutdown
                log.exception("sensor %s: close failed", m.config.name)

    def poll_now(self, names: Iterable[str] | None = None) -> None:
        """Read these sensors (all if None) as soon as possible: hot-plug events, operator requests."""
        now = self.clock()
        with self._lock:
            for m in self.sensors if names is None else [self.by_name[n] for n in names if n in self.by_name]:
                m.next_due = min(m.next_due, now)
        self._poke()

    # ----------------------------------------------------------------- queries

    @property
    def score(self) -> int:
        """The health score 0..100."""
        with self._lock:
            return self._score

    def snapshot(self) -> list[dict[str, Any]]:
        """Every sensor for the status document, worst state first."""
        order = {Level.CRITICAL: 0, Level.WARNING: 1, Level.UNKNOWN: 2, Level.OK: 3}
        wall = self.wall()
        with self._lock:
            rows = [self._row(m, wall) for m in self.sensors]
        return sorted(rows, key=lambda r: (order[Level[r["state"]]], r["name"]))

    def alarms(self) -> list[Alarm]:
        """One alarm per sensor that is not OK."""
        with self._lock:
            return [sensor_alarm(m.config.name, m.tracker.level, m.tracker.summary)
                    for m in self.sensors if m.tracker.level != Level.OK]

    def _row(self, m: MonitoredSensor, wall: float) -> dict[str, Any]:
        t, reading = m.tracker, m.tracker.reading
        return {
            "name": m.config.name, "type": m.config.type, "state": t.level.name, "summary": t.summary,
            "values": dict(reading.values) if reading else {}, "units": dict(reading.units) if reading else {},
            "conditions": list(reading.conditions) if reading else [], "info": dict(reading.info) if reading else {},
            "error": t.error, "weight": m.config.weight, "interval_s": m.config.interval_s,
            "thresholds": {k: v.model_dump(exclude_none=True) for k, v in m.config.thresholds.items()},
            "since": t.since, "age_s": None if t.last_reading_at is None else round(wall - t.last_reading_at, 1),
            "readings": t.readings, "failures": t.failures, "last_duration_ms": m.last_duration_ms,
        }

    def _compute_score(self) -> int:
        return health_score(((m.config.weight, m.tracker.level) for m in self.sensors),
                            self.warning_factor, self.unknown_factor)

    # --------------------------------------------------------------- scheduler

    def _poke(self) -> None:
        with self._lock:
            wake, self._wake = self._wake, futures.Future()
        if not wake.done():
            wake.set_result(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:  # taken before scheduling, so a poke meanwhile is not lost
                    wake = self._wake
                timeout = self._schedule()
                with self._lock:
                    waiting = [m.in_flight for m in self.sensors if m.in_flight is not None] + [wake]
                futures.wait(waiting, timeout=timeout, return_when=futures.FIRST_COMPLETED)
                self._collect()
            except Exception:  # the scheduler must outlive any bug in one sensor's handling
                log.exception("health scheduler iteration failed")
                self._stop.wait(1.0)

    def _schedule(self) -> float:
        """Start due sensors, time out late ones; return how long to wait for the next thing to do."""
        now = self.clock()
        events: list[Event] = []
        next_at = now + 5.0
        with self._lock:
            for m in self.sensors:
                if m.in_flight is None and m.next_due <= now:
                    m.started = now
                    m.timed_out = False
                    m.next_due = max(m.next_due + m.config.interval_s, now + min(m.config.interval_s, 1.0))
                    m.in_flight = _start_read(m.sensor)
                if m.in_flight is not None and not m.timed_out:
                    deadline = m.started + m.config.timeout_s
                    if now >= deadline:
                        m.timed_out = True
                        events += self._apply(m, None, f"did not answer within {m.config.timeout_s:g} s")
                    else:
                        next_at = min(next_at, deadline)
                if m.in_flight is None:
                    next_at = min(next_at, m.next_due)
        self._emit(events)
        return max(0.0, next_at - now)

    def _collect(self) -> None:
        events: list[Event] = []
        with self._lock:
            for m in self.sensors:
                future = m.in_flight
                if future is None or not future.done():
                    continue
                m.in_flight = None
                try:
                    reading, duration = future.result()
                    m.last_duration_ms = round(duration * 1000, 2)
                    events += self._apply(m, reading, None)
                except Exception as exc:  # a failing sensor is UNKNOWN with its reason, then retried
                    events += self._apply(m, None, _reason(exc))
        self._emit(events)

    def _apply(self, m: MonitoredSensor, reading: Reading | None, error: str | None) -> list[Event]:
        """Feed one result to the tracker (lock held); return the journal events it causes."""
        wall = self.wall()
        change = m.tracker.update(reading, error, wall)
        if reading is not None and self.record is not None:
            for value_name, value in reading.values.items():
                self._record(f"{m.config.name}.{value_name}", value, reading.units.get(value_name, ""))
        events: list[Event] = []
        if change is not None:
            old, new = change
            data = {"sensor": m.config.name, "type": m.config.type, "from": old.name, "to": new.name,
                    "summary": m.tracker.summary}
            events.append(("sensor.state", data))
            message = alarm_text(m.config.name, new, m.tracker.summary)
            if old == Level.OK:
                events.append(("alarm.raised", {"sensor": m.config.name, "level": new.name, "message": message}))
            elif new == Level.OK:
                events.append(("alarm.cleared", {"sensor": m.config.name, "was": old.name, "message": message}))
            else:
                events.append(("alarm.changed", {"sensor": m.config.name, "from": old.name, "level": new.name,
                                                 "message": message}))
        score = self._compute_score()
        if score != self._score:
            events.append(("health", {"health": score, "previous": self._score, "source": "sensors"}))
            self._score = score
        if self.record is not None:
            self._record("health", float(score), "")
        return events

    def _record(self, metric: str, value: float | None, unit: str) -> None:
        """Hand a value to the history; its failure must never cost an alarm (logged once per metric)."""
        try:
            self.record(metric, value, unit)  # type: ignore[misc]
        except Exception as exc:
            if metric not in self._record_failed:
                self._record_failed.add(metric)
                log.warning("history: cannot record %s: %s", metric, exc)

    def _emit(self, events: list[Event]) -> None:
        if events and self.on_change is not None:
            try:
                self.on_change(events)
            except Exception:
                log.exception("health: on_change callback failed")


def _start_read(sensor: Sensor) -> futures.Future:
    """Run one read on a thread of its own (a daemon thread: a hung read never blocks the exit).

    A thread per read rather than a pool: a pool's hung workers would starve
    healthy sensors, and pool threads are joined at interpreter exit.
    """
    future: futures.Future = futures.Future()

    def run() -> None:
        try:
            future.set_result(_timed_read(sensor))
        except BaseException as exc:  # reported as the sensor's failure by _collect
            future.set_exception(exc)

    threading.Thread(target=run, name=f"sensor-{sensor.name}", daemon=True).start()
    return future


def _timed_read(sensor: Sensor) -> tuple[Reading, float]:
    started = time.perf_counter()
    reading = sensor.read()
    if not isinstance(reading, Reading):
        raise TypeError(f"{type(sensor).__name__}.read() returned {type(reading).__name__}, not a Reading")
    return reading, time.perf_counter() - started


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if exc.__class__.__name__ == "SensorError" else f"{type(exc).__name__}: {text}"



# ------------------------------------------------------------------ from the configuration


def configured_sensors(config: Any) -> list[tuple[SensorConfig, Any, str]]:
    """The effective sensor list: ``(entry, file it came from, its key)``.

    The board profile's sensors come first; a node-config entry with the same
    name replaces the profile's (to move a threshold or disable one).
    """
    entries: dict[str, tuple[SensorConfig, Any, str]] = {}
    for index, entry in enumerate(config.board.sensors):
        entries[entry.name] = (entry, config.board_path, f"sensors[{index}]")
    for index, entry in enumerate(config.node.sensors):
        entries[entry.name] = (entry, config.path, f"sensors[{index}]")
    return [e for e in entries.values() if e[0].enabled]


def sensor_options(config: Any) -> list[tuple[SensorConfig, type[Sensor], Any]]:
    """Each configured sensor's family and validated options; ConfigError naming the file and key."""
    from pydantic import ValidationError

    from firmware.config import format_location
    from firmware.errors import ConfigError
    from firmware.core.sensors import family_class

    checked = []
    for entry, path, key in configured_sensors(config):
        try:
            cls = family_class(entry.type)
        except ValueError as exc:
            raise ConfigError(path, f"{key}.type", str(exc)) from None
        raw = entry.options
        if "timeout_s" in cls.Options.model_fields:  # the family's own timeout is the sensor's
            raw = {**raw, "timeout_s": entry.timeout_s}
        if "command_timeout_s" in cls.Options.model_fields and "command_timeout_s" not in raw:
            # A command must end (and say why) before the scheduler gives up on the whole read.
            raw = {**raw, "command_timeout_s": round(0.9 * entry.timeout_s, 3)}
        try:
            options = cls.Options.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            reason = "unknown key" if first["type"] == "extra_forbidden" else (
                "required key is missing" if first["type"] == "missing" else first["msg"].removeprefix("Value error, "))
            raise ConfigError(path, f"{key}.{format_location(tuple(first['loc']))}",
                              f"{reason} (sensor {entry.name!r}, type {entry.type})") from None
        checked.append((entry, cls, options))
    return checked


def build_sensors(config: Any, context: Any) -> list[tuple[SensorConfig, Sensor]]:
    """Instantiate every configured sensor; ConfigError naming the file and key on a bad entry."""
    from firmware.errors import ConfigError

    built = []
    for entry, cls, options in sensor_options(config):
        try:
            built.append((entry, cls(entry.name, options, context)))
        except Exception as exc:
            path, key = next((p, k) for e, p, k in configured_sensors(config) if e is entry)
            raise ConfigError(path, key, f"sensor {entry.name!r} ({entry.type}) cannot be set up: {exc}") from None
    return built
