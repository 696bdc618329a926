"""The event journal, atomic writes and the persisted state file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from firmware.core.journal import Journal, JsonStore, read_journal, read_json, write_atomically

from helpers import wait_for


@pytest.fixture
def journals() -> Iterator[Callable[..., Journal]]:
    """Open journals, closing every one at the end of the test."""
    opened: list[Journal] = []

    def open_journal(directory: Path, **kwargs) -> Journal:
        journal = Journal(directory, **kwargs)
        opened.append(journal)
        return journal

    yield open_journal
    for journal in opened:
        journal.close()


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ids_increase_and_records_reach_the_disk(tmp_path: Path, journals) -> None:
    journal = journals(tmp_path)
    records = [journal.record("state", {"to": f"S{i}"}) for i in range(20)]
    ids = [r["id"] for r in records]
    assert ids == list(range(1, 21))
    journal.flush()
    on_disk = lines_of(tmp_path / "events.jsonl")
    assert [r["id"] for r in on_disk] == ids
    for written, record in zip(on_disk, records):
        assert set(written) == {"id", "time", "kind", "data"}
        assert written["kind"] == "state" and written["data"] == record["data"]
        assert abs(written["time"] - time.time()) < 60
    assert journal.record("bare")["data"] == {}


def test_ids_continue_after_reopening(tmp_path: Path, journals) -> None:
    first = journals(tmp_path)
    for i in range(5):
        first.record("a", {"i": i})
    first.close()
    second = journals(tmp_path)
    assert second.record("b")["id"] == 6
    second.close()
    third = journals(tmp_path)
    assert third.next_id == 7
    assert [r["id"] for r in read_journal(tmp_path / "events.jsonl")] == list(range(1, 7))


def test_rotation_keeps_at_most_keep_files(tmp_path: Path, journals) -> None:
    journal = journals(tmp_path, max_bytes=400, keep=2)
    for i in range(60):
        journal.record("tick", {"i": i, "pad": "x" * 20})
    journal.flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"], names
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 400
    records = read_journal(tmp_path / "events.jsonl", keep=2)
    ids = [r["id"] for r in records]
    # Whole old files fall away: what remains is every newest record, in order, no gaps.
    assert ids == list(range(ids[0], 61))
    assert ids[0] > 1
    # The journal reopened on the rotated files continues the numbering.
    journal.close()
    assert journals(tmp_path, max_bytes=400, keep=2).record("x")["id"] == 61


def test_since_from_memory(tmp_path: Path, journals) -> None:
    journal = journals(tmp_path)
    for i in range(10):
        journal.record("e", {"i": i})
    assert [r["id"] for r in journal.since(7)] == [8, 9, 10]
    assert [r["id"] for r in journal.since(0)] == list(range(1, 11))
    assert journal.since(10) == []


def test_since_on_a_fresh_journal_reads_the_disk(tmp_path: Path, journals) -> None:
    first = journals(tmp_path)
    for i in range(10):
        first.record("e", {"i": i})
    first.close()
    fresh = journals(tmp_path)
    got = fresh.since(6)
    assert [r["id"] for r in got] == [7, 8, 9, 10]
    assert got[0]["data"] == {"i": 6}
    # Records older than memory come from the files, newer ones are included too.
    fresh.record("new")
    assert [r["id"] for r in fresh.since(8)] == [9, 10, 11]
    assert [r["kind"] for r in fresh.since(10)] == ["new"]


def test_a_long_history_comes_encoded_from_only_the_files_that_hold_it(tmp_path: Path, journals,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What the `events` command sends after a flood: the files' own lines, the older rotated files unread."""
    first = journals(tmp_path, max_bytes=4096, keep=5)
    for i in range(600):  # ~60 records a file
        first.record("e", {"i": i})
    first.close()
    everything = read_journal(tmp_path / "events.jsonl", keep=5)
    files = sorted(tmp_path.glob("events.jsonl.*"), key=lambda p: -int(p.suffix[1:]))  # oldest first
    assert len(files) == 5 and everything[0]["id"] > 1  # rotated: the oldest records are gone
    newest_rotated = lines_of(files[-1])
    after = newest_rotated[len(newest_rotated) // 2]["id"]  # in the middle of the newest rotated file
    read: list[str] = []

    def tracking_open(path, *args, **kwargs):  # noqa: ANN001, ANN202
        read.append(Path(path).name)
        return open(path, *args, **kwargs)

    monkeypatch.setattr("firmware.core.journal.open", tracking_open, raising=False)
    fresh = journals(tmp_path, max_bytes=4096, keep=5)
    encoded = fresh.since_encoded(after)
    assert [json.loads(line) for line in encoded] == [r for r in everything if r["id"] > after]
    assert all(not line.endswith(b"\n") for line in encoded)
    # Each file's first line is looked at once; only the newest rotated file and the current one are read.
    records_read = [name for name in read if read.count(name) > 1]
    assert set(records_read) == {files[-1].name, "events.jsonl"}
    assert [r["id"] for r in fresh.since(after)] == [r["id"] for r in everything if r["id"] > after]


def test_listeners_see_every_new_record(tmp_path: Path, journals) -> None:
    journal = journals(tmp_path)
    seen: list[int] = []
    listener = lambda record: seen.append(record["id"])  # noqa: E731
    journal.add_listener(listener)
    journal.record("a")
    journal.record("b")
    journal.remove_listener(listener)
    journal.record("c")
    assert seen == [1, 2]


TORN_TAILS = [
    b'{"id":4,"time":1.0,"ki',  # a record cut short by a power cut
    b"\x00\x00\x00\x00\x00\x00",  # a zero-filled block (delayed allocation after a power cut)
    b"\xff\xfe\x00garbage",      # arbitrary garbage
]


def journal_with_torn_tail(tmp_path: Path, journals, torn: bytes) -> Path:
    journal = journals(tmp_path)
    for _ in range(3):
        journal.record("e")
    journal.close()
    path = tmp_path / "events.jsonl"
    with open(path, "ab") as handle:
        handle.write(torn)
    return path


@pytest.mark.parametrize("torn", TORN_TAILS)
def test_torn_last_line_does_not_break_reading(tmp_path: Path, journals, torn: bytes) -> None:
    path = journal_with_torn_tail(tmp_path, journals, torn)
    assert [r["id"] for r in read_journal(path)] == [1, 2, 3]
    # The daemon restarts on the damaged file and continues the numbering.
    reopened = journals(tmp_path)
    assert reopened.next_id == 4
    assert [r["id"] for r in reopened.since(1)] == [2, 3]


@pytest.mark.parametrize("torn", TORN_TAILS)
def test_first_record_after_a_torn_line_is_readable(tmp_path: Path, journals, torn: bytes) -> None:
    path = journal_with_torn_tail(tmp_path, journals, torn)
    reopened = journals(tmp_path)
    assert reopened.record("after")["id"] == 4
    reopened.record("later")
    reopened.flush()
    records = read_journal(path)
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["kind"] for r in records[3:]] == ["after", "later"]


@pytest.mark.parametrize("torn", TORN_TAILS)
def test_a_torn_tail_is_cut_off_on_start(tmp_path: Path, journals, torn: bytes) -> None:
    """Issue 14: a torn tail used to be ended with a newline and stayed an invalid line for good."""
    path = journal_with_torn_tail(tmp_path, journals, torn)
    journals(tmp_path).close()
    data = path.read_bytes()
    assert data.endswith(b"\n") and torn not in data
    assert [json.loads(line)["id"] for line in data.splitlines()] == [1, 2, 3]  # every line whole


class DiskFull:
    """Makes the journal's writes fail as a full disk does: the first os.write on the journal file
    writes `partial` bytes, the next raises ENOSPC, until `free()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, partial: int = 7, code: int = 28) -> None:
        import os

        self.full = True
        self.partial = partial
        real_write, journal_file = os.write, str(path)

        def write(fd: int, data: bytes) -> int:
            if self.full and os.readlink(f"/proc/self/fd/{fd}") == journal_file:
                if self.partial:
                    written, self.partial = real_write(fd, bytes(data)[:self.partial]), 0
                    return written
                raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)

    def free(self) -> None:
        self.full = False


@pytest.mark.parametrize("code, why", [(28, "disk full (ENOSPC)"), (30, "read-only file system (EROFS)")],
                         ids=["full", "read-only"])
def test_a_short_write_on_a_full_disk_leaves_no_partial_record_and_is_retried(
        tmp_path: Path, journals, monkeypatch: pytest.MonkeyPatch, code: int, why: str) -> None:
    """Issue 14: os.write's byte count was ignored: a partial record stayed, invalid even after space was freed."""
    journal = journals(tmp_path)
    journal.record("before")
    journal.flush()
    disk = DiskFull(monkeypatch, tmp_path / "events.jsonl", code=code)
    journal.record("during")
    journal.flush()
    assert journal.failure == why and journal.waiting == 1
    assert [a.key for a in journal.alarms()] == ["journal/critical"]
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["before"]  # the partial write was cut back
    disk.free()
    wait_for(lambda: journal.failure is None, 10, what="the journal retrying once space is free")
    assert [r["kind"] for r in read_journal(tmp_path / "events.jsonl")] == ["before", "during"]
    assert journal.alarms() == [] and journal.waiting == 0


def test_record_durable_returns_once_on_disk_and_refuses_when_it_cannot_be(
        tmp_path: Path, journals, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from firmware.core.journal import JournalError

    journal = journals(tmp_path)

    async def durable(kind: str) -> dict:
        return await journal.record_durable(kind, {"cmd": kind})

    record = asyncio.run(durable("first"))
    # On disk when it returns: read straight from the file, not from memory.
    assert read_journal(tmp_path / "events.jsonl")[-1] == record
    disk = DiskFull(monkeypatch, tmp_path / "events.jsonl", partial=0)
    with pytest.raises(JournalError, match="disk full"):
        asyncio.run(durable("refused"))
    with pytest.raises(JournalError, match="cannot be written"):  # while failing: refused at once
        asyncio.run(durable("refused-too"))
    disk.free()
    journal.record("plain")  # an ordinary event is kept and retried until the disk takes it
    wait_for(lambda: journal.failure is None, 10, what="the journal writable again")
    assert asyncio.run(durable("after"))["data"] == {"cmd": "after"}
    kinds = [r["kind"] for r in read_journal(tmp_path / "events.jsonl")]
    assert kinds == ["first", "plain", "after"]  # a refused record never shows up later


def test_a_failing_listener_never_reaches_the_caller(tmp_path: Path, journals) -> None:
    """Issue 14: an OSError from the hooks directory listing (EMFILE) went up through the journal and
    aborted every heartbeat tick."""
    journal = journals(tmp_path)
    seen: list[str] = []

    def failing(record: dict) -> None:
        raise OSError(24, "Too many open files")

    journal.add_listener(failing)
    journal.add_listener(lambda record: seen.append(record["kind"]))
    assert journal.record("tick-event")["kind"] == "tick-event"
    assert seen == ["tick-event"]


def test_json_store_keeps_a_refused_write_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import firmware.core.journal as journal_module

    monkeypatch.setattr(journal_module, "RETRY_S", 0.05)
    store = JsonStore(tmp_path / "state.json")
    full = [True]
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if full[0] and ".state.json.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert store.save_now({"epoch": 3}) == "disk full (ENOSPC)"  # never raises: a demote must not hang on it
    assert [a.key for a in store.alarms()] == ["disk:state/critical"]
    assert not (tmp_path / ".state.json.tmp").exists()
    full[0] = False
    wait_for(lambda: store.failure is None, 10, what="the retried state write")
    assert read_json(tmp_path / "state.json") == {"epoch": 3}


def test_write_atomically_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomically(path, b"first")
    assert path.read_bytes() == b"first"
    write_atomically(path, b"second, longer content")
    assert path.read_bytes() == b"second, longer content"
    write_atomically(path, b"3", mode=0o600)
    assert path.read_bytes() == b"3"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_json(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "x.json") == {"a": 1}


def test_json_store_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JsonStore(path)
    assert store.load() == {}
    store.save({"epoch": 1})
    store.save({"epoch": 2, "boot_counter": 7})
    wait_for(lambda: path.exists() and store.load() == {"epoch": 2, "boot_counter": 7})
    store.save_now({"epoch": 3})
    assert store.load() == {"epoch": 3}
    assert JsonStore(path).load() == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_json_store_save_now_supersedes_a_pending_save(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JsonStore(path)
    for i in range(50):
        store.save({"n": i})
        store.save_now({"n": 1000 + i})
    # The writer thread must never put a stale pending state over the final one: not by now, and not
    # once it is idle (flush returns when no write is under way and none is pending).
    assert store.load() == {"n": 1049}
    store.flush()
    assert store.load() == {"n": 1049}


def test_json_store_load_of_a_corrupt_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"epoch": ')
    assert JsonStore(path).load() == {}
