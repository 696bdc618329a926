"""Hot-plug routing: which sensors a udev event wakes, and the watcher's life cycle."""

from __future__ import annotations

from firmware.core.hotplug import DeviceEvent, HotplugWatcher, sensors_watching


def test_events_wake_the_sensors_that_name_the_device() -> None:
    sensors = [
        ("sda", {"device": "/dev/sda", "extra_args": []}),
        ("usb0", {"path": "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0", "missing": "CRITICAL"}),
        ("md0", {"array": "md0"}),
        ("wan", {"interface": "eth1"}),
        ("plugin", {"command": ["/usr/lib/nagios/plugins/check_usb", "usb1"], "env": {}}),
        ("pbx", {"process": "md0", "pidfile": None}),
    ]
    disk = DeviceEvent("remove", "block", "sda", "/dev/sda", ("/dev/disk/by-id/ata-X",))
    assert sensors_watching(disk, sensors) == ["sda"]
    adapter = DeviceEvent("add", "tty", "ttyUSB0", "/dev/ttyUSB0", ("/dev/serial/by-id/usb-FTDI_FT232R-if00-port0",))
    assert sensors_watching(adapter, sensors) == ["usb0"]
    raid = DeviceEvent("change", "block", "md0", "/dev/md0")
    assert sensors_watching(raid, sensors) == ["md0"]  # not the process sensor that happens to say md0
    link = DeviceEvent("change", "net", "eth1")
    assert sensors_watching(link, sensors) == ["wan"]
    bus = DeviceEvent("add", "usb", "usb1", "/dev/bus/usb/001/001")
    assert sensors_watching(bus, sensors) == []  # a plugin argument is not a device


def test_the_watcher_starts_or_says_why_not_and_closes() -> None:
    seen = []
    watcher = HotplugWatcher(seen.append)
    started = watcher.start()
    assert started == watcher.running
    assert started or watcher.error  # where udev cannot be watched, the reason is kept
    watcher.close()
    assert not watcher.running
