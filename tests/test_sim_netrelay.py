"""Tests for sim.netrelay.UdpRelay."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from sim.netrelay import UdpRelay, free_udp_port

from helpers import wait_for

HOST = "127.0.0.1"
TIMEOUT = 10.0


def recv(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, tuple]:
    sock.settimeout(timeout)
    try:
        return sock.recvfrom(65535)
    finally:
        sock.setblocking(False)


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recvfrom(65535)
    except BlockingIOError:
        return True
    return False


@pytest.fixture
def nodes() -> Iterator[tuple[socket.socket, socket.socket]]:
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        socks.append(sock)
    yield socks[0], socks[1]
    for sock in socks:
        sock.close()


@pytest.fixture
def relay(nodes) -> Iterator[UdpRelay]:
    ports = (nodes[0].getsockname()[1], nodes[1].getsockname()[1])
    with UdpRelay(ports, host=HOST) as r:
        yield r


def send(relay: UdpRelay, nodes, src: int, payload: bytes) -> None:
    nodes[src].sendto(payload, (HOST, relay.relay_port(src)))


def test_free_udp_port_is_bindable():
    port = free_udp_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))


def test_relay_ports_are_distinct(relay, nodes):
    ports = {relay.relay_port(0), relay.relay_port(1), *(s.getsockname()[1] for s in nodes)}
    assert len(ports) == 4
    with pytest.raises(ValueError):
        relay.relay_port(2)


def test_datagrams_pass_both_ways(relay, nodes):
    send(relay, nodes, 0, b"hello from 0")
    data, addr = recv(nodes[1])
    assert data == b"hello from 0"
    assert addr == (HOST, relay.relay_port(1))

    send(relay, nodes, 1, b"hello from 1")
    data, addr = recv(nodes[0])
    assert data == b"hello from 1"
    assert addr == (HOST, relay.relay_port(0))

    stats = relay.stats
    assert stats["0->1"]["forwarded"] == stats["1->0"]["forwarded"] == 1


def test_datagram_boundaries_and_order_kept(relay, nodes):
    payloads = [bytes([i]) * (i + 1) for i in range(20)]
    for p in payloads:
        send(relay, nodes, 0, p)
    assert [recv(nodes[1])[0] for _ in payloads] == payloads


def test_cut_and_restore(relay, nodes):
    relay.cut()
    send(relay, nodes, 0, b"lost 0")
    send(relay, nodes, 1, b"lost 1")
    wait_for(lambda: relay.stats["0->1"]["dropped"] == 1 and relay.stats["1->0"]["dropped"] == 1,
             what="datagrams dropped by the cut")
    assert nothing_waiting(nodes[0]) and nothing_waiting(nodes[1])

    relay.restore()
    send(relay, nodes, 0, b"back 0")
    assert recv(nodes[1])[0] == b"back 0"
    send(relay, nodes, 1, b"back 1")
    assert recv(nodes[0])[0] == b"back 1"


def test_one_way_cut(relay, nodes):
    relay.cut("0->1")
    send(relay, nodes, 0, b"dropped")
    send(relay, nodes, 1, b"arrives")
    assert recv(nodes[0])[0] == b"arrives"
    wait_for(lambda: relay.stats["0->1"]["dropped"] == 1, what="0->1 drop")
    assert nothing_waiting(nodes[1])

    relay.restore("0->1")
    send(relay, nodes, 0, b"now ok")
    assert recv(nodes[1])[0] == b"now ok"


def test_bad_direction_rejected(relay):
    with pytest.raises(ValueError):
        relay.cut("0->2")
    with pytest.raises(ValueError):
        relay.restore("a->b")


def test_total_loss_drops_everything(relay, nodes):
    relay.set_loss(1.0)
    for i in range(20):
        send(relay, nodes, 0, b"%d" % i)
        send(relay, nodes, 1, b"%d" % i)
    wait_for(lambda: relay.stats["0->1"]["lost"] == 20 and relay.stats["1->0"]["lost"] == 20,
             what="all datagrams lost")
    assert nothing_waiting(nodes[0]) and nothing_waiting(nodes[1])
    assert relay.stats["0->1"]["forwarded"] == 0

    relay.set_loss(0.0)
    send(relay, nodes, 0, b"through")
    assert recv(nodes[1])[0] == b"through"


def test_partial_loss_is_seeded(relay, nodes):
    relay.set_loss(0.5, seed=1234)
    for i in range(100):
        send(relay, nodes, 0, b"%d" % i)
    wait_for(lambda: relay.stats["0->1"]["received"] == 100, what="all datagrams received")
    stats = relay.stats["0->1"]
    assert 0 < stats["lost"] < 100
    assert stats["lost"] + stats["forwarded"] == 100


def test_invalid_loss_rejected(relay):
    with pytest.raises(ValueError):
        relay.set_loss(1.5)


def test_delay(relay, nodes):
    delay = 0.3
    relay.set_delay(delay)
    start = time.monotonic()
    send(relay, nodes, 0, b"first")
    send(relay, nodes, 0, b"second")
    assert recv(nodes[1])[0] == b"first"
    assert time.monotonic() - start >= delay
    assert recv(nodes[1])[0] == b"second"

    relay.set_delay(0)
    send(relay, nodes, 1, b"fast")
    assert recv(nodes[0])[0] == b"fast"


def test_stop_is_idempotent_and_frees_ports(nodes):
    ports = (nodes[0].getsockname()[1], nodes[1].getsockname()[1])
    relay = UdpRelay(ports)
    relay.start()
    relay_ports = relay.relay_port(0), relay.relay_port(1)
    relay.stop()
    relay.stop()
    for port in relay_ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, port))
    with pytest.raises(RuntimeError):
        relay.start()
