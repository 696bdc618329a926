"""The appliance's board extension: the management network in the status and `network-undo` for the panel.

The endpoints and the journal are the daemon's real ones; only the node around them is a plain namespace,
because the extension touches nothing else of it. networkd is a recording `networkctl` (the VM rack has
the real one).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from firmware.appliance import extension, helper, mgmtnet
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints
from firmware.core.journal import Journal


def _helper(tmp_path: Path) -> tuple[Path, threading.Thread]:
    """The privileged helper's socket, served as systemd's Accept=yes does: one connection, `helper.serve`."""
    path = tmp_path / "helper.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def accept_one() -> None:
        with server:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader, conn.makefile("wb") as writer:
                helper.serve(reader, writer)

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    return path, thread


@pytest.fixture
def appliance(tmp_path: Path):
    (tmp_path / "journal").mkdir()
    journal = Journal(tmp_path / "journal")
    endpoints = Endpoints(journal)
    store = mgmtnet.NetworkStore(tmp_path / "network.json", tmp_path / "network")
    calls = tmp_path / "calls"
    networkctl = tmp_path / "networkctl"
    networkctl.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    networkctl.chmod(networkctl.stat().st_mode | stat.S_IXUSR)
    node = SimpleNamespace(daemon=SimpleNamespace(endpoints=endpoints, journal=journal))
    extension.install(node, store, str(networkctl), tmp_path / "helper.sock",  # type: ignore[arg-type]
                      lambda: ["hb0", "lan0"])
    yield endpoints, store, calls, journal, tmp_path / "journal/events.jsonl"
    journal.close()


def test_the_status_shows_the_ports_and_follows_changes_made_by_the_cli(appliance) -> None:
    endpoints, store, *_ = appliance
    assert endpoints.status()["mgmt_network"] == {"ports": [], "settings": {}, "undo": False,
                                                  "choices": ["hb0", "lan0"]}
    store.save({"wan0": mgmtnet.PortSettings.parse("wan0", dhcp=False, address="192.0.2.1/24")})
    assert endpoints.status()["mgmt_network"] == {
        "ports": ["wan0 192.0.2.1/24"], "undo": True, "choices": ["hb0", "lan0", "wan0"],
        "settings": {"wan0": {"mode": "static", "address": "192.0.2.1/24", "gateway": None, "dns": [], "vlan": None}}}


def test_network_undo_goes_back_applies_and_is_journaled_first(appliance) -> None:
    endpoints, store, calls, journal, events = appliance
    store.save({"lan0": mgmtnet.PortSettings.parse("lan0", dhcp=False, address="192.0.2.1/24")})
    store.save({"lan0": mgmtnet.PortSettings.parse("lan0", dhcp=False, address="192.0.2.99/24")})
    reply = asyncio.run(endpoints.handle({"cmd": "network-undo", "source": "panel"}))
    assert reply["ok"] is True and reply["result"] == "undone: lan0 192.0.2.1/24"
    assert calls.read_text().splitlines() == ["reload", "reconfigure lan0"]
    assert "Address=192.0.2.1/24" in (store.networkd_dir / "10-tandem-lan0.network").read_text()
    journal.flush()
    kinds = [json.loads(line)["kind"] for line in events.read_text().splitlines()]
    assert kinds[-2:] == ["request", "network.changed"]


def test_network_set_from_the_panel_keeps_the_ports_dns_and_vlan(appliance) -> None:
    endpoints, store, calls, *_ = appliance
    store.save({"lan0": mgmtnet.PortSettings.parse("lan0", dhcp=True, dns=["192.0.2.53"], vlan=7)})
    reply = asyncio.run(endpoints.handle({"cmd": "network-set", "source": "panel", "port": "lan0",
                                          "address": "192.0.2.10/24", "gateway": "192.0.2.254"}))
    assert reply["result"] == "lan0.7 192.0.2.10/24 gw 192.0.2.254 dns 192.0.2.53; Network undo goes back"
    assert calls.read_text().splitlines() == ["reload", "reconfigure lan0"]
    assert store.load()["lan0"].vlan == 7
    reply = asyncio.run(endpoints.handle({"cmd": "network-set", "source": "panel", "port": "hb0", "dhcp": True}))
    assert reply["result"].startswith("hb0 DHCP")


@pytest.mark.parametrize(("request_", "why"), [
    ({"port": "lan0", "address": "192.0.2.0/24"}, "network's own address"),
    ({"port": "lan0", "address": "192.0.2.10/24", "gateway": "198.51.100.1"}, "cannot be reached"),
    ({"port": "lan0"}, "either --dhcp or --address"),
    ({"port": "lan0", "dhcp": "yes"}, "dhcp"),
])
def test_network_set_refuses_a_setting_that_cannot_work(appliance, request_: dict, why: str) -> None:
    endpoints, store, calls, *_ = appliance
    with pytest.raises(ControlError, match=why):
        asyncio.run(endpoints.handle({"cmd": "network-set", "source": "panel", **request_}))
    assert store.load() == {} and not calls.exists()


def test_network_undo_with_nothing_to_undo_is_refused(appliance) -> None:
    endpoints, _, calls, *_ = appliance
    with pytest.raises(ControlError, match="network-undo: nothing to undo"):
        asyncio.run(endpoints.handle({"cmd": "network-undo", "source": "panel"}))
    assert not calls.exists()


def _fake_tandem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int) -> Path:
    """The helper's root-side program: a `tandem` that records its arguments (never the real reset: it reboots)."""
    calls = tmp_path / "tandem-calls"
    fake = tmp_path / "bin" / "tandem"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n"
                    f"[ {exit_code} = 0 ] && echo 'rebooting now' || echo 'factory reset: /boot/efi is not mounted' >&2\n"
                    f"exit {exit_code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_factory_reset_goes_through_the_helper_and_is_journaled(appliance, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints, _, _, journal, events = appliance
    assert endpoints.status()["factory_reset"] is True
    calls = _fake_tandem(tmp_path, monkeypatch, 0)
    _, served = _helper(tmp_path)
    reply = asyncio.run(endpoints.handle({"cmd": "factory-reset", "source": "panel"}))
    served.join(10)
    assert reply["ok"] is True and "comes back unpaired" in reply["result"]
    assert calls.read_text() == "factory-reset --yes\n"
    journal.flush()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["kind"] for r in records[-2:]] == ["request", "factory-reset"]
    assert records[-1]["data"] == {"source": "panel"}


def test_a_factory_reset_the_box_refuses_says_why(appliance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints, *_ = appliance
    _fake_tandem(tmp_path, monkeypatch, 1)
    _, served = _helper(tmp_path)
    with pytest.raises(ControlError, match="factory-reset: factory reset: /boot/efi is not mounted"):
        asyncio.run(endpoints.handle({"cmd": "factory-reset", "source": "panel"}))
    served.join(10)


def test_a_factory_reset_without_the_helper_is_refused(appliance) -> None:
    endpoints, *_ = appliance
    with pytest.raises(ControlError, match="privileged helper .* cannot be reached"):
        asyncio.run(endpoints.handle({"cmd": "factory-reset", "source": "panel"}))
