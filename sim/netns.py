"""A network-namespace lab for tests and benchmarks of the real network backend (needs root).

    with NetnsLab(nodes=2) as lab:            # tdm-sw-ab12 + tdm-n0-ab12, tdm-n1-ab12
        node = lab.nodes[0]                   # LabNode: ns, interface "eth0", ipv4, ipv6, mac
        net = lab.network(node)               # NetworkBackend running inside node.ns
        with lab.sniffer() as sniff:          # ARP / NS / NA frames seen on the switch's br0
            net.add_address("eth0", ip_interface("192.0.2.100/24"))
            net.announce("eth0", ip_address("192.0.2.100"))
            frame = sniff.wait_for(kind="garp", ip="192.0.2.100")
        lab.run(node, ["ip", "-br", "addr"])

Topology: a "switch" namespace with a Linux bridge `br0` (192.0.2.254/24,
2001:db8::fe/64; also the nodes' default gateway) and N node namespaces, each
with `eth0` joined to the bridge by a veth pair (switch side `p<i>`). Node i
has 192.0.2.(10+i)/24 and 2001:db8::(10+i)/64. Only documentation address
ranges, only inside the lab's own namespaces: nothing touches the host's
interfaces or routes. Everything is removed by `close()` (also on exit of a
`with` block, on a failed build, and at interpreter exit as a last resort).

`python -m sim.netns serve MODULE:CLASS` is the worker behind `NamespaceNetwork`.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from firmware.core.actions.network import IPAddress, IPInterface, NetworkError, ProbeAnswer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKEND = "firmware.core.actions.netlink:NetlinkNetwork"
BRIDGE = "br0"
NODE_INTERFACE = "eth0"
SWITCH_IPV4 = ipaddress.IPv4Interface("192.0.2.254/24")
SWITCH_IPV6 = ipaddress.IPv6Interface("2001:db8::fe/64")
COMMAND_TIMEOUT = 30.0
BACKEND_METHODS = frozenset({"check", "ensure_vlan", "has_address", "add_address", "remove_address", "link_up",
                             "probe", "announce", "set_route_source", "restore_route_source"})
# quiet, immediately usable IPv6 inside the lab: no DAD, no router solicitations or RAs
LAB_SYSCTLS = ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
               "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
               "net.ipv6.conf.default.router_solicitations=0")


class NetnsError(RuntimeError):
    """The lab could not be built, used or removed; the message says which command failed and why."""


# --------------------------------------------------------------------------- commands

def require_root() -> None:
    """NetnsError unless this process is root and iproute2's `ip` is installed."""
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root (run the tests or benchmark as root)")
    if shutil.which("ip") is None:
        raise NetnsError("the `ip` command (iproute2) is not installed")


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH, for Python run inside a namespace."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra or {})
    return env


def _ns_name(ns: str | LabNode) -> str:
    return ns.ns if isinstance(ns, LabNode) else ns


def _ns_argv(ns: str | LabNode, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", _ns_name(ns), *[str(a) for a in argv]]


def _run(argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; NetnsError with the command and its stderr if it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              env=python_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise NetnsError(f"{' '.join(argv)}: {why}")
    return done


def run_in(ns: str | LabNode, argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside namespace `ns` (`ip netns exec`), wait, return its text output.

    NetnsError if it exits non-zero (unless check=False) or runs past `timeout`.
    Python started this way finds the repository's packages (PYTHONPATH).
    """
    require_root()
    return _run(_ns_argv(ns, argv), check=check, timeout=timeout, input=input)


def popen_in(ns: str | LabNode, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start `argv` inside namespace `ns` and return its Popen (keyword arguments go to Popen).

    `ip netns exec` execs the command, so the Popen's pid is the command's own.
    The environment defaults to this one with the repository on PYTHONPATH.
    """
    require_root()
    popen_kwargs.setdefault("env", python_env())
    return subprocess.Popen(_ns_argv(ns, argv), **popen_kwargs)


def python_in(ns: str | LabNode, code: str, *args: str, check: bool = True,
              timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run Python `code` (`python -c`) with this interpreter inside namespace `ns`."""
    return run_in(ns, [sys.executable, "-c", code, *args], check=check, timeout=timeout)


def ip_json(ns: str | LabNode, *args: str) -> Any:
    """`ip -j <args>` inside namespace `ns`, decoded (e.g. ip_json(ns, "route", "show", "dev", "eth0"))."""
    out = _run(["ip", "-n", _ns_name(ns), "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def addresses(ns: str | LabNode, interface: str) -> list[str]:
    """The addresses on `interface` in namespace `ns` as `ip/prefix` text, from `ip -j addr`."""
    links = ip_json(ns, "addr", "show", "dev", interface)
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link.get("addr_info", [])]


def namespaces() -> set[str]:
    """The names `ip netns list` shows."""
    out = _run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _stop_process(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Terminate one process we started, kill it if it lingers, and reap it."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- the lab

def _end_stdin_worker(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Stop a helper process that exits at end of input: close its stdin, wait, then stop it hard."""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _stop_process(proc)


@dataclass(frozen=True)
class LabNode:
    """One node namespace of the lab."""

    index: int
    ns: str                      # namespace name, e.g. tdm-n0-ab12
    interface: str               # "eth0"
    port: str                    # the veth end on the bridge, in the switch namespace: p<index>
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface
    mac: str                     # eth0's MAC, aa:bb:cc:dd:ee:ff


class NetnsLab:
    """A switch namespace with bridge br0 and `nodes` node namespaces wired to it (see the module doc).

    Build it (the constructor does, in well under a second), use it, close it.
    A failed build removes whatever it had made before raising NetnsError.
    """

    def __init__(self, nodes: int = 2, prefix: str = "tdm", suffix: str | None = None) -> None:
        require_root()
        if not 0 <= nodes <= 200:
            raise NetnsError(f"a lab has 0 to 200 nodes, not {nodes}")
        self.suffix = suffix or secrets.token_hex(2)
        self.switch = f"{prefix}-sw-{self.suffix}"
        self.nodes: list[LabNode] = []
        self.created: list[str] = []          # namespaces made so far, removed by close()
        self._processes: list[subprocess.Popen] = []
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self.close)
        try:
            self._build(prefix, nodes)
        except BaseException:
            self.close()
            raise

    # ---- building

    def _add_namespace(self, name: str) -> None:
        if name in namespaces():
            raise NetnsError(f"namespace {name} exists already (another lab with the same suffix?)")
        _run(["ip", "netns", "add", name])
        self.created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        run_in(name, ["sysctl", "-q", "-w", *LAB_SYSCTLS])

    def _build(self, prefix: str, count: int) -> None:
        sw = self.switch
        self._add_namespace(sw)
        _run(["ip", "-n", sw, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"])
        _run(["ip", "-n", sw, "link", "set", BRIDGE, "up"])
        _run(["ip", "-n", sw, "addr", "add", str(SWITCH_IPV4), "dev", BRIDGE])
        _run(["ip", "-n", sw, "-6", "addr", "add", str(SWITCH_IPV6), "dev", BRIDGE, "nodad"])
        for i in range(count):
            self.nodes.append(self._build_node(prefix, i))

    def _build_node(self, prefix: str, i: int) -> LabNode:
        ns, port, sw = f"{prefix}-n{i}-{self.suffix}", f"p{i}", self.switch
        ipv4 = ipaddress.IPv4Interface(f"192.0.2.{10 + i}/24")
        ipv6 = ipaddress.IPv6Interface(f"2001:db8::{10 + i}/64")  # same digits as the IPv4 host part
        self._add_namespace(ns)
        # both veth ends are made straight inside the lab's namespaces, never in the host's
        _run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", NODE_INTERFACE, "netns", ns])
        _run(["ip", "-n", sw, "link", "set", port, "master", BRIDGE, "up"])
        _run(["ip", "-n", ns, "link", "set", NODE_INTERFACE, "up"])
        _run(["ip", "-n", ns, "addr", "add", str(ipv4), "dev", NODE_INTERFACE])
        _run(["ip", "-n", ns, "-6", "addr", "add", str(ipv6), "dev", NODE_INTERFACE, "nodad"])
        _run(["ip", "-n", ns, "route", "add", "default", "via", str(SWITCH_IPV4.ip), "dev", NODE_INTERFACE])
        _run(["ip", "-n", ns, "-6", "route", "add", "default", "via", str(SWITCH_IPV6.ip), "dev", NODE_INTERFACE])
        mac = ip_json(ns, "link", "show", "dev", NODE_INTERFACE)[0]["address"]
        return LabNode(i, ns, NODE_INTERFACE, port, ipv4, ipv6, mac)

    # ---- using

    @property
    def namespaces(self) -> list[str]:
        """All the lab's namespace names, switch first."""
        return list(self.created)

    def node(self, index: int) -> LabNode:
        """Node `index`."""
        return self.nodes[index]

    def run(self, ns: str | LabNode, argv: Sequence[str], check: bool = True,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """run_in() for one of this lab's namespaces."""
        self._own(ns)
        return run_in(ns, argv, check=check, timeout=timeout)

    def popen(self, ns: str | LabNode, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """popen_in() for one of this lab's namespaces; the process is stopped by close() if still running."""
        self._own(ns)
        proc = popen_in(ns, argv, **popen_kwargs)
        with self._lock:
            self._processes.append(proc)
        return proc

    def network(self, node: str | LabNode, backend: str = DEFAULT_BACKEND,
                argv_prefix: Sequence[str] = ()) -> NamespaceNetwork:
        """A NetworkBackend whose calls run inside `node`'s namespace (closed by close())."""
        self._own(node)
        net = NamespaceNetwork(_ns_name(node), backend=backend, argv_prefix=argv_prefix)
        with self._lock:
            self._closers.append(net.close)
        return net

    def sniffer(self, interface: str = BRIDGE) -> Sniffer:
        """A Sniffer on the switch's bridge (or another interface of the switch), already capturing."""
        sniff = Sniffer(self.switch, interface)
        with self._lock:
            self._closers.append(sniff.close)
        return sniff

    def _own(self, ns: str | LabNode) -> None:
        if self._closed:
            raise NetnsError("the lab is closed")
        if _ns_name(ns) not in self.created:
            raise NetnsError(f"{_ns_name(ns)} is not a namespace of this lab ({', '.join(self.created)})")

    # ---- removing

    def close(self) -> None:
        """Stop the lab's workers, sniffers and processes, then delete its namespaces. Idempotent.

        Processes still running inside the lab's namespaces are killed by pid
        (`ip netns pids`); deleting a namespace removes its veth ends and bridge.
        NetnsError after trying everything if a namespace could not be deleted.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            closers, self._closers = self._closers, []
            processes, self._processes = self._processes, []
        atexit.unregister(self.close)
        for close in reversed(closers):
            try:
                close()
            except Exception:  # removal below must still run
                pass
        for proc in processes:
            _stop_process(proc)
        failures = []
        for name in reversed(self.created):
            pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            done = _run(["ip", "netns", "del", name], check=False)
            if done.returncode != 0 and name in namespaces():
                failures.append(f"{name}: {done.stderr.strip()}")
        if failures:
            raise NetnsError("could not delete namespaces: " + "; ".join(failures))

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetnsLab(switch={self.switch!r}, nodes={[n.ns for n in self.nodes]!r})"


# --------------------------------------------------------------------------- the sniffer

class Sniffer:
    """ARP and neighbour-discovery frames seen on an interface of a namespace (sim.netns_sniff in a subprocess).

    Starts capturing in the constructor and returns once the capture is live.
    Every frame is a dict in the format documented in sim.netns_sniff
    (t, dir, kind, eth_src, eth_dst, vlan, mac, ip, and per kind more).
    """

    def __init__(self, namespace: str, interface: str = BRIDGE, ready_timeout: float = 10.0) -> None:
        self.namespace, self.interface = namespace, interface
        self._frames: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._proc = popen_in(namespace, [sys.executable, "-u", "-m", "sim.netns_sniff", interface],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, name=f"sniff-{namespace}", daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout):
            self.close()
            raise NetnsError(f"sniffer on {interface} in {namespace} did not start: {self._stderr()}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                frame = json.loads(line)
            except json.JSONDecodeError:
                continue
            if frame.get("kind") == "ready":
                self._ready.set()
                continue
            with self._changed:
                self._frames.append(frame)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _stderr(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return "no output"
        return self._proc.stderr.read().strip() or f"exit status {self._proc.returncode}"

    @property
    def frames(self) -> list[dict[str, Any]]:
        """A copy of every frame captured so far (since the last clear())."""
        with self._changed:
            return list(self._frames)

    def clear(self) -> None:
        """Forget the frames captured so far."""
        with self._changed:
            self._frames.clear()

    @staticmethod
    def _matches(frame: dict[str, Any], since: float | None, predicate: Callable[[dict[str, Any]], bool] | None,
                 fields: dict[str, Any]) -> bool:
        if since is not None and frame["t"] < since:
            return False
        if any(frame.get(k) != (str(v) if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else v)
               for k, v in fields.items()):
            return False
        return predicate is None or predicate(frame)

    def find(self, predicate: Callable[[dict[str, Any]], bool] | None = None, since: float | None = None,
             **fields: Any) -> list[dict[str, Any]]:
        """The frames captured so far whose fields equal `fields` (and satisfy `predicate`, at or after `since`)."""
        return [f for f in self.frames if self._matches(f, since, predicate, fields)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 5.0,
                 since: float | None = None, **fields: Any) -> dict[str, Any]:
        """The first frame matching like find(), waiting up to `timeout` seconds for it.

        Example: wait_for(kind="na", ip="2001:db8::100", override=True).
        TimeoutError (listing what was captured) if none comes.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for frame in self._frames:
                    if self._matches(frame, since, predicate, fields):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc.poll() is not None and not self._reader.is_alive()):
                    seen = "\n  ".join(json.dumps(f) for f in self._frames[-20:]) or "nothing"
                    raise TimeoutError(f"no frame matching {fields or predicate} on {self.interface} in "
                                       f"{self.namespace} within {timeout}s; captured:\n  {seen}")
                self._changed.wait(min(left, 0.2))

    def close(self) -> None:
        """Stop the capture (idempotent); the frames stay readable."""
        _end_stdin_worker(self._proc)  # the sniffer exits when its stdin closes
        self._reader.join(2.0)

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- a backend inside a namespace

def _encode(value: Any) -> Any:
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return {"ip_interface": str(value)}
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return {"ip_address": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "ip_interface" in value:
        return ipaddress.ip_interface(value["ip_interface"])
    if isinstance(value, dict) and "ip_address" in value:
        return ipaddress.ip_address(value["ip_address"])
    return value


class NamespaceNetwork:
    """A NetworkBackend that runs another backend (NetlinkNetwork by default) inside a network namespace.

    One worker process (`python -m sim.netns serve`) per instance, started
    with `ip netns exec` (and `argv_prefix`, e.g. setpriv to drop privileges);
    each call is one JSON line each way, a few milliseconds. NetworkError from
    the backend is raised here with the same message; anything else as
    NetnsError. Thread-safe (calls are serialised).
    """

    def __init__(self, namespace: str, backend: str = DEFAULT_BACKEND, argv_prefix: Sequence[str] = (),
                 start_timeout: float = 20.0) -> None:
        self.namespace, self.backend = namespace, backend
        self._lock = threading.Lock()
        self._buffer = b""
        self._proc = popen_in(namespace, [*argv_prefix, sys.executable, "-m", "sim.netns", "serve", backend],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            hello = self._receive(time.monotonic() + start_timeout)
        except NetnsError:
            self.close()
            raise
        if not hello.get("ready"):
            self.close()
            raise NetnsError(f"backend {backend} in {namespace} did not start: {hello.get('message', hello)}")

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(0.0, left))
            if not readable:
                raise NetnsError(f"backend in {self.namespace} did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise NetnsError(f"backend in {self.namespace} exited (status {self._proc.wait()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def call(self, method: str, *args: Any, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Call backend `method` with `args` inside the namespace and return its result."""
        if method not in BACKEND_METHODS:
            raise NetnsError(f"{method} is not a NetworkBackend method")
        request = json.dumps({"method": method, "args": [_encode(a) for a in args]}).encode() + b"\n"
        with self._lock:
            if self._proc.poll() is not None or self._proc.stdin is None:
                raise NetnsError(f"backend in {self.namespace} is not running")
            try:
                self._proc.stdin.write(request)
                self._proc.stdin.flush()
            except OSError as exc:
                raise NetnsError(f"backend in {self.namespace}: {exc}") from exc
            reply = self._receive(time.monotonic() + timeout)
        if reply.get("ok"):
            return reply.get("result")
        if reply.get("error") == "NetworkError":
            raise NetworkError(reply["message"])
        raise NetnsError(f"{method} in {self.namespace}: {reply.get('error')}: {reply.get('message')}\n"
                         f"{reply.get('traceback', '')}")

    def check(self, interface: str) -> None:
        """NetworkBackend.check inside the namespace."""
        self.call("check", interface)

    def ensure_vlan(self, parent: str, vlan_id: int) -> str:
        """NetworkBackend.ensure_vlan inside the namespace."""
        return self.call("ensure_vlan", parent, vlan_id)

    def has_address(self, interface: str, address: IPInterface) -> bool:
        """NetworkBackend.has_address inside the namespace."""
        return self.call("has_address", interface, address)

    def add_address(self, interface: str, address: IPInterface) -> None:
        """NetworkBackend.add_address inside the namespace."""
        self.call("add_address", interface, address)

    def remove_address(self, interface: str, address: IPInterface) -> None:
        """NetworkBackend.remove_address inside the namespace."""
        self.call("remove_address", interface, address)

    def link_up(self, interface: str) -> bool:
        """NetworkBackend.link_up inside the namespace."""
        return bool(self.call("link_up", interface))

    def probe(self, interface: str, address: IPAddress, timeout: float) -> ProbeAnswer:
        """NetworkBackend.probe inside the namespace."""
        return ProbeAnswer(*self.call("probe", interface, address, timeout, timeout=timeout + COMMAND_TIMEOUT))

    def announce(self, interface: str, address: IPAddress, router: bool = False) -> None:
        """NetworkBackend.announce inside the namespace."""
        self.call("announce", interface, address, router)

    def set_route_source(self, interface: str, address: IPInterface) -> None:
        """NetworkBackend.set_route_source inside the namespace."""
        self.call("set_route_source", interface, address)

    def restore_route_source(self, interface: str, address: IPInterface) -> None:
        """NetworkBackend.restore_route_source inside the namespace."""
        self.call("restore_route_source", interface, address)

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        with self._lock:
            _end_stdin_worker(self._proc)  # the worker exits at end of input


def serve(spec: str, stdin: Iterable[str] = sys.stdin) -> int:
    """The NamespaceNetwork worker: build backend `module:Class`, answer JSON-line calls until end of input."""
    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        module, _, name = spec.partition(":")
        backend = getattr(importlib.import_module(module), name)()
    except Exception as exc:
        reply({"ready": False, "message": f"cannot load {spec}: {type(exc).__name__}: {exc}"})
        return 1
    reply({"ready": True, "pid": os.getpid()})
    for line in stdin:
        try:
            request = json.loads(line)
            method = request["method"]
            if method not in BACKEND_METHODS:
                raise ValueError(f"{method} is not a NetworkBackend method")
            result = getattr(backend, method)(*[_decode(a) for a in request.get("args", [])])
            reply({"ok": True, "result": _encode(result)})
        except NetworkError as exc:
            reply({"ok": False, "error": "NetworkError", "message": str(exc)})
        except Exception as exc:
            reply({"ok": False, "error": type(exc).__name__, "message": str(exc),
                   "traceback": traceback.format_exc()})
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sim.netns serve MODULE:CLASS` (the NamespaceNetwork worker)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "serve":
        return serve(args[1])
    print("usage: python -m sim.netns serve MODULE:CLASS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


def call_in_namespace(ns: str | LabNode, function: Callable[[], Any]) -> Any:
    """Run `function` on a thread that has entered `ns`'s network namespace.

    Sockets it creates live in that namespace and keep working from any thread
    afterwards (used to put the loopback-free UDP relay on the lab's switch).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict[str, Any] = {}

    def target() -> None:
        fd = os.open(f"/run/netns/{_ns_name(ns)}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                outcome["error"] = NetnsError(f"setns into {_ns_name(ns)}: {os.strerror(ctypes.get_errno())}")
                return
            outcome["value"] = function()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=target, name=f"in-{_ns_name(ns)}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


CLONE_NEWNET = 0x40000000
