"""Unit tests of the heartbeat wire format, the key file, replay protection and link figures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from firmware.core.heartbeat import LATENESS_BUCKETS_MS, HeartbeatEndpoint, LinkFigures
from firmware.core.message import Heartbeat, boot_counter, describe_version, link_id, protocol_generation
from firmware.core.protocol import (
    HEADER,
    MAX_PACKET_BYTES,
    MAX_SEQ,
    MAX_WIRE_BYTES,
    PROTOCOL_VERSION,
    TAG_BYTES,
    ForeignPacket,
    Keyring,
    ProtocolError,
    Sealer,
    encode_payload,
    new_boot_id,
    open_packet,
    write_key_file,
)
from firmware.core.states import Flag, NodeState, Role

KEY_OLD = bytes(range(32))
KEY_NEW = bytes(range(100, 132))
LINKS = ["lan", "serial"]
INTERVAL = 0.1
DEADTIME = 0.3

SETTINGS = settings(max_examples=150, deadline=None)


def ring(*keys: tuple[int, bytes]) -> Keyring:
    return Keyring(list(keys) or [(1, KEY_OLD)])


def sample(node: str = "alpha", acks: int = 0, tick: int = 7) -> Heartbeat:
    return Heartbeat(
        node=node,
        state=NodeState.ACTIVE,
        role=Role.PRIMARY,
        health=87,
        flags=Flag.MAINTENANCE | Flag.STARTED | Flag.OPERATOR_REQUEST,
        epoch=0xDEADBEEF,
        tick=tick,
        ack_boot=b"\x01\x02\x03\x04",
        acks=tuple((link_id(f"link{i}"), 1000 + i) for i in range(acks)),
    )


def sealed(message: Heartbeat | None = None, keyring: Keyring | None = None) -> bytes:
    return Sealer(keyring or ring(), new_boot_id(42)).seal(message or sample(acks=3))


def reason_of(packet: bytes, keyring: Keyring) -> str:
    with pytest.raises(ProtocolError) as info:
        open_packet(packet, keyring)
    return info.value.reason


# ---------------------------------------------------------------------------- round trip and size


@pytest.mark.parametrize("acks", [0, 8])
def test_round_trip_keeps_every_field(acks: int) -> None:
    keyring = ring()
    boot_id = new_boot_id(1234)
    sealer = Sealer(keyring, boot_id)
    message = sample(acks=acks)
    header, opened = open_packet(sealer.seal(message), keyring)
    assert opened == message
    assert opened.node == "alpha" and opened.state is NodeState.ACTIVE and opened.role is Role.PRIMARY
    assert opened.health == 87 and opened.epoch == 0xDEADBEEF and opened.tick == 7
    assert opened.flags == Flag.MAINTENANCE | Flag.STARTED | Flag.OPERATOR_REQUEST
    assert opened.ack_boot == b"\x01\x02\x03\x04"
    assert len(opened.acks) == acks
    assert header.key_id == 1 and header.boot_id == boot_id and header.seq == 1
    assert boot_counter(header.boot_id) == 1234


def test_round_trip_of_the_limits() -> None:
    keyring = ring()
    message = Heartbeat(
        node="n" * 16, state=NodeState.STOPPED, role=Role.SECONDARY, health=100,
        flags=Flag(0x3FF), epoch=0xFFFF_FFFF, tick=0xFFFF_FFFF, ack_boot=b"\xff" * 4,
        acks=tuple((0xFFFF - i, 0xFFFF_FFFF - i) for i in range(8)),
    )
    _, opened = open_packet(Sealer(keyring, new_boot_id(0xFFFF_FFFF)).seal(message), keyring)
    assert opened == message


def test_ack_for_finds_the_link_tick() -> None:
    message = Heartbeat(node="a", state=NodeState.STANDBY, role=Role.EQUAL, health=1, flags=Flag.NONE,
                        epoch=1, tick=1, acks=((link_id("lan"), 41), (link_id("serial"), 40)))
    assert message.ack_for("lan") == 41
    assert message.ack_for("serial") == 40
    assert message.ack_for("other") is None


def test_full_packet_is_small() -> None:
    packet = sealed(sample(node="x" * 16, acks=8))
    assert len(packet) < 128
    assert len(packet) == MAX_PACKET_BYTES == 115


def test_encode_refuses_bad_names_and_too_many_acks() -> None:
    sealer = Sealer(ring(), new_boot_id(1))
    with pytest.raises(ValueError):
        sealer.seal(sample(node="x" * 17))
    with pytest.raises(ValueError):
        sealer.seal(sample(node=""))
    with pytest.raises(ValueError):
        sealer.seal(sample(acks=9))


def test_every_packet_has_a_distinct_nonce() -> None:
    sealer = Sealer(ring(), new_boot_id(9))
    nonces = [sealer.seal(sample(tick=1))[4:16] for _ in range(3000)]
    assert len(set(nonces)) == len(nonces)
    # Identical messages still give different ciphertexts.
    packets = {sealer.seal(sample(tick=1)) for _ in range(50)}
    assert len(packets) == 50


def test_sequence_exhaustion_moves_to_the_next_boot_without_reusing_a_nonce() -> None:
    keyring = ring()
    sealer = Sealer(keyring, new_boot_id(77))
    sealer.seq = MAX_SEQ - 2
    headers = [open_packet(sealer.seal(sample()), keyring)[0] for _ in range(4)]
    nonces = {h.boot_id + h.seq.to_bytes(4, "big") for h in headers}
    assert len(nonces) == 4
    assert [h.seq for h in headers] == [MAX_SEQ - 1, MAX_SEQ, 1, 2]
    assert boot_counter(headers[2].boot_id) == 78
    assert headers[2].boot_id == headers[3].boot_id != headers[0].boot_id


# ---------------------------------------------------------------------------- rejections


@SETTINGS
@given(data=st.data(), xor=st.integers(1, 255))
def test_any_tampered_byte_is_rejected_for_the_right_reason(data: st.DataObject, xor: int) -> None:
    keyring = ring((1, KEY_OLD), (3, KEY_NEW))
    packet = Sealer(keyring, new_boot_id(5)).seal(sample(acks=data.draw(st.integers(0, 8))))
    position = data.draw(st.integers(0, len(packet) - 1))
    tampered = bytearray(packet)
    tampered[position] ^= xor
    reason = reason_of(bytes(tampered), keyring)
    if position < 2:
        assert reason == "malformed"
    elif position == 3:
        assert reason == ("bad_tag" if (1 ^ xor) in keyring.key_ids else "unknown_key")
    else:
        assert reason == "bad_tag"


def test_wrong_key_is_bad_tag() -> None:
    packet = sealed(keyring=ring((1, KEY_OLD)))
    assert reason_of(packet, ring((1, KEY_NEW))) == "bad_tag"


def test_a_changed_version_byte_fails_authentication() -> None:
    # The header is sealed with the payload: nobody can relabel a packet as another version.
    packet = bytearray(sealed())
    for version in (0, PROTOCOL_VERSION + 1, 0x10, 255):
        packet[2] = version
        assert reason_of(bytes(packet), ring()) == "bad_tag"


# A packet sealed by the release before the version rule (commit 6fbb5e1), with a fixed key, boot id
# and sequence number: AES-GCM-SIV is deterministic under one nonce, so both directions can be checked.
PREVIOUS_RELEASE_PACKET = bytes.fromhex(
    "54480101000000070a0b0c0d0000002a5e4042d85f23926b6ce75da6c122a16d25d6a71c19be37eab93efd35c2"
    "45913728fe5b95480d8dfec8f2d6382a556971445c608e")


def previous_release_message() -> Heartbeat:
    return Heartbeat(node="alpha", state=NodeState.ACTIVE, role=Role.PRIMARY, health=87,
                     flags=Flag.MAINTENANCE | Flag.STARTED | Flag.OPERATOR_REQUEST, epoch=0xDEADBEEF, tick=7,
                     ack_boot=b"\x01\x02\x03\x04", acks=((link_id("lan"), 1000), (link_id("serial"), 1001)))


def test_the_previous_release_and_this_one_read_each_other() -> None:
    keyring = ring()
    header, message = open_packet(PREVIOUS_RELEASE_PACKET, keyring)
    assert message == previous_release_message()
    assert (header.boot_id, header.seq) == (bytes.fromhex("000000070a0b0c0d"), 42)
    # This release seals the same heartbeat to the very same bytes, which the previous release opens.
    sealer = Sealer(keyring, bytes.fromhex("000000070a0b0c0d"))
    sealer.seq = 41
    assert sealer.seal(previous_release_message()) == PREVIOUS_RELEASE_PACKET


def test_a_newer_revision_is_read_up_to_the_fields_this_node_knows() -> None:
    keyring = ring()
    newer = Sealer(keyring, new_boot_id(3), version=PROTOCOL_VERSION + 1)
    appended = b"\x07" + bytes(40)  # whatever the next revision adds after the ack list
    header, message = open_packet(newer.seal_payload(encode_payload(sample(acks=8)) + appended), keyring)
    assert message == sample(acks=8)
    assert header.seq == 1


def test_this_revision_refuses_trailing_bytes_and_a_newer_one_a_short_payload() -> None:
    keyring = ring()
    same = Sealer(keyring, new_boot_id(3))
    assert reason_of(same.seal_payload(encode_payload(sample(acks=2)) + b"\0"), keyring) == "malformed"
    newer = Sealer(keyring, new_boot_id(3), version=PROTOCOL_VERSION + 1)
    assert reason_of(newer.seal_payload(encode_payload(sample(acks=2))[:-3]), keyring) == "malformed"


def test_no_packet_longer_than_the_wire_limit_is_opened() -> None:
    keyring = ring()
    newer = Sealer(keyring, new_boot_id(3), version=PROTOCOL_VERSION + 1)
    base = encode_payload(sample(acks=1))
    fits = newer.seal_payload(base + bytes(MAX_WIRE_BYTES - HEADER.size - TAG_BYTES - len(base)))
    assert len(fits) == MAX_WIRE_BYTES
    assert open_packet(fits, keyring)[1] == sample(acks=1)
    assert reason_of(newer.seal_payload(base + bytes(MAX_WIRE_BYTES)), keyring) == "malformed"


@pytest.mark.parametrize("version", [0x10, 0x21, 0xF1])
def test_another_generation_is_authenticated_but_not_read(version: int) -> None:
    keyring = ring()
    other = Sealer(keyring, new_boot_id(9), version=version)
    with pytest.raises(ForeignPacket) as info:
        open_packet(other.seal_payload(b"\xff" * 60), keyring)  # not a payload this node could parse
    assert info.value.reason == "foreign"
    assert info.value.version == version
    assert (boot_counter(info.value.header.boot_id), info.value.header.seq) == (9, 1)
    # Forged with another key, it is just a bad tag: only the cluster key's holder can look alive.
    assert reason_of(Sealer(ring((1, KEY_NEW)), new_boot_id(9), version=version).seal_payload(bytes(60)),
                     keyring) == "bad_tag"


def test_generation_and_revision_halves() -> None:
    assert protocol_generation(PROTOCOL_VERSION) == protocol_generation(PROTOCOL_VERSION + 1) == 0
    assert protocol_generation(0x10) == 1
    assert describe_version(0x23) == "generation 2 revision 3"


def test_truncations_too_short_for_any_packet_are_malformed() -> None:
    # The smallest valid packet: 1-byte name, no acks.
    smallest = len(sealed(sample(node="a", acks=0)))
    packet = sealed(sample(node="x" * 16, acks=8))
    for length in range(smallest):
        assert reason_of(packet[:length], ring()) == "malformed", length


def test_longer_truncations_are_rejected() -> None:
    # Above the smallest packet size, a cut packet cannot be told from a tampered one
    # before it is authenticated: it must be refused, as malformed or as bad_tag.
    smallest = len(sealed(sample(node="a", acks=0)))
    packet = sealed(sample(node="x" * 16, acks=8))
    for length in range(smallest, len(packet)):
        assert reason_of(packet[:length], ring()) in ("malformed", "bad_tag"), length


def test_one_byte_too_long_is_refused() -> None:
    packet = sealed(sample(node="x" * 16, acks=8))
    assert reason_of(packet + b"\0", ring()) == "bad_tag"  # a longer ciphertext no longer matches its tag


def test_protocol_error_carries_its_reason() -> None:
    error = ProtocolError("bad_tag", "detail")
    assert error.reason == "bad_tag"
    assert "bad_tag" in str(error) and "detail" in str(error)


def endpoint(peer: str = "beta", counter: int = 10, keyring: Keyring | None = None,
             known_peer: tuple[int, int] | None = None) -> HeartbeatEndpoint:
    return HeartbeatEndpoint(keyring or ring(), peer, LINKS, INTERVAL, DEADTIME,
                             new_boot_id(counter), known_peer=known_peer)


def counters(ep: HeartbeatEndpoint, link: str) -> int:
    stats = ep.figures[link]
    return sum(stats.rejected.values()) + stats.pending


def _assert_one_rejection(ep: HeartbeatEndpoint, packet: bytes) -> None:
    before = counters(ep, "lan")
    assert ep.receive("lan", packet, 1.0) is None
    assert counters(ep, "lan") == before + 1
    assert ep.figures["lan"].received == 0
    assert counters(ep, "serial") == 0


@SETTINGS
@given(packet=st.binary(min_size=0, max_size=300))
def test_random_bytes_are_counted_once_and_never_raise(packet: bytes) -> None:
    _assert_one_rejection(endpoint(), packet)


@SETTINGS
@given(
    version=st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 7]),
    key_id=st.sampled_from([1, 1, 2]),
    rest=st.binary(min_size=0, max_size=300 - HEADER.size),
    seq=st.integers(0, MAX_SEQ),
)
def test_random_bytes_behind_a_plausible_header_are_counted_once(
        version: int, key_id: int, rest: bytes, seq: int) -> None:
    packet = HEADER.pack(b"TH", version, key_id, new_boot_id(3), seq) + rest
    _assert_one_rejection(endpoint(), packet)


# ---------------------------------------------------------------------------- key rotation and key files


def test_rotation_new_ring_opens_packets_of_the_old_ring() -> None:
    old_ring = ring((1, KEY_OLD))
    new_ring = ring((2, KEY_NEW), (1, KEY_OLD))
    header, message = open_packet(sealed(sample(), old_ring), new_ring)
    assert header.key_id == 1 and message == sample()
    # ... and the new ring seals with its first key, which both rotated rings accept.
    packet = sealed(sample(), new_ring)
    assert open_packet(packet, new_ring)[0].key_id == 2
    assert open_packet(packet, ring((1, KEY_OLD), (2, KEY_NEW)))[0].key_id == 2


def test_rotation_old_ring_rejects_the_new_key_as_unknown() -> None:
    packet = sealed(sample(), ring((2, KEY_NEW), (1, KEY_OLD)))
    assert reason_of(packet, ring((1, KEY_OLD))) == "unknown_key"


def test_keyring_validation() -> None:
    with pytest.raises(ValueError):
        Keyring([])
    with pytest.raises(ValueError):
        Keyring([(256, KEY_OLD)])
    with pytest.raises(ValueError):
        Keyring([(1, KEY_OLD[:31])])
    with pytest.raises(ValueError):
        Keyring([(1, KEY_OLD), (1, KEY_NEW)])
    assert Keyring([(4, KEY_OLD), (2, KEY_NEW)]).key_ids == [4, 2]
    assert Keyring([(4, KEY_OLD), (2, KEY_NEW)]).send_id == 4


def test_keyring_load_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text(
        "# Tandem cluster key\n"
        "\n"
        f"   2 {KEY_NEW.hex()}   # new key, sends\n"
        "   \n"
        f"1 {KEY_OLD.hex().upper()}\n"
        "# trailing comment\n"
    )
    keyring = Keyring.load(path)
    assert keyring.key_ids == [2, 1] and keyring.send_id == 2
    header, _ = open_packet(sealed(sample(), ring((1, KEY_OLD))), keyring)
    assert header.key_id == 1


@pytest.mark.parametrize("bad_line", [
    "1",                                   # no key
    f"1 {KEY_OLD.hex()} extra",            # too many fields
    f"one {KEY_OLD.hex()}",                # id not a number
    f"1 {KEY_OLD.hex()[:-1]}z",            # not hexadecimal
    f"1 {KEY_OLD.hex()[:-1]}",             # odd number of digits
])
def test_keyring_load_names_the_bad_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "cluster.key"
    path.write_text(f"# comment\n\n2 {KEY_NEW.hex()}\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"line 4\b"):
        Keyring.load(path)


@pytest.mark.parametrize("bad_line", [
    f"1 {KEY_OLD.hex()[:-2]}",             # a whole byte short: 31-byte key
    f"300 {KEY_OLD.hex()}",                # key id out of range
    f"2 {KEY_OLD.hex()}",                  # id repeated from line 3
])
def test_keyring_load_names_the_line_of_an_invalid_key(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "cluster.key"
    path.write_text(f"# comment\n\n2 {KEY_NEW.hex()}\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"line 4\b"):
        Keyring.load(path)


def test_keyring_load_of_an_empty_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text("# only a comment\n\n")
    with pytest.raises(ValueError):
        Keyring.load(path)


def test_write_key_file_creates_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    old_umask = os.umask(0)  # even a permissive umask must not loosen the key file
    try:
        write_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = Keyring.load(path)
    assert keyring.key_ids == [1]
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_file(path)
    assert path.read_bytes() == before


def test_write_key_file_add_appends_a_second_key_and_refuses_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    write_key_file(path, key_id=1)
    first = path.read_text()
    write_key_file(path, key_id=2, add=True)
    assert path.read_text().startswith(first)
    keyring = Keyring.load(path)
    assert keyring.key_ids == [1, 2] and keyring.send_id == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_key_file(path, key_id=2, add=True)
    assert path.read_bytes() == before
    # Two generated keys differ.
    lines = [line.split() for line in path.read_text().splitlines()]
    assert lines[0][1] != lines[1][1]


def test_write_key_file_add_to_a_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_key_file(tmp_path / "missing.key", key_id=2, add=True)
    assert not (tmp_path / "missing.key").exists()


# ---------------------------------------------------------------------------- replay protection


class Node:
    """One side of a conversation: an endpoint plus the bookkeeping of a daemon's tick."""

    def __init__(self, name: str, peer: str, counter: int,
                 known_peer: tuple[int, int] | None = None, known_margin: int = 0) -> None:
        self.name = name
        self.ep = HeartbeatEndpoint(ring(), peer, LINKS, INTERVAL, DEADTIME, new_boot_id(counter),
                                    known_peer=known_peer, known_margin=known_margin)

    def packet(self, now: float, node: str | None = None) -> bytes:
        """Start a tick and seal it once."""
        return self.round(now, 1, node)[0]

    def round(self, now: float, links: int = len(LINKS), node: str | None = None) -> list[bytes]:
        """Start a tick and seal its heartbeat once per link, as the daemon does."""
        tick = self.ep.next_tick(now)
        ack_boot, acks = self.ep.acks()
        message = Heartbeat(node=node or self.name, state=NodeState.STANDBY, role=Role.EQUAL,
                            health=100, flags=Flag.STARTED, epoch=1, tick=tick,
                            ack_boot=ack_boot, acks=acks)
        return [self.ep.seal(message) for _ in range(links)]

    def rejected(self, reason: str, link: str = "lan") -> int:
        stats = self.ep.figures[link]
        return stats.pending if reason == "unconfirmed" else stats.rejected[reason]


def pair(a_counter: int = 10, b_counter: int = 20) -> tuple[Node, Node]:
    return Node("alpha", "beta", a_counter), Node("beta", "alpha", b_counter)


def test_same_packet_twice_is_a_replay() -> None:
    a, b = pair()
    packet = b.packet(1.0)
    assert a.ep.receive("lan", packet, 1.0) is not None
    assert a.ep.receive("lan", packet, 1.01) is None
    assert a.rejected("replay") == 1
    # The same packet arriving over another link is a replay too.
    assert a.ep.receive("serial", packet, 1.02) is None
    assert a.rejected("replay", "serial") == 1
    assert a.ep.figures["lan"].received == 1


def test_older_packet_after_a_newer_one_is_accepted_once() -> None:
    a, b = pair()
    first = b.packet(1.0)
    second = b.packet(1.1)
    assert a.ep.receive("lan", second, 1.1) is not None
    got = a.ep.receive("lan", first, 1.12)
    assert got is not None and got.heartbeat.tick == 1 and got.view.message.tick == 2
    assert a.ep.receive("lan", first, 1.13) is None
    assert a.ep.receive("lan", second, 1.14) is None
    assert a.rejected("replay") == 2
    # The late, older heartbeat does not replace the newer one in the view.
    assert a.ep.view().message.tick == 2


def test_a_late_never_seen_packet_does_not_keep_a_dead_peer_alive() -> None:
    """Issue 14: UDP heartbeats kept from us while serial carried the peer, replayed after it died."""
    a, b = pair()
    captured = []
    now = 1.0
    for _ in range(20):  # the peer's rounds: lan copies captured by an attacker, serial ones delivered
        lan, serial = b.round(now)
        captured.append(lan)
        assert a.ep.receive("serial", serial, now) is not None
        now += INTERVAL
    last_heard = a.ep.view().last_rx
    # The peer dies. The attacker replays the captured lan packets, never seen, one every 0.25 s.
    for packet in captured:
        now += 0.25
        assert a.ep.receive("lan", packet, now) is not None  # accepted (counted for the link) ...
        assert a.ep.view().last_rx == last_heard  # ... but the peer does not look alive
    assert a.ep.figures["lan"].received == len(captured)


def test_the_same_round_on_another_link_keeps_that_link_alive() -> None:
    a, b = pair()
    for step in range(5):
        now = 1.0 + step * INTERVAL
        lan, serial = b.round(now)
        assert a.ep.receive("lan", lan, now) is not None
        assert a.ep.receive("serial", serial, now + 0.004) is not None  # the same round, a little later
    view = a.ep.view()
    assert {link.name: link.rx_at for link in view.links} == {"lan": now, "serial": now + 0.004}


def test_packets_older_than_the_window_are_refused() -> None:
    a, b = pair()
    old = b.packet(0.0)
    for _ in range(1100):
        b.packet(0.0)
    assert a.ep.receive("lan", b.packet(1.0), 1.0) is not None
    assert a.ep.receive("lan", old, 1.0) is None
    assert a.rejected("replay") == 1


def test_first_boot_seen_is_accepted_and_tracked() -> None:
    a, b = pair()
    assert a.ep.receive("lan", b.packet(1.0), 1.0) is not None
    view = a.ep.view()
    assert view.boot_id == b.ep.boot_id
    assert view.message.node == "beta"
    assert view.last_rx == 1.0


def exchange(a: Node, b: Node, now: float, rounds: int = 3) -> float:
    """Both sides hear each other for a few rounds; returns the time after them."""
    for _ in range(rounds):
        a.ep.receive("lan", b.packet(now), now)
        b.ep.receive("lan", a.packet(now), now)
        now += INTERVAL
    return now


def test_lower_boot_counter_is_refused_without_a_round_trip() -> None:
    a, b = pair(b_counter=20)
    now = exchange(a, b, 1.0)
    assert a.ep.view().boot_id == b.ep.boot_id
    old_b = Node("beta", "alpha", 19)  # e.g. packets recorded during an earlier boot
    recorded = [old_b.packet(now) for _ in range(5)]
    for packet in recorded:
        assert a.ep.receive("lan", packet, now) is None
    assert a.rejected("unconfirmed") == 5
    assert a.ep.view().boot_id == b.ep.boot_id
    # Even once the current boot went silent, one-way packets of the lower boot are refused.
    later = now + 10 * DEADTIME
    for i in range(5):
        assert a.ep.receive("lan", old_b.packet(later + i * INTERVAL), later + i * INTERVAL) is None
    assert a.ep.view().boot_id == b.ep.boot_id


def test_lower_boot_counter_is_accepted_after_a_round_trip() -> None:
    a, b = pair(b_counter=20)
    now = exchange(a, b, 1.0)
    # The peer's state was wiped: it restarts with a lower counter. The old boot is silent.
    now += 2 * DEADTIME
    wiped = Node("beta", "alpha", 3)
    assert a.ep.receive("lan", wiped.packet(now), now) is None
    assert a.rejected("unconfirmed") == 1
    # An acknowledgement of a tick we sent BEFORE first seeing the new boot does not count.
    stale = Heartbeat(node="beta", state=NodeState.STANDBY, role=Role.EQUAL, health=100,
                      flags=Flag.STARTED, epoch=1, tick=wiped.ep.next_tick(now),
                      ack_boot=a.ep.boot_id[4:], acks=((link_id("lan"), a.ep.tick),))
    assert a.ep.receive("lan", wiped.ep.seal(stale), now) is None
    assert a.rejected("unconfirmed") == 2
    # Round trip: we acknowledge the candidate boot, it acknowledges our newer tick.
    now += INTERVAL
    ours = a.packet(now)
    assert a.ep.acks()[0] == wiped.ep.boot_id[4:]
    assert wiped.ep.receive("lan", ours, now) is not None
    now += INTERVAL
    got = a.ep.receive("lan", wiped.packet(now), now)
    assert got is not None
    assert a.ep.view().boot_id == wiped.ep.boot_id
    # The boot it replaced is retired: its packets are replays now.
    assert a.ep.receive("lan", b.packet(now), now) is None
    assert a.rejected("replay") == 1


def test_peer_restart_with_a_higher_counter_is_accepted_one_way() -> None:
    a, b = pair(b_counter=20)
    now = exchange(a, b, 1.0)
    restarted = Node("beta", "alpha", 21)  # never hears us: no acknowledgements at all
    packet = restarted.packet(now)
    assert a.ep.receive("lan", packet, now) is not None
    assert a.ep.view().boot_id == restarted.ep.boot_id
    assert a.rejected("unconfirmed") == 0
    # ... even while the old boot still looked alive; its packets are now replays.
    assert a.ep.receive("lan", b.packet(now), now) is None
    assert a.rejected("replay") == 1
    assert a.ep.receive("serial", restarted.packet(now + INTERVAL), now + INTERVAL) is not None


def test_after_our_restart_old_packets_of_the_same_peer_boot_are_refused() -> None:
    a, b = pair(b_counter=20)
    sent = [b.packet(1.0 + i * INTERVAL) for i in range(6)]
    for i, packet in enumerate(sent):
        assert a.ep.receive("lan", packet, 1.0 + i * INTERVAL) is not None
    record = a.ep.tracker.record()
    assert record == (20, 6)
    restarted = Node("alpha", "beta", 11, known_peer=record)
    now = 50.0
    for packet in sent:
        assert restarted.ep.receive("lan", packet, now) is None
    assert restarted.ep.view().boot_id is None
    newer = b.packet(now)
    got = restarted.ep.receive("lan", newer, now)
    assert got is not None and got.heartbeat.tick == 7
    assert restarted.ep.view().boot_id == b.ep.boot_id


def test_after_our_restart_old_packets_stay_refused_once_the_peer_is_back() -> None:
    a, b = pair(b_counter=20)
    sent = [b.packet(1.0 + i * INTERVAL) for i in range(6)]
    for i, packet in enumerate(sent):
        assert a.ep.receive("lan", packet, 1.0 + i * INTERVAL) is not None
    restarted = Node("alpha", "beta", 11, known_peer=a.ep.tracker.record())
    now = 50.0
    assert restarted.ep.receive("lan", b.packet(now), now) is not None
    # Replaying packets the peer sent before our restart must not count as hearing it.
    for packet in sent:
        assert restarted.ep.receive("serial", packet, now + 1) is None
    assert restarted.ep.view().links[1].rx_at is None
    assert restarted.ep.figures["serial"].received == 0


def test_after_our_restart_packets_sent_after_the_last_save_need_a_round_trip() -> None:
    # The record is saved every few seconds: packets between the saved seq and the peer's real
    # highest were possibly recorded by an attacker, so within the margin only a round trip counts.
    a, b = pair(b_counter=20)
    saved = [b.packet(1.0 + i * INTERVAL) for i in range(3)]
    for i, packet in enumerate(saved):
        assert a.ep.receive("lan", packet, 1.0 + i * INTERVAL) is not None
    record = a.ep.tracker.record()
    unsaved = [b.packet(2.0 + i * INTERVAL) for i in range(4)]  # sent after the save, maybe recorded
    restarted = Node("alpha", "beta", 11, known_peer=record, known_margin=10)
    for packet in unsaved:
        assert restarted.ep.receive("lan", packet, 50.0) is None
    assert restarted.ep.view().boot_id is None
    # The live peer answers our heartbeats, which confirms its boot by round trip.
    assert b.ep.receive("lan", restarted.packet(50.0), 50.0) is not None
    assert restarted.ep.receive("lan", b.packet(50.1), 50.1) is not None
    assert restarted.ep.view().boot_id == b.ep.boot_id


def test_after_our_restart_a_lower_peer_boot_is_refused() -> None:
    a, b = pair(b_counter=20)
    exchange(a, b, 1.0)
    restarted = Node("alpha", "beta", 11, known_peer=a.ep.tracker.record())
    older = Node("beta", "alpha", 19)
    assert restarted.ep.receive("lan", older.packet(50.0), 50.0) is None
    assert restarted.rejected("unconfirmed") == 1
    newer = Node("beta", "alpha", 21)
    assert restarted.ep.receive("lan", newer.packet(50.0), 50.0) is not None


def test_record_without_a_peer_keeps_what_was_known() -> None:
    assert Node("alpha", "beta", 1).ep.tracker.record() is None
    assert Node("alpha", "beta", 1, known_peer=(5, 9)).ep.tracker.record() == (5, 9)


def test_message_from_another_node_is_wrong_node() -> None:
    a, b = pair()
    assert a.ep.receive("lan", b.packet(1.0, node="gamma"), 1.0) is None
    assert a.rejected("wrong_node") == 1
    assert a.ep.view().boot_id is None
    # Our own heartbeats reflected back are not the peer's either.
    assert a.ep.receive("lan", a.packet(1.0), 1.0) is None
    assert a.rejected("wrong_node") == 2


def test_acknowledgements_date_our_sends_per_link() -> None:
    a, b = pair()
    now = exchange(a, b, 1.0, rounds=2)
    our_packet = a.packet(now)  # tick 3, sent at `now`
    b.ep.receive("serial", our_packet, now)
    a.ep.receive("serial", b.packet(now + 0.05), now + 0.05)
    view = a.ep.view()
    assert view.acked_tick == 3
    links = {link.name: link for link in view.links}
    assert links["serial"].tx_ok_at == pytest.approx(now)
    assert links["lan"].tx_ok_at == pytest.approx(now - INTERVAL)


# ---------------------------------------------------------------------------- per-link figures


def test_link_stats_count_lost_ticks_from_gaps() -> None:
    stats = LinkFigures()
    boot = new_boot_id(1)
    for i, tick in enumerate([1, 2, 5, 6, 10]):
        stats.record_valid(None, 1.0 + i * INTERVAL, boot, tick, INTERVAL)
    assert stats.received == 5
    assert stats.lost == 2 + 3
    # A late, older tick is not a loss and does not move the reference back.
    stats.record_valid(None, 1.5, boot, 8, INTERVAL)
    stats.record_valid(None, 1.6, boot, 11, INTERVAL)
    assert stats.lost == 5
    # A new peer boot restarts tick numbering without counting a loss.
    other = new_boot_id(2)
    stats.record_valid(None, 1.7, other, 1, INTERVAL)
    stats.record_valid(None, 1.8, other, 3, INTERVAL)
    assert stats.lost == 6


def test_link_stats_put_lateness_in_the_right_bucket() -> None:
    assert LATENESS_BUCKETS_MS == (10, 25, 50, 100, 200, 500)
    stats = LinkFigures()
    boot = new_boot_id(1)
    now = 10.0
    stats.record_valid(None, now, boot, 1, INTERVAL)
    assert sum(stats.lateness) == 0  # the first packet has no gap to judge
    # (gap after the previous packet in ms, expected bucket)
    cases = [(100, 0), (95, 0), (118, 1), (140, 2), (180, 3), (290, 4), (450, 5), (900, 6), (5000, 6)]
    expected = [0] * 7
    for tick, (gap_ms, bucket) in enumerate(cases, start=2):
        previous, now = now, now + gap_ms / 1000
        stats.record_valid(previous, now, boot, tick, INTERVAL)
        expected[bucket] += 1
        assert stats.lateness == expected, (gap_ms, bucket)
    figures = stats.to_json()
    assert figures["late_over_50ms"] == sum(expected[3:]) == 5
    assert figures["lateness_ms"]["<=10ms"] == 2
    assert figures["lateness_ms"][">500ms"] == 2
    assert figures["lost"] == 0


def test_link_stats_rejections() -> None:
    stats = LinkFigures()
    stats.record_reject("bad_tag")
    stats.record_reject("bad_tag")
    stats.record_reject("unconfirmed")
    stats.record_reject("replay")
    figures = stats.to_json()
    assert figures["rejected"] == {"bad_tag": 2, "replay": 1}
    assert figures["rejected_total"] == 3
    assert figures["pending"] == 1


def test_endpoint_counts_valid_packets_per_link() -> None:
    a, b = pair()
    for i in range(3):
        a.ep.receive("lan", b.packet(1.0 + i * INTERVAL), 1.0 + i * INTERVAL)
    b.packet(1.3)  # lost on every link
    a.ep.receive("lan", b.packet(1.4), 1.4)
    assert a.ep.figures["lan"].received == 4
    assert a.ep.figures["lan"].lost == 1
    assert a.ep.figures["serial"].received == 0
    # One "last heard" clock: the peer tracker's, as the decision core sees it.
    assert a.ep.link_status("lan", 2.4)["last_heard_s"] == 1.0
    assert a.ep.link_status("serial", 2.4)["last_heard_s"] is None
    assert a.ep.view().links[0].rx_at == 1.4


# ---------------------------------------------------------------------------- a peer of another generation


def test_fresh_foreign_packets_show_the_peer_alive_but_replays_and_old_boots_do_not() -> None:
    a, b = pair(a_counter=10, b_counter=20)
    assert a.ep.receive("lan", b.packet(1.0), 1.0) is not None  # bravo, readable, boot 20
    updated = Sealer(ring(), new_boot_id(21), version=0x10)  # bravo restarted into the next generation
    first = updated.seal_payload(bytes(40))
    assert a.ep.receive("lan", first, 2.0) is None
    view = a.ep.view()
    assert (view.foreign_version, view.foreign_at) == (0x10, 2.0)
    assert a.ep.figures["lan"].rejected["foreign"] == 1  # not read
    assert a.ep.receive("serial", first, 2.1) is None  # the same packet again (on any link): a replay
    assert a.rejected("replay", "serial") == 1 and a.ep.view().foreign_at == 2.0
    assert a.ep.receive("lan", updated.seal_payload(bytes(40)), 2.2) is None
    assert a.ep.view().foreign_at == 2.2
    # Recorded packets of an older foreign boot (or one no newer than the readable boot) prove nothing.
    for counter in (19, 20):
        stale = Sealer(ring(), new_boot_id(counter), version=0x10).seal_payload(bytes(40))
        assert a.ep.receive("lan", stale, 2.3) is None
        assert a.ep.view().foreign_at == 2.2
    assert a.rejected("replay") == 2


def test_a_readable_restart_after_a_foreign_one_is_the_peer_again() -> None:
    a, b = pair(a_counter=10, b_counter=20)
    a.ep.receive("lan", Sealer(ring(), new_boot_id(21), version=0x10).seal_payload(bytes(40)), 1.0)
    assert a.ep.view().foreign_version == 0x10
    rolled_back = Node("beta", "alpha", 22)  # bravo rolled back to this release
    delivery = a.ep.receive("lan", rolled_back.packet(2.0), 2.0)
    assert delivery is not None and delivery.view.last_rx == 2.0


def test_after_our_restart_the_peer_that_did_not_restart_counts_at_once_when_foreign() -> None:
    """Review of ef678f9: we restart into another generation while the peer runs on. Its packets carry
    the boot we persisted, with seqs inside the margin a readable boot must confirm by a round trip;
    foreign ones cannot be confirmed, and dropping them would let us take the calls from a live peer."""
    a = Node("alpha", "beta", 10, known_peer=(20, 500), known_margin=120)
    peer = Sealer(ring(), new_boot_id(20), version=0x10)
    peer.seq = 505  # what the peer sent since our record was saved
    assert a.ep.receive("lan", peer.seal_payload(bytes(40)), 1.0) is None
    assert a.ep.view().foreign_at == 1.0
    older = Sealer(ring(), new_boot_id(19), version=0x10).seal_payload(bytes(40))
    assert a.ep.receive("lan", older, 1.1) is None and a.ep.view().foreign_at == 1.0
