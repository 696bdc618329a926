"""The privileged helper: only its fixed operations, with checked arguments, over its socket."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from firmware.appliance import helper


@pytest.mark.parametrize("request_", [
    {"op": "dmidecode", "args": ["-t", "1", "-t", "39"]},
    {"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "/dev/sda"]},
    {"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "-d", "megaraid,3", "/dev/sdb"]},
    {"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "/dev/nvme0n1"]},
])
def test_allowed_requests(request_: dict) -> None:
    operation, args = helper.parse_request(json.dumps(request_).encode())
    assert operation.program == request_["op"] and args == request_["args"]


def test_the_factory_reset_runs_tandem_with_exactly_its_arguments() -> None:
    operation, args = helper.parse_request(b'{"op": "factory-reset", "args": ["factory-reset", "--yes"]}')
    assert (operation.program, args) == ("tandem", ["factory-reset", "--yes"])


@pytest.mark.parametrize("args, timeout", [
    (["pass"], helper.COMMAND_TIMEOUT_S),
    (["abort"], helper.COMMAND_TIMEOUT_S),
    (["install", "/var/lib/tandem/inbox/tandem-0.1.0-20261207T1420Z-acc14ff.raucb", "pair"], helper.INSTALL_TIMEOUT_S),
    (["install", "/media/TANDEM-USB/tandem-0.2.0.raucb", "single"], helper.INSTALL_TIMEOUT_S),
])
def test_the_boot_gate_runs_its_pass_abort_and_installs_from_the_inbox_or_a_stick(args: list[str], timeout: float) -> None:
    operation, checked = helper.parse_request(json.dumps({"op": "bootgate", "args": args}).encode())
    assert (operation.program, checked) == ("/usr/libexec/tandem/bootgate", args)
    assert operation.timeout_s(checked) == timeout


@pytest.mark.parametrize("request_, why", [
    ({"op": "sh", "args": ["-c", "id"]}, "unknown operation"),
    ({"op": "dmidecode", "args": ["--dump-bin", "/etc/shadow"]}, "only -t"),
    ({"op": "dmidecode", "args": ["-t", "1; reboot"]}, "only -t"),
    ({"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "/etc/shadow"]}, "not a disk device"),
    ({"op": "smartctl", "args": ["-s", "off", "/dev/sda"]}, "takes -a -j"),
    ({"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "-d", "exec", "/dev/sda"]}, "device type"),
    ({"op": "dmidecode", "args": "-t 1"}, "list of strings"),
    ({"op": "dmidecode", "args": [], "env": {"PATH": "/tmp"}}, "nothing else"),
    ({"op": "factory-reset", "args": ["factory-reset", "--yes", "--at-boot"]}, "exactly"),
    ({"op": "factory-reset", "args": ["keygen", "/etc/tandem/cluster.key"]}, "exactly"),
    ({"op": "bootgate", "args": ["abort", "now"]}, "exactly: pass"),
    ({"op": "bootgate", "args": ["deadline"]}, "exactly: pass"),
    ({"op": "bootgate", "args": ["pass", "--force"]}, "exactly: pass"),
    ({"op": "bootgate", "args": ["install", "/root/x.raucb", "pair"]}, "installed only from"),
    ({"op": "bootgate", "args": ["install", "/var/lib/tandem/inbox/../../../etc/x.raucb", "pair"]}, "installed only"),
    ({"op": "bootgate", "args": ["install", "/media/../etc/x.raucb", "pair"]}, "installed only"),
    ({"op": "bootgate", "args": ["install", "/var/lib/tandem/inbox/x.raucb\n", "pair"]}, "installed only"),
    ({"op": "bootgate", "args": ["install", "/var/lib/tandem/inbox/x.tar", "pair"]}, "installed only"),
    ({"op": "bootgate", "args": ["install", "/var/lib/tandem/inbox/x.raucb", "both"]}, "pair|single"),
    # A pattern's $ also matches before a final newline: every argument must match whole.
    ({"op": "smartctl", "args": ["-a", "-j", "-n", "standby", "/dev/sda\n"]}, "not a disk device"),
    ({"op": "dmidecode", "args": ["-t", "1\n"]}, "only -t"),
])
def test_refused_requests_name_the_reason_and_run_nothing(request_: dict, why: str) -> None:
    ran = []
    reply = helper.answer(json.dumps(request_).encode(), run=lambda *a, **k: ran.append(a))
    assert reply["ok"] is False and why in reply["error"]
    assert ran == []


def test_an_oversized_or_unterminated_request_is_refused() -> None:
    out = io.BytesIO()
    helper.serve(io.BytesIO(b"x" * (helper.MAX_REQUEST + 10)), out)
    assert "at most" in json.loads(out.getvalue())["error"]


def test_run_through_the_socket_with_a_fake_dmidecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """`helper run` (the daemon's side) → socket → serve (the root side) → the program's output."""
    fake = tmp_path / "bin" / "dmidecode"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"System Information args=$*\"\necho warning >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "helper.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def accept_one() -> None:  # what systemd's Accept=yes does: one connection, one helper process
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as reader, conn.makefile("wb") as writer:
            helper.serve(reader, writer)

    thread = threading.Thread(target=accept_one)
    thread.start()
    monkeypatch.setattr(helper, "SOCKET", path)
    monkeypatch.setattr(helper.call, "__defaults__", (path, 10.0))
    code = helper.main(["run", "dmidecode", "--", "-t", "1"])
    thread.join(timeout=10)
    server.close()
    out, err = capfd.readouterr()
    assert code == 3 and "System Information args=-t 1" in out and "warning" in err


def test_an_unreachable_helper_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(helper.HelperError, match="cannot be reached"):
        helper.call("dmidecode", ["-t", "1"], path=tmp_path / "nothing.sock")
