"""Shared IP action: the service address follows the ACTIVE node.

On promote: optional duplicate-address probe, add the address (on a VLAN
interface created on demand if configured), announce it at once and then
`announce_count - 1` more times `announce_interval_ms` apart in the
background, optionally make it the connected route's preferred source, and
optionally re-announce every `refresh_s` while ACTIVE. On demote: stop
announcing, restore the route, remove the address. Backend calls run in worker
threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from firmware.config import SharedIpConfig
from firmware.core.actions import ActionError
from firmware.core.actions.network import IPAddress, NetworkBackend, NetworkError, ProbeAnswer


class SharedIpAction:
    """Ensure-present / ensure-absent of one shared address."""

    kind = "shared_ip"

    def __init__(self, config: SharedIpConfig, network: NetworkBackend) -> None:
        self.config = config
        self.network = network
        self.name = f"shared_ip {config.address}"
        self.interface = config.interface if config.vlan is None else f"{config.interface}.{config.vlan}"
        self._tasks: list[asyncio.Task] = []
        self.announced = 0
        self.present: bool | None = None  # None: not managed yet in this run

    def check(self) -> None:
        """At start-up: fail now, with the reason, if the interface cannot be managed."""
        try:
            self.network.check(self.config.interface)
        except NetworkError as exc:
            raise ActionError(str(exc)) from None

    def link_up(self) -> bool:
        """Whether the physical interface under this address is up with a carrier (blocking: call it off
        the event loop). The parent, not the VLAN: the VLAN interface may not exist before the first claim."""
        return self.network.link_up(self.config.interface)

    def probe(self, timeout: float, address: IPAddress | None = None) -> ProbeAnswer:
        """Who else on this address's LAN holds or probes for `address` (default: this shared address).

        Blocking: call it off the event loop. Creates the VLAN interface first
        if the address lives on one (idempotent).
        """
        if self.config.vlan is not None:
            self.network.ensure_vlan(self.config.interface, self.config.vlan)
        return self.network.probe(self.interface, address or self.config.ip.ip, timeout)

    async def prepare(self) -> None:
        """Nothing to do before joining."""

    async def ensure_present(self) -> None:
        """Claim and announce the address (idempotent)."""
        cfg, ip = self.config, self.config.ip
        try:
            if cfg.vlan is not None:
                await asyncio.to_thread(self.network.ensure_vlan, cfg.interface, cfg.vlan)
            probing = cfg.probe and not cfg.force
            if probing and not await asyncio.to_thread(self.network.has_address, self.interface, ip):
                answer = await asyncio.to_thread(self.network.probe, self.interface, ip.ip, cfg.probe_timeout_ms / 1000)
                if answer.in_use:
                    raise ActionError(f"{ip.ip} already answers on {self.interface}: another host "
                                      f"({answer.holder}) uses it (set force = true to claim it anyway)")
            # add_address is idempotent: no separate look-up on the way to the first announcement.
            await asyncio.to_thread(self.network.add_address, self.interface, ip)
            self.present = True
            await self._announce()
            if cfg.route_source:
                await asyncio.to_thread(self.network.set_route_source, self.interface, ip)
        except NetworkError as exc:
            raise ActionError(str(exc)) from None
        self._cancel_tasks()
        if cfg.announce_count > 1:
            self._tasks.append(asyncio.ensure_future(self._announce_burst()))
        if cfg.refresh_s > 0:
            self._tasks.append(asyncio.ensure_future(self._refresh()))

    async def ensure_absent(self) -> None:
        """Stop announcing and release the address (idempotent)."""
        self._cancel_tasks()
        cfg, ip = self.config, self.config.ip
        try:
            if cfg.route_source:
                await asyncio.to_thread(self.network.restore_route_source, self.interface, ip)
            await asyncio.to_thread(self.network.remove_address, self.interface, ip)
            self.present = False
        except NetworkError as exc:
            raise ActionError(str(exc)) from None

    async def holds(self) -> bool:
        """Whether the address is configured on its interface right now."""
        try:
            return await asyncio.to_thread(self.network.has_address, self.interface, self.config.ip)
        except NetworkError as exc:
            raise ActionError(str(exc)) from None

    async def _announce(self) -> None:
        await asyncio.to_thread(self.network.announce, self.interface, self.config.ip.ip, self.config.router)
        self.announced += 1

    async def _announce_burst(self) -> None:
        with contextlib.suppress(NetworkError):
            for _ in range(self.config.announce_count - 1):
                await asyncio.sleep(self.config.announce_interval_ms / 1000)
                await self._announce()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_s)
            with contextlib.suppress(NetworkError):
                await self._announce()

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def status(self) -> dict[str, Any]:
        """For the status snapshot: what this node last did with the address (no netlink query,
        since status is built on the heartbeat loop)."""
        return {"address": self.config.address, "interface": self.interface, "present": self.present,
                "announcements": self.announced}
