"""The shared-IP network backend for real Linux: rtnetlink (pyroute2) and raw packet sockets.

`NetlinkNetwork` implements `firmware.core.actions.network.NetworkBackend`:

* links, addresses, VLANs and the connected route's preferred source through
  rtnetlink (pyroute2 `IPRoute`; each worker thread keeps one socket, dropped
  and reopened after an error, so every method is safe to call from any
  worker thread);
* gratuitous ARP, ARP probes (RFC 5227), unsolicited neighbour advertisements
  and duplicate-address neighbour solicitations (RFC 4861) through
  `firmware.core.actions.lanprobe`'s raw packet sockets, given the
  interface's MAC looked up here.

Every method is blocking and idempotent. Failures are raised as
`NetworkError` with a one-line message saying what failed and why.
Needs root (CAP_NET_ADMIN for netlink changes, CAP_NET_RAW for packet sockets).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_SECONDARY

from firmware.core.actions.l2frames import (
    ZERO_MAC,
    mac_bytes,
)
from firmware.core.actions.lanprobe import announce, probe_address, socket_reason
from firmware.core.actions.network import IPAddress, IPInterface, NetworkError, ProbeAnswer

log = logging.getLogger(__name__)

T = TypeVar("T")


# rtnetlink
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
IP6_RT_PRIO_ADDRCONF = 256  # metric of the kernel's IPv6 prefix routes
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # the carrier (linux/if.h)
IFNAMSIZ = 16


# --------------------------------------------------------------------------- addresses

def as_address(address: IPAddress | IPInterface | str) -> IPAddress:
    """The bare IP address of an address, an interface address (`ip/prefix`) or their text."""
    if isinstance(address, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return address.ip
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return address
    return ipaddress.ip_interface(address).ip


def as_interface(address: IPInterface | str) -> IPInterface:
    """An interface address (`ip/prefix`); a bare address gets a host prefix (/32, /128)."""
    if isinstance(address, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return address
    return ipaddress.ip_interface(address)


# --------------------------------------------------------------------------- helpers

def _why(exc: BaseException) -> str:
    """A short reason for a netlink or socket error, with a hint for the common ones."""
    if isinstance(exc, NetlinkError):
        code = exc.code
        text = exc.args[1] if len(exc.args) > 1 else os.strerror(code or 0)
        return socket_reason(OSError(code, text))
    if isinstance(exc, OSError):
        return socket_reason(exc)
    return str(exc) or type(exc).__name__


_thread_sockets = threading.local()


def _drop_thread_socket() -> None:
    ipr = getattr(_thread_sockets, "ipr", None)
    _thread_sockets.ipr = None
    if ipr is not None:
        try:
            ipr.close()
        except Exception:  # closing a broken socket must not mask the original error
            pass


def _in_event_loop_thread() -> bool:
    """Whether this thread runs an asyncio event loop (pyroute2's synchronous API cannot run there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _off_loop(fn: Callable[[], T]) -> T:
    """Run `fn` here, or in a helper thread if this thread runs an asyncio loop; re-raise its error."""
    if not _in_event_loop_thread():
        return fn()
    result: list[Any] = []

    def run() -> None:
        try:
            result.append((True, fn()))
        except BaseException as exc:  # re-raised in the caller's thread
            result.append((False, exc))

    worker = threading.Thread(target=run, name="tandem-netlink", daemon=True)
    worker.start()
    worker.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _check_ifname(name: str) -> None:
    """NetworkError unless `name` can be a Linux interface name."""
    if not name or len(name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise NetworkError(f"{name!r} is not a valid interface name (1 to {IFNAMSIZ - 1} characters, "
                           "no '/' or spaces)")


def _family(address: IPAddress | IPInterface) -> int:
    """AF_INET or AF_INET6 for an address."""
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


@dataclass(frozen=True)
class _Link:
    """What the backend needs to know about one interface."""

    index: int
    name: str
    mac: bytes
    up: bool
    kind: str | None
    parent: int | None
    vlan_id: int | None


@dataclass(frozen=True)
class _Addr:
    """One configured address."""

    interface: IPInterface
    secondary: bool


@dataclass(frozen=True)
class _Route:
    """One route of the main table, as far as set/restore_route_source need it."""

    dst: str
    dst_len: int
    oif: int
    proto: int
    scope: int
    type: int
    tos: int
    priority: int | None
    prefsrc: str | None


# --------------------------------------------------------------------------- the backend

class NetlinkNetwork:
    """NetworkBackend for real Linux: pyroute2 for links, addresses and routes; AF_PACKET for ARP / ND.

    Thread-safe: each worker thread keeps its own netlink socket, and packet
    sockets are opened and closed per call. Call it from worker threads; a
    call made on a thread that runs an asyncio loop still works (the netlink
    part moves to a short helper thread) but blocks that loop.
    """

    # ---- netlink plumbing

    def _netlink(self, what: str, fn: Callable[[IPRoute], T]) -> T:
        """Run `fn` with this thread's IPRoute; netlink and socket errors become NetworkError("<what>: <why>").

        Each worker thread keeps one netlink socket (opening one costs about a millisecond on the
        way to the first announcement); it is dropped and reopened after any error.
        """
        def run() -> T:
            ipr = getattr(_thread_sockets, "ipr", None)
            try:
                if ipr is None:
                    ipr = _thread_sockets.ipr = IPRoute()
                return fn(ipr)
            except NetworkError:
                raise
            except (NetlinkError, OSError) as exc:
                _drop_thread_socket()
                raise NetworkError(f"{what}: {_why(exc)}") from exc
            except BaseException:
                _drop_thread_socket()
                raise
        return _off_loop(run)

    @staticmethod
    def _link(ipr: IPRoute, interface: str) -> _Link:
        """The interface called `interface`; NetworkError if there is none."""
        _check_ifname(interface)
        indexes = ipr.link_lookup(ifname=interface)
        if not indexes:
            raise NetworkError(f"interface {interface} does not exist (ip -br link lists the interfaces)")
        msg = ipr.get_links(indexes[0])[0]
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        vlan_id = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID") if kind == "vlan" else None
        mac_attr = msg.get_attr("IFLA_ADDRESS")
        mac = mac_bytes(mac_attr) if mac_attr and mac_attr.count(":") == 5 else ZERO_MAC
        return _Link(index=msg["index"], name=interface, mac=mac, up=bool(msg["flags"] & IFF_UP),
                     kind=kind, parent=msg.get_attr("IFLA_LINK"), vlan_id=vlan_id)

    @staticmethod
    def _ethernet_link(ipr: IPRoute, interface: str) -> _Link:
        """Like _link, and NetworkError unless the interface has an Ethernet MAC address to send from."""
        link = NetlinkNetwork._link(ipr, interface)
        if link.mac == ZERO_MAC:
            raise NetworkError(f"interface {interface} has no Ethernet address (ARP and neighbour discovery "
                               "need an Ethernet interface)")
        return link

    @staticmethod
    def _addresses(ipr: IPRoute, index: int, family: int) -> list[_Addr]:
        """The addresses of `family` configured on interface `index`."""
        found = []
        for msg in ipr.get_addr(family=family, index=index):
            if msg["index"] != index:
                continue
            ip = msg.get_attr("IFA_LOCAL") if family == socket.AF_INET else None
            ip = ip or msg.get_attr("IFA_ADDRESS")
            if ip is None:
                continue
            flags = msg.get_attr("IFA_FLAGS")
            flags = msg["flags"] if flags is None else flags
            found.append(_Addr(ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}"),
                               bool(flags & IFA_F_SECONDARY)))
        return found

    @staticmethod
    def _connected_route(ipr: IPRoute, index: int, network: ipaddress.IPv4Network | ipaddress.IPv6Network
                         ) -> _Route | None:
        """The main-table route for exactly `network` through interface `index`, kernel's own first."""
        candidates = []
        for msg in ipr.get_routes(family=_family(network), table=RT_TABLE_MAIN):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if (table != RT_TABLE_MAIN or msg.get_attr("RTA_OIF") != index
                    or msg["dst_len"] != network.prefixlen or msg["type"] != RTN_UNICAST):
                continue
            dst = msg.get_attr("RTA_DST")
            if dst is None or ipaddress.ip_address(dst) != network.network_address:
                continue
            candidates.append(_Route(dst=str(network.network_address), dst_len=network.prefixlen, oif=index,
                                     proto=msg["proto"], scope=msg["scope"], type=msg["type"], tos=msg["tos"],
                                     priority=msg.get_attr("RTA_PRIORITY"), prefsrc=msg.get_attr("RTA_PREFSRC")))
        candidates.sort(key=lambda r: (r.proto != RTPROT_KERNEL, r.priority or 0))
        return candidates[0] if candidates else None

    @staticmethod
    def _replace_route(ipr: IPRoute, route: _Route, family: int, prefsrc: str | None) -> None:
        """Replace `route` in the main table with the same route and preferred source `prefsrc` (None: none)."""
        spec: dict[str, Any] = dict(family=family, dst=route.dst, dst_len=route.dst_len, oif=route.oif,
                                    table=RT_TABLE_MAIN, proto=route.proto, scope=route.scope,
                                    type=route.type, tos=route.tos)
        if route.priority is not None:
            spec["priority"] = route.priority
        if prefsrc is not None:
            spec["prefsrc"] = prefsrc
        ipr.route("replace", **spec)

    @staticmethod
    def _kernel_route(index: int, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> _Route:
        """The connected route the kernel makes for `network` on interface `index`."""
        v4 = network.version == 4
        return _Route(dst=str(network.network_address), dst_len=network.prefixlen, oif=index,
                      proto=RTPROT_KERNEL, scope=RT_SCOPE_LINK if v4 else RT_SCOPE_UNIVERSE, type=RTN_UNICAST,
                      tos=0, priority=None if v4 else IP6_RT_PRIO_ADDRCONF, prefsrc=None)

    # ---- NetworkBackend

    def check(self, interface: str) -> None:
        """Raise NetworkError unless `interface` exists and this process may change it and send raw frames.

        The privilege test is harmless: an RTM_SETLINK that changes nothing
        (needs CAP_NET_ADMIN) and opening an AF_PACKET socket that is bound
        to no protocol (needs CAP_NET_RAW).
        """
        def probe(ipr: IPRoute) -> None:
            link = self._link(ipr, interface)
            try:
                ipr.link("set", index=link.index)
            except NetlinkError as exc:
                if exc.code in (errno.EPERM, errno.EACCES):
                    raise NetworkError(f"cannot manage {interface}: not permitted to change network "
                                       "configuration (run as root, or grant CAP_NET_ADMIN and CAP_NET_RAW)"
                                       ) from exc
                raise
        self._netlink(f"check {interface}", probe)
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise NetworkError(f"cannot announce on {interface}: not permitted to open raw packet sockets "
                                   "(run as root, or grant CAP_NET_RAW)") from exc
            raise NetworkError(f"check {interface}: raw packet socket: {_why(exc)}") from exc

    def ensure_vlan(self, parent: str, vlan_id: int) -> str:
        """Create `<parent>.<vlan_id>` (802.1Q) if missing, bring it up; return its name.

        NetworkError if the name is taken by something that is not that VLAN of
        that parent, or the kernel cannot make VLANs (no 8021q module).
        """
        if not isinstance(vlan_id, int) or not 1 <= vlan_id <= 4094:
            raise NetworkError(f"VLAN id {vlan_id!r} is out of range (1 to 4094)")
        name = f"{parent}.{vlan_id}"
        _check_ifname(name)

        def ensure(ipr: IPRoute) -> str:
            parent_link = self._link(ipr, parent)
            if not ipr.link_lookup(ifname=name):
                try:
                    ipr.link("add", ifname=name, kind="vlan", link=parent_link.index, vlan_id=vlan_id)
                except NetlinkError as exc:
                    if exc.code == errno.EOPNOTSUPP:
                        raise NetworkError(f"create VLAN {name}: this kernel has no 802.1Q VLAN support "
                                           "(modprobe 8021q)") from exc
                    if exc.code != errno.EEXIST:  # made meanwhile by someone else: checked below
                        raise
            link = self._link(ipr, name)
            if link.kind != "vlan" or link.parent != parent_link.index or link.vlan_id != vlan_id:
                raise NetworkError(f"interface {name} exists but is not VLAN {vlan_id} on {parent} "
                                   f"(kind {link.kind or 'unknown'}); remove or rename it")
            if not link.up:
                ipr.link("set", index=link.index, state="up")
            return name
        return self._netlink(f"ensure VLAN {name}", ensure)

    def has_address(self, interface: str, address: IPInterface) -> bool:
        """Whether `address` with its prefix is configured on `interface`."""
        address = as_interface(address)

        def look(ipr: IPRoute) -> bool:
            link = self._link(ipr, interface)
            return any(a.interface == address for a in self._addresses(ipr, link.index, _family(address)))
        return self._netlink(f"read addresses of {interface}", look)

    def add_address(self, interface: str, address: IPInterface) -> None:
        """Add `address` to `interface`; nothing if it is there. IPv6 with IFA_F_NODAD: usable at once;
        IPv4 with the subnet's broadcast address (like `ip addr add ... brd +`).

        NetworkError if the same IP is already there with another prefix.
        """
        address = as_interface(address)

        def add(ipr: IPRoute) -> None:
            link = self._link(ipr, interface)
            present = self._addresses(ipr, link.index, _family(address))
            if any(a.interface == address for a in present):
                return
            other = [a.interface for a in present if a.interface.ip == address.ip]
            if other and address.version == 6:
                raise NetworkError(f"add {address} to {interface}: {other[0]} is already there "
                                   "with another prefix")
            spec: dict[str, Any] = dict(index=link.index, family=_family(address), address=str(address.ip),
                                        prefixlen=address.network.prefixlen)
            if address.version == 6:
                spec["flags"] = IFA_F_NODAD
            elif address.network.prefixlen <= 30:
                spec["broadcast"] = str(address.network.broadcast_address)  # as `ip addr add ... brd +`
            try:
                ipr.addr("add", **spec)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
                if not any(a.interface == address for a in self._addresses(ipr, link.index, _family(address))):
                    raise NetworkError(f"add {address} to {interface}: the address is already there "
                                       "with another prefix") from exc
            log.debug("added %s to %s", address, interface)
        self._netlink(f"add {address} to {interface}", add)

    def remove_address(self, interface: str, address: IPInterface) -> None:
        """Remove `address` from `interface`; nothing if it is not there (or the interface is gone)."""
        address = as_interface(address)

        def remove(ipr: IPRoute) -> None:
            _check_ifname(interface)
            indexes = ipr.link_lookup(ifname=interface)
            if not indexes:
                return
            if not any(a.interface == address for a in self._addresses(ipr, indexes[0], _family(address))):
                return
            try:
                ipr.addr("del", index=indexes[0], family=_family(address), address=str(address.ip),
                         prefixlen=address.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                    raise
            log.debug("removed %s from %s", address, interface)
        self._netlink(f"remove {address} from {interface}", remove)

    def link_up(self, interface: str) -> bool:
        """Whether `interface` is administratively up and has a carrier (IFF_UP and IFF_LOWER_UP)."""
        def flags(ipr: IPRoute) -> int:
            _check_ifname(interface)
            indexes = ipr.link_lookup(ifname=interface)
            return ipr.get_links(indexes[0])[0]["flags"] if indexes else 0
        wanted = IFF_UP | IFF_LOWER_UP
        return self._netlink(f"read the link state of {interface}", flags) & wanted == wanted

    def probe(self, interface: str, address: IPAddress, timeout: float) -> ProbeAnswer:
        """Who else on `interface`'s link holds or probes for `address` (see `lanprobe.probe_address`)."""
        ip = as_address(address)
        link = self._netlink(f"probe {ip} on {interface}", lambda ipr: self._ethernet_link(ipr, interface))
        return probe_address(interface, link.mac, ip, timeout)

    def announce(self, interface: str, address: IPAddress, router: bool = False) -> None:
        """Announce `address` on `interface` (see `lanprobe.announce`)."""
        announce(interface, as_address(address), router)

    def set_route_source(self, interface: str, address: IPInterface) -> None:
        """Replace the connected route of `address`'s subnet on `interface` by the same route with
        preferred source `address`, so connections the node opens leave from the shared address.

        The address must already be configured on the interface. If the
        connected route is missing it is created as the kernel would, with the
        preferred source.
        """
        address = as_interface(address)
        family = _family(address)

        def replace(ipr: IPRoute) -> None:
            link = self._link(ipr, interface)
            if not any(a.interface.ip == address.ip for a in self._addresses(ipr, link.index, family)):
                raise NetworkError(f"{address.ip} is not configured on {interface} (add it first)")
            route = self._connected_route(ipr, link.index, address.network)
            if route is None:
                route = self._kernel_route(link.index, address.network)
            elif route.prefsrc is not None and ipaddress.ip_address(route.prefsrc) == address.ip:
                return
            self._replace_route(ipr, route, family, str(address.ip))
            log.debug("route %s dev %s now prefers %s", address.network, interface, address.ip)
        self._netlink(f"set source {address.ip} on route {address.network} dev {interface}", replace)

    def restore_route_source(self, interface: str, address: IPInterface) -> None:
        """Undo set_route_source: the connected route of the subnet as the kernel makes it.

        IPv4: preferred source = the interface's own (primary) address in that
        subnet, or none if the shared address is the only one. If the route is
        gone (the kernel flushes a route whose preferred source is removed, so
        removing the shared address first takes the connected route with it)
        and the interface still has its own address in the subnet, the route is
        put back. IPv6: the route without a preferred source. Idempotent; no
        error if the route or the interface is missing, and a route whose
        preferred source is not `address` is left alone.
        """
        address = as_interface(address)
        family = _family(address)

        def restore(ipr: IPRoute) -> None:
            _check_ifname(interface)
            indexes = ipr.link_lookup(ifname=interface)
            if not indexes:
                return
            index = indexes[0]
            route = self._connected_route(ipr, index, address.network)
            if route is not None and (route.prefsrc is None
                                      or ipaddress.ip_address(route.prefsrc) != address.ip):
                return  # not ours (any more)
            present = self._addresses(ipr, index, family)
            if family == socket.AF_INET6:
                if route is not None:
                    self._replace_route(ipr, route, family, None)
                return
            own = sorted((a for a in present if a.interface.ip != address.ip
                          and a.interface.ip in address.network), key=lambda a: a.secondary)
            if own:
                self._replace_route(ipr, route or self._kernel_route(index, address.network), family,
                                    str(own[0].interface.ip))
            elif route is not None and not any(a.interface.ip == address.ip for a in present):
                self._replace_route(ipr, route, family, None)
            log.debug("route %s dev %s restored", address.network, interface)
        self._netlink(f"restore route {address.network} dev {interface}", restore)
