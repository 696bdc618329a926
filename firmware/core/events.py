"""The ``events`` stream: journal records after an id, and with ``follow`` every new one as it is written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import Field

from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, Params
from firmware.core.journal import Journal

FOLLOW_QUEUE = 1000  # records a --follow client may fall behind before it is cut off


class EventsParams(Params):
    """``events``: the records after ``since``, or only the ``last`` N; ``follow`` keeps streaming."""

    since: Annotated[int, Field(ge=0)] = 0
    last: Annotated[int, Field(ge=0, le=100_000)] | None = None
    follow: bool = False


def register_events(endpoints: Endpoints, journal: Journal) -> None:
    """Answer ``{"cmd": "events", "since": ID, "last": N, "follow": bool}``."""

    def handler(request: dict[str, Any]) -> AsyncIterator[dict[str, Any] | bytes]:
        since = request["since"]
        if request["last"] is not None:  # only the newest N (the panel's "last events" page)
            since = max(since, journal.next_id - 1 - request["last"])
        return stream_events(journal, since, request["follow"])

    endpoints.add_stream("events", handler, EventsParams)



async def stream_events(journal: Journal, since: int, follow: bool) -> AsyncIterator[dict[str, Any] | bytes]:
    """Reply items for the records after ``since`` (already encoded), then with ``follow`` each new record."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
    overflowed = False

    def listener(record: dict[str, Any]) -> None:
        nonlocal overflowed
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            overflowed = True

    if follow:
        journal.add_listener(listener)
    try:
        # Old events may come from the rotated files: read them off the heartbeat loop, and send them on as
        # the files hold them (see Journal.since_encoded).
        history = await asyncio.to_thread(journal.since_encoded, since)
        for line in history:
            yield b'{"ok": true, "event": ' + line + b"}"
        last = json.loads(history[-1])["id"] if history else since
        while follow and not overflowed:
            record = await queue.get()
            if record["id"] > last:
                yield {"ok": True, "event": record}
        if overflowed:
            raise ControlError("events --follow: the client reads too slowly; reconnect with --since")
    finally:
        journal.remove_listener(listener)
