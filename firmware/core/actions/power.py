"""Powering the appliance off or rebooting it, after the node has left the cluster.

The panel's Shutdown and Reboot (and `tandem poweroff` / `tandem reboot`)
first leave the cluster exactly like `tandem shutdown` (handing the calls
over, with the same safety checks), then ask the board's power backend.
"""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)


class SystemPower:
    """Power off or reboot through systemd (or the commands the board profile names)."""

    def __init__(self, poweroff: list[str] | None = None, reboot: list[str] | None = None) -> None:
        """Commands default to ``systemctl poweroff`` and ``systemctl reboot``."""
        self.commands = {"poweroff": poweroff or ["systemctl", "poweroff"],
                         "reboot": reboot or ["systemctl", "reboot"]}

    def request(self, action: str) -> str:
        """Start the power action (without waiting: it ends this process); describe what was run."""
        argv = self.commands[action]
        try:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("%s: %s failed: %s", action, " ".join(argv), exc)
            return f"{' '.join(argv)} failed: {exc}"
        return f"ran {' '.join(argv)}"
