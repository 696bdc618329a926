"""`./dev vmlab`: the two-VM rack for humans: build the test image, boot, pair, run, then take commands.

    ./dev vmlab                    # as root: build (or reuse) the image, boot alpha and bravo, pair them,
                                   # start Tandem with a shared IP and kamailio, wait for one ACTIVE
    vmlab> alpha tandem status     # a shell command on a VM's console (its output is printed)
    vmlab> sip                     # SIP OPTIONS to the shared IP from the LAN: the answer's status
    vmlab> pull alpha              # pull the power of a VM (kill its qemu); `boot alpha` brings it back
    vmlab> states                  # each VM's cluster state
    vmlab> quit                    # power both off and remove the namespace

Everything stays inside a network namespace the lab makes (sim/vm/rack.py); nothing reaches the host's
networks. The VMs run under KVM when it works, else TCG (about a minute per boot).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.vm.qemu import tool_missing
from sim.vm.rack import TEST_IMAGE_ARGS, VmRack

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = Path(os.environ.get("TANDEM_IMAGE_CACHE", "/var/cache/tandem-image")) / "out-vmtest"
NAMES = ("alpha", "bravo")


def build_image(out: Path) -> None:
    """Build (or refresh on the cached base) the VM rack's test image into `out`."""
    subprocess.run([sys.executable, str(ROOT / "image/build.py"), "--out", str(out), *TEST_IMAGE_ARGS, "--no-xz"],
                   check=True)


def bring_up(rack: VmRack) -> str:
    """Boot both VMs, set their ports, pair them, start Tandem; the ACTIVE one's name."""
    started = time.monotonic()
    rack.boot()
    for name in NAMES:
        rack.configure_network(name)
    code = rack.pair()
    print(f"vmlab: paired over the null-modem (code {code} on both consoles)", flush=True)
    for name in NAMES:
        rack.configure(name)
    active = rack.wait_any_active(timeout=300)
    print(f"vmlab: {active} is ACTIVE after {time.monotonic() - started:.0f} s ({rack.accel})", flush=True)
    return active


def execute(rack: VmRack, line: str) -> bool:
    """One command typed at the prompt; False to leave."""
    words = shlex.split(line)
    if not words:
        return True
    verb, rest = words[0], words[1:]
    if verb in ("quit", "exit"):
        return False
    if verb == "sip":
        print(f"SIP OPTIONS to the shared IP: {rack.sip_options(timeout=5) or 'no answer'}")
    elif verb == "states":
        for name in NAMES:
            print(f"{name}: {rack.state(name) if rack.vms[name].running else 'powered off'}")
    elif verb == "pull" and rest and rest[0] in NAMES:
        rack.power_pull(rest[0])
        print(f"{rest[0]}: power pulled")
    elif verb == "boot" and rest and rest[0] in NAMES:
        rack.boot((rest[0],))
        print(f"{rest[0]}: booted to its console")
    elif verb in NAMES and rest:
        _, output = rack.console(verb).run(line.split(None, 1)[1], timeout=300, check=False)
        print(output)
    else:
        print("commands: alpha|bravo COMMAND…, sip, states, pull NAME, boot NAME, quit")
    return True


def main(argv: list[str] | None = None) -> int:
    """Build, bring up, then read commands until `quit` or end of input."""
    parser = argparse.ArgumentParser(description="Two qemu VMs from the appliance image, paired, for humans.")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the test image's directory")
    parser.add_argument("--no-build", action="store_true", help="use the image as it is")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("vmlab: needs root (taps in a network namespace, the image build)", file=sys.stderr)
        return 2
    missing = tool_missing()
    if missing:
        print(f"vmlab: {missing}", file=sys.stderr)
        return 2
    if not args.no_build:
        build_image(args.image)
    with tempfile.TemporaryDirectory(prefix="tandem-vmlab-") as work, VmRack(args.image, Path(work)) as rack:
        bring_up(rack)
        print(__doc__.split("\n\n")[1], flush=True)
        while True:
            try:
                line = input("vmlab> ")
            except EOFError:
                break
            try:
                if not execute(rack, line):
                    break
            except Exception as exc:  # noqa: BLE001 - a failed command is reported; the lab goes on
                print(f"vmlab: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
