"""Event journal (JSON lines, fsync'd, size-rotated) and the persisted state file.

Writes happen on one worker thread so a slow disk never delays a heartbeat;
ids are assigned on the caller's thread, so they are strictly increasing in
the order events happened.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

RECENT_KEPT = 1000


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if the file does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class Journal:
    """Appends events to `events.jsonl`; keeps recent ones in memory for `events` queries."""

    def __init__(self, directory: Path, max_bytes: int = 1_048_576, keep: int = 5) -> None:
        self.path = directory / "events.jsonl"
        self.max_bytes = max_bytes
        self.keep = keep
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self._end_torn_line()
        self.next_id = self._last_id() + 1
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._thread = threading.Thread(target=self._writer, name="journal", daemon=True)
        self._thread.start()

    def _end_torn_line(self) -> None:
        """After a power cut the last line may be torn: end it, so the next record stands alone."""
        try:
            with open(self.path, "rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return
                handle.seek(size - 1)
                if handle.read(1) == b"\n":
                    return
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("journal: cannot repair %s: %s", self.path, exc)

    def _last_id(self) -> int:
        for path in self._files_newest_first():
            last = 0
            for record in _read_records(path):
                last = max(last, int(record.get("id", 0)))
            if last:
                return last
        return 0

    def _files_newest_first(self) -> list[Path]:
        return [self.path] + [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(record)` for every new event (on the caller's thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def record(self, kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Journal one event; returns the record with its id and time."""
        record = {"id": self.next_id, "time": round(time.time(), 3), "kind": kind, "data": data or {}}
        self.next_id += 1
        self.recent.append(record)
        self._queue.put(record)
        for listener in list(self._listeners):
            listener(record)
        return record

    def _writer(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                self._queue.task_done()
                return
            try:
                self._append(record)
            except OSError as exc:  # a full disk must not take the daemon down
                log.error("journal: cannot write %s: %s", self.path, exc)
            finally:
                self._queue.task_done()

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        files = self._files_newest_first()
        files[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(files[1:]), reversed(files[:-1])):
            if newer.exists():
                os.replace(newer, older)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every recorded event is on disk (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Flush and stop the writer thread."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def since(self, after_id: int) -> list[dict[str, Any]]:
        """Events with an id above `after_id`: from memory, or from the files for older ones.

        Safe to call from a worker thread while events are being recorded.
        """
        recent = list(self.recent)  # one atomic copy: the loop may append meanwhile
        if recent and recent[0]["id"] <= after_id + 1:
            return [r for r in recent if r["id"] > after_id]
        self.flush()
        return [r for r in read_journal(self.path, self.keep) if r["id"] > after_id]


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:  # JSONDecodeError or UnicodeDecodeError: a torn line
                    continue
                if isinstance(record, dict):
                    yield record
    except FileNotFoundError:
        return


def read_journal(path: Path, keep: int = 5) -> list[dict[str, Any]]:
    """Every event in the journal and its rotated files, oldest first."""
    files = [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)] + [path]
    records: list[dict[str, Any]] = []
    for file in files:
        records.extend(_read_records(file))
    return sorted(records, key=lambda r: r.get("id", 0))


class JsonStore:
    """A small JSON file (persisted state, boot counters) written atomically off the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._writer, name="state", daemon=True)
        self._thread.start()

    def load(self) -> dict[str, Any]:
        """The last saved content, or {} for a first start."""
        try:
            return read_json(self.path) or {}
        except (json.JSONDecodeError, OSError) as exc:
            log.error("state: %s is unreadable (%s); starting from defaults", self.path, exc)
            return {}

    def save(self, data: dict[str, Any]) -> None:
        """Schedule a write; only the newest pending state is written."""
        with self._lock:
            self._pending = data
        self._wake.set()

    def save_now(self, data: dict[str, Any]) -> None:
        """Write synchronously (at exit); supersedes anything still pending."""
        with self._io_lock:
            with self._lock:
                self._pending = None
            write_atomically(self.path, json.dumps(data, indent=1).encode())

    def flush(self) -> None:
        """Write what is pending now, on the caller's thread; returns once no write is under way.

        After it returns, the writer thread has nothing left to write until the next :meth:`save`.
        """
        with self._io_lock:
            with self._lock:
                data, self._pending = self._pending, None
            if data is not None:
                write_atomically(self.path, json.dumps(data, indent=1).encode())

    def _writer(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._io_lock:  # held while writing, so save_now() always lands last
                with self._lock:
                    data, self._pending = self._pending, None
                if data is not None:
                    try:
                        write_atomically(self.path, json.dumps(data, indent=1).encode())
                    except OSError as exc:
                        log.error("state: cannot write %s: %s", self.path, exc)
