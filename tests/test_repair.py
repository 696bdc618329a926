"""Re-pairing a replaced box while the survivor keeps the calls (two real daemons, a real pty cable).

The survivor's daemon lends its serial port to `tandem pair`, keeps heartbeating on UDP, and takes the
new cluster key and the new box's identity (for the bulk channel) without a restart.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.rack import CABLE_ENDS, TwoNodeRack

pytestmark = pytest.mark.integration


def _pair(rack: TwoNodeRack, name: str, key_file: Path, *extra: str) -> subprocess.Popen:
    """`tandem pair --force` on `name`'s end of the cable, answering yes to the code."""
    argv = [sys.executable, "-m", "firmware.cli", *extra, "pair", str(rack.cable.path(CABLE_ENDS[name])),
            "--node", name, "--force", "--key-file", str(key_file), "--record", str(rack.record_path(name)),
            "--identity", str(rack.identity_path(name)), "--timeout", "60"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write("y\n")
    proc.stdin.flush()
    return proc


def test_a_replaced_peer_is_paired_while_the_survivor_keeps_the_calls(racks) -> None:
    rack = racks(bulk=True, service="cold")
    old_identity = rack.identity_path("bravo").read_bytes()
    rack.kill("bravo")
    rack.wait_released("bravo")
    rack.wait_until("alpha", lambda s: s["peer_alive"] is False, timeout=30, what="alpha hears bravo no more")
    since = rack.events("alpha")[-1]["id"]
    # The new box: same name, nothing of the old one (first boot makes a new identity key).
    shutil.rmtree(rack.base / "bravo" / "state")
    rack.identity_path("bravo").unlink()
    survivor = _pair(rack, "alpha", rack.key_file, "-c", str(rack.config_path("alpha")))
    # The new box has a key file of its own (the rack's two nodes share one until now).
    new_key = rack.base / "bravo" / "cluster.key"
    newcomer = _pair(rack, "bravo", new_key)
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert "keeps the calls meanwhile" in out and "took the new key" in out and "without a restart" in out
    out, err = newcomer.communicate(timeout=60)
    assert newcomer.returncode == 0, err
    assert rack.identity_path("bravo").read_bytes() != old_identity
    # alpha never let go of the calls.
    assert rack.state("alpha") == "ACTIVE" and rack.pbx_running("alpha")
    kinds = [event["kind"] for event in rack.events("alpha", since)]
    assert "state" not in kinds
    assert [k for k in kinds if k in ("serial.lent", "keys.reloaded", "serial.returned")] == [
        "serial.lent", "keys.reloaded", "serial.returned"]
    assert new_key.read_bytes() == rack.key_file.read_bytes()
    config = rack.config_path("bravo")
    config.write_text(config.read_text().replace(f'key_file = "{rack.key_file}"', f'key_file = "{new_key}"'))
    # The new box joins with the new key, on both links, and the bulk channel knows its new identity.
    rack.start_node("bravo")
    rack.wait_state("bravo", "STANDBY", timeout=60)
    rack.wait_until("alpha", lambda s: all(link["state"] == "up" for link in s["links"]), timeout=60, full=True,
                    what="both of alpha's links up")
    rack.wait_until("alpha", lambda s: s["bulk"]["listening"], timeout=60, full=True, what="alpha's bulk channel")
    done = rack.cli("bravo", "bulk", "ping")
    assert done.returncode == 0, done.stderr
    assert rack.state("alpha") == "ACTIVE"


def test_re_pairing_refuses_a_new_box_with_another_name(racks) -> None:
    rack = racks(bulk=True)
    rack.kill("bravo")
    rack.wait_released("bravo")
    key_before = rack.key_file.read_bytes()
    survivor = _pair(rack, "alpha", rack.key_file, "-c", str(rack.config_path("alpha")))
    argv = [sys.executable, "-m", "firmware.cli", "pair", str(rack.cable.path(CABLE_ENDS["bravo"])), "--node",
            "charlie", "--force", "--key-file", str(rack.base / "charlie.key"), "--record",
            str(rack.base / "charlie.json"), "--identity", str(rack.base / "charlie.identity"), "--timeout", "60"]
    newcomer = subprocess.run(argv, input="y\n", capture_output=True, text=True, timeout=120)
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 1 and "calls itself 'charlie'" in err and "--node bravo" in err
    assert rack.key_file.read_bytes() == key_before  # nothing written on the survivor
    assert newcomer.returncode == 0  # (the newcomer's own files are the integrator's to redo)
    rack.wait_until("alpha", lambda s: any(link["name"] == "serial0" and "lent" not in str(link.get("detail"))
                                           for link in s["links"]), timeout=30, full=True,
                    what="alpha's serial port taken back")
    assert rack.state("alpha") == "ACTIVE"
