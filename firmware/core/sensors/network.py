"""Network sensors: link carrier of an interface, and ICMP reachability of an address.

Both work without root: netlink link queries need no privilege, and ICMP
echo uses unprivileged "ping" sockets when not root (which the kernel allows
only to groups in ``net.ipv4.ping_group_range``).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import icmplib
from pydantic import Field, field_validator, model_validator
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .base import Level, Reading, Sensor, SensorError, SensorOptions

__all__ = ["CarrierOptions", "CarrierSensor", "ReachabilityOptions", "ReachabilitySensor"]

IFF_UP = 0x1
# Operational states (RFC 2863) that mean the link cannot pass traffic; "UNKNOWN" is normal for
# loopback, tun and drivers that do not report it, so carrier decides there.
_DOWN_STATES = {"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"}
_DEGRADED_STATES = {"DORMANT", "TESTING"}


class CarrierOptions(SensorOptions):
    """Options of the ``carrier`` family."""

    interface: str
    """Interface name, e.g. ``eth0``."""

    @field_validator("interface")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not 1 <= len(value) <= 15 or any(c in value for c in "/: \t\n") or value in (".", ".."):
            raise ValueError(f"{value!r} is not a Linux interface name (1-15 characters, no '/', ':' or spaces)")
        return value


class CarrierSensor(Sensor):
    """Family ``carrier``: is the interface up and does it have a link.

    CRITICAL when the interface is missing, administratively down, has no
    carrier, or its operstate is DOWN/LOWERLAYERDOWN/NOTPRESENT; WARNING when
    DORMANT or TESTING. Values ``carrier`` (1/0), ``mtu``, ``carrier_changes``
    (rising steadily means a flapping link) and ``speed_mbps`` when the driver
    reports it in sysfs; info ``operstate``, ``mac``, ``duplex``.
    """

    family = "carrier"
    Options = CarrierOptions
    options: CarrierOptions

    def read(self) -> Reading:
        """Query the link over netlink (and its speed from sysfs)."""
        name = self.options.interface
        try:
            with IPRoute() as ipr:
                indexes = ipr.link_lookup(ifname=name)
                link = ipr.get_links(indexes[0])[0] if indexes else None
        except (NetlinkError, OSError) as exc:
            raise SensorError(f"netlink query for {name} failed: {exc}") from None
        if link is None:
            return Reading(level=Level.CRITICAL, summary=f"{name}: no such interface", conditions=("missing",))
        return self._judge(name, link)

    def _judge(self, name: str, link: Any) -> Reading:
        admin_up = bool(link["flags"] & IFF_UP)
        carrier = link.get_attr("IFLA_CARRIER")
        operstate = str(link.get_attr("IFLA_OPERSTATE") or "UNKNOWN").upper()
        values: dict[str, float] = {"carrier": float(bool(carrier)) if admin_up else 0.0}
        units: dict[str, str] = {}
        for key, attr in (("mtu", "IFLA_MTU"), ("carrier_changes", "IFLA_CARRIER_CHANGES")):
            if (value := link.get_attr(attr)) is not None:
                values[key] = float(value)
        info = {"operstate": operstate}
        if mac := link.get_attr("IFLA_ADDRESS"):
            info["mac"] = mac
        speed = self._sysfs(name, "speed")
        if speed is not None and speed.lstrip("-").isdigit() and int(speed) > 0:
            values["speed_mbps"] = float(speed)
            units["speed_mbps"] = "Mbit/s"
        duplex = self._sysfs(name, "duplex")
        if duplex and duplex != "unknown":
            info["duplex"] = duplex

        if not admin_up:
            level, summary, conditions = Level.CRITICAL, f"{name}: administratively down", ("admin_down",)
        elif not carrier:
            level, summary, conditions = Level.CRITICAL, f"{name}: no carrier", ("no_carrier",)
        elif operstate in _DOWN_STATES:
            level, summary, conditions = Level.CRITICAL, f"{name}: operstate {operstate}", ("oper_down",)
        elif operstate in _DEGRADED_STATES:
            level, summary, conditions = Level.WARNING, f"{name}: operstate {operstate}", ("oper_degraded",)
        else:
            level, conditions = Level.OK, ()
            details = [f"{int(values['speed_mbps'])} Mbit/s" if "speed_mbps" in values else None,
                       f"{duplex} duplex" if "duplex" in info else None, f"mtu {int(values.get('mtu', 0))}"]
            summary = f"{name}: up, " + ", ".join(d for d in details if d)
        return Reading(level=level, summary=summary, values=values, units=units, conditions=conditions, info=info)

    def _sysfs(self, name: str, attribute: str) -> str | None:
        """A sysfs attribute of the interface; None when unreadable (EINVAL while the link is down)."""
        try:
            return (self.context.sysfs / "class" / "net" / name / attribute).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None


class ReachabilityOptions(SensorOptions):
    """Options of the ``reachability`` family."""

    target: str
    """An IPv4 or IPv6 address (no host names: a reachability check must not depend on DNS)."""
    count: int = Field(3, ge=1, le=100)
    interval_ms: int = Field(200, ge=10, le=10000)
    """Pause between echo requests."""
    timeout_s: float = Field(3.0, gt=0, le=60)
    """The whole read (all echoes and waits) finishes within this; each echo waits its share."""
    privileged: bool | None = None
    """Raw ICMP sockets (needs root or CAP_NET_RAW); unset: raw when running as root, else ping sockets."""

    @field_validator("target")
    @classmethod
    def _ip_only(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (host names are not allowed)") from None

    @model_validator(mode="after")
    def _time_for_replies(self) -> ReachabilityOptions:
        if self.reply_wait_s() < 0.05:
            raise ValueError(f"timeout_s {self.timeout_s:g} leaves no time to wait for replies to {self.count} "
                             f"echoes {self.interval_ms} ms apart; raise timeout_s or lower count/interval_ms")
        return self

    def reply_wait_s(self) -> float:
        """How long each echo waits for its reply so that the whole read fits in 90 % of timeout_s."""
        return (self.timeout_s * 0.9 - (self.count - 1) * self.interval_ms / 1000) / self.count


class ReachabilitySensor(Sensor):
    """Family ``reachability``: ICMP echo to an address.

    Values ``loss_pct`` and, when any reply came, ``rtt_avg_ms`` and
    ``rtt_max_ms``. All lost is CRITICAL, some lost WARNING. When the echo
    cannot be sent at all (no permission for ICMP sockets, no route out of
    the socket layer) the read raises SensorError.
    """

    family = "reachability"
    Options = ReachabilityOptions
    options: ReachabilityOptions

    def read(self) -> Reading:
        """Send ``count`` echo requests and report loss and round trip."""
        opts = self.options
        privileged = os.geteuid() == 0 if opts.privileged is None else opts.privileged
        try:
            host = icmplib.ping(opts.target, count=opts.count, interval=opts.interval_ms / 1000,
                                timeout=opts.reply_wait_s(), privileged=privileged)
        except icmplib.SocketPermissionError:
            if privileged:
                raise SensorError("raw ICMP sockets need root or CAP_NET_RAW "
                                  "(or set privileged = false to use ping sockets)") from None
            raise SensorError("unprivileged ICMP (ping) sockets are not allowed for this user's groups: "
                              "widen sysctl net.ipv4.ping_group_range, or run as root") from None
        except icmplib.ICMPLibError as exc:
            raise SensorError(f"ping {opts.target}: {exc}") from None
        except OSError as exc:
            raise SensorError(f"ping {opts.target}: {exc.strerror or exc}") from None

        received = host.packets_received
        loss_pct = round(100.0 * (1 - received / host.packets_sent), 1) if host.packets_sent else 100.0
        values: dict[str, float] = {"loss_pct": loss_pct}
        units = {"loss_pct": "%"}
        if received:
            values.update(rtt_avg_ms=round(host.avg_rtt, 3), rtt_max_ms=round(host.max_rtt, 3))
            units.update(rtt_avg_ms="ms", rtt_max_ms="ms")
        if received == 0:
            return Reading(level=Level.CRITICAL, summary=f"{opts.target} unreachable ({host.packets_sent} echoes, "
                           "no reply)", values=values, units=units, conditions=("unreachable",))
        summary = (f"{opts.target}: {received}/{host.packets_sent} replies, rtt avg {host.avg_rtt:.1f} ms, "
                   f"max {host.max_rtt:.1f} ms")
        if received < host.packets_sent:
            return Reading(level=Level.WARNING, summary=summary, values=values, units=units,
                           conditions=("packet_loss",))
        return Reading(level=Level.OK, summary=summary, values=values, units=units)
