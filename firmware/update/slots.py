"""The A/B slots an update installs into: a board-profile driver (``slots = { driver = "module:Class" }``).

An update reaches the slots only through this interface: check a bundle, install it into the
other slot (which boots on trial at the next reboot, hardware_docs/updates.md §5), or call off an
install that has not been booted. The appliance's driver, :class:`RaucSlots`, does it with RAUC
through the boot gate and the privileged helper; the simulator's (``sim.slots:SimSlots``) keeps two
slots in a file. Every method blocks (an install takes minutes): callers run them on a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from firmware.appliance import helper
from firmware.config.node import UpdateConfig
from firmware.update.bundle import SYSTEM_CONF, BundleInfo, UpdateError, check_bundle, system_info

MODES = ("pair", "single")


class Slots(Protocol):
    """What an update needs of a box's A/B slots."""

    def check(self, bundle: Path) -> BundleInfo:
        """The bundle's identity once its signature, board family and payload are checked; UpdateError if not."""

    def install(self, bundle: Path, mode: str) -> str:
        """Install into the other slot, on trial from its next boot (`mode`: pair or single); what it said.

        UpdateError (its reason in one line) if it did not install; the running slot stays then."""

    def abort(self) -> str:
        """Call off an installed update not booted yet: the running slot stays first; UpdateError if none."""


class RaucSlots:
    """The appliance's slots: RAUC, through the boot gate (``bootgate install|abort``) as the privileged helper
    runs it, since the daemon is not root."""

    def __init__(self, update: UpdateConfig | None = None, system_conf: str = str(SYSTEM_CONF)) -> None:
        """`update`: the node's [update] section, which every slots driver is given (this one needs none of it);
        `system_conf`: RAUC's system config (compatible, keyring)."""
        self.system_conf = Path(system_conf)

    def check(self, bundle: Path) -> BundleInfo:
        """:func:`firmware.update.bundle.check_bundle` against this box's RAUC system config."""
        return check_bundle(bundle, system_info(self.system_conf))

    def install(self, bundle: Path, mode: str) -> str:
        """``bootgate install BUNDLE MODE`` through the helper."""
        if mode not in MODES:
            raise UpdateError(f"install: the mode is pair or single, not {mode!r}")
        return self._bootgate(["install", str(bundle), mode], helper.INSTALL_TIMEOUT_S + 30)

    def abort(self) -> str:
        """``bootgate abort`` through the helper."""
        return self._bootgate(["abort"], helper.COMMAND_TIMEOUT_S + 5)

    @staticmethod
    def _bootgate(args: list[str], timeout: float) -> str:
        try:
            reply = helper.call("bootgate", args, timeout=timeout)
        except helper.HelperError as exc:
            raise UpdateError(f"bootgate {args[0]}: {exc}") from None
        said = (reply.get("stdout", "") + reply.get("stderr", "")).strip()
        if reply.get("returncode") != 0:
            last = said.splitlines()[-1] if said else f"exit status {reply.get('returncode')}"
            raise UpdateError(f"bootgate {args[0]}: {last}")
        return said
