#!/usr/bin/env python3
"""Build a signed RAUC update bundle from an image build: ``./dev bundle`` runs this.

The bundle (verity format) holds the image build's root file system (``rootfs.ext4``, for the
inactive A/B slot), a manifest naming the board family (``compatible``, the same string the image's
``/etc/rauc/system.conf`` carries, so a box refuses a bundle for another family) and Tandem's
version and build, and ``packages.manifest`` (every Debian package in the slot, with its source
package). It is signed with the development PKI (image/pki.py) unless the maker gives their own
certificate and key; the key may be a PKCS#11 URI (an HSM), which RAUC reads itself.

Output, beside the image by default: ``tandem-<version>-<build>.raucb`` and its
``.packages`` (the manifest, readable without unpacking the bundle).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from disk import run  # noqa: E402  (image/disk.py: one way to run a build step)
from pki import dev_pki  # noqa: E402

MANIFEST = """[update]
compatible={compatible}
version={version}
build={build}
description=Tandem {version} ({build})

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
"""


def build_bundle(rootfs: Path, out: Path, compatible: str, version: str, build: str, cert: Path, key: str,
                 keyring: Path | None = None, packages: Path | None = None) -> dict[str, float]:
    """Sign `rootfs` into the bundle `out` (checked against `keyring` if given); the figures (seconds, MiB).

    SystemExit naming the step if it fails.
    """
    for value, what in ((compatible, "compatible"), (version, "version"), (build, "build")):
        if not value or any(c in value for c in "\n\r[]="):
            raise SystemExit(f"bundle: {what} {value!r}: must be one line without '[', ']' or '='")
    if not rootfs.is_file():
        raise SystemExit(f"bundle: {rootfs}: no root file system image (run ./dev image first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # rauc refuses to overwrite
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tandem-bundle-", dir=out.parent) as scratch:
        content = Path(scratch) / "content"
        content.mkdir()
        # A hard link when the scratch is on the same file system: the slot image is 1 GiB.
        try:
            (content / "rootfs.ext4").hardlink_to(rootfs)
        except OSError:
            shutil.copy(rootfs, content / "rootfs.ext4")
        (content / "manifest.raucm").write_text(MANIFEST.format(compatible=compatible, version=version, build=build))
        if packages is not None:
            shutil.copy(packages, content / "packages.manifest")
        check = ["--keyring", str(keyring)] if keyring is not None else []
        run(["rauc", "bundle", "--cert", str(cert), "--key", key, *check, str(content), str(out)])
    if packages is not None:
        shutil.copy(packages, out.with_suffix(".packages"))
    return {"bundle_build_s": round(time.monotonic() - started, 1),
            "bundle_mib": round(out.stat().st_size / (1 << 20), 1)}


def main(argv: list[str] | None = None) -> int:
    """Command line: build the bundle from an image build's output, print where it is and its figures."""
    parser = argparse.ArgumentParser(description="Build a signed RAUC update bundle from an image build.")
    parser.add_argument("--image", type=Path, default=ROOT / "build/image",
                        help="the image build's output directory (rootfs.ext4, build.json, packages.manifest)")
    parser.add_argument("--out", type=Path, help="the bundle (default: beside the image, named by version and build)")
    parser.add_argument("--cert", type=Path, help="signing certificate (PEM; default: the development PKI's)")
    parser.add_argument("--key", help="signing key: a PEM file or a PKCS#11 URI (default: the development PKI's)")
    parser.add_argument("--keyring", type=Path,
                        help="the CA the boxes trust, to check the signature once built (default: the development PKI's)")
    args = parser.parse_args(argv)
    try:
        build = json.loads((args.image / "build.json").read_text())
        compatible, version, build_id = (str(build[key]) for key in ("compatible", "version", "build"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"bundle: {args.image}/build.json: not an image build with compatible, version and "
                         f"build ({exc}); run ./dev image first") from None
    if shutil.which("rauc") is None:
        raise SystemExit("bundle: rauc is not installed (apt-get install rauc; ./dev bundle installs it)")
    if (args.cert is None) != (args.key is None):
        raise SystemExit("bundle: give --cert and --key together (or neither, for the development PKI)")
    if args.cert is None:
        pki = dev_pki()
        cert, key, keyring = pki.cert, str(pki.key), args.keyring or pki.keyring
    else:
        cert, key, keyring = args.cert, args.key, args.keyring
    out = args.out or args.image / f"tandem-{version}-{build_id}.raucb"
    packages = args.image / "packages.manifest"
    figures = build_bundle(args.image / "rootfs.ext4", out, compatible, version, build_id, cert, key, keyring,
                           packages if packages.is_file() else None)
    print(f"bundle: {out}  {json.dumps(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
