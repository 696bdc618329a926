"""Ask who holds some addresses, again and again: ARP requests from a switch port, one every interval.

Run it inside a namespace (sim.holderwatch.HolderWatch does, on the lab switch's br0):

    ip netns exec tdm-sw-ab12 python -m sim.netns_ask br0 192.0.2.254 0.004 192.0.2.100

It sends, every INTERVAL seconds, one broadcast ARP request (sender: the
interface's MAC and SENDER_IP) for each TARGET, prints `{"kind": "ready"}`
once the first round went out, and stops when stdin closes, on SIGTERM or
SIGINT. The answers are not read here: a sniffer on the same interface
(sim.netns_sniff) sees the requests and the replies with kernel timestamps.
Frames are built here, independently of the code under test.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

from sim.netns_sniff import StopFlag

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def request_frame(mac: bytes, sender: ipaddress.IPv4Address, target: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request (Ethernet, IPv4) for `target` from `mac`/`sender`, padded to 60 bytes."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, sender.packed, b"\0" * 6, target.packed)
    frame = BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp
    return frame + b"\0" * (60 - len(frame))


def main(argv: list[str]) -> int:
    """Ask until stdin closes; returns the exit status."""
    if len(argv) < 4:
        print("usage: python -m sim.netns_ask IFACE SENDER_IP INTERVAL TARGET...", file=sys.stderr)
        return 2
    interface, sender, interval = argv[0], ipaddress.IPv4Address(argv[1]), float(argv[2])
    targets = [ipaddress.IPv4Address(a) for a in argv[3:]]
    stop = StopFlag()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((interface, 0))
    mac = sock.getsockname()[4]
    frames = [request_frame(mac, sender, target) for target in targets]
    next_at = time.monotonic()
    first = True
    while stop.running:
        for frame in frames:
            sock.send(frame)
        if first:
            print(json.dumps({"kind": "ready"}), flush=True)
            first = False
        next_at += interval
        wait = max(0.0, next_at - time.monotonic())
        readable, _, _ = select.select([sys.stdin], [], [], wait)
        if readable and not sys.stdin.buffer.read1(4096):
            break  # stdin closed: the parent is done
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
