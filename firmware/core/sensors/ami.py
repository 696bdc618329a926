"""Asterisk health over the Asterisk Manager Interface (AMI).

`AmiClient` is a small synchronous AMI client (it runs on a sensor worker
thread, so plain sockets are enough). `AsteriskSensor` (family ``asterisk``)
keeps one logged-in connection across polls and, on each read, checks that
Asterisk answers (Ping, CoreStatus) and that its trunks are healthy: outbound
SIP registrations, DAHDI span alarms and PRI D-channels.

Framing (see reference/asterisk-ami.md): the server greets with
``Asterisk Call Manager/<version>``; every message is ``Key: Value`` lines
ended by a blank line; replies carry the ``ActionID`` of their action;
list actions answer ``EventList: start``, then one event per item, then a
``…Complete`` event with ``EventList: Complete``.

Kept rather than panoramisk (docs/library-decisions.md, bench/ami_panoramisk.py):
panoramisk passes the same tests only behind an adapter as long as this
client, with an event loop thread per sensor and its own pinging, reconnecting
and re-sending switched off, because here the sensor scheduler decides when to
poll and reconnect and every read must end within one deadline.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from .base import Level, Reading, Sensor, SensorContext, SensorError, SensorOptions

__all__ = ["AmiActionError", "AmiAuthError", "AmiClient", "AmiError", "AmiTimeout", "AsteriskOptions",
           "AsteriskSensor"]

BANNER_PREFIX = "Asterisk Call Manager/"
_END_OF_MESSAGE = re.compile(rb"\r?\n\r?\n")
_MAX_BUFFER = 4 * 1024 * 1024  # a server that never ends a message is broken, not slow
_action_ids = itertools.count(1)

Message = dict[str, str]


class AmiError(SensorError):
    """The AMI connection failed (refused, closed, timed out, garbled); the connection is unusable."""


class AmiAuthError(AmiError):
    """Asterisk refused the login."""


class AmiTimeout(AmiError):
    """Asterisk did not answer in time (connection, banner or an action)."""


class AmiActionError(SensorError):
    """Asterisk answered an action with ``Response: Error``; the connection is still usable."""

    def __init__(self, action: str, message: str) -> None:
        """Keep the action name and Asterisk's message."""
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message


def _parse(raw: bytes) -> Message:
    """Decode one AMI message; a repeated key keeps all its values, joined by newlines."""
    message: Message = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue  # free text (old "Response: Follows" output): nothing we use
        key, value = key.strip(), value.strip()
        message[key] = f"{message[key]}\n{value}" if key in message else value
    return message


def _is(message: Message, key: str, value: str) -> bool:
    """Case-insensitive comparison of one field (Asterisk is not consistent about case)."""
    return message.get(key, "").lower() == value.lower()


class AmiClient:
    """A synchronous AMI client: login, one action at a time, replies matched by ActionID.

    ``timeout`` bounds each step (connect, banner, login, each action) as a whole,
    not each ``recv``, so a server that trickles unrelated events cannot stretch
    it. `budget` narrows that further for a group of actions. Any transport
    failure raises `AmiError` and closes the connection; the next call
    reconnects. Unsolicited events (FullyBooted, events queued between polls)
    are read and skipped.
    """

    def __init__(self, host: str, port: int = 5038, *, username: str, secret: str, timeout: float = 3.0) -> None:
        """Remember where and how to log in; nothing is opened until the first call."""
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.timeout = timeout
        self.version: str | None = None
        """The AMI protocol version from the banner (``9.0.0``), once connected."""
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._budget_deadline: float | None = None

    @property
    def where(self) -> str:
        """``host:port`` for messages (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether a logged-in connection is open (it may still turn out dead on the next call)."""
        return self._sock is not None

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Bound every step inside the block by one overall deadline, ``seconds`` from now."""
        previous = self._budget_deadline
        self._budget_deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._budget_deadline = previous

    def _deadline(self) -> float:
        deadline = time.monotonic() + self.timeout
        return deadline if self._budget_deadline is None else min(deadline, self._budget_deadline)

    # ---- connection

    def connect(self) -> None:
        """Open the connection, check the banner and log in (``Events: off``); no-op when connected."""
        if self._sock is not None:
            return
        deadline = self._deadline()
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=max(deadline - time.monotonic(),
                                                                                       0.001))
        except TimeoutError:
            raise AmiTimeout(f"Asterisk AMI at {self.where} did not accept a connection within "
                           f"{self.timeout:g} s") from None
        except OSError as exc:
            raise AmiError(f"cannot connect to Asterisk AMI at {self.where}: {exc.strerror or exc}") from None
        self._buffer.clear()
        try:
            banner = self._read_line(deadline, "its banner").decode("utf-8", "replace").strip()
            if not banner.startswith(BANNER_PREFIX):
                raise AmiError(f"{self.where} is not Asterisk AMI (banner {banner[:60]!r})")
            self.version = banner[len(BANNER_PREFIX):]
            response = self._request("Login", {"Username": self.username, "Secret": self._secret,
                                               "Events": "off"}, deadline)
            if not _is(response, "Response", "Success"):
                raise AmiAuthError(f"Asterisk AMI at {self.where} refused login as {self.username!r}: "
                                   f"{response.get('Message', 'no reason given')}")
        except BaseException:
            self.close(logoff=False)
            raise

    def close(self, logoff: bool = True) -> None:
        """Log off (briefly, best effort) and close the connection."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if logoff:
            try:
                sock.settimeout(0.2)
                sock.sendall(self._encode("Logoff", {}, f"tandem-{next(_action_ids)}"))
                sock.recv(4096)  # "Response: Goodbye"; only so the server does not log a reset
            except OSError:
                pass
        try:
            sock.close()
        finally:
            self._buffer.clear()

    def __enter__(self) -> Self:
        """Connect and log in."""
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Log off and close."""
        self.close()

    # ---- actions

    def action(self, name: str, **fields: str | int) -> Message:
        """Run one action and return its response (``Response: Success``); AmiActionError on ``Error``."""
        self.connect()
        response = self._request(name, fields, self._deadline())
        if _is(response, "Response", "Error"):
            raise AmiActionError(name, response.get("Message", "error"))
        return response

    def list_action(self, name: str, **fields: str | int) -> tuple[Message, list[Message]]:
        """Run an EventList action: its response and its events, the ``…Complete`` event last.

        Only events carrying this action's ActionID are collected. A success
        response without ``EventList: start`` (an empty list on some versions)
        gives no events.
        """
        self.connect()
        deadline = self._deadline()
        action_id = f"tandem-{next(_action_ids)}"
        response = self._request(name, fields, deadline, action_id)
        if _is(response, "Response", "Error"):
            raise AmiActionError(name, response.get("Message", "error"))
        events: list[Message] = []
        if not _is(response, "EventList", "start"):
            return response, events
        while True:
            message = self._read_message(deadline, name)
            if message.get("ActionID") != action_id or "Event" not in message:
                continue
            events.append(message)
            if _is(message, "EventList", "Complete") or message["Event"].endswith("Complete"):
                return response, events

    def _request(self, name: str, fields: dict[str, str | int], deadline: float,
                 action_id: str | None = None) -> Message:
        """Send an action and return the response carrying its ActionID, skipping everything else."""
        action_id = action_id or f"tandem-{next(_action_ids)}"
        self._send(self._encode(name, fields, action_id), name, deadline)
        while True:
            message = self._read_message(deadline, name)
            if "Response" in message and message.get("ActionID", action_id) == action_id:
                return message

    @staticmethod
    def _encode(name: str, fields: dict[str, str | int], action_id: str) -> bytes:
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        for key, value in fields.items():
            text = str(value)
            if "\r" in text or "\n" in text:
                raise ValueError(f"AMI field {key} must be one line")
            lines.append(f"{key}: {text}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # ---- transport

    def _send(self, data: bytes, what: str, deadline: float) -> None:
        sock = self._require()
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(data)
        except TimeoutError:
            self.close(logoff=False)
            raise AmiTimeout(f"Asterisk AMI at {self.where} did not take {what} within {self.timeout:g} s") from None
        except OSError as exc:
            self.close(logoff=False)
            raise AmiError(f"Asterisk AMI at {self.where}: sending {what} failed: {exc.strerror or exc}") from None

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise AmiError(f"Asterisk AMI at {self.where}: not connected")
        return self._sock

    def _fill(self, deadline: float, what: str) -> None:
        """Receive more bytes before ``deadline``; AmiError (and close) on timeout, EOF or error."""
        sock = self._require()
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
        except TimeoutError:
            self.close(logoff=False)
            raise AmiTimeout(f"Asterisk AMI at {self.where} did not answer {what} within "
                           f"{self.timeout:g} s") from None
        except OSError as exc:
            self.close(logoff=False)
            raise AmiError(f"Asterisk AMI at {self.where}: connection lost waiting for {what}: "
                           f"{exc.strerror or exc}") from None
        if not chunk:
            self.close(logoff=False)
            raise AmiError(f"Asterisk AMI at {self.where} closed the connection (waiting for {what})")
        self._buffer += chunk
        if len(self._buffer) > _MAX_BUFFER:
            self.close(logoff=False)
            raise AmiError(f"Asterisk AMI at {self.where} sent an unterminated message over "
                           f"{_MAX_BUFFER} bytes")

    def _read_line(self, deadline: float, what: str) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            self._fill(deadline, what)
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    def _read_message(self, deadline: float, what: str) -> Message:
        while True:
            while (match := _END_OF_MESSAGE.search(self._buffer)) is None:
                self._fill(deadline, what)
            raw = bytes(self._buffer[:match.start()])
            del self._buffer[:match.end()]
            if raw.strip():
                return _parse(raw)


# ---- the sensor


class AsteriskOptions(SensorOptions):
    """Options of the ``asterisk`` family."""

    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = Field(min_length=1)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    """A file holding the secret (read once, surrounding whitespace stripped); instead of ``secret``."""
    timeout_s: float = Field(3.0, gt=0, le=60)
    """The whole read (connect, login and every action) must finish within this."""
    registrations: Literal["pjsip", "sip", "none"] = "pjsip"
    """Which outbound registrations to check: PJSIP, chan_sip, or none."""
    dahdi: bool = False
    """Check DAHDI span alarms (DAHDIShowStatus)."""
    pri: bool = False
    """Check PRI D-channels (PRIShowSpans)."""
    min_registered: int | None = Field(None, ge=0)
    """Fewest registered trunks that is still healthy; unset means all of them."""

    @model_validator(mode="after")
    def _one_secret(self) -> AsteriskOptions:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret and secret_file")
        return self


class AsteriskSensor(Sensor):
    """Family ``asterisk``: is Asterisk answering, and are its trunks up.

    Each read runs Ping (``ping_ms``) and CoreStatus (``current_calls``,
    ``processed_calls``); if Asterisk cannot be reached, refuses the login or
    does not answer, the read raises SensorError (UNKNOWN).

    Then, as configured: outbound registrations (``registered``,
    ``not_registered``; a trunk not Registered is CRITICAL, or WARNING while
    at least ``min_registered`` still are), DAHDI spans (``dahdi_alarmed``;
    any alarm but OK/UNCONFIGURED is CRITICAL) and PRI spans (``pri_down``;
    ``Alarm: Yes`` or ``Up: No`` is CRITICAL). A configured check whose action
    Asterisk rejects (module not loaded) is CRITICAL too: those trunks cannot
    carry calls.

    The connection stays open between reads. If it turns out dead on reuse
    (Asterisk restarted), the read reconnects once; a timeout is not retried.
    """

    family = "asterisk"
    Options = AsteriskOptions
    options: AsteriskOptions

    def __init__(self, name: str, options: AsteriskOptions, context: SensorContext) -> None:
        """Keep the options; the connection opens on the first read."""
        super().__init__(name, options, context)
        self._client: AmiClient | None = None

    def _secret(self) -> str:
        if self.options.secret is not None:
            return self.options.secret.get_secret_value()
        path = self.options.secret_file
        assert path is not None
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SensorError(f"secret_file {path}: {exc.strerror or exc}") from None

    def _connection(self) -> AmiClient:
        if self._client is None:
            # secret_file is read once, when the client is first built
            # read() narrows every step to 90 % of timeout_s with budget(), so a hung Asterisk ends the
            # read before the scheduler gives up on it; messages still quote the configured timeout_s
            self._client = AmiClient(self.options.host, self.options.port, username=self.options.username,
                                     secret=self._secret(), timeout=self.options.timeout_s)
        return self._client

    def read(self) -> Reading:
        """Poll Asterisk once (see the class docstring)."""
        client = self._connection()
        reused = client.connected
        with client.budget(self.options.timeout_s * 0.9):
            try:
                pong = self._ping(client)
            except (AmiAuthError, AmiTimeout):
                raise
            except AmiError:
                if not reused:
                    raise
                pong = self._ping(client)  # the kept connection died (Asterisk restarted): one fresh try
            return self._poll(client, pong)

    @staticmethod
    def _ping(client: AmiClient) -> float:
        client.connect()
        sent = time.monotonic()
        client.action("Ping")
        return (time.monotonic() - sent) * 1000

    def _poll(self, client: AmiClient, ping_ms: float) -> Reading:
        try:
            core = client.action("CoreStatus")
        except AmiActionError as exc:
            raise SensorError(f"Asterisk AMI at {client.where}: {exc}") from None
        values: dict[str, float] = {"ping_ms": round(ping_ms, 3)}
        units = {"ping_ms": "ms"}
        for key, field in (("current_calls", "CoreCurrentCalls"), ("processed_calls", "CoreProcessedCalls")):
            try:
                values[key] = float(core[field])
            except (KeyError, ValueError):
                pass
        info = {"ami_version": client.version or ""}
        if core.get("CoreStartupDate"):
            info["started"] = f"{core['CoreStartupDate']} {core.get('CoreStartupTime', '')}".strip()

        checks = _Findings()
        if self.options.registrations != "none":
            self._check_registrations(client, checks, values)
        if self.options.dahdi:
            self._check_dahdi(client, checks, values)
        if self.options.pri:
            self._check_pri(client, checks, values)

        calls = int(values.get("current_calls", 0))
        if checks.problems:
            summary = "; ".join(checks.problems)
        else:
            parts = [f"Asterisk up, ping {ping_ms:.1f} ms", f"{calls} call{'s' if calls != 1 else ''}"]
            parts.extend(checks.notes)
            summary = ", ".join(parts)
        return Reading(level=checks.level, summary=summary, values=values, units=units,
                       conditions=tuple(dict.fromkeys(checks.conditions)), info=info)

    def _check_registrations(self, client: AmiClient, checks: _Findings, values: dict[str, float]) -> None:
        pjsip = self.options.registrations == "pjsip"
        action, item = (("PJSIPShowRegistrationsOutbound", "OutboundRegistrationDetail") if pjsip
                        else ("SIPshowregistry", "RegistryEntry"))
        try:
            _, events = client.list_action(action)
        except AmiActionError as exc:
            checks.add(Level.CRITICAL, f"registrations unavailable ({exc})", "registrations_unavailable")
            return
        trunks: list[tuple[str, str]] = []
        for event in events:
            if event.get("Event") != item:
                continue
            if pjsip:
                trunks.append((event.get("ObjectName", "?"), event.get("Status", "?")))
            else:
                host = event.get("Host", "?")
                user = event.get("Username")
                trunks.append((f"{user}@{host}" if user else host, event.get("State", "?")))
        down = [(name, status) for name, status in trunks if status.lower() != "registered"]
        registered = len(trunks) - len(down)
        values["registered"] = registered
        values["not_registered"] = len(down)
        minimum = len(trunks) if self.options.min_registered is None else self.options.min_registered
        level = Level.CRITICAL if registered < minimum else Level.WARNING
        for name, status in down:
            checks.add(level, f"trunk {name} {status}", "trunk_not_registered")
        if registered < minimum and self.options.min_registered is not None:
            checks.add(Level.CRITICAL, f"{registered} of {len(trunks)} trunks registered, "
                       f"need {minimum}", "too_few_registered")
        checks.notes.append(f"{registered}/{len(trunks)} trunks registered")

    @staticmethod
    def _check_dahdi(client: AmiClient, checks: _Findings, values: dict[str, float]) -> None:
        try:
            _, events = client.list_action("DAHDIShowStatus")
        except AmiActionError as exc:
            checks.add(Level.CRITICAL, f"DAHDI unavailable ({exc})", "dahdi_unavailable")
            return
        spans = [e for e in events if e.get("Event") == "DAHDIShowStatus"]
        alarmed = 0
        for span in spans:
            alarms = span.get("Alarms", "?")
            if alarms.upper() not in ("OK", "UNCONFIGURED"):
                alarmed += 1
                checks.add(Level.CRITICAL, f"span {span.get('Span', '?')}: {alarms}", "dahdi_span_alarm")
        values["dahdi_alarmed"] = alarmed
        checks.notes.append(f"{len(spans) - alarmed}/{len(spans)} DAHDI spans OK")

    @staticmethod
    def _check_pri(client: AmiClient, checks: _Findings, values: dict[str, float]) -> None:
        try:
            _, events = client.list_action("PRIShowSpans")
        except AmiActionError as exc:
            checks.add(Level.CRITICAL, f"PRI unavailable ({exc})", "pri_unavailable")
            return
        spans = [e for e in events if e.get("Event") == "PRIShowSpans"]
        down = 0
        for span in spans:
            alarm, up = _is(span, "Alarm", "Yes"), _is(span, "Up", "Yes")
            if alarm or not up:
                down += 1
                why = "alarm" if alarm else "D-channel down"
                checks.add(Level.CRITICAL, f"PRI span {span.get('Span', '?')}: {why}", "pri_span_down")
        values["pri_down"] = down
        checks.notes.append(f"{len(spans) - down}/{len(spans)} PRI spans up")

    def close(self) -> None:
        """Log off and close the AMI connection."""
        if self._client is not None:
            self._client.close()


class _Findings:
    """What the trunk checks found: the worst level, problem lines, conditions, and notes for an OK summary."""

    def __init__(self) -> None:
        self.level = Level.OK
        self.problems: list[str] = []
        self.conditions: list[str] = []
        self.notes: list[str] = []

    def add(self, level: Level, problem: str, condition: str) -> None:
        self.level = Level.worst(self.level, level)
        self.problems.append(problem)
        self.conditions.append(condition)

