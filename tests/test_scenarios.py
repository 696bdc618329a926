"""Every shipped scenario passes; a scenario whose expectation is wrong fails; bad files are refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sim.bmc import missing_tools
from sim.scenario import ScenarioError, load, run, shipped

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.stem)
def test_shipped_scenario_passes(path: Path) -> None:
    scenario = load(path)
    if scenario.rack.get("fencing") and missing_tools():
        pytest.skip(f"fencing needs the Debian packages {', '.join(missing_tools())}")
    out = io.StringIO()
    assert run(scenario, out), out.getvalue()
    assert "result: PASS" in out.getvalue()


def test_there_are_shipped_scenarios() -> None:
    assert len(shipped()) >= 5


def test_wrong_expectation_fails_with_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "wrong.toml"
    path.write_text('name = "wrong"\n[[step]]\nat = 0\nexpect = { bravo = "ACTIVE" }\nwithin = 1\n')
    out = io.StringIO()
    assert not run(load(path), out)
    assert "FAIL  expect bravo=ACTIVE within 1s: bravo: wanted ACTIVE, saw STANDBY" in out.getvalue()
    assert "result: FAIL" in out.getvalue()


def test_malformed_scenario_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[step]]\nat = 0\ndo = "kill alpha"\nexpect = { alpha = "DOWN" }\n')
    with pytest.raises(ScenarioError, match="exactly one of `do` / `expect`"):
        load(path)
