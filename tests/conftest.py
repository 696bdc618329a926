"""Shared pytest setup: the tests folder importable for its helper modules, fixtures for simulated
hardware and racks, and a check that the session leaves no process behind."""

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from gpiozero.pins import Factory

from firmware import gpio
from sim.i2c import SimI2cBuses
from sim.rack import NODES, TwoNodeRack

sys.path.insert(0, str(Path(__file__).parent))

from helpers import SETTLE_TIMEOUT_S, new_rack  # noqa: E402  (the tests folder is importable now)

# Every process this session starts inherits the mark, also those that leave the process tree
# (the fake PBX starts in a session of its own), so the end-of-session check finds them all.
SESSION_MARK = "TANDEM_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex



@pytest.fixture
def pin_factories() -> Iterator[Callable[[str], Factory]]:
    """The process's pin-factory look-up (`firmware.gpio.pin_factory`), with no factory before the test and none after.

    Use it in any test that builds GPIO devices from a factory *name* (``pin_factory="mock"``), so the
    mock pins one test claimed or drove are not there in the next.
    """
    gpio.reset()
    yield gpio.pin_factory
    gpio.reset()


@pytest.fixture
def i2c() -> SimI2cBuses:
    """Simulated I2C buses of the test's own: attach device models, hand ``i2c.open`` to drivers as their SMBus."""
    return SimI2cBuses()


@pytest.fixture
def racks(tmp_path: Path) -> Iterator[Callable[..., TwoNodeRack]]:
    """Start simulated two-node racks; every one is stopped when the test ends, however it ends.

    ``racks(**options)`` takes :class:`~sim.rack.TwoNodeRack`'s options plus ``base`` (default: the
    test's tmp_path), ``nodes`` (the nodes to start, default both) and ``settle`` (default True with
    both nodes: wait for alpha ACTIVE and bravo STANDBY).
    """
    started: list[TwoNodeRack] = []

    def start(base: Path | None = None, nodes: tuple[str, ...] = NODES, settle: bool | None = None,
              **options: Any) -> TwoNodeRack:
        rack = new_rack(base or tmp_path, **options)
        started.append(rack)
        rack.start(nodes)
        if settle if settle is not None else nodes == NODES:
            rack.wait_settled(timeout=SETTLE_TIMEOUT_S)
        return rack

    yield start
    for rack in reversed(started):
        rack.stop()


@pytest.fixture
def rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    """A settled default rack: alpha (primary) ACTIVE, bravo (secondary) STANDBY."""
    return racks()


# ---------------------------------------------------------------- nothing left behind


def _leftovers() -> list[psutil.Process]:
    """Live processes this session started (its mark in their environment) or still parented by it."""
    me = psutil.Process()
    mark = os.environ[SESSION_MARK]
    found = {p.pid: p for p in me.children(recursive=True)}
    for process in psutil.process_iter():
        if process.pid == me.pid or process.pid in found:
            continue
        try:
            if process.environ().get(SESSION_MARK) == mark:
                found[process.pid] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    alive = []
    for process in found.values():
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """At the end of the session, fail loudly if a test left a process running (and stop it)."""
    yield
    leftovers = _leftovers()
    if leftovers:
        _, alive = psutil.wait_procs(leftovers, timeout=3)  # one that is just exiting gets a moment
        described = []
        for process in alive:
            try:
                described.append(f"  {process.pid}: {' '.join(process.cmdline())}")
                process.kill()
            except psutil.NoSuchProcess:
                continue
        if described:
            pytest.fail("the tests left processes behind (now killed):\n" + "\n".join(described), pytrace=False)
