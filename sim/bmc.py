"""A simulated BMC for a rack box: OpenIPMI's `ipmi_sim` with an IPMI LAN channel on a loopback port.

The real fence agent (`fence_ipmilan` from fence-agents, which runs
`ipmitool`) talks IPMI 2.0 (lanplus) to it like to any BMC. Chassis power
is `sim.bmcpower`: `ipmi_sim` runs it to read and switch the power, and a
power off is a hard power loss of the box.

    bmc = SimulatedBmc(folder, "alpha", port=16230, spec=rack_power_spec)
    bmc.start()                       # ipmi_sim -c lan.conf -f bmc.emu -s state -n
    bmc.fence_options()               # what the peer's [fencing.device] options need
    bmc.stop()

In a network-namespace rack the BMC runs in the namespace of the node that
fences with it (`namespace`): its loopback is a path that shares nothing with
the LAN or the heartbeat links, as a real BMC's management network must not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sim.netns import popen_in, python_env

USER, PASSWORD = "tandem", "fence-me"
CIPHER = 3  # ipmitool otherwise asks ipmi_sim for its cipher suites, which costs 10 s per run

LAN_CONF = """\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis}"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


def missing_tools() -> list[str]:
    """The Debian packages a fencing test needs and this machine lacks (openipmi, fence-agents, ipmitool)."""
    needed = {"ipmi_sim": "openipmi", "fence_ipmilan": "fence-agents", "ipmitool": "ipmitool"}
    return [package for tool, package in needed.items() if shutil.which(tool) is None]


class SimulatedBmc:
    """One `ipmi_sim` process: the BMC that switches the power of the box `node`."""

    def __init__(self, folder: Path, node: str, port: int, spec: Path, namespace: str | None = None) -> None:
        self.folder, self.node, self.port, self.spec, self.namespace = Path(folder), node, port, spec, namespace
        self.proc: subprocess.Popen | None = None

    def fence_options(self, **extra: Any) -> dict[str, str | int | bool]:
        """The fence_ipmilan options that reach this BMC (for the fencing node's config)."""
        return {"ip": "127.0.0.1", "ipport": self.port, "username": USER, "password": PASSWORD,
                "lanplus": True, "cipher": CIPHER, **extra}

    def start(self, timeout: float = 15.0) -> None:
        """Start ipmi_sim and wait until it answers a power status over IPMI."""
        state = self.folder / "state"
        state.mkdir(parents=True, exist_ok=True)
        chassis = f"{sys.executable} -m sim.bmcpower {self.spec}"
        guid = f"{abs(hash(self.node)) & ((1 << 128) - 1):032x}"
        (self.folder / "lan.conf").write_text(LAN_CONF.format(name=f"tandem-{self.node}", port=self.port, guid=guid,
                                                              chassis=chassis, user=USER, password=PASSWORD))
        (self.folder / "bmc.emu").write_text(EMU)
        argv = ["ipmi_sim", "-c", str(self.folder / "lan.conf"), "-f", str(self.folder / "bmc.emu"),
                "-s", str(state), "-n"]
        log = open(self.folder / "ipmi_sim.log", "ab")
        # ipmi_sim runs the power program with its own environment: the repository must be importable.
        kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": log, "env": python_env(),
                                  "cwd": str(Path(__file__).resolve().parents[1])}
        self.proc = popen_in(self.namespace, argv, **kwargs) if self.namespace else subprocess.Popen(argv, **kwargs)
        log.close()
        deadline = time.monotonic() + timeout
        while self.power() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ipmi_sim for {self.node} did not answer on 127.0.0.1:{self.port} "
                                   f"(see {self.folder / 'ipmi_sim.log'})")
            time.sleep(0.1)

    def ipmitool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ipmitool against this BMC (in its namespace)."""
        argv = ["ipmitool", "-I", "lanplus", "-C", str(CIPHER), "-H", "127.0.0.1", "-p", str(self.port),
                "-U", USER, "-P", PASSWORD, *args]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=20)

    def power(self) -> str | None:
        """"on" or "off" as the BMC reports it over IPMI; None if it does not answer."""
        result = self.ipmitool("chassis", "power", "status")
        if result.returncode != 0:
            return None
        return "on" if result.stdout.strip().endswith("on") else "off"

    def stop(self) -> None:
        """Stop ipmi_sim (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
