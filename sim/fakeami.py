"""A fake Asterisk Manager Interface (AMI) server for the simulator and tests.

It speaks the real framing (banner, ``Key: Value`` lines, blank-line ends,
ActionID echo, EventList responses) for the actions Tandem's ``asterisk``
sensor uses, and its state and failure modes can be changed while it runs::

    with FakeAmiServer(secret="s3cret") as ami:
        ami.registrations = {"itsp1": "Rejected"}
        ...connect to 127.0.0.1:ami.port...

Run standalone for the lab: ``python -m sim.fakeami --port 5038 --secret s3cret``.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import threading
import time
from collections.abc import Iterable

from sim.emulator import FakeService, wait_for_interrupt

__all__ = ["FakeAmiServer"]

Message = dict[str, str]

# PRIShowSpans state → (Alarm, Up)
_PRI_STATES = {"up": ("No", "Yes"), "down": ("No", "No"), "alarm": ("Yes", "No")}


def _encode(fields: Iterable[tuple[str, object]]) -> bytes:
    return ("".join(f"{key}: {value}\r\n" for key, value in fields) + "\r\n").encode()


def _hang_up(sock: socket.socket) -> None:
    """Shut a socket down both ways (waking a thread blocked on it), then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _parse(raw: bytes) -> Message:
    message: Message = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    return message


class FakeAmiServer(FakeService):
    """A threaded TCP server that behaves like Asterisk's AMI for the actions Tandem uses.

    State (change it at any time; it is read on every action):
    ``calls`` (current calls; CoreShowChannels lists as many channels),
    ``processed_calls``, ``registrations`` {name: "Registered" | "Unregistered"
    | "Rejected" | …} (served by both PJSIPShowRegistrationsOutbound and
    SIPshowregistry), ``spans`` {span: "OK" | "RED" | "YEL/RED" | "UNCONFIGURED" …}
    for DAHDIShowStatus, ``pri_spans`` {span: "up" | "down" | "alarm"} for
    PRIShowSpans, and ``modules`` (which of "pjsip", "sip", "dahdi", "pri" are
    loaded; actions of the others answer "Invalid/unknown command").

    Failure modes: ``hang`` (answer no action, the login included; the
    banner is still sent unless ``banner`` is False), ``refuse_login``,
    ``drop_after_banner`` (close right after the banner) and
    ``send_unsolicited_events`` (interleave unrelated events, including list
    items of another ActionID, with every answer). ``login_fail_delay`` is the
    pause before a failed login answer (about 1 s in Asterisk).

    ``actions`` records every action received (parsed), ``connections``
    counts accepted connections. ``port`` is the bound TCP port (after ``start``).
    """

    _thread_name = "fakeami-accept"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, username: str = "tandem",
                 secret: str = "tandem-secret", version: str = "9.0.0") -> None:
        """Configure; `start` binds and begins serving."""
        super().__init__(host, port)
        self.username = username
        self.secret = secret
        self.version = version
        self.calls = 0
        self.processed_calls = 0
        self.registrations: dict[str, str] = {}
        self.spans: dict[int, str] = {}
        self.pri_spans: dict[int, str] = {}
        self.modules: set[str] = {"pjsip", "sip", "dahdi", "pri"}
        self.hang = False
        self.banner = True
        self.refuse_login = False
        self.drop_after_banner = False
        self.send_unsolicited_events = False
        self.login_fail_delay = 1.0
        self.actions: list[Message] = []
        self.connections = 0
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._started = time.time()
        self._event_ids = itertools.count(1)

    def close(self) -> None:
        """Stop listening and drop every open connection."""
        self._closed.set()
        if self._sock is not None:
            _hang_up(self._sock)
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every open client connection but keep listening (like an Asterisk restart)."""
        with self._lock:
            clients, self._clients = list(self._clients), set()
        for conn in clients:
            _hang_up(conn)

    # ---- connections

    def _bind(self, family: socket.AddressFamily) -> socket.socket:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(16)
        return listener

    def _loop(self) -> None:
        """Accept connections, each served on its own thread."""
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), name="fakeami-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.banner:
                conn.sendall(f"Asterisk Call Manager/{self.version}\r\n".encode())
            if self.drop_after_banner:
                return
            buffer = b""
            authenticated = False
            while not self._closed.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                raw, buffer = buffer.split(b"\r\n\r\n", 1)
                message = _parse(raw)
                with self._lock:
                    self.actions.append(message)
                if self.hang:
                    continue
                reply, authenticated, keep_open = self._answer(message, authenticated)
                conn.sendall(reply)
                if not keep_open:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    # ---- actions

    def _answer(self, message: Message, authenticated: bool) -> tuple[bytes, bool, bool]:
        """The bytes to send for one action, whether the session is now logged in, and whether to keep it."""
        action = message.get("Action", "").lower()
        aid = message.get("ActionID")
        noise = self._noise() if self.send_unsolicited_events else b""

        def response(kind: str, *fields: tuple[str, object]) -> bytes:
            head: list[tuple[str, object]] = [("Response", kind)]
            if aid is not None:
                head.append(("ActionID", aid))
            return _encode([*head, *fields])

        if action == "login":
            ok = (not self.refuse_login and message.get("Username") == self.username
                  and message.get("Secret") == self.secret)
            if not ok:
                time.sleep(self.login_fail_delay)
                return response("Error", ("Message", "Authentication failed")), False, True
            booted = _encode([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", 1000),
                              ("LastReload", 1000), ("Status", "Fully Booted")])
            return (response("Success", ("Message", "Authentication accepted")) + noise + booted, True, True)
        if action == "logoff":
            return response("Goodbye", ("Message", "Thanks for all the fish.")), authenticated, False
        if not authenticated:
            return response("Error", ("Message", "Authentication Required")), False, True

        handler = {
            "ping": self._ping, "corestatus": self._core_status, "coreshowchannels": self._channels,
            "pjsipshowregistrationsoutbound": self._pjsip_registrations, "sipshowregistry": self._sip_registry,
            "dahdishowstatus": self._dahdi_status, "prishowspans": self._pri_spans,
        }.get(action)
        if handler is None:
            return noise + response("Error", ("Message", "Invalid/unknown command")), True, True
        result = handler()
        if result is None:
            return noise + response("Error", ("Message", "Invalid/unknown command")), True, True
        if isinstance(result, tuple):  # an EventList: (what, item events, completion event)
            what, items, complete = result
            out = response("Success", ("EventList", "start"), ("Message", f"{what} will follow"))
            for item in items:
                out += noise + _encode([*item[:1], ("ActionID", aid), *item[1:]])
            out += noise + _encode([complete[0], ("ActionID", aid), ("EventList", "Complete"),
                                    ("ListItems", len(items)), *complete[1:]])
            return out, True, True
        return noise + response("Success", *result), True, True

    def _noise(self) -> bytes:
        """Unrelated traffic: events without ActionID and a list item of some other ActionID."""
        n = next(self._event_ids)
        return (_encode([("Event", "PeerStatus"), ("Privilege", "system,all"), ("ChannelType", "PJSIP"),
                         ("Peer", f"PJSIP/phone{n}"), ("PeerStatus", "Reachable")])
                + _encode([("Event", "OutboundRegistrationDetail"), ("ActionID", f"other-{n}"),
                           ("ObjectName", "stranger"), ("Status", "Rejected")])
                + _encode([("Event", "DAHDIShowStatusComplete"), ("ActionID", f"other-{n}"),
                           ("EventList", "Complete"), ("ListItems", 0)]))

    def _ping(self) -> list[tuple[str, object]]:
        return [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]

    def _core_status(self) -> list[tuple[str, object]]:
        started = time.localtime(self._started)
        return [("CoreStartupDate", time.strftime("%Y-%m-%d", started)),
                ("CoreStartupTime", time.strftime("%H:%M:%S", started)),
                ("CoreReloadDate", time.strftime("%Y-%m-%d", started)),
                ("CoreReloadTime", time.strftime("%H:%M:%S", started)),
                ("CoreCurrentCalls", self.calls), ("CoreProcessedCalls", self.processed_calls)]

    def _channels(self) -> tuple:
        items = [[("Event", "CoreShowChannel"), ("Channel", f"PJSIP/itsp1-{i:08x}"), ("ChannelState", 6),
                  ("ChannelStateDesc", "Up"), ("Application", "Dial"), ("Duration", "00:01:00")]
                 for i in range(self.calls)]
        return "Channels", items, [("Event", "CoreShowChannelsComplete")]

    def _pjsip_registrations(self) -> tuple | None:
        if "pjsip" not in self.modules:
            return None
        regs = dict(self.registrations)
        items = [[("Event", "OutboundRegistrationDetail"), ("ObjectType", "registration"), ("ObjectName", name),
                  ("ServerUri", f"sip:{name}.example.net"), ("ClientUri", f"sip:tandem@{name}.example.net"),
                  ("Status", status), ("NextReg", 3600 if status == "Registered" else 60)]
                 for name, status in regs.items()]
        registered = sum(1 for s in regs.values() if s == "Registered")
        return ("Following are Events for each Outbound registration", items,
                [("Event", "OutboundRegistrationDetailComplete"), ("Registered", registered),
                 ("NotRegistered", len(regs) - registered)])

    def _sip_registry(self) -> tuple | None:
        if "sip" not in self.modules:
            return None
        items = [[("Event", "RegistryEntry"), ("Host", name), ("Port", 5060), ("Username", "tandem"),
                  ("Domain", name), ("DomainPort", 5060), ("Refresh", 120), ("State", status),
                  ("RegistrationTime", int(time.time()))]
                 for name, status in dict(self.registrations).items()]
        return "Registrations", items, [("Event", "RegistrationsComplete")]

    def _dahdi_status(self) -> tuple | None:
        if "dahdi" not in self.modules:
            return None
        items = [[("Event", "DAHDIShowStatus"), ("Span", span), ("Description", f"T1 span {span}"),
                  ("Alarms", alarms), ("IRQ", 0), ("bpviol", 0), ("CRC", 0), ("Framing", "ESF"),
                  ("Coding", "B8ZS"), ("Options", ""), ("LBO", "0 db (CSU)/0-133 feet (DSX-1)")]
                 for span, alarms in sorted(self.spans.items())]
        return "DAHDI span statuses", items, [("Event", "DAHDIShowStatusComplete")]

    def _pri_spans(self) -> tuple | None:
        if "pri" not in self.modules:
            return None
        items = []
        for span, state in sorted(self.pri_spans.items()):
            alarm, up = _PRI_STATES.get(state, ("Yes", "No"))
            items.append([("Event", "PRIShowSpans"), ("Span", span), ("DChannel", f"{span}/24"),
                          ("Order", "Primary"), ("Active", "Yes"), ("Alarm", alarm), ("Up", up)])
        return "PRI spans", items, [("Event", "PRIShowSpansComplete")]


def main(argv: list[str] | None = None) -> int:
    """Serve a fake AMI until interrupted (for the lab)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--username", default="tandem")
    parser.add_argument("--secret", default="tandem-secret")
    parser.add_argument("--register", action="append", default=[], metavar="NAME[=STATUS]",
                        help="an outbound registration (status Registered unless given)")
    args = parser.parse_args(argv)
    server = FakeAmiServer(args.host, args.port, args.username, args.secret)
    for entry in args.register:
        name, _, status = entry.partition("=")
        server.registrations[name] = status or "Registered"
    with server:
        print(f"fake AMI on {args.host}:{server.port}", flush=True)
        wait_for_interrupt()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
