"""The box's own ports: settings checked, stored with one undo step, rendered for systemd-networkd, applied.

The real networkd reads these files in the VM rack (tests/test_vm_rack.py sets both VMs' ports with
`tandem network set`); here a recording `networkctl` stands in for it, to see what is asked of it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from firmware.appliance import mgmtnet
from firmware.appliance.mgmtnet import NetworkSettingError, NetworkStore, PortSettings
from firmware.cli import main


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"dhcp": True, "address": "192.0.2.1/24"}, "either --dhcp or --address"),
    ({"dhcp": False}, "either --dhcp or --address"),
    ({"dhcp": False, "address": "192.0.2.1"}, "no prefix length"),
    ({"dhcp": False, "address": "192.0.2.300/24"}, "192.0.2.300/24"),
    ({"dhcp": False, "address": "192.0.2.0/24"}, "network's own address"),
    ({"dhcp": False, "address": "192.0.2.255/24"}, "broadcast address"),
    ({"dhcp": False, "address": "192.0.2.1/24", "gateway": "198.51.100.1"}, "not in 192.0.2.0/24"),
    ({"dhcp": False, "address": "192.0.2.1/24", "gateway": "2001:db8::1"}, "not IPv4"),
    ({"dhcp": False, "address": "192.0.2.1/24", "gateway": "192.0.2.1"}, "own address"),
    ({"dhcp": True, "vlan": 4095}, "not 1-4094"),
    ({"dhcp": True, "vlan": 0}, "not 1-4094"),
    ({"dhcp": True, "dns": ["192.0.2.53"] * 4}, "at most 3"),
    ({"dhcp": True, "dns": ["dns.example"]}, "dns.example"),
])
def test_a_setting_that_cannot_work_is_refused_with_the_reason(kwargs: dict, reason: str) -> None:
    with pytest.raises(NetworkSettingError) as caught:
        PortSettings.parse("lan0", **kwargs)
    assert str(caught.value).startswith("lan0: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize("port", ["", "lan0/x", "a" * 16, "..", "lan 0"])
def test_a_port_name_linux_would_refuse_is_refused(port: str) -> None:
    with pytest.raises(NetworkSettingError, match="not an interface name"):
        PortSettings.parse(port, dhcp=True)


def test_a_vlan_name_longer_than_linux_allows_is_refused() -> None:
    with pytest.raises(NetworkSettingError, match="longer than 15"):
        PortSettings.parse("enp0s31f6abcd", dhcp=True, vlan=4000)


def test_an_ipv6_gateway_may_be_link_local() -> None:
    port = PortSettings.parse("lan0", dhcp=False, address="2001:db8::10/64", gateway="fe80::1")
    assert "Gateway=fe80::1" in mgmtnet.render({"lan0": port})["10-tandem-lan0.network"]


def test_a_static_port_renders_address_gateway_dns_and_keeps_foreign_addresses() -> None:
    port = PortSettings.parse("lan0", dhcp=False, address="192.0.2.10/24", gateway="192.0.2.254",
                              dns=["192.0.2.53", "198.51.100.53"])
    files = mgmtnet.render({"lan0": port}, Path("/etc/tandem/network.json"))
    assert list(files) == ["10-tandem-lan0.network"]
    body = files["10-tandem-lan0.network"].splitlines()
    assert body[0].startswith("# Written by `tandem network` from /etc/tandem/network.json")
    assert body[1:] == ["[Match]", "Name=lan0", "", "[Network]", "Address=192.0.2.10/24", "IPv6AcceptRA=no",
                        "Gateway=192.0.2.254", "DNS=192.0.2.53", "DNS=198.51.100.53",
                        "LinkLocalAddressing=ipv6", "KeepConfiguration=static"]


def test_a_vlan_port_gets_a_netdev_and_the_address_moves_to_the_vlan() -> None:
    port = PortSettings.parse("lan0", dhcp=True, vlan=42)
    files = mgmtnet.render({"lan0": port})
    assert sorted(files) == ["10-tandem-lan0.42.netdev", "10-tandem-lan0.42.network", "10-tandem-lan0.network"]
    assert "VLAN=lan0.42" in files["10-tandem-lan0.network"]
    assert "DHCP" not in files["10-tandem-lan0.network"]
    assert "[NetDev]\nName=lan0.42\nKind=vlan\n\n[VLAN]\nId=42\n" in files["10-tandem-lan0.42.netdev"]
    assert "Name=lan0.42" in files["10-tandem-lan0.42.network"]
    assert "DHCP=yes" in files["10-tandem-lan0.42.network"]


def _store(tmp_path: Path) -> NetworkStore:
    return NetworkStore(tmp_path / "etc/tandem/network.json", tmp_path / "etc/systemd/network")


def test_a_change_keeps_the_previous_settings_and_undo_goes_back_and_forth(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = {"lan0": PortSettings.parse("lan0", dhcp=False, address="192.0.2.10/24")}
    second = {"lan0": PortSettings.parse("lan0", dhcp=True, vlan=7)}
    store.save(first)
    assert store.can_undo()  # back to "nothing set" is a step too
    store.save(second)
    assert store.load() == second
    assert sorted(p.name for p in store.networkd_dir.iterdir()) == [
        "10-tandem-lan0.7.netdev", "10-tandem-lan0.7.network", "10-tandem-lan0.network"]
    assert store.undo() == first
    assert store.load() == first
    assert sorted(p.name for p in store.networkd_dir.iterdir()) == ["10-tandem-lan0.network"]
    assert "Address=192.0.2.10/24" in (store.networkd_dir / "10-tandem-lan0.network").read_text()
    assert store.undo() == second  # undoing the undo
    assert store.load() == second


def test_networkd_can_read_the_files_whatever_the_writers_umask(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old = os.umask(0o027)  # the daemon's unit has UMask=0027; networkd reads as systemd-network
    try:
        store.save({"lan0": PortSettings.parse("lan0", dhcp=True, vlan=3)})
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in store.networkd_dir.iterdir()} == {
        "10-tandem-lan0.network": 0o644, "10-tandem-lan0.3.network": 0o644, "10-tandem-lan0.3.netdev": 0o644}


def test_files_not_written_by_tandem_are_left_alone(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.networkd_dir.mkdir(parents=True)
    own = store.networkd_dir / "50-maker.network"
    own.write_text("[Match]\nName=wan0\n")
    store.save({"lan0": PortSettings.parse("lan0", dhcp=True)})
    store.save({})
    assert sorted(p.name for p in store.networkd_dir.iterdir()) == ["50-maker.network"]


def test_nothing_to_undo_on_a_fresh_box(tmp_path: Path) -> None:
    with pytest.raises(NetworkSettingError, match="nothing to undo"):
        _store(tmp_path).undo()


def test_a_damaged_settings_file_is_named(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.settings_path.parent.mkdir(parents=True)
    store.settings_path.write_text('{"version": 1, "ports": {"lan0": {"mode": "static", "address": "x"}}}')
    with pytest.raises(NetworkSettingError) as caught:
        store.load()
    assert str(caught.value).startswith(f"{store.settings_path}: ports: lan0:")
    store.settings_path.write_text("{not json")
    with pytest.raises(NetworkSettingError, match="cannot be read"):
        store.load()


def _recording_networkctl(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    """A `networkctl` that writes its arguments, one call a line, and exits with `exit_code`."""
    calls = tmp_path / "calls"
    script = tmp_path / "networkctl"
    script.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\necho 'Failed: no bus' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), calls


def test_applying_reloads_networkd_and_reconfigures_only_the_changed_ports(tmp_path: Path) -> None:
    store = _store(tmp_path)
    networkctl, calls = _recording_networkctl(tmp_path)
    hb0 = PortSettings.parse("hb0", dhcp=False, address="198.51.100.1/24")
    assert mgmtnet.change(store, {"hb0": hb0, "lan0": PortSettings.parse("lan0", dhcp=True, vlan=5)},
                          networkctl) == ["hb0", "lan0"]
    assert mgmtnet.change(store, {"hb0": hb0}, networkctl) == ["lan0"]
    assert calls.read_text().splitlines() == ["reload", "reconfigure hb0 lan0",
                                              "reload", "delete lan0.5", "reconfigure lan0"]
    settings, touched = mgmtnet.undo(store, networkctl)
    assert touched == ["lan0"] and settings["lan0"].vlan == 5
    assert calls.read_text().splitlines()[-2:] == ["reload", "reconfigure lan0"]


def test_a_refusing_networkd_is_reported_and_the_settings_stay_saved(tmp_path: Path) -> None:
    store = _store(tmp_path)
    networkctl, _ = _recording_networkctl(tmp_path, exit_code=1)
    wanted = {"lan0": PortSettings.parse("lan0", dhcp=True)}
    with pytest.raises(NetworkSettingError) as caught:
        mgmtnet.change(store, wanted, networkctl)
    assert f"saved in {store.settings_path} but not applied" in str(caught.value)
    assert "Failed: no bus" in str(caught.value)
    assert store.load() == wanted


def test_the_cli_sets_shows_and_undoes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--settings", str(tmp_path / "network.json"), "--networkd-dir", str(tmp_path / "network"),
             "--no-apply"]
    assert main(["network", *where, "set", "lan0", "--address", "192.0.2.10/24", "--gateway", "192.0.2.254",
                 "--dns", "192.0.2.53"]) == 0
    assert "lan0 192.0.2.10/24 gw 192.0.2.254 dns 192.0.2.53" in capsys.readouterr().out
    assert main(["network", *where, "set", "lan0", "--address", "192.0.2.10"]) == 1
    assert "tandem: network: lan0: '192.0.2.10' has no prefix length" in capsys.readouterr().err
    assert main(["network", *where, "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"ports": {"lan0": {"mode": "static", "address": "192.0.2.10/24", "gateway": "192.0.2.254",
                                        "dns": ["192.0.2.53"], "vlan": None}}, "undo": True}
    assert main(["network", *where, "remove", "lan0"]) == 0
    assert not os.listdir(tmp_path / "network")
    assert main(["network", *where, "remove", "lan0"]) == 1
    assert "lan0 is not set" in capsys.readouterr().err
    assert main(["network", *where, "undo"]) == 0
    assert (tmp_path / "network/10-tandem-lan0.network").exists()


def test_the_boxs_ethernet_ports_are_the_physical_ones(tmp_path: Path) -> None:
    for name, kind, physical in (("lan0", "1", True), ("hb0", "1", True), ("br0", "1", False), ("lo", "772", False),
                                 ("wwan0", "65534", True)):
        port = tmp_path / name
        port.mkdir()
        (port / "type").write_text(kind + "\n")
        if physical:
            (port / "device").mkdir()
    assert mgmtnet.ethernet_ports(tmp_path) == ["hb0", "lan0"]
    assert mgmtnet.ethernet_ports(tmp_path / "missing") == []
