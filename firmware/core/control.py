"""Control socket: JSON lines over a Unix socket. One request, one response; `events` streams.

Request:  {"cmd": "status"} or {"cmd": "promote", "force": false}, one per line.
Response: {"ok": true, "result": ...} or {"ok": false, "error": "one clear line"}.
A streaming request ({"cmd": "events"}) gets {"ok": true, "event": {...}}
lines and then {"ok": true, "end": true}; with "follow": true it keeps sending
events until the client hangs up.

No client may starve the node (DESIGN principle 2): requests are answered one
at a time with the loop free in between; a connection is closed after
:data:`IDLE_TIMEOUT_S` without a whole request (a stream that is sending is not
idle); at most :data:`MAX_CONNECTIONS` are open, :data:`MAX_PER_UID` per user
(SO_PEERCRED). A new connection over a cap does not lock its user out: the
connection that has been idle longest (of that user, or of the user holding
the most) is closed to make room. So idle connections can never exhaust the
descriptors the failover path needs (witness, hooks, journal, probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

from firmware.errors import TandemError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 65536
MAX_CONNECTIONS = 64  # open at once, all users
MAX_PER_UID = 32  # open at once, one user
IDLE_TIMEOUT_S = 60.0  # without a whole request (a stream that is sending is never idle)
# A stream's item is a reply object, or one already encoded as JSON (bytes, no newline).
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | AsyncIterator[dict[str, Any] | bytes]]]


class ControlError(TandemError):
    """The daemon could not be reached or refused the request."""


@dataclass(eq=False)
class Connection:
    """One client connection: whose it is and when it last did something."""

    uid: int
    writer: asyncio.StreamWriter
    task: asyncio.Task | None
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False  # answering a request or sending a stream: not idle

    def close(self, why: str) -> None:
        """End the connection (its handler task is cancelled), telling the client why if it still listens."""
        with contextlib.suppress(Exception):
            self.writer.write(json.dumps({"ok": False, "error": why}).encode() + b"\n")
        self.writer.close()
        if self.task is not None:
            self.task.cancel()


class ControlServer:
    """Serves the control socket; each request goes to `handler`. Caps connections and closes idle ones."""

    def __init__(self, path: Path, handler: Handler, group: str | None = None,
                 max_connections: int = MAX_CONNECTIONS, max_per_uid: int = MAX_PER_UID,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        self.idle_timeout_s = idle_timeout_s
        self.evicted = 0  # connections closed to make room for a newer one
        self.idle_closed = 0  # connections closed after idle_timeout_s
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[Connection] = set()

    async def start(self) -> None:
        """Create the socket (mode 0660, optional group); a stale socket file is replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; refusing to replace it")
            if socket_in_use(self.path):
                raise ControlError(f"{self.path} is in use by another running daemon")
            self.path.unlink()
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise ControlError(f"control_group {self.group!r} does not exist (create it with groupadd)") from None
            os.chown(self.path, -1, gid)

    async def close(self) -> None:
        """Stop listening, end open connections, remove the socket file."""
        if self._server is not None:
            self._server.close()
            for connection in list(self._clients):
                if connection.task is not None:
                    connection.task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(peer_uid(writer), writer, asyncio.current_task())
        self._make_room(connection.uid)
        self._clients.add(connection)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout_s)
                except (ValueError, asyncio.LimitOverrunError):
                    await _write(writer, {"ok": False, "error": "request too long"})
                    return
                except asyncio.TimeoutError:
                    self.idle_closed += 1
                    connection.close(f"closed: no request for {self.idle_timeout_s:g} s")
                    return
                if not line:
                    return
                connection.last_active = time.monotonic()
                await self._answer(line, writer, connection)
                connection.last_active = time.monotonic()
                # Pipelined requests are already buffered: reading the next one does not suspend, so
                # without this one client's megabyte of requests would run back to back and hold the
                # heartbeat tick off (issue 14). One request at a time, the loop in between.
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:  # whatever a client sent, the handler ends here, never as an unretrieved exception
            log.exception("control: a connection failed")
            return
        finally:
            self._clients.discard(connection)
            writer.close()

    def _make_room(self, uid: int) -> None:
        """Before a new connection of `uid` counts: close the longest-idle one if a cap is reached."""
        mine = [c for c in self._clients if c.uid == uid]
        if len(mine) >= self.max_per_uid:
            candidates = mine
        elif len(self._clients) >= self.max_connections:
            counts: dict[int, int] = {}
            for c in self._clients:
                counts[c.uid] = counts.get(c.uid, 0) + 1
            busiest = max(counts, key=lambda u: counts[u])
            candidates = [c for c in self._clients if c.uid == busiest]
        else:
            return
        # An idle connection goes first (among busy ones too, the one quiet longest).
        victim = min(candidates, key=lambda c: (c.busy, c.last_active))
        self._clients.discard(victim)
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            log.warning("control: too many connections (%d open, at most %d, %d per user): "
                        "closing the longest idle ones (%d so far)", len(self._clients) + 1,
                        self.max_connections, self.max_per_uid, self.evicted)
        victim.close("closed: too many connections; the longest idle one is closed for a new one")

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter, connection: Connection) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError("a request is a JSON object with a string `cmd`")
        except RecursionError:  # json's C scanner recurses once per level of nesting
            await _write(writer, {"ok": False, "error": "bad request: nested too deeply"})
            return
        except ValueError as exc:
            await _write(writer, {"ok": False, "error": f"bad request: {exc}"})
            return
        try:
            result = await self.handler(request)
        except ControlError as exc:
            await _write(writer, {"ok": False, "error": str(exc)})
            return
        except Exception as exc:  # a bug in one command must not take the daemon down
            log.exception("control: %s failed", request.get("cmd"))
            await _write(writer, {"ok": False, "error": f"internal error: {exc}"})
            return
        if isinstance(result, dict):
            await _write(writer, result)
            return
        connection.busy = True
        try:
            async for item in result:
                await _write(writer, item)
                connection.last_active = time.monotonic()
                # A reader as fast as we write keeps the socket from filling, so drain() never waits: without
                # this a long history (45,000 events after a command flood) went out in one stretch of the loop.
                await asyncio.sleep(0)
        finally:
            connection.busy = False
        await _write(writer, {"ok": True, "end": True})


async def _write(writer: asyncio.StreamWriter, item: dict[str, Any] | bytes) -> None:
    """One reply line: `item` as JSON, or as it is if it is encoded already (a stream's long history)."""
    writer.write((item if isinstance(item, bytes) else json.dumps(item, default=str).encode()) + b"\n")
    await writer.drain()


def peer_uid(writer: asyncio.StreamWriter) -> int:
    """The connecting process's user id (SO_PEERCRED), or -1 if the socket cannot say."""
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except (AttributeError, OSError):
        return -1
    return uid


def socket_in_use(path: Path) -> bool:
    """Whether something (a running daemon) accepts connections on the control socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.connect(str(path))
                break
            except BlockingIOError:  # the listen backlog is full (a flood of connections): try again
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"cannot reach the daemon: {path} does not exist (is `tandem run` running?)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"cannot reach the daemon: permission denied on {path} (run as root or join its group)") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    return sock


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise ControlError("the daemon did not answer in time") from None
        if not chunk:
            if buffer.strip():
                yield json.loads(buffer)
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request and return its result; raise ControlError with the daemon's reason."""
    with _connect(path, timeout) as sock:
        sock.sendall(json.dumps(payload).encode() + b"\n")
        for reply in _lines(sock):
            if not reply.get("ok"):
                raise ControlError(reply.get("error", "request failed"))
            return reply.get("result")
    raise ControlError("the daemon closed the connection without answering")


def stream(path: Path, payload: dict[str, Any], timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Send a streaming request (e.g. events --follow); yield each item until the daemon stops.

    ``timeout`` bounds each wait for the next item (None: wait as long as it takes, for --follow).
    """
    with _connect(path, 10.0) as sock:
        sock.sendall(json.dumps(payload).encode() + b"\n")
        sock.settimeout(timeout)
        for reply in _lines(sock):
            if not reply.get("ok"):
                raise ControlError(reply.get("error", "request failed"))
            if reply.get("end"):
                return
            yield reply
