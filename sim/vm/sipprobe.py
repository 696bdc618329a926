"""Send SIP OPTIONS to an address until it answers; print the answer as JSON (run inside the LAN namespace).

    python -m sim.vm.sipprobe 192.0.2.100 --timeout 60 --interval 0.02 [--go-on-stdin]

Prints one JSON line: ``{"status": 200, "answered_mono": <CLOCK_MONOTONIC>, "source": "192.0.2.100",
"tries": N}``, or ``{"status": null, ...}`` when nothing answered in time. CLOCK_MONOTONIC is the same
in every namespace, so the caller can compare the time with its own. The request is built by the
firmware's own SIP OPTIONS code (firmware.core.sensors.sip). Only answers from the probed address
count: a PBX that answered from another address is not answering on the shared IP.
"""

from __future__ import annotations

import argparse
import json
import secrets
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


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--go-on-stdin", action="store_true",
                        help="print 'ready', then start only when a line arrives on stdin")
    args = parser.parse_args(argv)
    if args.go_on_stdin:
        print("ready", flush=True)
        sys.stdin.readline()
    print(json.dumps(probe(args.address, args.port, args.timeout, args.interval)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
