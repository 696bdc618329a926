"""This box's own identity key: an Ed25519 key pair made on the box, never in the image.

Pairing tells the peer its public half (the pairing record keeps the peer's),
so the bulk channel between the boxes (updates, the remote console's peer
view, PBX data replication) can authenticate both ends with keys the two
boxes exchanged over the authenticated pairing channel and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.core.journal import write_atomically


def load_or_create_identity(path: Path) -> Ed25519PrivateKey:
    """The identity key at `path`, made (mode 0600) if the box has none yet; ValueError if it is not one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), mode=0o600)
        os.chmod(path, 0o600)
        return key
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_hex(key: Ed25519PrivateKey) -> str:
    """The raw public key, hex: what the peer stores to recognise this box."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
