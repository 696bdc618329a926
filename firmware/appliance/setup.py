"""An unpaired box: "unpaired" on its front panel, pairing at the panel, and the panel's network undo.

Until a box is paired it has no node config, so the daemon does not run (tandem.service has
``ConditionPathExists=/etc/tandem/tandem.toml``). `tandem setup` runs instead
(tandem-setup.service, with the opposite condition): it drives the board's front panel and answers
on the control socket, and it holds nothing: no address, no PBX, no relay.

From the panel's menu the integrator starts "Pair with peer" on both boxes. `PanelPairing` runs
the same key agreement as `tandem pair` over the serial crossover cable; both panels then show the
six-digit code and ask whether the other box shows the same; Yes on both writes the cluster key,
the pairing record and the node config (each atomically), and `tandem setup` starts the daemon
(``systemctl start --no-block tandem.service``, which polkit allows the tandem user) and exits. If
`tandem pair` pairs the box instead, `tandem setup` sees the node config appear and exits too, so
the panel and the cable have one owner. No, a cancel, a timeout or a third device ends the attempt with its reason on the
glass and nothing written; the box stays unpaired and can try again.

The box's node name is its serial number (from first boot), shortened to a node name; the
heartbeat address it offers is the first IPv4 address on its heartbeat port, as `tandem network`
set it. "Pair as primary" on one box makes it the primary (else the roles are equal); a "Shared IP"
entered on one box before pairing reaches both configs, as `tandem pair --shared-ip` does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

import psutil

from firmware import __version__, paths
from firmware.appliance.bootreason import last_boot
from firmware.appliance.extension import register_network_commands
from firmware.appliance.firstboot import load_box
from firmware.appliance.mgmtnet import DEFAULT_NETWORKD_DIR, NetworkStore
from firmware.config.loading import find_board_profile, load_board_profile
from firmware.config.node import DEFAULT_CONTROL_SOCKET
from firmware.core.control import ControlError, ControlServer
from firmware.core.endpoints import Endpoints, LocalClient, SourceParams
from firmware.core.journal import Journal
from firmware.pairing.identity import load_or_create_identity, public_hex
from firmware.pairing.nodeconfig import node_config_text, shared_ip_setting, write_node_config
from firmware.pairing.protocol import Pairing, PairingError, PairingResult
from firmware.pairing.session import pair_over_serial, save_pairing
from firmware.panel.setup import open_board_panel, register_panel_commands
from firmware.panel.ui import PanelOptions

log = logging.getLogger(__name__)

PAIRING_TIMEOUT_S = 300.0
START_DAEMON = ("systemctl", "start", "--no-block", "tandem.service")


def node_name(serial: str) -> str:
    """A node name (1-16 letters, digits, '.', '_', '-') from a serial number: its tail, cleaned."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", serial).strip("._-") or "box"
    tail = cleaned[-16:].lstrip("._-")
    return tail or "box"


def heartbeat_address(port: str | None, udp_port: int = 694) -> str | None:
    """``host:port`` of the first IPv4 address on the heartbeat `port`, or None if it has none."""
    for address in psutil.net_if_addrs().get(port or "", []):
        if address.family.name == "AF_INET":
            return f"{address.address}:{udp_port}"
    return None


class PanelPairing:
    """One pairing at a time over the serial cable, driven from the panel; its phase is in the status.

    Phases: ``idle`` (never tried), ``waiting`` (for the other box), ``code`` (the operator compares),
    ``confirmed`` (Yes here, waiting for the other box), ``done``, ``failed`` (``message`` says why).
    """

    def __init__(self, port: str, own: Callable[[], dict[str, Any]],
                 save: Callable[[PairingResult, dict[str, Any]], str], timeout: float = PAIRING_TIMEOUT_S) -> None:
        self.port = port
        self.timeout = timeout
        self._own = own
        self._save = save
        self._lock = threading.Lock()
        self._phase, self._code, self._message = "idle", None, "not paired: Pair with peer from the menu"
        self._answer: bool | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()
        """Set once a pairing succeeded and its files are written."""

    def status(self) -> dict[str, Any]:
        """``{"phase", "code", "message"}`` for the status snapshot (the panel's setup screens)."""
        with self._lock:
            return {"phase": self._phase, "code": self._code, "message": self._message}

    def start(self) -> str:
        """Begin pairing (the other box must be pairing too); refused while one is under way."""
        with self._lock:
            if self._phase in ("waiting", "code", "confirmed"):
                raise ControlError("pairing is already under way")
            if self._phase == "done":
                raise ControlError("this box is paired already")
            own = self._own()
            self._phase, self._code = "waiting", None
            self._message = f"pairing as {own['node']}: start pairing on the other box too"
            self._answer = None
            self._cancel.clear()
        self._thread = threading.Thread(target=self._run, args=(own,), name="tandem-pairing", daemon=True)
        self._thread.start()
        return "pairing: start pairing on the other box too"

    def answer(self, same: bool) -> str:
        """The operator's answer to "does the other box show the same code?"."""
        with self._lock:
            if self._phase != "code":
                raise ControlError("no code to compare now")
            self._answer = same
            if same:
                self._phase, self._message = "confirmed", f"code {self._code} confirmed: waiting for the other box"
        return "confirmed: waiting for the other box" if same else "codes differ: pairing refused"

    def cancel(self) -> str:
        """End a pairing under way (the other box is told); nothing is written."""
        with self._lock:
            if self._phase not in ("waiting", "code", "confirmed"):
                raise ControlError("no pairing under way")
        self._cancel.set()
        return "cancelling"

    def _ask(self, code: str) -> bool | None:
        """The operator's answer so far (None: not yet; the session asks again and reads the cable meanwhile)."""
        with self._lock:
            if self._phase == "waiting":
                self._phase, self._code = "code", code
                self._message = f"code {code}: same on the other box?"
            if self._cancel.is_set():
                return False
            return self._answer

    def _run(self, own: dict[str, Any]) -> None:
        try:
            result = pair_over_serial(self.port, Pairing(own), self._ask, timeout=self.timeout,
                                      cancelled=self._cancel.is_set)
            message = self._save(result, own)
        except PairingError as exc:
            why = "cancelled: nothing was written" if self._cancel.is_set() else str(exc)
            self._end("failed", why)
            return
        except Exception as exc:  # noqa: BLE001 - a write that failed: shown on the glass, the box stays unpaired
            log.exception("setup: saving the pairing failed")
            self._end("failed", f"paired, but writing the result failed: {exc}")
            return
        self._end("done", message)
        self.finished.set()

    def _end(self, phase: str, message: str) -> None:
        log.info("setup: pairing %s: %s", phase, message)
        with self._lock:
            self._phase, self._message = phase, message


@dataclass
class SetupPaths:
    """Where an unpaired box's pairing reads and writes (the same defaults as `tandem pair`)."""

    config: Path = paths.CONFIG_FILE
    key_file: Path = paths.CLUSTER_KEY
    record: Path = paths.PAIRING_RECORD
    identity: Path = paths.IDENTITY_KEY
    state_dir: Path = paths.STATE_DIR
    socket: Path = DEFAULT_CONTROL_SOCKET
    networkd_dir: Path = DEFAULT_NETWORKD_DIR


class PairStartParams(SourceParams):
    """``pair-start``: whether this box is to be the primary (the other box pairs "with peer")."""

    primary: bool = False


class SharedIpParams(SourceParams):
    """``setup-shared-ip``: the shared IP this box brings to the pairing, and its LAN port."""

    port: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
    address: Annotated[str, Field(max_length=64)] | None = None


class SetupNode:
    """The unpaired box's little daemon: the pairing, the status, the control socket and the panel."""

    def __init__(self, board: str, serial_port: str, heartbeat_port: str | None, where: SetupPaths,
                 networkctl: str = "networkctl", then: Sequence[str] = START_DAEMON) -> None:
        """`then`: the command that starts the daemon once the box is paired."""
        self.then = list(then)
        self.board_path = find_board_profile(board, where.config)
        self.board_name = board
        self.profile = load_board_profile(self.board_path)
        self.paths = where
        self.heartbeat_port = heartbeat_port
        box = load_box(where.state_dir)
        self.serial = box.serial if box is not None else "unknown"
        self.booted = last_boot(where.state_dir)
        self.primary = False  # "Pair as primary" at the panel
        self.shared_ip: dict[str, str] | None = None  # "Shared IP" at the panel: sent with the pairing
        self.pairing = PanelPairing(serial_port, self._own_settings, self._save)
        where.state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(where.state_dir)
        self.endpoints = Endpoints(self.journal)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._register(networkctl)
        self.panel = None
        if self.profile.panel is not None:
            client = LocalClient(self.endpoints, lambda: self.loop)
            try:
                self.panel = open_board_panel(self.profile.panel, self.board_path, PanelOptions(),
                                              lambda payload: client.request(payload, 120.0))
            except Exception as exc:  # noqa: BLE001 - no panel: `tandem pair` still pairs the box
                log.error("setup: the front panel could not be opened (%s); pair with `tandem pair`", exc)
        register_panel_commands(self.endpoints, self.panel, self.journal)

    def _register(self, networkctl: str) -> None:
        endpoints = self.endpoints
        endpoints.add_status(lambda: {"node": node_name(self.serial), "serial": self.serial, "state": "UNPAIRED",
                                      "version": __version__, "board": self.board_name, "last_boot": self.booted,
                                      "setup": {**self.pairing.status(), "primary": self.primary,
                                                "shared_ip": self.shared_ip}})
        endpoints.add_command("status", lambda request: endpoints.status())
        endpoints.add_command("pair-start", self._pair_start, PairStartParams, journaled=True)
        for name, action in (("pair-cancel", self.pairing.cancel),
                             ("pair-confirm", lambda: self.pairing.answer(True)),
                             ("pair-reject", lambda: self.pairing.answer(False))):
            endpoints.add_command(name, lambda request, action=action: action(), SourceParams, journaled=True)
        endpoints.add_command("setup-shared-ip", self._set_shared_ip, SharedIpParams, journaled=True)
        store = NetworkStore(self.paths.config.parent / "network.json", self.paths.networkd_dir)
        register_network_commands(endpoints, self.journal, store, networkctl)

    def _pair_start(self, request: dict[str, Any]) -> str:
        self.primary = request["primary"]
        return self.pairing.start()

    def _set_shared_ip(self, request: dict[str, Any]) -> str:
        """The shared IP this box brings to the pairing (both configs get it); the address None clears it."""
        if request["address"] is None:
            self.shared_ip = None
            return "no shared IP"
        try:
            self.shared_ip = shared_ip_setting(request["address"], request["port"])
        except ValueError as exc:
            raise ControlError(f"setup-shared-ip: {exc}") from None
        return f"shared IP {self.shared_ip['address']} on {request['port']}: both boxes get it when they pair"

    def _own_settings(self) -> dict[str, Any]:
        identity = load_or_create_identity(self.paths.identity)
        own = {"node": node_name(self.serial), "primary": self.primary,
               "address": heartbeat_address(self.heartbeat_port), "identity": public_hex(identity)}
        if self.shared_ip is not None:
            own["shared_ips"] = [self.shared_ip]
        return own

    def _save(self, result: PairingResult, own: dict[str, Any]) -> str:
        save_pairing(result, self.paths.key_file, self.paths.record, own)
        write_node_config(self.paths.config, node_config_text(own, result.peer_settings, self.board_name,
                                                              self.paths.key_file, self.pairing.port,
                                                              self.paths.identity, self.paths.record))
        return f"paired with {result.peer_name}: starting tandem"

    def _start_daemon(self) -> int:
        """Run `then`; its exit status (a failure is logged: the box is paired, the daemon starts at boot)."""
        try:
            done = subprocess.run(self.then, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("setup: paired, but %s failed: %s", " ".join(self.then), exc)
            return 1
        if done.returncode != 0:
            log.error("setup: paired, but %s failed: %s", " ".join(self.then), done.stderr.strip())
        return done.returncode

    async def run(self) -> int:
        """Serve until the box is paired (0) or the process is stopped."""
        self.loop = asyncio.get_running_loop()
        server = ControlServer(self.paths.socket, self.endpoints.handle)
        await server.start()
        if self.panel is not None:
            self.panel.start()
        try:
            shown = None
            while not self.pairing.finished.is_set():
                await asyncio.sleep(0.2)
                if self.panel is not None and self.pairing.status() != shown:  # a new phase: to the glass now
                    shown = self.pairing.status()
                    self.panel.notify()
                if self.pairing.status()["phase"] in ("idle", "failed") and self.paths.config.exists():
                    log.info("setup: %s appeared (`tandem pair`): the panel and the cable are the daemon's now",
                             self.paths.config)
                    return 0
            await asyncio.sleep(2.0)  # the glass shows "paired" a moment before tandem.service takes over
            return await asyncio.to_thread(self._start_daemon)
        finally:
            if self.panel is not None:
                await asyncio.to_thread(self.panel.close)
            await server.close()
            self.journal.close()
