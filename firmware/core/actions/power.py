"""Powering the appliance off or rebooting it, after the node has left the cluster.

The panel's Shutdown and Reboot (and `tandem poweroff` / `tandem reboot`, and an update's reboot into its
new slot) first leave the cluster exactly like `tandem shutdown` (handing the calls over, with the same
safety checks), then ask the board's power backend. A request that is refused raises PowerError: the
daemon journals it and exits with a failure, so systemd starts it again and the node rejoins rather than
sitting out of the cluster on a box that did not reboot.
"""

from __future__ import annotations

import logging
import signal
import subprocess

from firmware.errors import TandemError

log = logging.getLogger(__name__)

# `systemctl reboot` returns once systemd has queued the job (or refused it); below the unit's TimeoutStopSec.
POWER_TIMEOUT_S = 20.0


class PowerError(TandemError):
    """The power action was not started: its command is missing, refused (polkit, logind) or did not return."""


class SystemPower:
    """Power off or reboot through systemd (or the commands the board profile names)."""

    def __init__(self, poweroff: list[str] | None = None, reboot: list[str] | None = None) -> None:
        """Commands default to ``systemctl poweroff|reboot --check-inhibitors=no``. Run by the unprivileged
        daemon, plain ``systemctl reboot`` refuses whenever another user is logged in (an installer on the
        console or over SSH) and tells them to log out: the operator's or the update's reboot must not wait
        for that. Whether the daemon's user may reboot at all is the image's polkit rule's decision."""
        self.commands = {"poweroff": poweroff or ["systemctl", "poweroff", "--check-inhibitors=no"],
                         "reboot": reboot or ["systemctl", "reboot", "--check-inhibitors=no"]}

    def request(self, action: str) -> str:
        """Start the power action (it ends this process soon after); describe what was run. PowerError if
        the command failed to start it."""
        argv = self.commands[action]
        command = " ".join(argv)
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=POWER_TIMEOUT_S, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PowerError(f"{command}: {exc}") from None
        if done.returncode == -signal.SIGTERM:
            # The shutdown it queued has begun and stops the unit's whole control group, this command too.
            return f"ran {command} (the shutdown began before it returned)"
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[-300:]
            raise PowerError(f"{command} exited {done.returncode}: {said or 'no reason given'}")
        return f"ran {command}"
