"""Heartbeat transports (UDP and serial) and what each one carried.

Every link carries the same sealed packets. A link never blocks: sends that
cannot go out at once are dropped and counted, and a serial port that
disappears is closed and reopened when it comes back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import serial
from cobs import cobs

from firmware.config import SerialLinkConfig, UdpLinkConfig
from firmware.errors import TandemError
from firmware.serialport import close_quietly, open_port

log = logging.getLogger(__name__)

SERIAL_REOPEN_S = 0.05
SERIAL_MAX_FRAME = 512
SERIAL_MAX_QUEUED = 1024

PacketHandler = Callable[[str, bytes, float], None]


class LinkError(TandemError):
    """A link that cannot be set up at all (bad address, port in use): fatal at startup."""


@dataclass
class TransportCounters:
    """What one transport carried: packets (frames) and their bytes each way, what it could not send or decode."""

    frames_sent: int = 0
    bytes_sent: int = 0
    send_dropped: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    bad_frames: int = 0  # serial frames that could not be decoded (line noise), dropped before the protocol

    def to_json(self) -> dict[str, int]:
        """The counters as plain data."""
        return dict(self.__dict__)


class Link:
    """Base of all transports: a name, its figures and a packet callback."""

    kind = "?"

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = TransportCounters()
        self.detail = "not started"
        self._on_packet: PacketHandler | None = None

    async def start(self, on_packet: PacketHandler) -> None:
        """Open the transport; packets go to `on_packet(link_name, packet, monotonic_time)`."""
        raise NotImplementedError

    def send(self, packet: bytes) -> None:
        """Send one packet now or drop it; never blocks."""
        raise NotImplementedError

    def maintain(self, now: float) -> None:
        """Periodic upkeep (reopening a lost device); called on every heartbeat tick."""

    def close(self) -> None:
        """Release the transport."""

    @property
    def is_open(self) -> bool:
        """Whether the transport can send right now."""
        raise NotImplementedError

    def _count_sent(self, packet: bytes) -> None:
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(packet)

    def _deliver(self, packet: bytes) -> None:
        self.counters.frames_received += 1
        self.counters.bytes_received += len(packet)
        if self._on_packet is not None:
            self._on_packet(self.name, packet, asyncio.get_running_loop().time())


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, link: "UdpLink") -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link.detail = self.link.bound_detail
        self.link._deliver(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like arrive here; the peer may simply be down.
        self.link.counters.send_dropped += 1
        self.link.detail = f"last send error: {exc}"


class UdpLink(Link):
    """Heartbeats over UDP between a bind address and the peer's address."""

    kind = "udp"

    def __init__(self, config: UdpLinkConfig) -> None:
        super().__init__(config.name)
        self.bind_address = config.bind_address
        self.peer_address = config.peer_address
        self._transport: asyncio.DatagramTransport | None = None
        self.bound_detail = "not bound"

    async def start(self, on_packet: PacketHandler) -> None:
        """Bind the socket; raise LinkError naming the address if that is impossible."""
        self._on_packet = on_packet
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.bind_address[0] else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=self.bind_address, family=family)
        except OSError as exc:
            host, port = self.bind_address
            raise LinkError(f"link {self.name}: cannot bind {host}:{port}: {exc.strerror or exc}") from None
        sock = transport.get_extra_info("socket")
        # Heartbeats are control traffic: mark them so QoS-aware switches queue them first.
        try:
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)  # CS6
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)
        except OSError:
            pass
        self._transport = transport
        self.bound_detail = self.detail = f"bound {self.bind_address[0]}:{self.bind_address[1]}"

    def send(self, packet: bytes) -> None:
        """Send to the peer's address; errors are counted, never raised."""
        if self._transport is None:
            self.counters.send_dropped += 1
            return
        try:
            self._transport.sendto(packet, self.peer_address)
            self._count_sent(packet)
        except OSError as exc:
            self.counters.send_dropped += 1
            self.detail = f"last send error: {exc}"

    @property
    def is_open(self) -> bool:
        """Whether the socket is bound."""
        return self._transport is not None

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class FrameDecoder:
    """Splits a byte stream into COBS frames delimited by zero bytes.

    Noise between frames becomes at most one malformed frame; the next zero
    byte resynchronises the stream.
    """

    def __init__(self, max_frame: int = SERIAL_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; return (complete packets, number of malformed frames dropped)."""
        packets: list[bytes] = []
        malformed = 0
        self._buffer += data
        while True:
            end = self._buffer.find(0)
            if end < 0:
                break
            chunk = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if not chunk:
                continue
            try:
                packets.append(cobs.decode(chunk))
            except cobs.DecodeError:
                malformed += 1
        if len(self._buffer) > self.max_frame:
            self._buffer.clear()
            malformed += 1
        return packets, malformed


def encode_frame(packet: bytes) -> bytes:
    """A packet as a serial frame: a leading zero flushes any noise, then COBS, then zero."""
    return b"\0" + cobs.encode(packet) + b"\0"


class SerialLink(Link):
    """Heartbeats over a serial null-modem cable (8N1, no flow control), COBS framed."""

    kind = "serial"

    def __init__(self, config: SerialLinkConfig) -> None:
        super().__init__(config.name)
        self.port = config.port
        self.baud = config.baud
        self._serial: serial.Serial | None = None
        self._decoder = FrameDecoder()
        self._next_open = 0.0
        self._lent_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def lend(self, until: float) -> None:
        """Let go of the port until `until` (monotonic; 0: take it back now), e.g. for a re-pairing on the cable.

        The other links carry the heartbeats meanwhile; the port is reopened when the loan ends.
        """
        self._lent_until = until
        if until > 0:
            self.close()
            self.detail = f"{self.port} lent to a pairing"
            log.info("link %s: %s lent to a pairing", self.name, self.port)
        else:
            self._next_open = 0.0

    async def start(self, on_packet: PacketHandler) -> None:
        """Try to open the port; a missing port is retried on every tick, never fatal."""
        self._on_packet = on_packet
        self._loop = asyncio.get_running_loop()
        self._try_open()

    def _try_open(self) -> None:
        assert self._loop is not None
        try:
            port = open_port(self.port, self.baud, read_timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            reason = str(exc)
            if self.detail != f"cannot open {self.port}: {reason}":
                log.warning("link %s: cannot open %s: %s (retrying)", self.name, self.port, reason)
            self.detail = f"cannot open {self.port}: {reason}"
            return
        self._serial = port
        self._decoder = FrameDecoder()
        self._loop.add_reader(port.fileno(), self._on_readable)
        self.detail = f"open {self.port} at {self.baud} 8N1"
        log.info("link %s: opened %s", self.name, self.port)

    def _on_readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            self._lost(f"read failed: {exc}")
            return
        packets, malformed = self._decoder.feed(data)
        self.counters.bad_frames += malformed
        for packet in packets:
            self._deliver(packet)

    def _lost(self, why: str) -> None:
        log.warning("link %s: %s %s; will reopen when it is back", self.name, self.port, why)
        self.close()
        self.detail = f"{self.port} lost ({why}); reopening"

    def send(self, packet: bytes) -> None:
        """Write one frame if the port's queue has room; otherwise drop it."""
        port = self._serial
        if port is None:
            self.counters.send_dropped += 1
            return
        frame = encode_frame(packet)
        try:
            if port.out_waiting > SERIAL_MAX_QUEUED:
                self.counters.send_dropped += 1
                return
            # os.write on pyserial's non-blocking fd: pyserial's own write() spins
            # on EAGAIN even with write_timeout=0, which would stall the event loop.
            written = os.write(port.fileno(), frame)
        except BlockingIOError:
            self.counters.send_dropped += 1
            return
        except (serial.SerialException, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
                self.counters.send_dropped += 1
                return
            self._lost(f"write failed: {exc}")
            self.counters.send_dropped += 1
            return
        if written < len(frame):
            self.counters.send_dropped += 1  # the partial frame is discarded by the far decoder
        else:
            self._count_sent(packet)

    def maintain(self, now: float) -> None:
        """Reopen the port if it was lost (a USB adapter unplugged and plugged back) or its loan ended."""
        if self._serial is None and now >= self._next_open and now >= self._lent_until:
            self._next_open = now + SERIAL_REOPEN_S
            self._try_open()

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._serial is not None

    def close(self) -> None:
        """Close the port and stop watching it."""
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            try:
                self._loop.remove_reader(port.fileno())
            except (ValueError, OSError):
                pass
        close_quietly(port)


def make_link(config: UdpLinkConfig | SerialLinkConfig) -> Link:
    """The transport for one configured link."""
    if isinstance(config, UdpLinkConfig):
        return UdpLink(config)
    return SerialLink(config)
