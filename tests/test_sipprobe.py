"""The VM rack's SIP probe in watch mode: every run of unanswered OPTIONS is found and measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import wait_for
from sim.fakesip import FakeSipResponder

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.05


def test_watch_reports_the_run_of_requests_a_silent_pbx_left_unanswered() -> None:
    with FakeSipResponder() as sip:
        probe = subprocess.Popen([sys.executable, "-m", "sim.vm.sipprobe", "127.0.0.1", "--port", str(sip.port),
                                  "--watch", "--interval", str(INTERVAL), "--timeout", "300"],
                                 cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert probe.stdin is not None and probe.stdout is not None
        try:
            assert probe.stdout.readline().strip() == "ready"
            wait_for(lambda: len(sip.requests) >= 10, timeout=60, what="ten answered requests")
            sip.silent = True
            silent_from = len(sip.requests)
            wait_for(lambda: len(sip.requests) >= silent_from + 12, timeout=60, what="twelve unanswered requests")
            sip.silent = False
            silent_until = len(sip.requests)
            wait_for(lambda: len(sip.requests) >= silent_until + 10, timeout=60, what="ten answered requests again")
            probe.stdin.write("stop\n")
            probe.stdin.flush()
            result = json.loads(probe.stdout.readline())
        finally:
            probe.kill()
            probe.wait()
    assert result["sent"] == len(sip.requests)
    # The switch to silent and back races the requests in flight: the run is at least the requests
    # received while silent but one at each end.
    unanswered = silent_until - silent_from
    assert result["answered"] == result["sent"] - result["gaps"][0]["unanswered"]
    assert len(result["gaps"]) == 1, result
    gap = result["gaps"][0]
    assert unanswered - 2 <= gap["unanswered"] <= unanswered + 2, (gap, unanswered)
    assert result["gap_ms_max"] == gap["ms"]
    assert gap["ms"] >= (gap["unanswered"] - 0.5) * INTERVAL * 1000 and not gap["open"]
