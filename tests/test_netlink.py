"""NetlinkNetwork on a real Linux network stack, inside network namespaces built by sim.netns.

Every test builds its own lab (switch namespace with bridge br0, node
namespaces with eth0 on the bridge; only 192.0.2.0/24 and 2001:db8::/32) and
removes it. The backend runs inside a node namespace (sim.netns.NamespaceNetwork);
frames are checked by the sniffer on the switch's bridge and by what the
switch's own kernel makes of them (its neighbour table).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from firmware.core.actions.l2frames import (arp_frame, icmpv6_checksum, neighbor_advertisement_frame,
                                            neighbor_solicitation_frame, parse_arp,
                                            parse_neighbor_advertisement)
from firmware.core.actions.network import NetworkError, ProbeAnswer
from sim import netns_sniff
from sim.netns import LabNode, NetnsError, NetnsLab, addresses, ip_json, namespaces, python_in

from helpers import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SHARED4 = ipaddress.ip_interface("192.0.2.100/24")
SHARED6 = ipaddress.ip_interface("2001:db8::100/64")
FREE4 = ipaddress.ip_address("192.0.2.99")
FREE6 = ipaddress.ip_address("2001:db8::99")
IFACE = "eth0"


@pytest.fixture
def lab():
    """A fresh two-node lab; afterwards none of its namespaces may remain."""
    built = NetnsLab(nodes=2)
    try:
        yield built
    finally:
        built.close()
        left = set(built.namespaces) & namespaces()
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def node(lab) -> LabNode:
    return lab.nodes[0]


@pytest.fixture
def net(lab, node):
    """NetlinkNetwork running inside node 0's namespace."""
    return lab.network(node)


def neighbour(ns: str, ip) -> dict:
    """The switch's neighbour entry for `ip` on br0 ({} if none)."""
    entries = ip_json(ns, "neigh", "show", str(ip), "dev", "br0")
    return entries[0] if entries else {}


def connected_route(ns: str, network: str, family: str = "-4") -> dict | None:
    """The route for `network` on eth0 in `ns`, from `ip -j route show dev eth0`."""
    routes = ip_json(ns, family, "route", "show", "dev", IFACE)
    found = [r for r in routes if r.get("dst") == network]
    assert len(found) <= 1, found
    return found[0] if found else None


# --------------------------------------------------------------------------- check

def test_check_accepts_existing_interface(net):
    net.check(IFACE)


def test_check_rejects_missing_interface_with_clear_message(net):
    with pytest.raises(NetworkError, match=r"^interface eth9 does not exist \(ip -br link lists the interfaces\)$"):
        net.check("eth9")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_check_without_privilege_says_so(lab, node):
    unprivileged = lab.network(node, argv_prefix=["setpriv", "--reuid=65534", "--regid=65534",
                                                  "--clear-groups", "--inh-caps=-all"])
    with pytest.raises(NetworkError, match="not permitted") as caught:
        unprivileged.check(IFACE)
    assert "\n" not in str(caught.value)
    assert "root" in str(caught.value)


# --------------------------------------------------------------------------- addresses

def test_add_address_is_visible_and_idempotent(net, node):
    for address in (SHARED4, SHARED6):
        assert not net.has_address(IFACE, address)
        net.add_address(IFACE, address)
        net.add_address(IFACE, address)
        assert net.has_address(IFACE, address)
    present = addresses(node, IFACE)
    assert present.count(str(SHARED4)) == 1 and present.count(str(SHARED6)) == 1
    assert str(node.ipv4) in present and str(node.ipv6) in present
    info = [a for link in ip_json(node, "addr", "show", "dev", IFACE) for a in link["addr_info"]
            if a["local"] == str(SHARED4.ip)]
    assert info[0].get("broadcast") == "192.0.2.255"


def test_ipv6_address_is_added_without_dad(lab, net, node):
    lab.run(node, ["sysctl", "-q", "-w", f"net.ipv6.conf.{IFACE}.accept_dad=1"])
    net.add_address(IFACE, SHARED6)
    info = [a for link in ip_json(node, "-6", "addr", "show", "dev", IFACE) for a in link["addr_info"]
            if a["local"] == str(SHARED6.ip)]
    assert len(info) == 1
    assert info[0].get("nodad") is True
    assert not info[0].get("tentative"), "the shared address must be usable at once"


def test_add_address_refuses_same_ipv6_with_other_prefix(net):
    net.add_address(IFACE, SHARED6)
    with pytest.raises(NetworkError, match="another prefix"):
        net.add_address(IFACE, ipaddress.ip_interface("2001:db8::100/80"))


def test_remove_address_removes_and_is_idempotent(net, node):
    for address in (SHARED4, SHARED6):
        net.add_address(IFACE, address)
        net.remove_address(IFACE, address)
        net.remove_address(IFACE, address)
        assert not net.has_address(IFACE, address)
    present = addresses(node, IFACE)
    assert str(SHARED4) not in present and str(SHARED6) not in present
    assert str(node.ipv4) in present and str(node.ipv6) in present, "the node's own addresses stay"
    net.remove_address("eth9", SHARED4)  # a vanished interface has nothing to remove


def test_address_calls_on_missing_interface_fail_clearly(net):
    with pytest.raises(NetworkError, match="interface eth9 does not exist"):
        net.add_address("eth9", SHARED4)
    with pytest.raises(NetworkError, match="interface eth9 does not exist"):
        net.announce("eth9", SHARED4.ip)


# --------------------------------------------------------------------------- announce

def test_announce_ipv4_is_a_gratuitous_arp_request_that_moves_the_gateway(lab, net, node):
    lab.run(lab.switch, ["ip", "neigh", "replace", str(SHARED4.ip), "lladdr", "02:00:00:00:00:01",
                         "dev", "br0", "nud", "stale"])
    net.add_address(IFACE, SHARED4)
    with lab.sniffer() as sniff:
        sent = time.time()
        net.announce(IFACE, SHARED4.ip)
        frame = sniff.wait_for(kind="garp", ip=str(SHARED4.ip))
    assert frame["dir"] == "in"
    assert frame["op"] == 1, "a gratuitous ARP *request*"
    assert frame["eth_src"] == node.mac and frame["eth_dst"] == "ff:ff:ff:ff:ff:ff"
    assert frame["sender_mac"] == node.mac and frame["target_mac"] == "00:00:00:00:00:00"
    assert frame["sender_ip"] == frame["target_ip"] == str(SHARED4.ip)
    assert sent - 1 < frame["t"] < time.time() + 1, "timestamps are on the time.time() scale"
    assert len(sniff.find(kind="garp")) == 1, "one announcement per call"
    # the gateway's kernel accepted it: its stale entry now points at the node
    wait_for(lambda: neighbour(lab.switch, SHARED4.ip).get("lladdr") == node.mac, what="gateway ARP update")


@pytest.mark.parametrize("router", [False, True])
def test_announce_ipv6_is_an_unsolicited_override_na(lab, net, node, router):
    lab.run(lab.switch, ["ip", "-6", "neigh", "replace", str(SHARED6.ip), "lladdr", "02:00:00:00:00:01",
                         "dev", "br0", "nud", "stale"])
    net.add_address(IFACE, SHARED6)
    with lab.sniffer() as sniff:
        net.announce(IFACE, SHARED6.ip, router=router)
        frame = sniff.wait_for(kind="na", ip=str(SHARED6.ip))
    assert (frame["override"], frame["solicited"], frame["router"]) == (True, False, router)
    assert frame["eth_src"] == node.mac and frame["eth_dst"] == "33:33:00:00:00:01"
    assert frame["src_ip"] == str(SHARED6.ip) and frame["dst_ip"] == "ff02::1"
    assert frame["hop_limit"] == 255 and frame["checksum_ok"] is True
    assert frame["target"] == str(SHARED6.ip) and frame["lladdr"] == node.mac
    entry = wait_for(lambda: (e := neighbour(lab.switch, SHARED6.ip)).get("lladdr") == node.mac and e,
                       what="gateway neighbour update")
    assert ("router" in entry) is router, entry


def test_announce_on_a_down_interface_fails_clearly(lab, net, node):
    lab.run(node, ["ip", "link", "set", IFACE, "down"])
    with pytest.raises(NetworkError, match="announce 192.0.2.100 on eth0: .*down"):
        net.announce(IFACE, SHARED4.ip)


# --------------------------------------------------------------------------- probe

def test_probe_ipv4(lab, net):
    other = lab.nodes[1]
    with lab.sniffer() as sniff:
        assert net.probe(IFACE, other.ipv4.ip, 1.0).in_use is True
        probe = sniff.wait_for(kind="arp-probe", ip=str(other.ipv4.ip))
    assert probe["sender_ip"] == "0.0.0.0" and probe["target_ip"] == str(other.ipv4.ip)
    assert probe["eth_dst"] == "ff:ff:ff:ff:ff:ff" and probe["target_mac"] == "00:00:00:00:00:00"
    lab.network(other).add_address(IFACE, SHARED4)
    assert net.probe(IFACE, SHARED4.ip, 1.0).in_use is True
    started = time.monotonic()
    assert net.probe(IFACE, FREE4, 0.4).in_use is False
    assert time.monotonic() - started > 0.35  # it listened for the whole window (how long: bench/timeouts.py)


def test_probe_ipv6(lab, net):
    other = lab.nodes[1]
    with lab.sniffer() as sniff:
        assert net.probe(IFACE, other.ipv6.ip, 1.0).in_use is True
        probe = sniff.wait_for(kind="ns", ip=str(other.ipv6.ip))
    assert probe["src_ip"] == "::" and probe["dst_ip"] == "ff02::1:ff00:11"
    assert probe["checksum_ok"] is True and probe["hop_limit"] == 255 and probe["lladdr"] is None
    lab.network(other).add_address(IFACE, SHARED6)
    assert net.probe(IFACE, SHARED6.ip, 1.0).in_use is True
    started = time.monotonic()
    assert net.probe(IFACE, FREE6, 0.4).in_use is False
    assert time.monotonic() - started > 0.35  # it listened for the whole window (how long: bench/timeouts.py)


def test_link_up_follows_the_carrier_not_the_switch(lab, net):
    """A pulled cable (the switch's port down) is a link down; a hung switch (its bridge down) is not."""
    from sim.netns import BRIDGE, run_in

    assert net.link_up(IFACE) is True
    try:
        run_in(lab.switch, ["ip", "link", "set", "p0", "down"])
        assert net.link_up(IFACE) is False
        run_in(lab.switch, ["ip", "link", "set", "p0", "up"])
        run_in(lab.switch, ["ip", "link", "set", BRIDGE, "down"])
        assert net.link_up(IFACE) is True
    finally:
        run_in(lab.switch, ["ip", "link", "set", "p0", "up"])
        run_in(lab.switch, ["ip", "link", "set", BRIDGE, "up"])


def test_probe_ignores_the_nodes_own_address(net, node):
    """Our own kernel does not answer our own probe; only another host counts."""
    net.add_address(IFACE, SHARED4)
    assert net.probe(IFACE, SHARED4.ip, 0.3).in_use is False


def test_probe_names_the_holder_and_a_host_probing_for_the_same_address(lab, net, node):
    """LAN arbitration's two facts: who holds the address, and who is about to claim it too."""
    other = lab.nodes[1]
    other_net = lab.network(other)
    other_net.add_address(IFACE, SHARED4)
    assert net.probe(IFACE, SHARED4.ip, 1.0) == ProbeAnswer(other.mac, None)
    other_net.remove_address(IFACE, SHARED4)
    with ThreadPoolExecutor(2) as pool:  # both probe for the free address at once
        mine = pool.submit(net.probe, IFACE, SHARED4.ip, 0.6)
        theirs = pool.submit(other_net.probe, IFACE, SHARED4.ip, 0.6)
        assert mine.result(timeout=30) == ProbeAnswer(None, other.mac)
        assert theirs.result(timeout=30) == ProbeAnswer(None, node.mac)


# --------------------------------------------------------------------------- route source

def test_route_source_ipv4(net, node):
    subnet = "192.0.2.0/24"
    net.add_address(IFACE, SHARED4)
    assert connected_route(node.ns, subnet)["prefsrc"] == str(node.ipv4.ip)
    net.set_route_source(IFACE, SHARED4)
    net.set_route_source(IFACE, SHARED4)
    route = connected_route(node.ns, subnet)
    assert route["prefsrc"] == str(SHARED4.ip)
    assert route["protocol"] == "kernel" and route["scope"] == "link"
    net.restore_route_source(IFACE, SHARED4)
    assert connected_route(node.ns, subnet)["prefsrc"] == str(node.ipv4.ip), "back to the kernel's own"
    net.restore_route_source(IFACE, SHARED4)
    assert connected_route(node.ns, subnet)["prefsrc"] == str(node.ipv4.ip)


def test_restore_route_source_repairs_the_route_the_kernel_flushed(net, node):
    """Removing the shared address while it is the preferred source deletes the connected route."""
    subnet = "192.0.2.0/24"
    net.add_address(IFACE, SHARED4)
    net.set_route_source(IFACE, SHARED4)
    net.remove_address(IFACE, SHARED4)
    assert connected_route(node.ns, subnet) is None
    net.restore_route_source(IFACE, SHARED4)
    route = connected_route(node.ns, subnet)
    assert route is not None and route["prefsrc"] == str(node.ipv4.ip)
    assert route["protocol"] == "kernel" and route["scope"] == "link"


def test_restore_route_source_is_harmless_when_there_is_nothing_to_restore(net, node):
    before = ip_json(node.ns, "route", "show", "dev", IFACE)
    net.restore_route_source(IFACE, SHARED4)  # never set
    net.restore_route_source(IFACE, ipaddress.ip_interface("198.51.100.7/24"))  # no such route
    net.restore_route_source("eth9", SHARED4)  # no such interface
    net.restore_route_source(IFACE, SHARED6)
    assert ip_json(node.ns, "route", "show", "dev", IFACE) == before


def test_route_source_ipv6(net, node):
    subnet = "2001:db8::/64"
    net.add_address(IFACE, SHARED6)
    assert "prefsrc" not in connected_route(node.ns, subnet, "-6")
    net.set_route_source(IFACE, SHARED6)
    route = connected_route(node.ns, subnet, "-6")
    assert route["prefsrc"] == str(SHARED6.ip) and route["metric"] == 256 and route["protocol"] == "kernel"
    net.restore_route_source(IFACE, SHARED6)
    net.restore_route_source(IFACE, SHARED6)
    route = connected_route(node.ns, subnet, "-6")
    assert "prefsrc" not in route and route["metric"] == 256


def test_set_route_source_needs_the_address(net):
    with pytest.raises(NetworkError, match="192.0.2.100 is not configured on eth0"):
        net.set_route_source(IFACE, SHARED4)


# --------------------------------------------------------------------------- VLAN

def test_ensure_vlan_creates_once(lab, net, node):
    try:
        name = net.ensure_vlan(IFACE, 100)
    except NetworkError as exc:
        assert str(exc) == "create VLAN eth0.100: this kernel has no 802.1Q VLAN support (modprobe 8021q)"
        pytest.skip("this kernel has no 802.1Q VLAN support: creation not exercised (error message checked)")
    assert name == "eth0.100"
    assert net.ensure_vlan(IFACE, 100) == "eth0.100"
    link = ip_json(node, "-d", "link", "show", "dev", "eth0.100")[0]
    assert link["linkinfo"]["info_kind"] == "vlan" and link["linkinfo"]["info_data"]["id"] == 100
    assert "UP" in link["flags"]
    assert link.get("link") == IFACE


def test_ensure_vlan_request_on_pyroute2_mock(node):
    """The creation path, for kernels without 802.1Q: pyroute2's mock netlink engine decodes the request.

    Runs inside the node namespace so that nothing could reach the host even if the mock were bypassed.
    """
    code = r"""
from pyroute2 import IPRoute
from pyroute2.iproute.ipmock import IPEngine
import firmware.core.actions.netlink as netlink
engine = IPEngine()
netlink.IPRoute = lambda: IPRoute(use_socket=engine)
net = netlink.NetlinkNetwork()
assert net.ensure_vlan("eth0", 100) == "eth0.100"
assert net.ensure_vlan("eth0", 100) == "eth0.100"
with IPRoute(use_socket=engine) as ipr:
    parent = ipr.link_lookup(ifname="eth0")[0]
    made = [l for l in ipr.get_links() if l.get("ifname") == "eth0.100"]
    assert len(made) == 1, made
    link = made[0]
    assert link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "vlan"
    assert link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID") == 100
    assert link.get("IFLA_LINK") == parent and link["flags"] & 1
print("ok")
"""
    assert python_in(node, code).stdout.strip() == "ok"
    assert "eth0.100" not in {link["ifname"] for link in ip_json(node, "link", "show")}


def test_ensure_vlan_refuses_a_name_taken_by_something_else(lab, net, node):
    lab.run(node, ["ip", "link", "add", "link", IFACE, "name", "eth0.200", "type", "macvlan"])
    with pytest.raises(NetworkError, match="eth0.200 exists but is not VLAN 200 on eth0"):
        net.ensure_vlan(IFACE, 200)
    with pytest.raises(NetworkError, match="out of range"):
        net.ensure_vlan(IFACE, 4095)
    with pytest.raises(NetworkError, match="interface eth9 does not exist"):
        net.ensure_vlan("eth9", 100)


# --------------------------------------------------------------------------- threads and loops

def test_safe_from_many_threads_and_from_an_event_loop(node):
    code = r"""
import asyncio, ipaddress
from concurrent.futures import ThreadPoolExecutor
from firmware.core.actions.netlink import NetlinkNetwork
net = NetlinkNetwork()
addrs = [ipaddress.ip_interface(f"192.0.2.{120 + i}/24") for i in range(12)]
addrs += [ipaddress.ip_interface(f"2001:db8::{120 + i}/64") for i in range(12)]
def cycle(a):
    net.add_address("eth0", a)
    assert net.has_address("eth0", a)
    net.announce("eth0", a.ip)
    net.remove_address("eth0", a)
    net.add_address("eth0", a)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(cycle, addrs))
assert all(net.has_address("eth0", a) for a in addrs)
async def on_loop():
    net.add_address("eth0", ipaddress.ip_interface("192.0.2.150/24"))
    return net.has_address("eth0", ipaddress.ip_interface("192.0.2.150/24"))
assert asyncio.run(on_loop())
print("ok")
"""
    assert python_in(node, code).stdout.strip() == "ok"
    present = addresses(node, IFACE)
    assert all(f"192.0.2.{120 + i}/24" in present and f"2001:db8::{120 + i}/64" in present for i in range(12))
    assert "192.0.2.150/24" in present


# --------------------------------------------------------------------------- the lab itself

def test_lab_removes_everything_after_a_failed_build(monkeypatch):
    suffix = secrets.token_hex(3)
    real = NetnsLab._build_node

    def failing(self, prefix, i):
        if i == 1:
            raise NetnsError("injected failure")
        return real(self, prefix, i)

    monkeypatch.setattr(NetnsLab, "_build_node", failing)
    with pytest.raises(NetnsError, match="injected"):
        NetnsLab(nodes=2, suffix=suffix)
    assert not [name for name in namespaces() if name.endswith(suffix)]


def test_lab_topology(lab):
    assert [n.ipv4 for n in lab.nodes] == [ipaddress.ip_interface("192.0.2.10/24"),
                                           ipaddress.ip_interface("192.0.2.11/24")]
    assert [n.ipv6 for n in lab.nodes] == [ipaddress.ip_interface("2001:db8::10/64"),
                                           ipaddress.ip_interface("2001:db8::11/64")]
    assert set(addresses(lab.switch, "br0")) >= {"192.0.2.254/24", "2001:db8::fe/64"}
    assert lab.switch.startswith("tdm-sw-") and all(n.ns.startswith(f"tdm-n{n.index}-") for n in lab.nodes)
    ports = {link["ifname"] for link in ip_json(lab.switch, "link", "show", "master", "br0")}
    assert ports == {"p0", "p1"}
    with pytest.raises(NetnsError, match="not a namespace of this lab"):
        lab.run("some-other-ns", ["true"])


# --------------------------------------------------------------------------- frames (pure)

def test_frames_parse_back_with_an_independent_parser():
    mac = bytes.fromhex("020000000001")
    garp = arp_frame(mac, 1, SHARED4.ip, SHARED4.ip)
    assert len(garp) == 60
    assert parse_arp(garp).sender_ip == SHARED4.ip
    record = netns_sniff.parse(garp)
    assert record["kind"] == "garp" and record["mac"] == "02:00:00:00:00:01" and record["op"] == 1

    na = neighbor_advertisement_frame(mac, SHARED6.ip, router=True)
    parsed = parse_neighbor_advertisement(na)
    assert (parsed.router, parsed.solicited, parsed.override, parsed.lladdr) == (True, False, True, mac)
    record = netns_sniff.parse(na)
    assert record["checksum_ok"] and (record["router"], record["solicited"], record["override"]) == (True, False, True)

    ns = netns_sniff.parse(neighbor_solicitation_frame(mac, SHARED6.ip))
    assert ns["kind"] == "ns" and ns["dst_ip"] == "ff02::1:ff00:100" and ns["eth_dst"] == "33:33:ff:00:01:00"
    assert ns["checksum_ok"]


def test_icmpv6_checksum_known_value():
    # RFC 1071 property: a message with its checksum filled in sums to 0xffff (checksum of it is 0)
    src, dst = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("ff02::1")
    message = bytearray(b"\x88\x00\x00\x00\x20\x00\x00\x00" + src.packed)
    message[2:4] = icmpv6_checksum(src, dst, bytes(message)).to_bytes(2, "big")
    assert icmpv6_checksum(src, dst, bytes(message)) == 0
