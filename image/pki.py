"""The development PKI that signs update bundles: a CA (the boxes' keyring) and a signing certificate.

Made on first use, outside the checkout, and never committed: a developer's images trust only that
developer's bundles. An appliance maker uses their own PKI instead (``./dev image --keyring`` and
``./dev bundle --cert/--key``, the key possibly a PKCS#11 URI into an HSM); hardware_docs/updates.md
says how.

The certificates follow what RAUC 1.8 accepts (../shared/reference/appliance-image.md): an EC P-256
CA with ``CA:TRUE`` and ``keyCertSign, cRLSign``, and a signing certificate with ``CA:FALSE``,
``digitalSignature`` and **no** extended key usage (``codeSigning`` makes RAUC refuse the signature
with "unsuitable certificate purpose", and only after it has built the whole bundle).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_DIR = Path(os.environ.get("TANDEM_PKI_DIR", Path.home() / ".local/share/tandem/dev-pki"))
VALID_DAYS = 20 * 365  # a box in a rack for 15 years still takes its maker's bundles


@dataclass(frozen=True)
class Pki:
    """Where a PKI's three files are: the CA certificate (the keyring), the signing certificate and key."""

    keyring: Path
    cert: Path
    key: Path


def dev_pki(directory: Path = DEFAULT_DIR, name: str = "Tandem development") -> Pki:
    """The development PKI in `directory`, made there (CA, signing certificate, key 0600) if missing."""
    pki = Pki(directory / "ca.cert.pem", directory / "signing.cert.pem", directory / "signing.key.pem")
    if pki.keyring.exists() and pki.cert.exists() and pki.key.exists():
        return pki
    if pki.keyring.exists():  # a CA without its signing pair: never replace a CA boxes may trust
        raise SystemExit(f"pki: {directory} has the CA ({pki.keyring.name}) but not {pki.cert.name} and "
                         f"{pki.key.name}: restore them from a backup, or move the directory away to make a new PKI "
                         "(boxes flashed with the old CA will then refuse the new bundles)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{name} update CA")])
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(cert_sign=True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signing_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                              x509.NameAttribute(NameOID.COMMON_NAME, f"{name} bundle signing")])
    signing = (_builder(signing_name, ca_name, signing_key.public_key(), now)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(cert_sign=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key_pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    fd = os.open(pki.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    pki.cert.write_bytes(signing.public_bytes(serialization.Encoding.PEM))
    pki.keyring.write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # last: its presence means complete
    return pki


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)
