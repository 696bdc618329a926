"""Send SIP OPTIONS to an address until it answers, or all along; print the outcome as JSON (run inside
the LAN namespace).

    python -m sim.vm.sipprobe 192.0.2.100 --timeout 60 --interval 0.02 [--go-on-stdin]
    python -m sim.vm.sipprobe 192.0.2.100 --watch --interval 0.1 --timeout 3600

The first form prints one JSON line: ``{"status": 200, "answered_mono": <CLOCK_MONOTONIC>, "source":
"192.0.2.100", "tries": N}``, or ``{"status": null, ...}`` when nothing answered in time.

``--watch`` prints ``ready``, sends one OPTIONS every interval until a line arrives on stdin (or the
timeout), then prints the gaps: ``{"sent": N, "answered": M, "gap_ms_max": ..., "gaps": [{"from_mono":
..., "ms": ..., "unanswered": k}, ...]}``. A gap is a run of requests with no answer within
``--answer-window``; its length runs from the first unanswered request's sending to the next answered
one's. CLOCK_MONOTONIC is the same in every namespace, so the caller can compare the times with its
own. The requests are built by the firmware's own SIP OPTIONS code (firmware.core.sensors.sip). Only
answers from the probed address count: a PBX that answered from another address is not answering on
the shared IP.
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import socket
import sys
import time

from firmware.core.sensors.sip import build_options_request, parse_response, parse_sip_uri


def probe(address: str, port: int, timeout: float, interval: float) -> dict[str, object]:
    """OPTIONS every `interval` seconds until an answer from `address`:`port` or `timeout`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    local_host, local_port = "0.0.0.0", sock.getsockname()[1]
    uri = parse_sip_uri(f"sip:{address}:{port}")
    call_id = secrets.token_hex(8)
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        request = build_options_request(uri, local_host, local_port, f"z9hG4bK{secrets.token_hex(6)}",
                                         secrets.token_hex(4), call_id, cseq=tries)
        try:
            sock.sendto(request, (address, port))
        except OSError:
            pass  # no route yet: keep trying
        wait_until = min(deadline, time.monotonic() + interval)
        while (left := wait_until - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(65536)
            except (TimeoutError, socket.timeout):
                break
            except OSError:
                time.sleep(min(left, interval))  # ICMP unreachable surfaced as an error: try again
                break
            response = parse_response(data)
            if response is not None and source[0] == address and response.header("call-id") == call_id:
                return {"status": response.status, "answered_mono": time.monotonic(), "source": source[0],
                        "tries": tries}
    return {"status": None, "answered_mono": None, "source": None, "tries": tries}


def watch(address: str, port: int, interval: float, answer_window: float, timeout: float,
          stop_fd: int | None) -> dict[str, object]:
    """OPTIONS every `interval` seconds until `stop_fd` is readable (or `timeout`); the runs left unanswered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    sock.setblocking(False)
    local_port = sock.getsockname()[1]
    uri = parse_sip_uri(f"sip:{address}:{port}")
    call_id = secrets.token_hex(8)
    sent: list[float] = []          # sending time of request n (its CSeq is n + 1)
    answered: dict[int, float] = {}  # request index -> when its answer came
    end = time.monotonic() + timeout
    next_send = time.monotonic()
    watched = [sock] + ([stop_fd] if stop_fd is not None else [])
    while (now := time.monotonic()) < end:
        if now >= next_send:
            request = build_options_request(uri, "0.0.0.0", local_port, f"z9hG4bK{secrets.token_hex(6)}",
                                             secrets.token_hex(4), call_id, cseq=len(sent) + 1)
            sent.append(now)
            try:
                sock.sendto(request, (address, port))
            except OSError:
                pass  # no route or ICMP unreachable: this one goes unanswered
            next_send = sent[-1] + interval
        readable, _, _ = select.select(watched, [], [], max(0.0, min(next_send, end) - time.monotonic()))
        if stop_fd is not None and stop_fd in readable:
            break
        if sock in readable:
            _receive(sock, address, call_id, sent, answered)
    drain_until = time.monotonic() + answer_window  # the last requests' answers, timed as they come
    while (left := drain_until - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            _receive(sock, address, call_id, sent, answered)
    return _gaps(sent, answered, answer_window)


def _receive(sock: socket.socket, address: str, call_id: str, sent: list[float], answered: dict[int, float]) -> None:
    """Every answer waiting on the socket, by request."""
    while True:
        try:
            data, source = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # an ICMP error surfaced on the socket
        response = parse_response(data)
        cseq = (response.header("cseq") or "").split(" ", 1)[0] if response is not None else ""
        if (response is None or source[0] != address or response.header("call-id") != call_id
                or not cseq.isdigit() or not 0 < int(cseq) <= len(sent)):
            continue
        answered.setdefault(int(cseq) - 1, time.monotonic())


def _gaps(sent: list[float], answered: dict[int, float], answer_window: float) -> dict[str, object]:
    """The runs of requests not answered within `answer_window`, longest first."""
    ok = [index in answered and answered[index] - sent[index] <= answer_window for index in range(len(sent))]
    gaps, start = [], None
    for index, good in enumerate(ok + [True]):
        if not good and start is None:
            start = index
        elif good and start is not None:
            until = sent[index] if index < len(sent) else sent[-1]
            gaps.append({"from_mono": round(sent[start], 3), "ms": round((until - sent[start]) * 1000, 1),
                         "unanswered": index - start, "open": index == len(sent)})
            start = None
    gaps.sort(key=lambda gap: -gap["ms"])
    return {"sent": len(sent), "answered": sum(ok), "gap_ms_max": gaps[0]["ms"] if gaps else 0.0, "gaps": gaps[:20]}


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--go-on-stdin", action="store_true",
                        help="print 'ready', then start only when a line arrives on stdin")
    parser.add_argument("--watch", action="store_true",
                        help="print 'ready', send all along until a line arrives on stdin, then print the gaps")
    parser.add_argument("--answer-window", type=float, default=1.0,
                        help="--watch: an answer later than this (seconds) does not count")
    args = parser.parse_args(argv)
    if args.watch:
        print("ready", flush=True)
        result = watch(args.address, args.port, args.interval, args.answer_window, args.timeout, sys.stdin.fileno())
        print(json.dumps(result), flush=True)
        return 0
    if args.go_on_stdin:
        print("ready", flush=True)
        sys.stdin.readline()
    print(json.dumps(probe(args.address, args.port, args.timeout, args.interval)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
