"""The control path's registry, its in-process client, and the alarm board."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from firmware.core.alarms import Alarm, AlarmBoard
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, LocalClient, Params, SourceParams


def test_commands_streams_and_status_sections_come_from_their_owners() -> None:
    endpoints = Endpoints()
    endpoints.add_command("ping", lambda request: "pong")

    async def slow(request: dict[str, Any]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"n": int(request["n"]) * 2}

    async def numbers(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for n in range(int(request["count"])):
            yield {"ok": True, "event": {"id": n}}

    class Number(Params):
        n: int

    class Count(Params):
        count: int = 0

    endpoints.add_command("double", slow, Number)
    endpoints.add_stream("numbers", numbers, Count)
    endpoints.add_status(lambda: {"node": "alpha"})
    endpoints.add_status(lambda: {"sensors": [], "node": "alpha-again"})

    async def scenario() -> None:
        assert await endpoints.handle({"cmd": "ping"}) == {"ok": True, "result": "pong"}
        assert await endpoints.handle({"cmd": "double", "n": 21}) == {"ok": True, "result": {"n": 42}}
        stream = await endpoints.handle({"cmd": "numbers", "count": 3})
        assert [item["event"]["id"] async for item in stream] == [0, 1, 2]
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            await endpoints.handle({"cmd": "nope"})

    asyncio.run(scenario())
    assert endpoints.status() == {"node": "alpha-again", "sensors": []}  # later sections win, in order
    assert endpoints.names == ["double", "numbers", "ping"]
    with pytest.raises(ValueError, match="registered twice"):
        endpoints.add_command("numbers", lambda request: None)


class ForceParams(SourceParams):
    force: bool = False


def test_parameters_are_checked_strictly_before_the_handler_runs() -> None:
    """Issue 14: ``"force": "false"`` forced a demote; a wrong type is an error naming the key, never coerced."""
    endpoints = Endpoints()
    seen: list[dict[str, Any]] = []
    endpoints.add_command("demote", lambda request: seen.append(request) or "ok", ForceParams)
    endpoints.add_command("ping", lambda request: "pong")

    async def scenario() -> None:
        for bad, says in [({"force": "false"}, "force: Input should be a valid boolean"),
                          ({"force": 0}, "force: Input should be a valid boolean"),
                          ({"source": 7}, "source: Input should be a valid string"),
                          ({"source": "x" * 65}, "source: String should have at most 64 characters"),
                          ({"forse": True}, "forse: Extra inputs are not permitted")]:
            with pytest.raises(ControlError, match=f"demote: {says}"):
                await endpoints.handle({"cmd": "demote", **bad})
        with pytest.raises(ControlError, match="ping: extra: Extra inputs"):
            await endpoints.handle({"cmd": "ping", "extra": 1})
        assert await endpoints.handle({"cmd": "demote"}) == {"ok": True, "result": "ok"}
        assert await endpoints.handle({"cmd": "demote", "force": True, "source": "panel"}) == {"ok": True,
                                                                                              "result": "ok"}

    asyncio.run(scenario())
    assert seen == [{"cmd": "demote", "force": False, "source": "cli"},
                    {"cmd": "demote", "force": True, "source": "panel"}]  # the defaults filled in


def test_local_client_runs_requests_on_the_loop_and_returns_json() -> None:
    endpoints = Endpoints()
    loop_thread: list[int] = []

    def where(request: dict[str, Any]) -> dict[str, Any]:
        loop_thread.append(threading.get_ident())
        return {"tuple": (1, 2)}

    def refuse(request: dict[str, Any]) -> None:
        raise ControlError("refused: peer silent")

    def crash(request: dict[str, Any]) -> None:
        raise RuntimeError("bug")

    async def events(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"ok": True, "event": {"id": 7}}

    endpoints.add_command("where", where)
    endpoints.add_command("refuse", refuse)
    endpoints.add_command("crash", crash)
    endpoints.add_stream("events", events)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        client = LocalClient(endpoints, lambda: loop)
        assert client.request({"cmd": "where"}, timeout=5) == {"tuple": [1, 2]}  # as a socket client sees it
        assert loop_thread == [runner.ident]
        with pytest.raises(ControlError, match="refused: peer silent"):
            client.request({"cmd": "refuse"}, timeout=5)
        with pytest.raises(ControlError, match="internal error: bug"):
            client.request({"cmd": "crash"}, timeout=5)
        assert client.stream({"cmd": "events"}, timeout=5) == [{"ok": True, "event": {"id": 7}}]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
    with pytest.raises(ControlError, match="not running"):
        LocalClient(endpoints, lambda: loop).request({"cmd": "where"}, timeout=1)


def test_silencing_goes_by_key_not_by_text() -> None:
    live: list[Alarm] = [Alarm("sensor:inlet", "warning", "inlet WARNING: 41 °C"),
                         Alarm("peer", "critical", "peer bravo silent on every link")]
    board = AlarmBoard()
    board.add_source(lambda: list(live))
    assert board.snapshot()["alarm_silenced"] is False
    board.silence(board.active())
    live[0] = Alarm("sensor:inlet", "warning", "inlet WARNING: 42.5 °C")  # new reading, reworded text
    snapshot = board.snapshot()
    assert snapshot["alarm_silenced"] is True
    assert snapshot["alarms"][0] == {"key": "sensor:inlet/warning", "source": "sensor:inlet", "level": "warning",
                                     "text": "inlet WARNING: 42.5 °C"}
    live[0] = Alarm("sensor:inlet", "critical", "inlet CRITICAL: 55 °C")  # worse: a new alarm sounds
    assert board.snapshot()["alarm_silenced"] is False


def test_a_cleared_alarm_that_returns_sounds_again() -> None:
    live = [Alarm("sensor:psu1", "critical", "psu1 CRITICAL: AC input lost")]
    board = AlarmBoard()
    board.add_source(lambda: list(live))
    board.silence(board.active())
    assert board.snapshot()["alarm_silenced"] is True
    board.forget("sensor:psu1")  # the sensor's alarm cleared between two snapshots
    assert board.snapshot()["alarm_silenced"] is False
