"""A simulated box's power, switched by its simulated BMC: the `chassis_control` program of `ipmi_sim`.

`ipmi_sim` (OpenIPMI) runs ``<program> get power`` to read the chassis
power and ``<program> set power "0"`` to switch it; this module is that
program for one box of a rack, described by a small JSON file the rack keeps
current (`write_spec`)::

    python -m sim.bmcpower /run/rack/power/alpha.json get power   ->  power:1
    python -m sim.bmcpower /run/rack/power/alpha.json set power 0

Power off is a hard power loss, not a handover: every process of the box's
daemon (the daemon, its guardian, its hooks) and its PBX are SIGKILLed, and
the box vanishes from the LAN at once (network namespaces: its interfaces go
down; the simulated LAN: its addresses are withdrawn and its cable pulled).
Nothing of the box runs afterwards, so the rack's supervisor does not run
`tandem release` for it either (`powered`). Power on puts the box back on
the LAN; starting its daemon again is the rack's job (`TwoNodeRack.power_on`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from firmware.core.journal import write_atomically
from sim.lan import SimulatedLan


def write_spec(path: Path, **spec: Any) -> None:
    """Write (or update) a box's description: node, power_file, pid, pbx_pid_file, and either namespace,
    interfaces and own_addresses (a network-namespace rack) or lan and own_address (the simulated LAN)."""
    current = json.loads(path.read_text()) if path.exists() else {}
    write_atomically(path, json.dumps({**current, **spec}, indent=1).encode())


def powered(spec_path: Path) -> bool:
    """Whether the box is powered (a box whose BMC never switched it is on)."""
    try:
        spec = json.loads(spec_path.read_text())
        return Path(spec["power_file"]).read_text().strip() != "0"
    except (FileNotFoundError, KeyError, ValueError):
        return True


def kill_processes(processes: list[psutil.Process]) -> None:
    """SIGKILL every one of `processes` (those already gone are skipped) and reap them."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=5)


def _kill_tree(pid: int | None) -> None:
    if not pid:
        return
    try:
        root = psutil.Process(pid)
        kill_processes([root, *root.children(recursive=True)])
    except psutil.NoSuchProcess:
        return


def _pbx_pid(spec: dict[str, Any]) -> int | None:
    try:
        return int(Path(spec["pbx_pid_file"]).read_text())
    except (KeyError, FileNotFoundError, ValueError):
        return None


def _links(spec: dict[str, Any], state: str) -> None:
    for interface in spec.get("interfaces", []):
        subprocess.run(["ip", "-n", spec["namespace"], "link", "set", interface, state], check=False,
                       capture_output=True, timeout=10)


def _forget_addresses(spec: dict[str, Any]) -> None:
    """What a reboot forgets: every address but the box's own configured ones (so the shared IPs go)."""
    from sim.netns import addresses  # the namespace helpers only where namespaces are used

    keep = set(spec.get("own_addresses", []))
    for interface in spec.get("interfaces", []):
        for address in addresses(spec["namespace"], interface):
            if address not in keep and not address.startswith("fe80:"):
                subprocess.run(["ip", "-n", spec["namespace"], "addr", "del", address, "dev", interface],
                               check=False, capture_output=True, timeout=10)


def power_off(spec: dict[str, Any]) -> None:
    """A hard power loss of the box: its processes killed, the box gone from the LAN, in that instant."""
    Path(spec["power_file"]).write_text("0")
    if spec.get("namespace"):
        _links(spec, "down")
    lan = SimulatedLan(Path(spec["lan"])) if spec.get("lan") else None
    if lan is not None:
        lan.unplug(spec["node"])
    _kill_tree(spec.get("pid"))
    _kill_tree(_pbx_pid(spec))
    if spec.get("namespace"):
        _forget_addresses(spec)
    if lan is not None:  # a box without power holds no address, once it can no longer publish one
        for record in lan.held_by(spec["node"]):
            lan.withdraw(spec["node"], record["address"])


def power_on(spec: dict[str, Any]) -> None:
    """Power back: the box is on the LAN again (its daemon is started by the rack)."""
    if spec.get("namespace"):
        _links(spec, "up")
    if spec.get("lan"):
        lan = SimulatedLan(Path(spec["lan"]))
        if spec.get("own_address"):
            lan.publish(spec["node"], "eth0", spec["own_address"])
        lan.plug(spec["node"])
    Path(spec["power_file"]).write_text("1")


def main(argv: list[str]) -> int:
    """`<spec> get power` or `<spec> set power <0|1>`, as ipmi_sim's extcmd interface calls it."""
    if len(argv) < 3:
        print("usage: python -m sim.bmcpower SPEC get power | SPEC set power 0|1", file=sys.stderr)
        return 2
    spec_path, verb = Path(argv[0]), argv[1]
    spec = json.loads(spec_path.read_text())
    if verb == "get":
        print(f"power:{1 if powered(spec_path) else 0}")
        return 0
    if verb == "set" and argv[2] == "power" and len(argv) >= 4:
        (power_on if argv[3].strip('"') == "1" else power_off)(spec)
        return 0
    print(f"sim.bmcpower: cannot {' '.join(argv[1:])}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
