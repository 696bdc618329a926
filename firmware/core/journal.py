"""Event journal (JSON lines, fsync'd, size-rotated) and the persisted state file.

Writes happen on one worker thread so a slow disk never delays a heartbeat;
ids are assigned on the caller's thread, so they are strictly increasing in
the order events happened. The writer takes what is queued in one batch:
one write and one fsync for many records.

A full or read-only disk is survived, never hidden: a record that cannot be
written is kept (up to :data:`BACKLOG_MAX`) and retried every
:data:`RETRY_S`; a failed write is cut back so no partial record stays; the
journal raises an alarm while it cannot write. :meth:`Journal.record_durable`
is for what must be on disk before anyone is told it happened (an operator
command's request): it returns once the record is written and fsync'd, or
raises :class:`JournalError`, so the command is refused, not lost. On start a
torn last record (a power cut mid-write) is cut off.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from firmware.core.alarms import Alarm
from firmware.errors import TandemError

log = logging.getLogger(__name__)

RECENT_KEPT = 1000
RETRY_S = 1.0  # how often a journal or state file that could not be written is tried again
BACKLOG_MAX = 10_000  # records kept for a retry while the disk refuses them; older ones are dropped
DURABLE_TIMEOUT_S = 5.0  # a record_durable() not on disk by then is refused


class JournalError(TandemError):
    """A record could not be made durable (the disk is full, read-only, or does not answer)."""


# A history read on a worker thread sleeps a moment every PACE_LINES lines: a thread that keeps the
# interpreter lock makes the heartbeat loop wait up to the switch interval (5 ms) for it after every
# system call.
PACE_LINES = 256
PACE_S = 0.001
_LEADING_ID = re.compile(rb'\{"id":(\d+),')


def disk_error(exc: OSError) -> str:
    """An OSError in words an operator acts on: "disk full (ENOSPC)", "read-only file system (EROFS)"."""
    if exc.errno == errno.ENOSPC:
        return "disk full (ENOSPC)"
    if exc.errno == errno.EROFS:
        return "read-only file system (EROFS)"
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}{f' ({name})' if name else ''}"


def write_fully(fd: int, data: bytes) -> None:
    """Write all of `data` at `fd` (os.write may write less); raise OSError if the disk refuses the rest."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_fully(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # a partial temp file would only take space
        raise
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


_Done = Callable[[str | None], None]  # told None once a durable record is on disk, else why not
_Item = tuple[dict[str, Any], Optional[_Done]]


class Journal:
    """Appends events to `events.jsonl`; keeps recent ones in memory for `events` queries."""

    def __init__(self, directory: Path, max_bytes: int = 1_048_576, keep: int = 5) -> None:
        self.path = directory / "events.jsonl"
        self.max_bytes = max_bytes
        self.keep = keep
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.failure: str | None = None  # why the last write failed, while the journal cannot write
        self.waiting = 0  # records kept for a retry
        self.dropped = 0  # records given up on because the backlog was full
        self._cut_torn_tail()
        self.next_id = self._last_id() + 1
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._thread = threading.Thread(target=self._writer, name="journal", daemon=True)
        self._thread.start()

    def _cut_torn_tail(self) -> None:
        """After a power cut or a short write the last record may be torn: cut it off, so the file ends whole."""
        try:
            with open(self.path, "rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return
                start = max(0, size - 65536)
                handle.seek(start)
                tail = handle.read()
                if tail.endswith(b"\n"):
                    return
                cut = tail.rfind(b"\n")
                keep = start + cut + 1 if cut >= 0 else 0
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
                log.warning("journal: cut a torn last record (%d bytes) off %s", size - keep, self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("journal: cannot repair %s: %s", self.path, disk_error(exc))

    def _last_id(self) -> int:
        for path in self._files_newest_first():
            last = 0
            for record in _read_records(path):
                last = max(last, int(record.get("id", 0)))
            if last:
                return last
        return 0

    def _files_newest_first(self) -> list[Path]:
        return journal_files(self.path, self.keep)[::-1]

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(record)` for every new event (on the caller's thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def record(self, kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Journal one event (written soon, off the caller's thread); returns the record with its id and time."""
        return self._add(kind, data, None)

    async def record_durable(self, kind: str, data: dict[str, Any] | None = None,
                             timeout: float = DURABLE_TIMEOUT_S) -> dict[str, Any]:
        """Journal one event and return once it is written and fsync'd; JournalError if it cannot be.

        The wait is on the writer thread, never on the event loop. While the journal is failing
        the record is refused at once, without being journaled.
        """
        if self.failure is not None:
            raise JournalError(f"the journal {self.path} cannot be written: {self.failure}")
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[str | None] = loop.create_future()

        def done(error: str | None) -> None:  # on the writer thread
            try:
                loop.call_soon_threadsafe(lambda: settled.done() or settled.set_result(error))
            except RuntimeError:  # the loop closed meanwhile (the daemon is gone): nobody waits
                pass

        record = self._add(kind, data, done)
        try:
            error = await asyncio.wait_for(asyncio.shield(settled), timeout)
        except asyncio.TimeoutError:
            raise JournalError(f"the journal {self.path} did not take the record within {timeout:g} s") from None
        if error is not None:
            raise JournalError(f"the journal {self.path} cannot be written: {error}")
        return record

    def _add(self, kind: str, data: dict[str, Any] | None, done: _Done | None) -> dict[str, Any]:
        record = {"id": self.next_id, "time": round(time.time(), 3), "kind": kind, "data": data or {}}
        self.next_id += 1
        self.recent.append(record)
        self._queue.put((record, done))
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # a listener (hooks, streams) never keeps the event from its caller's next step
                log.exception("journal: a listener failed on %s", kind)
        return record

    def alarms(self) -> list[Alarm]:
        """A critical alarm while the journal cannot write (a full or read-only disk)."""
        if self.failure is None:
            return []
        return [Alarm("journal", "critical",
                      f"journal cannot be written: {self.failure} ({self.waiting} events waiting); "
                      "operator commands are refused until it can")]

    def status(self) -> dict[str, Any]:
        """The status snapshot's ``journal`` key."""
        return {"journal": {"path": str(self.path), "failure": self.failure, "waiting": self.waiting,
                            "dropped": self.dropped}}

    # ------------------------------------------------------------------ the writer thread

    def _writer(self) -> None:
        backlog: deque[_Item] = deque()  # records the disk refused, oldest first (none of them durable)
        stopping = False
        while not stopping:
            taken: list[_Item | None] = []
            try:
                taken.append(self._queue.get(timeout=RETRY_S if backlog else None))
                while True:  # everything queued now goes in the same batch: one fsync for all
                    taken.append(self._queue.get_nowait())
            except queue.Empty:
                pass  # nothing (more) new: a timeout only retries the backlog
            stopping = None in taken
            try:
                self._write_batch(backlog, [item for item in taken if item is not None])
            finally:
                for _ in taken:
                    self._queue.task_done()

    def _write_batch(self, backlog: deque[_Item], items: list[_Item]) -> None:
        backlog.extend(items)
        try:
            self._append(backlog)
        except OSError as exc:
            why = disk_error(exc)
            if self.failure is None:
                log.error("journal: cannot write %s: %s; events are kept and retried every %g s",
                          self.path, why, RETRY_S)
            self.failure = why
            kept: list[_Item] = []
            for record, done in backlog:
                if done is None:
                    kept.append((record, None))
                else:  # its caller is refused: the record must not appear later as if it had been taken
                    done(why)
            backlog.clear()
            backlog.extend(kept[-BACKLOG_MAX:])
            self.dropped += max(0, len(kept) - BACKLOG_MAX)
            self.waiting = len(backlog)
            return
        if self.failure is not None:
            log.warning("journal: %s is writable again (waiting events written, %d dropped)", self.path, self.dropped)
        self.failure = None
        self.waiting = 0

    def _append(self, items: deque[_Item]) -> None:
        """Write the records of `items` in order, rotating as needed: each file's part in one write and
        one fsync. Written items leave `items` (their callers told); on OSError the rest stay."""
        lines: list[bytes] = []
        size = self._size()
        for record, _ in list(items):  # a copy: _commit takes written items off the front of `items`
            line = _encode(record) + b"\n"
            if (size or lines) and size + len(line) > self.max_bytes:
                self._commit(items, lines)
                self._rotate()
                size = 0
            lines.append(line)
            size += len(line)
        self._commit(items, lines)

    def _commit(self, items: deque[_Item], lines: list[bytes]) -> None:
        """Write `lines` (the first len(lines) items') in one go and fsync; then they leave `items`."""
        if not lines:
            return
        self._write_chunk(b"".join(lines))
        for _ in range(len(lines)):
            _, done = items.popleft()
            if done is not None:
                done(None)
        lines.clear()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _write_chunk(self, chunk: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            start = os.fstat(fd).st_size
            try:
                write_fully(fd, chunk)
                os.fsync(fd)
            except OSError:
                try:  # no partial record may stay behind: cut back to where this write began
                    os.ftruncate(fd, start)
                except OSError as exc:
                    log.error("journal: cannot cut a partial write off %s: %s", self.path, disk_error(exc))
                raise
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        files = self._files_newest_first()
        files[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(files[1:]), reversed(files[:-1])):
            if newer.exists():
                os.replace(newer, older)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every recorded event has been tried (written, or kept for a retry), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Flush and stop the writer thread (a last try for events kept for a retry)."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def since(self, after_id: int) -> list[dict[str, Any]]:
        """Events with an id above `after_id`: from memory, or from the files for older ones.

        Safe to call from a worker thread while events are being recorded.
        """
        return [json.loads(line) for line in self.since_encoded(after_id)]

    def since_encoded(self, after_id: int) -> list[bytes]:
        """:meth:`since`'s events each as one JSON object (bytes, no newline), as the files hold them.

        What the ``events`` command sends: a long history (45,000 events after a command flood) is
        neither parsed nor built into objects on its way from the files, so it costs the daemon little
        CPU and no garbage collection, both of which held the heartbeat loop up (0.22 s, and the node
        fenced itself). Safe to call from a worker thread while events are being recorded.
        """
        recent = list(self.recent)  # one atomic copy: the loop may append meanwhile
        if recent and recent[0]["id"] <= after_id + 1:
            return [_encode(r) for r in recent if r["id"] > after_id]
        self.flush()
        return read_encoded(self.path, self.keep, after_id)


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


def _encode(record: dict[str, Any]) -> bytes:
    """A record as the journal writes it: compact JSON, its id first (which :func:`read_encoded` relies on)."""
    return json.dumps(record, separators=(",", ":"), default=str).encode()


def read_encoded(path: Path, keep: int, after_id: int) -> list[bytes]:
    """The records with an id above `after_id` as the journal's files hold them (one JSON object each, without
    its newline), oldest first. Only each line's leading id is read; a rotated file whose successor begins
    at or below ``after_id + 1`` holds none of them and is skipped; torn lines are left out. On a worker
    thread it sleeps a moment every :data:`PACE_LINES` lines, to leave the heartbeat loop the interpreter."""
    files = journal_files(path, keep)
    firsts = [_first_id(file) for file in files]
    skip = max((i + 1 for i in range(len(files) - 1) if firsts[i + 1] is not None and firsts[i + 1] <= after_id + 1),
               default=0)
    found: list[bytes] = []
    for file in files[skip:]:
        try:
            with open(file, "rb") as handle:
                for number, line in enumerate(handle, 1):
                    if number % PACE_LINES == 0:
                        time.sleep(PACE_S)
                    match = _LEADING_ID.match(line)
                    if match and int(match.group(1)) > after_id and line.endswith(b"}\n"):
                        found.append(line[:-1])
        except FileNotFoundError:
            continue
    return found


def _first_id(path: Path) -> int | None:
    """The id of a journal file's first record (None: no such file, or no record at its start)."""
    try:
        with open(path, "rb") as handle:
            match = _LEADING_ID.match(handle.readline())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def journal_files(path: Path, keep: int = 5) -> list[Path]:
    """The journal's files, oldest first: its `keep` rotated files (``events.jsonl.N`` … ``.1``), then itself."""
    return [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)] + [path]


def read_journal(path: Path, keep: int = 5) -> list[dict[str, Any]]:
    """Every event in the journal and its rotated files, oldest first."""
    records: list[dict[str, Any]] = []
    for file in journal_files(path, keep):
        records.extend(_read_records(file))
    return sorted(records, key=lambda r: r.get("id", 0))


class JsonStore:
    """A small JSON file (persisted state, boot counters) written atomically off the loop.

    A write the disk refuses is kept and retried every :data:`RETRY_S` (unless newer data
    supersedes it); :attr:`failure` says why while it lasts, and :meth:`alarms` raise it.
    """

    def __init__(self, path: Path, what: str = "state") -> None:
        self.path = path
        self.what = what
        self.failure: str | None = None
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._writer, name=what, daemon=True)
        self._thread.start()

    def load(self) -> dict[str, Any]:
        """The last saved content, or {} for a first start."""
        try:
            return read_json(self.path) or {}
        except (json.JSONDecodeError, OSError) as exc:
            log.error("%s: %s is unreadable (%s); starting from defaults", self.what, self.path, exc)
            return {}

    def save(self, data: dict[str, Any]) -> None:
        """Schedule a write; only the newest pending state is written."""
        with self._lock:
            self._pending = data
        self._wake.set()

    def save_now(self, data: dict[str, Any]) -> str | None:
        """Write synchronously, superseding anything still pending; None once on disk, else why not.

        Never raises: a write the disk refuses is kept and retried in the background.
        """
        with self._io_lock:
            with self._lock:
                self._pending = None
            return self._write(data)

    def flush(self) -> None:
        """Write what is pending now, on the caller's thread; returns once no write is under way.

        After it returns, the writer thread has nothing left to write until the next :meth:`save`
        (unless the disk refused it).
        """
        with self._io_lock:
            with self._lock:
                data, self._pending = self._pending, None
            if data is not None:
                self._write(data)

    def alarms(self) -> list[Alarm]:
        """A critical alarm while the file cannot be written."""
        if self.failure is None:
            return []
        return [Alarm(f"disk:{self.what}", "critical", f"{self.what} file {self.path} cannot be written: {self.failure}")]

    def _write(self, data: dict[str, Any]) -> str | None:
        """One atomic write (the io lock held); on failure the data is kept for a retry unless superseded."""
        try:
            write_atomically(self.path, json.dumps(data, indent=1).encode())
        except OSError as exc:
            why = disk_error(exc)
            if self.failure is None:
                log.error("%s: cannot write %s: %s; retrying every %g s", self.what, self.path, why, RETRY_S)
            self.failure = why
            with self._lock:
                if self._pending is None:
                    self._pending = data
            self._wake.set()
            return why
        if self.failure is not None:
            log.warning("%s: %s is writable again", self.what, self.path)
        self.failure = None
        return None

    def _writer(self) -> None:
        while True:
            self._wake.wait()
            if self.failure is not None:
                time.sleep(RETRY_S)  # a refused write is retried, not hammered
            self._wake.clear()
            with self._io_lock:  # held while writing, so save_now() always lands last
                with self._lock:
                    data, self._pending = self._pending, None
                if data is not None:
                    self._write(data)
