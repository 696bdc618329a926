"""A simulated two-node rack: two real `tandem run` processes joined by simulated cables.

The nodes talk over loopback UDP through a :class:`~sim.netrelay.UdpRelay`
(so the network can be cut without root) and over a
:class:`~sim.cable.NullModemCable` made of pseudo-terminals. A TCP listener
plays the witness (the default gateway, say) and can be switched off. Each
node has its own state directory and control socket, so no root is needed.

The rack supervises its daemons as systemd supervises the real one: when a
node's daemon exits, for whatever reason, the rack runs `tandem release` for
that node (the unit's ``ExecStopPost=``), and a node is started again only
after that release finished. Shared IPs live on the simulated LAN
(:mod:`sim.lan`), so what a dead daemon's box still holds stays visible.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import psutil

from firmware.cli import EXIT_CONFIG
from firmware.config import find_board_profile
from firmware.core.control import ControlError, request, stream
from firmware.core.protocol import write_key_file
from firmware.pairing.identity import load_or_create_identity, public_hex
from sim.cable import NullModemCable
from sim.bmc import SimulatedBmc
from sim.bmcpower import kill_processes, power_on, powered, write_spec
from sim.lan import HOST_ENV, LAN_ENV, SimulatedLan
from sim import slots
from sim.netrelay import UdpRelay, free_tcp_port, free_udp_port

NODES = ("alpha", "bravo")
CABLE_ENDS = {"alpha": "a", "bravo": "b"}
DEFAULT_TIMERS = {"heartbeat_ms": 100, "deadtime_ms": 300, "initdead_ms": 1500,
                  "handover_timeout_ms": 3000, "shutdown_timeout_ms": 5000}
SIM_GATEWAY = "192.0.2.1"  # a host on the simulated LAN that answers for its address (the control target)
SIM_BOX_ADDRESSES = {"alpha": "192.0.2.11", "bravo": "192.0.2.12"}  # each box's own address on the simulated LAN
RECHECK_S = 0.25  # a wait re-checks its condition at least this often, and whenever the node journals an event


class WitnessListener:
    """A TCP port that accepts connections while `up`; refuses them while down."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        probe = socket.socket()
        probe.bind((host, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        """The witness target string for a node config."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        """Whether it accepts connections now."""
        return self._sock is not None

    def up(self) -> None:
        """Start accepting connections."""
        if self._sock is not None:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    @staticmethod
    def _accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()


class IcmpWitness:
    """The namespace lab's switch as the witness: answers pings while up, ignores them while down."""

    def __init__(self, lab: Any) -> None:
        from sim.netns import SWITCH_IPV4

        self.lab = lab
        self.target = f"icmp://{SWITCH_IPV4.ip}"
        self.is_up = True

    def up(self) -> None:
        """Answer echo requests."""
        self._set(False)

    def down(self) -> None:
        """Ignore echo requests."""
        self._set(True)

    def _set(self, ignore: bool) -> None:
        self.lab.run(self.lab.switch, ["sysctl", "-q", "-w", f"net.ipv4.icmp_echo_ignore_all={int(ignore)}"])
        self.is_up = not ignore


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _running(process: psutil.Process) -> bool:
    """Whether the process still runs (a zombie does not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class TwoNodeRack:
    """Two simulated nodes, their cables and witness, and handles to steer them."""

    def __init__(self, base: Path, timers: dict[str, int] | None = None,
                 roles: tuple[str, str] = ("primary", "secondary"), witness: bool = True,
                 extra: dict[str, dict[str, Any]] | None = None,
                 shared_ips: list[dict[str, Any]] | None = None, service: str = "none",
                 netns: bool = False, relay_groups: list[dict[str, Any]] | None = None,
                 witness_targets: dict[str, str] | None = None, history: bool = False,
                 board: str | None = None, sensor_timeout_s: float | None = None, supervise: bool = True,
                 arbitration: bool = False, fencing: bool = False, fence: dict[str, Any] | None = None,
                 nofile: int | None = None, bulk: bool = False, trial_deadline_s: float = 120.0) -> None:
        """`shared_ips`: [[shared_ips]] tables for both nodes (the sim profile records instead of
        configuring; with `netns` they are real addresses in the nodes' namespaces);
        `service`: "cold", "hot" or "none" for a fake PBX per node (sim.fakepbx);
        `netns` (root): each node in its own network namespace (sim.netns.NetnsLab);
        `history`: keep rrdtool sensor history (off by default: tests need no graphs, and each
        metric's file preallocates its two years of retention);
        `board`: the board profile (a name or a path; default sim, or sim-netns with `netns`);
        `sensor_timeout_s`: replace the timeout of every sensor the board profile names (tests on a
        loaded machine give the simulated sensors' reads, some of them subprocesses, time to answer);
        `supervise`: run `tandem release` for a node whose daemon exited, as systemd's ExecStopPost
        does (off: what a box keeps when nothing releases it, e.g. to test the release at start-up);
        `arbitration`: LAN arbitration on, with the simulated LAN's gateway (`SIM_GATEWAY`, which
        answers for itself on the simulated LAN) as control target, or with `netns` the lab switch;
        `fencing` (needs `arbitration`): a simulated BMC per box (`sim.bmc`: OpenIPMI's ipmi_sim) that
        switches its power, and each node fences its peer through the peer's BMC with the real
        `fence_ipmilan`; `fence`: more [fencing.device] keys (`delay_s`, ...; `options` adds agent options);
        `nofile`: every daemon the rack starts runs with RLIMIT_NOFILE soft = hard = `nofile` (as a unit's
        LimitNOFILE=; the supervisor's `tandem release` keeps the rack's own limit);
        `bulk`: the bulk channel between the nodes (`[bulk]`), each with an identity key of its own, as
        `tandem pair` sets it up;
        `trial_deadline_s`: the boot gate's deadline for a slot on trial (sim.slots): a node that has not
        passed it by then is rebooted (orderly: SIGTERM), and boots back into its other slot. A node whose
        daemon asks for a reboot (`reboot`, an update) boots again."""
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.timers = {**DEFAULT_TIMERS, **(timers or {})}
        self.roles = dict(zip(NODES, roles))
        self.extra = dict(extra or {})
        # The lab writes history every 10 s (the appliance's default is 5 minutes, for the flash's sake).
        self.extra["health"] = {"history": history, "history_flush_s": 10.0, **self.extra.get("health", {})}
        self.shared_ips = shared_ips or []
        self.relay_groups = relay_groups or []
        self.witness_targets = witness_targets or {}  # per-node override of the shared witness target
        self.service = service
        self.sensor_timeout_s = sensor_timeout_s
        self.key_file = self.base / "cluster.key"
        self.lab = None
        if netns:
            from sim.netns import SWITCH_IPV4, NetnsLab, call_in_namespace

            # Each node in its own network namespace on a bridge; the heartbeat relay sits on the
            # switch, so the network can still be cut, and the shared IP really moves.
            self.lab = NetnsLab(nodes=2)
            self.node_hosts = {name: str(self.lab.nodes[i].ipv4.ip) for i, name in enumerate(NODES)}
            self.node_ports = {name: 694 for name in NODES}
            hosts = (self.node_hosts["alpha"], self.node_hosts["bravo"])
            self.relay_host = str(SWITCH_IPV4.ip)
            self.relay = call_in_namespace(self.lab.switch, lambda: UdpRelay((694, 694), self.relay_host, hosts))
        else:
            self.node_hosts = {name: "127.0.0.1" for name in NODES}
            self.node_ports = {name: free_udp_port() for name in NODES}
            self.relay_host = "127.0.0.1"
            self.relay = UdpRelay((self.node_ports["alpha"], self.node_ports["bravo"]))
        self.board = board or ("sim-netns" if netns else "sim")
        if arbitration:  # the control target: the simulated LAN's gateway, or the lab switch's own address
            control = SIM_GATEWAY if self.lab is None else self.relay_host  # the switch: 192.0.2.254
            self.extra["arbitration"] = {"enabled": True, "control": [control], **self.extra.get("arbitration", {})}
        self.cable = NullModemCable(self.base / "cable", ends=("a", "b"))
        self.witness: WitnessListener | IcmpWitness | None = None
        if witness:
            self.witness = IcmpWitness(self.lab) if self.lab is not None else WitnessListener()
        self.procs: dict[str, subprocess.Popen] = {}
        self.cuts: dict[str, set[str]] = {"net": set(), "serial": set()}
        self._logs: dict[str, Any] = {}
        self.lan = SimulatedLan(self.base / "lan")
        self.lan.publish("gateway", "eth0", f"{SIM_GATEWAY}/24")
        if self.lab is None:  # each box answers for its own LAN address, as a real one does
            for name in NODES:
                self.lan.publish(name, "eth0", f"{SIM_BOX_ADDRESSES[name]}/24")
        self.box_addresses = ({name: str(self.lab.nodes[i].ipv4.ip) for i, name in enumerate(NODES)}
                              if self.lab is not None else dict(SIM_BOX_ADDRESSES))
        self.supervise = supervise
        self.nofile = nofile
        # Each node in its own namespace has the channel's own port; on one loopback they need two.
        self.bulk_ports = {name: free_tcp_port(self.node_hosts[name]) if self.lab is None else 7140
                           for name in NODES} if bulk else {}
        self.releases: dict[str, list[subprocess.CompletedProcess]] = {name: [] for name in NODES}
        self._supervisors: dict[str, threading.Thread] = {}
        self.trial_deadline_s = trial_deadline_s
        self.boots = {name: 0 for name in NODES}  # daemons started, reboots included
        self.deadline_reboots = {name: 0 for name in NODES}
        self._journal_marks: dict[str, int] = {}
        self._start_lock = threading.Lock()
        self._node_locks = {name: threading.Lock() for name in NODES}
        self._tearing_down = False
        self.power_specs = {name: self.base / "power" / f"{name}.json" for name in NODES}
        self.bmcs: dict[str, SimulatedBmc] = {}
        self.fence = dict(fence or {})
        if fencing:
            self._add_bmcs()

    def _add_bmcs(self) -> None:
        """A BMC per box, reachable only from the peer that fences with it (its loopback)."""
        (self.base / "power").mkdir(exist_ok=True)
        for index, name in enumerate(NODES):
            peer = NODES[1 - index]
            box = {"node": name, "power_file": str(self.base / "power" / f"{name}.power"),
                   "pbx_pid_file": str(self.pbx_dir(name) / "pbx.pid")}
            if self.lab is not None:
                lab_node = self.lab.nodes[index]
                box.update(namespace=self.namespace(name), interfaces=["eth0"],
                           own_addresses=[str(lab_node.ipv4), str(lab_node.ipv6)])
            else:
                box.update(lan=str(self.lan.folder), own_address=f"{SIM_BOX_ADDRESSES[name]}/24")
            write_spec(self.power_specs[name], **box)
            self.bmcs[name] = SimulatedBmc(self.base / "bmc" / name, name, free_udp_port(), self.power_specs[name],
                                           namespace=None if self.lab is None else self.namespace(peer))

    # ------------------------------------------------------------------ setup

    def config_path(self, name: str) -> Path:
        """Where a node's config file is."""
        return self.base / name / "tandem.toml"

    def socket_path(self, name: str) -> Path:
        """Where a node's control socket is."""
        return self.base / name / "control.sock"

    def namespace(self, name: str) -> str:
        """The node's network namespace (netns mode only)."""
        assert self.lab is not None, "not a namespace rack"
        return self.lab.nodes[NODES.index(name)].ns

    def addresses(self, name: str) -> list[str]:
        """Addresses on the node's eth0 (netns mode only), as `address/prefix`."""
        from sim.netns import addresses

        return addresses(self.namespace(name), "eth0")

    def pbx_dir(self, name: str) -> Path:
        """Where a node's fake PBX keeps its pid file."""
        return self.base / name / "pbx"

    def pbx_running(self, name: str) -> bool:
        """Whether the node's fake PBX process runs."""
        from sim.fakepbx import _pid

        return _pid(self.pbx_dir(name)) is not None

    def log_path(self, name: str) -> Path:
        """Where a node's stderr goes."""
        return self.base / name / "daemon.log"

    def write_configs(self) -> None:
        """Write the cluster key and both node configs."""
        if not self.key_file.exists():
            write_key_file(self.key_file)
        for index, name in enumerate(NODES):
            peer = NODES[1 - index]
            folder = self.base / name
            folder.mkdir(exist_ok=True)
            lines = [
                f"# Generated by sim.rack for the simulated node {name}.",
                f'node = "{name}"', f'peer = "{peer}"', f'role = "{self.roles[name]}"', f'board = "{self.board}"',
                f"key_file = {_toml_value(str(self.key_file))}",
                f"state_dir = {_toml_value(str(folder / 'state'))}",
                f"control_socket = {_toml_value(str(self.socket_path(name)))}",
                "", "[timers]", *(f"{k} = {v}" for k, v in self.timers.items()),
                "", "[[links]]", 'name = "net0"', 'kind = "udp"',
                f'bind = "{self.node_hosts[name]}:{self.node_ports[name]}"',
                f'peer = "{self.relay_host}:{self.relay.relay_port(index)}"',
                "", "[[links]]", 'name = "serial0"', 'kind = "serial"',
                f"port = {_toml_value(str(self.cable.path(CABLE_ENDS[name])))}",
            ]
            if self.witness is not None:
                target = self.witness_targets.get(name, self.witness.target)
                lines += ["", "[witness]", f"targets = {_toml_value([target])}", "timeout_ms = 200"]
            for key, tables in (("shared_ips", self.shared_ips), ("relay_groups", self.relay_groups)):
                for table in tables:
                    lines += ["", f"[[{key}]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
            if self.service != "none":
                pbx = [sys.executable, "-m", "sim.fakepbx"]
                where = ["--dir", str(self.pbx_dir(name))]
                lines += ["", "[service]", f'mode = "{self.service}"',
                          f"start = {_toml_value(pbx + ['start'] + where)}",
                          f"stop = {_toml_value(pbx + ['stop'] + where)}",
                          f"status = {_toml_value(pbx + ['status'] + where)}"]
            lines += ["", "[update]", *(f"{k} = {_toml_value(v)}" for k, v in self._update_table(name).items())]
            for section, values in self.extra.items():
                if section == "update":
                    continue  # in the [update] table above
                if section == "arbitration" and values.get("enabled"):  # each node also asks for its peer's box
                    values = {"peer_address": self.box_addresses[peer], **values}
                lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
            if self.bmcs:
                lines += self._fence_lines(self.bmcs[peer])
            if self.bulk_ports:
                lines += self._bulk_lines(name, peer)
            for sensor in self._board_sensors(name):
                lines += ["", "[[sensors]]", *(f"{k} = {_toml_value(v)}" for k, v in sensor.items())]
            self.config_path(name).write_text("\n".join(lines) + "\n")

    def update_dir(self, name: str) -> Path:
        """The node's simulated slots (sim.slots): slots.json, the boot gate's result file and trial flag."""
        return self.base / name / "update"

    def _update_table(self, name: str) -> dict[str, Any]:
        folder = self.update_dir(name)
        return {"trial_flag": str(folder / "trial"), "result_file": str(folder / "result"),
                "mark_good": [sys.executable, "-m", "sim.slots", "pass", str(folder)], **self.extra.get("update", {})}

    def identity_path(self, name: str) -> Path:
        """The node's identity key (made by the rack when `bulk` is on, as first boot makes it)."""
        return self.base / name / "identity.key"

    def record_path(self, name: str) -> Path:
        """The node's pairing record (written by the rack when `bulk` is on, as `tandem pair` writes it)."""
        return self.base / name / "state" / "paired.json"

    def _bulk_lines(self, name: str, peer: str) -> list[str]:
        for node in (name, peer):
            load_or_create_identity(self.identity_path(node))
        record = self.record_path(name)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"peer": peer, "peer_settings": {
            "node": peer, "identity": public_hex(load_or_create_identity(self.identity_path(peer)))}}))
        table = {"listen": f"{self.node_hosts[name]}:{self.bulk_ports[name]}",
                 "peer": f"{self.node_hosts[peer]}:{self.bulk_ports[peer]}",
                 "identity": str(self.identity_path(name)), "record": str(record),
                 "inbox": str(self.base / name / "inbox")}
        return ["", "[bulk]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]

    def _fence_lines(self, bmc: SimulatedBmc) -> list[str]:
        """The [fencing.device] of a node whose peer's power `bmc` switches."""
        device = {"agent": "fence_ipmilan", "timeout_s": 30,
                  **{k: v for k, v in self.fence.items() if k != "options"}}
        options = bmc.fence_options(**self.fence.get("options", {}))
        return ["", "[fencing.device]", *(f"{k} = {_toml_value(v)}" for k, v in device.items()),
                "", "[fencing.device.options]", *(f"{k} = {_toml_value(v)}" for k, v in options.items())]

    def powered(self, name: str) -> bool:
        """Whether the box's power is on (always, without a BMC)."""
        return powered(self.power_specs[name])

    def power_on(self, name: str) -> subprocess.Popen:
        """Switch a box on again (as its BMC would) and start its daemon, as a boot does."""
        power_on(json.loads(self.power_specs[name].read_text()))
        return self.start_node(name)

    def _board_sensors(self, name: str) -> list[dict[str, Any]]:
        """The board profile's sensors with the rack's `sensor_timeout_s` (none without it).

        A node config's [[sensors]] entry replaces the board's sensor of the same name.
        """
        if self.sensor_timeout_s is None:
            return []
        profile = find_board_profile(self.board, self.config_path(name))
        sensors = tomllib.loads(profile.read_text()).get("sensors", [])
        return [{**sensor, "timeout_s": self.sensor_timeout_s} for sensor in sensors]

    def start(self, nodes: tuple[str, ...] = NODES) -> None:
        """Start cables, witness and the named nodes."""
        self.write_configs()
        self.relay.start()
        self.cable.start()
        if self.witness is not None:
            self.witness.up()
        for bmc in self.bmcs.values():
            bmc.start()
        for name in nodes:
            self.start_node(name)

    def stop(self) -> None:
        """Stop everything (nodes are killed; this is teardown, not a graceful exit)."""
        with self._start_lock:
            self._tearing_down = True
        for name in list(self.procs):
            self.kill(name)
        for thread in self._supervisors.values():
            thread.join(timeout=30)
        if self.service != "none":
            for name in NODES:
                self._stop_pbx(name)
        for bmc in self.bmcs.values():
            bmc.stop()
        self.relay.stop()
        self.cable.stop()
        if self.witness is not None and self.lab is None:
            self.witness.down()
        for handle in self._logs.values():
            handle.close()
        if self.lab is not None:
            self.lab.close()

    def _stop_pbx(self, name: str) -> None:
        """Stop the node's fake PBX, and any `sim.fakepbx` helper a killed daemon left running.

        A daemon killed while it ran `fakepbx start` leaves that helper behind, and it may write the
        PBX's pid file only after the pid file was looked at: so stop the helpers first, then the PBX
        by its pid file, then whatever still runs for this node's PBX folder.
        """

        from sim.fakepbx import stop as stop_pbx

        folder = str(self.pbx_dir(name))

        def strays(commands: tuple[str, ...]) -> list[psutil.Process]:
            found = []
            for process in psutil.process_iter(["cmdline"]):
                line = process.info["cmdline"] or []
                if "sim.fakepbx" in line and folder in line and any(c in line for c in commands):
                    found.append(process)
            return found

        kill_processes(strays(("start", "stop", "status")))
        stop_pbx(self.pbx_dir(name))
        kill_processes(strays(("run",)))

    def __enter__(self) -> "TwoNodeRack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processes

    def start_node(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `tandem run` for a node; `env` adds to its environment (e.g. a NOTIFY_SOCKET of the caller's).

        RuntimeError if its daemon runs already (a simulated reboot's boot came first) or the rack is being
        stopped: one start of a node at a time, each from a booted slot."""
        with self._node_locks[name]:
            running = self.procs.get(name)
            if running is not None and running.poll() is None:
                raise RuntimeError(f"not starting {name}: its daemon runs already (pid {running.pid})")
            return self._start_node(name, env)

    def _start_node(self, name: str, env: dict[str, str] | None) -> subprocess.Popen:
        previous = self._supervisors.get(name)
        if previous is not None:
            previous.join(timeout=60)  # as systemd: the stop (and its release) finishes before a start
        if name in self._logs:
            self._logs[name].close()
        log = open(self.log_path(name), "ab")
        self._logs[name] = log
        environment = self._environment(name)
        environment.pop("NOTIFY_SOCKET", None)
        environment.update(env or {})
        self._journal_marks[name] = max((r["id"] for r in self.journal_file(name)), default=0)
        booted = slots.boot(self.update_dir(name))  # GRUB and the boot gate
        argv = self._argv(name, "run")
        if booted.get("breaks") == "key":  # the release in this slot looks for its cluster key in the wrong place
            broken = self.config_path(name).with_name("tandem-broken.toml")
            broken.write_text(self.config_path(name).read_text().replace(
                f"key_file = {_toml_value(str(self.key_file))}", f"key_file = {_toml_value(str(self.key_file))}.lost"))
            argv[argv.index(str(self.config_path(name)))] = str(broken)
        with self._start_lock:  # never a daemon started after the teardown has begun (a simulated reboot's)
            if self._tearing_down:
                raise RuntimeError(f"not starting {name}: the rack is being stopped")
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=environment, preexec_fn=self._limits if self.nofile is not None else None)
            self.procs[name] = proc
        self.boots[name] += 1
        if self.bmcs:
            write_spec(self.power_specs[name], pid=proc.pid)  # what a power off kills
        if self.supervise:
            self._supervisors[name] = threading.Thread(target=self._supervise, args=(name, proc),
                                                       name=f"supervise-{name}", daemon=True)
            self._supervisors[name].start()
        return proc

    def _limits(self) -> None:
        """In the child before exec: the rack's RLIMIT_NOFILE (`nofile`), soft and hard (nothing imported
        here: after a fork of a threaded process another thread may hold the import lock)."""
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _environment(self, name: str) -> dict[str, str]:
        """The environment of a node's processes: unbuffered, on the rack's simulated LAN as box `name`."""
        return {**os.environ, "PYTHONUNBUFFERED": "1", LAN_ENV: str(self.lan.folder), HOST_ENV: name}

    def _argv(self, name: str, *args: str) -> list[str]:
        """`tandem --config <node config> <args>`, inside the node's namespace in a netns lab."""
        argv = [sys.executable, "-m", "firmware.cli", "--config", str(self.config_path(name)), *args]
        if self.lab is not None:
            argv = ["ip", "netns", "exec", self.namespace(name)] + argv  # ip execs: the pid is the daemon's
        return argv

    def _supervise(self, name: str, proc: subprocess.Popen) -> None:
        """Wait for the daemon to exit, then release its node, as the unit's ExecStopPost would; a box that
        asked for a reboot boots again (see :meth:`_reboots`)."""
        started, overdue = time.monotonic(), False
        while proc.poll() is None:
            if self._trial_overdue(name, started):  # the boot gate's deadline: an orderly reboot
                overdue = True
                slots.send_back(self.update_dir(name), "deadline")
                self.deadline_reboots[name] += 1
                proc.terminate()
                proc.wait()
                break
            time.sleep(0.2)
        if self._tearing_down or not self.powered(name):  # a box without power runs nothing, not even a release
            return
        argv = self._argv(name, "release", "--source", "supervisor", "--timeout", "30")
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    env=self._environment(name), timeout=60)
        except subprocess.TimeoutExpired:  # `release --timeout` ends it first; this is the rack's own backstop
            result = subprocess.CompletedProcess(argv, -1, "", "tandem release did not end within 60 s")
        self.releases[name].append(result)
        if (overdue or self._reboot_asked(name, proc)) and not self._tearing_down:
            threading.Thread(target=self._boot, args=(name,), name=f"boot-{name}", daemon=True).start()

    def _boot(self, name: str) -> None:
        """A simulated reboot's boot: start the node again (unless the rack is being stopped meanwhile)."""
        try:
            self.start_node(name)
        except RuntimeError:
            return

    def _trial_overdue(self, name: str, started: float) -> bool:
        """Whether the node runs a slot on trial it has not passed `trial_deadline_s` after it booted."""
        return (time.monotonic() - started > self.trial_deadline_s
                and (self.update_dir(name) / "trial").exists())

    def _reboot_asked(self, name: str, proc: subprocess.Popen) -> bool:
        """Whether the daemon that ended asked for a reboot (the operator's or an update's `reboot`: a `power`
        record in its journal since it started), or failed while its slot is on trial: on a box, tandem.service's
        OnFailure= runs ``bootgate failed`` when the daemon refuses to start (exit 78, which systemd does not
        restart); here any failure on trial reboots (a SIGKILL stands for a power cut), and only exit 78 is
        said to be the cause."""
        if proc.returncode != 0 and (self.update_dir(name) / "trial").exists():
            if proc.returncode == EXIT_CONFIG:  # failed for good: systemd would not restart it
                slots.send_back(self.update_dir(name), "daemon-failed")
            return True
        mark = self._journal_marks.get(name, 0)
        return any(r["kind"] == "power" and r["data"].get("action") == "reboot" and not r["data"].get("failed")
                   for r in self.journal_file(name, mark))

    def wait_released(self, name: str, count: int = 1, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Wait until the supervisor ran `count` releases for `name`; the last one's result."""
        self.wait_for(lambda: len(self.releases[name]) >= count, timeout, what=f"{name}'s release #{count}")
        return self.releases[name][-1]

    def holders(self, ip: str) -> list[str]:
        """The simulated boxes that hold the bare address `ip` on the simulated LAN."""
        return [record["host"] for record in self.lan.holders(ip)]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal a node's daemon; for SIGKILL wait until it is gone. Returns the time it was sent."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            self.procs.pop(name, None)
            return time.time()
        if sig == signal.SIGKILL and (self._tearing_down or not self.supervise):
            self._kill_guardian(proc)  # nothing may release the box: the guardian goes first
        # At teardown the daemon's other children go too, as systemd's control group would take them:
        # a fence agent runs in a session of its own and would outlive it.
        rest = self._descendants(proc) if self._tearing_down and sig == signal.SIGKILL else []
        sent = time.time()
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=10)
            self.procs.pop(name, None)
            kill_processes(rest)
        return sent

    @staticmethod
    def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
        try:
            return psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _kill_guardian(proc: subprocess.Popen) -> None:
        """SIGKILL the release guardian `tandem run` forked (its child running the same command line)."""
        try:
            daemon = psutil.Process(proc.pid)
            command, children = daemon.cmdline(), daemon.children()
        except psutil.NoSuchProcess:
            return
        guardians = []
        for child in children:  # others come and go (a sensor's command, a fence agent): skip those that went
            try:
                if child.cmdline() == command:
                    guardians.append(child)
            except psutil.NoSuchProcess:
                continue
        for guardian in guardians:
            guardian.kill()
        # Dead is enough: its parent (the daemon, about to be killed) will never reap it, so a wait
        # for it to disappear would last until init does.
        deadline = time.monotonic() + 10
        while any(_running(g) for g in guardians) and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_exit(self, name: str, timeout: float = 30.0) -> int:
        """Wait for a node's daemon to exit; return its exit code."""
        proc = self.procs[name]
        code = proc.wait(timeout=timeout)
        self.procs.pop(name, None)
        return code

    def running(self, name: str) -> bool:
        """Whether the node's daemon process is running."""
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    # ------------------------------------------------------------------ observing and steering

    def status(self, name: str) -> dict[str, Any] | None:
        """The node's full status snapshot, or None if it cannot be reached.

        The snapshot is the most expensive answer a node gives (sensors, links, relay timelines):
        to wait for something, use :meth:`wait_until`, which asks for the light :meth:`brief`.
        """
        try:
            return request(self.socket_path(name), {"cmd": "status"}, timeout=5.0)
        except (ControlError, OSError, ValueError):
            return None

    def brief(self, name: str) -> dict[str, Any] | None:
        """The node's light `state` answer, or None if it cannot be reached.

        Keys: state, reason, peer_alive, health, tick (its heartbeat tick counter), alarms,
        alarm_silenced, and event_id (the newest journal id when it answered).
        """
        try:
            return request(self.socket_path(name), {"cmd": "state"}, timeout=5.0)
        except (ControlError, OSError, ValueError):
            return None

    def _reached(self, name: str) -> dict[str, Any]:
        brief = self.brief(name)
        if brief is None:
            raise ControlError(f"{name} did not answer")
        return brief

    def alarms(self, name: str) -> list[str]:
        """The texts of the node's active alarms; ControlError if it cannot be reached (never a quiet [])."""
        return [alarm["text"] for alarm in self._reached(name)["alarms"]]

    def state(self, name: str) -> str | None:
        """The node's state name, or None if it cannot be reached."""
        brief = self.brief(name)
        return brief["state"] if brief else None

    def control(self, name: str, payload: dict[str, Any], timeout: float = 30.0) -> Any:
        """Send a control request; raises ControlError on refusal."""
        return request(self.socket_path(name), payload, timeout)

    def cli(self, name: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the `tandem` CLI against a node."""
        return subprocess.run(self._argv(name, *args), capture_output=True, text=True, timeout=timeout,
                              env=self._environment(name))

    def journal_path(self, name: str) -> Path:
        """The node's event journal file."""
        return self.base / name / "state" / "events.jsonl"

    def events(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        """The node's journal after id `since`: from the running daemon (everything it has recorded,
        even what its writer thread has not put on disk yet), else from its files."""
        try:
            return [item["event"] for item in stream(self.socket_path(name), {"cmd": "events", "since": since},
                                                      timeout=10.0)]
        except (ControlError, OSError, ValueError):
            return self.journal_file(name, since)

    def journal_file(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        """The node's journal as its files hold it (cheap to poll; may lag the daemon by a write)."""
        from firmware.core.journal import read_journal

        return [r for r in read_journal(self.journal_path(name)) if r["id"] > since]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
                 what: str = "condition") -> Any:
        """Poll until `predicate()` is truthy; raise TimeoutError naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)

    def wait_until(self, name: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20.0,
                   what: str = "condition", full: bool = False) -> Any:
        """Wait until ``predicate(view)`` is truthy for the node and return its value.

        ``view`` is the node's light :meth:`brief`, or with ``full`` its :meth:`status` snapshot.
        The condition is checked again each time the node journals an event (the wait follows the
        journal, so it costs the node nothing while nothing happens) and at least every RECHECK_S
        for what is not journaled. Raises TimeoutError naming ``what`` and the last view's state.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            brief = self.brief(name)
            view = self.status(name) if full and brief is not None else brief
            if view is not None:
                last = view
                value = predicate(view)
                if value:
                    return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = f"{name} was {last['state']}" if last else f"{name} did not answer"
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} ({seen})")
            if brief is None:
                time.sleep(min(0.1, remaining))
            else:
                self._next_event(name, brief["event_id"], min(RECHECK_S, remaining))

    def _next_event(self, name: str, since: int, wait: float) -> dict[str, Any] | None:
        """The node's first journal event after id `since`, waiting up to `wait` seconds (None if none)."""
        try:
            for item in stream(self.socket_path(name), {"cmd": "events", "since": since, "follow": True},
                               timeout=wait):
                return item["event"]
        except (ControlError, OSError, ValueError):
            pass
        return None

    def wait_event(self, name: str, predicate: Callable[[dict[str, Any]], Any], since: int = 0,
                   timeout: float = 20.0, what: str = "an event") -> dict[str, Any]:
        """The node's first journal event after id `since` for which ``predicate(event)`` holds,
        following its journal until one is recorded; TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                for item in stream(self.socket_path(name), {"cmd": "events", "since": since, "follow": True},
                                   timeout=max(remaining, 0.01)):
                    event = item["event"]
                    since = event["id"]
                    if predicate(event):
                        return event
            except (ControlError, OSError, ValueError):
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} on {name}")
            time.sleep(min(0.1, remaining))  # not running (yet): try again

    def wait_state(self, name: str, state: str, timeout: float = 20.0) -> None:
        """Wait until a node reports `state`."""
        self.wait_until(name, lambda brief: brief["state"] == state, timeout, what=f"{name} to be {state}")

    def wait_settled(self, timeout: float = 20.0) -> None:
        """Wait for the usual start: alpha (primary) ACTIVE and bravo STANDBY."""
        self.wait_state("alpha", "ACTIVE", timeout)
        self.wait_state("bravo", "STANDBY", timeout)

    def wait_pair(self, timeout: float = 20.0) -> str:
        """Wait for a settled pair (one ACTIVE, the other STANDBY hearing it); return the ACTIVE node."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.settled()
            if active is not None:
                return active
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for a settled pair "
                                   f"(alpha {self.state('alpha')}, bravo {self.state('bravo')})")
            brief = self.brief(NODES[0])
            if brief is None:
                time.sleep(min(0.1, remaining))
            else:  # either node's change shows in both journals (peer found or lost, or a state)
                self._next_event(NODES[0], brief["event_id"], min(RECHECK_S, remaining))

    def wait_ticks(self, name: str, count: int, timeout: float = 20.0, start: int | None = None) -> int:
        """Wait until the node's own heartbeat tick counter is `count` ticks past `start` (default: now);
        return the tick it reached."""
        if start is None:
            start = self._reached(name)["tick"]
        return self.wait_until(name, lambda brief: brief["tick"] >= start + count and brief["tick"], timeout,
                               what=f"{count} heartbeat ticks on {name}")

    def state_time(self, name: str, to: str, after: float) -> float | None:
        """Wall time of the node's first journaled change to state `to` at or after `after` (from its files)."""
        return self.event_time(name, "state", after, to=to)

    def event_time(self, name: str, kind: str, after: float, **data: Any) -> float | None:
        """Wall time of the node's first journaled `kind` event at or after `after` whose data has `data`."""
        for event in self.journal_file(name):
            if (event["kind"] == kind and event["time"] >= after
                    and all(event["data"].get(k) == v for k, v in data.items())):
                return event["time"]
        return None

    def settled(self) -> str | None:
        """The ACTIVE node if the pair is settled (one ACTIVE, the other STANDBY hearing it)."""
        states = {name: self.brief(name) for name in NODES}
        if any(s is None for s in states.values()):
            return None
        active = [n for n, s in states.items() if s["state"] == "ACTIVE"]
        standby = [n for n, s in states.items() if s["state"] == "STANDBY" and s["peer_alive"]]
        return active[0] if len(active) == 1 and len(standby) == 1 else None

    def active_nodes(self) -> list[str]:
        """Nodes reporting ACTIVE right now."""
        return [name for name in NODES if self.state(name) == "ACTIVE"]

    def cut_network(self, direction: str | None = None) -> None:
        """Drop UDP heartbeats (both ways, or "alpha->bravo" / "bravo->alpha")."""
        self.relay.cut(self._relay_direction(direction))
        self._note_cut("net", direction, True)

    def restore_network(self, direction: str | None = None) -> None:
        """Let UDP heartbeats through again."""
        self.relay.restore(self._relay_direction(direction))
        self._note_cut("net", direction, False)

    def capture_network(self, direction: str, on: bool = True) -> None:
        """Record the UDP datagrams of one direction ("alpha->bravo"), whether they are forwarded or cut
        (`on=False`: stop; a new capture starts empty). See UdpRelay.capture."""
        self.relay.capture(self._relay_direction(direction), on)

    def captured_network(self, direction: str) -> list[tuple[float, bytes]]:
        """The datagrams recorded in `direction`: (time.monotonic() received, payload), oldest first."""
        return self.relay.captured(self._relay_direction(direction))

    def inject_network(self, direction: str, data: bytes) -> None:
        """Send a datagram to the receiving node of `direction` as if the relay forwarded it from the sender
        (a replay by an on-path attacker); cuts do not apply."""
        self.relay.inject(self._relay_direction(direction), data)

    def unplug_lan(self, name: str) -> None:
        """Pull a box's LAN cable (the shared addresses' LAN, not the heartbeat links)."""
        self.lan.unplug(name)

    def plug_lan(self, name: str) -> None:
        """Put a box's LAN cable back."""
        self.lan.plug(name)

    def hang_switch(self, hung: bool = True) -> None:
        """A hung LAN switch (`hung=False`: working again): every link keeps its carrier, nothing passes.

        Network namespaces: the switch's bridge goes down (the heartbeat relay
        and the control target live on it too); the simulated LAN: `SimulatedLan.hang`.
        """
        if self.lab is None:
            self.lan.hang(hung)
            return
        from sim.netns import BRIDGE, run_in

        run_in(self.lab.switch, ["ip", "link", "set", BRIDGE, "down" if hung else "up"])

    def cut_serial(self, direction: str | None = None) -> None:
        """Cut the serial cable (both ways, or one direction)."""
        self.cable.cut(self._cable_direction(direction))
        self._note_cut("serial", direction, True)

    def restore_serial(self, direction: str | None = None) -> None:
        """Reconnect the serial cable."""
        self.cable.restore(self._cable_direction(direction))
        self._note_cut("serial", direction, False)

    def _note_cut(self, medium: str, direction: str | None, cut: bool) -> None:
        directions = {direction} if direction else {"alpha->bravo", "bravo->alpha"}
        if cut:
            self.cuts[medium] |= directions
        else:
            self.cuts[medium] -= directions

    def wiring(self, medium: str) -> str:
        """`ok`, `CUT` or `CUT alpha->bravo` for the lab's status line."""
        cut = self.cuts[medium]
        if not cut:
            return "ok"
        return "CUT" if len(cut) == 2 else f"CUT {next(iter(cut))}"

    @staticmethod
    def _relay_direction(direction: str | None) -> str | None:
        if direction is None:
            return None
        src, dst = direction.split("->")
        return f"{NODES.index(src)}->{NODES.index(dst)}"

    @staticmethod
    def _cable_direction(direction: str | None) -> str | None:
        if direction is None:
            return None
        src, dst = direction.split("->")
        return f"{CABLE_ENDS[src]}->{CABLE_ENDS[dst]}"
