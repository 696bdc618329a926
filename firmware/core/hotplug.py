"""Hot-plug: udev events re-read the sensors that watch the device at once, instead of at the next poll.

A disk, a USB serial adapter or a panel that disappears (or comes back) is
matched against every sensor's options: a sensor whose options name the
device node, one of its stable links (/dev/disk/by-id/…, /dev/serial/by-id/…)
or its kernel name (``sda``, ``ttyUSB0``, ``eth1``) is polled right away, so
its alarm is raised or cleared within moments. pyudev's observer thread
delivers the events; nothing here touches the heartbeat loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SUBSYSTEMS = ("block", "tty", "usb", "net")


@dataclass(frozen=True)
class DeviceEvent:
    """One udev event, reduced to what matching needs."""

    action: str
    subsystem: str
    name: str
    node: str | None = None
    links: tuple[str, ...] = ()

    @property
    def names(self) -> set[str]:
        """Every name the device goes by: kernel name, node, stable links."""
        return {n for n in (self.name, self.node, *self.links) if n}


DEVICE_KEYS = ("device", "path", "port", "array", "interface")
"""Option keys that name a device by its kernel name (``md0``, ``eth1``) rather than by a /dev path."""


def _device_names(options: dict[str, Any]) -> set[str]:
    """The devices a sensor's options name: any /dev path, and kernel names under `DEVICE_KEYS`."""
    names: set[str] = set()

    def visit(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(k, v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(key, v)
        elif isinstance(value, (str, os.PathLike)):
            text = str(value)
            if text.startswith("/dev/"):
                names.update({text, os.path.basename(text)})
            elif key in DEVICE_KEYS and text and "/" not in text:
                names.add(text)

    for key, value in options.items():
        visit(key, value)
    return names


def sensors_watching(event: DeviceEvent, sensors: Iterable[tuple[str, Any]]) -> list[str]:
    """The names of the sensors whose options name the device (``(name, options)`` pairs in).

    A /dev path in any option matches the device's node, links or kernel name;
    a bare name matches only under a device key (``array = "md0"``), so a
    plugin argument that happens to read ``usb1`` does not.
    """
    names = event.names
    watching = []
    for sensor_name, options in sensors:
        dumped = options.model_dump() if hasattr(options, "model_dump") else dict(options)
        if _device_names(dumped) & names:
            watching.append(sensor_name)
    return watching


class HotplugWatcher:
    """Watches udev for devices coming and going and reports each as a `DeviceEvent`."""

    def __init__(self, callback: Callable[[DeviceEvent], None], subsystems: Iterable[str] = SUBSYSTEMS) -> None:
        """``callback`` runs on pyudev's observer thread."""
        self.callback = callback
        self.subsystems = tuple(subsystems)
        self._observer: Any = None
        self.source: str | None = None
        self.error: str | None = None

    def start(self) -> bool:
        """Start watching; False (with ``error`` set) where udev cannot be watched (e.g. a container)."""
        try:
            import pyudev

            context = pyudev.Context()
            # Without a udev daemon (containers, early boot) only the kernel's raw events exist.
            self.source = "udev" if os.path.exists("/run/udev/control") else "kernel"
            monitor = pyudev.Monitor.from_netlink(context, source=self.source)
            for subsystem in self.subsystems:
                monitor.filter_by(subsystem)
            self._observer = pyudev.MonitorObserver(monitor, callback=self._on_device, name="hotplug")
            self._observer.start()
            return True
        except Exception as exc:  # hot-plug is an accelerator; polling still sees every change
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("hot-plug events unavailable (%s); sensors are polled at their interval", self.error)
            return False

    def _on_device(self, device: Any) -> None:
        try:
            event = DeviceEvent(action=device.action or "change", subsystem=device.subsystem or "",
                                name=device.sys_name or "", node=device.device_node,
                                links=tuple(device.device_links))
            if event.action in ("add", "remove", "change", "online", "offline", "bind", "unbind"):
                self.callback(event)
        except Exception:
            log.exception("hot-plug: failed to handle a udev event")

    def close(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.send_stop()
            self._observer = None

    @property
    def running(self) -> bool:
        """Whether events are being watched."""
        return self._observer is not None
