"""Update bundles (issue 16): `./dev bundle` signs one, and a box refuses the wrong ones in one line.

Real RAUC throughout: image/bundle.py runs `rauc bundle` (mksquashfs, verity) on a small root file
system image, and `tandem update --check` runs `rauc info` against a keyring. The PKIs are the
development PKI of image/pki.py, made in the test's directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("mke2fs") is None,
                                reason="rauc (Debian package rauc) and mke2fs are needed; ./dev test installs them")
COMPATIBLE = "tandem-x86_64"


def fake_image_build(directory: Path) -> Path:
    """What `./dev image` leaves that a bundle is made of: a (small) slot image, build.json, the package list."""
    tree = directory / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("PRETTY_NAME=\"Tandem test slot\"\n")
    # Incompressible, so the payload spans more than 128 blocks: a hash tree of two levels.
    (tree / "noise").write_bytes(os.urandom(1024 * 1024))
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(directory / "rootfs.ext4"), "8M"], check=True,
                   capture_output=True)
    (directory / "build.json").write_text(json.dumps({"compatible": COMPATIBLE, "version": "0.1.0",
                                                      "build": "20261207T1200Z-abc1234"}))
    (directory / "packages.manifest").write_text("# package\tversion\tsource\tsource version\n"
                                                 "systemd\t252.33-1~deb12u1\tsystemd\t252.33-1~deb12u1\n")
    return directory


def bundle(image: Path, out: Path, pki: Path) -> subprocess.CompletedProcess:
    """Run ./dev bundle's script with the development PKI in `pki`."""
    return subprocess.run([sys.executable, str(ROOT / "image/bundle.py"), "--image", str(image), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "TANDEM_PKI_DIR": str(pki)})


def system_conf(directory: Path, keyring: Path, compatible: str = COMPATIBLE) -> Path:
    """A box's /etc/rauc/system.conf, as image/build.py writes it (the parts the check reads)."""
    conf = directory / f"system-{compatible}.conf"
    conf.write_text(f"[system]\ncompatible={compatible}\nbootloader=grub\n\n[keyring]\npath={keyring}\n")
    return conf


def check(bundle_path: Path, conf: Path) -> subprocess.CompletedProcess:
    """`tandem update --check BUNDLE` on a box with `conf`."""
    return subprocess.run([sys.executable, "-m", "firmware.cli", "update", "--check", str(bundle_path),
                           "--system-conf", str(conf)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One good bundle and the keyring that trusts it."""
    base = tmp_path_factory.mktemp("bundle")
    image = fake_image_build(base / "image")
    done = bundle(image, base / "good.raucb", base / "pki")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.split("  ", 1)[1])
    assert figures["bundle_mib"] > 0 and figures["bundle_build_s"] >= 0
    return {"base": base, "image": image, "bundle": base / "good.raucb", "keyring": base / "pki/ca.cert.pem"}


def test_the_development_pki_is_made_once_with_a_private_signing_key(built: dict[str, Path]) -> None:
    pki = built["base"] / "pki"
    assert (pki / "signing.key.pem").stat().st_mode & 0o777 == 0o600
    first = (pki / "ca.cert.pem").read_bytes()
    again = bundle(built["image"], built["base"] / "again.raucb", pki)
    assert again.returncode == 0, again.stderr
    assert (pki / "ca.cert.pem").read_bytes() == first  # reused, not made anew: old boxes keep trusting it


def test_a_bundle_for_this_box_passes_the_check_and_says_what_it_is(built: dict[str, Path]) -> None:
    done = check(built["bundle"], system_conf(built["base"], built["keyring"]))
    assert done.returncode == 0, done.stderr
    assert "Tandem 0.1.0 (build 20261207T1200Z-abc1234) for tandem-x86_64 boards; signature good, payload intact" in done.stdout
    # The package manifest travels inside the bundle and beside it.
    listing = subprocess.run(["unsquashfs", "-l", str(built["bundle"])], capture_output=True, text=True)
    assert "squashfs-root/packages.manifest" in listing.stdout
    assert built["bundle"].with_suffix(".packages").read_text() == (built["image"] / "packages.manifest").read_text()


def test_an_unpaired_box_is_updated_only_on_its_own(built: dict[str, Path], tmp_path: Path) -> None:
    conf = system_conf(built["base"], built["keyring"])
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "--config", str(tmp_path / "none.toml"), "update",
                           str(built["bundle"]), "--system-conf", str(conf)], capture_output=True, text=True)
    assert done.returncode == 1 and "not paired" in done.stderr
    assert "--single" in done.stderr and "--check" in done.stderr
    # --single checks the bundle first, then asks the privileged helper to install: on this machine
    # there is none, and it says so (the install itself runs in the VM: tests/test_vm_rack.py).
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "update", "--single", str(built["bundle"]),
                           "--system-conf", str(conf)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "signature good, payload intact" in done.stdout
    assert "calls it carries drop" in done.stderr and "privileged helper" in done.stderr


def _one_line_refusal(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 1, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_bundle_signed_by_another_pki_is_refused(built: dict[str, Path]) -> None:
    foreign = built["base"] / "foreign.raucb"
    done = bundle(built["image"], foreign, built["base"] / "other-pki")
    assert done.returncode == 0, done.stderr
    _one_line_refusal(check(foreign, system_conf(built["base"], built["keyring"])),
                      "refused: not signed by a key this box trusts")


def test_a_bundle_for_another_board_family_is_refused(built: dict[str, Path]) -> None:
    conf = system_conf(built["base"], built["keyring"], compatible="tandem-arm64")
    _one_line_refusal(check(built["bundle"], conf), "it is for 'tandem-x86_64' boards, this box is 'tandem-arm64'")


@pytest.mark.parametrize("cut", ["half", "last-byte"])
def test_a_truncated_bundle_is_refused(built: dict[str, Path], cut: str) -> None:
    data = built["bundle"].read_bytes()
    truncated = built["base"] / f"truncated-{cut}.raucb"
    truncated.write_bytes(data[:len(data) // 2] if cut == "half" else data[:-1])
    _one_line_refusal(check(truncated, system_conf(built["base"], built["keyring"])), "refused: not a whole bundle")


@pytest.mark.parametrize("where", ["payload", "hash tree"])
def test_a_bundle_damaged_after_signing_is_refused_though_rauc_info_takes_it(built: dict[str, Path],
                                                                              where: str) -> None:
    data = bytearray(built["bundle"].read_bytes())
    signature_size = struct.unpack(">Q", data[-8:])[0]
    # The payload's middle, or the hash tree's last byte (block padding: the root hash stays the same).
    at = len(data) // 3 if where == "payload" else len(data) - 8 - signature_size - 1
    data[at] ^= 0x5A
    damaged = built["base"] / f"damaged-{where.replace(' ', '-')}.raucb"
    damaged.write_bytes(bytes(data))
    keyring = built["keyring"]
    assert subprocess.run(["rauc", "info", "--keyring", str(keyring), str(damaged)], capture_output=True).returncode == 0
    readable = subprocess.run(["rauc", "info", "--keyring", str(keyring), "--output-format=readable",
                               str(built["bundle"])], capture_output=True, text=True).stdout
    assert int(re.search(r"Verity Size:\s*(\d+)", readable).group(1)) > 4096  # levels: their order is checked too
    expected = "does not match its signature" if where == "payload" else "its verity hash tree is damaged"
    _one_line_refusal(check(damaged, system_conf(built["base"], keyring)), expected)


def test_what_is_not_a_bundle_is_refused(built: dict[str, Path]) -> None:
    conf = system_conf(built["base"], built["keyring"])
    junk = built["base"] / "junk.raucb"
    junk.write_bytes(os.urandom(64 * 1024))
    _one_line_refusal(check(junk, conf), "junk.raucb: refused")
    _one_line_refusal(check(built["base"] / "missing.raucb", conf), "missing.raucb: no such bundle")


def test_a_box_without_its_rauc_config_says_which_key_is_missing(built: dict[str, Path]) -> None:
    conf = built["base"] / "broken.conf"
    conf.write_text("[system]\nbootloader=grub\n")
    _one_line_refusal(check(built["bundle"], conf), "broken.conf: [system] compatible: missing")
    _one_line_refusal(check(built["bundle"], built["base"] / "absent.conf"), "cannot read RAUC's system config")


def test_a_bundle_too_short_for_its_layout_or_unreadable_is_one_line_too(tmp_path: Path) -> None:
    """The payload check on its own: what `rauc info` would already refuse is still refused, never a traceback."""
    from firmware.update.bundle import UpdateError, Verity, verify_payload

    verity = Verity(salt=b"s", root_hash=bytes(32), tree_size=4096)
    short = tmp_path / "short.raucb"
    short.write_bytes(b"abc")
    with pytest.raises(UpdateError, match="verity layout does not add up"):
        verify_payload(short, verity)
    with pytest.raises(UpdateError, match="cannot read it"):
        verify_payload(tmp_path, verity)  # a directory: the read fails


@pytest.mark.parametrize("rauc_says, words", [
    # RAUC 1.8's words for a signing certificate outside its validity (seen with real bundles).
    ("signature verification failed: Verify error: certificate is not yet valid", "is this box's clock right?"),
    ("signature verification failed: Verify error: certificate has expired", "its signing certificate has expired"),
    ("signature verification failed: Verify error: unable to get local issuer certificate",
     "not signed by a key this box trusts"),
    ("Invalid bundle format: Signature size (123) exceeds bundle size", "not a whole bundle"),
])
def test_rauc_reasons_are_said_in_the_installers_words_first(rauc_says: str, words: str) -> None:
    from firmware.update.bundle import _explain

    explained = _explain(rauc_says)
    assert explained.startswith(words) or words in explained.split(" (rauc: ")[0]
    assert explained.endswith(f"(rauc: {rauc_says})")


def test_a_development_ca_is_never_replaced_when_its_signing_pair_is_missing(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "image"))
    from pki import dev_pki

    first = dev_pki(tmp_path / "pki")
    keyring = first.keyring.read_bytes()
    first.key.unlink()
    with pytest.raises(SystemExit, match="has the CA"):
        dev_pki(tmp_path / "pki")
    assert first.keyring.read_bytes() == keyring
