"""The appliance image's figures (issue 15): build times, sizes, the two-VM rack, the unit's exposure.

  rootfs_build_s       the base root file system from a cold cache (mmdebstrap, wheels), seconds
  image_build_s        the whole image with a warm cache after a code change (slot, disk, bmap), seconds
  image_xz_mib         the release image compressed with xz -6 (target <= 120)
  rootfs_used_mib      the slot's root file system in use
  vm_boot_to_active_s  qemu start of both VMs -> one node ACTIVE (boot, network, pairing over the
                       null-modem, config, daemon start); `vm_accel` says KVM or TCG
  vm_powerpull_sip_ms  power pull (SIGKILL qemu) of the ACTIVE VM -> SIP OPTIONS answered on the shared
                       IP from the LAN; median of BENCH_PULLS (default 5) pulls, alternating nodes
  vm_rack_ok           1 when the VM scenarios (`pytest -m vm` and the smoke scenario) all passed
  security_exposure    `systemd-analyze security --offline=true` of tandem.service (target <= 5.0)

Needs root, and the tools `./dev image` installs. Runs long under software emulation (about
20-30 minutes: two image builds, BENCH_PULLS power pulls with a rejoin each, the VM scenarios).
BENCH_SKIP_SCENARIOS=1 leaves out the pytest run (vm_rack_ok is then null).

Usage, from the repository root after the README's setup:
    .venv/bin/python bench/image.py
The last line is JSON with the keys above.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.vm.lab import bring_up  # noqa: E402
from sim.vm.rack import TEST_IMAGE_ARGS, VmRack  # noqa: E402

UNIT = ROOT / "image/overlay/etc/systemd/system/tandem.service"


def build(out: Path, cache: Path, *args: str) -> tuple[float, dict]:
    """Run image/build.py; its wall time and its build.json."""
    started = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "image/build.py"), "--out", str(out), "--cache", str(cache), *args],
                   check=True)
    return time.monotonic() - started, json.loads((out / "build.json").read_text())


def security_exposure() -> float:
    """The unit's overall exposure as systemd-analyze rates it."""
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, check=False)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    if not match:
        raise SystemExit(f"systemd-analyze gave no exposure: {done.stdout[-500:]} {done.stderr[-500:]}")
    return float(match.group(1))


def main() -> int:
    """Measure everything; print the figures, the last line JSON."""
    pulls = int(os.environ.get("BENCH_PULLS", "5"))
    figures: dict[str, object] = {"security_exposure": security_exposure()}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-image-") as scratch:
        cold_cache = Path(scratch) / "cache"
        release = Path(scratch) / "release"
        started = time.monotonic()
        _, result = build(release, cold_cache)
        figures["rootfs_build_s"] = result["base_s"]
        figures["image_xz_mib"] = result["xz_mib"]
        figures["cold_total_s"] = round(time.monotonic() - started, 1)
        # A code change: the slot, disk and bmap are rebuilt on the cached base.
        (ROOT / "firmware/__init__.py").touch()
        warm_s, result = build(release, cold_cache, "--no-xz")
        figures["image_build_s"] = round(warm_s, 1)
        figures["rootfs_used_mib"] = result["rootfs_used_mib"]
        figures["image_allocated_mib"] = result["image_allocated_mib"]
        print(f"release image: {json.dumps(figures)}", flush=True)

        vm_image = Path(scratch) / "vm"
        build(vm_image, Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image")), *TEST_IMAGE_ARGS,
              "--no-xz")
        with VmRack(vm_image, Path(scratch) / "rack") as rack:
            figures["vm_accel"] = rack.accel
            started = time.monotonic()
            active = bring_up(rack)
            figures["vm_boot_to_active_s"] = round(time.monotonic() - started, 1)
            samples = []
            for trial in range(pulls):
                standby = "bravo" if active == "alpha" else "alpha"
                rack.wait_state(standby, "STANDBY", timeout=300)
                took = rack.power_pull_to_sip_ms(active)
                print(f"pull {trial + 1}: {active} pulled, SIP answered after {took} ms", flush=True)
                samples.append(took if took is not None else float("inf"))
                rack.boot((active,))
                rack.wait_state(active, "STANDBY", timeout=300)
                active = standby
            finite = [s for s in samples if s != float("inf")]
            figures["vm_powerpull_sip_ms"] = round(statistics.median(samples), 1) if finite else None
            figures["vm_powerpull_sip_ms_max"] = max(samples) if finite else None
            figures["vm_powerpull_unanswered"] = len(samples) - len(finite)
    if os.environ.get("BENCH_SKIP_SCENARIOS"):
        figures["vm_rack_ok"] = None
    else:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "vm or not vm",
                               str(ROOT / "tests/test_vm_rack.py")], cwd=ROOT)
        figures["vm_rack_ok"] = 1 if done.returncode == 0 else 0
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
