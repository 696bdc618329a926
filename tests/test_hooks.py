"""Hook scripts: discovery, environment and stdin, timeout with process-group kill."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from firmware.core.actions.hooks import HookRunner, hook_environment


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
    make_hook(tmp_path / "state", "hang", f"sleep 60 & echo $! > {pidfile}; wait")
    started = time.monotonic()
    result = asyncio.run(HookRunner(tmp_path, timeout=0.5).run("state", {}, {}))[0]
    assert time.monotonic() - started < 5
    assert result.exit_code is None and "killed after the 0.5 s timeout" in result.output
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the hook's child process survived the timeout")


def test_daemon_runs_hooks_and_a_hanging_hook_does_not_delay_heartbeats(tmp_path: Path) -> None:
    from sim.rack import TwoNodeRack

    hooks = tmp_path / "hooks"
    marker = tmp_path / "peer-found-alpha.json"
    make_hook(hooks / "peer.found", "10-note", f'cat > "{tmp_path}/peer-found-$TANDEM_NODE.json"')
    make_hook(hooks / "all", "90-slow", "sleep 2")  # runs for every event, hangs past the timeout
    rack = TwoNodeRack(tmp_path / "rack", extra={"hooks": {"dir": str(hooks), "timeout_ms": 1500}})
    rack.start()
    try:
        rack.wait_state("alpha", "ACTIVE", timeout=20)
        rack.wait_for(lambda: any(e["kind"] == "hook" and e["data"]["hook"] == "10-note" and e["data"]["exit_code"] == 0
                                  for e in rack.events("alpha")), 20, what="alpha's peer.found hook to finish")
        assert json.loads(marker.read_text())["kind"] == "peer.found"
        rack.wait_for(lambda: any(e["kind"] == "hook" and e["data"]["hook"] == "90-slow" and e["data"]["exit_code"] is None
                                  for e in rack.events("bravo")), 20, what="the slow hook to be killed")
        # While hooks were hanging, bravo's heartbeat tick kept time (a stall would show as lag
        # of the hook's 1.5-2 s) and alpha received none of its heartbeats even 200 ms late.
        status = rack.status("bravo")
        assert status["heartbeat"]["max_tick_lag_ms"] < 150, status["heartbeat"]
        for link in rack.status("alpha")["links"]:
            late = link["lateness_ms"]
            assert late["<=500ms"] + late[">500ms"] == 0, link
    finally:
        rack.stop()


def test_promote_before_hook_vetoes_a_real_takeover(tmp_path: Path) -> None:
    from sim.rack import TwoNodeRack

    hooks = tmp_path / "hooks"
    flag = tmp_path / "veto-bravo"
    # bravo's promote.before refuses while the flag file exists (e.g. "trunk card not ready").
    make_hook(hooks / "promote.before", "10-trunks",
              f'if [ "$TANDEM_NODE" = bravo ] && [ -e {flag} ]; then echo "trunk card not ready"; exit 1; fi')
    flag.touch()
    rack = TwoNodeRack(tmp_path / "rack", extra={"hooks": {"dir": str(hooks)}, "actions": {"veto_backoff_s": 2.0}})
    rack.start()
    try:
        rack.wait_settled(timeout=20)
        rack.kill("alpha")
        rack.wait_for(lambda: any(e["kind"] == "promote.vetoed" for e in rack.events("bravo")), 10,
                      what="bravo's promotion to be vetoed")
        veto = next(e for e in rack.events("bravo") if e["kind"] == "promote.vetoed")
        assert "10-trunks exited 1: trunk card not ready" in veto["data"]["detail"]
        assert rack.state("bravo") == "STANDBY"
        assert "vetoed" in rack.status("bravo")["reason"]
        flag.unlink()  # the card is ready: after the back-off bravo takes over
        rack.wait_state("bravo", "ACTIVE", timeout=15)
    finally:
        rack.stop()
