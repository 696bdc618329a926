"""Heartbeat wire format: a compact binary message sealed with AES-256-GCM-SIV.

Packet layout (big-endian)::

    header (16 bytes, authenticated, not encrypted)
      magic   2  b"TH"
      version 1  PROTOCOL_VERSION
      key id  1  which cluster key sealed the packet (two keys are accepted during a rotation)
      boot id 8  boot counter (4, grows with every daemon start) + 4 random bytes
      seq     4  per-boot packet counter, one per packet on any link
    ciphertext of the payload, then the 16-byte tag

The nonce is boot id + seq. Each daemon start takes a boot counter higher than
any before it (persisted, and never below the wall clock's seconds) plus 32
random bits that keep the two nodes apart, and never repeats a seq within a
boot, so a nonce is never reused under a key; the SIV mode keeps even an
accidental repeat from leaking the key.

Payload::

    name length 1, name (1-16 bytes UTF-8)
    state 1, role 1, health 1, flags 2, epoch 4, tick 4
    ack boot tag 4 (first 4 bytes of the receiver's boot id the acks refer to)
    ack count 1, then per link: link id 2 (CRC of the link name), last tick heard 4

A full packet with 8 links is 115 bytes. The records themselves (`Heartbeat`,
`Header`) and the link and boot identifiers live in `message`, which does not
need the cryptography package.

Mixed versions (a pair in the middle of a rolling update). The header layout,
the key ids and the sealing (nonce = boot id + seq, the header as associated
data) are the same in every version, so a packet is authenticated before its
version is looked at. Then, by the version byte (see `message`):

* this node's generation, a newer revision: the payload is read up to the
  fields this node knows; what a newer revision appended is skipped;
* this node's generation, this or an older revision: read exactly (an older
  revision's payload simply ends before fields added since; there are none
  yet);
* another generation: the packet proves that a peer holding the cluster key is
  alive, but its payload is not read. `open_packet` raises `ForeignPacket`,
  and the decision core treats such a peer as alive and unreadable: it does
  not take over from it, and raises a critical alarm.

No version may send a packet longer than `MAX_WIRE_BYTES`.
"""

from __future__ import annotations

import binascii
import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from firmware.core.message import PROTOCOL_VERSION, Header, Heartbeat, boot_counter, protocol_generation
from firmware.core.states import Flag, NodeState, Role
from firmware.errors import TandemError

MAGIC = b"TH"
HEADER = struct.Struct("!2sBB8sI")
BODY = struct.Struct("!BBBHII4sB")
ACK = struct.Struct("!HI")
TAG_BYTES = 16
KEY_BYTES = 32
MAX_NAME_BYTES = 16
MAX_ACKS = 8
MAX_SEQ = 0xFFFF_FFFF
MIN_PACKET_BYTES = HEADER.size + 1 + 1 + BODY.size + TAG_BYTES
MAX_PACKET_BYTES = HEADER.size + 1 + MAX_NAME_BYTES + BODY.size + MAX_ACKS * ACK.size + TAG_BYTES
MAX_WIRE_BYTES = 256  # the longest packet any version may send (newer revisions append fields)


class ProtocolError(TandemError):
    """A packet that must be dropped; `reason` is the counter it is filed under."""

    REASONS = ("malformed", "unknown_key", "bad_tag", "foreign")

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ForeignPacket(ProtocolError):
    """An authentic packet of another protocol generation: the peer is alive, its payload unreadable here."""

    def __init__(self, header: Header, version: int, own_version: int = PROTOCOL_VERSION) -> None:
        super().__init__("foreign", f"protocol version 0x{version:02x}, this node reads generation "
                                    f"{protocol_generation(own_version)} only")
        self.header = header
        self.version = version


def new_boot_id(counter: int) -> bytes:
    """A boot id for a daemon start with the given boot counter."""
    return (counter & 0xFFFF_FFFF).to_bytes(4, "big") + secrets.token_bytes(4)


class Keyring:
    """The cluster keys: the first one seals outgoing packets, all of them open incoming ones."""

    def __init__(self, keys: list[tuple[int, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, key in keys:
            if not 0 <= key_id <= 255:
                raise ValueError(f"key id {key_id} is outside 0-255")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id} is {len(key)} bytes, not {KEY_BYTES}")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids must be unique")
        self.send_id = keys[0][0]
        self._ciphers = {key_id: AESGCMSIV(key) for key_id, key in keys}
        self._keys = [key for _, key in keys]

    def secrets(self) -> list[bytes]:
        """The raw keys, the sending key first: for keys derived from the cluster key (the bulk channel's CA)."""
        return list(self._keys)

    @property
    def key_ids(self) -> list[int]:
        """Ids of every accepted key, the sending key first."""
        return list(self._ciphers)

    def cipher(self, key_id: int) -> AESGCMSIV | None:
        """The cipher for `key_id`, or None if that key is not in the ring."""
        return self._ciphers.get(key_id)

    @classmethod
    def load(cls, path: Path) -> "Keyring":
        """Read a key file: lines `<id> <64 hex digits>`, `#` comments; first line sends."""
        keys: list[tuple[int, bytes]] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2:
                raise ValueError(f"line {number}: expected `<key id> <64 hex digits>`")
            try:
                if not (parts[0].isascii() and parts[0].isdigit()):  # int() also reads "+1", "1_0" and "١"
                    raise ValueError
                key_id, key = int(parts[0]), bytes.fromhex(parts[1])
            except ValueError:
                raise ValueError(f"line {number}: key id must be a number (digits 0-9) and the key "
                                 "hexadecimal") from None
            if not 0 <= key_id <= 255:
                raise ValueError(f"line {number}: key id {key_id} is outside 0-255")
            if len(key) != KEY_BYTES:
                raise ValueError(f"line {number}: the key has {2 * len(key)} hex digits, not {2 * KEY_BYTES}")
            if len(set(key)) == 1:
                raise ValueError(f"line {number}: key {key_id} is one byte repeated (0x{key[0]:02x}), not a secret; "
                                 "make a random one with `tandem keygen`")
            if any(key_id == seen for seen, _ in keys):
                raise ValueError(f"line {number}: key id {key_id} is used twice")
            keys.append((key_id, key))
        if not keys:
            raise ValueError("no key in the file (create one with `tandem keygen`)")
        return cls(keys)


def new_key_line(key_id: int) -> str:
    """A fresh random 256-bit key as a key-file line."""
    return f"{key_id} {secrets.token_hex(KEY_BYTES)}\n"


def write_key_file(path: Path, key_id: int = 1, add: bool = False) -> None:
    """Create a key file with mode 0600 (or, with `add`, append a new key for rotation)."""
    line = new_key_line(key_id)
    if add:
        existing = Keyring.load(path)
        if key_id in existing.key_ids:
            raise ValueError(f"{path} already has a key with id {key_id}")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


class Sealer:
    """Seals heartbeats for one daemon start: owns the boot id and the nonce counter."""

    def __init__(self, keyring: Keyring, boot_id: bytes, version: int = PROTOCOL_VERSION) -> None:
        self.keyring = keyring
        self.boot_id = boot_id
        self.seq = 0
        self.version = version

    def seal(self, message: Heartbeat) -> bytes:
        """Encode and encrypt `message` under a nonce never used before in this boot."""
        return self.seal_payload(encode_payload(message))

    def seal_payload(self, payload: bytes) -> bytes:
        """Encrypt an encoded payload under a nonce never used before in this boot."""
        if self.seq >= MAX_SEQ:  # years of heartbeats: continue as the next boot
            self.boot_id, self.seq = new_boot_id(boot_counter(self.boot_id) + 1), 0
        self.seq += 1
        header = HEADER.pack(MAGIC, self.version, self.keyring.send_id, self.boot_id, self.seq)
        cipher = self.keyring.cipher(self.keyring.send_id)
        assert cipher is not None
        return header + cipher.encrypt(header[4:16], payload, header)


def encode_payload(message: Heartbeat) -> bytes:
    """The cleartext payload of a heartbeat."""
    name = message.node.encode()
    if not 1 <= len(name) <= MAX_NAME_BYTES:
        raise ValueError(f"node name must be 1-{MAX_NAME_BYTES} bytes")
    if len(message.acks) > MAX_ACKS:
        raise ValueError(f"at most {MAX_ACKS} links")
    body = BODY.pack(
        int(message.state), int(message.role), message.health, int(message.flags),
        message.epoch, message.tick, message.ack_boot, len(message.acks),
    )
    acks = b"".join(ACK.pack(ident, tick) for ident, tick in message.acks)
    return bytes([len(name)]) + name + body + acks


def decode_payload(payload: bytes, newer: bool = False) -> Heartbeat:
    """Parse a decrypted payload; raise ProtocolError('malformed') on any inconsistency.

    With `newer` (a newer revision of this generation sent it), bytes after the
    fields this version knows are skipped; otherwise the payload must end there.
    """
    try:
        name_len = payload[0]
        if not 1 <= name_len <= MAX_NAME_BYTES:
            raise ProtocolError("malformed", "bad name length")
        name = payload[1 : 1 + name_len].decode()
        offset = 1 + name_len
        state, role, health, flags, epoch, tick, ack_boot, count = BODY.unpack_from(payload, offset)
        offset += BODY.size
        end = offset + count * ACK.size
        if count > MAX_ACKS or len(payload) < end or (len(payload) > end and not newer):
            raise ProtocolError("malformed", "bad ack list")
        acks = tuple(ACK.unpack_from(payload, offset + i * ACK.size) for i in range(count))
        if health > 100:
            raise ProtocolError("malformed", "health above 100")
        return Heartbeat(
            node=name, state=NodeState(state), role=Role(role), health=health,
            flags=Flag(flags), epoch=epoch, tick=tick, ack_boot=ack_boot, acks=acks,
        )
    except ProtocolError:
        raise
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("malformed", str(exc)) from None


def open_packet(packet: bytes, keyring: Keyring, own_version: int = PROTOCOL_VERSION) -> tuple[Header, Heartbeat]:
    """Authenticate, decrypt and parse one packet; raise ProtocolError naming why it was dropped.

    An authentic packet of another generation than `own_version`'s raises
    `ForeignPacket`, which carries its header and version.
    """
    if len(packet) < MIN_PACKET_BYTES:
        raise ProtocolError("malformed", f"{len(packet)} bytes is too short")
    if len(packet) > MAX_WIRE_BYTES:
        raise ProtocolError("malformed", f"{len(packet)} bytes is too long")
    magic, version, key_id, boot_id, seq = HEADER.unpack_from(packet)
    if magic != MAGIC:
        raise ProtocolError("malformed", "bad magic")
    cipher = keyring.cipher(key_id)
    if cipher is None:
        raise ProtocolError("unknown_key", f"key id {key_id} is not in the key file")
    header = packet[: HEADER.size]
    try:
        payload = cipher.decrypt(header[4:16], packet[HEADER.size :], header)
    except InvalidTag:
        raise ProtocolError("bad_tag", "authentication failed (tampered, or another key)") from None
    record = Header(key_id=key_id, boot_id=boot_id, seq=seq)
    if protocol_generation(version) != protocol_generation(own_version):
        raise ForeignPacket(record, version, own_version)
    return record, decode_payload(payload, newer=version > own_version)


def hexlify(data: bytes) -> str:
    """Short hex form of a boot id for logs."""
    return binascii.hexlify(data).decode()
