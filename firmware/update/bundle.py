"""Checking an update bundle before anything is written: its signature, its board family, its shape.

A bundle is a RAUC bundle (verity format) built by ``./dev bundle`` (image/bundle.py). ``rauc info``
checks the signature against the box's keyring and reads the manifest, but it does not compare the
bundle's ``compatible`` with the box's own (RAUC leaves that to ``rauc install``, which has begun by
then), and it does not read the payload: a bundle damaged after it was signed passes ``rauc info``
and fails halfway through the install. :func:`check_bundle` does all three (signature, family, and
the payload against the signed dm-verity root hash), so a wrong bundle is refused with one line
before any slot is touched.

The verity layout (RAUC's verity format, dm-verity version 1 with SHA-256, 4 KiB blocks, the salt
before each block): ``payload | hash tree | CMS signature | signature size (8 bytes, big-endian)``;
the hash tree holds its levels from the top (one block) down to the hashes of the payload's blocks.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import TandemError

SYSTEM_CONF = Path("/etc/rauc/system.conf")
RAUC_TIMEOUT_S = 60.0  # reading a bundle's manifest takes ~10 ms; a stuck stick or NFS must not hang us
VERITY_BLOCK = 4096


class UpdateError(TandemError):
    """An update refused or failed; the message is one line that says why."""


@dataclass(frozen=True)
class BundleInfo:
    """What a checked bundle is: for which boards, which version, and its root file system image."""

    path: Path
    compatible: str
    version: str
    build: str | None
    description: str | None
    image_size: int
    image_sha256: str


@dataclass(frozen=True)
class SystemInfo:
    """What this box takes: its RAUC ``compatible`` and the keyring that signs its bundles."""

    compatible: str
    keyring: Path


def system_info(conf: Path = SYSTEM_CONF) -> SystemInfo:
    """This box's `compatible` and keyring, read from RAUC's system config; UpdateError naming the key if not."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with conf.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise UpdateError(f"{conf}: cannot read RAUC's system config ({_first_line(exc)})") from None
    compatible = parser.get("system", "compatible", fallback="").strip()
    keyring = parser.get("keyring", "path", fallback="").strip()
    if not compatible:
        raise UpdateError(f"{conf}: [system] compatible: missing")
    if not keyring:
        raise UpdateError(f"{conf}: [keyring] path: missing")
    path = Path(keyring) if Path(keyring).is_absolute() else conf.parent / keyring
    return SystemInfo(compatible, path)


def check_bundle(bundle: Path, system: SystemInfo, rauc: str = "rauc") -> BundleInfo:
    """The bundle's manifest once its signature checks against the box's keyring and it is for this box.

    UpdateError (one line) for a missing or unreadable file, a bad or foreign signature, a truncated or
    malformed bundle, a bundle for another board family, or one without a root file system image.
    """
    if not bundle.is_file():
        raise UpdateError(f"{bundle}: no such bundle")
    try:
        manifest = json.loads(_rauc_info(bundle, system, rauc, "json"))
        images = {name: image for entry in manifest.get("images", []) for name, image in entry.items()}
        rootfs = images["rootfs"]
        info = BundleInfo(bundle, str(manifest["compatible"]), str(manifest["version"]), manifest.get("build"),
                          manifest.get("description"), int(rootfs["size"]), str(rootfs["checksum"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpdateError(f"{bundle}: refused: its manifest has no root file system image (not a Tandem "
                          "bundle?)") from None
    if info.compatible != system.compatible:
        raise UpdateError(f"{bundle}: refused: it is for {info.compatible!r} boards, this box is "
                          f"{system.compatible!r}")
    verify_payload(bundle, _verity_parameters(bundle, _rauc_info(bundle, system, rauc, "readable")))
    return info


@dataclass(frozen=True)
class Verity:
    """A verity bundle's signed parameters: the salt, the root hash and the hash tree's size."""

    salt: bytes
    root_hash: bytes
    tree_size: int


def verify_payload(bundle: Path, verity: Verity) -> None:
    """Check every block of the bundle's payload, and its stored hash tree, against the signed root hash.

    UpdateError if a block was changed after signing (or the hash tree was), or the file cannot be read.
    """
    try:
        hashes, stored_tree = _payload_hashes(bundle, verity)
    except OSError as exc:  # a stick pulled out, an I/O error: said in one line like any refusal
        raise UpdateError(f"{bundle}: cannot read it: {exc.strerror or exc}") from None
    levels = []
    while True:  # each level: the hashes below it, packed into zero-padded blocks
        packed = b"".join(hashes)
        blocks = [packed[at:at + VERITY_BLOCK].ljust(VERITY_BLOCK, b"\0") for at in range(0, len(packed), VERITY_BLOCK)]
        levels.append(b"".join(blocks))
        if len(blocks) == 1:
            break
        hashes = [hashlib.sha256(verity.salt + block).digest() for block in blocks]
    root = hashlib.sha256(verity.salt + levels[-1]).digest()
    if root != verity.root_hash:
        raise UpdateError(f"{bundle}: refused: its content does not match its signature (damaged after signing)")
    if b"".join(reversed(levels)) != stored_tree:
        raise UpdateError(f"{bundle}: refused: its verity hash tree is damaged")


def _payload_hashes(bundle: Path, verity: Verity) -> tuple[list[bytes], bytes]:
    """The hash of each payload block (salted), and the hash tree as stored after the payload."""
    with bundle.open("rb") as handle:
        total = handle.seek(0, 2)
        signature_size = -1
        if total >= 8:
            handle.seek(total - 8)
            signature_size = struct.unpack(">Q", handle.read(8))[0]
        payload_size = total - 8 - signature_size - verity.tree_size
        if signature_size < 0 or payload_size <= 0 or payload_size % VERITY_BLOCK or verity.tree_size % VERITY_BLOCK:
            raise UpdateError(f"{bundle}: refused: its verity layout does not add up (a damaged copy?)")
        handle.seek(0)
        hashes = [hashlib.sha256(verity.salt + handle.read(VERITY_BLOCK)).digest()
                  for _ in range(payload_size // VERITY_BLOCK)]
        return hashes, handle.read(verity.tree_size)


def _verity_parameters(bundle: Path, readable: str) -> Verity:
    """The verity salt, root hash and tree size from `rauc info`'s readable output (its JSON lacks them)."""
    if not re.search(r"^Bundle Format:\s*verity\s*$", readable, re.MULTILINE):
        raise UpdateError(f"{bundle}: refused: not a verity bundle (this box installs only those; rebuild it with "
                          "./dev bundle)")
    fields = dict(re.findall(r"^\s*Verity (Salt|Hash|Size):\s*'?([0-9a-f]+)'?\s*$", readable, re.MULTILINE))
    try:
        return Verity(bytes.fromhex(fields["Salt"]), bytes.fromhex(fields["Hash"]), int(fields["Size"]))
    except (KeyError, ValueError):
        raise UpdateError(f"{bundle}: refused: rauc info shows no verity parameters") from None


def _rauc_info(bundle: Path, system: SystemInfo, rauc: str, output_format: str) -> str:
    """`rauc info` of the bundle, its signature checked against the box's keyring; UpdateError if refused."""
    argv = [rauc, "info", "--keyring", str(system.keyring), f"--output-format={output_format}", str(bundle)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RAUC_TIMEOUT_S)
    except FileNotFoundError:
        raise UpdateError(f"{rauc}: not installed (RAUC is what installs bundles)") from None
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{bundle}: rauc info did not answer within {RAUC_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        raise UpdateError(f"{bundle}: refused: {_explain(_rauc_reason(done.stderr))}")
    return done.stdout


# RAUC's reasons, said in the installer's words first (RAUC's own follow in brackets); the first match wins.
# OpenSSL words a certificate outside its validity as "certificate is not yet valid" / "has expired",
# inside RAUC's "signature verification failed": those come before the generic signature entry.
_EXPLAINED = (("not yet valid", "its signing certificate is not valid yet: is this box's clock right?"),
              ("has expired", "its signing certificate has expired"),
              ("invalid bundle format", "not a whole bundle (a truncated or damaged copy?)"),
              ("exceeds bundle size", "not a whole bundle (a truncated or damaged copy?)"),
              ("signature", "not signed by a key this box trusts"))


def _explain(reason: str) -> str:
    lowered = reason.lower()
    for marker, words in _EXPLAINED:
        if marker in lowered:
            return f"{words} (rauc: {reason})"
    return reason


def _rauc_reason(stderr: str) -> str:
    """RAUC's own reason: its last line that is not one of its progress messages."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("rauc-Message")]
    return lines[-1] if lines else "rauc info failed without saying why"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
