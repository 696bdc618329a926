"""One qemu virtual machine booted from Tandem's appliance image, and its serial console.

    vm = Vm(VmSpec(name="alpha", serial="TANDEM-ALPHA", ...), image_dir, workdir)
    vm.start()                       # qemu in the VM rack's namespace; console on a unix socket
    vm.console.wait_for("login:")    # or .run("tandem status") once a shell is up
    vm.power_pull()                  # SIGKILL qemu: the power cord, pulled

The console is ttyS0 (a unix socket chardev); ttyS1 is the serial null-modem to the other VM (a
second socket chardev: one VM is the server, the other connects and reconnects). The kernel is booted
directly (``-kernel``/``-initrd`` from the image build) unless ``boot`` asks for SeaBIOS or OVMF →
GRUB → kernel, the paths a real box takes. Each VM writes to its own qcow2 overlay of the image, so a
power pull and restart keep its data partition, as a real box keeps its disk.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from sim.netns import popen_in

ROOT_PARTUUID_A = "7a4d0000-0000-4000-8000-00000000000a"   # image/disk.py PARTUUID["rootfs-a"]
QEMU = "qemu-system-x86_64"
OVMF = "/usr/share/ovmf/OVMF.fd"   # Debian's ovmf: UEFI firmware for qemu (SeaBIOS is qemu's default BIOS)
PROMPT = re.compile(r"^(?:\S+@\S+:[^#$\n]*[#$] )+")


class VmError(RuntimeError):
    """A VM did not start, or its console did not show what was awaited."""


@dataclass
class VmSpec:
    """What makes one VM of the rack: its name, hardware serial, NICs (tap name, MAC) and null-modem end."""

    name: str
    serial: str
    taps: Sequence[tuple[str, str]]
    nullmodem: Path
    nullmodem_server: bool
    memory_mib: int = 768
    disk_size: str | None = None   # e.g. "4G": a disk larger than the image (first boot grows the data partition)
    boot: str = "kernel"   # "kernel": -kernel/-initrd straight from the image build; "bios": SeaBIOS →
                           # GRUB i386-pc; "uefi": OVMF → GRUB's BOOTX64.EFI (the paths a real box takes)
    extra: list[str] = field(default_factory=list)


def kvm_usable(kernel: Path, timeout: float = 30.0) -> bool:
    """Whether KVM really runs this kernel: boot it with no root and wait for its panic.

    On a nested-virtualisation host /dev/kvm can open and still fail (emulation errors, firmware
    crashes; see the image reference), so opening it proves nothing. A kernel that reaches "VFS: Unable
    to mount root" within `timeout` proves it.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        out = subprocess.run([QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nographic", "-nodefaults",
                              "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
                              "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"],
                             capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return b"Kernel panic" in out.stdout or b"VFS:" in out.stdout


class Console:
    """The VM's serial console (ttyS0): every line it printed, and a root shell to run commands in."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path = path
        self._log = log.open("ab")
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._counter = 0
        self._closed = False
        self._reader: threading.Thread | None = None

    def connect(self, timeout: float = 30.0) -> None:
        """Connect to qemu's console socket (qemu makes it at start)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise VmError(f"no console socket {self.path} after {timeout:g} s") from None
                time.sleep(0.1)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, name=f"console {self.path.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            self._log.write(data)
            self._log.flush()
            with self._cond:
                self._buffer += data.replace(b"\r", b"")
                *whole, rest = self._buffer.split(b"\n")
                self._buffer = bytearray(rest)
                self._lines += [line.decode("utf-8", "replace") for line in whole]
                self._cond.notify_all()

    def text(self) -> str:
        """Everything the console printed so far (whole lines and the current partial line)."""
        with self._cond:
            return "\n".join(self._lines) + "\n" + self._buffer.decode("utf-8", "replace")

    def mark(self) -> int:
        """A position in the console's output: wait_for(..., since=mark) looks only after it."""
        with self._cond:
            return len(self._lines)

    def wait_for(self, pattern: str, timeout: float = 120.0, since: int = 0) -> re.Match[str]:
        """The first match of a regex in a console line (or the partial line) after `since`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[since:] + [self._buffer.decode("utf-8", "replace")]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    tail = "\n".join(self._lines[-15:])
                    raise VmError(f"{self.path.name}: no {pattern!r} within {timeout:g} s; last lines:\n{tail}")
                self._cond.wait(min(remaining, 1.0))

    def find_last(self, pattern: str, since: int = 0) -> int | None:
        """The index (a mark) of the last whole line after `since` that matches a regex, or None."""
        regex = re.compile(pattern)
        with self._cond:
            for index in range(len(self._lines) - 1, since - 1, -1):
                if regex.search(self._lines[index]):
                    return index
        return None

    def send(self, text: str) -> None:
        """Type text at the console."""
        if self._sock is None:
            raise VmError("console not connected")
        self._sock.sendall(text.encode())

    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> tuple[int, str]:
        """Run a shell command at the root prompt; its exit status and output (the lines in between)."""
        self._counter += 1
        tag = f"T{self._counter}x{os.getpid()}"
        start = self.mark()
        # The end marker is printed with the status in digits, so the echoed command line never matches.
        self.send(f"{command}; echo \"<<{tag}:$?>>\"\n")
        match = self.wait_for(rf"<<{tag}:(\d+)>>", timeout=timeout, since=start)
        status = int(match.group(1))
        with self._cond:
            lines = self._lines[start:]
        # The shell's prompt precedes the first output line (echo is off): it is not output.
        body = [PROMPT.sub("", line) for line in lines if tag not in line]
        output = "\n".join(body)
        if check and status != 0:
            raise VmError(f"{command!r} exited {status}:\n{output}")
        return status, output

    def close(self) -> None:
        """Disconnect (the VM keeps running)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._log.close()


class Vm:
    """One VM: started inside a network namespace (its taps live there), powered off by SIGKILL."""

    def __init__(self, spec: VmSpec, image_dir: Path, workdir: Path, namespace: str | None, accel: str) -> None:
        self.spec = spec
        self.image_dir = image_dir.resolve()
        self.workdir = workdir
        self.namespace = namespace
        self.accel = accel
        self.disk = workdir / f"{spec.name}.qcow2"
        self.console_path = workdir / f"{spec.name}.console"
        self.log_path = workdir / f"{spec.name}.console.log"
        self.proc: subprocess.Popen | None = None
        self.console: Console | None = None
        self.started_at = 0.0

    def make_disk(self) -> None:
        """A fresh copy-on-write overlay of the image: a freshly flashed box."""
        self.disk.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image_dir / "tandem.img"),
                        "-F", "raw", str(self.disk), *([self.spec.disk_size] if self.spec.disk_size else [])],
                       check=True)

    def argv(self) -> list[str]:
        """The qemu command line."""
        spec = self.spec
        accel = (["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm"
                 else ["-accel", "tcg,tb-size=128", "-cpu", "max"])
        nullmodem = (f"socket,id=nm,path={spec.nullmodem},server=on,wait=off" if spec.nullmodem_server
                     else f"socket,id=nm,path={spec.nullmodem},reconnect=1")
        argv = [QEMU, "-name", spec.name, "-machine", "q35", *accel, "-m", str(spec.memory_mib), "-smp", "1",
                "-nographic", "-nodefaults", "-no-user-config",
                "-smbios", f"type=1,manufacturer=Tandem,product=qemu-x86,serial={spec.serial}",
                "-drive", f"file={self.disk},if=none,id=d0,format=qcow2,cache=unsafe",
                "-device", "virtio-blk-pci,drive=d0",
                "-chardev", f"socket,id=con,path={self.console_path},server=on,wait=off",
                "-serial", "chardev:con", "-chardev", nullmodem, "-serial", "chardev:nm",
                "-device", "i6300esb", "-action", "watchdog=reset",
                "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]
        for index, (tap, mac) in enumerate(spec.taps):
            argv += ["-netdev", f"tap,id=n{index},ifname={tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{index},mac={mac}"]
        if spec.boot == "uefi":
            argv += ["-bios", OVMF]
        elif spec.boot == "kernel":
            argv += ["-kernel", str(self.image_dir / "vmlinuz"), "-initrd", str(self.image_dir / "initrd.img"),
                     "-append", f"root=PARTUUID={ROOT_PARTUUID_A} ro console=ttyS0,115200 rauc.slot=A panic=10 "
                                "systemd.show_status=1"]
        return argv + spec.extra

    def start(self) -> None:
        """Power the VM on (qemu start) and connect to its console."""
        if self.proc is not None and self.proc.poll() is None:
            raise VmError(f"{self.spec.name} is running already")
        if not self.disk.exists():
            self.make_disk()
        self.console_path.unlink(missing_ok=True)
        stderr = (self.workdir / f"{self.spec.name}.qemu.log").open("ab")
        self.started_at = time.monotonic()
        options = dict(stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
        self.proc = (popen_in(self.namespace, self.argv(), **options) if self.namespace
                     else subprocess.Popen(self.argv(), **options))
        stderr.close()
        if self.console is not None:
            self.console.close()
        self.console = Console(self.console_path, self.log_path)
        try:
            self.console.connect()
        except VmError:
            self.power_pull()
            raise VmError(f"{self.spec.name}: qemu did not start: "
                          f"{(self.workdir / f'{self.spec.name}.qemu.log').read_text()[-2000:]}") from None

    def power_pull(self) -> None:
        """Pull the power: SIGKILL qemu, no shutdown of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def running(self) -> bool:
        """Whether qemu is running."""
        return self.proc is not None and self.proc.poll() is None

    def login(self, timeout: float = 240.0, since: int = 0) -> None:
        """Wait for the autologin root shell on the console (after line `since`); make it quiet and predictable."""
        assert self.console is not None
        self.console.wait_for(r"root@.*[#$] ?$|^root@", timeout=timeout, since=since)
        self.console.send("\n")
        self.console.run("stty -echo cols 250; export SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb; "
                         "dmesg -n 1", timeout=60)

    def login_after_reboot(self, since: int, banner: str = r"Linux version|Welcome to |Tandem slot ",
                           timeout: float = 400.0) -> None:
        """Log in to the system that booted after console line `since` (a reboot, reset or panic began there).

        The old system's last prompt (printed after the command that rebooted it) is not a login: wait
        for the new boot's first words (the kernel's banner, systemd's welcome or GRUB's menu) and for a
        prompt only after them.
        """
        assert self.console is not None
        self.console.wait_for(banner, timeout=timeout, since=since)
        self.login(timeout=timeout, since=self.console.mark())

    def close(self) -> None:
        """Power off and disconnect."""
        self.power_pull()
        if self.console is not None:
            self.console.close()
            self.console = None


def tool_missing() -> str | None:
    """Why the VM rack cannot run here (a missing tool), or None."""
    for tool in (QEMU, "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages qemu-system-x86, qemu-utils)"
    return None
