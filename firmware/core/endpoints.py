"""The control path: commands and the status snapshot, contributed by the components that own them.

Each component registers the control-socket commands it answers and the part
of the status snapshot it owns (as Klipper's webhooks and ``get_status`` do),
so the daemon is not a switchboard of every request. The control socket, the
in-process panel (:class:`LocalClient`) and the board's extensions all go
through :meth:`Endpoints.handle`, so every path applies the same checks.

A command handler takes the request and returns its result (or awaits it);
raising :class:`~firmware.core.control.ControlError` answers with that error.
A stream handler yields whole reply items (``{"ok": true, "event": …}``).

Every command declares its parameters as a pydantic model (`Params`: strict,
no unknown keys). A request is validated before its handler runs: a wrong
type is an error reply that names the key, never coerced (``"force":
"false"`` is not a boolean); the handler gets the request with the defaults
filled in.

A command that changes something is registered ``journaled``: its request is
written to the journal and fsync'd (a ``request`` record with its validated
parameters) before its handler runs, so an acknowledged command is always on
disk; if the journal cannot take it (a full or read-only disk) the command is
refused and nothing changes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware.core.control import ControlError
from firmware.errors import TandemError

log = logging.getLogger(__name__)

Request = dict[str, Any]
CommandHandler = Callable[[Request], Any | Awaitable[Any]]
StreamHandler = Callable[[Request], AsyncIterator[dict[str, Any] | bytes]]  # an item may be encoded JSON already
StatusProvider = Callable[[], dict[str, Any]]


class DurableLog(Protocol):
    """Where journaled commands are recorded before they run (the event journal)."""

    async def record_durable(self, kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return once the record is on disk; raise a TandemError if it cannot be."""


class Params(BaseModel):
    """A command's parameters (besides ``cmd``): strict types, no unknown keys. Subclass it per command."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SourceParams(Params):
    """A command that journals who sent it (``cli``, ``panel``, ``lab``, …)."""

    source: Annotated[str, Field(min_length=1, max_length=64)] = "cli"


def checked(params: type[Params], request: Request) -> Request:
    """`request` with its parameters validated against `params` and defaults filled; ControlError if not."""
    try:
        values = params.model_validate({k: v for k, v in request.items() if k != "cmd"})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ControlError(f"{request.get('cmd')}: {problems}") from None
    return {"cmd": request.get("cmd"), **values.model_dump()}


class Endpoints:
    """The registry of control commands, streams and status sections."""

    def __init__(self, journal: DurableLog | None = None) -> None:
        self._journal = journal
        self._commands: dict[str, CommandHandler] = {}
        self._streams: dict[str, StreamHandler] = {}
        self._params: dict[str, type[Params]] = {}
        self._journaled: set[str] = set()
        self._status: list[StatusProvider] = []

    def add_command(self, name: str, handler: CommandHandler, params: type[Params] = Params,
                    journaled: bool = False) -> None:
        """Answer ``{"cmd": name, …}`` with ``handler(request)``'s result; `params`: its parameters.

        ``journaled``: the request is on disk before the handler runs (a command that changes something).
        """
        self._claim(name)
        if journaled and self._journal is None:
            raise ValueError(f"control command {name!r} is journaled but the endpoints have no journal")
        self._commands[name] = handler
        self._params[name] = params
        if journaled:
            self._journaled.add(name)

    def add_stream(self, name: str, handler: StreamHandler, params: type[Params] = Params) -> None:
        """Answer ``{"cmd": name, …}`` with the items ``handler(request)`` yields; `params`: its parameters."""
        self._claim(name)
        self._streams[name] = handler
        self._params[name] = params

    def add_status(self, provider: StatusProvider) -> None:
        """Merge ``provider()``'s keys into every status snapshot (in registration order)."""
        self._status.append(provider)

    @property
    def names(self) -> list[str]:
        """Every command and stream name, sorted."""
        return sorted([*self._commands, *self._streams])

    def status(self) -> dict[str, Any]:
        """The status snapshot: every provider's section."""
        snapshot: dict[str, Any] = {}
        for provider in self._status:
            snapshot.update(provider())
        return snapshot

    async def handle(self, request: Request) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """One request: a reply, or an iterator of reply items for a stream."""
        cmd = request.get("cmd")
        stream = self._streams.get(cmd) if isinstance(cmd, str) else None
        if stream is not None:
            return stream(checked(self._params[cmd], request))
        handler = self._commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            raise ControlError(f"unknown command {cmd!r}")
        request = checked(self._params[cmd], request)
        if cmd in self._journaled:
            assert self._journal is not None
            try:
                await self._journal.record_durable("request", request)
            except TandemError as exc:
                raise ControlError(f"{cmd} refused, nothing was changed: {exc}") from None
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        return {"ok": True, "result": result}

    def _claim(self, name: str) -> None:
        if name in self._commands or name in self._streams:
            raise ValueError(f"control command {name!r} is registered twice")


class LocalClient:
    """The control path without the socket, for components in the daemon's own process (the panel).

    Called from their threads; each request runs on the daemon's event loop
    through :meth:`Endpoints.handle`, and its answer is passed through JSON
    so callers see exactly what a socket client would.
    """

    def __init__(self, endpoints: Endpoints, loop: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
        self._endpoints = endpoints
        self._loop = loop

    def request(self, payload: Request, timeout: float) -> Any:
        """One request's result; ControlError with the reason if refused or not answered in time."""
        return self._call(self._answer(payload), timeout)

    def stream(self, payload: Request, timeout: float) -> list[dict[str, Any]]:
        """Every item a (finite) stream request yields."""
        return self._call(self._collect(payload), timeout)

    def _call(self, coroutine: Any, timeout: float) -> Any:
        loop = self._loop()
        if loop is None or loop.is_closed():
            coroutine.close()
            raise ControlError("the daemon is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise ControlError("the daemon did not answer in time") from None

    async def _answer(self, payload: Request) -> Any:
        reply = await self._guarded(payload)
        if not isinstance(reply, dict):
            raise ControlError(f"{payload.get('cmd')} is a stream")
        return _as_json(reply)["result"]

    async def _collect(self, payload: Request) -> list[dict[str, Any]]:
        reply = await self._guarded(payload)
        if isinstance(reply, dict):
            raise ControlError(f"{payload.get('cmd')} is not a stream")
        return [_as_json(item) for item in [item async for item in reply]]

    async def _guarded(self, payload: Request) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        try:
            return await self._endpoints.handle(payload)
        except ControlError:
            raise
        except Exception as exc:  # as the socket server does: a bug in one command is an error reply
            log.exception("control: %s failed", payload.get("cmd"))
            raise ControlError(f"internal error: {exc}") from None


def _as_json(item: Any) -> Any:
    """What a socket client would read for `item` (a stream's item may come encoded already)."""
    return json.loads(item if isinstance(item, bytes) else json.dumps(item, default=str))
