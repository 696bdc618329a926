"""SerialLink over the simulated null-modem cable: noise, cuts, unplug and replug.

"Resumes within 2 heartbeats" is checked by counting, not timing: of the
heartbeats sent after the cable is restored (or the adapter replugged), at
most the first may be lost. The cable's forwarder is a thread: before the
test changes the line (cut, restore, noise) it waits until the forwarder has
dealt with what was sent, so a loaded machine cannot move a heartbeat across
the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from firmware.config import SerialLinkConfig
from firmware.core.links import SerialLink
from helpers import wait_for_async
from sim.cable import NullModemCable

INTERVAL = 0.1


class Pair:
    """Two SerialLinks on one cable; `a` sends numbered heartbeats to `b` every INTERVAL."""

    def __init__(self, cable: NullModemCable) -> None:
        self.cable = cable
        self.a = SerialLink(SerialLinkConfig(name="serial0", kind="serial", port=str(cable.path("a"))))
        self.b = SerialLink(SerialLinkConfig(name="serial0", kind="serial", port=str(cable.path("b"))))
        self.received: list[int] = []
        self.sent = 0

    async def start(self) -> None:
        await self.a.start(lambda link, packet, now: None)
        await self.b.start(lambda link, packet, now: self.received.append(int.from_bytes(packet, "big")))

    async def beat(self, count: int) -> list[int]:
        """Send `count` heartbeats (each a 64-byte packet holding its number); return their numbers."""
        loop = asyncio.get_running_loop()
        numbers = []
        for _ in range(count):
            self.sent += 1
            numbers.append(self.sent)
            now = loop.time()
            self.a.maintain(now)
            self.b.maintain(now)
            self.a.send(self.sent.to_bytes(64, "big"))
            await asyncio.sleep(INTERVAL)  # the heartbeat interval: paces the sender, not a wait for delivery
        return numbers

    async def until(self, condition: Callable[[], object], what: str) -> None:
        """Wait for ``condition`` while the loop (and so the links) goes on receiving."""
        await wait_for_async(condition, what=what)

    async def arrived(self, numbers: list[int]) -> None:
        """Wait until every heartbeat in ``numbers`` has been received."""
        await self.until(lambda: set(numbers) <= set(self.received), f"heartbeats {numbers} to arrive")

    async def cut_and_beat(self, count: int) -> list[int]:
        """Cut the cable, send ``count`` heartbeats, and wait until the cable has dropped every byte of them."""
        sent, dropped = self.a.counters.bytes_sent, self.cable.stats["a->b"]["dropped"]
        self.cable.cut()
        numbers = await self.beat(count)
        on_the_line = self.a.counters.bytes_sent - sent
        await self.until(lambda: self.cable.stats["a->b"]["dropped"] - dropped >= on_the_line,
                         f"the cut cable to drop {on_the_line} bytes")
        return numbers

    def close(self) -> None:
        self.a.close()
        self.b.close()


def run(tmp_path: Path, scenario) -> None:
    async def main() -> None:
        with NullModemCable(tmp_path) as cable:
            pair = Pair(cable)
            await pair.start()
            try:
                await scenario(pair)
            finally:
                pair.close()
    asyncio.run(main())


def test_heartbeats_cross_the_cable(tmp_path: Path) -> None:
    async def scenario(pair: Pair) -> None:
        sent = await pair.beat(10)
        await pair.arrived(sent)
        assert pair.received == sent
        assert pair.b.counters.bad_frames == 0
    run(tmp_path, scenario)


def test_noise_bursts_between_heartbeats_cost_nothing(tmp_path: Path) -> None:
    async def scenario(pair: Pair) -> None:
        expected = await pair.beat(3)
        for burst in range(8):
            await pair.arrived(expected)  # the line is quiet: the noise falls between frames
            pair.cable.inject_noise(40, toward="b", seed=burst)
            expected += await pair.beat(2)
        await pair.arrived(expected)
        assert pair.received == expected
        assert pair.b.counters.bad_frames >= 1  # the noise was seen and dropped
    run(tmp_path, scenario)


def test_cut_and_reconnect_resumes_within_two_heartbeats(tmp_path: Path) -> None:
    async def scenario(pair: Pair) -> None:
        before = await pair.beat(5)
        await pair.arrived(before)
        lost = await pair.cut_and_beat(5)
        pair.cable.restore()
        after = await pair.beat(5)
        await pair.arrived(after[1:])
        assert set(pair.received).isdisjoint(lost)
        assert set(before) <= set(pair.received)
        assert set(after[1:]) <= set(pair.received), (after, pair.received)
    run(tmp_path, scenario)


def test_unplugged_adapter_is_reopened_within_two_heartbeats_of_replug(tmp_path: Path) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.beat(3)
        pair.cable.unplug("a")
        await pair.beat(3)
        assert not pair.a.is_open and ("lost" in pair.a.detail or "cannot open" in pair.a.detail)
        pair.cable.replug("a")
        after = await pair.beat(5)
        await pair.arrived(after[1:])
        assert pair.a.is_open
        assert set(after[1:]) <= set(pair.received), (after, pair.received)
    run(tmp_path, scenario)
