"""Sensor history in rrdtool files, and graphs of it.

What is stored
--------------
Every numeric sensor reading is a *metric* named ``"<sensor>.<value>"``
(``psu1.vin``, ``inlet.temp``); the health score is the metric ``health``.
Each metric lives in its own round-robin database::

    <dir>/<sensor>/<value>.rrd      e.g. /var/lib/tandem/history/psu1/vin.rrd
    <dir>/health.rrd
    <dir>/units.json                {"psu1.vin": "V", ...} so graphs know units after a restart

Every file has one data source ``value`` (GAUGE, heartbeat 3 steps, no min/max)
and three retention tiers at a 10 s step: 10 s for a day (AVERAGE only: at one
step MIN and MAX would repeat it), 5 min for 31 days and 1 h for two years
(AVERAGE, MIN and MAX). That is about 690 KiB (705,704 bytes) per metric on
disk, allocated when the file is created.

Why one file per metric
-----------------------
An RRD's data sources are fixed when it is created. With one file per sensor
or per node, adding a fan, removing a PSU or a board profile renaming a value
would need an RRD reshape (``rrdtool tune``/dump-and-restore) of history that
must never be lost. With one file per metric, a new metric is a new file, a
metric that disappears just stops being updated (its history stays
graphable), and a corrupt file loses one metric, not all of them.

Cost model of batching
----------------------
``rrdtool.update`` opens the file, takes an fcntl lock, reads the header,
writes the header and the rows it completes, and closes it: about 0.1 ms per
call here, and each call dirties a few pages the kernel later writes to flash.
The cost is per *call*, hardly per value: one call carrying six timestamped
values costs less than twice a call carrying one. So:

- ``record()`` does no I/O at all. It stores the value in a dict under a lock
  (about a microsecond), keeping only the last value per metric per step:
  a sensor polled every second costs one stored value per 10 s step.
- A writer thread flushes every ``flush_interval_s`` with exactly one
  ``rrdtool.update`` per file carrying all its pending steps. A hundred
  sensors with three values each cost 300 calls per flush, about 30 ms of
  one background thread every 10 s, whatever the polling rate is.
- A longer flush interval trades losing that much history on a crash for
  fewer writes; values are never lost because the writer is late (up to
  ``MAX_PENDING_STEPS`` steps per metric are kept).

All rrdtool calls of the process are serialised by one lock (librrd's graphing
is not thread-safe); ``record()`` never takes it.

For hundreds of nodes' worth of metrics, rrdcached would be the next step;
an appliance with one chassis does not need it.

Failure policy
--------------
History is a nice-to-have next to the heartbeats it must never delay or stop:
a full disk, a corrupt file or a clock that stepped backwards is logged
(once per metric until it recovers), counted in ``status()``, and never
raised into the caller or allowed to stop the writer. Only programming
errors (a bad metric name, an unknown metric in a graph) raise ``ValueError``.

rrdtool rejects an update whose time is not after the file's last update
("minimum one second step"), so the writer keeps the last written second of
each file (read with ``rrdtool.last`` the first time it touches an existing
file) and skips values that are not newer, counting them as ``skipped``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import rrdtool

from firmware.core.journal import write_atomically

log = logging.getLogger(__name__)

HEALTH_METRIC = "health"
UNITS_FILE = "units.json"
DS_NAME = "value"
CONSOLIDATIONS = ("AVERAGE", "MIN", "MAX")
# (steps per row, rows): 10 s for a day, 5 min for 31 days, 1 h for two years (at a 10 s step).
RETENTION_TIERS = ((1, 8640), (30, 8928), (360, 17520))
HEARTBEAT_STEPS = 3
# Pending values kept per metric if the writer falls behind (an hour at 10 s).
MAX_PENDING_STEPS = 360

_PART = r"[A-Za-z0-9_-]+"
_METRIC_RE = re.compile(rf"{_PART}\.{_PART}|{re.escape(HEALTH_METRIC)}")
_SINCE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_SINCE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COLOUR_RE = re.compile(r"#?([0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})")
# librrd's graphing is not thread-safe: two graphv calls at once crash the process
# (seen with librrd 1.7.2). Every rrdtool call in this process goes through this lock;
# record() never takes it, so only the writer and readers wait for a graph.
_RRD_LOCK = threading.Lock()

# Line colours (Tableau 10 without its red, which is kept for critical thresholds).
LINE_COLOURS = (
    "#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD", "#8C564B",
    "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF",
)
THRESHOLD_CRITICAL = "#D62728"
THRESHOLD_WARNING = "#FF9900"
THRESHOLD_OTHER = "#555555"

Threshold = tuple[str, float] | tuple[str, float, str]


def validate_metric(metric: str) -> str:
    """Return `metric` if it is ``health`` or ``<sensor>.<value>`` with [A-Za-z0-9_-] parts.

    Anything else (slashes, dots, empty parts, spaces) raises ValueError, so a
    metric name can never point outside the history directory.
    """
    if not isinstance(metric, str) or not _METRIC_RE.fullmatch(metric):
        raise ValueError(
            f"bad metric name {metric!r}: expected '{HEALTH_METRIC}' or '<sensor>.<value>' "
            "made of letters, digits, '_' and '-'"
        )
    return metric


def parse_since(since: str | float) -> int:
    """Seconds in a duration: ``"30m"``, ``"6h"``, ``"2d"``, ``"1w"``, ``"90s"``, ``"45"`` or a number.

    Raises ValueError naming the bad input and the accepted forms.
    """
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        seconds = float(since)
    else:
        match = _SINCE_RE.fullmatch(str(since).lower()) if isinstance(since, str) else None
        if match is None:
            raise ValueError(f"bad duration {since!r}: expected e.g. 30m, 6h, 2d, 1w or seconds")
        seconds = float(match.group(1)) * _SINCE_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 1:
        raise ValueError(f"bad duration {since!r}: must be at least one second")
    return int(seconds)


def describe_seconds(seconds: int) -> str:
    """``21600`` -> ``"6h"``: the largest unit of `parse_since` that divides `seconds`."""
    for suffix in ("w", "d", "h", "m"):
        if seconds % _SINCE_UNITS[suffix] == 0:
            return f"{seconds // _SINCE_UNITS[suffix]}{suffix}"
    return f"{seconds}s"


def _rrd_text(text: str) -> str:
    """Text safe inside an rrdtool graph argument: colons escaped, no stray backslashes."""
    return text.replace("\\", "/").replace(":", r"\:")


def _rrd_format_text(text: str) -> str:
    """Like `_rrd_text`, for the literal part of a GPRINT format (``%`` doubled)."""
    return _rrd_text(text).replace("%", "%%")


def _threshold_colour(label: str, colour: str | None) -> str:
    if colour is not None:
        match = _COLOUR_RE.fullmatch(colour)
        if match is None:
            raise ValueError(f"bad threshold colour {colour!r} for {label!r}: expected #RRGGBB or #RRGGBBAA")
        return "#" + match.group(1).upper()
    lowered = label.lower()
    if "crit" in lowered or "fail" in lowered:
        return THRESHOLD_CRITICAL
    if "warn" in lowered:
        return THRESHOLD_WARNING
    return THRESHOLD_OTHER


class History:
    """rrdtool history of sensor readings and the health score, with graphs.

    ``record()`` is cheap and thread-safe (memory only); a writer thread started
    by ``start()`` writes pending values every ``flush_interval_s`` and
    ``close()`` stops it after a last flush. ``flush()`` writes synchronously.
    See the module docstring for the file layout, costs and failure policy.
    """

    def __init__(self, directory: Path, step_s: int = 10, flush_interval_s: float = 10.0) -> None:
        if int(step_s) != step_s or step_s < 1:
            raise ValueError(f"step_s must be a whole number of seconds >= 1, got {step_s!r}")
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s!r}")
        # Absolute, so an rrdtool argument never starts with '-' and relative paths survive a chdir.
        self.directory = Path(directory).absolute()
        self.step_s = int(step_s)
        self.flush_interval_s = float(flush_interval_s)
        self._lock = threading.Lock()          # guards _pending, _units, _units_dirty
        self._write_lock = threading.Lock()    # one flush at a time, guards _last_written
        self._pending: dict[str, dict[int, tuple[float, float | None]]] = {}
        self._units: dict[str, str] = {}
        self._units_dirty = False
        self._last_written: dict[str, int] = {}
        self._failing: set[str] = set()        # metrics whose last write failed (log once)
        self._clock_warned: set[str] = set()   # metrics that saw time go backwards (warn once)
        self._known_valid: set[str] = set()
        self._files = 0
        self._writes = 0
        self._values = 0
        self._skipped = 0
        self._dropped = 0
        self._errors = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error("directory", f"cannot create {self.directory}: {exc}")
        self._load_units()
        self._files = len(self.metrics())

    # ----------------------------------------------------------------- paths

    def path_of(self, metric: str) -> Path:
        """The RRD file of `metric` (ValueError for a bad name)."""
        validate_metric(metric)
        if metric == HEALTH_METRIC:
            return self.directory / f"{HEALTH_METRIC}.rrd"
        sensor, value = metric.split(".")
        return self.directory / sensor / f"{value}.rrd"

    def metrics(self) -> list[str]:
        """Sorted names of the metrics that have an RRD file on disk."""
        found: list[str] = []
        try:
            for path in self.directory.glob("*.rrd"):
                if _METRIC_RE.fullmatch(path.stem):
                    found.append(path.stem)
            for path in self.directory.glob("*/*.rrd"):
                name = f"{path.parent.name}.{path.stem}"
                if _METRIC_RE.fullmatch(name):
                    found.append(name)
        except OSError as exc:
            log.warning("history: cannot list %s: %s", self.directory, exc)
        return sorted(found)

    def unit(self, metric: str) -> str:
        """The unit last recorded for `metric`, or ``""``."""
        with self._lock:
            return self._units.get(metric, "")

    # ---------------------------------------------------------------- record

    def record(self, metric: str, value: float | None, unit: str = "", at: float | None = None) -> None:
        """Remember `value` of `metric` at time `at` (default now) for the next flush.

        No I/O: only the last value per metric per step is kept in memory.
        ``None``, NaN and infinities are stored as unknown. An empty `unit`
        keeps the unit already known. Raises ValueError only for a bad metric
        name.
        """
        if metric not in self._known_valid:
            validate_metric(metric)
            self._known_valid.add(metric)
        when = time.time() if at is None else float(at)
        number: float | None
        try:
            number = None if value is None else float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and not math.isfinite(number):
            number = None
        bucket = int(when) // self.step_s
        with self._lock:
            steps = self._pending.setdefault(metric, {})
            steps[bucket] = (when, number)
            if len(steps) > MAX_PENDING_STEPS:
                del steps[min(steps)]
                self._dropped += 1
            if unit and self._units.get(metric) != unit:
                self._units[metric] = unit
                self._units_dirty = True

    # ----------------------------------------------------------------- writer

    def start(self) -> None:
        """Start the background writer thread (flushes every ``flush_interval_s``)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer thread and write everything still pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        """Write all pending values now: one ``rrdtool.update`` per file. Never raises."""
        with self._write_lock:
            try:
                self._flush_locked()
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything
                self._error("flush", f"unexpected {type(exc).__name__}: {exc}")

    def _flush_locked(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            units = dict(self._units) if self._units_dirty else None
            self._units_dirty = False
        if units is not None and not self._save_units(units):
            with self._lock:
                self._units_dirty = True
        for metric in sorted(pending):
            self._write_metric(metric, sorted(pending[metric].values(), key=lambda item: item[0]))

    def _write_metric(self, metric: str, values: Sequence[tuple[float, float | None]]) -> None:
        path = self.path_of(metric)
        try:
            last = self._last_written.get(metric)
            if last is None:
                last = self._open_or_create(path, first_at=int(values[0][0]))
            arguments: list[str] = []
            for when, number in values:
                second = int(when)
                if second <= last:
                    # Same second as the last write is normal (a fast sensor); further back
                    # means the clock stepped back or old values were replayed.
                    self._skipped += 1
                    if last - second >= self.step_s and metric not in self._clock_warned:
                        self._clock_warned.add(metric)
                        log.warning("history: %s: skipping values older than its last update "
                                    "(%d < %d); did the clock step back?", metric, second, last)
                    continue
                arguments.append(f"{second}:{'U' if number is None else repr(number)}")
                last = second
            if not arguments:
                self._last_written[metric] = last
                return
            with _RRD_LOCK:
                rrdtool.update(str(path), *arguments)
        except Exception as exc:  # noqa: BLE001 - rrdtool.OperationalError, OSError, ...
            # The file's last update time is unknown now: read it again next time.
            self._last_written.pop(metric, None)
            self._error(metric, str(exc))
            return
        self._last_written[metric] = last
        self._writes += 1
        self._values += len(arguments)
        if metric in self._failing:
            self._failing.discard(metric)
            log.info("history: %s is written again", metric)

    def _open_or_create(self, path: Path, first_at: int) -> int:
        """Create `path` unless it exists; return the time of its last update."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            arguments = [
                "--start", str(first_at - self.step_s),  # so the first value fills a whole step
                "--step", str(self.step_s),
                "--no-overwrite",
                f"DS:{DS_NAME}:GAUGE:{HEARTBEAT_STEPS * self.step_s}:U:U",
            ]
            for steps, rows in RETENTION_TIERS:
                # At one step per row MIN and MAX equal AVERAGE: storing them would only cost disk.
                arguments += [f"RRA:{cf}:0.5:{steps}:{rows}" for cf in (CONSOLIDATIONS if steps > 1 else ("AVERAGE",))]
            try:
                with _RRD_LOCK:
                    rrdtool.create(str(path), *arguments)
                self._files += 1
            except rrdtool.OperationalError:
                if not path.exists():
                    raise
                # Someone else created it between the check and now: use theirs.
        with _RRD_LOCK:
            return int(rrdtool.last(str(path)))

    def _error(self, what: str, message: str) -> None:
        self._errors += 1
        self._last_error = f"{what}: {message}"
        if what in self._failing:
            log.debug("history: %s: %s", what, message)
        else:
            self._failing.add(what)
            log.error("history: %s: %s", what, message)

    # ------------------------------------------------------------------ units

    def _load_units(self) -> None:
        path = self.directory / UNITS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self._error("units", f"cannot read {path}: {exc}")
            return
        if not isinstance(data, dict):
            self._error("units", f"{path} is not a JSON object")
            return
        self._units = {str(k): str(v) for k, v in data.items() if _METRIC_RE.fullmatch(str(k))}

    def _save_units(self, units: dict[str, str]) -> bool:
        path = self.directory / UNITS_FILE
        try:
            data = json.dumps(units, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
            write_atomically(path, data.encode())
        except OSError as exc:
            self._error("units", f"cannot write {path}: {exc}")
            return False
        self._failing.discard("units")
        return True

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Counters for the status snapshot.

        ``files``: RRD files on disk; ``pending``: metrics with values not yet
        written; ``writes``: successful ``rrdtool.update`` calls; ``values``:
        values they carried; ``skipped``: values not newer than their file's
        last update; ``dropped``: values lost because the writer fell behind;
        ``errors`` and ``last_error``: failed writes (and unreadable units.json).
        """
        with self._lock:
            pending = len(self._pending)
        return {
            "files": self._files,
            "pending": pending,
            "writes": self._writes,
            "values": self._values,
            "skipped": self._skipped,
            "dropped": self._dropped,
            "errors": self._errors,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ reads

    def _require(self, metrics: Iterable[str]) -> None:
        """ValueError naming the first metric without a file, listing those that exist."""
        wanted = list(metrics)
        for metric in wanted:
            validate_metric(metric)
        missing = [m for m in wanted if not self.path_of(m).exists()]
        if missing:
            with self._lock:
                unflushed = any(m in self._pending for m in missing)
            if unflushed:
                self.flush()
                missing = [m for m in wanted if not self.path_of(m).exists()]
        if missing:
            existing = ", ".join(self.metrics()) or "none"
            raise ValueError(f"unknown metric {missing[0]!r}; metrics with history: {existing}")

    def fetch(
        self, metric: str, since_s: float, end: float | None = None, cf: str = "AVERAGE"
    ) -> list[tuple[int, float | None]]:
        """``(timestamp, value or None)`` of `metric` for the `since_s` seconds before `end` (default now).

        Each timestamp ends the step its value covers. rrdtool picks the finest
        tier that covers the whole span. Reads the files only: values not yet
        flushed are not included. ValueError for an unknown metric or bad `cf`.
        """
        if cf not in CONSOLIDATIONS:
            raise ValueError(f"bad consolidation {cf!r}: expected one of {', '.join(CONSOLIDATIONS)}")
        self._require([metric])
        stop = int(time.time() if end is None else end)
        start = stop - int(since_s)
        with _RRD_LOCK:
            (first, _last, step), _names, rows = rrdtool.fetch(
                str(self.path_of(metric)), cf, "--start", str(start), "--end", str(stop)
            )
        return [(first + (i + 1) * step, row[0]) for i, row in enumerate(rows)]

    # ------------------------------------------------------------------ graph

    def graph(
        self,
        metrics: list[str],
        since: str | float = "6h",
        output: Path | None = None,
        width: int = 800,
        height: int = 250,
        title: str | None = None,
        thresholds: dict[str, list[Threshold]] | None = None,
    ) -> bytes:
        """A PNG graph of `metrics` over the last `since` (``"6h"``, ``"2d"``, seconds, ...).

        `width` x `height` is the plot area; the image is larger by the axes,
        title and legend. One line per metric in distinct colours; the legend
        shows each metric's last, average and maximum with its unit; the
        vertical axis is labelled with the unit when all metrics share one.
        `thresholds` maps a graphed metric to ``(label, value[, colour])``
        drawn as dashed horizontal lines (by default red for labels with
        crit or fail, orange for warn, grey otherwise), and the scale always includes
        them. Written atomically to `output` if given; the bytes are returned.

        ValueError for an unknown metric (listing those that exist), a
        threshold on a metric not graphed, or a bad `since` or colour.
        rrdtool errors propagate as ``rrdtool.OperationalError``. Takes tens of
        milliseconds: call it from a worker thread, not the event loop.
        """
        if not metrics:
            raise ValueError("graph needs at least one metric")
        if width < 100 or height < 50:
            raise ValueError(f"graph too small: {width}x{height} (minimum 100x50)")
        self._require(metrics)
        seconds = parse_since(since)
        thresholds = thresholds or {}
        for metric in thresholds:
            if metric not in metrics:
                raise ValueError(f"threshold for {metric!r}, which is not in the graph ({', '.join(metrics)})")

        units = {metric: self.unit(metric) for metric in metrics}
        shared_units = set(units.values())
        shared_unit = shared_units.pop() if len(shared_units) == 1 else ""
        since_text = since.strip() if isinstance(since, str) else describe_seconds(seconds)
        arguments = [
            "--start", f"end-{seconds}",
            "--end", "now",
            "--width", str(width),
            "--height", str(height),
            "--slope-mode",
            "--title", title or f"{', '.join(metrics)} — last {since_text}",
            "--watermark", time.strftime("drawn %Y-%m-%d %H:%M:%S %Z"),
        ]
        if shared_unit:
            arguments += ["--vertical-label", shared_unit]

        limits = [float(item[1]) for items in thresholds.values() for item in items]
        if limits:
            # HRULEs do not take part in autoscaling; these are soft limits (no --rigid),
            # so data beyond the thresholds still widens the scale.
            arguments += ["--lower-limit", repr(min(limits)), "--upper-limit", repr(max(limits))]

        # The legend font is monospaced; '\\g' removes rrdtool's gaps between items so
        # the header and the value columns line up on a character grid. rrdtool strips
        # trailing spaces from legend items, so padding goes at the start of the next one.
        name_width = max(len(metric) for metric in metrics) + 2
        unit_width = max(len(unit) for unit in units.values())
        number_width = 10
        columns = "".join(f"{name:>{number_width}}{' ' * (1 + unit_width)}" for name in ("Last", "Average", "Maximum"))
        arguments.append(f"COMMENT:{' ' * (2 + name_width)}{columns}\\l")
        for index, metric in enumerate(metrics):
            path = str(self.path_of(metric)).replace(":", r"\:")
            colour = LINE_COLOURS[index % len(LINE_COLOURS)]
            unit = units[metric]
            value_format = f"%{number_width}.2lf {_rrd_format_text(unit)}" if unit else f"%{number_width}.2lf"
            after_name = " " * (name_width - len(metric))
            after_value = " " * (1 + unit_width - len(unit)) if unit else " " * (1 + unit_width)
            arguments += [
                f"DEF:m{index}={path}:{DS_NAME}:AVERAGE",
                f"DEF:m{index}max={path}:{DS_NAME}:MAX",
                f"VDEF:m{index}last=m{index},LAST",
                f"VDEF:m{index}avg=m{index},AVERAGE",
                f"VDEF:m{index}peak=m{index}max,MAXIMUM",
                f"LINE2:m{index}{colour}:{_rrd_text(metric)}\\g",
                f"GPRINT:m{index}last:{after_name}{value_format}\\g",
                f"GPRINT:m{index}avg:{after_value}{value_format}\\g",
                f"GPRINT:m{index}peak:{after_value}{value_format}\\l",
            ]
        for metric, items in thresholds.items():
            for item in items:
                label, value = str(item[0]), float(item[1])
                colour = _threshold_colour(label, item[2] if len(item) > 2 else None)  # type: ignore[misc]
                prefix = f"{metric} " if len(metrics) > 1 else ""
                text = f"{prefix}{label} ({value:g}{' ' + units[metric] if units[metric] else ''})"
                arguments.append(f"HRULE:{value!r}{colour}:{_rrd_text(text)}\\l:dashes")

        with _RRD_LOCK:
            result = rrdtool.graphv("-", *arguments)
        image: bytes = result["image"]
        if output is not None:
            write_atomically(Path(output), image)
        return image
