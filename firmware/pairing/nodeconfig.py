"""The node config a pairing gives: `tandem.toml` written from this box's and the peer's settings.

Only what the pairing knows is written (names, roles, the cable, the heartbeat
network, the shared IPs given on either box, the bulk channel, the key file,
the board); everything else keeps its default and can be added later. The text is checked with the config loader itself before it
replaces anything, so a pairing never leaves a config `tandem run` refuses.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from firmware.config import SharedIpConfig, load_config
from firmware.config.loading import reasons
from firmware.config.base import parse_host_port
from firmware.config.node import BULK_DEFAULT_PORT
from firmware.core.journal import write_atomically


def node_config_text(own: dict[str, Any], peer: dict[str, Any], board: str, key_file: Path,
                     serial_port: str, identity_file: Path | None = None, record: Path | None = None) -> str:
    """The TOML of a node config for this box, from both boxes' pairing settings.

    With both heartbeat addresses and the peer's identity key known, the ``[bulk]`` channel is set up
    on the heartbeat network too (`identity_file`: this box's identity key; `record`: the pairing
    record, which holds the peer's).
    """
    if own.get("primary"):
        role = "primary"
    elif peer.get("primary"):
        role = "secondary"
    else:
        role = "equal"
    quote = json.dumps  # a TOML basic string is a JSON string for these values
    lines = [
        "# Written by `tandem pair`: what the pairing knows. Add the rest (witness, shared IPs, service, …);",
        "# `tandem check-config` checks it.",
        f"node = {quote(own['node'])}",
        f"peer = {quote(peer['node'])}",
        f"role = {quote(role)}",
        f"board = {quote(board)}",
        f"key_file = {quote(str(key_file))}",
        "",
        "[[links]]",
        'name = "serial0"',
        'kind = "serial"',
        f"port = {quote(serial_port)}",
    ]
    for shared in own.get("shared_ips") or peer.get("shared_ips") or []:  # given on either box
        lines += ["", "[[shared_ips]]", f"address = {quote(str(shared['address']))}",
                  f"interface = {quote(str(shared['interface']))}"]
    if own.get("address") and peer.get("address"):
        lines += ["", "[[links]]", 'name = "net0"', 'kind = "udp"',
                  f"bind = {quote(own['address'])}", f"peer = {quote(peer['address'])}"]
        if peer.get("identity") and identity_file is not None and record is not None:
            # The peer's identity stays in the pairing record (a re-pairing replaces it there).
            lines += ["", "[bulk]", f"listen = {quote(_bulk_address(own['address']))}",
                      f"peer = {quote(_bulk_address(peer['address']))}",
                      f"identity = {quote(str(identity_file))}", f"record = {quote(str(record))}"]
    return "\n".join(lines) + "\n"


def shared_ip_setting(address: str, interface: str) -> dict[str, str]:
    """A shared IP as pairing sends it (``{"address", "interface"}``), checked now as the written config will be.

    ValueError says why it cannot be one (no prefix length, a loopback or network address, a bad port name…),
    so a wrong shared IP is refused before the pairing, not when its config is written.
    """
    try:
        checked = SharedIpConfig(address=address, interface=interface)
    except ValidationError as exc:
        raise ValueError(reasons(exc)) from None
    return {"address": str(ipaddress.ip_interface(checked.address)), "interface": checked.interface}


def _bulk_address(heartbeat: str) -> str:
    """The bulk channel's host:port beside a heartbeat host:port (same host, the channel's port)."""
    host, _ = parse_host_port(heartbeat)
    return f"[{host}]:{BULK_DEFAULT_PORT}" if ":" in host else f"{host}:{BULK_DEFAULT_PORT}"


def write_node_config(path: Path, text: str) -> None:
    """Check `text` with the config loader, then replace `path` with it atomically; ConfigError if it is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.pairing")
    candidate.write_text(text)
    try:
        load_config(candidate)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    candidate.unlink()
    write_atomically(path, text.encode(), mode=0o644)
    os.chmod(path, 0o644)
