"""The rolling update on the two-VM rack: the bundle on a stick, a deliberately broken release, and the
update followed from start to end (tests/test_vm_update.py and bench/update.py run it).

    stick, size = bundle_stick(bundle, workdir)                # the bundle as a raw disk (the VM's /dev/vdb)
    with VmRack(image, workdir, firmware="bios", disks={"alpha": [stick]}) as rack:
        active = paired_and_running(rack)
        path = copy_from_stick(rack, active, "/dev/vdb", size, "tandem.raucb")   # `tandem update` stages it
        watch = rack.sip_watch(0.1)
        run = follow_rolling_update(rack, active, path)
        gaps = watch.stop()

The VMs boot through SeaBIOS and GRUB (an update switches the A/B slot GRUB boots; sim.vm.rack.VmRack says
why not OVMF). A VM's reboot is seen on its console: at each boot GRUB says which slot it starts
("Booting `Tandem slot A (OK=1 TRY=0)'").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.vm.qemu import VmError
from sim.vm.rack import REPO, VmRack

ONE_FAILOVER_MS = 15_000.0
"""Under emulation a planned handover (the PBX stopped on one VM, the address moved, the PBX started on the
other) takes seconds, and a failover longer (the deadtime first): a SIP gap this long is not one handover."""

GRUB_BOOTS = r"Booting `Tandem slot [AB] "
"""What a VM's console shows at each boot (GRUB's line as it starts the slot's kernel): the sign that it rebooted."""

BROKEN_DROPIN = """# A deliberately broken release (the VM rack's rollback test): the daemon is started with its
# heartbeat key path pointing at no file, so it refuses to start (exit 78, not restarted).
[Service]
ExecStartPre=/bin/sh -c 'sed "s|^key_file = .*|key_file = \\\\"/etc/tandem/no-such.key\\\\"|" /etc/tandem/tandem.toml > /run/tandem/broken.toml'
ExecStart=
ExecStart=/usr/local/bin/tandem --config /run/tandem/broken.toml run
"""


def bundle_stick(bundle: Path, workdir: Path) -> tuple[Path, int]:
    """The bundle as a raw disk image (padded to whole sectors) for a VM's second drive; its size in bytes."""
    size = bundle.stat().st_size
    stick = workdir / f"{bundle.stem}.stick"
    with bundle.open("rb") as source, stick.open("wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
        target.write(bytes(-size % 512))
    return stick, size


def copy_from_stick(rack: VmRack, name: str, device: str, size: int, file_name: str) -> str:
    """Copy the bundle on the VM's stick `device` to /var/tmp/`file_name` (on the data partition: the slot is
    read-only), as an installer would; its path. `tandem update` copies it into the inbox."""
    path = f"/var/tmp/{file_name}"
    rack.console(name).run(f"head -c {size} {device} > {path}", timeout=600)
    return path


def broken_release(image_dir: Path, out: Path) -> Path:
    """An image build like `image_dir` whose slot's Tandem cannot start (BROKEN_DROPIN), version ``+broken``.

    The slot image is copied and changed with debugfs (no mount); `image/bundle.py --image out` makes its
    bundle."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", str(image_dir / "rootfs.ext4"), str(out / "rootfs.ext4")], check=True)
    shutil.copy(image_dir / "packages.manifest", out / "packages.manifest")
    build = json.loads((image_dir / "build.json").read_text())
    build["version"] = f"{build['version']}+broken"
    (out / "build.json").write_text(json.dumps(build, indent=2))
    dropin = out / "broken.conf"
    dropin.write_text(BROKEN_DROPIN)
    directory = "/etc/systemd/system/tandem.service.d"
    requests = f"mkdir {directory}\nwrite {dropin} {directory}/broken.conf\n"
    done = subprocess.run(["debugfs", "-w", "-f", "-", str(out / "rootfs.ext4")], input=requests, text=True,
                          capture_output=True)
    check = subprocess.run(["debugfs", "-R", f"cat {directory}/broken.conf", str(out / "rootfs.ext4")],
                           capture_output=True, text=True)
    if done.returncode != 0 or "no-such.key" not in check.stdout:
        raise VmError(f"could not write the broken drop-in into the slot image: {done.stderr}{check.stderr}")
    return out


def make_bundles(image_dir: Path, workdir: Path, env: dict[str, str] | None = None) -> dict[str, Path]:
    """The ``good`` bundle (the image's slot) and the ``broken`` one (:func:`broken_release`), built by
    image/bundle.py (`env`: its environment, e.g. TANDEM_PKI_DIR for the signing PKI)."""
    made = {}
    for kind, image in (("good", image_dir), ("broken", broken_release(image_dir, workdir / "broken-image"))):
        made[kind] = workdir / f"{kind}.raucb"
        done = subprocess.run([sys.executable, str(REPO / "image/bundle.py"), "--image", str(image), "--out",
                               str(made[kind])], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise VmError(f"image/bundle.py failed for the {kind} bundle: {done.stderr[-3000:]}")
    return made


def paired_and_running(rack: VmRack) -> str:
    """Boot both VMs, set their networks, pair them over the null-modem, start Tandem; the ACTIVE one's name."""
    rack.boot(timeout=600)
    for name in rack.vms:
        rack.configure_network(name)
    rack.pair()
    for name in rack.vms:
        rack.configure(name)
    return rack.wait_any_active(timeout=300)


@dataclass
class RollingRun:
    """What following one rolling update saw."""

    started_mono: float
    ended_mono: float = 0.0
    rolling: dict[str, Any] = field(default_factory=dict)    # the starter's ``update.rolling`` at the end
    stages: dict[str, float] = field(default_factory=dict)   # stage -> when it was first seen (monotonic)
    relogins: dict[str, int] = field(default_factory=dict)   # VM -> logins after a reboot seen on its console

    @property
    def seconds(self) -> float:
        """From the start command to the end of the update."""
        return round(self.ended_mono - self.started_mono, 1)


def start_rolling_update(rack: VmRack, starter: str, bundle: str) -> tuple[RollingRun, dict[str, int]]:
    """`tandem update --detach BUNDLE` on the ACTIVE VM `starter`; the run, and each VM's console mark before it."""
    since = {name: rack.console(name).mark() for name in rack.vms}
    run = RollingRun(time.monotonic(), relogins={name: 0 for name in rack.vms})
    rack.console(starter).run(f"tandem update --detach {bundle}", timeout=600)
    return run, since


def await_rolling_update(rack: VmRack, starter: str, run: RollingRun, since: dict[str, int],
                         timeout: float = 3600.0) -> RollingRun:
    """Follow the starter's ``update.rolling`` status (logging in again after its own reboot) until the update
    ends; both VMs are logged in at the end (after a reboot since their console marks `since`)."""
    deadline = run.started_mono + timeout
    while time.monotonic() < deadline:
        since[starter] = _login_if_rebooted(rack, starter, since[starter], run)
        try:
            rolling = (rack.status(starter).get("update") or {}).get("rolling") or {}
        except VmError:  # rebooting (its console went quiet), or its daemon is between two runs
            try:  # no typing while the box may be in GRUB's menu: a key there stops its countdown
                rack.console(starter).wait_for(GRUB_BOOTS, timeout=120, since=since[starter])
            except VmError:
                pass
            continue
        now = time.monotonic()
        run.stages.setdefault(str(rolling.get("stage")), now)
        if rolling.get("outcome") is not None:
            run.rolling, run.ended_mono = rolling, now
            break
        time.sleep(2.0)
    else:
        raise VmError(f"the rolling update did not end within {timeout:g} s (stages seen: {run.stages})")
    for name in rack.vms:
        _login_if_rebooted(rack, name, since[name], run)
    return run


def follow_rolling_update(rack: VmRack, starter: str, bundle: str, timeout: float = 3600.0) -> RollingRun:
    """`tandem update --detach BUNDLE` on the ACTIVE VM `starter`, followed until the update ends."""
    run, since = start_rolling_update(rack, starter, bundle)
    return await_rolling_update(rack, starter, run, since, timeout)


def install_percent(rack: VmRack, name: str) -> int:
    """How far RAUC's install on the VM is (its D-Bus Progress property), percent; 0 when none runs."""
    _, out = rack.console(name).run("busctl get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer "
                                    "Progress", timeout=120, check=False)
    match = re.search(r"\(isi\) (\d+)", out)
    return int(match.group(1)) if match else 0


def power_pulled_update(rack: VmRack, starter: str, bundle: str, when: str, timeout: float = 3600.0) -> RollingRun:
    """A rolling update during which the STANDBY loses power and gets it back at once: `when` is ``install``
    (RAUC has written a third of its new slot) or ``first-boot`` (it has booted into the new slot on trial and
    its shell is up). Followed until the update ends."""
    peer = next(name for name in rack.vms if name != starter)
    run, since = start_rolling_update(rack, starter, bundle)
    deadline = time.monotonic() + timeout
    if when == "install":
        while install_percent(rack, peer) < 33:
            if time.monotonic() > deadline:
                raise VmError(f"{peer}'s install did not get a third of the way within {timeout:g} s")
            time.sleep(0.5)
    elif when == "first-boot":
        rack.console(peer).wait_for(GRUB_BOOTS, timeout=timeout, since=since[peer])
        rack.vms[peer].login(timeout=900, since=rack.console(peer).find_last(GRUB_BOOTS, since[peer]) or 0)
        _, cmdline = rack.console(peer).run("cat /proc/cmdline")
        if "rauc.slot=B" not in cmdline:
            raise VmError(f"{peer} did not boot its new slot B: {cmdline}")
    else:
        raise ValueError(f"when: install or first-boot, not {when!r}")
    rack.power_pull(peer)
    rack.vms[peer].start()
    rack.vms[peer].login(timeout=900)
    since[peer] = rack.console(peer).mark()
    return await_rolling_update(rack, starter, run, since, timeout)


def _login_if_rebooted(rack: VmRack, name: str, since: int, run: RollingRun) -> int:
    """Log in to VM `name` again if it rebooted after console line `since` (once, after its last boot);
    the console line to look after from now on."""
    vm = rack.vms[name]
    console = rack.console(name)
    booted = console.find_last(GRUB_BOOTS, since)
    if booted is None:
        return since
    run.relogins[name] += 1
    vm.login(timeout=900, since=booted)
    return console.mark()


def booted_slot(rack: VmRack, name: str) -> dict[str, str]:
    """RAUC's view of the VM's slots: the booted slot's bootname and each slot's boot status."""
    _, out = rack.console(name).run("rauc status --output-format=shell", timeout=120)
    booted, slots = rauc_slots(out)
    return {"booted": booted, **slots}


def rauc_slots(shell: str) -> tuple[str, dict[str, str]]:
    """From `rauc status --output-format=shell`: the booted slot's bootname ("?" if none) and each slot's boot
    status by bootname."""
    values = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
    values = {key: value.strip("'") for key, value in values.items()}
    slots = {values[f"RAUC_SLOT_BOOTNAME_{i}"]: values[f"RAUC_SLOT_BOOT_STATUS_{i}"]
             for i in values.get("RAUC_SLOTS", "").split()}
    return values.get("RAUC_SYSTEM_BOOTED_BOOTNAME", "?"), slots


def updated_under_sip(rack: VmRack, starter: str, bundle: str, interval: float = 0.1, timeout: float = 3600.0,
                      power_pull: str | None = None) -> tuple[RollingRun, dict[str, Any]]:
    """One rolling update (:func:`follow_rolling_update`, or with `power_pull` :func:`power_pulled_update` at
    that moment) with a SIP client on the LAN sending OPTIONS to the shared IP every `interval` s from before
    its start until the pair is settled after it; the run and what the client saw (sim.vm.sipprobe.watch:
    sent, answered, gap_ms_max, gaps)."""
    watch = rack.sip_watch(interval)
    try:
        run = (follow_rolling_update(rack, starter, bundle, timeout) if power_pull is None
               else power_pulled_update(rack, starter, bundle, power_pull, timeout))
        rack.wait_any_active(timeout=600)
    finally:
        gaps = watch.stop()
    return run, gaps


def rollback_problems(rack: VmRack, active: str, run: RollingRun, before: dict[str, Any],
                      why: str = "rolled-back (Tandem could not run on it)") -> list[str]:
    """What went wrong with an update started on `active` (`before`: :func:`pair_before` it) that the peer must
    not have kept: it must stop at peer-boot, saying the peer did not keep the new slot (`why`: the boot gate's
    event and cause), the peer back on its old slot as STANDBY, and `active` never changed state nor installed
    anything (its slots and boot gate result as before). Empty: it rolled back and the pair kept the calls."""
    standby = next(name for name in rack.vms if name != active)
    problems = []
    if run.rolling.get("outcome") != "failed" or run.rolling.get("stage") != "peer-boot":
        problems.append(f"the update did not stop at peer-boot: {run.rolling}")
    if f"{standby} did not keep the new slot ({why}" not in str(run.rolling.get("reason")):
        problems.append(f"the reason does not say {standby} did not keep the new slot ({why}…): "
                        f"{run.rolling.get('reason')}")
    changes = rack.events(active, before["event_id"], kinds="state")
    if changes:
        problems.append(f"{active} changed state during the update: {changes}")
    try:
        rack.wait_state(standby, "STANDBY", timeout=600)
    except VmError as exc:
        problems.append(str(exc))
    if rack.state(active) != "ACTIVE":
        problems.append(f"{active} is not ACTIVE after the update")
    slots = booted_slot(rack, standby)
    if slots != {"booted": "A", "A": "good", "B": "bad"}:
        problems.append(f"{standby}'s slots: {slots}, not back on A with B marked bad")
    after = pair_before(rack, active)
    if after["slots"] != before["slots"] or after["last"] != before["last"]:
        problems.append(f"{active} installed something: slots and boot gate result {after}, before {before}")
    return problems


def pair_before(rack: VmRack, active: str) -> dict[str, Any]:
    """What :func:`rollback_problems` compares with: `active`'s newest journal id, its slots and its boot gate's
    last result."""
    return {"event_id": rack.control(active, {"cmd": "state"})["event_id"], "slots": booted_slot(rack, active),
            "last": (rack.status(active).get("update") or {}).get("last")}


def update_problems(rack: VmRack, starter: str, run: RollingRun, gaps: dict[str, Any], one_failover_ms: float) -> list[str]:
    """What went wrong with a good release's rolling update started on `starter`: it must be done, both VMs on
    the new slot B and marked good (the starter rebooted once, into it), the shared IP answering, and no SIP
    gap as long as `one_failover_ms`. Empty: the pair was updated and the calls moved only in the handover."""
    problems = []
    if run.rolling.get("outcome") != "done":
        problems.append(f"the update did not end done: {run.rolling}")
    if run.relogins.get(starter) != 1:
        problems.append(f"{starter} rebooted {run.relogins.get(starter)} times, not once")
    for name in rack.vms:
        slots = booted_slot(rack, name)
        if slots != {"booted": "B", "A": "good", "B": "good"}:
            problems.append(f"{name}'s slots: {slots}, not B booted and both good")
        last = (rack.status(name).get("update") or {}).get("last") or {}
        if last.get("event") != "good":
            problems.append(f"{name}'s boot gate's last result is not good: {last}")
    if rack.sip_options(timeout=20) != 200:
        problems.append("the shared IP does not answer SIP OPTIONS after the update")
    long_gaps = [gap for gap in gaps["gaps"] if gap["ms"] >= one_failover_ms]
    if long_gaps or not gaps["answered"]:
        problems.append(f"SIP gaps of one failover ({one_failover_ms:g} ms) or more: {long_gaps or gaps}")
    return problems


@dataclass
class PairUpdates:
    """The broken release's update and then the good release's, on one pair (:func:`broken_then_good`)."""

    accel: str
    broken: RollingRun
    broken_sip: dict[str, Any]
    rollback_problems: list[str]
    good: RollingRun
    good_sip: dict[str, Any]
    update_problems: list[str]


def broken_then_good(image: Path, bundles: dict[str, Path], workdir: Path,
                     one_failover_ms: float = ONE_FAILOVER_MS, interval: float = 0.1) -> PairUpdates:
    """On a fresh pair of VMs of `image` (booted through SeaBIOS and GRUB): a rolling update to the ``broken``
    bundle (its Tandem cannot start), then one to the ``good`` bundle, each under a SIP client; what each
    did and what went wrong (problem lists: empty when all went as it must). Prints the VMs' diagnostics
    when something went wrong."""
    workdir.mkdir(parents=True, exist_ok=True)
    sticks = {kind: bundle_stick(path, workdir) for kind, path in bundles.items()}
    disks = [sticks["broken"][0], sticks["good"][0]]  # /dev/vdb, /dev/vdc
    with VmRack(image, workdir, firmware="bios", disks={name: disks for name in ("alpha", "bravo")}) as rack:
        try:
            active = paired_and_running(rack)
            broken = copy_from_stick(rack, active, "/dev/vdb", sticks["broken"][1], "broken.raucb")
            good = copy_from_stick(rack, active, "/dev/vdc", sticks["good"][1], "good.raucb")
            # The broken release: the STANDBY tries it once and comes back; the ACTIVE keeps the calls.
            before = pair_before(rack, active)
            broken_run, broken_sip = updated_under_sip(rack, active, broken, interval)
            rolled_back = rollback_problems(rack, active, broken_run, before)
            if not broken_sip["answered"] or broken_sip["gap_ms_max"] >= one_failover_ms:
                rolled_back.append(f"the shared IP went unanswered during the broken release's update: {broken_sip}")
            # The good release: the STANDBY first, the planned handover, then the other VM.
            good_run, good_sip = updated_under_sip(rack, active, good, interval)
            updated = update_problems(rack, active, good_run, good_sip, one_failover_ms)
        except BaseException:
            print(rack.diagnostics())
            raise
        if rolled_back or updated:
            print(rack.diagnostics())
        return PairUpdates(rack.accel, broken_run, broken_sip, rolled_back, good_run, good_sip, updated)
