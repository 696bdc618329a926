"""The simulator's power backend: powering off or rebooting a simulated node only records the request."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RecordingPower:
    """Records power requests instead of acting on the host."""

    def __init__(self) -> None:
        """No requests yet."""
        self.requests: list[str] = []

    def request(self, action: str) -> str:
        """Record the request; the simulated node simply stays stopped."""
        self.requests.append(action)
        log.info("simulated %s: the node has left the cluster and stays stopped", action)
        return f"simulated {action} (nothing is powered off)"
