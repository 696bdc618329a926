"""The rolling update of the pair on the two-VM rack: RAUC, GRUB (through SeaBIOS), the boot gate and Tandem,
all real, in both VMs; a SIP client sends OPTIONS to the shared IP every 100 ms all along.

Two updates on one pair, as an operator would meet them: first a release whose Tandem cannot start (its
heartbeat key path is broken): the updated STANDBY is not marked good, boots back into its old slot, the
update stops, and the ACTIVE never gives up the calls. Then a good release: both VMs end on the new slot,
marked good, and the calls moved once, in the planned handover. Each install-and-boot cycle costs minutes
under software emulation: the `vm` marker (``./dev test -m vm``); bench/update.py measures the same run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.vm.update import ONE_FAILOVER_MS
from vmimage import test_image  # noqa: F401  (the module's image fixture)

pytestmark = [pytest.mark.integration, pytest.mark.vm, pytest.mark.timeout(7200)]

SIP_INTERVAL_S = 0.1


@pytest.fixture(scope="module")
def bundles(test_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """The good bundle (the test image's slot) and a broken one (its Tandem cannot start), signed by the
    development PKI the image trusts."""
    from sim.vm.update import make_bundles

    return make_bundles(test_image, tmp_path_factory.mktemp("bundles"))


def test_a_broken_release_rolls_back_then_a_good_one_rolls_through_the_pair(test_image: Path,  # noqa: F811
                                                                           bundles: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    from sim.vm.update import broken_then_good

    result = broken_then_good(test_image, bundles, tmp_path, ONE_FAILOVER_MS, SIP_INTERVAL_S)
    print(f"broken release: {result.broken.seconds} s, stages {result.broken.stages}, SIP {result.broken_sip}")
    print(f"good release: {result.good.seconds} s, stages {result.good.stages}, SIP {result.good_sip}")
    # The broken release: stopped at peer-boot, the STANDBY back on its old slot, the ACTIVE kept the calls
    # (sim.vm.update.rollback_problems, and SIP answered all along).
    assert result.rollback_problems == []
    # The good release: both VMs on the new slot, marked good; the calls moved once, in the handover
    # (sim.vm.update.update_problems: no SIP gap of ONE_FAILOVER_MS).
    assert result.update_problems == []


def test_a_power_pull_of_the_standby_in_its_install_or_first_boot_leaves_the_pair_intact(
        test_image: Path, bundles: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """The STANDBY loses power while RAUC writes its new slot, and (a second update) once it has booted the
    new slot on trial: each time it comes back on its old slot, the update stops, the ACTIVE keeps the calls."""
    from sim.vm.rack import VmRack
    from sim.vm.update import (bundle_stick, copy_from_stick, pair_before, paired_and_running, rollback_problems,
                               updated_under_sip)

    stick, size = bundle_stick(bundles["good"], tmp_path)
    with VmRack(test_image, tmp_path, firmware="bios", disks={"alpha": [stick], "bravo": [stick]}) as rack:
        try:
            paired_and_running(rack)
            for name in rack.vms:  # the update starts on either VM: the bundle on both
                good = copy_from_stick(rack, name, "/dev/vdb", size, "good.raucb")
            for when in ("install", "first-boot"):
                # Settled first: under emulation a loop stall can make the ACTIVE fence itself (and take the
                # calls back) after the previous round; the update starts on whichever VM is ACTIVE now.
                active = rack.wait_any_active(timeout=600)
                before = pair_before(rack, active)
                run, gaps = updated_under_sip(rack, active, good, SIP_INTERVAL_S, power_pull=when)
                print(f"power pull in the {when}: {run.seconds} s, stages {run.stages}, SIP {gaps}")
                assert rollback_problems(rack, active, run, before, why="rolled-back at") == [], when
                assert gaps["answered"] > 0 and gaps["gap_ms_max"] < ONE_FAILOVER_MS, gaps
        except BaseException:
            print(rack.diagnostics())
            raise
