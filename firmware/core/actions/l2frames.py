"""Ethernet frames for address announcements and probes: ARP (RFC 826, RFC 5227) and IPv6 neighbour discovery.

Pure functions, no sockets: build the frames `NetlinkNetwork` sends on its
packet sockets (gratuitous ARP, ARP probe, unsolicited neighbour
advertisement, duplicate-address solicitation) and parse the answers it
listens for. Written by hand with `struct`: a few fixed layouts, checked
byte for byte in tests/test_netlink.py.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from firmware.core.actions.network import NetworkError

# Ethernet
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_HEADER_LEN = 14
ETH_MIN_FRAME = 60  # without FCS; shorter frames are zero-padded
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

# ARP (RFC 826, RFC 5227)
ARP_HTYPE_ETHERNET = 1
ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28

# IPv6 neighbour discovery (RFC 4861)
IPPROTO_ICMPV6 = 58
ND_HOP_LIMIT = 255
ICMPV6_NEIGHBOR_SOLICITATION = 135
ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20
IPV6_HEADER_LEN = 40
ALL_NODES = ipaddress.IPv6Address("ff02::1")
UNSPECIFIED6 = ipaddress.IPv6Address("::")


# --------------------------------------------------------------------------- addresses

def mac_text(mac: bytes) -> str:
    """`aa:bb:cc:dd:ee:ff` for six bytes."""
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """Six bytes for `aa:bb:cc:dd:ee:ff`; NetworkError if it is not a MAC address."""
    parts = text.split(":")
    try:
        value = bytes(int(p, 16) for p in parts)
    except ValueError:
        value = b""
    if len(parts) != 6 or len(value) != 6:
        raise NetworkError(f"{text!r} is not an Ethernet MAC address")
    return value


def solicited_node(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """The solicited-node multicast group of `address` (ff02::1:ffXX:XXXX, RFC 4291)."""
    low24 = int(address) & 0xFFFFFF
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | low24)


def ipv6_multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    """The Ethernet destination of an IPv6 multicast group: 33:33 + the group's last 32 bits (RFC 2464)."""
    return b"\x33\x33" + group.packed[-4:]


# --------------------------------------------------------------------------- frames

def ethernet_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-byte Ethernet II header."""
    return struct.pack("!6s6sH", dst, src, ethertype)


def pad_frame(frame: bytes) -> bytes:
    """`frame` zero-padded to the Ethernet minimum (60 bytes without the FCS)."""
    return frame + b"\x00" * max(0, ETH_MIN_FRAME - len(frame))


def arp_frame(src_mac: bytes, op: int, sender_ip: ipaddress.IPv4Address, target_ip: ipaddress.IPv4Address,
              target_mac: bytes = ZERO_MAC, dst_mac: bytes = BROADCAST_MAC) -> bytes:
    """An Ethernet frame carrying one ARP packet for IPv4 over Ethernet, sender hardware address `src_mac`.

    Gratuitous ARP request: op=1, sender_ip == target_ip == the announced address.
    ARP probe (RFC 5227): op=1, sender_ip 0.0.0.0, target_ip the probed address.
    """
    arp = struct.pack("!HHBBH6s4s6s4s", ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4, op,
                      src_mac, sender_ip.packed, target_mac, target_ip.packed)
    return pad_frame(ethernet_header(dst_mac, src_mac, ETH_P_ARP) + arp)


@dataclass(frozen=True)
class ArpPacket:
    """The fields of a received ARP packet (IPv4 over Ethernet)."""

    eth_src: bytes
    op: int
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP packet in an Ethernet frame, or None if the frame is not IPv4-over-Ethernet ARP."""
    if len(frame) < ETH_HEADER_LEN + ARP_LEN:
        return None
    _dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from(
        "!HHBBH6s4s6s4s", frame, ETH_HEADER_LEN)
    if (htype, ptype, hlen, plen) != (ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4):
        return None
    return ArpPacket(src, op, sha, ipaddress.IPv4Address(spa), tha, ipaddress.IPv4Address(tpa))


def icmpv6_checksum(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum of `message` (checksum field zero) over the IPv6 pseudo-header (RFC 8200 8.1)."""
    data = src.packed + dst.packed + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6) + message
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_frame(src_mac: bytes, dst_mac: bytes, src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address,
                 message: bytes) -> bytes:
    """An Ethernet frame with an IPv6 packet (hop limit 255) carrying `message`, its checksum filled in."""
    checksum = icmpv6_checksum(src, dst, message)
    message = message[:2] + struct.pack("!H", checksum) + message[4:]
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(message), IPPROTO_ICMPV6, ND_HOP_LIMIT,
                       src.packed, dst.packed)
    return pad_frame(ethernet_header(dst_mac, src_mac, ETH_P_IPV6) + ipv6 + message)


def neighbor_advertisement_frame(src_mac: bytes, target: ipaddress.IPv6Address, router: bool = False,
                                 solicited: bool = False, override: bool = True,
                                 dst: ipaddress.IPv6Address = ALL_NODES) -> bytes:
    """A neighbour advertisement for `target` from `target` with the Target Link-Layer Address option `src_mac`.

    The defaults make the unsolicited advertisement of RFC 4861 7.2.6: to all nodes
    (ff02::1), Override set, Solicited clear.
    """
    flags = ((NA_FLAG_ROUTER if router else 0) | (NA_FLAG_SOLICITED if solicited else 0)
             | (NA_FLAG_OVERRIDE if override else 0))
    message = struct.pack("!BBHB3x16sBB6s", ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, flags, target.packed,
                          ND_OPT_TARGET_LLADDR, 1, src_mac)
    dst_mac = ipv6_multicast_mac(dst) if dst.is_multicast else BROADCAST_MAC
    return icmpv6_frame(src_mac, dst_mac, target, dst, message)


def neighbor_solicitation_frame(src_mac: bytes, target: ipaddress.IPv6Address) -> bytes:
    """A duplicate-address-detection solicitation for `target` (RFC 4862 5.4.2).

    Source ::, destination the target's solicited-node group, and therefore no
    Source Link-Layer Address option; a holder of `target` answers with an
    advertisement to all nodes.
    """
    group = solicited_node(target)
    message = struct.pack("!BBH4x16s", ICMPV6_NEIGHBOR_SOLICITATION, 0, 0, target.packed)
    return icmpv6_frame(src_mac, ipv6_multicast_mac(group), UNSPECIFIED6, group, message)


@dataclass(frozen=True)
class NeighborAdvertisement:
    """The fields of a received neighbour advertisement."""

    eth_src: bytes
    src: ipaddress.IPv6Address
    target: ipaddress.IPv6Address
    router: bool
    solicited: bool
    override: bool
    lladdr: bytes | None  # the Target Link-Layer Address option, if present


def parse_neighbor_advertisement(frame: bytes) -> NeighborAdvertisement | None:
    """The neighbour advertisement in an Ethernet frame, or None if it is not one (no extension headers)."""
    start = ETH_HEADER_LEN + IPV6_HEADER_LEN
    if len(frame) < start + 24:
        return None
    _dst, eth_src, ethertype = struct.unpack_from("!6s6sH", frame)
    if ethertype != ETH_P_IPV6:
        return None
    vtf, payload_len, next_header, hop_limit, src, _ip_dst = struct.unpack_from(
        "!IHBB16s16s", frame, ETH_HEADER_LEN)
    if vtf >> 28 != 6 or next_header != IPPROTO_ICMPV6 or hop_limit != ND_HOP_LIMIT:
        return None
    icmp_type, code, _checksum, flags, target = struct.unpack_from("!BBHB3x16s", frame, start)
    if icmp_type != ICMPV6_NEIGHBOR_ADVERTISEMENT or code != 0:
        return None
    lladdr = None
    end = min(len(frame), start + payload_len)
    offset = start + 24
    while offset + 2 <= end:
        opt_type, opt_len = frame[offset], frame[offset + 1]
        if opt_len == 0:
            break
        if opt_type == ND_OPT_TARGET_LLADDR and offset + 8 <= end:
            lladdr = frame[offset + 2:offset + 8]
        offset += opt_len * 8
    return NeighborAdvertisement(eth_src, ipaddress.IPv6Address(src), ipaddress.IPv6Address(target),
                                 bool(flags & NA_FLAG_ROUTER), bool(flags & NA_FLAG_SOLICITED),
                                 bool(flags & NA_FLAG_OVERRIDE), lladdr)
