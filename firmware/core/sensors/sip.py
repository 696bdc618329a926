"""SIP OPTIONS probe: does the PBX's SIP stack answer?

Family ``sip_options`` sends one RFC 3261 OPTIONS request over UDP,
retransmitting it like a non-INVITE client transaction (timer E: 500 ms,
1 s, 2 s, … up to the timeout), and waits for the final response whose top
Via branch, Call-ID and CSeq match the request.

Verdicts (without ``expect``):

- any final response below 500 is OK: many PBXs answer OPTIONS with 404
  (no such user) or 401/407 (auth required) and yet are perfectly up; what
  the probe asks is "is the SIP stack alive and processing requests";
- 5xx is CRITICAL: the server is up but says it cannot serve (503 is what
  a PBX that is overloaded or shutting down answers), so calls fail now;
- 6xx is WARNING: the stack answers but globally refuses; unusual for OPTIONS;
- no final answer within ``timeout_s`` is CRITICAL, not UNKNOWN: silence is
  exactly what this probe exists to detect (a dead or wedged PBX); UNKNOWN is
  kept for probes that could not be sent at all (socket errors).

With ``expect``, a listed status is OK; an unlisted 5xx stays CRITICAL and
any other unlisted status is WARNING.

The target host must be an IP address: a health check that needs DNS fails
when DNS does, and would then fail over for the wrong reason.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from .base import Level, Reading, Sensor, SensorError, SensorOptions

__all__ = ["SipOptionsOptions", "SipOptionsSensor", "SipUri", "build_options_request", "parse_response",
           "parse_sip_uri"]

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7: branches of compliant clients start with this
T1 = 0.5  # RFC 3261 timer T1, the first retransmission interval
_URI = re.compile(r"^sips?:(?:(?P<user>[^@;?]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;?\[\]]+)(?::(?P<port>\d+))?"
                  r"(?P<params>;[^?]*)?$")


@dataclass(frozen=True)
class SipUri:
    """The parts of a ``sip:`` URI the probe needs."""

    text: str
    user: str | None
    host: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    @property
    def hostport(self) -> str:
        """``host:port`` as written in SIP (IPv6 in brackets)."""
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{host}:{self.port}"


def parse_sip_uri(text: str) -> SipUri:
    """Parse ``sip:[user@]host[:port][;params]`` with an IP-address host; ValueError if it is not one."""
    match = _URI.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a sip: URI (sip:[user@]host[:port])")
    if text.startswith("sips:"):
        raise ValueError("sips: needs TLS; only UDP is supported")
    host = match["host"].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} must be an IP address (no DNS in health checks)") from None
    port = int(match["port"] or 5060)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return SipUri(text=text.strip(), user=match["user"], host=address, port=port)


class SipOptionsOptions(SensorOptions):
    """Options of the ``sip_options`` family."""

    uri: str
    """Whom to ask, e.g. ``sip:pbx@127.0.0.1:5060`` (IP address host; port 5060 if omitted)."""
    transport: Literal["udp"] = "udp"
    timeout_s: float = Field(2.0, gt=0, le=60)
    """How long to wait for a final response (retransmitting meanwhile); the read ends a bit before."""
    local_port: int = Field(0, ge=0, le=65535)
    """Local UDP port to send from (0: any free port)."""
    expect: list[int] | None = None
    """Status codes that mean healthy; unset: any final response below 500."""

    @field_validator("uri")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        parse_sip_uri(value)
        return value.strip()

    @field_validator("expect")
    @classmethod
    def _valid_codes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("expect must list at least one status code (or be left out)")
            bad = [code for code in value if not 100 <= code <= 699]
            if bad:
                raise ValueError(f"not SIP status codes: {bad}")
        return value


@dataclass(frozen=True)
class SipResponse:
    """A parsed SIP response: status line and headers (compact forms expanded, names lower case)."""

    status: int
    reason: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}


def parse_response(data: bytes) -> SipResponse | None:
    """Parse a SIP response datagram; None if it is not one (a request, garbage)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.replace("\r\n", "\n").split("\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or status_line[0].upper() != "SIP/2.0" or not status_line[1].isdigit():
        return None
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:  # folded header line
            headers[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        name = _COMPACT.get(name, name)
        # Via may carry several comma-separated hops in one header line
        parts = [p.strip() for p in value.split(",")] if name == "via" else [value.strip()]
        headers.setdefault(name, []).extend(parts)
        last = name
    return SipResponse(int(status_line[1]), status_line[2].strip() if len(status_line) > 2 else "", headers)


def _via_branch(via: str) -> str | None:
    match = re.search(r";\s*branch\s*=\s*([^;,\s]+)", via, re.IGNORECASE)
    return match.group(1) if match else None


def build_options_request(uri: SipUri, local_host: str, local_port: int, branch: str, tag: str,
                          call_id: str, cseq: int = 1) -> bytes:
    """An RFC 3261 OPTIONS request with every mandatory header (§8.1.1) and ``Content-Length: 0``."""
    local = f"[{local_host}]" if ":" in local_host else local_host
    lines = [
        f"OPTIONS {uri.text} SIP/2.0",
        f"Via: SIP/2.0/UDP {local}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:tandem@{local}>;tag={tag}",
        f"To: <{uri.text}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        f"Contact: <sip:tandem@{local}:{local_port}>",
        "Accept: application/sdp",
        "User-Agent: Tandem",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class SipOptionsSensor(Sensor):
    """Family ``sip_options``: an OPTIONS ping to the PBX (verdicts in the module docstring).

    Values: ``rtt_ms`` (first transmission to matching final response) and
    ``status``; info ``server`` (the Server or User-Agent header).
    """

    family = "sip_options"
    Options = SipOptionsOptions
    options: SipOptionsOptions

    def read(self) -> Reading:
        """Send one OPTIONS transaction and judge the answer."""
        uri = parse_sip_uri(self.options.uri)
        family = socket.AF_INET6 if uri.host.version == 6 else socket.AF_INET
        wait = self.options.timeout_s * 0.9
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise SensorError(f"cannot open a UDP socket: {exc.strerror or exc}") from None
        with sock:
            try:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", self.options.local_port))
                sock.connect((str(uri.host), uri.port))  # also filters replies from other addresses
                local_host, local_port = sock.getsockname()[:2]
            except OSError as exc:
                raise SensorError(f"cannot send to {uri.hostport} from local port {self.options.local_port}: "
                                  f"{exc.strerror or exc}") from None
            branch = BRANCH_MAGIC + secrets.token_hex(8)
            call_id = f"{secrets.token_hex(12)}@{local_host}"
            request = build_options_request(uri, local_host, local_port, branch, secrets.token_hex(6), call_id)
            return self._transact(sock, uri, request, branch, call_id, wait)

    def _transact(self, sock: socket.socket, uri: SipUri, request: bytes, branch: str, call_id: str,
                  wait: float) -> Reading:
        start = time.monotonic()
        deadline = start + wait
        retransmit_at, interval = start, T1
        provisional: SipResponse | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return self._silence(uri, provisional)
            if now >= retransmit_at:
                try:
                    sock.send(request)
                except ConnectionRefusedError:
                    return self._refused(uri)
                except OSError as exc:
                    raise SensorError(f"cannot send OPTIONS to {uri.hostport}: {exc.strerror or exc}") from None
                retransmit_at, interval = now + interval, min(interval * 2, 4.0)  # timer E, capped at T2
            sock.settimeout(max(min(retransmit_at, deadline) - now, 0.001))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except ConnectionRefusedError:  # ICMP port unreachable for an earlier datagram
                return self._refused(uri)
            except OSError as exc:
                raise SensorError(f"receiving from {uri.hostport}: {exc.strerror or exc}") from None
            response = parse_response(data)
            if response is None or not self._matches(response, branch, call_id):
                continue  # a stray or stale datagram: not our transaction
            if response.status < 200:
                provisional = response
                continue
            return self._judge(uri, response, (time.monotonic() - start) * 1000)

    @staticmethod
    def _matches(response: SipResponse, branch: str, call_id: str) -> bool:
        """RFC 3261 §17.1.3: the top Via branch and the CSeq method identify the transaction."""
        vias = response.headers.get("via", [])
        cseq = (response.header("cseq") or "").split()
        return (bool(vias) and _via_branch(vias[0]) == branch and response.header("call-id") == call_id
                and len(cseq) == 2 and cseq[1].upper() == "OPTIONS")

    def _judge(self, uri: SipUri, response: SipResponse, rtt_ms: float) -> Reading:
        status = response.status
        expect = self.options.expect
        if expect is not None and status in expect:
            level = Level.OK
        elif status >= 600:
            level = Level.WARNING
        elif status >= 500:
            level = Level.CRITICAL
        else:
            level = Level.OK if expect is None else Level.WARNING
        conditions: tuple[str, ...] = ()
        if level != Level.OK:
            conditions = ("server_error",) if 500 <= status < 600 else ("unexpected_status",)
        info = {}
        server = response.header("server") or response.header("user-agent")
        if server:
            info["server"] = server
        return Reading(level=level, summary=f"{uri.text}: {status} {response.reason} in {rtt_ms:.1f} ms",
                       values={"rtt_ms": round(rtt_ms, 3), "status": float(status)},
                       units={"rtt_ms": "ms"}, conditions=conditions, info=info)

    def _silence(self, uri: SipUri, provisional: SipResponse | None) -> Reading:
        if provisional is not None:
            return Reading(level=Level.CRITICAL,
                           summary=f"{uri.text} sent {provisional.status} {provisional.reason} but no final "
                                   f"answer within {self.options.timeout_s:g} s",
                           values={"status": float(provisional.status)}, conditions=("no_answer",))
        return Reading(level=Level.CRITICAL,
                       summary=f"no answer from {uri.text} within {self.options.timeout_s:g} s",
                       conditions=("no_answer",))

    @staticmethod
    def _refused(uri: SipUri) -> Reading:
        return Reading(level=Level.CRITICAL, summary=f"{uri.text}: port unreachable (nothing listens on "
                                                     f"{uri.hostport}/udp)", conditions=("port_unreachable",))
