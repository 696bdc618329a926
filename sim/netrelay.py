"""A loopback UDP relay standing in for the network between two nodes.

Each node is configured with the relay as its peer, so tests can cut, lose
or delay the traffic between the nodes without root privileges. Direction
names are ``"0->1"`` and ``"1->0"``.
"""

from __future__ import annotations

import collections
import logging
import random
import selectors
import socket
import threading
import time
from types import TracebackType

from sim.emulator import WakePipe

__all__ = ["UdpRelay", "free_udp_port"]

log = logging.getLogger(__name__)

_DIRECTIONS = ("0->1", "1->0")
_MAX_DATAGRAM = 65535


def _family(host: str) -> socket.AddressFamily:
    return socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][0]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port on ``host`` that was free a moment ago (another process may take it)."""
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class UdpRelay:
    """Forwards UDP datagrams between two nodes on loopback; can cut, lose or delay them.

    The relay binds two free ports of its own when constructed. Node ``i``
    sends to ``(host, relay_port(i))``; a datagram received there is sent on
    from the other relay port to ``(host, node_ports[1 - i])``, so the peer
    sees it coming from ``relay_port(1 - i)``.

    All control methods are thread-safe. ``stats`` maps each direction to
    datagram counts: ``received``, ``forwarded``, ``dropped`` (cut),
    ``lost`` (random loss) and ``failed`` (send errors).
    A relay cannot be restarted once stopped.
    """

    def __init__(self, node_ports: tuple[int, int], host: str = "127.0.0.1",
                 node_hosts: tuple[str, str] | None = None) -> None:
        """Bind the two relay ports on `host`; forwarding begins with start().

        `node_hosts` gives each node's own address when the nodes do not share
        `host` (nodes in network namespaces, the relay on the switch)."""
        if len(node_ports) != 2:
            raise ValueError("node_ports must hold exactly two ports")
        self._host = host
        self._node_hosts = node_hosts or (host, host)
        self._node_ports = (int(node_ports[0]), int(node_ports[1]))
        self._lock = threading.Lock()
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
        self._cut: set[str] = set()
        self._loss = 0.0
        self._rng = random.Random()
        self._delay = 0.0
        self._queues: dict[str, collections.deque[tuple[float, bytes]]] = {
            d: collections.deque() for d in _DIRECTIONS
        }
        self._stats = {
            d: {"received": 0, "forwarded": 0, "dropped": 0, "lost": 0, "failed": 0}
            for d in _DIRECTIONS
        }
        self._sel: selectors.BaseSelector | None = None
        self._waker = WakePipe()
        self._thread: threading.Thread | None = None
        self._running = False
        self._closed = False

    # ----------------------------------------------------------------- public API

    def relay_port(self, i: int) -> int:
        """The port node ``i`` must send to (its peer address is ``host:relay_port(i)``)."""
        if i not in (0, 1):
            raise ValueError("node index must be 0 or 1")
        return self._ports[i]

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """A snapshot of the per-direction datagram counters."""
        with self._lock:
            return {d: dict(counts) for d, counts in self._stats.items()}

    def start(self) -> None:
        """Start the forwarding thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("relay was stopped and cannot be restarted")
            if self._sel is not None:
                raise RuntimeError("relay already started")
            self._sel = selectors.DefaultSelector()
            self._waker.open()
            self._sel.register(self._waker.fileno(), selectors.EVENT_READ, None)
            for i, sock in enumerate(self._socks):
                self._sel.register(sock, selectors.EVENT_READ, i)
            self._running = True
            self._thread = threading.Thread(
                target=self._run, name=f"udprelay-{self._ports[0]}-{self._ports[1]}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop forwarding and close the relay's sockets. Idempotent."""
        with self._lock:
            self._running = False
            thread, self._thread = self._thread, None
            self._waker.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._sel is not None:
                self._sel.close()
                self._sel = None
            self._waker.close()
            for sock in self._socks:
                sock.close()
            self._closed = True

    def cut(self, direction: str | None = None) -> None:
        """Drop every datagram in ``direction`` (``"0->1"``/``"1->0"``; None = both) until restored."""
        with self._lock:
            self._cut.update(_parse_direction(direction))

    def restore(self, direction: str | None = None) -> None:
        """Undo cut() for ``direction`` (None = both)."""
        with self._lock:
            self._cut.difference_update(_parse_direction(direction))

    def set_loss(self, probability: float, seed: int | None = None) -> None:
        """Lose each datagram independently with ``probability``; a seed makes the losses repeatable."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("loss probability must be within [0, 1]")
        with self._lock:
            self._loss = float(probability)
            if seed is not None:
                self._rng = random.Random(seed)

    def set_delay(self, seconds: float) -> None:
        """Deliver each datagram received from now on ``seconds`` later, keeping order."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)
            self._waker.wake()

    def __enter__(self) -> UdpRelay:
        """Start the relay."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the relay."""
        self.stop()

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
            if direction in self._cut:
                counts["dropped"] += 1
            elif self._loss and self._rng.random() < self._loss:
                counts["lost"] += 1
            else:
                queue = self._queues[direction]
                due = now + self._delay
                if queue and queue[-1][0] > due:
                    due = queue[-1][0]  # a shortened delay must not reorder datagrams
                queue.append((due, data))

    def _deliver_due(self, now: float) -> None:
        for src, direction in enumerate(_DIRECTIONS):
            dst = 1 - src
            queue = self._queues[direction]
            while queue and queue[0][0] <= now:
                _, data = queue.popleft()
                try:
                    self._socks[dst].sendto(data, (self._node_hosts[dst], self._node_ports[dst]))
                except OSError as exc:
                    log.warning("relay %s: send failed: %s", direction, exc)
                    self._stats[direction]["failed"] += 1
                else:
                    self._stats[direction]["forwarded"] += 1

    def _timeout(self, now: float) -> float | None:
        times = [q[0][0] for q in self._queues.values() if q]
        return max(0.0, min(times) - now) if times else None

    # ------------------------------------------------------------- forwarder

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                sel = self._sel
                timeout = self._timeout(time.monotonic())
            assert sel is not None
            events = sel.select(timeout)
            with self._lock:
                if not self._running:
                    return
                try:
                    self._step(events)
                except Exception:  # the relay must keep running whatever happens
                    log.exception("udp relay error")

    def _step(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        now = time.monotonic()
        for key, _ in events:
            if key.data is None:
                self._waker.drain()
            else:
                self._receive(key.data, now)
        self._deliver_due(now)


def _parse_direction(direction: str | None) -> tuple[str, ...]:
    if direction is None:
        return _DIRECTIONS
    if direction not in _DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {_DIRECTIONS}")
    return (direction,)
