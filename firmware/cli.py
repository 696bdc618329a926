"""The `tandem` command line: run the daemon, inspect and steer it, set up keys and configs."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from firmware import __version__, paths
from firmware.config import (
    DEFAULT_CONFIG_PATH,
    check_key_file_permissions,
    effective_config,
    load_config,
    load_release_config,
)
from firmware.config.node import DEFAULT_CONTROL_SOCKET
from firmware.core.control import ControlError, request, socket_in_use, stream
from firmware.core.links import LinkError
from firmware.core.protocol import Keyring
from firmware.errors import ConfigError

EXIT_FAILURE = 1
EXIT_CONFIG = 78  # sysexits EX_CONFIG: systemd units can refuse to restart on it
CLI_PLUGINS = "tandem.cli"  # entry points: callables that add subcommands to the parser's subparsers


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("TANDEM_CONFIG") or DEFAULT_CONFIG_PATH)


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    return load_config(_config_path(args)).node.control_socket


def call(args: argparse.Namespace, payload: dict[str, Any], timeout: float = 60.0) -> Any:
    """One control request to the daemon the arguments name; its result (ControlError if refused)."""
    return request(_socket_path(args), payload, timeout)


# ---------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from firmware.core.guardian import Guardian
    from firmware.core.logsetup import add_context, configure_logging
    from firmware.core.operator import EXIT_POWER_FAILED
    from firmware.node import build_node

    configure_logging(args.verbose)
    config = load_config(_config_path(args))
    add_context(node=config.node.node)
    # Forked before anything opens hardware or starts a thread; it releases the node if this process dies.
    guardian = Guardian.fork(config.path)
    node = build_node(config, guardian)
    status = asyncio.run(node.daemon.run())
    if status in (0, EXIT_POWER_FAILED):  # the node left the cluster: nothing is held for the guardian to release
        guardian.clean_exit()
    return status


def cmd_release(args: argparse.Namespace) -> int:
    """Open the relays, stop a cold PBX, then remove the shared IPs, while the daemon is not running.

    Run by systemd after the daemon stopped (ExecStopPost=). Refuses while a
    daemon answers on the control socket, unless forced. Never hangs: each
    action has its timeout, and the whole command ends after ``--timeout``.
    """
    from firmware.core.release import release_node

    config = load_release_config(_config_path(args))
    socket_path = Path(args.socket) if args.socket else config.node.control_socket
    if not args.force and socket_in_use(socket_path):
        print(f"tandem: a daemon answers on {socket_path}: `tandem demote` hands the calls over; "
              "`tandem release --force` lets go regardless", file=sys.stderr)
        return EXIT_FAILURE
    deadline = threading.Timer(args.timeout, _release_timed_out, (args.timeout,))
    deadline.daemon = True
    deadline.start()
    result = release_node(config, args.source)
    print(result.release_record()["detail"])
    sys.stdout.flush()
    # A backend call stuck in a worker thread would hold up the interpreter's exit: leave now.
    os._exit(0 if result.ok else EXIT_FAILURE)


def _release_timed_out(timeout: float) -> None:
    print(f"tandem: release gave up after {timeout:g} s", file=sys.stderr, flush=True)
    os._exit(EXIT_FAILURE)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config (and its key file) and print the effective configuration.

    Every problem found is one `file: key: reason` line on stderr (exit 78, EX_CONFIG).
    """
    path = Path(args.path) if args.path else _config_path(args)
    try:
        return _check_config(path, quiet=args.quiet)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tandem: config error: {problem.line}", file=sys.stderr)
        return EXIT_CONFIG


def _check_config(path: Path, quiet: bool = False) -> int:
    config = load_config(path)
    problems: list[ConfigError] = []
    keyring = None
    try:
        check_key_file_permissions(config.node.key_file, config.path)
        keyring = Keyring.load(config.node.key_file)
    except ConfigError as exc:
        problems.append(exc)
    except (OSError, ValueError) as exc:
        problems.append(ConfigError(config.path, "key_file", f"{config.node.key_file}: {exc}"))
    from firmware.core.health import sensor_options

    checked: list[Any] = []
    try:
        checked = sensor_options(config)  # every sensor's family and options, named by file and key on error
    except ConfigError as exc:
        problems.append(exc)
    from firmware.drivers import check_board_drivers

    # Every driver imports and implements its interface, and takes its parameters (none is opened here).
    banks: dict[tuple[str, str], Any] = {}
    problems += check_board_drivers(config.board, config.board_path, banks)
    for index, group in enumerate(config.node.relay_groups):  # channels the banks have
        for field, section in (("outputs", "relays"), ("feedback", "feedback")):
            for ref in getattr(group, field):
                name, _, channel = ref.partition(":")
                channels = getattr(banks.get((section, name)), "channels", None)
                if isinstance(channels, int) and int(channel) > channels:
                    problems.append(ConfigError(config.path, f"relay_groups[{index}].{field}",
                                                f"{ref}: {section} bank {name!r} of {config.board_path.name} has "
                                                f"channels 1-{channels}"))
    if problems:
        raise ConfigError.of(problems)
    assert keyring is not None  # no key file problem: it loaded
    data = effective_config(config)
    data["keys"] = {"send_key_id": keyring.send_id, "accepted_key_ids": keyring.key_ids}
    warnings = []
    if not config.node.witness.targets:
        warnings.append("witness.targets is empty: when the peer is silent on every link this node "
                        "takes over without a split-brain check")
    node = config.node
    fence_budget = node.timers.deadtime_ms - 1.2 * node.timers.heartbeat_ms
    if node.witness.targets and node.fencing.isolated and node.witness.timeout_ms >= fence_budget:
        warnings.append(f"witness.timeout_ms ({node.witness.timeout_ms}) leaves no time to fence an isolated "
                        f"ACTIVE node before the peer's deadtime: keep it below {fence_budget:.0f}")
    slow = [entry.name for entry, _, _ in checked if entry.timeout_s * 1000 >= node.timers.initdead_ms]
    if slow:
        warnings.append(f"sensors {', '.join(slow)} may take longer than timers.initdead_ms "
                        f"({node.timers.initdead_ms}) to answer: a starting node can be judged before their "
                        "first reading (health counts only sensors that have reported)")
    if len(config.node.links) < 2:
        warnings.append("only one link: a single broken cable or switch makes the peer look dead")
    data["warnings"] = warnings
    if not quiet:
        print(json.dumps(data, indent=2))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK", file=sys.stderr)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new cluster key file with mode 0600 (or add a key for rotation)."""
    from firmware.core.protocol import write_key_file

    path = Path(args.path)
    try:
        write_key_file(path, key_id=args.key_id, add=args.add)
    except FileExistsError:
        raise ControlError(f"{path} exists; use --add to add a key for rotation, or remove it first") from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"{path}: {exc}") from None
    action = "added key" if args.add else "wrote key"
    print(f"{action} id {args.key_id} to {path} (mode 0600); copy the file to the peer over a secure channel")
    return 0


def _give_to_directory_owners(paths: list[Path]) -> None:
    """Run as root, hand each written file to its directory's owner (on the image: the daemon's user).

    Pairing is an installer's job and is often run as root; a key file the unprivileged daemon cannot
    read would only fail later, at its start.
    """
    if os.geteuid() != 0:
        return
    for path in paths:
        if path.exists():
            owner = path.parent.stat()
            if owner.st_uid != 0:
                os.chown(path, owner.st_uid, owner.st_gid)


def cmd_pair(args: argparse.Namespace) -> int:
    """Pair with the box at the other end of the serial crossover cable; write the cluster key and the record."""
    from firmware.pairing.identity import load_or_create_identity, public_hex
    from firmware.pairing.nodeconfig import node_config_text, shared_ip_setting, write_node_config
    from firmware.pairing.protocol import Pairing, PairingError
    from firmware.pairing.session import pair_over_serial, save_pairing

    key_file, record = Path(args.key_file), Path(args.record)
    if key_file.exists() and not args.force:
        raise ControlError(f"{key_file} exists: this box is paired already (`tandem pair --force` re-pairs, "
                           "replacing the key on both boxes)")
    try:
        identity = load_or_create_identity(Path(args.identity))
    except (OSError, ValueError) as exc:
        raise ControlError(f"this box's identity key: {exc}") from None
    own = {"node": args.node, "primary": args.primary, "address": args.address, "identity": public_hex(identity)}
    if args.shared_ip:
        if not args.shared_interface:
            raise ControlError("--shared-ip needs --shared-interface (the LAN port it lives on, e.g. lan0)")
        try:
            own["shared_ips"] = [shared_ip_setting(args.shared_ip, args.shared_interface)]
        except ValueError as exc:
            raise ControlError(f"--shared-ip {args.shared_ip}: {exc}") from None

    def ask(code: str) -> bool:
        print(f"pairing code: {code}", flush=True)
        print("Does the other box show the same code? [y/N] ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    print(f"pairing as {args.node!r} on {args.port}: start `tandem pair` on the other box too", flush=True)
    config = Path(args.write_config) if args.write_config else None
    if config is not None and config.exists() and not args.force:
        raise ControlError(f"{config} exists: `tandem pair --force` replaces it")
    if config is not None and not args.board:
        raise ControlError("--write-config needs --board (the board profile of this box)")
    survivor = _running_node(args)
    if survivor is not None:  # re-pairing a replaced peer while this box keeps the calls
        if config is not None:
            raise ControlError("the daemon runs here: re-pairing keeps its config; leave out --write-config")
        if survivor.node != args.node:
            raise ControlError(f"the running config names this box {survivor.node!r}, not {args.node!r}")
        call(args, {"cmd": "serial.lend", "seconds": args.timeout + 30, "source": "cli"})
        print("the daemon lent its serial port to the pairing; it keeps the calls meanwhile", flush=True)
    try:
        result = pair_over_serial(args.port, Pairing(own), ask, timeout=args.timeout)
        if survivor is not None and result.peer_name != survivor.peer:
            raise ControlError(f"the new box calls itself {result.peer_name!r}, but this box's config expects "
                               f"{survivor.peer!r}: nothing was written here. Pair again with --node "
                               f"{survivor.peer} on the new box")
        save_pairing(result, key_file, record, own)
        if config is not None:
            write_node_config(config, node_config_text(own, result.peer_settings, args.board, key_file, args.port,
                                                       Path(args.identity), record))
            print(f"node config written to {config}")
        _give_to_directory_owners([key_file, record, Path(args.identity), *([config] if config else [])])
        if survivor is not None:
            reloaded = call(args, {"cmd": "keys.reload", "source": "cli"})
            print(f"the daemon took the new key (fingerprint {reloaded['fingerprint']}) without a restart")
    except PairingError as exc:
        raise ControlError(f"pairing failed: {exc}") from None
    except OSError as exc:
        raise ControlError(f"paired, but writing {key_file} or {record} failed: {exc}") from None
    finally:
        if survivor is not None:
            try:
                call(args, {"cmd": "serial.return", "source": "cli"})
            except ControlError as exc:
                print(f"tandem: the daemon did not take its serial port back ({exc}); it does when the loan ends",
                      file=sys.stderr)
    print(f"paired with {result.peer_name!r}; cluster key {result.fingerprint} written to {key_file} (mode 0600), "
          f"record {record}")
    return 0


def _running_node(args: argparse.Namespace) -> Any:
    """The node section of this box's config when its daemon answers on the control socket, else None."""
    path = _config_path(args)
    if not path.exists():
        return None
    node = load_config(path).node
    return node if socket_in_use(Path(args.socket) if args.socket else node.control_socket) else None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def format_status(s: dict[str, Any]) -> str:
    """Human-readable status table."""
    peer = s["peer"]
    lines = [
        f"Node     {s['node']} ({s['role']})  {s['state']}  for {_age(s['since_s'])}: {s['reason']}",
        f"Health   {s['health']}   epoch {s['epoch']}   flags {', '.join(s['flags']) or '-'}",
    ]
    if peer["alive"]:
        lines.append(f"Peer     {peer['name']} ({peer['role']})  {peer['state']}  health {peer['health']}  "
                     f"epoch {peer['epoch']}  heard {_age(peer['last_heard_s'])} ago")
    else:
        lines.append(f"Peer     {peer['name']}  SILENT on every link (last heard {_age(peer['last_heard_s'])}"
                     f"{' ago' if peer['last_heard_s'] is not None else ''})")
    lines.append("Links    " + "   ".join(f"{l['name']} {l['state']}" for l in s["links"]))
    w = s["witness"]
    if w["configured"]:
        verdict = "not checked yet" if w["ok"] is None else ("reachable" if w["ok"] else "UNREACHABLE")
        lines.append(f"Witness  {verdict}  {w['detail']}")
    else:
        lines.append("Witness  none configured")
    sensors = s.get("sensors") or []
    if sensors:
        counts = {level: sum(1 for x in sensors if x["state"] == level) for level in ("CRITICAL", "WARNING", "UNKNOWN")}
        lines.append(f"Sensors  {len(sensors)}: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n)
                     if any(counts.values()) else f"Sensors  {len(sensors)}, all OK")
    system = ((s.get("inventory") or {}).get("system") or {})
    if system:
        lines.append("Chassis  " + " ".join(str(system.get(k)) for k in ("manufacturer", "product_name", "serial_number")
                                             if system.get(k)))
    last_boot = s.get("last_boot") or {}
    if last_boot.get("reason"):
        lines.append(f"Booted   {_age(s.get('uptime_s'))} ago after a {last_boot['reason']}: {last_boot.get('detail', '')}")
    silenced = "  (silenced)" if s.get("alarm_silenced") else ""
    lines.append(f"Alarms   {len(s['alarms'])}{silenced}")
    lines += [f"  ! {alarm}" for alarm in s["alarms"]]
    return "\n".join(lines)


def _value_text(sensor: dict[str, Any]) -> str:
    units = sensor.get("units", {})
    return ", ".join(f"{name} {value:g}{(' ' + units[name]) if units.get(name) else ''}"
                     for name, value in sensor.get("values", {}).items())


def _threshold_text(thresholds: dict[str, dict[str, float]]) -> str:
    marks = {"warn_above": "W>", "crit_above": "C>", "warn_below": "W<", "crit_below": "C<", "hysteresis": "±"}
    return "; ".join(f"{name} " + " ".join(f"{marks[k]}{v:g}" for k, v in limits.items())
                     for name, limits in thresholds.items())


def format_sensors(sensors: list[dict[str, Any]]) -> str:
    """Every sensor: state, values, thresholds and the last error, worst first."""
    if not sensors:
        return "no sensors configured"
    rows = [f"{'SENSOR':<14} {'TYPE':<12} {'STATE':<9} {'AGE':>7}  VALUES / SUMMARY"]
    for s in sensors:
        age = "-" if s.get("age_s") is None else f"{s['age_s']:.0f} s"
        rows.append(f"{s['name']:<14} {s['type']:<12} {s['state']:<9} {age:>7}  {_value_text(s) or '-'}")
        if s.get("summary"):
            rows.append(f"{'':<45}{s['summary']}")
        if s.get("thresholds"):
            rows.append(f"{'':<45}thresholds: {_threshold_text(s['thresholds'])}")
        if s.get("error"):
            rows.append(f"{'':<45}last error: {s['error']}")
    return "\n".join(rows)


def cmd_sensors(args: argparse.Namespace) -> int:
    """List every sensor with its value, state, thresholds and last error."""
    sensors = call(args, {"cmd": "sensors"})
    print(json.dumps(sensors, indent=2) if args.json else format_sensors(sensors))
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    """Silence the active alarms (buzzer and blinking) until a new alarm is raised."""
    print(call(args, {"cmd": "alarm-silence", "source": "cli"}))
    return 0


def cmd_panel(args: argparse.Namespace) -> int:
    """Show the front panel's frame, or press its keys (boards with key injection, such as the simulator's)."""
    if args.panel_command == "show":
        frame = call(args, {"cmd": "panel.frame"})
        width = max((len(line) for line in frame["text"]), default=0)
        print("+" + "-" * width + "+")
        print("\n".join(f"|{line:<{width}}|" for line in frame["text"]))
        print("+" + "-" * width + "+")
        if args.png:
            import base64

            Path(args.png).write_bytes(base64.b64decode(frame["png"]))
            print(f"wrote {args.png}")
        return 0
    for key in args.keys:
        payload = {"cmd": "panel.press", "key": key, "action": "hold" if args.hold else "click"}
        if args.hold:
            payload["seconds"] = args.hold
        call(args, payload)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Draw a graph of recorded metrics from the history under the state directory."""
    from firmware.core.history import History

    config = load_config(_config_path(args))
    history = History(config.node.state_dir / "history")
    if args.list:
        print("\n".join(history.metrics()) or "no history recorded yet")
        return 0
    if not args.metrics:
        raise ControlError("name at least one metric (see `tandem graph --list`)")
    thresholds: dict[str, list[tuple[str, float]]] = {}
    from firmware.core.health import configured_sensors

    for entry, _, _ in configured_sensors(config):
        for value_name, limits in entry.thresholds.items():
            metric = f"{entry.name}.{value_name}"
            if metric in args.metrics:
                thresholds[metric] = [(f"{metric} {key.replace('_', ' ')}", bound)
                                      for key, bound in limits.model_dump(exclude_none=True).items()
                                      if key != "hysteresis"]
    try:
        history.graph(args.metrics, since=args.since, output=Path(args.output), thresholds=thresholds)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    print(f"wrote {args.output}")
    return 0


def format_links(links: list[dict[str, Any]]) -> str:
    """Per-link figures as a table."""
    header = f"{'LINK':<10} {'KIND':<7} {'STATE':<8} {'TX':<8} {'LAST HEARD':>10} {'RECEIVED':>9} {'LOST':>6} {'REJECTED':>9} {'LATE':>6}  DETAIL"
    rows = [header]
    for l in links:
        rx = "up" if l["rx"] else "down"
        tx = "ok" if l["tx"] else "unheard"
        rows.append(f"{l['name']:<10} {l['kind']:<7} {rx:<8} {tx:<8} {_age(l['last_heard_s']):>10} "
                    f"{l['received']:>9} {l['lost']:>6} {l['rejected_total']:>9} {l['late_over_50ms']:>6}  {l['detail']}")
    return "\n".join(rows)


def cmd_firstboot(args: argparse.Namespace) -> int:
    """First boot of an appliance: name the box from its hardware, make its identity key (once)."""
    from firmware.appliance.firstboot import first_boot

    try:
        box = first_boot(Path(args.state_dir), owner=args.owner or None)
    except (ValueError, OSError, KeyError) as exc:
        raise ControlError(f"first boot failed: {exc}") from None
    print(f"box {box.serial} (from {box.source}); identity {box.identity[:16]}…; unpaired until `tandem pair`")
    return 0


def cmd_boot_reason(args: argparse.Namespace) -> int:
    """Judge why the box last booted (at boot), or mark this boot's orderly end (at shutdown)."""
    from firmware.appliance import bootreason

    state_dir = Path(args.state_dir)
    if args.when == "stop":
        bootreason.at_shutdown(state_dir)
        return 0
    verdict = bootreason.at_boot(state_dir)
    print(f"last boot ended by: {verdict.reason} ({verdict.detail})")
    return 0


def cmd_factory_reset(args: argparse.Namespace) -> int:
    """Wipe the data partition at the next boot and reboot: the box comes back unpaired."""
    import subprocess

    from firmware.appliance import factoryreset

    try:
        if args.at_boot:
            factoryreset.wipe()
            print("factory reset: the data partition is new; the box boots unpaired")
            return 0
        if not args.yes:
            raise ControlError("factory reset wipes the cluster key, the config, the journal, history and PBX "
                               "data of this box: run it again with --yes to go ahead")
        factoryreset.request()
    except (factoryreset.FactoryResetError, OSError) as exc:
        raise ControlError(f"factory reset: {exc}") from None
    print("factory reset: the data partition is wiped at the next boot; rebooting now", flush=True)
    if not args.no_reboot:
        subprocess.run(["systemctl", "reboot"], check=False)
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """An unpaired box: drive its front panel and pair at it; exits 0 once paired."""
    import shlex

    from firmware.appliance.setup import SetupNode, SetupPaths
    from firmware.core.logsetup import configure_logging

    config = _config_path(args)
    state = Path(args.state_dir)
    where = SetupPaths(config=config, key_file=config.parent / paths.CLUSTER_KEY.name,
                       record=state / paths.PAIRING_RECORD_NAME, identity=state / paths.IDENTITY_KEY_NAME,
                       state_dir=state, socket=Path(args.socket) if args.socket else DEFAULT_CONTROL_SOCKET)
    if config.exists():
        raise ControlError(f"{config} exists: this box is paired (tandem.service runs it)")
    configure_logging(args.verbose)
    node = SetupNode(args.board, args.port, args.heartbeat_port, where, then=shlex.split(args.then))
    print(f"{node.serial}: unpaired; pair it at the front panel (Pair with peer), on both boxes", flush=True)
    return asyncio.run(node.run())


def cmd_network(args: argparse.Namespace) -> int:
    """Show or change this box's own ports (DHCP or static, gateway, DNS, VLAN), applied by systemd-networkd."""
    from firmware.appliance import mgmtnet

    store = mgmtnet.NetworkStore(Path(args.settings), Path(args.networkd_dir))
    networkctl = "true" if args.no_apply else "networkctl"
    try:
        ports = store.load()
        if args.network_command in (None, "show"):
            if args.json:
                print(json.dumps({"ports": {name: port.to_json() for name, port in ports.items()},
                                  "undo": store.can_undo()}))
                return 0
            for name in sorted(ports):
                print(ports[name].describe())
            print("every other Ethernet port: DHCP (the image's default)" if ports else
                  "no port set: every Ethernet port uses DHCP (the image's default)")
            return 0
        if args.network_command == "undo":
            ports, touched = mgmtnet.undo(store, networkctl)
            print(f"undone; now: {'; '.join(p.describe() for p in ports.values()) or 'DHCP on every port'}")
        else:
            new = dict(ports)
            if args.network_command == "remove":
                if args.port not in new:
                    raise ControlError(f"network: {args.port} is not set (`tandem network show`)")
                del new[args.port]
            else:
                new[args.port] = mgmtnet.PortSettings.parse(args.port, args.dhcp, args.address, args.gateway,
                                                            args.dns or (), args.vlan)
            touched = mgmtnet.change(store, new, networkctl)
            print(f"{args.port}: {new[args.port].describe() if args.port in new else 'back to DHCP'}; "
                  "`tandem network undo` (or Network undo at the panel) goes back")
    except mgmtnet.NetworkSettingError as exc:
        raise ControlError(f"network: {exc}") from None
    print(f"applied to {', '.join(touched)}" if touched and not args.no_apply else
          "saved, not applied (--no-apply)" if args.no_apply else "nothing changed")
    return 0


def cmd_bulk(args: argparse.Namespace) -> int:
    """Use the bulk channel to the peer: check it answers, read its status, copy a file into its inbox."""
    from firmware.pairing.bulk import BulkClient, BulkError, load_credentials

    node = load_config(_config_path(args)).node
    if node.bulk is None:
        raise ControlError(f"{_config_path(args)} has no [bulk] section (`tandem pair` writes one when both boxes "
                           "give --address)")
    try:
        host, port = node.bulk.peer_address
        credentials = load_credentials(node.bulk.identity, node.key_file, node.bulk.peer_identity, node.bulk.record)
        client = BulkClient(credentials, host, port)
        if args.bulk_command == "ping":
            client.ping()
            print(f"{node.peer} answers on the bulk channel ({host}:{port}, mutual TLS, identity checked)")
        elif args.bulk_command == "status":
            print(json.dumps(client.status(), indent=1))
        else:
            receipt = client.put(Path(args.file), args.name)
            print(f"{receipt['name']}: {receipt['size']} bytes in {node.peer}'s inbox, SHA-256 {receipt['sha256']}")
    except (BulkError, OSError) as exc:
        raise ControlError(f"bulk: {exc}") from None
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    """Update from a bundle: the rolling update of the pair (run on the ACTIVE node), or --check a bundle, or
    update this box on its own with --single, or --abort the update under way (hardware_docs/updates.md)."""
    if args.abort:
        print(call(args, {"cmd": "update-abort", "source": "cli"}))
        return 0
    if args.bundle is None:
        raise ControlError("update: name the bundle (or give --abort)")
    if not (args.check or args.single):
        return _rolling_update(args)
    return _update_this_box(args)


def _rolling_update(args: argparse.Namespace) -> int:
    """Start the rolling update on this (ACTIVE) node's daemon and follow it until it ends or this box reboots."""
    if not _config_path(args).exists():
        raise ControlError(f"update: this box is not paired (no {_config_path(args)}), and a rolling update is the "
                           "pair's: update it on its own with --single, or only --check the bundle")
    bundle = _staged(Path(os.path.abspath(args.bundle)), load_config(_config_path(args)).node)
    started = call(args, {"cmd": "update-start", "bundle": str(bundle), "source": "cli"})
    print(f"updating the pair to {started['version']} ({bundle}): {', '.join(started['stages'])}; "
          "`tandem update --abort` stops it", flush=True)
    if args.detach:
        return 0
    shown, stage = None, None
    while True:
        try:
            rolling = (call(args, {"cmd": "status"}, timeout=30.0).get("update") or {}).get("rolling") or {}
        except ControlError as exc:
            if stage not in ("install", "trial"):  # after its own install the box reboots
                raise ControlError(f"update: the daemon stopped answering at stage {stage} ({exc}); `tandem status` "
                                   "shows where the update is once it answers again") from None
            print("this box is rebooting into the new slot: `tandem status` shows the end of the update once it "
                  "is back", flush=True)
            return 0
        stage = rolling.get("stage")
        line = (f"[{rolling.get('percent', 0):3d}%] {rolling.get('stage')}"
                + (f", about {rolling['eta_s'] // 60:.0f} min left" if rolling.get("eta_s") else ""))
        if line != shown:
            print(line, flush=True)
            shown = line
        if rolling.get("outcome") is not None:
            if rolling["outcome"] == "done":
                print("done: both boxes run the new release, marked good")
                return 0
            raise ControlError(f"update {rolling['outcome']} at {rolling['stage']}: {rolling.get('reason')}")
        time.sleep(2.0)


def _staged(bundle: Path, node: Any) -> Path:
    """The bundle where the privileged helper installs from: as it is if it is in the inbox or on a stick
    under /media, else copied into the inbox (atomically) first."""
    if node.bulk is None or bundle.parent == node.bulk.inbox or bundle.parts[1:2] == ("media",):
        return bundle
    target = node.bulk.inbox / bundle.name
    temporary = target.with_name(f".{bundle.name}.copy")
    try:
        shutil.copyfile(bundle, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ControlError(f"update: cannot copy {bundle} into {node.bulk.inbox}: {exc.strerror or exc}") from None
    return target


def _update_this_box(args: argparse.Namespace) -> int:
    """--check a bundle, or --single: install it into this box's other slot and reboot into it on trial."""
    import subprocess

    from firmware.update.bundle import UpdateError
    from firmware.update.slots import RaucSlots

    bundle = Path(os.path.abspath(args.bundle))
    slots = RaucSlots(system_conf=args.system_conf)
    try:
        info = slots.check(bundle)
    except UpdateError as exc:
        raise ControlError(f"update: {exc}") from None
    print(f"{info.path}: Tandem {info.version} (build {info.build or '-'}) for {info.compatible} boards; "
          f"signature good, payload intact; root file system {info.image_size / (1 << 20):.0f} MiB, "
          f"SHA-256 {info.image_sha256}", flush=True)
    if args.check:
        return 0
    print("update --single: this box is updated on its own. The calls it carries drop while it reboots (a few "
          "minutes), and its peer is not asked to take them first.", file=sys.stderr, flush=True)
    # The good gate of a paired box asks for its peer on every link too; an unpaired one has none.
    mode = "pair" if _config_path(args).exists() else "single"
    try:
        print(slots.install(bundle, mode), flush=True)
    except UpdateError as exc:
        raise ControlError(f"update: {exc}. If RAUC still runs the install (`rauc status`), the new slot starts on "
                           "trial at the next reboot; otherwise this box stays on its slot") from None
    if args.no_reboot:
        print("installed: the new slot starts on trial at the next reboot")
        return 0
    print("installed: rebooting into the new slot, on trial", flush=True)
    subprocess.run(["systemctl", "reboot"], check=False)
    return 0


def _unpaired(args: argparse.Namespace) -> str | None:
    """On an appliance with no config yet: the line that says so (else None)."""
    from firmware.appliance.firstboot import load_box

    if args.socket or _config_path(args).exists():
        return None
    box = load_box()
    if box is None:
        return None
    line = (f"{box.serial}: unpaired (no {_config_path(args)}); holds nothing. Pair it with the other box "
            f"at the panel or with `tandem pair`")
    try:  # `tandem setup` (tandem-setup.service) answers on the daemon's socket while the box is unpaired
        setup = request(DEFAULT_CONTROL_SOCKET, {"cmd": "status"}, timeout=2.0).get("setup") or {}
    except (ControlError, OSError, AttributeError):
        return line
    return f"{line}\npairing at the panel: {setup.get('phase')}: {setup.get('message')}" if setup else line


def cmd_status(args: argparse.Namespace) -> int:
    """Show the cluster status."""
    unpaired = _unpaired(args)
    if unpaired is not None:
        print(json.dumps({"state": "unpaired", "message": unpaired}) if args.json else unpaired)
        return 0
    status = call(args, {"cmd": "status"})
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_links(args: argparse.Namespace) -> int:
    """Show per-link figures."""
    links = call(args, {"cmd": "links"})
    print(json.dumps(links, indent=2) if args.json else format_links(links))
    return 0


def _operator_command(args: argparse.Namespace, name: str) -> int:
    result = call(args, {"cmd": name, "force": getattr(args, "force", False), "source": "cli"})
    print(f"{result['message']}: {result['outcome']}")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    """Turn maintenance mode on or off."""
    return _operator_command(args, f"maintenance-{args.mode}")


def format_event(record: dict[str, Any]) -> str:
    """One journal record as a line."""
    when = datetime.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    data = " ".join(f"{k}={v}" for k, v in record.get("data", {}).items())
    return f"{record['id']:>6}  {when}  {record['kind']:<16} {data}"


def cmd_events(args: argparse.Namespace) -> int:
    """Print journal events (optionally following new ones)."""
    payload = {"cmd": "events", "since": args.since, "follow": args.follow}
    try:
        for item in stream(_socket_path(args), payload):
            record = item["event"]
            print(json.dumps(record) if args.json else format_event(record), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="tandem", description="Tandem two-node HA daemon for PBX appliances")
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    parser.add_argument("-c", "--config", help=f"node config (default $TANDEM_CONFIG or {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--socket", help="control socket (default: from the config)")
    from firmware.appliance import mgmtnet  # its defaults, for `tandem network`

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("release", help="let go of the relays, the PBX and the shared IPs while the daemon is "
                                       "not running (systemd's ExecStopPost)")
    p.add_argument("--force", action="store_true", help="even while a daemon answers on the control socket")
    p.add_argument("--source", default="cli", help="who asks, for the journal (systemd, supervisor, cli)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("check-config", help="validate a config and print the effective configuration")
    p.add_argument("path", nargs="?", help="config file (default: --config)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only the problems, warnings and the OK line, not the effective configuration")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("keygen", help="write a new cluster key file (mode 0600)")
    p.add_argument("path", nargs="?", default=str(paths.CLUSTER_KEY))
    p.add_argument("--key-id", type=int, default=1, help="key id 0-255 (default 1)")
    p.add_argument("--add", action="store_true", help="append a new key to an existing file (key rotation)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("pair", help="pair with the box at the other end of the serial crossover cable "
                                    "(both boxes show a code; confirm it matches on both)")
    p.add_argument("port", help="the crossover cable's serial port, e.g. /dev/ttyS1")
    p.add_argument("--node", required=True, help="this box's name (the other box must have another)")
    p.add_argument("--primary", action="store_true", help="this box is the primary (on one box only)")
    p.add_argument("--address", help="this box's heartbeat address (host:port) to tell the other box")
    p.add_argument("--shared-ip", help="the shared IP (ADDRESS/PREFIX) that follows the ACTIVE box; given on one "
                                       "box, both configs get it")
    p.add_argument("--shared-interface", help="the LAN port the shared IP lives on, e.g. lan0")
    p.add_argument("--key-file", default=str(paths.CLUSTER_KEY), help="where the cluster key goes")
    p.add_argument("--record", default=str(paths.PAIRING_RECORD), help="where the pairing record goes")
    p.add_argument("--write-config", metavar="PATH", help="also write this box's node config (e.g. "
                   "/etc/tandem/tandem.toml) from what the pairing knows")
    p.add_argument("--board", help="the board profile named in the written config")
    p.add_argument("--identity", default=str(paths.IDENTITY_KEY),
                   help="this box's Ed25519 identity key for the bulk channel (made if missing)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the other box (default 300)")
    p.add_argument("--force", action="store_true", help="re-pair: replace an existing key file")
    p.set_defaults(func=cmd_pair)

    p = sub.add_parser("firstboot", help="first boot of an appliance: name the box from its hardware and make "
                                         "its identity key (tandem-firstboot.service runs it once)")
    p.add_argument("--state-dir", default=str(paths.STATE_DIR), help="where the box record and key go")
    p.add_argument("--owner", default="tandem", help="the user that owns them ('' to leave as is)")
    p.set_defaults(func=cmd_firstboot)

    p = sub.add_parser("boot-reason", help="at boot: judge why the box last booted (watchdog, crash, clean, "
                                           "power); at shutdown: mark the orderly end (tandem-bootreason.service)")
    p.add_argument("when", choices=["start", "stop"])
    p.add_argument("--state-dir", default=str(paths.STATE_DIR), help="where the verdict and the marker go")
    p.set_defaults(func=cmd_boot_reason)

    p = sub.add_parser("factory-reset", help="return the box to 'unpaired': its data partition (keys, config, "
                                             "journal, history, PBX data) is wiped at the next boot (as root)")
    p.add_argument("--yes", action="store_true", help="really: without it nothing happens")
    p.add_argument("--no-reboot", action="store_true", help="leave the reboot to the caller")
    p.add_argument("--at-boot", action="store_true", help=argparse.SUPPRESS)  # tandem-factory-reset.service
    p.set_defaults(func=cmd_factory_reset)

    p = sub.add_parser("setup", help="an unpaired box: drive the front panel and pair at it "
                                     "(tandem-setup.service runs it until the box is paired)")
    p.add_argument("--board", required=True, help="this box's board profile (its front panel)")
    p.add_argument("--port", required=True, help="the crossover cable's serial port, e.g. /dev/ttyS1")
    p.add_argument("--heartbeat-port", help="the network port whose IPv4 address this box offers for "
                                            "heartbeats (set with `tandem network`), e.g. hb0")
    p.add_argument("--state-dir", default=str(paths.STATE_DIR), help="where the box record and keys are")
    p.add_argument("--then", default="systemctl start --no-block tandem.service",
                   help="the command that starts the daemon once the box is paired")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("network", help="this box's own ports: DHCP or static address, gateway, DNS, VLAN "
                                       "(kept on the data partition, applied by systemd-networkd)")
    p.add_argument("--settings", default=str(mgmtnet.DEFAULT_SETTINGS), help="where the settings are kept")
    p.add_argument("--networkd-dir", default=str(mgmtnet.DEFAULT_NETWORKD_DIR), help="where the networkd files go")
    p.add_argument("--no-apply", action="store_true", help="write the files but do not tell networkd")
    netsub = p.add_subparsers(dest="network_command", metavar="NETCOMMAND")
    show = netsub.add_parser("show", help="the ports Tandem sets (the default)")
    show.add_argument("--json", action="store_true")
    setp = netsub.add_parser("set", help="set one port: --dhcp, or --address ADDRESS/PREFIX [--gateway] [--dns]")
    setp.add_argument("port", help="the port, e.g. lan0 (see `ip link`)")
    how = setp.add_mutually_exclusive_group(required=True)
    how.add_argument("--dhcp", action="store_true", help="get the address by DHCP")
    how.add_argument("--address", help="a static address with its prefix length, e.g. 192.0.2.10/24")
    setp.add_argument("--gateway", help="the default gateway (static only)")
    setp.add_argument("--dns", action="append", help="a DNS server (up to three: repeat the option)")
    setp.add_argument("--vlan", type=int, help="carry the address on this VLAN id (1-4094), tagged on the port")
    remove = netsub.add_parser("remove", help="forget one port's setting: it goes back to DHCP")
    remove.add_argument("port")
    netsub.add_parser("undo", help="go back to the settings before the last change (again: redo)")
    p.set_defaults(func=cmd_network, json=False)

    p = sub.add_parser("bulk", help="the bulk channel to the peer (mutual TLS over the heartbeat network)")
    bulksub = p.add_subparsers(dest="bulk_command", required=True, metavar="BULKCOMMAND")
    bulksub.add_parser("ping", help="check that the peer answers, authenticated both ways")
    bulksub.add_parser("status", help="the peer's status, as its daemon tells it over the channel")
    send = bulksub.add_parser("send", help="copy a file into the peer's inbox (checked with SHA-256)")
    send.add_argument("file")
    send.add_argument("--name", help="the name in the peer's inbox (default: the file's)")
    p.set_defaults(func=cmd_bulk)

    p = sub.add_parser("update", help="update the pair, in turn, from a signed RAUC bundle (./dev bundle builds one)")
    p.add_argument("bundle", nargs="?", help="the bundle file (.raucb); on the ACTIVE node, without --check or "
                                              "--single: the rolling update of the pair")
    p.add_argument("--abort", action="store_true", help="stop the update under way (the calls stay where they are)")
    p.add_argument("--detach", action="store_true", help="start the rolling update and return (`tandem status` "
                                                         "follows it)")
    p.add_argument("--check", action="store_true",
                   help="only check the bundle: its signature against this box's keyring, that it is for this "
                        "box's board family, and every payload block against the signed hash; nothing is written")
    p.add_argument("--single", action="store_true",
                   help="update this box on its own: install into its other slot (the bundle in "
                        "/var/lib/tandem/inbox or on a stick under /media) and reboot into it on trial; its calls "
                        "drop while it reboots")
    p.add_argument("--no-reboot", action="store_true", help="with --single: install, but do not reboot now")
    p.add_argument("--system-conf", default="/etc/rauc/system.conf", help="RAUC's system config (compatible, keyring)")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("status", help="show the cluster status")
    p.add_argument("--json", action="store_true", help="the full status snapshot as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("links", help="show per-link heartbeat figures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_links)

    for name, text in (("promote", "make this node ACTIVE (planned handover if the peer is ACTIVE)"),
                       ("demote", "hand the calls over to the peer"),
                       ("shutdown", "leave the cluster (handing over first) and stop the daemon"),
                       ("poweroff", "leave the cluster (handing over first), then power the appliance off"),
                       ("reboot", "leave the cluster (handing over first), then reboot the appliance")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--force", action="store_true", help="override the safety checks")
        p.set_defaults(func=lambda a, n=name: _operator_command(a, n))

    p = sub.add_parser("maintenance", help="maintenance mode: this node never becomes ACTIVE")
    p.add_argument("mode", choices=["on", "off"])
    p.add_argument("--force", action="store_true", help="enter maintenance even if nobody can take over")
    p.set_defaults(func=cmd_maintenance)

    p = sub.add_parser("sensors", help="list every sensor: value, state, thresholds, last error")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sensors)

    p = sub.add_parser("silence", help="silence the active alarms (until a new one is raised)")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("panel", help="the front panel: show what it displays, press its keys (simulated panels)")
    panelsub = p.add_subparsers(dest="panel_command", required=True, metavar="PANELCOMMAND")
    show = panelsub.add_parser("show", help="print the panel's current frame as text")
    show.add_argument("--png", help="also write the frame as a PNG file")
    press = panelsub.add_parser("press", help="press keys in turn (up, down, enter, back, left, right) on a board "
                                              "whose profile lets them be pressed remotely (the simulator's)")
    press.add_argument("keys", nargs="+")
    press.add_argument("--hold", type=float, help="hold each key this many seconds (hold-to-confirm)")
    p.set_defaults(func=cmd_panel)

    p = sub.add_parser("graph", help="draw recorded sensor history as a PNG")
    p.add_argument("metrics", nargs="*", help="metrics such as psu1.vin, inlet.temp, health")
    p.add_argument("--since", default="6h", help="how far back: 30m, 6h, 2d, 1w (default 6h)")
    p.add_argument("-o", "--output", default="tandem-graph.png", help="PNG file to write")
    p.add_argument("--list", action="store_true", help="list the recorded metrics")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("events", help="show the event journal")
    p.add_argument("--since", type=int, default=0, help="only events with a higher id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_events)

    for plugin in entry_points(group=CLI_PLUGINS):  # e.g. the simulator's `tandem sim …`
        plugin.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tandem` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():  # one `file: key: reason` line per problem
            print(f"tandem: config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except (ControlError, LinkError) as exc:
        print(f"tandem: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
