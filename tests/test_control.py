"""The control socket: JSON lines over a Unix socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from firmware.core.control import ControlError, ControlServer, request, stream

TIMEOUT = 20.0


async def handler(req: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    cmd = req["cmd"]
    if cmd == "echo":
        return {"ok": True, "result": {"got": req}}
    if cmd == "refuse":
        raise ControlError("peer is not ready for a handover")
    if cmd == "crash":
        raise RuntimeError("boom")
    if cmd == "events":
        async def events() -> AsyncIterator[dict[str, Any]]:
            for n in range(req.get("count", 3)):
                yield {"ok": True, "event": {"id": n + 1}}
            if req.get("follow"):
                await asyncio.Event().wait()  # keep the stream open like `events --follow`
        return events()
    raise ControlError(f"unknown command {cmd}")


def run(test: Callable[[Path], Awaitable[None]], path: Path) -> None:
    async def main() -> None:
        await asyncio.wait_for(test(path), TIMEOUT)
    asyncio.run(main())


def sock_path(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "control.sock"
    assert len(str(path)) < 100, "socket path too long for AF_UNIX"
    return path


async def started(path: Path) -> ControlServer:
    server = ControlServer(path, handler)
    await server.start()
    return server


async def raw_exchange(path: Path, data: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return json.loads(line)


def test_request_round_trip(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            result = await asyncio.to_thread(request, path, {"cmd": "echo", "force": True}, 10.0)
            assert result == {"got": {"cmd": "echo", "force": True}}
            # Several requests on one connection, one answer each.
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "echo", "n": 1}\n{"cmd": "echo", "n": 2}\n')
            await writer.drain()
            first = json.loads(await reader.readline())
            second = json.loads(await reader.readline())
            writer.close()
            assert first["result"]["got"]["n"] == 1 and second["result"]["got"]["n"] == 2
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_control_error_reaches_the_client(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            with pytest.raises(ControlError, match="^peer is not ready for a handover$"):
                await asyncio.to_thread(request, path, {"cmd": "refuse"}, 10.0)
            # A bug in a command is reported, and the server keeps serving.
            with pytest.raises(ControlError, match="internal error: boom"):
                await asyncio.to_thread(request, path, {"cmd": "crash"}, 10.0)
            assert await asyncio.to_thread(request, path, {"cmd": "echo"}, 10.0) == {"got": {"cmd": "echo"}}
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


DEEP = b'{"cmd": "ping", "x": ' + b"[" * 30000 + b"]" * 30000 + b"}\n"  # issue 14: 30,000 levels, under 64 KiB


@pytest.mark.parametrize("line", [b"this is not json\n", b"[1, 2]\n", b'{"cmd": 5}\n', b'{"nocmd": 1}\n', DEEP],
                         ids=["not-json", "array", "cmd-not-a-string", "no-cmd", "nested-30000-deep"])
def test_malformed_request_is_refused(tmp_path: Path, line: bytes) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            reply = await raw_exchange(path, line)
            assert reply["ok"] is False
            assert reply["error"].startswith("bad request")
            assert (await raw_exchange(path, b'{"cmd": "echo"}\n'))["ok"] is True  # the server still answers
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_pipelined_requests_let_the_loop_run_between_them(tmp_path: Path) -> None:
    """Issue 14: a megabyte of pipelined requests ran back to back and held the heartbeat tick off."""
    answered: list[int] = []
    seen_between: list[int] = []

    async def counting(req: dict[str, Any]) -> dict[str, Any]:
        answered.append(1)
        return {"ok": True, "result": len(answered)}

    async def body(path: Path) -> None:
        server = ControlServer(path, counting)
        await server.start()

        async def ticker() -> None:  # stands for the heartbeat tick: how far the batch got each time it ran
            while True:
                seen_between.append(len(answered))
                await asyncio.sleep(0)
        tick = asyncio.ensure_future(ticker())
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "echo"}\n' * 2000)  # all buffered before the first is answered
            await writer.drain()
            for _ in range(2000):
                await reader.readline()
            writer.close()
        finally:
            tick.cancel()
            await server.close()
    run(body, sock_path(tmp_path))
    assert len(answered) == 2000
    assert len({n for n in seen_between if 0 < n < 2000}) > 100, "the loop did not run between the requests"


def test_overlong_request_is_refused(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            reply = await raw_exchange(path, b'{"cmd": "' + b"x" * 70000 + b'"}\n')
            assert reply == {"ok": False, "error": "request too long"}
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_socket_mode_is_0660_and_removed_on_close(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        old_umask = os.umask(0)  # a permissive umask must not widen the socket's mode
        try:
            server = await started(path)
        finally:
            os.umask(old_umask)
        try:
            info = os.stat(path)
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o660
        finally:
            await server.close()
        assert not path.exists()
    run(body, sock_path(tmp_path))


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = sock_path(tmp_path)
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a daemon that died without removing its socket
    stale.close()
    assert path.exists()

    async def body(path: Path) -> None:
        server = await started(path)
        try:
            assert await asyncio.to_thread(request, path, {"cmd": "echo"}, 10.0) == {"got": {"cmd": "echo"}}
        finally:
            await server.close()
    run(body, path)


def test_second_server_on_a_live_socket_is_refused(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            second = ControlServer(path, handler)
            with pytest.raises(ControlError, match="in use"):
                await second.start()
            # The first server still owns the socket and answers.
            assert await asyncio.to_thread(request, path, {"cmd": "echo"}, 10.0) == {"got": {"cmd": "echo"}}
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_request_to_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="does not exist"):
        request(tmp_path / "absent.sock", {"cmd": "status"}, 5.0)


def test_request_to_a_socket_nobody_serves(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(ControlError, match="cannot reach the daemon"):
        request(path, {"cmd": "status"}, 5.0)


def test_stream_yields_several_items(tmp_path: Path) -> None:
    def first(n: int, path: Path) -> list[dict[str, Any]]:
        items = stream(path, {"cmd": "events", "count": 5, "follow": True})
        try:
            return list(itertools.islice(items, n))
        finally:
            items.close()

    async def body(path: Path) -> None:
        server = await started(path)
        try:
            items = await asyncio.to_thread(first, 4, path)
            assert [item["event"]["id"] for item in items] == [1, 2, 3, 4]
            assert all(item["ok"] for item in items)
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_stream_reports_a_refusal(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = await started(path)
        try:
            with pytest.raises(ControlError, match="unknown command nope"):
                await asyncio.to_thread(lambda: list(stream(path, {"cmd": "nope"})))
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_request_times_out_when_the_daemon_does_not_answer(tmp_path: Path) -> None:
    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"ok": True}

    async def body(path: Path) -> None:
        server = ControlServer(path, slow)
        await server.start()
        try:
            with pytest.raises(ControlError, match="did not answer in time"):
                await asyncio.to_thread(request, path, {"cmd": "status"}, 0.3)
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_a_regular_file_at_the_socket_path_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")

    async def handler(request):
        return {"ok": True, "result": None}

    async def main() -> None:
        server = ControlServer(path, handler)
        with pytest.raises(ControlError, match="not a socket"):
            await server.start()

    asyncio.run(main())
    assert path.read_text() == "precious"


def test_a_new_connection_over_the_per_user_cap_closes_the_longest_idle_one(tmp_path: Path) -> None:
    """Issue 14: ~1,100 idle connections exhausted the daemon's descriptors; a cap keeps them bounded
    without locking the user out: the oldest idle connection makes room for the new one."""
    async def body(path: Path) -> None:
        server = ControlServer(path, handler, max_connections=10, max_per_uid=3)
        await server.start()
        try:
            idle = [await asyncio.open_unix_connection(str(path)) for _ in range(3)]
            await asyncio.sleep(0.05)  # the server has taken all three
            busy_reader, busy_writer = idle[1]
            busy_writer.write(b'{"cmd": "events", "follow": true, "count": 1}\n')  # a stream is busy
            await busy_writer.drain()
            assert json.loads(await busy_reader.readline())["event"] == {"id": 1}
            reply = await raw_exchange(path, b'{"cmd": "echo"}\n')  # a fourth: served
            assert reply["ok"] is True
            first_reader, _ = idle[0]
            closed = json.loads(await first_reader.readline())  # the oldest idle one was closed, and told why
            assert closed["ok"] is False and "too many connections" in closed["error"]
            assert await first_reader.readline() == b""
            assert server.evicted == 1 and len(server._clients) <= 3
            third_reader, third_writer = idle[2]
            third_writer.write(b'{"cmd": "echo"}\n')  # the others still work
            await third_writer.drain()
            assert json.loads(await third_reader.readline())["ok"] is True
            for _, writer in idle:
                writer.close()
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_connections_over_the_total_cap_stay_bounded(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = ControlServer(path, handler, max_connections=20, max_per_uid=20)
        await server.start()
        try:
            opened = [await asyncio.open_unix_connection(str(path)) for _ in range(200)]
            await asyncio.sleep(0.1)
            assert len(server._clients) <= 20 and server.evicted >= 180
            assert (await raw_exchange(path, b'{"cmd": "echo"}\n'))["ok"] is True
            for _, writer in opened:
                writer.close()
        finally:
            await server.close()
    run(body, sock_path(tmp_path))


def test_an_idle_connection_is_closed_with_a_reason(tmp_path: Path) -> None:
    async def body(path: Path) -> None:
        server = ControlServer(path, handler, idle_timeout_s=0.3)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "echo"}\n{"cmd": "ec')  # one request, then half of one, then nothing
            await writer.drain()
            assert json.loads(await reader.readline())["ok"] is True
            closed = json.loads(await reader.readline())
            assert closed["ok"] is False and "no request for 0.3 s" in closed["error"]
            assert await reader.readline() == b"" and server.idle_closed == 1
            stream_reader, stream_writer = await asyncio.open_unix_connection(str(path))
            stream_writer.write(b'{"cmd": "events", "follow": true, "count": 1}\n')
            await stream_writer.drain()
            assert json.loads(await stream_reader.readline())["ok"] is True
            await asyncio.sleep(0.8)  # a quiet `events --follow` stream is not idle: still open
            assert server.idle_closed == 1 and len(server._clients) == 1
            stream_writer.close()
        finally:
            await server.close()
    run(body, sock_path(tmp_path))
