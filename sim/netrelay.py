"""A loopback UDP relay standing in for the network between two nodes.

Each node is configured with the relay as its peer, so tests can cut, lose
or delay the traffic between the nodes without root privileges. Direction
names are ``"0->1"`` and ``"1->0"``. Cut, loss, delay and the forwarding
thread come from sim/impair.py, which the serial cable shares.

An on-path attacker is played with ``capture`` (record the datagrams of one
direction, whatever then becomes of them) and ``inject`` (send a datagram to
a node from the relay port it hears its peer on, as a replay would).
"""

from __future__ import annotations

import logging
import selectors
import socket

from sim.impair import Events, ImpairingForwarder

__all__ = ["UdpRelay", "free_udp_port"]

log = logging.getLogger(__name__)

_DIRECTIONS = ("0->1", "1->0")
_MAX_DATAGRAM = 65535


def _family(host: str) -> socket.AddressFamily:
    return socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][0]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port on ``host`` that was free a moment ago (another process may take it)."""
    return _free_port(host, socket.SOCK_DGRAM)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (another process may take it)."""
    return _free_port(host, socket.SOCK_STREAM)


def _free_port(host: str, kind: int) -> int:
    with socket.socket(_family(host), kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class UdpRelay(ImpairingForwarder):
    """Forwards UDP datagrams between two nodes on loopback; can cut, lose or delay them (see sim/impair.py).

    The relay binds two free ports of its own when constructed. Node ``i``
    sends to ``(host, relay_port(i))``; a datagram received there is sent on
    from the other relay port to ``(host, node_ports[1 - i])``, so the peer
    sees it coming from ``relay_port(1 - i)``.

    All control methods are thread-safe. ``stats`` maps each direction to
    datagram counts: ``received``, ``forwarded``, ``dropped`` (cut),
    ``lost`` (random loss) and ``failed`` (send errors).
    A relay cannot be restarted once stopped.
    """

    _what = "udp relay"

    def __init__(self, node_ports: tuple[int, int], host: str = "127.0.0.1",
                 node_hosts: tuple[str, str] | None = None) -> None:
        """Bind the two relay ports on `host`; forwarding begins with start().

        `node_hosts` gives each node's own address when the nodes do not share
        `host` (nodes in network namespaces, the relay on the switch)."""
        if len(node_ports) != 2:
            raise ValueError("node_ports must hold exactly two ports")
        super().__init__(_DIRECTIONS, ("received", "forwarded", "dropped", "lost", "failed"))
        self._host = host
        self._node_hosts = node_hosts or (host, host)
        self._node_ports = (int(node_ports[0]), int(node_ports[1]))
        self._socks: list[socket.socket] = []
        try:
            for _ in range(2):
                sock = socket.socket(_family(host), socket.SOCK_DGRAM)
                self._socks.append(sock)
                sock.bind((host, 0))
                sock.setblocking(False)
        except BaseException:
            for sock in self._socks:
                sock.close()
            raise
        self._ports = tuple(s.getsockname()[1] for s in self._socks)
        self._closed = False
        self._captures: dict[str, list[tuple[float, bytes]]] = {d: [] for d in _DIRECTIONS}
        self._capturing: set[str] = set()

    # ----------------------------------------------------------------- public API

    def relay_port(self, i: int) -> int:
        """The port node ``i`` must send to (its peer address is ``host:relay_port(i)``)."""
        if i not in (0, 1):
            raise ValueError("node index must be 0 or 1")
        return self._ports[i]

    def start(self) -> None:
        """Start the forwarding thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("relay was stopped and cannot be restarted")
            if self._sel is not None:
                raise RuntimeError("relay already started")
            sel = self._open_selector()
            for i, sock in enumerate(self._socks):
                sel.register(sock, selectors.EVENT_READ, i)
            self._start_thread(f"udprelay-{self._ports[0]}-{self._ports[1]}")

    def stop(self) -> None:
        """Stop forwarding and close the relay's sockets. Idempotent."""
        self._stop_thread()
        with self._lock:
            self._close_selector()
            for sock in self._socks:
                sock.close()
            self._closed = True

    def capture(self, direction: str, on: bool = True) -> None:
        """Record every datagram received in ``direction`` from now on, before it is cut, lost, delayed or
        forwarded (``on=False``: stop recording, keeping what was recorded; a new capture starts empty)."""
        (direction,) = self._impairments.parse(direction)
        with self._lock:
            if on:
                self._captures[direction] = []
                self._capturing.add(direction)
            else:
                self._capturing.discard(direction)

    def captured(self, direction: str) -> list[tuple[float, bytes]]:
        """The datagrams recorded in ``direction``: (time.monotonic() when received, payload), oldest first."""
        (direction,) = self._impairments.parse(direction)
        with self._lock:
            return list(self._captures[direction])

    def inject(self, direction: str, data: bytes) -> None:
        """Send ``data`` to the destination node of ``direction`` from the relay port that node hears its
        peer on (so it looks as if the relay forwarded it), bypassing cut, loss and delay."""
        (direction,) = self._impairments.parse(direction)
        dst = 1 - _DIRECTIONS.index(direction)
        with self._lock:
            self._check_running()
            self._socks[dst].sendto(data, (self._node_hosts[dst], self._node_ports[dst]))

    def set_loss(self, probability: float, seed: int | None = None) -> None:
        """Lose each datagram independently with ``probability``; a seed makes the losses repeatable."""
        with self._lock:
            self._impairments.set_loss(probability, seed)

    # ------------------------------------------------------------------- helpers
    # The methods below are called with self._lock held.

    def _receive(self, src: int, now: float) -> None:
        direction = _DIRECTIONS[src]
        counts = self._stats[direction]
        while True:
            try:
                data = self._socks[src].recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. a late ICMP error; never fatal
                log.warning("relay port %d: receive failed: %s", self._ports[src], exc)
                return
            counts["received"] += 1
            if direction in self._capturing:
                self._captures[direction].append((now, data))
            verdict = self._impairments.admit(direction, data, now)
            if verdict == "cut":
                counts["dropped"] += 1
            elif verdict == "lost":
                counts["lost"] += 1

    def _deliver_due(self, now: float) -> None:
        for src, direction in enumerate(_DIRECTIONS):
            dst = 1 - src
            for data in self._impairments.due(direction, now):
                try:
                    self._socks[dst].sendto(data, (self._node_hosts[dst], self._node_ports[dst]))
                except OSError as exc:
                    log.warning("relay %s: send failed: %s", direction, exc)
                    self._stats[direction]["failed"] += 1
                else:
                    self._stats[direction]["forwarded"] += 1

    # ------------------------------------------------------------- forwarder

    def _timeout(self, now: float) -> float | None:
        due = self._impairments.next_due()
        return None if due is None else max(0.0, due - now)

    def _step(self, events: Events, now: float) -> None:
        for key, _ in events:
            self._receive(key.data, now)
        self._deliver_due(now)
