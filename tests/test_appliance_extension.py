"""The appliance's board extension: the management network in the status and `network-undo` for the panel.

The endpoints and the journal are the daemon's real ones; only the node around them is a plain namespace,
because the extension touches nothing else of it. networkd is a recording `networkctl` (the VM rack has
the real one).
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from firmware.appliance import extension, mgmtnet
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints
from firmware.core.journal import Journal


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
    extension.install(node, store, str(networkctl))  # type: ignore[arg-type]
    yield endpoints, store, calls, journal, tmp_path / "journal/events.jsonl"
    journal.close()


def test_the_status_shows_the_ports_and_follows_changes_made_by_the_cli(appliance) -> None:
    endpoints, store, *_ = appliance
    assert endpoints.status()["mgmt_network"] == {"ports": [], "undo": False}
    store.save({"lan0": mgmtnet.PortSettings.parse("lan0", dhcp=False, address="192.0.2.1/24")})
    assert endpoints.status()["mgmt_network"] == {"ports": ["lan0 192.0.2.1/24"], "undo": True}


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


def test_network_undo_with_nothing_to_undo_is_refused(appliance) -> None:
    endpoints, _, calls, *_ = appliance
    with pytest.raises(ControlError, match="network-undo: nothing to undo"):
        asyncio.run(endpoints.handle({"cmd": "network-undo", "source": "panel"}))
    assert not calls.exists()
