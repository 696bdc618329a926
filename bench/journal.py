"""Cost of one log record and one sd_notify datagram, ours against the libraries (docs/library-decisions.md).

    .venv/bin/python bench/journal.py            # ours only
    PYTHONPATH=/path/to/site-packages/with/systemd-python+sdnotify .venv/bin/python bench/journal.py

Logging: the same event record (``log_event``, a state change with five data
keys) through (a) today's path, a ``<N>``-prefixed line on journald's stream
(a Unix stream socket here), (b) our `JournalHandler`, one native-protocol
datagram, and (c) python-systemd's ``JournalHandler`` when it is importable
and this runs as root (it only ever sends to /run/systemd/journal/socket; a
fake journal is bound there for the run if the path is free). A forked
reader drains each socket, as journald would (`Reader`).

Stall: journald reads nothing for half a second while a burst of records is
logged: how long the longest log call takes (in the daemon, the event loop
that sends heartbeats) and how late another thread of the process wakes.

Notify: ``WATCHDOG=1`` through our `Notifier`, ``sdnotify`` and
``systemd.daemon.notify`` (whichever import), to a datagram socket.

Prints µs per call: the median and the 90th percentile (nearest rank) of
``CALLS`` single calls, each into a socket its reader has drained, then one
JSON line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firmware.core.logsetup import JournalHandler, JournalStreamFormatter, event_fields, log_event  # noqa: E402
from firmware.core.notify import Notifier  # noqa: E402
from stats import percentile  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "3000"))
BURST = int(os.environ.get("BENCH_BURST", "3000"))
STALL_S = 0.5
EVENT = ("state", {"from": "STANDBY", "to": "ACTIVE", "reason": "peer silent on all links for 300 ms",
                   "epoch": 12, "tick": 123456})
REAL_JOURNAL = "/run/systemd/journal/socket"


def bind_real_journal() -> tuple[socket.socket, Callable[[], None]]:
    """Bind a fake journal at REAL_JOURNAL (root, path free); returns it and what undoes it."""
    directory = os.path.dirname(REAL_JOURNAL)
    made = not os.path.isdir(directory)
    os.makedirs(directory, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(REAL_JOURNAL)

    def undo() -> None:
        sock.close()
        os.unlink(REAL_JOURNAL)
        if made:
            os.rmdir(directory)
    return sock, undo


class Reader:
    """A forked process that reads what is sent to ``sock`` and acknowledges each read on a pipe.

    The benchmark waits for the acknowledgement after every call, so each
    sample is one call into an idle journal that keeps up, as in the daemon
    (which logs a few records per state change, not thousands a second). A
    process, not a thread: python-systemd sends while holding the GIL.
    """

    def __init__(self, sock: socket.socket, stall_s: float = 0.0) -> None:
        """Fork the reader; with ``stall_s`` it reads nothing for that long first (a journald that is stuck)."""
        self._acks, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self._acks)
                time.sleep(stall_s)
                while sock.recv(1 << 20):
                    os.write(write_end, b".")
            finally:
                os._exit(0)
        os.close(write_end)

    def wait(self) -> None:
        """Wait until the reader has read what was sent."""
        os.read(self._acks, 1)

    def stop(self) -> None:
        """End the reader."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self._acks)


def per_call_us(call: Callable[[], None], reader: Reader) -> tuple[float, float]:
    """(median, p90) in µs of ``CALLS`` single calls, each into a drained socket."""
    for _ in range(50):
        call()  # warm up
        reader.wait()
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
        reader.wait()
    return percentile(samples, 50), percentile(samples, 90)


def logger_with(handler: logging.Handler) -> logging.Logger:
    """A logger of its own that sends only to ``handler``."""
    log = logging.getLogger(f"firmware.core.daemon.bench{id(handler)}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def bench_stream() -> tuple[float, float]:
    """Today's path: ``<N>`` lines with the dict repr on a stream socket (journald's stdout stream)."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    drained = Reader(reader)
    stream = writer.makefile("w", buffering=1, encoding="utf-8")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalStreamFormatter("%(name)s: %(message)s"))
    log = logger_with(handler)
    kind, data = EVENT
    try:
        return per_call_us(lambda: log.info("%s %s", kind, data), drained)  # today's daemon call
    finally:
        stream.close()
        writer.close()
        reader.close()
        drained.stop()


def bench_native(tmp: Path) -> tuple[float, float, int]:
    """Our JournalHandler with event fields: (median, p90, records dropped)."""
    path = str(tmp / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    drained = Reader(sock)
    handler = JournalHandler(path, context={"TANDEM_NODE": "alpha"})
    log = logger_with(handler)
    kind, data = EVENT
    try:
        median, p90 = per_call_us(lambda: log_event(log, kind, data, state="ACTIVE"), drained)
        return median, p90, handler.dropped
    finally:
        handler.close()
        sock.close()
        drained.stop()


def bench_python_systemd() -> tuple[float, float] | str:
    """python-systemd's JournalHandler with the same fields, or why it was not measured."""
    try:
        from systemd import journal
    except ImportError:
        return "python-systemd not importable"
    if os.geteuid() != 0:
        return "needs root to bind a fake journal at " + REAL_JOURNAL
    if os.path.exists(REAL_JOURNAL):
        return REAL_JOURNAL + " exists (a real journald): not measured"
    sock, undo = bind_real_journal()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    drained = Reader(sock)
    handler = journal.JournalHandler(SYSLOG_IDENTIFIER="tandem", TANDEM_NODE="alpha")
    log = logger_with(handler)
    kind, data = EVENT
    fields = {key: value for key, value in event_fields(kind, data, state="ACTIVE")["journal_fields"].items()}
    try:
        return per_call_us(lambda: log.info("%s %s", kind, data, extra=fields), drained)
    finally:
        drained.stop()
        undo()


def bench_notify(tmp: Path) -> dict[str, tuple[float, float] | str]:
    """``WATCHDOG=1`` through each notifier that imports."""
    path = str(tmp / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    drained = Reader(sock)
    results: dict[str, tuple[float, float] | str] = {}
    ours = Notifier({"NOTIFY_SOCKET": path})
    results["ours"] = per_call_us(ours.watchdog, drained)
    try:
        import sdnotify
        os.environ["NOTIFY_SOCKET"] = path
        other = sdnotify.SystemdNotifier()
        results["sdnotify"] = per_call_us(lambda: other.notify("WATCHDOG=1"), drained)
    except ImportError:
        results["sdnotify"] = "not importable"
    try:
        from systemd import daemon
        os.environ["NOTIFY_SOCKET"] = path
        results["python-systemd"] = per_call_us(lambda: daemon.notify("WATCHDOG=1"), drained)
    except ImportError:
        results["python-systemd"] = "not importable"
    os.environ.pop("NOTIFY_SOCKET", None)
    sock.close()
    drained.stop()
    return results


def stall(make: Callable[[], tuple[socket.socket, Callable[[], None], Callable[[], None]]]) -> tuple[float, float]:
    """A journald stuck for STALL_S while BURST records are logged: (longest log call, longest gap of a ticker), ms.

    The ticker is another thread of the same process waking every 5 ms, as
    the daemon's other threads do; in the daemon the logging caller is the
    event loop that sends heartbeats.
    """
    sock, call, close = make()
    reader = Reader(sock, stall_s=STALL_S)
    gaps: list[float] = []
    done = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last - 0.005)
            last = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    longest = 0.0
    try:
        for _ in range(BURST):
            start = time.perf_counter()
            call()
            longest = max(longest, time.perf_counter() - start)
    finally:
        done.set()
        ticker.join()
        reader.stop()
        close()
    return longest * 1000, max(gaps) * 1000


def stall_stream() -> tuple[socket.socket, Callable[[], None], Callable[[], None]]:
    """Today's stream path for `stall`: (reader side, one log call, cleanup)."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stream = writer.makefile("w", buffering=1, encoding="utf-8")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalStreamFormatter("%(name)s: %(message)s"))
    log = logger_with(handler)
    kind, data = EVENT
    return reader, lambda: log.info("%s %s", kind, data), lambda: (stream.close(), writer.close(), reader.close())


def stall_native(tmp: Path) -> tuple[socket.socket, Callable[[], None], Callable[[], None]]:
    """Our JournalHandler for `stall`."""
    path = str(tmp / "stalled.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    handler = JournalHandler(path)
    log = logger_with(handler)
    kind, data = EVENT
    return sock, lambda: log_event(log, kind, data), lambda: (handler.close(), sock.close())


def stall_python_systemd() -> tuple[socket.socket, Callable[[], None], Callable[[], None]] | None:
    """python-systemd for `stall` (None when it cannot be measured here)."""
    try:
        from systemd import journal
    except ImportError:
        return None
    if os.geteuid() != 0 or os.path.exists(REAL_JOURNAL):
        return None
    sock, undo = bind_real_journal()
    log = logger_with(journal.JournalHandler(SYSLOG_IDENTIFIER="tandem"))
    kind, data = EVENT
    return sock, lambda: log.info("%s %s", kind, data), undo


def main() -> None:
    """Run every measurement and print the table and one JSON line."""
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-journal-") as tmp:
        stream = bench_stream()
        native = bench_native(Path(tmp))
        systemd = bench_python_systemd()
        notify = bench_notify(Path(tmp))
        stalls = {"stream (today)": stall(stall_stream), "our JournalHandler": stall(lambda: stall_native(Path(tmp)))}
        probe = stall_python_systemd()
        if probe is not None:
            probe[2]()
            stalls["python-systemd"] = stall(stall_python_systemd)  # type: ignore[arg-type]
    print(f"log record, {CALLS} single calls, µs per call (median / p90):")
    print(f"  stream  <N> + dict repr (today)      {stream[0]:7.2f} / {stream[1]:7.2f}")
    print(f"  native  our JournalHandler + fields  {native[0]:7.2f} / {native[1]:7.2f}   dropped {native[2]}")
    if isinstance(systemd, str):
        print(f"  native  python-systemd               {systemd}")
    else:
        print(f"  native  python-systemd + fields      {systemd[0]:7.2f} / {systemd[1]:7.2f}")
    print(f"sd_notify WATCHDOG=1, {CALLS} single calls, µs per call (median / p90):")
    for name, result in notify.items():
        print(f"  {name:<15} " + (result if isinstance(result, str) else f"{result[0]:7.2f} / {result[1]:7.2f}"))
    print(f"journald stuck for {STALL_S * 1000:.0f} ms during a burst of {BURST} records, ms "
          "(longest log call / longest extra delay of another thread):")
    for name, (call_ms, gap_ms) in stalls.items():
        print(f"  {name:<20} {call_ms:7.1f} / {gap_ms:7.1f}")
        figures[f"stall_{name.split()[0].replace('-', '_')}_call_ms"] = round(call_ms, 1)
        figures[f"stall_{name.split()[0].replace('-', '_')}_thread_ms"] = round(gap_ms, 1)
    figures["log_stream_us"] = round(stream[0], 2)
    figures["log_native_ours_us"] = round(native[0], 2)
    figures["log_native_ours_dropped"] = native[2]
    figures["log_native_python_systemd_us"] = None if isinstance(systemd, str) else round(systemd[0], 2)
    for name, result in notify.items():
        figures[f"notify_{name.replace('-', '_')}_us"] = None if isinstance(result, str) else round(result[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
