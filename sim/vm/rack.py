"""Two qemu VMs booted from the appliance image, wired like a real pair (needs root).

    with VmRack(image_dir, workdir) as rack:
        rack.boot()                          # both VMs, up to their root shells
        rack.pair()                          # `tandem pair` over the serial null-modem, codes compared
        rack.configure()                     # shared IP + PBX (kamailio), then start tandem
        active = rack.wait_active()
        rack.sip_options()                   # SIP OPTIONS to the shared IP from the LAN, answered?

Wiring (all inside namespaces this rack makes and removes):

- LAN: the bridge br0 of a sim.netns switch namespace (192.0.2.254/24, the SIP client and the ARP
  observer live there); each VM's first NIC (lan0, 192.0.2.1 / .2) is a tap on it. The shared IP is
  192.0.2.100.
- heartbeat network: a second bridge hb0 in the same namespace; each VM's second NIC (hb0,
  198.51.100.1 / .2) is a tap on it.
- serial null-modem: a qemu socket chardev between the VMs' ttyS1 (alpha is the server).
- identity: SMBIOS system serial TANDEM-ALPHA / TANDEM-BRAVO, so one image serves both.

The VMs run the test image (``image/build.py --packages tests/vm/packages.txt --overlay
tests/vm/overlay --pbx-unit kamailio.service``): a root shell on the console and kamailio.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.netns import NetnsLab, Sniffer, popen_in, run_in
from sim.vm.qemu import Vm, VmError, VmSpec, kvm_usable

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE_ARGS = ["--packages", str(REPO / "tests/vm/packages.txt"), "--overlay", str(REPO / "tests/vm/overlay"),
                   "--pbx-unit", "kamailio.service"]
"""image/build.py's arguments for the rack's test image (kamailio, root console, stable NIC names)."""

SHARED_IP = ipaddress.IPv4Address("192.0.2.100")
HB_BRIDGE = "hb0"
SIP_PORT = 5060


@dataclass(frozen=True)
class NodePlan:
    """One VM's names and addresses in the rack."""

    name: str
    serial: str
    index: int
    primary: bool

    @property
    def lan(self) -> str:
        """LAN address (CIDR)."""
        return f"192.0.2.{self.index}/24"

    @property
    def hb(self) -> str:
        """Heartbeat network address (CIDR)."""
        return f"198.51.100.{self.index}/24"

    @property
    def macs(self) -> tuple[str, str]:
        """The LAN and heartbeat NICs' MACs (tests/vm/overlay names the ports by them)."""
        return f"52:54:00:7a:00:0{self.index}", f"52:54:00:7b:00:0{self.index}"


PLANS = (NodePlan("alpha", "TANDEM-ALPHA", 1, True), NodePlan("bravo", "TANDEM-BRAVO", 2, False))

NODE_EXTRA = """
# An emulated (TCG) guest busy with its neighbour's boot stalls its loop for a few hundred ms at times:
# a 1 s deadtime keeps the stall fence (deadtime - heartbeat) from firing on that (issue 15's notes).
[timers]
heartbeat_ms = 100
deadtime_ms = 1000

[[shared_ips]]
address = "{shared}/24"
interface = "lan0"

[arbitration]
enabled = true
control = ["192.0.2.254"]
peer_address = "{peer}"

[service]
mode = "cold"
start = ["systemctl", "start", "kamailio.service"]
stop = ["systemctl", "stop", "kamailio.service"]
status = ["systemctl", "is-active", "--quiet", "kamailio.service"]

[update]
# The good gate of a slot on trial (default 60 s): shorter, for the rolling update's tests under emulation.
good_after_s = 30
"""


def control_command(request: dict[str, Any]) -> str:
    """A shell command that sends `request` to a VM's daemon over its control socket and prints the result."""
    code = ("import json; from pathlib import Path; from firmware.config import load_config; "
            "from firmware.core.control import request; "
            "print(json.dumps(request(load_config(Path('/etc/tandem/tandem.toml')).node.control_socket, "
            f"{request!r})))")
    return f"/opt/tandem/bin/python -c \"{code}\""


class SipWatch:
    """A SIP client on the LAN sending OPTIONS to the shared IP all along (sim.vm.sipprobe --watch)."""

    def __init__(self, namespace: str, interval: float) -> None:
        self._probe = popen_in(namespace, [sys.executable, "-m", "sim.vm.sipprobe", str(SHARED_IP), "--watch",
                                           "--interval", str(interval), "--timeout", "14400"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._probe.stdout is not None
        if self._probe.stdout.readline().strip() != "ready":
            self._probe.kill()
            raise VmError("the SIP probe did not start")

    def stop(self) -> dict[str, Any]:
        """Stop sending; what the probe saw (sim.vm.sipprobe.watch: sent, answered, gap_ms_max, gaps)."""
        assert self._probe.stdin is not None and self._probe.stdout is not None
        try:
            self._probe.stdin.write("stop\n")
            self._probe.stdin.flush()
            line = self._probe.stdout.readline()
            if not line.startswith("{"):
                raise VmError(f"the SIP probe ended without its report (exit {self._probe.poll()}): {line!r}")
            return json.loads(line)
        finally:
            self.close()

    def close(self) -> None:
        """End the probe (if it still runs)."""
        if self._probe.poll() is None:
            self._probe.kill()
        self._probe.wait()


class VmRack:
    """Two VMs of the appliance image, their LAN, heartbeat network and serial cable."""

    def __init__(self, image_dir: Path, workdir: Path, accel: str | None = None, firmware: str = "kernel",
                 disks: dict[str, list[Path]] | None = None) -> None:
        """`firmware`: how the VMs boot (VmSpec.boot: "kernel" straight in, or "bios": SeaBIOS and GRUB, which
        an update's A/B switch needs); `disks`: read-only raw disks for a VM (its /dev/vdb, /dev/vdc, …), by name.

        Not "uefi": OVMF makes both COM1 and COM2 its consoles, and COM2 is the null-modem, so two VMs in
        OVMF type their screens into each other (and a running peer's heartbeats are keystrokes to a VM in
        OVMF). hardware_docs/appliance-image.md says the same to integrators of UEFI boxes."""
        if firmware == "uefi":
            raise VmError("the VM rack boots through SeaBIOS ('bios'), not OVMF: OVMF takes COM2, the null-modem, "
                          "for a console")
        self.image_dir = image_dir
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.accel = accel or ("kvm" if kvm_usable(image_dir / "vmlinuz") else "tcg")
        self.lab = NetnsLab(nodes=0, prefix="tvm")
        self.namespace = self.lab.switch
        try:
            run_in(self.namespace, ["ip", "link", "add", HB_BRIDGE, "type", "bridge", "stp_state", "0"])
            run_in(self.namespace, ["ip", "link", "set", HB_BRIDGE, "up"])
            nullmodem = workdir / f"nullmodem-{secrets.token_hex(2)}.sock"
            self.vms: dict[str, Vm] = {}
            for plan in PLANS:
                taps = []
                for bridge, kind, mac in (("br0", "lan", plan.macs[0]), (HB_BRIDGE, "hb", plan.macs[1])):
                    tap = f"{plan.name[0]}-{kind}"
                    run_in(self.namespace, ["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
                    run_in(self.namespace, ["ip", "link", "set", tap, "master", bridge, "up"])
                    taps.append((tap, mac))
                extra = []
                for index, disk in enumerate((disks or {}).get(plan.name, []), start=1):
                    extra += ["-drive", f"file={disk},if=none,id=d{index},format=raw,readonly=on",
                              "-device", f"virtio-blk-pci,drive=d{index}"]
                spec = VmSpec(plan.name, plan.serial, taps, nullmodem, nullmodem_server=plan.primary, disk_size="4G",
                              boot=firmware, extra=extra)
                self.vms[plan.name] = Vm(spec, image_dir, workdir, self.namespace, self.accel)
        except BaseException:
            self.lab.close()
            raise

    # ---- power

    def boot(self, names: tuple[str, ...] = ("alpha", "bravo"), timeout: float = 300.0) -> None:
        """Power on the named VMs (alpha first: it serves the null-modem socket) and wait for their shells."""
        for name in names:
            self.vms[name].start()
        for name in names:
            self.vms[name].login(timeout=timeout)

    def power_pull(self, name: str) -> None:
        """SIGKILL the VM's qemu."""
        self.vms[name].power_pull()

    # ---- setting up

    def configure_network(self, name: str) -> None:
        """The VM's management and heartbeat addresses, set as an integrator does: `tandem network set`."""
        plan = self._plan(name)
        console = self.console(name)
        console.run(f"tandem network set lan0 --address {plan.lan} && tandem network set hb0 --address {plan.hb}")
        self.wait_address(name, "hb0", plan.hb)
        self.wait_address(name, "lan0", plan.lan)

    def wait_address(self, name: str, port: str, address: str, present: bool = True, timeout: float = 60.0) -> None:
        """Wait until `address` (``192.0.2.1/24`` or bare) is on (or gone from) the VM's `port`."""
        bare = address.split("/")[0]
        want = "" if present else "!"
        self.console(name).run(f"for i in $(seq {int(timeout * 2)}); do {want} ip -o addr show {port} | "
                               f"grep -q ' {bare}/' && break; sleep 0.5; done; "
                               f"{want} ip -o addr show {port} | grep -q ' {bare}/'", timeout=timeout + 30)

    def pair(self, timeout: float = 180.0, survivors: tuple[str, ...] = ()) -> str:
        """Pair the two VMs over the null-modem with `tandem pair`; both show one code, confirmed on both.

        `survivors`: VMs that stay paired and running (`--force`, no new config): their daemons lend the
        serial port to the pairing and take the new key without a restart.
        """
        marks = {}
        for plan in PLANS:
            console = self.console(plan.name)
            marks[plan.name] = console.mark()
            options = " --primary" if plan.primary else ""
            options += (" --force" if plan.name in survivors
                        else " --board qemu-x86 --write-config /etc/tandem/tandem.toml")
            console.send(f"tandem pair /dev/ttyS1 --node {plan.name}{options} "
                         f"--address {plan.hb.split('/')[0]}:694 --timeout {timeout:g}\n")
        codes = {name: self.console(name).wait_for(r"pairing code: (\d{3} \d{3})", timeout=timeout,
                                                    since=marks[name]).group(1) for name in marks}
        if len(set(codes.values())) != 1:
            raise VmError(f"the two VMs show different pairing codes: {codes}")
        for name in marks:
            self.console(name).wait_for(r"same code\? \[y/N\]", timeout=30, since=marks[name])
            self.console(name).send("y\n")
        for name in marks:
            self.console(name).wait_for(r"paired with '", timeout=timeout, since=marks[name])
        return next(iter(codes.values()))

    def configure(self, name: str) -> None:
        """Add the shared IP and the PBX to the paired config, check it, start Tandem."""
        console = self.console(name)
        peer = next(plan for plan in PLANS if plan.name != name)
        extra = NODE_EXTRA.format(shared=SHARED_IP, peer=peer.lan.split("/")[0]).replace("\n", "\\n").replace('"', '\\"')
        console.run(f"printf \"{extra}\" >> /etc/tandem/tandem.toml")
        console.run("tandem check-config /etc/tandem/tandem.toml > /dev/null")
        console.run("systemctl start tandem.service", timeout=120)

    # ---- looking

    def console(self, name: str):  # noqa: ANN201 - sim.vm.qemu.Console
        """The VM's console."""
        console = self.vms[name].console
        if console is None:
            raise VmError(f"{name} is not running")
        return console

    def control(self, name: str, request: dict[str, Any]) -> Any:
        """One control request to the VM's daemon over its socket (as the panel sends it); its result."""
        _, out = self.console(name).run(control_command(request), timeout=120)
        return json.loads(out.strip().splitlines()[-1])

    def status(self, name: str) -> dict[str, Any]:
        """`tandem status --json` on the VM."""
        _, out = self.console(name).run("tandem status --json | tr -d '\\n'; echo", timeout=60)
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise VmError(f"{name}: no status in {out!r}")

    def events(self, name: str, since: int = 0, kinds: str = ".*") -> list[dict[str, Any]]:
        """The VM's journal records after id `since` whose kind matches the regex `kinds` (`tandem events --json`)."""
        _, out = self.console(name).run(f"tandem events --json --since {since} | grep -E '\"kind\": \"({kinds})\"'",
                                        timeout=120, check=False)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def state(self, name: str) -> str:
        """The VM's cluster state (ACTIVE, STANDBY, …), or the error text if it has none."""
        try:
            return str(self.status(name).get("state"))
        except (VmError, ValueError) as exc:
            return f"unknown ({exc})"

    def wait_state(self, name: str, state: str, timeout: float = 180.0) -> None:
        """Wait until the VM reports `state`."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.state(name)
            if seen == state:
                return
            time.sleep(1.0)
        raise VmError(f"{name} is not {state} after {timeout:g} s (last: {seen})")

    def wait_any_active(self, timeout: float = 240.0) -> str:
        """Wait until one VM is ACTIVE and the other STANDBY; the ACTIVE one's name."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {name: self.state(name) for name in self.vms}
            if sorted(states.values()) == ["ACTIVE", "STANDBY"]:
                return next(name for name, state in states.items() if state == "ACTIVE")
            time.sleep(1.0)
        raise VmError(f"no ACTIVE/STANDBY pair after {timeout:g} s: {states}")

    def sip_options(self, timeout: float = 2.0) -> int | None:
        """Send one SIP OPTIONS to the shared IP from the LAN; the answer's status code, or None."""
        done = run_in(self.namespace, [sys.executable, "-m", "sim.vm.sipprobe", str(SHARED_IP), "--timeout",
                                       str(timeout)], check=False, timeout=timeout + 30)
        match = re.search(r'"status": (\d+)', done.stdout)
        return int(match.group(1)) if match else None

    def sip_watch(self, interval: float = 0.1) -> "SipWatch":
        """SIP OPTIONS to the shared IP from the LAN every `interval` s until `stop()`, which returns the gaps."""
        return SipWatch(self.namespace, interval)

    def power_pull_to_sip_ms(self, name: str, timeout: float = 60.0) -> float | None:
        """Pull the power of VM `name`; ms until SIP OPTIONS to the shared IP is answered again (None: never).

        The probe runs in the LAN namespace, armed before the pull, and sends every 20 ms from the
        moment qemu is dead. CLOCK_MONOTONIC is shared by all namespaces, so the two times compare.
        """
        probe = popen_in(self.namespace, [sys.executable, "-m", "sim.vm.sipprobe", str(SHARED_IP), "--timeout",
                                          str(timeout), "--interval", "0.02", "--go-on-stdin"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert probe.stdin is not None and probe.stdout is not None
        try:
            if probe.stdout.readline().strip() != "ready":
                raise VmError("the SIP probe did not start")
            self.power_pull(name)
            pulled = time.monotonic()
            probe.stdin.write("go\n")
            probe.stdin.flush()
            result = json.loads(probe.stdout.readline())
        finally:
            probe.kill()
            probe.wait()
        if result["status"] != 200:
            return None
        return round((result["answered_mono"] - pulled) * 1000, 1)

    def diagnostics(self) -> str:
        """What a failed scenario needs for its report: each running VM's journal of Tandem and events."""
        parts = []
        for name, vm in self.vms.items():
            if not vm.running or vm.console is None:
                parts.append(f"== {name}: not running")
                continue
            for command in ("tandem events | tail -n 40", "journalctl -b --no-pager -n 60 -u tandem -u kamailio",
                            "journalctl -b --no-pager -n 40 -u tandem-firstboot -u tandem-setup",
                            "ip -br addr", "systemctl --failed --no-legend"):
                try:
                    _, out = vm.console.run(command, timeout=60, check=False)
                except VmError as exc:
                    out = f"(failed: {exc})"
                parts.append(f"== {name}: {command}\n{out}")
        return "\n".join(parts)

    def sniffer(self) -> Sniffer:
        """An ARP observer on the LAN bridge."""
        return self.lab.sniffer()

    def _plan(self, name: str) -> NodePlan:
        return next(plan for plan in PLANS if plan.name == name)

    def close(self) -> None:
        """Power both VMs off and remove the namespaces and taps."""
        for vm in getattr(self, "vms", {}).values():
            vm.close()
        self.lab.close()

    def __enter__(self) -> "VmRack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
