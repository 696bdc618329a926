"""A tiny address-announcement sniffer: ARP and IPv6 neighbour discovery frames, one JSON line each.

Run it inside a namespace (sim.netns.Sniffer does, on the lab switch's br0):

    ip netns exec tdm-sw-ab12 python -m sim.netns_sniff br0

It puts the interface in promiscuous mode for as long as it runs (so a bridge
passes up unicast frames between its ports too), prints `{"kind": "ready", ...}`
once capturing, then one line per ARP packet, neighbour solicitation or
neighbour advertisement, flushed at once, until stdin closes, SIGTERM or
SIGINT. Frames are parsed here, independently of the code under test.

Every line has:
    t        receive time, kernel timestamp, seconds since the epoch (time.time() scale)
    dir      "in" (received on the interface) or "out" (sent by this namespace)
    kind     garp | arp-probe | arp-request | arp-reply | ns | na
    eth_src, eth_dst   Ethernet addresses (aa:bb:cc:dd:ee:ff)
    vlan     802.1Q VLAN id or null
    mac      the MAC the frame vouches for: ARP sender hardware address; NA target
             link-layer address option (else eth_src); NS eth_src
    ip       the address concerned: ARP sender IP (target IP for a probe); NS/NA target
ARP lines add: op (1 request, 2 reply), sender_mac, sender_ip, target_mac, target_ip.
NS/NA lines add: src_ip, dst_ip, hop_limit, target, checksum_ok, lladdr (link-layer
option or null); NA lines add router, solicited, override (booleans).
A gratuitous ARP is an ARP request or reply whose sender IP equals its target IP.
"""

from __future__ import annotations

import ipaddress
import json
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _checksum_ok(src: bytes, dst: bytes, message: bytes) -> bool:
    """Whether the ICMPv6 checksum in `message` is right (sum over pseudo-header and message is 0xffff)."""
    data = src + dst + struct.pack("!I3xB", len(message), 58) + message
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def parse(frame: bytes, vlan: int | None = None) -> dict[str, Any] | None:
    """The JSON record (without t/dir) of an ARP, NS or NA Ethernet frame; None for anything else."""
    if len(frame) < 14:
        return None
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    offset = 14
    while ethertype in VLAN_TPIDS and len(frame) >= offset + 4:
        tci, ethertype = struct.unpack_from("!HH", frame, offset)
        vlan = tci & 0x0FFF
        offset += 4
    base: dict[str, Any] = {"eth_src": _mac(src), "eth_dst": _mac(dst), "vlan": vlan}
    if ethertype == ETH_P_ARP and len(frame) >= offset + 28:
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from("!HHBBH6s4s6s4s", frame, offset)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
            return None
        sender, target = ipaddress.IPv4Address(spa), ipaddress.IPv4Address(tpa)
        if sender == target and int(sender) != 0:
            kind = "garp"
        elif op == 1 and int(sender) == 0:
            kind = "arp-probe"
        elif op == 1:
            kind = "arp-request"
        else:
            kind = "arp-reply"
        return {**base, "kind": kind, "mac": _mac(sha), "ip": str(target if kind == "arp-probe" else sender),
                "op": op, "sender_mac": _mac(sha), "sender_ip": str(sender), "target_mac": _mac(tha),
                "target_ip": str(target)}
    if ethertype != ETH_P_IPV6 or len(frame) < offset + 40 + 24:
        return None
    vtf, payload_len, next_header, hop_limit, ip_src, ip_dst = struct.unpack_from("!IHBB16s16s", frame, offset)
    if vtf >> 28 != 6 or next_header != 58:
        return None
    start = offset + 40
    message = frame[start:start + payload_len]
    if len(message) < 24 or message[0] not in (135, 136) or message[1] != 0:
        return None
    flags = message[4]
    target = ipaddress.IPv6Address(message[8:24])
    lladdr = None
    pos = 24
    while pos + 8 <= len(message):
        opt_type, opt_len = message[pos], message[pos + 1]
        if opt_len == 0:
            break
        if opt_type in (1, 2):  # source / target link-layer address
            lladdr = _mac(message[pos + 2:pos + 8])
        pos += opt_len * 8
    record = {**base, "kind": "ns" if message[0] == 135 else "na", "ip": str(target),
              "src_ip": str(ipaddress.IPv6Address(ip_src)), "dst_ip": str(ipaddress.IPv6Address(ip_dst)),
              "hop_limit": hop_limit, "target": str(target), "lladdr": lladdr,
              "checksum_ok": _checksum_ok(ip_src, ip_dst, message)}
    if message[0] == 136:
        record.update(mac=lladdr or _mac(src), router=bool(flags & 0x80), solicited=bool(flags & 0x40),
                      override=bool(flags & 0x20))
    else:
        record["mac"] = _mac(src)
    return record


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> tuple[float | None, int | None]:
    """The kernel receive time and the stripped VLAN id from recvmsg ancillary data."""
    stamp, vlan = None, None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            if len(data) >= 16:
                sec, nsec = struct.unpack_from("qq", data)
            else:
                sec, nsec = struct.unpack_from("ii", data)
            stamp = sec + nsec / 1e9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 20:
            status, _len, _snap, _mac_off, _net_off, tci = struct.unpack_from("IIIHHH", data)
            if status & TP_STATUS_VLAN_VALID:
                vlan = tci & 0x0FFF
    return stamp, vlan


def sniff(interface: str) -> None:
    """Capture on `interface` and print JSON lines until stdin closes or a signal stops it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((interface, ETH_P_ALL))
    index = socket.if_nametoindex(interface)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
    for level, option in ((socket.SOL_SOCKET, SO_TIMESTAMPNS), (SOL_PACKET, PACKET_AUXDATA)):
        try:
            sock.setsockopt(level, option, 1)
        except OSError:
            pass
    stop = StopFlag()
    out = sys.stdout
    out.write(json.dumps({"kind": "ready", "t": time.time(), "interface": interface}) + "\n")
    out.flush()
    watch = [sock, sys.stdin]
    while stop.running:
        try:
            readable, _, _ = select.select(watch, [], [], 0.2)
        except InterruptedError:
            continue
        if sys.stdin in readable:
            if not sys.stdin.buffer.read1(4096):
                break
        if sock not in readable:
            continue
        frame, ancillary, _flags, address = sock.recvmsg(65535, 256)
        stamp, vlan = _stamp(ancillary)
        record = parse(frame, vlan)
        if record is None:
            continue
        line = {"t": stamp if stamp is not None else time.time(),
                "dir": "out" if address[2] == PACKET_OUTGOING else "in", **record}
        out.write(json.dumps(line) + "\n")
        out.flush()
    sock.close()


class StopFlag:
    """Cleared by SIGTERM or SIGINT: a worker's loop runs while `running` (installs the handlers)."""

    def __init__(self) -> None:
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, _signum: int, _frame: Any) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> int:
    """`python -m sim.netns_sniff IFACE`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sim.netns_sniff INTERFACE", file=sys.stderr)
        return 2
    try:
        sniff(args[0])
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    except OSError as exc:
        print(f"sniff {args[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
