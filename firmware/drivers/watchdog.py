"""Hardware watchdog (`/dev/watchdog`) and the GPIO watchdog pulse for external failover switches.

Both are fed from the heartbeat tick itself, and only while that tick runs on
time: a stalled daemon stops feeding them, so the board resets (hardware
watchdog) or the external switch changes over (pulse), instead of a side
thread keeping a stuck daemon looking alive.

/dev/watchdog facts (see shared/reference/rrdtool-and-watchdogs.md): opening
arms it; a write or WDIOC_KEEPALIVE pings; closing disarms only after writing
'V' (magic close) and only if the driver allows it (never with nowayout).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from typing import Any

from firmware.errors import HardwareError

log = logging.getLogger(__name__)

WDIOC_SETOPTIONS = 0x80045704
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
WDIOC_GETBOOTSTATUS = 0x80045702
WDIOF_CARDRESET = 0x0020


class WatchdogError(HardwareError):
    """The watchdog device cannot be used; the message names the device and the reason."""


class HardwareWatchdog:
    """/dev/watchdog: armed on open, pinged from the healthy tick, magic-closed on orderly stop."""

    def __init__(self, device: str = "/dev/watchdog", timeout_s: int = 10) -> None:
        self.device = device
        self.timeout_s = timeout_s
        self.applied_timeout: int | None = None
        self.rebooted_by_watchdog: bool | None = None
        self._fd: int | None = None
        self._ioctls = True

    def open(self) -> None:
        """Arm the watchdog and set its timeout; WatchdogError if the device cannot be opened."""
        try:
            self._fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (held by another process, e.g. systemd's RuntimeWatchdogSec)" if exc.errno == errno.EBUSY else ""
            raise WatchdogError(f"{self.device}: {exc.strerror or exc}{hint}") from None
        try:
            value = fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", self.timeout_s))
            self.applied_timeout = struct.unpack("i", value)[0]
            status = fcntl.ioctl(self._fd, WDIOC_GETBOOTSTATUS, struct.pack("i", 0))
            self.rebooted_by_watchdog = bool(struct.unpack("i", status)[0] & WDIOF_CARDRESET)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                self.close(magic=True)
                raise WatchdogError(f"{self.device}: cannot set the timeout: {exc.strerror or exc}") from None
            # Not a watchdog driver with ioctls (or a test double): pings by write still work.
            self._ioctls = False
            log.warning("%s: no watchdog ioctls (%s); using writes only, timeout left as the driver's",
                        self.device, exc.strerror or exc)

    def keepalive(self) -> None:
        """Ping the watchdog."""
        if self._fd is None:
            return
        try:
            if self._ioctls:
                fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, struct.pack("i", 0))
            else:
                os.write(self._fd, b"\0")
        except OSError as exc:
            log.error("%s: keepalive failed: %s", self.device, exc.strerror or exc)

    def close(self, magic: bool = True) -> None:
        """Disarm with the magic 'V' (orderly stop) and close."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if magic:
                os.write(fd, b"V")
        except OSError as exc:
            log.error("%s: magic close failed: %s", self.device, exc.strerror or exc)
        finally:
            os.close(fd)

    def status(self) -> dict[str, Any]:
        """For the status snapshot."""
        return {"device": self.device, "armed": self._fd is not None, "timeout_s": self.applied_timeout,
                "last_reboot_by_watchdog": self.rebooted_by_watchdog}


class WatchdogPulse:
    """A GPIO line toggled on every healthy tick while the node is ACTIVE (for external failover switches)."""

    def __init__(self, pin: int, pin_factory: str = "lgpio", active_high: bool = True) -> None:
        self.pin = pin
        self.factory_name = pin_factory
        self.active_high = active_high
        self.toggles = 0
        self._device: Any = None

    def open(self) -> None:
        """Claim the pin (low)."""
        from gpiozero import DigitalOutputDevice

        from firmware import gpio

        try:
            self._device = DigitalOutputDevice(self.pin, active_high=self.active_high, initial_value=False,
                                               pin_factory=gpio.pin_factory(self.factory_name))
        except Exception as exc:
            raise WatchdogError(f"watchdog pulse on GPIO {self.pin}: {exc}") from None

    def beat(self, active: bool) -> None:
        """Toggle while ACTIVE; hold low otherwise (the external switch then changes over)."""
        if self._device is None:
            return
        if active:
            self._device.toggle()
            self.toggles += 1
        elif self._device.value:
            self._device.off()

    def status(self) -> dict[str, Any]:
        """For the status snapshot."""
        return {"pin": self.pin, "toggles": self.toggles, "level": bool(self._device.value) if self._device else None}

    def close(self) -> None:
        """Stop pulsing and hand the line back."""
        if self._device is not None:
            try:
                self._device.off()
                self._device.close()
            except Exception:
                pass
            self._device = None
