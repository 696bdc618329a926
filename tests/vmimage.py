"""The VM rack's test image, shared by the VM test modules: why the rack cannot run here, and the image fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.vm.qemu import tool_missing
from sim.vm.rack import TEST_IMAGE_ARGS

ROOT = Path(__file__).resolve().parents[1]
IMAGE_OUT = Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image")) / "out-vmtest"


def why_not() -> str | None:
    """Why the VM rack cannot run on this machine (a missing right or tool), or None."""
    if os.geteuid() != 0:
        return "the VM rack needs root (taps in a network namespace, mmdebstrap --mode=root)"
    missing = tool_missing()
    if missing:
        return missing
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun: qemu's tap networking needs it"
    return None


@pytest.fixture(scope="module")
def test_image() -> Path:
    """The VM rack's test image, built by image/build.py (the base root file system is cached)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    command = [sys.executable, str(ROOT / "image/build.py"), "--out", str(IMAGE_OUT), *TEST_IMAGE_ARGS, "--no-xz"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"image build failed:\n{done.stderr[-4000:]}"
    return IMAGE_OUT
