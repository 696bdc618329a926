"""Update bundles' figures (issue 16): what is built so far is measured, the rest is null.

  bundle_build_s       `image/bundle.py` on the release image's 1 GiB slot (rauc bundle: mksquashfs and
                       the verity hash tree), median of BENCH_RUNS (default 3) builds, seconds
  bundle_mib           the bundle's size
  bundle_check_s       `tandem update --check` of that bundle (signature, family, every payload block
                       against the signed verity root hash), median of BENCH_RUNS, seconds
  bad_bundles_refused  of the wrong bundles `tandem update --check` is shown (signed by another PKI,
                       for another board family, truncated to half, cut by one byte, one payload byte
                       changed after signing, random bytes), how many it refused with one line
  rollback_ok          1 when, on the two-VM rack (sim.vm.update.broken_then_good), the rolling update to a
                       release whose Tandem cannot start stopped with the STANDBY back on its old slot and
                       the ACTIVE never gave up the calls
  rolling_update_s     then the rolling update to the good release: `tandem update` to both VMs on the
                       new slot and marked good, seconds (`accel` says KVM or TCG)
  sip_gap_ms_max       the longest run of SIP OPTIONS to the shared IP (one every 100 ms from the LAN) left
                       unanswered during that update, ms; `handover_ms` is the planned handover inside it
                       (the demote until the updated peer announced ACTIVE, as the ACTIVE timed it)
  broken_update_s      the broken release's update, start to its stop, seconds

Needs root (the image build, the VMs' taps) and the tools `./dev test` installs (rauc, qemu, ovmf). The
development PKI is made in a scratch directory, so the bench signs with keys of its own. One run took
30 minutes on a 2-core machine under software emulation (TCG), 20 of them the VMs' boots, installs and
good gates; BENCH_VM=0 leaves the rolling update out (its figures null).

Usage, from the repository root after the README's setup:
    .venv/bin/python bench/update.py
The last line is JSON with the keys above.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from image import build  # noqa: E402  (bench/image.py: one image build, its time and build.json)


def make_bundle(image: Path, out: Path, pki: Path) -> dict[str, float]:
    """One ./dev bundle run; its figures."""
    done = subprocess.run([sys.executable, str(ROOT / "image/bundle.py"), "--image", str(image), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "TANDEM_PKI_DIR": str(pki)}, check=True)
    return json.loads(done.stdout.split("  ", 1)[1])


def refused(bundle: Path, compatible: str, keyring: Path, scratch: Path) -> bool:
    """Whether `tandem update --check` refuses `bundle` on a box of `compatible` trusting `keyring`, in one line."""
    conf = scratch / f"system-{compatible}.conf"
    conf.write_text(f"[system]\ncompatible={compatible}\nbootloader=grub\n[keyring]\npath={keyring}\n")
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "update", "--check", str(bundle), "--system-conf",
                           str(conf)], capture_output=True, text=True, cwd=ROOT)
    print(f"  {bundle.name} on a {compatible} box: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1


def main() -> int:
    """Measure; print the figures, the last line JSON."""
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    with tempfile.TemporaryDirectory(prefix="tandem-bench-update-", dir="/var/tmp") as name:
        scratch = Path(name)
        image = scratch / "image"
        build(image, Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image")), "--no-xz",
              "--keyring", str(_dev_keyring(scratch / "pki")))
        compatible = json.loads((image / "build.json").read_text())["compatible"]
        times, size = [], 0.0
        for run in range(runs):
            figures = make_bundle(image, scratch / "good.raucb", scratch / "pki")
            print(f"bundle {run + 1}: {figures}", flush=True)
            times.append(figures["bundle_build_s"])
            size = figures["bundle_mib"]
        make_bundle(image, scratch / "foreign.raucb", scratch / "other-pki")
        data = (scratch / "good.raucb").read_bytes()
        (scratch / "half.raucb").write_bytes(data[:len(data) // 2])
        (scratch / "cut.raucb").write_bytes(data[:-1])
        damaged = bytearray(data)
        damaged[len(data) // 3] ^= 0x5A  # inside the squashfs payload: the signature still checks
        (scratch / "damaged.raucb").write_bytes(bytes(damaged))
        del damaged
        (scratch / "junk.raucb").write_bytes(os.urandom(1 << 20))
        del data
        keyring = scratch / "pki/ca.cert.pem"
        checks = []
        for _ in range(runs):
            started = time.monotonic()
            assert not refused(scratch / "good.raucb", compatible, keyring, scratch), "the good bundle was refused"
            checks.append(time.monotonic() - started)
        cases = [(scratch / "foreign.raucb", compatible), (scratch / "good.raucb", "tandem-arm64"),
                 (scratch / "half.raucb", compatible), (scratch / "cut.raucb", compatible),
                 (scratch / "damaged.raucb", compatible),
                 (scratch / "junk.raucb", compatible)]
        count = sum(refused(bundle, family, keyring, scratch) for bundle, family in cases)
        print(f"refused {count} of {len(cases)} wrong bundles", flush=True)
        rolling = (rolling_update(scratch, keyring) if os.environ.get("BENCH_VM", "1") != "0"
                   else {"rolling_update_s": None, "sip_gap_ms_max": None, "rollback_ok": None})
    print(json.dumps({"bundle_build_s": round(statistics.median(times), 1), "bundle_build_s_max": max(times),
                      "bundle_mib": size,
                      "bundle_check_s": round(statistics.median(checks), 2), "bad_bundles_refused": count,
                      "bad_bundles_shown": len(cases), **rolling}))
    return 0


def rolling_update(scratch: Path, keyring: Path) -> dict[str, object]:
    """The two-VM rack's rolling updates (a broken release, then a good one) of the test image, signed by the
    scratch PKI; their figures."""
    from sim.vm.rack import TEST_IMAGE_ARGS
    from sim.vm.update import broken_then_good, make_bundles

    image = scratch / "vm-image"
    build(image, Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image")), "--no-xz",
          "--keyring", str(keyring), *TEST_IMAGE_ARGS)
    bundles = make_bundles(image, scratch, env={**os.environ, "TANDEM_PKI_DIR": str(scratch / "pki")})
    result = broken_then_good(image, bundles, scratch / "rack")
    for kind, run, sip, problems in (("broken", result.broken, result.broken_sip, result.rollback_problems),
                                     ("good", result.good, result.good_sip, result.update_problems)):
        print(f"{kind} release: {run.seconds} s, {run.rolling.get('outcome')} at {run.rolling.get('stage')}; "
              f"SIP: {sip['sent']} sent, {sip['answered']} answered, gaps {sip['gaps'][:5]}; problems: {problems}",
              flush=True)
    handover = result.good.rolling.get("handover_ms")
    return {"rolling_update_s": result.good.seconds if not result.update_problems else None,
            "sip_gap_ms_max": result.good_sip["gap_ms_max"], "handover_ms": handover,
            "rollback_ok": int(not result.rollback_problems), "broken_update_s": result.broken.seconds,
            "broken_sip_gap_ms_max": result.broken_sip["gap_ms_max"], "accel": result.accel}


def _dev_keyring(pki: Path) -> Path:
    """The scratch development PKI's CA (made now), for the image to trust."""
    sys.path.insert(0, str(ROOT / "image"))
    from pki import dev_pki

    return dev_pki(pki).keyring


if __name__ == "__main__":
    sys.exit(main())
