"""The bulk channel between the two boxes: mutual TLS 1.3 over the heartbeat network, pinned to pairing's keys.

Heartbeats are small UDP packets and the serial link is slow; update bundles,
the remote console's view of the peer and PBX data replication need to move
megabytes. They share this one channel and its one set of keys.

Why TLS and not SSH: Python's ``ssl`` (OpenSSL 3) and ``cryptography`` are
already here, TLS 1.3 takes the Ed25519 identity keys as they are, and no SSH
server or new dependency joins the image. Trust comes only from pairing:

* each box's certificate carries its own Ed25519 **identity key** (made at
  first boot) and is issued by a **cluster CA** whose Ed25519 key is derived
  from the cluster key with HKDF. Both boxes derive the same CA, so OpenSSL's
  ordinary chain check works, and a box that never paired has no CA key;
* after the handshake each side checks that the peer's public key is the
  identity pairing recorded (``peer_identity``). A copied cluster key alone
  does not make a third box the peer.

A key file with several keys (rotation) gives a CA per key; a box trusts all
of them and issues its own certificate under the sending key's (the first).

Requests are a JSON header line, then the body bytes it announces; the answer
likewise. A body is streamed to disk with its SHA-256 checked, never held in
memory, and ``put`` writes into the inbox atomically (temporary name, fsync,
rename) after checking the free space. Operations: ``ping``, ``status`` (this
box's status snapshot: the remote console's peer view), ``put`` (a file into
the inbox: an update bundle) and ``call`` (one of :data:`PEER_COMMANDS` on this
box's control path: what a rolling update asks of the STANDBY). The server runs on its own thread with its own
event loop, so a transfer's TLS and hashing never run on the daemon's loop, and
it serves at most ``max_clients`` connections at a time.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from firmware.config.node import BULK_DEFAULT_PORT as PORT
from firmware.errors import TandemError

log = logging.getLogger(__name__)

HEADER_MAX = 16 * 1024
CHUNK = 256 * 1024
IDLE_TIMEOUT_S = 30.0
BIND_RETRY_S = 5.0
FREE_SPACE_MARGIN = 64 * 2**20  # a put leaves this much free on the inbox's file system
# The control commands the peer may send with ``call`` (journaled with source "peer").
PEER_COMMANDS = ("update-install", "update-abort")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


class BulkError(TandemError):
    """The bulk channel could not be set up, the peer is not the paired box, or a request failed."""


@dataclass(frozen=True)
class BulkCredentials:
    """What one box needs for the channel: its identity key, the cluster keys, the peer's identity."""

    identity: Ed25519PrivateKey
    cluster_keys: tuple[bytes, ...]  # the sending key first, as the key file lists them
    peer_identity: bytes              # the peer's raw Ed25519 public key, from pairing

    def __post_init__(self) -> None:
        if not self.cluster_keys:
            raise BulkError("no cluster key: the box is not paired")
        if len(self.peer_identity) != 32:
            raise BulkError("the peer's identity is not a 32-byte Ed25519 public key")

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.3 server context that demands the peer's certificate under a cluster CA."""
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        """A TLS 1.3 client context that shows this box's certificate and checks the server's."""
        return self._context(ssl.PROTOCOL_TLS_CLIENT)

    def check_peer(self, der: bytes | None) -> None:
        """BulkError unless the certificate the peer showed carries the paired peer's identity key."""
        if not der:
            raise BulkError("the peer showed no certificate")
        key = x509.load_der_x509_certificate(der).public_key()
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) \
            if isinstance(key, Ed25519PublicKey) else b""
        if raw != self.peer_identity:
            raise BulkError(f"the peer's identity {raw.hex()[:16]}… is not the paired box's "
                            f"({self.peer_identity.hex()[:16]}…): re-pair if the box was replaced")

    def _context(self, protocol: int) -> ssl.SSLContext:
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False  # the peer is pinned by its key, not named by DNS
        context.verify_mode = ssl.CERT_REQUIRED
        cas = [_ca(key) for key in self.cluster_keys]
        context.load_verify_locations(cadata="".join(_pem(cert) for _, cert in cas))
        issuer_key, issuer = cas[0]
        with tempfile.TemporaryDirectory(prefix="tandem-bulk-") as scratch:  # ssl loads chains from files only
            chain = Path(scratch) / "chain.pem"
            key = Path(scratch) / "key.pem"
            chain.write_text(_pem(_leaf(self.identity, issuer_key, issuer)))
            key.write_bytes(self.identity.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
            context.load_cert_chain(chain, key)
        return context


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ca(cluster_key: bytes) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """The cluster CA of one cluster key: the same key and certificate on both boxes (Ed25519 is deterministic)."""
    seed = HKDF(hashes.SHA256(), 32, salt=b"tandem-bulk", info=b"cluster-ca/1").derive(cluster_key)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    fingerprint = hashlib.sha256(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw)).hexdigest()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tandem cluster {fingerprint[:16]}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int(fingerprint[:30], 16)).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, None))
    return key, cert


def _leaf(identity: Ed25519PrivateKey, issuer_key: Ed25519PrivateKey, issuer: x509.Certificate) -> x509.Certificate:
    """This box's certificate: its identity key, issued by the cluster CA, for TLS client and server."""
    public = identity.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tandem box {raw.hex()[:16]}")]))
            .issuer_name(issuer.subject).public_key(public).serial_number(int(raw.hex()[:30], 16))
            .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
            .sign(issuer_key, None))


def load_credentials(identity_path: Path, key_file: Path, peer_identity_hex: str | None,
                     record: Path | None = None) -> BulkCredentials:
    """The channel's credentials from the box's files; BulkError naming the file that is missing or wrong.

    The peer's identity is `peer_identity_hex`, else the one the pairing record at `record` holds.
    """
    from firmware.core.protocol import Keyring  # the heartbeat key file's one parser
    from firmware.pairing.identity import load_or_create_identity

    try:
        identity = load_or_create_identity(identity_path)
    except (OSError, ValueError) as exc:
        raise BulkError(f"{identity_path}: {exc}") from None
    try:
        keys = Keyring.load(key_file).secrets()
    except (OSError, ValueError) as exc:
        raise BulkError(f"{key_file}: {exc}") from None
    if peer_identity_hex is None:
        peer_identity_hex = _recorded_identity(record)
    try:
        peer = bytes.fromhex(peer_identity_hex)
    except ValueError:
        raise BulkError(f"peer_identity {peer_identity_hex!r} is not hex") from None
    return BulkCredentials(identity, tuple(keys), peer)


def _recorded_identity(record: Path | None) -> str:
    """The peer's identity from a pairing record (`tandem pair` writes it)."""
    if record is None:
        raise BulkError("no peer_identity and no pairing record: pair the boxes first")
    try:
        identity = json.loads(record.read_text())["peer_settings"]["identity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BulkError(f"{record}: no peer identity in the pairing record ({type(exc).__name__}: {exc})") from None
    if not isinstance(identity, str):
        raise BulkError(f"{record}: the peer identity is not text")
    return identity


# ---------------------------------------------------------------- framing

async def _read_header(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT_S)
    except asyncio.LimitOverrunError:
        raise BulkError(f"header longer than {HEADER_MAX} bytes") from None
    except asyncio.IncompleteReadError:
        raise BulkError("the connection closed before a header") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise BulkError("the header is not JSON") from None
    if not isinstance(header, dict):
        raise BulkError("the header is not a JSON object")
    size = header.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BulkError("size must be a whole number of bytes")
    return header


async def _send(writer: asyncio.StreamWriter, header: Mapping[str, Any], body: BinaryIO | bytes | None = None) -> None:
    writer.write(json.dumps(header).encode() + b"\n")
    if isinstance(body, bytes):
        writer.write(body)
    elif body is not None:
        while chunk := body.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    await writer.drain()


async def _receive_body(reader: asyncio.StreamReader, size: int, sink: BinaryIO) -> str:
    """Copy `size` bytes to `sink`; their SHA-256 hex."""
    digest = hashlib.sha256()
    left = size
    while left:
        chunk = await asyncio.wait_for(reader.read(min(CHUNK, left)), IDLE_TIMEOUT_S)
        if not chunk:
            raise BulkError(f"the connection closed {left} bytes short of {size}")
        digest.update(chunk)
        sink.write(chunk)
        left -= len(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- server

StatusSource = Callable[[], Any]
CommandSink = Callable[[dict[str, Any]], Any]


class BulkServer:
    """Serves the peer on its own thread: ``ping``, ``status``, ``put`` into the inbox and ``call``."""

    def __init__(self, credentials: BulkCredentials, host: str, port: int, inbox: Path,
                 status: StatusSource | None = None, max_bytes: int = 4 * 2**30, max_clients: int = 4,
                 commands: CommandSink | None = None) -> None:
        """`status()`: this box's status snapshot; `commands(request)`: the result of a control request
        (both blocking, run on a worker thread; None: the op is refused)."""
        self.credentials = credentials
        self.host, self.port = host, port
        self.inbox = inbox
        self.max_bytes = max_bytes
        self._status = status
        self._commands = commands
        self._slots = threading.BoundedSemaphore(max_clients)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._closing = threading.Event()
        self.error: str | None = None
        """Why it does not listen (None while it does)."""
        self.received = 0
        """Files put into the inbox."""
        self.refused = 0
        """Connections refused after the handshake: not the paired box's identity, or too many at once.
        (A handshake that fails, e.g. a certificate from no cluster CA, is logged by asyncio's TLS layer.)"""

    def start(self) -> BulkServer:
        """Serve on a thread of its own; returns at once. Binding is retried until it works or `close`."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="tandem-bulk", daemon=True)
        self._thread.start()
        return self

    def wait_listening(self, timeout: float = 30.0) -> bool:
        """Block until it listens (tests, the CLI); whether it does."""
        return self._listening.wait(timeout)

    @property
    def bound_port(self) -> int:
        """The port it listens on (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def status(self) -> dict[str, Any]:
        """The ``bulk`` status section: where it listens, whether it does (else why not), what it refused."""
        return {"bulk": {"listen": f"{self.host}:{self.port}", "listening": self._listening.is_set(),
                         "error": self.error, "refused": self.refused, "received": self.received}}

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self._closing.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            while self._server is None and not self._closing.is_set():
                try:
                    self._server = loop.run_until_complete(asyncio.start_server(
                        self._serve, self.host, self.port, ssl=self.credentials.server_context(), limit=HEADER_MAX,
                        ssl_handshake_timeout=IDLE_TIMEOUT_S))
                except (OSError, ssl.SSLError) as exc:  # the heartbeat address is not up yet, the port is taken
                    if self.error != str(exc):
                        log.warning("bulk: cannot listen on %s:%s (%s); retrying every %g s", self.host, self.port,
                                    exc, BIND_RETRY_S)
                    self.error = str(exc)
                    self._closing.wait(BIND_RETRY_S)
            if self._server is None:
                return
            self.error = None
            self._listening.set()
            log.info("bulk: listening on %s:%s", self.host, self.bound_port)
            loop.run_forever()
        finally:
            self._listening.clear()
            if self._server is not None:
                self._server.close()
                loop.run_until_complete(self._server.wait_closed())
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            writer.close()
            return
        try:
            self.credentials.check_peer(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
            while True:
                try:
                    header = await _read_header(reader)
                except BulkError as exc:
                    if "closed before a header" not in str(exc):
                        await _send(writer, {"ok": False, "error": str(exc)})
                    return
                try:
                    reply, body = await self._answer(header, reader)
                except BulkError as exc:
                    reply, body = {"ok": False, "error": str(exc)}, None
                await _send(writer, reply, body)
        except BulkError as exc:
            self.refused += 1
            log.warning("bulk: refused a connection from %s: %s", writer.get_extra_info("peername"), exc)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.info("bulk: connection from %s ended: %s", writer.get_extra_info("peername"), exc)
        finally:
            self._slots.release()
            writer.close()

    async def _answer(self, header: dict[str, Any], reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes | None]:
        op = header.get("op")
        if op == "ping":
            return {"ok": True, "pong": True}, None
        if op == "status":
            if self._status is None:
                raise BulkError("this box offers no status over the bulk channel")
            data = json.dumps(await asyncio.to_thread(self._status)).encode()
            return {"ok": True, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, data
        if op == "put":
            return {"ok": True, **await self._put(header, reader)}, None
        if op == "call":
            return {"ok": True, "result": await self._call(header.get("request"))}, None
        raise BulkError(f"unknown op {op!r}")

    async def _call(self, request: Any) -> Any:
        if self._commands is None:
            raise BulkError("this box takes no commands over the bulk channel")
        if not isinstance(request, dict) or request.get("cmd") not in PEER_COMMANDS:
            raise BulkError(f"call: only {', '.join(PEER_COMMANDS)} may be sent over the bulk channel")
        # Journaled as the peer's, and an install the peer asks for is always a pair's: `single` would skip
        # the check that this box does not hold the calls.
        request = {**request, "source": "peer", **({"mode": "pair"} if request["cmd"] == "update-install" else {})}
        try:
            return await asyncio.to_thread(self._commands, request)
        except TandemError as exc:
            raise BulkError(f"{request['cmd']}: {exc}") from None

    async def _put(self, header: dict[str, Any], reader: asyncio.StreamReader) -> dict[str, Any]:
        name, size, want = header.get("name"), header["size"], header.get("sha256")
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
            raise BulkError(f"put: {name!r} is not a plain file name")
        if not isinstance(want, str) or not re.fullmatch(r"[0-9a-f]{64}", want):
            raise BulkError("put: sha256 must be 64 hex digits")
        if size > self.max_bytes:
            raise BulkError(f"put: {size} bytes is more than the {self.max_bytes} this box takes")
        free = shutil.disk_usage(self.inbox).free
        if size + FREE_SPACE_MARGIN > free:
            raise BulkError(f"put: {size} bytes would leave less than {FREE_SPACE_MARGIN // 2**20} MiB free "
                            f"in {self.inbox} ({free // 2**20} MiB free)")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.inbox)
        try:
            with os.fdopen(fd, "wb") as sink:
                got = await _receive_body(reader, size, sink)
                sink.flush()
                os.fsync(sink.fileno())
            if got != want:
                raise BulkError(f"put: {name} arrived with SHA-256 {got[:16]}…, not {want[:16]}…; not kept")
            os.replace(tmp, self.inbox / name)
            self.received += 1
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return {"name": name, "size": size, "sha256": got}


# ---------------------------------------------------------------- client

class BulkClient:
    """Requests to the peer's bulk channel (one connection per request; each call is blocking)."""

    def __init__(self, credentials: BulkCredentials, host: str, port: int = PORT, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.host, self.port, self.timeout = host, port, timeout

    def ping(self) -> bool:
        """Whether the peer answers (over an authenticated connection)."""
        return bool(self._call({"op": "ping"})[0].get("pong"))

    def status(self) -> Any:
        """The peer's status snapshot."""
        _, body = self._call({"op": "status"}, want_body=True)
        return json.loads(body)

    def call(self, request: dict[str, Any]) -> Any:
        """Run one of :data:`PEER_COMMANDS` on the peer; its result (BulkError with the peer's reason)."""
        return self._call({"op": "call", "request": request})[0].get("result")

    def put(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Copy the file at `path` into the peer's inbox (as `name`); the peer's receipt."""
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
        header = {"op": "put", "name": name or path.name, "size": path.stat().st_size,
                  "sha256": digest.hexdigest()}
        reply, _ = self._call(header, upload=path)
        return reply

    def _call(self, header: dict[str, Any], upload: Path | None = None,
              want_body: bool = False) -> tuple[dict[str, Any], bytes]:
        return asyncio.run(asyncio.wait_for(self._exchange(header, upload, want_body), None if upload else
                                            self.timeout))

    async def _exchange(self, header: dict[str, Any], upload: Path | None,
                        want_body: bool) -> tuple[dict[str, Any], bytes]:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, ssl=self.credentials.client_context(), server_hostname=self.host,
                limit=HEADER_MAX), self.timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            raise BulkError(f"bulk channel to {self.host}:{self.port}: {exc or type(exc).__name__}") from None
        try:
            self.credentials.check_peer(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
            if upload is not None:
                with upload.open("rb") as body:
                    await _send(writer, header, body)
            else:
                await _send(writer, header)
            reply = await _read_header(reader)
            if not reply.get("ok"):
                raise BulkError(f"the peer refused {header['op']}: {reply.get('error', 'no reason given')}")
            data = b""
            if want_body:
                sink = _Buffer()
                got = await _receive_body(reader, reply["size"], sink)
                if got != reply.get("sha256"):
                    raise BulkError(f"{header['op']}: the answer arrived damaged (SHA-256 mismatch)")
                data = bytes(sink.data)
            return reply, data
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            raise BulkError(f"bulk channel to {self.host}:{self.port}: {exc or type(exc).__name__}") from None
        finally:
            writer.close()


class _Buffer:
    """A small in-memory sink for answers (status), never for uploads."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk
