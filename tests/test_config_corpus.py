"""Issue 14, hardening: `tandem check-config` on mutated configs refuses every nonsense config with one
`file: key: reason` line per problem (exit 78), never a traceback, and still accepts valid ones.

The corpus itself is tests/config_corpus.py; the focused tests below each pin one symptom found by the
first run of 650 mutations (each failed, or gave a traceback, before the fix).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config_corpus import (
    BASE_BOARD,
    BASE_CONFIG,
    VALID_KEY,
    Mutation,
    check_in_process,
    mutations,
    run_corpus,
    to_toml,
    write_mutation,
)
from firmware.config import load_config, load_release_config
from firmware.core.protocol import Keyring
from firmware.drivers import import_object, load_driver, resolve_driver
from firmware.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)
LINE = re.compile(r"^tandem: config error: (/[^:]+): ([^ :][^:]*): (\S.*)$")


def with_changes(changes: dict[tuple[Any, ...], Any], data: dict[str, Any] = BASE_CONFIG) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for path, value in changes.items():
        target = data
        for part in path[:-1]:
            target = target[part]
        if isinstance(target, list) and path[-1] == len(target):
            target.append(value)
        else:
            target[path[-1]] = value
    return data


def write(tmp_path: Path, config: Any = None, board: Any = None, key: str | bytes = VALID_KEY) -> Path:
    """The base config, board profile and key file (or the given ones) in ``tmp_path``; the config's path."""
    def text(value: Any, base: dict[str, Any]) -> str | bytes:
        if value is None:
            return to_toml(base)
        return value if isinstance(value, (str, bytes)) else to_toml(value)
    return write_mutation(tmp_path, Mutation("focused", True, config=text(config, BASE_CONFIG),
                                             board=text(board, BASE_BOARD), key=key))


def problems(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def assert_refused(path: Path, key: str, says: str = "", where: Path | None = None) -> None:
    """check-config (through the CLI's main) exits 78 with a line naming the file, ``key`` and the reason."""
    outcome = check_in_process(path)
    assert outcome.status == 78, (outcome.status, outcome.stderr)
    where = where or path
    lines = [line for line in outcome.stderr.splitlines() if line.startswith(f"tandem: config error: {where}: {key}")]
    assert lines, outcome.stderr
    assert says in " ".join(lines), outcome.stderr


def check_config(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_CONFIG"}
    return subprocess.run([str(PYTHON), "-m", "firmware.cli", "check-config", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, errors="replace", timeout=120)


# ---------------------------------------------------------------------------- the corpus


def test_the_corpus_is_large_seeded_and_has_both_kinds() -> None:
    corpus = mutations()
    assert len(corpus) >= 500
    assert [m.name for m in corpus] == [m.name for m in mutations(14)]
    assert sum(not m.nonsense for m in corpus) >= 80 and sum(m.nonsense for m in corpus) >= 500


def test_corpus_has_no_traceback_no_nonsense_accepted_no_valid_config_refused(tmp_path: Path) -> None:
    result = run_corpus(tmp_path)
    print("\n".join(result["failures"]))
    assert result["configs"] >= 500
    assert result["subprocess_checked"] > 0
    assert (result["tracebacks"], result["nonsense_accepted"], result["valid_rejected"], result["misreported"]) == (
        0, 0, 0, 0), "\n".join(result["failures"][:40])


# ---------------------------------------------------------------------------- tracebacks before


def test_a_config_that_is_not_utf8_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, config=to_toml(BASE_CONFIG).encode() + b"# caf\xe9\n")
    [problem] = problems(path)
    assert problem.path == str(path) and "not UTF-8" in problem.reason and "0xe9" in problem.reason


def test_a_board_profile_that_is_not_utf8_is_an_error_naming_the_profile(tmp_path: Path) -> None:
    path = write(tmp_path, board=to_toml(BASE_BOARD).encode().replace(b"corpus-board", b"corpus-b\xff"))
    [problem] = problems(path)
    assert problem.path == str(tmp_path / "board.toml") and "not UTF-8" in problem.reason


@pytest.mark.parametrize("key", [("state_dir",), ("key_file",), ("board",), ("links", 1, "port")])
def test_a_nul_byte_in_a_path_is_an_error_not_a_traceback(tmp_path: Path, key: tuple[Any, ...]) -> None:
    path = write(tmp_path, config=with_changes({key: "abc\x00def"}))
    assert_refused(path, ".".join(str(k) for k in key).replace(".1.", "[1]."), "NUL")


@pytest.mark.parametrize("spec", [".x:Y", "..firmware:X", "x..y:Z"])
def test_a_relative_driver_path_is_an_error_not_a_traceback(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError, match="not an import path"):
        import_object(spec)
    with pytest.raises(ConfigError, match="relays.trunk"):
        resolve_driver(spec, "relays.trunk", tmp_path / "board.toml")
    path = write(tmp_path, board=with_changes({("network",): spec}, BASE_BOARD))
    assert_refused(path, "network", "import path", where=tmp_path / "board.toml")


@pytest.mark.parametrize("depth", [50, 5000, 100_000])
def test_a_deeply_nested_array_is_an_error_not_a_traceback(tmp_path: Path, depth: int) -> None:
    path = write(tmp_path, config=to_toml(BASE_CONFIG) + "\n[extra]\nx = " + "[" * depth + "]" * depth + "\n")
    problem = problems(path)[0]
    assert problem.path == str(path) and "nested" in problem.reason
    assert check_in_process(path).status == 78


# ---------------------------------------------------------------------------- nonsense accepted before


@pytest.mark.parametrize("value", ["", "   ", "st\x00ate"])
@pytest.mark.parametrize("key", [("state_dir",), ("control_socket",), ("hooks", "dir"), ("links", 1, "port")])
def test_empty_or_nul_paths_are_refused(tmp_path: Path, key: tuple[Any, ...], value: str) -> None:
    path = write(tmp_path, config=with_changes({key: value}))
    name = "links[1].port" if key[0] == "links" else ".".join(key)
    assert any(p.key == name for p in problems(path)), [p.line for p in problems(path)]


@pytest.mark.parametrize("argv", [[""], ["", "start"], ["systemctl\x00", "start"], ["systemctl", "st\x00art"]])
def test_empty_or_nul_service_commands_are_refused(tmp_path: Path, argv: list[str]) -> None:
    path = write(tmp_path, config=with_changes({("service", "start"): argv}))
    assert any(p.key.startswith("service.start") for p in problems(path))


@pytest.mark.parametrize("slot", [("relays", "trunk", "driver"), ("network",), ("extensions", 0),
                                  ("panel", "display", "driver"), ("sensor_host", "driver")])
def test_os_system_is_no_driver(tmp_path: Path, slot: tuple[Any, ...]) -> None:
    path = write(tmp_path, board=with_changes({slot: "os:system"}, BASE_BOARD))
    key = "extensions[0]" if slot[0] == "extensions" else ".".join(slot)
    assert_refused(path, key, "standard library", where=tmp_path / "board.toml")


@pytest.mark.parametrize(("spec", "says"), [
    ("firmware.drivers.relays.gpio:GpioInputs", "no set, get methods"),  # feedback inputs are no relay bank
    ("sim.network:RecordingNetwork", "no open, set, get, release methods"),
    ("firmware.drivers.relays.base:RelayDriver", "an interface, not a driver"),
    ("firmware.cli:main", "not a class"),
])
def test_a_relay_driver_must_implement_the_relay_bank_interface(tmp_path: Path, spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_driver(spec, "relays.trunk", tmp_path / "board.toml", pins=[1])
    path = write(tmp_path, board=with_changes({("relays", "trunk", "driver"): spec}, BASE_BOARD))
    assert_refused(path, "relays.trunk.driver", says, where=tmp_path / "board.toml")


def test_every_shipped_driver_implements_its_interface(tmp_path: Path) -> None:
    from firmware.config import load_board_profile
    from firmware.drivers import check_board_drivers

    for profile in sorted((ROOT / "board_profiles").glob("*.toml")):
        assert check_board_drivers(load_board_profile(profile), profile) == [], profile.name


def test_two_links_on_one_bind_address_or_serial_port_are_refused(tmp_path: Path) -> None:
    lan2 = {"name": "lan2", "kind": "udp", "bind": "192.0.2.4:694", "peer": "192.0.2.5:695"}
    path = write(tmp_path, config=with_changes({("links", 2): lan2}))
    assert [(p.key, "both bind 192.0.2.4:694" in p.reason) for p in problems(path)] == [("links", True)]
    serial2 = {"name": "serial2", "kind": "serial", "port": "/dev/ttyS1"}
    path = write(tmp_path, config=with_changes({("links", 2): serial2}))
    assert [(p.key, "/dev/ttyS1" in p.reason) for p in problems(path)] == [("links", True)]


def test_a_udp_peer_equal_to_the_nodes_own_bind_address_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, config=with_changes({("links", 0, "peer"): "192.0.2.4:694"}))
    [problem] = problems(path)
    assert problem.key == "links" and "own link 'lan' listens" in problem.reason


@pytest.mark.parametrize(("changes", "key"), [
    ({("shared_ips", 1): {"address": "192.0.2.10/24", "interface": "eth1"}}, "shared_ips"),
    ({("shared_ips", 0, "address"): "0.0.0.0/0"}, "shared_ips[0].address"),
    ({("shared_ips", 0, "address"): "192.0.2.4/24"}, "shared_ips"),  # the node's own heartbeat address
])
def test_duplicate_or_meaningless_shared_ips_are_refused(tmp_path: Path, changes: dict, key: str) -> None:
    path = write(tmp_path, config=with_changes(changes))
    assert key in [p.key for p in problems(path)]


def test_an_empty_failback_window_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, config=with_changes({("failback", "window"): "02:00-02:00"}))
    [problem] = problems(path)
    assert problem.key == "failback.window" and "empty window" in problem.reason


@pytest.mark.parametrize("address", ["192.0.2.4:+694", "192.0.2.4:６９４", "192.0.2.4:٦٩٤", "192.0.2.4:6_94",
                                     "192.0.2.4: 694"])
def test_ports_are_ascii_digits_only(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, config=with_changes({("links", 0, "bind"): address}))
    [problem] = problems(path)
    assert problem.key == "links[0].bind" and "port" in problem.reason


def test_a_bare_toml_integer_written_with_a_plus_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, config=to_toml(BASE_CONFIG).replace("heartbeat_ms = 100", "heartbeat_ms = +100"))
    assert load_config(path).node.timers.heartbeat_ms == 100


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize("name", ["warn_above", "crit_above", "hysteresis"])
def test_nan_and_inf_thresholds_are_refused(tmp_path: Path, name: str, value: str) -> None:
    written = f"{name} = {BASE_CONFIG['sensors'][0]['thresholds']['load1'][name]!r}"
    assert written in to_toml(BASE_CONFIG)
    path = write(tmp_path, config=to_toml(BASE_CONFIG).replace(written, f"{name} = {value}"))
    [problem] = problems(path)
    assert problem.key == f"sensors[0].thresholds.load1.{name}" and "finite" in problem.reason


@pytest.mark.parametrize(("key", "says"), [
    ("1 " + "00" * 32, "one byte repeated (0x00)"),
    ("1 " + "ff" * 32, "one byte repeated (0xff)"),
    ("١ " + "3c" * 4 + "".join(f"{i:02x}" for i in range(1, 29)), "key id must be a number (digits 0-9)"),
    ("+1 " + "3c" * 4 + "".join(f"{i:02x}" for i in range(1, 29)), "key id must be a number (digits 0-9)"),
])
def test_an_all_zero_key_or_a_key_id_in_other_digits_is_refused(tmp_path: Path, key: str, says: str) -> None:
    (tmp_path / "k").write_text(key + "\n")
    with pytest.raises(ValueError, match=re.escape(says)):
        Keyring.load(tmp_path / "k")
    path = write(tmp_path, key=key + "\n")
    assert_refused(path, "key_file", says)


@pytest.mark.parametrize(("key", "value", "says"), [
    (("timers", "heartbeat_ms"), "100", 'valid integer, not "100"'),
    (("health", "warning_factor"), "0.5", "valid number"),
    (("health", "history"), 1, "valid boolean, not 1"),
    (("panel", "enabled"), "true", "valid boolean"),
    (("links", 1, "baud"), 115200.0, "valid integer, not 115200.0"),
])
def test_no_value_is_coerced_from_another_type(tmp_path: Path, key: tuple[Any, ...], value: Any, says: str) -> None:
    path = write(tmp_path, config=with_changes({key: value}))
    [problem] = problems(path)
    assert says in problem.reason


# ---------------------------------------------------------------------------- one line per problem


def test_every_problem_is_reported_one_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, config=with_changes({("timers", "heartbeat_ms"): "100", ("health", "history"): 1,
                                                ("state_dir",): "", ("failback", "window"): "02:00-02:00",
                                                ("links", 0, "bind"): "192.0.2.4:+694", ("bogus",): 1}))
    found = problems(path)
    assert sorted(p.key for p in found) == sorted(["timers.heartbeat_ms", "health.history", "state_dir",
                                                   "failback.window", "links[0].bind", "bogus"])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [p.line for p in found]
    assert info.value.key == found[0].key  # the first problem is the error's own file, key and reason


def test_problems_in_the_config_and_its_board_profile_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, config=with_changes({("journal", "keep"): 0}),
                 board=with_changes({("watchdog_pulse", "pin"): "5"}, BASE_BOARD))
    assert [(Path(p.path).name, p.key) for p in problems(path)] == [("tandem.toml", "journal.keep"),
                                                                     ("board.toml", "watchdog_pulse.pin")]


def test_the_real_cli_prints_file_key_and_reason_per_problem_and_exits_78(tmp_path: Path) -> None:
    cases = {
        "several": (with_changes({("timers", "initdead_ms"): "3000", ("panel", "view_only"): 1,
                                  ("shared_ips", 0, "address"): "0.0.0.0/0"}), None, VALID_KEY, 3),
        "drivers": (None, with_changes({("relays", "trunk", "driver"): "os:system",
                                        ("panel", "display", "driver"): "firmware.panel.gpio:GpioKeys"},
                                       BASE_BOARD), VALID_KEY, 2),
        "relative": (None, with_changes({("network",): ".x:Y"}, BASE_BOARD), VALID_KEY, 1),
        "key": (None, None, "1 " + "00" * 32 + "\n", 1),
        "utf8": (to_toml(BASE_CONFIG).encode() + b"\xff", None, VALID_KEY, 1),
    }
    for name, (config, board, key, count) in cases.items():
        path = write(tmp_path / name, config=config, board=board, key=key)
        result = check_config(path)
        assert result.returncode == 78, (name, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == count, (name, lines)
        for line in lines:
            if name == "utf8":  # a problem of the whole file: no key
                assert line.startswith(f"tandem: config error: {path}: not UTF-8"), line
                continue
            match = LINE.match(line)
            assert match, (name, line)
            assert match.group(1) in (str(path), str(path.parent / "board.toml")), line


def test_tandem_release_still_ignores_sections_it_does_not_read(tmp_path: Path) -> None:
    path = write(tmp_path, config=with_changes({("timers", "heartbeat_ms"): "100",
                                                ("witness", "targets"): ["icmp://x\x00"]}))
    assert load_release_config(path).node.node == "alpha"
    path = write(tmp_path, config=with_changes({("state_dir",): "st\x00ate"}))
    with pytest.raises(ConfigError, match="state_dir"):
        load_release_config(path)
