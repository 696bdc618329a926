"""Hook scripts: discovery, environment and stdin, timeout with process-group kill."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from firmware.core.actions.hooks import HookRunner, hook_environment
from helpers import wait_for
from sim.rack import TwoNodeRack


def make_hook(folder: Path, name: str, body: str, executable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_hooks_get_environment_and_event_json(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    make_hook(tmp_path / "peer.lost", "10-record",
              f'cat > {out}.stdin; env | grep ^TANDEM_ | sort > {out}.env; echo hello from hook')
    runner = HookRunner(tmp_path, timeout=5)
    record = {"id": 7, "kind": "peer.lost", "data": {"peer": "bravo"}}
    env = hook_environment({"node": "alpha", "role": "primary", "state": "STANDBY", "epoch": 3, "health": 90,
                            "peer": {"name": "bravo", "state": None}})
    results = asyncio.run(runner.run("peer.lost", record, env))
    assert [r.hook for r in results] == ["10-record"] and results[0].ok
    assert results[0].output == "hello from hook"
    assert json.loads(Path(f"{out}.stdin").read_text()) == record
    seen = Path(f"{out}.env").read_text()
    for line in ("TANDEM_EVENT=peer.lost", "TANDEM_NODE=alpha", "TANDEM_PEER=bravo", "TANDEM_ROLE=primary",
                 "TANDEM_STATE=STANDBY", "TANDEM_EPOCH=3", "TANDEM_HEALTH=90"):
        assert line in seen


def test_order_all_folder_and_non_executables(tmp_path: Path) -> None:
    make_hook(tmp_path / "state", "20-second", "echo 2")
    make_hook(tmp_path / "state", "10-first", "echo 1")
    make_hook(tmp_path / "state", "30-not-executable", "echo 3", executable=False)
    make_hook(tmp_path / "all", "50-every-event", "echo all")
    runner = HookRunner(tmp_path, timeout=5)
    results = asyncio.run(runner.run("state", {}, {}))
    assert [r.output for r in results] == ["1", "2", "all"]
    assert [r.hook for r in asyncio.run(runner.run("peer.found", {}, {}))] == ["50-every-event"]
    assert HookRunner(None).hooks_for("state") == []


def test_exit_code_is_reported(tmp_path: Path) -> None:
    make_hook(tmp_path / "promote.before", "veto", "echo trunks not ready >&2; exit 3")
    result = asyncio.run(HookRunner(tmp_path, timeout=5).run("promote.before", {}, {}))[0]
    assert result.exit_code == 3 and not result.ok and result.output == "trunks not ready"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    make_hook(tmp_path / "state", "hang", f"sleep 600 & echo $! > {pidfile}; wait")
    # A runner that waited the hook out would take ten minutes: the test's own timeout fails it first.
    result = asyncio.run(HookRunner(tmp_path, timeout=0.5).run("state", {}, {}))[0]
    assert result.exit_code is None and "killed after the 0.5 s timeout" in result.output
    child = psutil.Process(int(pidfile.read_text()))
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10,
             what="the hook's child process to be gone")


@pytest.mark.integration
def test_daemon_runs_hooks_and_a_hanging_hook_does_not_delay_heartbeats(racks: Callable[..., TwoNodeRack],
                                                                         tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    marker = tmp_path / "peer-found-alpha.json"
    make_hook(hooks / "peer.found", "10-note", f'cat > "{tmp_path}/peer-found-$TANDEM_NODE.json"')
    make_hook(hooks / "all", "90-slow", "sleep 2")  # runs for every event, hangs past the timeout
    rack = racks(base=tmp_path / "rack", settle=False, extra={"hooks": {"dir": str(hooks), "timeout_ms": 1500}})
    rack.wait_state("alpha", "ACTIVE", timeout=20)
    rack.wait_event("alpha", lambda e: e["kind"] == "hook" and e["data"]["hook"] == "10-note"
                    and e["data"]["exit_code"] == 0, what="alpha's peer.found hook to finish")
    assert json.loads(marker.read_text())["kind"] == "peer.found"
    rack.wait_event("bravo", lambda e: e["kind"] == "hook" and e["data"]["hook"] == "90-slow"
                    and e["data"]["exit_code"] is None, what="the slow hook to be killed")
    # While hooks hung for 1.5 s (five deadtimes), neither node's loop stopped sending: neither ever
    # lost its peer or a link after it first found it. (How late the ticks ran: bench/hooks.py.)
    for name in ("alpha", "bravo"):
        events = rack.events(name)
        found = next(e["id"] for e in events if e["kind"] == "peer.found")
        lost = [e for e in events if e["id"] > found and e["kind"] in ("peer.lost", "link.down")]
        assert lost == [], f"{name} lost its peer while hooks hung: {lost}"


@pytest.mark.integration
def test_promote_before_hook_vetoes_a_real_takeover(racks: Callable[..., TwoNodeRack], tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    flag = tmp_path / "veto-bravo"
    # bravo's promote.before refuses while the flag file exists (e.g. "trunk card not ready").
    make_hook(hooks / "promote.before", "10-trunks",
              f'if [ "$TANDEM_NODE" = bravo ] && [ -e {flag} ]; then echo "trunk card not ready"; exit 1; fi')
    flag.touch()
    rack = racks(base=tmp_path / "rack", extra={"hooks": {"dir": str(hooks)}, "actions": {"veto_backoff_s": 2.0}})
    rack.kill("alpha")
    veto = rack.wait_event("bravo", lambda e: e["kind"] == "promote.vetoed", timeout=10,
                           what="bravo's promotion to be vetoed")
    assert "10-trunks exited 1: trunk card not ready" in veto["data"]["detail"]
    assert rack.state("bravo") == "STANDBY"
    assert "vetoed" in rack.brief("bravo")["reason"]
    flag.unlink()  # the card is ready: after the back-off bravo takes over
    rack.wait_state("bravo", "ACTIVE", timeout=15)
