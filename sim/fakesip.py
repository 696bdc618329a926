"""A fake SIP UDP endpoint that answers OPTIONS, for the simulator and tests.

    with FakeSipResponder(status=200) as sip:
        ...send OPTIONS to 127.0.0.1:sip.port...
        sip.status = 503      # now it answers 503 Service Unavailable
        sip.silent = True     # now it drops every request

Responses copy Via (all hops, with ``received``/``rport`` filled in as RFC
3581 asks), From, To (adding a tag), Call-ID and CSeq from the request, as
RFC 3261 §8.2.6 requires.
"""

from __future__ import annotations

import argparse
import re
import secrets
import socket
import time
from dataclasses import dataclass

from sim.emulator import FakeService, wait_for_interrupt

__all__ = ["FakeSipResponder", "ReceivedRequest"]

REASONS = {100: "Trying", 200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
           480: "Temporarily Unavailable", 486: "Busy Here", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 603: "Decline"}
_COMPACT = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length"}


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as received: its request line, headers in order (names as sent) and source address."""

    method: str
    uri: str
    version: str
    headers: list[tuple[str, str]]
    source: tuple[str, int]
    raw: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive, compact forms understood), or None."""
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        name = name.lower()
        return [v for k, v in self.headers if _COMPACT.get(k.lower(), k).lower() == name]


def _parse_request(data: bytes, source: tuple[str, int]) -> ReceivedRequest | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("SIP/"):
        return None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return ReceivedRequest(parts[0], parts[1], parts[2], headers, source, data)


class FakeSipResponder(FakeService):
    """A UDP SIP endpoint answering every request with ``status`` (settable while it runs).

    ``silent`` drops requests unanswered; ``drop_first`` drops that many
    requests before answering (to exercise retransmission); ``delay`` waits
    before answering; ``provisional`` sends ``100 Trying`` first; ``decoy``
    sends, before the real answer, a 500 whose Via branch is altered (a client
    that does not match on the branch takes it for the answer). Every request
    received is kept in ``requests``. ``port`` is the bound UDP port (after ``start``).
    """

    _thread_name = "fakesip"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200) -> None:
        """Configure; `start` binds and begins answering."""
        super().__init__(host, port)
        self.status = status
        self.silent = False
        self.drop_first = 0
        self.delay = 0.0
        self.provisional = False
        self.decoy = False
        self.requests: list[ReceivedRequest] = []
        self._to_tag = secrets.token_hex(4)

    def _bind(self, family: socket.AddressFamily) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((self.host, self._requested_port))
        sock.settimeout(0.2)
        return sock

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                data, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            request = _parse_request(data, source[:2])
            if request is None:
                continue
            self.requests.append(request)
            if self.silent or request.method == "ACK":
                continue
            if self.drop_first > 0:
                self.drop_first -= 1
                continue
            if self.delay:
                time.sleep(self.delay)
            try:
                if self.decoy:
                    self._sock.sendto(self.response(request, 500, decoy=True), source)
                if self.provisional:
                    self._sock.sendto(self.response(request, 100), source)
                self._sock.sendto(self.response(request, self.status), source)
            except OSError:
                return

    def response(self, request: ReceivedRequest, status: int, decoy: bool = False) -> bytes:
        """The response to ``request`` with ``status`` (RFC 3261 §8.2.6 header copying)."""
        lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}"]
        for i, via in enumerate(request.all("via")):
            if i == 0:
                via = re.sub(r";rport(?=;|$)", f";rport={request.source[1]}", via)
                via += f";received={request.source[0]}"
                if decoy:
                    via = re.sub(r"branch=([^;]+)", r"branch=\1x", via)
            lines.append(f"Via: {via}")
        to = request.header("to") or ""
        if status > 100 and ";tag=" not in to:
            to += f";tag={self._to_tag}"
        lines += [f"From: {request.header('from') or ''}", f"To: {to}",
                  f"Call-ID: {request.header('call-id') or ''}", f"CSeq: {request.header('cseq') or ''}",
                  "Server: FakeSIP (Tandem simulator)", "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
                  "Accept: application/sdp", "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main(argv: list[str] | None = None) -> int:
    """Answer OPTIONS until interrupted (for the lab)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args(argv)
    with FakeSipResponder(args.host, args.port, args.status) as responder:
        print(f"fake SIP on {args.host}:{responder.port}/udp answering {args.status}", flush=True)
        wait_for_interrupt()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
