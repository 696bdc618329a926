"""The bulk channel: mutual TLS over real sockets, trusted only through pairing's keys.

Unit-level tests run a `BulkServer` and `BulkClient` on loopback; the last ones run two real daemons
(`TwoNodeRack(bulk=True)`) and use the channel with `tandem bulk`, as an integrator would.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.pairing.bulk import BulkClient, BulkCredentials, BulkError, BulkServer
from sim.rack import TwoNodeRack


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Pair:
    """Two paired boxes' credentials (one cluster key, each pinned to the other's identity)."""

    def __init__(self) -> None:
        self.cluster_key = secrets.token_bytes(32)
        self.alpha, self.bravo = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    def of(self, name: str, keys: tuple[bytes, ...] | None = None) -> BulkCredentials:
        own, peer = (self.alpha, self.bravo) if name == "alpha" else (self.bravo, self.alpha)
        return BulkCredentials(own, keys or (self.cluster_key,), _raw(peer))


@pytest.fixture
def pair() -> Pair:
    return Pair()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., BulkServer]]:
    servers: list[BulkServer] = []

    def start(credentials: BulkCredentials, **options: object) -> BulkServer:
        server = BulkServer(credentials, "127.0.0.1", 0, tmp_path / "inbox", status=lambda: {"node": "bravo"},
                            **options).start()  # type: ignore[arg-type]
        servers.append(server)
        assert server.wait_listening(30)
        return server

    yield start
    for server in servers:
        server.close()


def test_ping_status_and_a_file_into_the_inbox(pair: Pair, serve, tmp_path: Path) -> None:
    server = serve(pair.of("bravo"))
    client = BulkClient(pair.of("alpha"), "127.0.0.1", server.bound_port)
    assert client.ping() is True
    assert client.status() == {"node": "bravo"}
    bundle = tmp_path / "update.raucb"
    bundle.write_bytes(secrets.token_bytes(9 * 2**20 + 17))  # not a whole number of chunks
    receipt = client.put(bundle)
    assert receipt["size"] == bundle.stat().st_size
    assert receipt["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert (tmp_path / "inbox/update.raucb").read_bytes() == bundle.read_bytes()
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["update.raucb"]  # no temporary left
    assert server.status()["bulk"]["received"] == 1


def test_the_peer_may_send_only_the_update_commands(pair: Pair, serve) -> None:
    """`call` runs a control request on the box: the rolling update's, and nothing else (not a demote)."""
    asked: list[dict] = []

    def commands(request: dict) -> dict:
        asked.append(request)
        return {"stage": "checking"}

    server = serve(pair.of("bravo"), commands=commands)
    client = BulkClient(pair.of("alpha"), "127.0.0.1", server.bound_port)
    assert client.call({"cmd": "update-install", "bundle": "b.raucb", "mode": "single", "source": "cli"}) == \
        {"stage": "checking"}
    # Always as the peer's, and a pair's install (`single` would skip the holds-the-calls check).
    assert asked == [{"cmd": "update-install", "bundle": "b.raucb", "mode": "pair", "source": "peer"}]
    for request in ({"cmd": "demote"}, {"cmd": "status"}, ["update-install"]):
        with pytest.raises(BulkError, match="only update-install, update-abort may be sent"):
            client.call(request)  # type: ignore[arg-type]
    assert len(asked) == 1
    bare = serve(pair.of("bravo"))  # a server given no command sink takes none
    with pytest.raises(BulkError, match="takes no commands"):
        BulkClient(pair.of("alpha"), "127.0.0.1", bare.bound_port).call({"cmd": "update-abort"})


def test_a_box_with_the_cluster_key_but_another_identity_is_not_the_peer(pair: Pair, serve) -> None:
    server = serve(pair.of("bravo"))
    impostor = BulkCredentials(Ed25519PrivateKey.generate(), (pair.cluster_key,), _raw(pair.bravo))
    with pytest.raises(BulkError):
        BulkClient(impostor, "127.0.0.1", server.bound_port).ping()
    assert server.refused == 1
    # ... and a client does not talk to a server that is not its paired peer either.
    rogue = serve(BulkCredentials(Ed25519PrivateKey.generate(), (pair.cluster_key,), _raw(pair.alpha)))
    with pytest.raises(BulkError, match="is not the paired box's"):
        BulkClient(pair.of("alpha"), "127.0.0.1", rogue.bound_port).ping()


def test_a_box_of_another_cluster_fails_the_handshake(pair: Pair, serve) -> None:
    server = serve(pair.of("bravo"))
    stranger = BulkCredentials(pair.alpha, (secrets.token_bytes(32),), _raw(pair.bravo))  # same identity even
    with pytest.raises(BulkError, match="bulk channel to 127.0.0.1"):
        BulkClient(stranger, "127.0.0.1", server.bound_port).ping()
    assert BulkClient(pair.of("alpha"), "127.0.0.1", server.bound_port).ping()  # the server serves on


def test_during_a_key_rotation_each_box_trusts_both_keys(pair: Pair, serve) -> None:
    new = secrets.token_bytes(32)
    server = serve(pair.of("bravo", (new, pair.cluster_key)))  # bravo already sends with the new key
    assert BulkClient(pair.of("alpha", (pair.cluster_key, new)), "127.0.0.1", server.bound_port).ping()


def _raw_request(pair: Pair, port: int, header: dict, body: bytes) -> dict:
    """A request written by hand over an authenticated connection (what a broken or hostile peer could send)."""
    context = pair.of("alpha").client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as plain, \
            context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        tls.sendall(json.dumps(header).encode() + b"\n" + body)
        reply = tls.makefile("rb").readline()
    return json.loads(reply)


@pytest.mark.parametrize(("header", "error"), [
    ({"op": "put", "name": "../etc/passwd", "size": 4, "sha256": "0" * 64}, "not a plain file name"),
    ({"op": "put", "name": "x.bin", "size": 4, "sha256": "0" * 64}, "arrived with SHA-256"),
    ({"op": "put", "name": "x.bin", "size": 4, "sha256": "zz"}, "64 hex digits"),
    ({"op": "put", "name": "x.bin", "size": 2**20 + 1, "sha256": "0" * 64}, "more than the 1048576"),
    ({"op": "put", "name": "x.bin", "size": -1, "sha256": "0" * 64}, "whole number of bytes"),
    ({"op": "format-disk"}, "unknown op"),
])
def test_a_bad_request_is_refused_with_the_reason_and_leaves_nothing(pair: Pair, serve, tmp_path: Path,
                                                                    header: dict, error: str) -> None:
    server = serve(pair.of("bravo"), max_bytes=2**20)
    reply = _raw_request(pair, server.bound_port, header, b"data")
    assert reply["ok"] is False and error in reply["error"]
    assert list((tmp_path / "inbox").iterdir()) == []


def test_plain_tcp_junk_does_not_stop_the_server(pair: Pair, serve) -> None:
    server = serve(pair.of("bravo"))
    for junk in (b"GET / HTTP/1.0\r\n\r\n", secrets.token_bytes(4096), b""):
        with socket.create_connection(("127.0.0.1", server.bound_port), timeout=10) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            try:
                sock.recv(100)
            except OSError:
                pass
    assert BulkClient(pair.of("alpha"), "127.0.0.1", server.bound_port).ping()


def test_a_server_whose_address_is_not_up_yet_keeps_trying(pair: Pair, tmp_path: Path) -> None:
    server = BulkServer(pair.of("bravo"), "192.0.2.77", 7140, tmp_path / "inbox").start()  # no such address here
    try:
        assert not server.wait_listening(0.5)
        assert server.status()["bulk"]["listening"] is False
        assert "address" in server.status()["bulk"]["error"].lower()
    finally:
        server.close()


def test_tls_1_2_is_refused(pair: Pair, serve) -> None:
    server = serve(pair.of("bravo"))
    context = pair.of("alpha").client_context()
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.bound_port), timeout=10) as plain:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(plain, server_hostname="127.0.0.1")


# ---------------------------------------------------------------- two real daemons

def _tandem(rack: TwoNodeRack, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware.cli", "-c", str(rack.config_path(name)), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_two_daemons_serve_each_other_over_the_bulk_channel(racks, tmp_path: Path) -> None:
    rack = racks(bulk=True)
    done = _tandem(rack, "alpha", "bulk", "ping")
    assert done.returncode == 0 and "bravo answers on the bulk channel" in done.stdout, done.stderr
    done = _tandem(rack, "bravo", "bulk", "status")
    assert done.returncode == 0, done.stderr
    peer = json.loads(done.stdout)
    assert peer["node"] == "alpha" and peer["state"] == "ACTIVE" and peer["bulk"]["listening"] is True
    bundle = tmp_path / "bundle.raucb"
    bundle.write_bytes(secrets.token_bytes(32 * 2**20))
    done = _tandem(rack, "alpha", "bulk", "send", str(bundle))
    assert done.returncode == 0 and "in bravo's inbox" in done.stdout, done.stderr
    assert (rack.base / "bravo/inbox/bundle.raucb").read_bytes() == bundle.read_bytes()
    # Moving megabytes did not disturb the pair.
    assert rack.status("alpha")["state"] == "ACTIVE" and rack.status("bravo")["state"] == "STANDBY"


@pytest.mark.integration
def test_a_config_without_bulk_says_how_to_get_it(rack) -> None:
    done = _tandem(rack, "alpha", "bulk", "ping")
    assert done.returncode == 1 and "has no [bulk] section" in done.stderr
