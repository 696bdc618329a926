"""Pairing two boxes: an authenticated key agreement with a short code the operator compares on both panels.

Pure: no I/O and no clock. :class:`Pairing` takes the peer's messages and
returns the ones to send; the session (`firmware.pairing.session`) carries
them over the serial crossover cable and asks the operator.

The exchange follows ZRTP's commitment (RFC 6189, section 4.4.1) and
Bluetooth's numeric comparison: the *initiator* commits to its ephemeral
X25519 public key (a hash) before it has seen the responder's, and reveals it
only after. A man in the middle must fix both his keys before he can know the
code either side will show, so he gets one guess at a six-digit code: one
chance in a million that the operator's comparison misses him.

    both:       HELLO  {id, name}                  until each has heard the other
    initiator:  COMMIT {h = SHA-256(pub_i, ids)}   (the larger id initiates)
    responder:  DH1    {pub_r}
    initiator:  DH2    {pub_i}                     the responder checks h
    both:       the code = HKDF(X25519 secret, transcript) as six digits; the operator compares
    both:       CONFIRM {mac, settings (AES-GCM)}  sent once the operator said "same code"
    either:     ABORT  {why}                       the operator said "different", or an error

After both CONFIRMs each side has the cluster key (from the same HKDF, never
sent) and the peer's settings (names, link addresses, primary, shared IPs, its identity
key for the bulk channel). Duplicates are answered again, so a lost frame is
repaired by resending; a HELLO from a second device, a broken commitment, a
wrong MAC or a settings conflict ends the pairing with :class:`PairingError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from firmware.errors import TandemError

PROTOCOL = "tandem-pair/1"
ID_BYTES = 16
CODE_DIGITS = 6
KEY_BYTES = 32
_LABELS = ("code", "mac-initiator", "mac-responder", "settings-initiator", "settings-responder", "cluster-key")

Message = dict[str, Any]


class PairingError(TandemError):
    """The pairing cannot go on: the reason is for the operator (one line)."""


@dataclass(frozen=True)
class PairingResult:
    """What a finished pairing gives this box: the cluster key and what the peer told it."""

    cluster_key: bytes
    peer_name: str
    peer_settings: dict[str, Any]
    code: str

    @property
    def fingerprint(self) -> str:
        """A short public name of the cluster key (SHA-256, first 8 bytes): the same on both boxes."""
        return hashlib.sha256(b"tandem cluster key" + self.cluster_key).hexdigest()[:16]


def format_code(number: int) -> str:
    """Six digits in two groups, as the panels show them: ``"042 917"``."""
    digits = f"{number % 10 ** CODE_DIGITS:0{CODE_DIGITS}d}"
    return f"{digits[:3]} {digits[3:]}"


@dataclass
class Pairing:
    """One side of a pairing: feed it the peer's messages (:meth:`receive`), send what it returns.

    ``settings`` is what this box tells its peer (JSON-able; ``node`` is its name).
    ``random`` gives the HELLO id (tests pass their own for a repeatable role).
    """

    settings: dict[str, Any]
    random: Callable[[int], bytes] = secrets.token_bytes
    id: bytes = field(init=False)
    peer_id: bytes | None = field(default=None, init=False)
    peer_name: str | None = field(default=None, init=False)
    code: str | None = field(default=None, init=False)
    confirmed: bool = field(default=False, init=False)  # this box's operator said the codes match
    result: PairingResult | None = field(default=None, init=False)
    _private: X25519PrivateKey = field(init=False, repr=False)
    _commit: bytes | None = field(default=None, init=False, repr=False)
    _peer_public: bytes | None = field(default=None, init=False, repr=False)
    _keys: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _peer_confirm: Message | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        name = self.settings.get("node")
        if not isinstance(name, str) or not name:
            raise ValueError("settings need this box's name as `node`")
        self.id = self.random(ID_BYTES)
        self._private = X25519PrivateKey.generate()

    # ------------------------------------------------------------------ what to send

    @property
    def initiator(self) -> bool:
        """Whether this side commits first (the larger HELLO id); only known once the peer is heard."""
        return self.peer_id is not None and self.id > self.peer_id

    @property
    def public(self) -> bytes:
        """This side's ephemeral X25519 public key."""
        return self._private.public_key().public_bytes_raw()

    def hello(self) -> Message:
        """The HELLO, sent until the peer answers."""
        return {"t": "hello", "p": PROTOCOL, "id": self.id.hex(), "name": self.settings["node"]}

    def pending(self) -> list[Message]:
        """What to (re)send now, in case the peer missed it: every step this side has taken so far."""
        confirm = [self._confirm_message()] if self.confirmed else []
        if self.result is not None:
            return confirm
        if self.peer_id is None:
            return [self.hello()]
        if self.initiator:
            steps = [self._dh2()] if self._peer_public is not None else [self.hello(), self._commit_message()]
        else:
            steps = [self.hello()] + ([self._dh1()] if self._commit is not None else [])
        return steps + confirm

    def confirm(self) -> list[Message]:
        """The operator says both boxes show the same code: send CONFIRM (with this box's settings)."""
        if self.code is None:
            raise PairingError("there is no code to confirm yet")
        self.confirmed = True
        self._finish()
        return [self._confirm_message()]

    def reject(self, why: str = "the operator saw different codes") -> Message:
        """The operator says the codes differ: the ABORT to send (then stop)."""
        return {"t": "abort", "why": why}

    # ------------------------------------------------------------------ what the peer sent

    def receive(self, message: Message) -> list[Message]:
        """Take one message from the peer; return the messages to send. PairingError ends the pairing."""
        kind = message.get("t")
        handler = {"hello": self._on_hello, "commit": self._on_commit, "dh1": self._on_dh1,
                   "dh2": self._on_dh2, "confirm": self._on_confirm, "abort": self._on_abort}.get(kind)
        if handler is None:
            raise PairingError(f"unexpected message {kind!r} on the cable")
        try:
            return handler(message)
        except (KeyError, TypeError, ValueError) as exc:
            raise PairingError(f"malformed {kind} message from the peer ({exc})") from None

    def _on_hello(self, message: Message) -> list[Message]:
        if message["p"] != PROTOCOL:
            raise PairingError(f"the other box speaks {message['p']!r}, this one {PROTOCOL!r}: update one of them")
        peer_id = bytes.fromhex(message["id"])
        if len(peer_id) != ID_BYTES:
            raise ValueError("bad id")
        if peer_id == self.id:
            raise PairingError("this box hears its own HELLO: the cable is looped back, not connected to the other box")
        if self.peer_id is not None and peer_id != self.peer_id:
            raise PairingError(f"a third device on the cable: HELLO from {message['name']!r} while pairing with "
                               f"{self.peer_name!r}; pairing refused")
        name = message["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("bad name")
        if name == self.settings["node"]:
            raise PairingError(f"both boxes are named {name!r}: give each its own name before pairing")
        if self.peer_id is not None:
            return []  # a resent HELLO: what it needs is in our own resends (pending)
        self.peer_id, self.peer_name = peer_id, name
        if self.initiator:
            return [self.hello(), self._commit_message()]
        return [self.hello()]

    def _on_commit(self, message: Message) -> list[Message]:
        if self.peer_id is None:
            return []  # it overtook a lost HELLO; the peer sends both again
        if self.initiator:
            raise PairingError("both boxes committed: they disagree on who initiates")
        commit = bytes.fromhex(message["h"])
        if self._commit is not None and commit != self._commit:
            raise PairingError("the peer changed its commitment mid-pairing: someone else is on the cable")
        self._commit = commit
        return [self._dh1()]

    def _on_dh1(self, message: Message) -> list[Message]:
        if self.peer_id is None:
            return []  # it overtook a lost HELLO; the peer sends both again
        if not self.initiator:
            raise PairingError("a DH1 reached the responder: the boxes disagree on who initiates")
        self._take_peer_public(bytes.fromhex(message["pub"]))
        return [self._dh2()]

    def _on_dh2(self, message: Message) -> list[Message]:
        if self.peer_id is None:
            return []  # it overtook a lost HELLO; the peer sends both again
        if self.initiator or self._commit is None:
            raise PairingError("a DH2 before any commitment: pairing refused")
        public = bytes.fromhex(message["pub"])
        if not hmac.compare_digest(self._commitment(public, initiator_id=self.peer_id), self._commit):
            raise PairingError("the peer's key does not match its commitment: a man in the middle? pairing refused")
        self._take_peer_public(public)
        return []

    def _on_confirm(self, message: Message) -> list[Message]:
        if not self._keys:
            return []  # it overtook a lost key message; the peer sends it again
        expected = self._mac(peer=True)
        if not hmac.compare_digest(bytes.fromhex(message["mac"]), expected):
            raise PairingError("the peer's confirmation does not match: the two boxes did not agree on a key "
                               "(a man in the middle?); pairing refused")
        self._peer_confirm = message
        self._finish()
        return []

    def _on_abort(self, message: Message) -> list[Message]:
        raise PairingError(f"the other box ended the pairing: {str(message.get('why'))[:200]}")

    # ------------------------------------------------------------------ keys


    def _commitment(self, public: bytes, initiator_id: bytes | None) -> bytes:
        assert initiator_id is not None and self.peer_id is not None
        responder_id = self.id if initiator_id == self.peer_id else self.peer_id
        return hashlib.sha256(PROTOCOL.encode() + b"commit" + initiator_id + responder_id + public).digest()

    def _commit_message(self) -> Message:
        return {"t": "commit", "h": self._commitment(self.public, initiator_id=self.id).hex()}

    def _dh1(self) -> Message:
        return {"t": "dh1", "pub": self.public.hex()}

    def _dh2(self) -> Message:
        return {"t": "dh2", "pub": self.public.hex()}

    def _take_peer_public(self, public: bytes) -> None:
        if self._peer_public is not None:
            if public != self._peer_public:
                raise PairingError("the peer's key changed mid-pairing: someone else is on the cable")
            return
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(public))
        if shared == bytes(32):
            raise PairingError("the peer sent a degenerate key; pairing refused")
        self._peer_public = public
        assert self.peer_id is not None
        initiator = self.initiator
        ids = (self.id, self.peer_id) if initiator else (self.peer_id, self.id)
        publics = (self.public, public) if initiator else (public, self.public)
        transcript = hashlib.sha256(PROTOCOL.encode() + ids[0] + ids[1] + publics[0] + publics[1]).digest()
        material = HKDF(SHA256(), length=4 + 4 * KEY_BYTES + KEY_BYTES, salt=transcript,
                        info=PROTOCOL.encode()).derive(shared)
        sizes = (4, KEY_BYTES, KEY_BYTES, KEY_BYTES, KEY_BYTES, KEY_BYTES)
        offset = 0
        for label, size in zip(_LABELS, sizes):
            self._keys[label] = material[offset:offset + size]
            offset += size
        self.code = format_code(int.from_bytes(self._keys["code"], "big"))

    def _role(self, peer: bool) -> str:
        """This side's role ("initiator" or "responder"), or with `peer` the other side's."""
        return "initiator" if self.initiator != peer else "responder"

    def _mac(self, peer: bool) -> bytes:
        role = self._role(peer)
        return hmac.new(self._keys[f"mac-{role}"], PROTOCOL.encode() + b"confirm", hashlib.sha256).digest()

    def _confirm_message(self) -> Message:
        role = self._role(peer=False)
        nonce = b"\0" * 12  # one message per key: each role has its own settings key
        box = AESGCM(self._keys[f"settings-{role}"]).encrypt(nonce, json.dumps(self.settings).encode(), None)
        return {"t": "confirm", "mac": self._mac(peer=False).hex(), "settings": box.hex()}

    def _finish(self) -> None:
        if not self.confirmed or self._peer_confirm is None or self.result is not None:
            return
        role = self._role(peer=True)
        try:
            plain = AESGCM(self._keys[f"settings-{role}"]).decrypt(
                b"\0" * 12, bytes.fromhex(self._peer_confirm["settings"]), None)
            settings = json.loads(plain)
        except Exception:  # InvalidTag, bad hex or JSON: the same refusal
            raise PairingError("the peer's settings do not decrypt: pairing refused") from None
        if not isinstance(settings, dict) or settings.get("node") != self.peer_name:
            raise PairingError("the peer's settings name another box than its HELLO: pairing refused")
        if settings.get("primary") and self.settings.get("primary"):
            raise PairingError("both boxes are set as primary: choose one (`tandem pair --primary` on one box only)")
        mine, theirs = self.settings.get("shared_ips"), settings.get("shared_ips")
        if mine and theirs and mine != theirs:
            raise PairingError("the boxes give different shared IPs: give them on one box only (the other takes "
                               "them), or the same on both")
        assert self.code is not None and self.peer_name is not None
        self.result = PairingResult(self._keys["cluster-key"], self.peer_name, settings, self.code)
