"""Config loading and validation, key file permissions, and `tandem check-config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.config import (
    UdpLinkConfig,
    check_key_file_permissions,
    effective_config,
    load_config,
    parse_host_port,
)
from firmware.core.protocol import write_key_file
from firmware.core.settings import settings_from_config
from firmware.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)

MINIMAL = """\
node = "alpha"
peer = "beta"
board = "sim"

[[links]]
name = "lan"
kind = "udp"
bind = "127.0.0.1:16940"
peer = "127.0.0.1:16941"
"""

TWO_LINKS = MINIMAL + """
[[links]]
name = "serial"
kind = "serial"
port = "/dev/ttyS1"
"""


SHARED = '[[shared_ips]]\naddress = "192.0.2.10/24"\ninterface = "eth0"\n\n'


def write(tmp_path: Path, text: str, name: str = "tandem.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# ---------------------------------------------------------------------------- loading


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path)
    node = config.node
    assert node.node == "alpha" and node.peer == "beta" and node.role == "equal"
    assert node.timers.heartbeat_ms == 100
    assert node.timers.deadtime_ms == 300
    assert node.timers.initdead_ms == 3000
    assert node.key_file == Path("/etc/tandem/cluster.key")
    assert node.witness.targets == [] and node.witness.require == "all"
    assert node.failback.policy == "never"
    assert node.journal.keep == 5
    link = node.links[0]
    assert isinstance(link, UdpLinkConfig)
    assert link.bind_address == ("127.0.0.1", 16940)
    assert link.peer_address == ("127.0.0.1", 16941)
    assert config.board.name == "sim" and config.board.extensions == ["sim.extension:install"]
    assert config.board_path == ROOT / "board_profiles" / "sim.toml"
    data = effective_config(config)
    assert data["node"]["timers"]["heartbeat_ms"] == 100
    assert data["config_file"] == str(path)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "keys/cluster.key"\nstate_dir = "state"\n' + TWO_LINKS.replace(
        'port = "/dev/ttyS1"', 'port = "dev/ttyS1"'))
    node = load_config(path).node
    assert node.key_file == tmp_path / "keys" / "cluster.key"
    assert node.state_dir == tmp_path / "state"
    assert node.links[1].port == str(tmp_path / "dev" / "ttyS1")
    assert node.links[1].baud == 115200


@pytest.mark.parametrize("where, text, key", [
    ("top level", "bogus = 1\n" + MINIMAL, "bogus"),
    ("timers", MINIMAL + "\n[timers]\nheartbeat_ms = 100\nbogus = 5\n", "timers.bogus"),
    ("second link", TWO_LINKS + 'bogus = "x"\n', "links[1].bogus"),
    ("first link", MINIMAL.replace('kind = "udp"', 'kind = "udp"\nspeed = 3'), "links[0].speed"),
])
def test_unknown_key_is_named(tmp_path: Path, where: str, text: str, key: str) -> None:
    path = write(tmp_path, text)
    error = config_error(path)
    message = str(error)
    assert str(path) in message, where
    assert key in message, (where, message)
    assert "unknown key" in message, (where, message)
    assert error.key == key and error.path == str(path)
    # The message reads `file: key: reason`.
    assert message.startswith(f"{path}: {key}: ")


def test_missing_node_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('node = "alpha"\n', ""))
    error = config_error(path)
    assert error.key == "node"
    assert str(path) in str(error) and "missing" in str(error)


def test_bad_udp_address_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('peer = "127.0.0.1:16941"', 'peer = "not-an-address:694"'))
    error = config_error(path)
    assert error.key == "links[0].peer", str(error)
    assert str(path) in str(error) and "not an IP address" in str(error)


def test_bad_udp_port_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('bind = "127.0.0.1:16940"', 'bind = "127.0.0.1:70000"'))
    error = config_error(path)
    assert error.key == "links[0].bind", str(error)
    assert "70000" in str(error)


def test_deadtime_shorter_than_two_heartbeats_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[timers]\nheartbeat_ms = 200\ndeadtime_ms = 300\n")
    error = config_error(path)
    assert error.key == "timers", str(error)
    message = str(error)
    assert str(path) in message
    assert "deadtime_ms (300)" in message and "heartbeat_ms (200)" in message and "twice" in message


def test_deadtime_of_exactly_two_heartbeats_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[timers]\nheartbeat_ms = 150\ndeadtime_ms = 300\n")
    assert load_config(path).node.timers.deadtime_ms == 300


def test_duplicate_link_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_LINKS.replace('name = "serial"', 'name = "lan"'))
    error = config_error(path)
    assert str(path) in str(error)
    assert "unique" in str(error) and "lan" in str(error)


def test_node_equal_to_peer_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('peer = "beta"', 'peer = "alpha"'))
    error = config_error(path)
    assert str(path) in str(error)
    assert "node and peer" in str(error)


def test_unknown_board_profile_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('board = "sim"', 'board = "no-such-board"'))
    error = config_error(path)
    assert error.key == "board"
    assert "no-such-board" in str(error) and str(path) in str(error)


def test_board_profile_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "mine.toml").write_text('name = "mine"\n')
    path = write(tmp_path, MINIMAL.replace('board = "sim"', 'board = "boards/mine.toml"'))
    config = load_config(path)
    assert config.board.name == "mine" and config.board.extensions == []
    assert config.board_path == tmp_path / "boards" / "mine.toml"


def test_unknown_key_in_board_profile_names_the_profile(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('name = "mine"\nbogus_key = 4\n')
    path = write(tmp_path, MINIMAL.replace('board = "sim"', 'board = "mine.toml"'))
    error = config_error(path)
    assert error.path == str(tmp_path / "mine.toml")
    assert error.key == "bogus_key" and "unknown key" in str(error)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[timers\nheartbeat_ms = \n")
    error = config_error(path)
    assert error.path == str(path)
    assert str(path) in str(error) and "TOML" in str(error)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    error = config_error(path)
    assert str(path) in str(error) and "not found" in str(error)


def test_parse_host_port() -> None:
    assert parse_host_port("192.0.2.1") == ("192.0.2.1", 694)
    assert parse_host_port("192.0.2.1:700") == ("192.0.2.1", 700)
    assert parse_host_port("[2001:db8::1]:700") == ("2001:db8::1", 700)
    assert parse_host_port("2001:db8::1") == ("2001:db8::1", 694)
    for bad in ("example.com:694", "192.0.2.1:0", "192.0.2.1:65536", ""):
        with pytest.raises(ValueError):
            parse_host_port(bad)


# ---------------------------------------------------------------------------- key file permissions


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "cluster.key"
    write_key_file(key)
    os.chmod(key, mode)
    config_path = tmp_path / "tandem.toml"
    with pytest.raises(ConfigError) as info:
        check_key_file_permissions(key, config_path)
    message = str(info.value)
    assert f"{mode:04o}" in message
    assert f"chmod 600 {key}" in message
    assert info.value.key == "key_file"
    assert str(config_path) in message and str(key) in message


def test_missing_key_file_suggests_keygen(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    with pytest.raises(ConfigError) as info:
        check_key_file_permissions(key, tmp_path / "tandem.toml")
    assert f"tandem keygen {key}" in str(info.value)
    assert info.value.key == "key_file"


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    key.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        check_key_file_permissions(key, tmp_path / "tandem.toml")


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_passes(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "cluster.key"
    write_key_file(key)
    os.chmod(key, mode)
    check_key_file_permissions(key, tmp_path / "tandem.toml")


# ---------------------------------------------------------------------------- tandem check-config


def check_config(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_CONFIG"}
    return subprocess.run(
        [str(PYTHON), "-m", "firmware.cli", "check-config", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def config_with_key(tmp_path: Path, mode: int = 0o600, text: str = MINIMAL) -> tuple[Path, Path]:
    key = tmp_path / "cluster.key"
    write_key_file(key)
    os.chmod(key, mode)
    path = write(tmp_path, 'key_file = "cluster.key"\n' + text)
    return path, key


def test_cli_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    path, key = config_with_key(tmp_path)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["node"]["node"] == "alpha" and data["node"]["peer"] == "beta"
    assert data["node"]["timers"] == {
        "heartbeat_ms": 100, "deadtime_ms": 300, "initdead_ms": 3000,
        "handover_timeout_ms": 5000, "shutdown_timeout_ms": 10000,
    }
    assert data["node"]["key_file"] == str(key)
    assert data["board"]["name"] == "sim"
    assert data["keys"] == {"send_key_id": 1, "accepted_key_ids": [1]}
    # One link and no witness: both are worth a warning, on stderr and in the data.
    assert len(data["warnings"]) == 2
    assert "OK" in result.stderr


def test_cli_check_config_warns_of_sensors_slower_than_initdead(tmp_path: Path) -> None:
    path, _ = config_with_key(tmp_path, text=MINIMAL + '\n[[sensors]]\nname = "slow"\ntype = "device"\n'
                                                   'path = "/dev/null"\ntimeout_s = 4\n')
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert any("sensors slow may take longer than timers.initdead_ms (3000)" in w for w in warnings)


def test_cli_check_config_names_a_board_driver_that_does_not_exist(tmp_path: Path) -> None:
    profile = (ROOT / "board_profiles" / "sim.toml").read_text().replace(
        "firmware.panel.dummy:DummyTextDisplay", "firmware.panel.displays:NoSuchDisplay")
    (tmp_path / "typo.toml").write_text(profile)
    path, _ = config_with_key(tmp_path, text=MINIMAL.replace('board = "sim"', 'board = "typo.toml"'))
    result = check_config(path)
    assert result.returncode == 78, result.stderr
    assert "typo.toml: panel.display.driver: 'firmware.panel.displays' has no 'NoSuchDisplay'" in result.stderr


def test_cli_check_config_refuses_a_world_readable_key(tmp_path: Path) -> None:
    path, key = config_with_key(tmp_path, mode=0o644)
    result = check_config(path)
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert str(path) in result.stderr
    assert str(key) in result.stderr
    assert "key_file" in result.stderr
    assert "0644" in result.stderr and "chmod 600" in result.stderr


def test_cli_check_config_refuses_a_broken_key_file(tmp_path: Path) -> None:
    path, key = config_with_key(tmp_path)
    key.write_text("1 not-hex\n")
    result = check_config(path)
    assert result.returncode == 78
    assert "key_file" in result.stderr and str(key) in result.stderr and "line 1" in result.stderr


def test_cli_check_config_names_an_unknown_key(tmp_path: Path) -> None:
    path, _ = config_with_key(tmp_path, text=MINIMAL + "\n[timers]\nbogus = 1\n")
    result = check_config(path)
    assert result.returncode == 78
    assert result.stdout == ""
    assert "timers.bogus" in result.stderr and "unknown key" in result.stderr
    assert str(path) in result.stderr


def test_cli_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.toml")
    assert result.returncode == 78
    assert str(tmp_path / "absent.toml") in result.stderr


def test_witness_target_must_be_an_address(tmp_path: Path) -> None:
    path = tmp_path / "tandem.toml"
    path.write_text(MINIMAL + '\n[witness]\ntargets = ["tcp://gateway.example:443"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "witness.targets" in str(info.value) and "not an IP address" in str(info.value)


@pytest.mark.parametrize(("section", "says"), [
    ('[arbitration]\nenabled = true\ncontrol = ["192.0.2.1"]\n', "needs at least one [[shared_ips]]"),
    (SHARED + '[arbitration]\nenabled = true\n', "arbitration.control must name at least one address"),
    (SHARED + '[arbitration]\nenabled = true\ncontrol = ["198.51.100.1"]\n', "not on the subnet of any shared"),
    (SHARED + '[arbitration]\nenabled = true\ncontrol = ["192.0.2.1"]\nround_ms = 250\n', "must not exceed"),
    (SHARED + '[arbitration]\nenabled = true\ncontrol = ["gateway"]\n', "not an IPv4 address"),
])
def test_arbitration_config_errors_say_what_is_wrong(tmp_path: Path, section: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + "\n" + section))
    assert says in str(info.value) and "arbitration" in str(info.value)


def test_arbitration_config_reaches_the_core(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "\n" + SHARED +
                               '[arbitration]\nenabled = true\ncontrol = ["192.0.2.1"]\nconfirm_ms = 200\n'))
    settings = settings_from_config(config)
    assert settings.lan_arbitration and settings.lan_confirm_s == 0.2
    assert config.node.arbitration.control == ["192.0.2.1"]


ARBITRATION = SHARED + '[arbitration]\nenabled = true\ncontrol = ["192.0.2.1"]\n'


@pytest.mark.parametrize(("section", "says"), [
    (SHARED + '[fencing.device]\nagent = "true"\n', "needs [arbitration] enabled"),
    (ARBITRATION + '[fencing.device]\nagent = "fence_nonexistent_xyz"\n', "is not an executable on PATH"),
    (ARBITRATION + '[fencing.device]\nagent = "true"\n[fencing.device.options]\naction = "reboot"\n',
     "must not set the action"),
    (ARBITRATION + '[fencing.device]\nagent = "true"\ntimeout_s = 0\n', "timeout_s"),
    (ARBITRATION + '[fencing.device]\nagent = "true"\nmonitor_every_s = 0.2\n', "more than once a second"),
    (ARBITRATION + '[fencing.device]\nagent = "true"\n[fencing.device.options]\nplug = "1\\raction=on"\n',
     "no option spans lines"),
])
def test_fence_device_config_errors_say_what_is_wrong(tmp_path: Path, section: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + "\n" + section))
    assert says in str(info.value) and "fencing" in str(info.value)


def test_fence_device_config_reaches_the_core(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "\n" + ARBITRATION +
                               '[fencing.device]\nagent = "true"\ndelay_s = 3\n'
                               '[fencing.device.options]\nip = "198.51.100.7"\nlanplus = true\n'))
    settings = settings_from_config(config)
    assert settings.fencing and settings.fence_delay_s == 3
    assert config.node.fencing.device.options == {"ip": "198.51.100.7", "lanplus": True}
    assert not settings_from_config(load_config(write(tmp_path, MINIMAL))).fencing


def test_more_than_eight_links_is_refused(tmp_path: Path) -> None:
    links = "".join(f'[[links]]\nname = "n{i}"\nkind = "udp"\nbind = "127.0.0.1:{1000 + i}"\npeer = "127.0.0.1:{2000 + i}"\n'
                    for i in range(9))
    path = tmp_path / "tandem.toml"
    path.write_text('node = "a"\npeer = "b"\nboard = "sim"\n' + links)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "links" in str(info.value) and "8" in str(info.value)


def test_relay_group_must_name_a_bank_of_the_board_profile(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[[relay_groups]]\nname = "trunks"\noutputs = ["trunks:1"]\n')
    error = config_error(path)
    assert error.key == "relay_groups[0].outputs"
    assert "no bank 'trunks'" in str(error) and "trunk" in str(error)
