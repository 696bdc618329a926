"""The appliance image on two qemu VMs: pairing over the serial null-modem, power pull, takeover.

`./dev test` runs the smoke scenario (build or reuse the image, boot, pair, power pull, takeover,
rejoin) so CI always proves the image works; the longer scenarios carry the `vm` marker
(`./dev test -m vm`). Needs root (taps in a network namespace, mmdebstrap) and qemu; without them the
tests skip and say which is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmimage import test_image  # noqa: F401  (the module's image fixture)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture
def rack(test_image: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """Two VMs of the test image, wired; powered off and unwired afterwards."""
    from sim.vm.rack import VmRack

    with VmRack(test_image, tmp_path) as vm_rack:
        failed_before = request.session.testsfailed
        yield vm_rack
        if request.session.testsfailed > failed_before:
            print(vm_rack.diagnostics())


def _debugfs(image_dir: Path, command: str) -> str:
    """Run a debugfs request against the built slot image (read-only, no mount)."""
    done = subprocess.run(["debugfs", "-R", command, str(image_dir / "rootfs.ext4")], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("debugfs "))  # its version banner


def test_nothing_unique_is_baked_into_the_image(test_image: Path) -> None:
    """No machine id, random seed, host key, identity or cluster key in the slot: each box makes its own."""
    assert _debugfs(test_image, "cat /etc/machine-id").strip() == ""
    for path in ("/var/lib/systemd/random-seed", "/etc/ssh", "/var/lib/tandem/identity.key",
                 "/var/lib/tandem/box.json"):
        assert "File not found" in _debugfs(test_image, f"stat {path}"), path
    assert "/data/etc/tandem" in _debugfs(test_image, "stat /etc/tandem")   # a link to the data partition
    assert "File not found" in _debugfs(test_image, "stat /usr/bin/apt")    # updates come as bundles only
    build = json.loads((test_image / "build.json").read_text())
    assert build["rootfs_used_mib"] > 0
    # RAUC's view of the slots names the board family the image was built for, and the box trusts
    # bundles through a CA certificate only: the signing key stays with whoever builds bundles.
    assert f"compatible={build['compatible']}" in _debugfs(test_image, "cat /etc/rauc/system.conf")
    keyring = _debugfs(test_image, "cat /etc/rauc/keyring.pem")
    assert "BEGIN CERTIFICATE" in keyring and "PRIVATE KEY" not in keyring
    assert "systemd\t" in (test_image / "packages.manifest").read_text()


def _paired_and_running(rack) -> str:
    """Boot, network, pair, configure both VMs; the name of the ACTIVE one."""
    rack.boot()
    identities = set()
    for name in ("alpha", "bravo"):
        status = rack.console(name).run("tandem status")[1]
        assert "unpaired" in status, status
        # An unpaired box runs `tandem setup` (the panel's "unpaired" and pairing), never the daemon.
        _, units = rack.console(name).run("systemctl is-active tandem-setup.service tandem.service", check=False)
        assert units.split()[-2:] == ["active", "inactive"], units
        identities.add(rack.console(name).run("cat /var/lib/tandem/box.json")[1])
        # First boot grew the 256 MiB data partition to the end of the 4 GiB disk.
        _, size = rack.console(name).run("stat -f -c 'blocks=%b size=%S' /data")
        blocks, block_size = (int(x.split("=")[1]) for x in size.strip().splitlines()[-1].split())
        assert blocks * block_size > 1500 * 2**20, size
        rack.configure_network(name)
    assert len(identities) == 2  # one image, two boxes, two serial numbers and two identity keys
    rack.pair()
    for name in ("alpha", "bravo"):
        rack.configure(name)
    return rack.wait_any_active(timeout=240)


def _change_and_undo_the_lan_port_on_the_active(rack, active: str) -> None:
    """`tandem network set` on the ACTIVE keeps the shared IP; the panel's "Network undo" goes back."""
    from sim.vm.rack import PLANS, SHARED_IP

    plan = next(plan for plan in PLANS if plan.name == active)
    lan = plan.lan
    console = rack.console(active)
    console.run(f"tandem network set lan0 --address {lan} --dns 192.0.2.53")
    console.run("for i in $(seq 60); do networkctl status lan0 | grep -q 192.0.2.53 && break; sleep 0.5; done; "
                "networkctl status lan0 | grep -q 192.0.2.53", timeout=60)
    rack.wait_address(active, "lan0", str(SHARED_IP))  # networkd left the address it did not configure
    assert rack.sip_options(timeout=20) == 200
    assert f"lan0 {lan} dns 192.0.2.53" in rack.status(active)["mgmt_network"]["ports"]
    # What the panel sends: the daemon (user tandem) rewrites the files and has networkd apply them.
    undone = rack.control(active, {"cmd": "network-undo", "source": "cli"})
    assert undone == f"undone: hb0 {plan.hb}; lan0 {lan}"
    console.run("for i in $(seq 60); do networkctl status lan0 | grep -q 192.0.2.53 || break; sleep 0.5; done; "
                "! networkctl status lan0 | grep -q 192.0.2.53", timeout=60)
    rack.wait_address(active, "lan0", str(SHARED_IP))
    assert rack.sip_options(timeout=20) == 200


def test_power_pull_of_the_active_vm_moves_the_calls_to_the_standby(rack) -> None:
    """Smoke scenario: pair over the serial cable, one ACTIVE, power pull, the standby answers SIP."""
    active = _paired_and_running(rack)
    standby = "bravo" if active == "alpha" else "alpha"
    assert rack.sip_options(timeout=20) == 200
    # The unit runs as the unprivileged tandem user.
    _, user = rack.console(active).run("stat -c 'user=%U' /proc/$(systemctl show -P MainPID tandem.service)")
    assert "user=tandem" in user
    # ... and still reads the SMBIOS tables, through the privileged helper (dmidecode needs root).
    inventory = rack.status(active)["inventory"]
    assert inventory["source"] == "dmidecode", inventory
    assert inventory["system"]["serial_number"] == f"TANDEM-{active.upper()}"
    _change_and_undo_the_lan_port_on_the_active(rack, active)
    # The bulk channel pairing set up: mutual TLS over the heartbeat network, each end pinned to the other.
    assert rack.status(active)["bulk"]["listening"] is True
    _, answer = rack.console(standby).run("tandem bulk ping", timeout=60)
    assert f"{active} answers on the bulk channel" in answer
    rack.power_pull(active)
    assert rack.sip_options(timeout=60) == 200
    rack.wait_state(standby, "ACTIVE", timeout=60)
    # The dead box comes back and rejoins as STANDBY: never a second holder.
    rack.boot((active,))
    rack.wait_state(active, "STANDBY", timeout=240)
    assert rack.state(standby) == "ACTIVE"
    assert rack.sip_options(timeout=20) == 200


def _other(name: str) -> str:
    return "bravo" if name == "alpha" else "alpha"


@pytest.mark.vm
def test_a_stopped_daemon_is_killed_by_systemds_watchdog_released_and_rejoins(rack) -> None:
    """SIGSTOP the ACTIVE daemon: the peer takes over once the frozen box let go, which systemd makes happen."""
    active = _paired_and_running(rack)
    standby = _other(active)
    console = rack.console(active)
    console.run("kill -STOP $(systemctl show -P MainPID tandem.service)")
    rack.wait_state(standby, "ACTIVE", timeout=180)
    rack.wait_state(active, "STANDBY", timeout=300)
    _, log = console.run("journalctl -b -u tandem.service --no-pager | grep -c 'Watchdog timeout'", check=False)
    assert int(log.strip().splitlines()[-1]) >= 1, log
    _, released = console.run("journalctl -b -u tandem.service --no-pager | grep -i 'release' | tail -n 5", check=False)
    assert rack.sip_options(timeout=20) == 200
    assert rack.state(standby) == "ACTIVE", released


@pytest.mark.vm
def test_a_hung_kernel_is_reset_by_the_hardware_watchdog_and_says_so(rack) -> None:
    """A kernel that panics and never reboots by itself: the i6300esb resets it; it rejoins; last boot says why."""
    active = _paired_and_running(rack)
    standby = _other(active)
    console = rack.console(active)
    console.run("echo 0 > /proc/sys/kernel/panic")  # a panic that waits forever: only the watchdog can help
    mark = console.mark()
    console.send("echo c > /proc/sysrq-trigger\n")
    rack.wait_state(standby, "ACTIVE", timeout=180)
    rack.vms[active].login_after_reboot(since=mark)
    rack.wait_state(active, "STANDBY", timeout=300)
    assert rack.status(active)["last_boot"]["reason"] == "watchdog reset"
    _, shown = console.run("tandem status | grep Booted")
    assert "watchdog reset" in shown
    assert rack.sip_options(timeout=20) == 200


@pytest.mark.vm
def test_factory_reset_returns_the_box_unpaired_and_it_pairs_again(rack) -> None:
    """Factory reset wipes keys, config and identity; re-pairing (as for a replaced box) brings the pair back
    while the survivor keeps the calls.

    The reset is asked of the daemon as the panel asks it (after its PIN and hold): the unprivileged daemon
    has the privileged helper run `tandem factory-reset --yes`.
    """
    from sim.vm.rack import control_command

    active = _paired_and_running(rack)
    survivor = _other(active)
    console = rack.console(active)
    _, before = console.run("cat /var/lib/tandem/box.json")
    mark = console.mark()
    console.send(control_command({"cmd": "factory-reset", "source": "panel"}) + "\n")
    rack.wait_state(survivor, "ACTIVE", timeout=180)
    # The command's answer (and a prompt) come before the reboot: log in only after the new kernel.
    rack.vms[active].login_after_reboot(since=mark)
    _, status = console.run("tandem status")
    assert "unpaired" in status
    assert console.run("test -e /etc/tandem/cluster.key", check=False)[0] != 0
    _, after = console.run("cat /var/lib/tandem/box.json")
    identity = lambda text: text[text.index('"identity"'):].split('"')[3]  # noqa: E731
    assert identity(after) != identity(before)   # a new key: nothing of the old box survives
    rack.configure_network(active)
    # The survivor keeps the calls while the reset box is paired again (its daemon lends the port).
    rack.pair(survivors=(survivor,))
    assert rack.state(survivor) == "ACTIVE" and rack.sip_options(timeout=20) == 200
    rack.configure(active)
    rack.wait_state(active, "STANDBY", timeout=240)
    assert rack.state(survivor) == "ACTIVE"
    assert rack.sip_options(timeout=20) == 200


@pytest.mark.vm
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_image_boots_through_grub_which_reads_and_writes_its_ab_environment(test_image: Path, tmp_path: Path,
                                                                                 firmware: str) -> None:
    """SeaBIOS → GRUB i386-pc and OVMF → GRUB EFI: both read grubenv (slot A good) and boot slot A,
    and pass on the machine id first boot kept there."""
    from sim.vm.qemu import OVMF, Vm, VmSpec

    built = json.loads((test_image / "build.json").read_text())
    if firmware == "bios" and not built.get("bios_boot"):
        pytest.skip("the image has no BIOS boot code: the build machine could not loop-mount (grub-bios-setup)")
    if firmware == "uefi" and not Path(OVMF).exists():
        pytest.skip(f"no UEFI firmware for qemu at {OVMF} (Debian package ovmf)")
    vm = Vm(VmSpec(f"fw-{firmware}", "TANDEM-FW", [], tmp_path / "nm.sock", nullmodem_server=True, boot=firmware),
            test_image, tmp_path, namespace=None, accel="tcg")
    try:
        vm.start()
        assert vm.console is not None
        # The menu entry's title shows the variables GRUB loaded from the ESP's grubenv.
        vm.console.wait_for(r"Tandem slot A \(OK=1 TRY=0\)", timeout=300)
        vm.login(timeout=400)
        _, cmdline = vm.console.run("cat /proc/cmdline")
        assert "rauc.slot=A" in cmdline
        # GRUB saved its try counter back into the ESP's grubenv (RAUC reads it there).
        vm.console.run("mount | grep -q /boot/efi || mount /boot/efi")
        _, env = vm.console.run("grub-editenv /boot/efi/EFI/BOOT/grubenv list")
        assert "A_OK=1" in env and "A_TRY=0" in env, env
        # First boot kept this boot's machine id there; GRUB hands it to every later boot, so the
        # journal of the boot before (a watchdog reset's evidence) is found with `journalctl -b -1`.
        _, first_id = vm.console.run("cat /etc/machine-id")
        assert f"MACHINE_ID={first_id.strip().splitlines()[-1]}" in env, env
        mark = vm.console.mark()
        vm.console.send("systemctl reboot\n")
        # The shell's prompt after `systemctl reboot` is the old system's: log in after GRUB's menu.
        vm.login_after_reboot(since=mark, banner=r"Tandem slot A")
        _, second_id = vm.console.run("cat /etc/machine-id")
        assert second_id.strip().splitlines()[-1] == first_id.strip().splitlines()[-1]
        _, boots = vm.console.run("journalctl --list-boots --no-pager | wc -l")
        assert int(boots.strip().splitlines()[-1]) >= 2, boots
    finally:
        vm.close()


@pytest.mark.vm
def test_vmlab_brings_the_pair_up_and_takes_commands(test_image: Path) -> None:
    """`./dev vmlab` for humans: the same rack, paired and running, driven from its prompt."""
    done = subprocess.run([sys.executable, "-m", "sim.vm.lab", "--image", str(test_image), "--no-build"],
                          input="states\nsip\nalpha tandem status\nfly away\nquit\n", capture_output=True,
                          text=True, timeout=1200, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "is ACTIVE after" in out and "paired over the null-modem" in out
    assert "SIP OPTIONS to the shared IP: 200" in out
    assert "ACTIVE" in out and "STANDBY" in out
    assert "commands: alpha|bravo" in out  # the unknown command got the help line


@pytest.mark.vm
def test_a_slot_on_trial_boots_once_and_grub_takes_the_box_back_unless_it_passes(test_image: Path,
                                                                                tmp_path: Path) -> None:
    """The real GRUB, RAUC and boot gate: slot A's copy put in slot B on trial boots once; at the
    deadline the box reboots and GRUB passes B over (its try spent): back on A for good, B marked bad.
    Put on trial again and passed, B stays: it boots as a proven slot. (An unpaired box: no Tandem
    daemon passes the gate here; tests/test_good_gate.py has the daemon's side.)"""
    from sim.vm.qemu import Vm, VmSpec

    vm = Vm(VmSpec("trial", "TANDEM-TRIAL", [], tmp_path / "nm.sock", nullmodem_server=True, boot="uefi"),
            test_image, tmp_path, namespace=None, accel="tcg")

    def reboot_into(slot: str, tries: str) -> None:
        mark = vm.console.mark()
        vm.console.send("systemctl reboot\n")
        vm.login_after_reboot(since=mark, banner=rf"Tandem slot {slot} \(OK=1 TRY={tries}\)")
        _, cmdline = vm.console.run("cat /proc/cmdline")
        assert f"rauc.slot={slot}" in cmdline, cmdline

    def gate_log() -> str:
        # The autologin shell may come before the boot gate is done: a start waits for its running job.
        vm.console.run("systemctl start tandem-bootgate.service", timeout=300)
        return vm.console.run("journalctl -b -u tandem-bootgate --no-pager -o cat")[1]

    def put_b_on_trial() -> None:
        vm.console.run("/usr/libexec/tandem/bootgate begin && rauc status mark-active other")

    try:
        vm.start()
        assert vm.console is not None
        vm.login(timeout=400)
        assert "slot A is proven: marked good" in gate_log()
        vm.console.run("dd if=/dev/disk/by-partlabel/rootfs-a of=/dev/disk/by-partlabel/rootfs-b bs=4M "
                       "conv=fsync status=none", timeout=600)
        put_b_on_trial()
        reboot_into("B", tries="1")  # the menu shows the try GRUB just spent on the slot on trial
        assert "slot B is on trial" in gate_log()
        assert vm.console.run("cat /run/tandem-trial")[1].strip().splitlines()[-1] == "B pair"
        # Nobody passes it: the deadline's unit (what tandem-bootgate.timer starts) reboots the box.
        mark = vm.console.mark()
        vm.console.send("systemctl start tandem-bootgate-deadline.service\n")
        vm.login_after_reboot(since=mark, banner=r"Tandem slot A \(OK=1 TRY=0\)")
        assert "rauc.slot=A" in vm.console.run("cat /proc/cmdline")[1]
        assert "slot B was not marked good" in gate_log()
        assert "event=rolled-back" in vm.console.run("cat /var/lib/tandem-update/result")[1]
        env = vm.console.run("mount | grep -q /boot/efi || mount /boot/efi; "
                             "grub-editenv /boot/efi/EFI/BOOT/grubenv list")[1]
        assert "ORDER=A B" in env and "B_OK=0" in env and "TRIAL=" not in env, env
        # On trial again, and this time passed (as Tandem's gate does through the helper): B stays.
        put_b_on_trial()
        reboot_into("B", tries="1")
        vm.console.run("/usr/libexec/tandem/bootgate pass")
        reboot_into("B", tries="0")
        assert "slot B is proven: marked good" in gate_log()
        status = vm.console.run("rauc status --output-format=shell")[1]
        assert "RAUC_SYSTEM_BOOTED_BOOTNAME='B'" in status, status
    finally:
        vm.close()


@pytest.mark.vm
def test_tandem_update_single_installs_a_bundle_through_the_helper_and_boots_it_on_trial(test_image: Path,
                                                                                        tmp_path: Path) -> None:
    """`tandem update --single` on a box: the bundle (built from the test image, signed by the development
    PKI the image trusts) is checked, installed into slot B by RAUC through the privileged helper and the
    boot gate, and booted on trial; passed, B is the box's slot from then on."""
    from sim.vm.qemu import Vm, VmSpec

    bundle = tmp_path / "update.raucb"
    built = subprocess.run([sys.executable, str(ROOT / "image/bundle.py"), "--image", str(test_image),
                            "--out", str(bundle)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    size = bundle.stat().st_size
    stick = tmp_path / "stick.img"  # the bundle as a second disk, padded to whole sectors
    stick.write_bytes(bundle.read_bytes() + bytes(-size % 512))
    spec = VmSpec("single", "TANDEM-SINGLE", [], tmp_path / "nm.sock", nullmodem_server=True, boot="uefi",
                  extra=["-drive", f"file={stick},if=none,id=d1,format=raw,readonly=on",
                         "-device", "virtio-blk-pci,drive=d1"])
    vm = Vm(spec, test_image, tmp_path, namespace=None, accel="tcg")
    try:
        vm.start()
        assert vm.console is not None
        vm.login(timeout=400)
        vm.console.run(f"mkdir -p /var/lib/tandem/inbox && head -c {size} /dev/vdb > /var/lib/tandem/inbox/u.raucb")
        status, out = vm.console.run("tandem update --single --no-reboot /var/lib/tandem/inbox/u.raucb 2>&1",
                                     timeout=1500, check=False)
        assert status == 0, out
        assert "signature good, payload intact" in out and "installed into slot B" in out, out
        env = vm.console.run("grub-editenv /boot/efi/EFI/BOOT/grubenv list")[1]
        assert "ORDER=B A" in env and "TRIAL=B" in env and "TRIAL_MODE=single" in env, env
        mark = vm.console.mark()
        vm.console.send("systemctl reboot\n")
        vm.login_after_reboot(since=mark, banner=r"Tandem slot B \(OK=1 TRY=1\)")
        assert "rauc.slot=B" in vm.console.run("cat /proc/cmdline")[1]
        vm.console.run("systemctl start tandem-bootgate.service", timeout=300)
        assert vm.console.run("cat /run/tandem-trial")[1].strip().splitlines()[-1] == "B single"
        vm.console.run("/usr/libexec/tandem/bootgate pass")
        status_line = vm.console.run("rauc status --output-format=shell")[1]
        assert "RAUC_SYSTEM_BOOTED_BOOTNAME='B'" in status_line and "RAUC_BOOT_PRIMARY='rootfs.1'" in status_line
        assert "event=good" in vm.console.run("cat /var/lib/tandem-update/result")[1]
    finally:
        vm.close()
