"""On the LAN itself: is an address held by another host, and telling the LAN who holds it now.

Raw AF_PACKET sockets bound to the interface carry whole Ethernet frames built
by `firmware.core.actions.l2frames`, so the source MAC is the interface's own
and nothing depends on the address state (tentative, not yet added) or on the
routing table:

* `probe_address`: ARP probes (RFC 5227) for IPv4, duplicate-address
  neighbour solicitations (RFC 4861) for IPv6, and who answers them (or,
  for IPv4, probes for the same address at the same time);
* `announce`: a gratuitous ARP (IPv4) or an unsolicited neighbour
  advertisement (IPv6).

Both are blocking (run them off the event loop) and raise `NetworkError` with
a one-line reason. They need CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import time

from firmware.core.actions.l2frames import (
    ARP_HTYPE_ETHERNET,
    ARP_REQUEST,
    ETH_P_ARP,
    ETH_P_IPV6,
    ZERO_MAC,
    arp_frame,
    mac_text,
    neighbor_advertisement_frame,
    neighbor_solicitation_frame,
    parse_arp,
    parse_neighbor_advertisement,
)
from firmware.core.actions.network import IPAddress, NetworkError, ProbeAnswer

log = logging.getLogger(__name__)

PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent
PROBE_COUNT = 3


def socket_reason(exc: OSError) -> str:
    """A short reason for a socket error, with a hint for the common ones."""
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.EPERM, errno.EACCES):
        text += " (needs root: CAP_NET_ADMIN and CAP_NET_RAW)"
    elif exc.errno == errno.ENETDOWN:
        text += " (the interface is down)"
    return text


def probe_address(interface: str, own_mac: bytes, ip: IPAddress, timeout: float) -> ProbeAnswer:
    """Who else on `interface`'s link holds `ip`, or probes for it, listening at most `timeout` seconds.

    IPv4: ARP probes (RFC 5227: sender IP 0.0.0.0, target `ip`); a holder is
    any ARP packet whose sender IP is `ip` from a MAC other than `own_mac`, a
    contender another host's ARP probe for `ip`. IPv6: duplicate-address
    solicitations (source ::, to the solicited-node group); a holder is a
    neighbour advertisement for `ip` from another MAC (IPv6 contenders are not
    seen). Up to three probes are spread over the timeout, so one lost frame
    does not hide a holder. Returns as soon as a holder answers; otherwise
    after the whole timeout.
    """
    what = f"probe {ip} on {interface}"
    contender: bytes | None = None
    if ip.version == 4:
        probe = arp_frame(own_mac, ARP_REQUEST, ipaddress.IPv4Address(0), ip)
        ethertype = ETH_P_ARP

        def holder_of(frame: bytes) -> bytes | None:
            nonlocal contender
            arp = parse_arp(frame)
            if arp is None or arp.sender_mac == own_mac:
                return None
            if arp.sender_ip == ip:
                return arp.sender_mac
            if arp.op == ARP_REQUEST and arp.sender_ip == ipaddress.IPv4Address(0) and arp.target_ip == ip:
                contender = arp.sender_mac
            return None
    else:
        probe = neighbor_solicitation_frame(own_mac, ip)
        ethertype = ETH_P_IPV6

        def holder_of(frame: bytes) -> bytes | None:
            na = parse_neighbor_advertisement(frame)
            if na is None or na.target != ip or na.eth_src == own_mac:
                return None
            mac = na.lladdr or na.eth_src
            return mac if mac != own_mac else None

    with packet_socket(interface, ethertype, what) as sock:
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        count = PROBE_COUNT if timeout > 0 else 1
        sends = [start + timeout * i / count for i in range(count)]
        while True:
            now = time.monotonic()
            while sends and sends[0] <= now:
                sends.pop(0)
                send_frame(sock, probe, what)
            if now >= deadline:
                return ProbeAnswer(None, mac_text(contender) if contender else None)
            wake = min([deadline] + sends[:1])
            readable, _, _ = select.select([sock], [], [], max(0.0, wake - now))
            if not readable:
                continue
            try:
                frame, meta = sock.recvfrom(65535)
            except OSError as exc:
                raise NetworkError(f"{what}: receive: {socket_reason(exc)}") from exc
            holder = holder_of(frame) if meta[2] != PACKET_OUTGOING else None
            if holder is not None:
                log.debug("%s is in use on %s by %s", ip, interface, mac_text(holder))
                return ProbeAnswer(mac_text(holder), mac_text(contender) if contender else None)


def announce(interface: str, ip: IPAddress, router: bool = False) -> None:
    """Send one gratuitous ARP request (IPv4) or one unsolicited neighbour advertisement (IPv6).

    IPv4: broadcast ARP request, sender IP = target IP = `ip`, target MAC
    zero. IPv6: advertisement for `ip` from `ip` to ff02::1, hop limit 255,
    Override set, Solicited clear, Router as given, Target Link-Layer Address
    option = the interface MAC. Both leave with the interface's MAC as
    Ethernet source. Does not check that `ip` is configured.
    """
    what = f"announce {ip} on {interface}"
    with packet_socket(interface, 0, what) as sock:
        # The bound packet socket names the interface's current hardware address: no netlink
        # round trip on the way to the first announcement, and never a stale MAC.
        _, _, _, hatype, mac = sock.getsockname()
        if hatype != ARP_HTYPE_ETHERNET or len(mac) != 6 or mac == ZERO_MAC:
            raise NetworkError(f"{what}: {interface} is not an Ethernet interface")
        if ip.version == 4:
            frame = arp_frame(mac, ARP_REQUEST, ip, ip)
        else:
            frame = neighbor_advertisement_frame(mac, ip, router=router)
        send_frame(sock, frame, what)
    log.debug("announced %s on %s from %s", ip, interface, mac_text(mac))


def packet_socket(interface: str, ethertype: int, what: str) -> socket.socket:
    """An AF_PACKET socket bound to `interface`, receiving `ethertype` frames (0: none)."""
    try:
        # protocol 0 at creation: nothing is queued from other interfaces before bind()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise NetworkError(f"{what}: raw packet socket: {socket_reason(exc)}") from exc
    try:
        sock.bind((interface, ethertype))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENODEV:
            raise NetworkError(f"{what}: interface {interface} does not exist "
                               "(ip -br link lists the interfaces)") from exc
        raise NetworkError(f"{what}: bind to {interface}: {socket_reason(exc)}") from exc
    return sock


def send_frame(sock: socket.socket, frame: bytes, what: str) -> None:
    """Send one whole frame; NetworkError if the kernel refuses or truncates it."""
    try:
        sent = sock.send(frame)
    except OSError as exc:
        raise NetworkError(f"{what}: send: {socket_reason(exc)}") from exc
    if sent != len(frame):
        raise NetworkError(f"{what}: send: only {sent} of {len(frame)} bytes sent")
