"""The node configuration (`/etc/tandem/tandem.toml`): one model per section."""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from firmware import paths
from firmware.config.base import (
    IDENTIFIER,
    Name,
    STRICT,
    Argv,
    ConfigPath,
    NonEmptyText,
    SocketPath,
    Strict,
    Text,
    parse_host_port,
)

DEFAULT_CONTROL_SOCKET = paths.CONTROL_SOCKET
BULK_DEFAULT_PORT = 7140  # TCP: the bulk channel between the boxes (firmware.pairing.bulk)
BANK_CHANNEL_PATTERN = r"^[A-Za-z0-9_-]+:[0-9]{1,4}$"  # ASCII digits: int() also reads "١" as 1


class UdpLinkConfig(Strict):
    """A UDP heartbeat link: where this node listens and where the peer listens."""

    name: Name
    kind: Literal["udp"]
    bind: str
    peer: str

    @field_validator("bind", "peer")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        host, _ = parse_host_port(value)
        address = ipaddress.ip_address(host.partition("%")[0])
        if info.field_name == "peer" and (address.is_unspecified or address.is_multicast
                                          or address == ipaddress.IPv4Address("255.255.255.255")):
            raise ValueError(f"{host} cannot be the peer's address (it names no single host)")
        if info.field_name == "bind" and address.is_multicast:
            raise ValueError(f"{host} is a multicast address; bind this node's own address")
        return value

    @model_validator(mode="after")
    def _same_family(self) -> UdpLinkConfig:
        bind, peer = (ipaddress.ip_address(host.partition("%")[0]) for host, _ in (self.bind_address, self.peer_address))
        if bind.version != peer.version:
            raise ValueError(f"bind ({self.bind}) and peer ({self.peer}) must both be IPv4 or both IPv6")
        return self

    @property
    def bind_address(self) -> tuple[str, int]:
        """The (host, port) this node binds."""
        return parse_host_port(self.bind)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The (host, port) heartbeats are sent to."""
        return parse_host_port(self.peer)


BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class SerialLinkConfig(Strict):
    """A serial null-modem heartbeat link."""

    name: Name
    kind: Literal["serial"]
    port: Annotated[NonEmptyText, Field(max_length=4096)]
    baud: int = 115200

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int) -> int:
        if value not in BAUD_RATES:
            raise ValueError(f"{value} is not a baud rate the link supports ({', '.join(map(str, BAUD_RATES))})")
        return value


LinkConfig = Annotated[UdpLinkConfig | SerialLinkConfig, Field(discriminator="kind")]


class TimersConfig(Strict):
    """Heartbeat timing. All values in milliseconds."""

    heartbeat_ms: Annotated[int, Field(ge=10, le=10_000)] = 100
    deadtime_ms: Annotated[int, Field(ge=30, le=600_000)] = 300
    initdead_ms: Annotated[int, Field(ge=0, le=600_000)] = 3000
    handover_timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 5000
    shutdown_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000

    @model_validator(mode="after")
    def _deadtime_covers_heartbeats(self) -> TimersConfig:
        if self.deadtime_ms < 2 * self.heartbeat_ms:
            raise ValueError(
                f"deadtime_ms ({self.deadtime_ms}) must be at least twice heartbeat_ms "
                f"({self.heartbeat_ms}), or one late heartbeat causes a failover"
            )
        return self


class WitnessConfig(Strict):
    """Split-brain guard used when the peer is silent on every link."""

    targets: list[Annotated[str, Field(pattern=r"^(tcp://.+:[0-9]+|icmp://.+)$")]] = []
    require: Literal["all", "any"] = "all"
    timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 250
    min_health: Annotated[int, Field(ge=0, le=100)] = 0

    @field_validator("targets")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        # Addresses only: a name lookup at failover time could hang or fail exactly when it matters.
        for target in value:
            scheme, _, rest = target.partition("://")
            try:
                if scheme == "icmp":
                    if not rest.isascii():
                        raise ValueError(f"{rest!r} is not an IP address")
                    address = ipaddress.ip_address(rest.removeprefix("[").removesuffix("]"))
                else:
                    host, _ = parse_host_port(rest)
                    address = ipaddress.ip_address(host.partition("%")[0])
                if address.is_unspecified or address.is_multicast:
                    raise ValueError(f"{address} names no single host to ask")
            except ValueError as exc:
                raise ValueError(f"{target}: {exc}") from None
        return value


class HealthConfig(Strict):
    """How the health score (0-100) is judged from the sensors.

    Each sensor's `weight` is the number of health points it takes away while
    CRITICAL; WARNING and UNKNOWN take that weight times their factor.
    """

    critical: Annotated[int, Field(ge=0, le=100)] = 30
    warning_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    unknown_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    history: bool = True
    # How often the recorded history is written to the rrdtool files. Each write dirties a few pages of
    # every metric's file, so on flash a longer interval means fewer writes; a crash loses at most this
    # much history. At most an hour (the writer keeps 360 steps of 10 s per metric).
    history_flush_s: Annotated[float, Field(ge=1, le=3600)] = 300.0


class ThresholdConfig(Strict):
    """Levels for one numeric value of a sensor, with the margin that must be crossed back to clear."""

    warn_above: float | None = None
    crit_above: float | None = None
    warn_below: float | None = None
    crit_below: float | None = None
    hysteresis: Annotated[float, Field(ge=0, le=1e9)] = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        if self.warn_above is not None and self.crit_above is not None and self.crit_above < self.warn_above:
            raise ValueError(f"crit_above ({self.crit_above:g}) must not be below warn_above ({self.warn_above:g})")
        if self.warn_below is not None and self.crit_below is not None and self.crit_below > self.warn_below:
            raise ValueError(f"crit_below ({self.crit_below:g}) must not be above warn_below ({self.warn_below:g})")
        uppers = [b for b in (self.warn_above, self.crit_above) if b is not None]
        lowers = [b for b in (self.warn_below, self.crit_below) if b is not None]
        if uppers and lowers and min(uppers) - max(lowers) <= self.hysteresis:
            raise ValueError(f"the OK band {max(lowers):g}..{min(uppers):g} must be wider than the hysteresis "
                             f"({self.hysteresis:g}), or an alarm could never clear")
        return self


class SensorConfig(BaseModel):
    """One `[[sensors]]` entry: the common keys; the family's own keys are checked by the family."""

    model_config = ConfigDict(STRICT, extra="allow")  # the family's keys: checked by its Options model

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    # A family name ("pmbus") or an import path ("package.module:Class"), never a relative one.
    type: Annotated[str, Field(pattern=rf"^{IDENTIFIER}(\.{IDENTIFIER})*(:{IDENTIFIER})?$", max_length=200)]
    enabled: bool = True
    interval_s: Annotated[float, Field(ge=0.5, le=86_400)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    weight: Annotated[float, Field(ge=0, le=100)] = 10.0
    clear_after: Annotated[int, Field(ge=1, le=100)] = 2
    thresholds: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")], ThresholdConfig] = {}

    @property
    def options(self) -> dict[str, Any]:
        """The family-specific keys."""
        return dict(self.model_extra or {})


class PanelConfig(Strict):
    """How the front panel (if the board profile has one) may be used."""

    enabled: bool = True
    view_only: bool = False
    pin_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    pin_length: Annotated[int, Field(ge=4, le=8)] = 4
    relock_s: Annotated[float, Field(ge=10, le=86_400)] = 120.0
    backlight_timeout_s: Annotated[float, Field(ge=5, le=86_400)] = 60.0
    menu_timeout_s: Annotated[float, Field(ge=5, le=3600)] = 30.0
    hold_confirm_s: Annotated[float, Field(ge=1, le=10)] = 3.0


class FailbackConfig(Strict):
    """What a returning primary does while the secondary is ACTIVE."""

    policy: Literal["never", "auto", "window"] = "never"
    hold_down_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 60.0
    min_uptime_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 300.0
    window: Annotated[str, Field(pattern=r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$")] = "02:00-04:00"

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        for part in value.split("-"):
            hours, minutes = (int(x) for x in part.split(":"))
            if hours > 23 or minutes > 59:
                raise ValueError(f"{part} is not a time of day (HH:MM, 00:00-23:59)")
        start, end = value.split("-")
        if start == end:
            raise ValueError(f"{value} is an empty window (it starts when it ends)")
        return value

    @property
    def window_minutes(self) -> tuple[int, int]:
        """The window as (start, end) minutes of the day; end < start wraps midnight."""
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in self.window.split("-"))
        return start, end


class FlapConfig(Strict):
    """Flap damping: a node that failed this often stays STANDBY until an operator acts."""

    max_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    window_min: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 30.0


class JournalConfig(Strict):
    """Event journal rotation."""

    max_bytes: Annotated[int, Field(ge=4096, le=1 << 40)] = 1_048_576
    keep: Annotated[int, Field(ge=1, le=100)] = 5


class SharedIpConfig(Strict):
    """A shared address that follows the ACTIVE node."""

    address: str
    interface: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,15}$")]
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    announce_count: Annotated[int, Field(ge=0, le=100)] = 5
    announce_interval_ms: Annotated[int, Field(ge=10, le=10_000)] = 200
    refresh_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    router: bool = False
    probe: bool = False  # a duplicate-address probe adds probe_timeout_ms to every takeover
    probe_timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 300
    force: bool = False
    route_source: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError(f"{value!r} needs a prefix length, e.g. 192.0.2.10/24 or 2001:db8::10/64")
        if not value.isascii() or "%" in value:
            raise ValueError(f"{value!r} is not an address with a prefix length")
        interface = ipaddress.ip_interface(value)
        ip, network = interface.ip, interface.network
        if network.prefixlen == 0 or ip.is_unspecified or ip.is_loopback or ip.is_multicast:
            raise ValueError(f"{value} cannot be a shared address (no default route, unspecified, loopback "
                             "or multicast address)")
        if ip.version == 4 and network.prefixlen <= 30 and ip in (network.network_address, network.broadcast_address):
            raise ValueError(f"{value} is the {'network' if ip == network.network_address else 'broadcast'} "
                             f"address of {network}, not a host's")
        return value

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError(f"{value!r} is not an interface name")
        return value

    @property
    def ip(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address with its prefix."""
        return ipaddress.ip_interface(self.address)


class ServiceConfig(Strict):
    """The PBX service: `cold` (started on promote, stopped on demote), `hot` (always running) or `none`."""

    mode: Literal["cold", "hot", "none"] = "none"
    start: Argv = ["systemctl", "start", "asterisk.service"]
    stop: Argv = ["systemctl", "stop", "asterisk.service"]
    status: Argv = ["systemctl", "is-active", "--quiet", "asterisk.service"]
    ready: Argv = []
    timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 30_000
    ready_timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 60_000

    @model_validator(mode="after")
    def _commands(self) -> ServiceConfig:
        if self.mode != "none" and not (self.start and self.stop and self.status):
            raise ValueError("start, stop and status commands are required unless mode is none")
        return self


class ActionsConfig(Strict):
    """How takeover actions run."""

    order: list[Literal["shared_ips", "service", "relays"]] = ["shared_ips", "relays", "service"]
    on_failure: Literal["handover", "tolerate"] = "handover"
    veto_backoff_s: Annotated[float, Field(ge=0, le=86_400)] = 10.0

    @field_validator("order")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each action may appear once")
        return value


class RelayGroupConfig(Strict):
    """Relay channels that switch together with the node's role (e.g. the T1/PRI trunks)."""

    name: Name
    outputs: Annotated[list[Annotated[str, Field(pattern=BANK_CHANNEL_PATTERN)]], Field(min_length=1, max_length=64)]
    energized_when_active: bool = True
    feedback: Annotated[list[Annotated[str, Field(pattern=BANK_CHANNEL_PATTERN)]], Field(max_length=64)] = []
    on_mismatch: Literal["alarm", "block"] = "alarm"
    settle_ms: Annotated[int, Field(ge=0, le=60_000)] = 200

    @field_validator("outputs", "feedback")
    @classmethod
    def _channels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for ref in value:
            if int(ref.partition(":")[2]) < 1:
                raise ValueError(f"{ref}: channels are numbered from 1")
        repeated = _repeated(value)
        if repeated:
            raise ValueError(f"each channel may appear once; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _feedback_matches(self) -> RelayGroupConfig:
        if self.feedback and len(self.feedback) != len(self.outputs):
            raise ValueError("feedback needs one input per output (or none)")
        return self


class WatchdogConfig(Strict):
    """Optional hardware watchdog, pinged from the heartbeat tick while it runs on time."""

    device: Text = ""  # e.g. "/dev/watchdog"; empty: not used

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute device path such as /dev/watchdog")
        return value
    timeout_s: Annotated[int, Field(ge=1, le=3600)] = 10


def _fence_option(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number (not nan or inf)")
        return value
    raise ValueError("an option is a string, a number or true/false")


FenceOption = Annotated[str | int | float | bool, PlainValidator(_fence_option)]


class FenceDeviceConfig(Strict):
    """A power switch for the peer, driven by a fence agent of the fence-agents project
    (`fence_ipmilan`, `fence_apc_snmp`, `fence_virsh`, ...), run with its options as key=value
    lines on stdin (hardware_docs/never-two-holders.md)."""

    agent: Text = ""  # the agent's name on PATH or its absolute path; empty: no power fencing
    # The agent's own options (ip, ipport, username, password, lanplus, plug, ...); Tandem adds `action`.
    options: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")], FenceOption] = {}
    timeout_s: Annotated[float, Field(ge=1, le=600)] = 30.0      # one agent run; killed after this
    monitor_every_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0  # check the device (0: only at start; else >= 1)
    # Wait this long before fencing (None: none if the peer held the calls; else 0 on the statically
    # preferred node and 5 s on the other, 10 s more for a node blind on its own LAN, so the two never
    # switch each other off at once). A fixed delay applies always: give one to one node only.
    delay_s: Annotated[float | None, Field(ge=0, le=600)] = None
    retry_s: Annotated[float, Field(ge=0.5, le=600)] = 5.0       # after a failed fence, try again this much later

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        for key, option in value.items():
            if key == "action":
                raise ValueError("options must not set the action: Tandem runs monitor, off and status itself")
            if any(c in f"{key}{option}" for c in "\r\n\x00") or "=" in key:
                raise ValueError(f"option {key!r}: keys have no '=' and no option spans lines")
        return value

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        if value and shutil.which(value) is None:
            raise ValueError(f"{value!r} is not an executable on PATH (Debian: the fence-agents package, and "
                             "ipmitool for fence_ipmilan)")
        return value

    @field_validator("monitor_every_s")
    @classmethod
    def _monitor_every(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("checking the fence device more than once a second only loads its BMC: use 0 "
                             "(at start only) or 1 and more")
        return value


class FencingConfig(Strict):
    """Self-fencing of an ACTIVE node that may no longer be the right one to hold the calls, and the
    power switch that fences the peer (`device`)."""

    isolated: bool = True          # release when every link is silent and the witness fails
    stall_ms: Annotated[int, Field(ge=0, le=600_000)] = 0  # release after a loop stall this long (0: the deadtime)
    device: FenceDeviceConfig = FenceDeviceConfig()


def _host_v4(text: str) -> ipaddress.IPv4Address:
    """An IPv4 address of one host (not 0.0.0.0, multicast or the broadcast address); ValueError if not."""
    address = ipaddress.IPv4Address(text)
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{text} is not one host's address")
    return address


class ArbitrationConfig(Strict):
    """LAN arbitration: before taking over from a silent peer, prove on the wire that nobody answers
    for the shared addresses (hardware_docs/never-two-holders.md)."""

    enabled: bool = False
    # Addresses that must answer an ARP probe on a shared address's LAN (the gateway): without an
    # answer from one of them a round proves nothing, since this node's own LAN link may be down.
    control: list[Annotated[str, Field(max_length=64)]] = []
    # The peer's own address on that LAN (optional): asked every round too. With a fence device, a peer
    # that does not answer for it while the shared address looks free is fenced before the claim: it
    # may be cut off from the LAN with the address still on its interface.
    peer_address: Annotated[str, Field(max_length=64)] = ""
    round_ms: Annotated[int, Field(ge=10, le=1000)] = 40         # how long one probe round listens
    confirm_ms: Annotated[int, Field(ge=0, le=10_000)] = 150     # seen free this long before a claim
    claim_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 500  # neither held the calls: the other waits
    held_escalate_s: Annotated[float, Field(ge=1, le=3600)] = 5.0  # held this long: critical alarm

    @field_validator("control")
    @classmethod
    def _control(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                _host_v4(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IPv4 address (the control target answers ARP)") from None
        return value

    @field_validator("peer_address")
    @classmethod
    def _peer_address(cls, value: str) -> str:
        if value:
            try:
                _host_v4(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IPv4 address (the peer answers ARP for it)") from None
        return value


class HooksConfig(Strict):
    """Operator hook scripts: `<dir>/<event kind>/*` and `<dir>/all/*`, run-parts style."""

    dir: ConfigPath = paths.ETC_DIR / "hooks.d"
    timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 10_000


def _repeated(values: list[Any]) -> list[str]:
    """The values that occur more than once, as sorted text."""
    return sorted({str(v) for v in values if values.count(v) > 1})


def _unique_shared_ips(value: list[SharedIpConfig]) -> list[SharedIpConfig]:
    repeated = _repeated([entry.ip.ip for entry in value])
    if repeated:
        raise ValueError(f"each shared address may appear once; repeated: {', '.join(repeated)}")
    return value


def _unique_relay_groups(value: list[RelayGroupConfig]) -> list[RelayGroupConfig]:
    repeated = _repeated([group.name for group in value])
    if repeated:
        raise ValueError(f"relay group names must be unique; repeated: {', '.join(repeated)}")
    for field in ("outputs", "feedback"):
        channels = [ref for group in value for ref in getattr(group, field)]
        repeated = _repeated(channels)
        if repeated:
            raise ValueError(f"a relay channel belongs to one group only; in the {field} of several: "
                             f"{', '.join(repeated)}")
    return value


SharedIps = Annotated[list[SharedIpConfig], Field(max_length=64), AfterValidator(_unique_shared_ips)]
RelayGroups = Annotated[list[RelayGroupConfig], Field(max_length=64), AfterValidator(_unique_relay_groups)]


def _check_links(links: list[UdpLinkConfig | SerialLinkConfig]) -> list[UdpLinkConfig | SerialLinkConfig]:
    """Names unique (and their wire ids); no two links on one address or port; no link sends to this node."""
    names = [link.name for link in links]
    duplicates = _repeated(names)
    if duplicates:
        raise ValueError(f"link names must be unique; repeated: {', '.join(duplicates)}")
    ids = [zlib.crc32(n.encode()) & 0xFFFF for n in names]  # the wire id (protocol.link_id)
    if len(set(ids)) != len(ids):
        raise ValueError("two link names share a wire id (a CRC16 collision); rename one of them")
    udp = [link for link in links if isinstance(link, UdpLinkConfig)]
    binds = {}
    for link in udp:
        host, port = link.bind_address
        address = ipaddress.ip_address(host.partition("%")[0])
        for other, (other_address, other_port) in binds.items():
            if port == other_port and address.version == other_address.version and (
                    address == other_address or address.is_unspecified or other_address.is_unspecified):
                raise ValueError(f"links {other!r} and {link.name!r} both bind {link.bind}: each link needs "
                                 "its own address or port")
        binds[link.name] = (address, port)
    for link in udp:
        host, port = link.peer_address
        address = ipaddress.ip_address(host.partition("%")[0])
        for other, bind in binds.items():
            if (address, port) == bind:
                raise ValueError(f"link {link.name!r} sends to {link.peer}, where this node's own link "
                                 f"{other!r} listens: the peer's address is the other node's")
    ports = [os.path.normpath(link.port) for link in links if isinstance(link, SerialLinkConfig)]
    repeated = _repeated(ports)
    if repeated:
        raise ValueError(f"two serial links use the same port: {', '.join(repeated)}")
    return links


class BulkConfig(Strict):
    """``[bulk]``: the bulk channel to the peer (mutual TLS over the heartbeat network; firmware.pairing.bulk).

    `tandem pair` writes it when both boxes told their heartbeat addresses.
    """

    listen: str
    peer: str
    # The peer's identity key: from the pairing record (`record`) unless given here; a re-pairing
    # updates the record, and `keys.reload` makes the daemon read it again.
    peer_identity: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    record: ConfigPath = paths.PAIRING_RECORD
    identity: ConfigPath = paths.IDENTITY_KEY
    inbox: ConfigPath = paths.BULK_INBOX
    max_mib: Annotated[int, Field(ge=1, le=1 << 20)] = 4096

    @field_validator("listen", "peer")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _ = parse_host_port(value, BULK_DEFAULT_PORT)
        ipaddress.ip_address(host.partition("%")[0])
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        """The (host, port) this box serves the channel on (port 7140 unless given)."""
        return parse_host_port(self.listen, BULK_DEFAULT_PORT)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The (host, port) of the peer's channel (port 7140 unless given)."""
        return parse_host_port(self.peer, BULK_DEFAULT_PORT)


class UpdateConfig(Strict):
    """The good gate of an update (hardware_docs/updates.md): when a slot on trial is marked good."""

    # Joined with the peer on every link and healthy this long before the slot is marked good; well
    # inside the boot gate's deadline (tandem-bootgate.timer, 15 min after boot).
    good_after_s: Annotated[float, Field(ge=1, le=600)] = 60.0
    trial_flag: ConfigPath = paths.TRIAL_FLAG   # the boot gate names the slot on trial here
    result_file: ConfigPath = paths.UPDATE_RESULT  # ... and its last outcome here
    mark_good: Argv = ["/usr/libexec/tandem/bootgate-pass"]  # `bootgate pass` through the privileged helper


class NodeConfig(Strict):
    """The node configuration file (`/etc/tandem/tandem.toml`).

    Checks that span sections are field validators of the later section (they see the earlier
    ones in ``info.data``), so each error names the section it is about.
    """

    node: Name
    peer: Name
    role: Literal["primary", "secondary", "equal"] = "equal"
    board: Annotated[NonEmptyText, Field(max_length=1024)]
    key_file: ConfigPath = paths.CLUSTER_KEY
    state_dir: ConfigPath = paths.STATE_DIR
    control_socket: SocketPath = DEFAULT_CONTROL_SOCKET
    control_group: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")] | None = None
    links: Annotated[list[LinkConfig], Field(min_length=1, max_length=8), AfterValidator(_check_links)]
    timers: TimersConfig = TimersConfig()
    witness: WitnessConfig = WitnessConfig()
    health: HealthConfig = HealthConfig()
    failback: FailbackConfig = FailbackConfig()
    flap: FlapConfig = FlapConfig()
    journal: JournalConfig = JournalConfig()
    hooks: HooksConfig = HooksConfig()
    shared_ips: SharedIps = []
    service: ServiceConfig = ServiceConfig()
    relay_groups: RelayGroups = []
    watchdog: WatchdogConfig = WatchdogConfig()
    arbitration: ArbitrationConfig = ArbitrationConfig()
    fencing: FencingConfig = FencingConfig()
    actions: ActionsConfig = ActionsConfig()
    sensors: Annotated[list[SensorConfig], Field(max_length=256)] = []
    panel: PanelConfig = PanelConfig()
    bulk: BulkConfig | None = None
    update: UpdateConfig = UpdateConfig()

    @field_validator("peer")
    @classmethod
    def _peer(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("node"):
            raise ValueError("node and peer must have different names")
        return value

    @field_validator("shared_ips")
    @classmethod
    def _shared_ips(cls, value: list[SharedIpConfig], info: ValidationInfo) -> list[SharedIpConfig]:
        own = {}
        for link in info.data.get("links", []):
            if isinstance(link, UdpLinkConfig):
                for which, (host, _) in (("binds", link.bind_address), ("sends to", link.peer_address)):
                    own[ipaddress.ip_address(host.partition("%")[0])] = f"link {link.name!r} {which} it"
        for entry in value:
            if entry.ip.ip in own:
                raise ValueError(f"{entry.ip.ip} is a node's own address ({own[entry.ip.ip]}): a shared address "
                                 "follows the ACTIVE node and must be neither node's own")
        return value

    @field_validator("arbitration")
    @classmethod
    def _arbitration(cls, arbitration: ArbitrationConfig, info: ValidationInfo) -> ArbitrationConfig:
        shared_ips, t = info.data.get("shared_ips"), info.data.get("timers")
        if not arbitration.enabled or shared_ips is None or t is None:
            return arbitration
        if not shared_ips:
            raise ValueError("arbitration.enabled needs at least one [[shared_ips]] entry: it probes for them")
        if not arbitration.control:
            raise ValueError("arbitration.control must name at least one address that answers ARP on the shared "
                             "addresses' LAN (the gateway): without an answer from it, silence proves nothing")
        if arbitration.round_ms > t.deadtime_ms - t.heartbeat_ms:
            raise ValueError(f"arbitration.round_ms ({arbitration.round_ms}) must not exceed deadtime_ms - "
                             f"heartbeat_ms ({t.deadtime_ms - t.heartbeat_ms}): the rounds run in that time")
        for key, address in [("control", a) for a in arbitration.control] + [("peer_address", arbitration.peer_address)]:
            if address and not any(ipaddress.ip_address(address) in ip.ip.network for ip in shared_ips):
                raise ValueError(f"arbitration.{key} {address} is not on the subnet of any shared address: "
                                 "it must answer ARP on the LAN the shared addresses live on")
        return arbitration

    @field_validator("fencing")
    @classmethod
    def _fencing(cls, fencing: FencingConfig, info: ValidationInfo) -> FencingConfig:
        stall, t = fencing.stall_ms, info.data.get("timers")
        if stall and t is not None and not 2 * t.heartbeat_ms <= stall <= t.deadtime_ms - t.heartbeat_ms:
            raise ValueError(f"fencing.stall_ms ({stall}) must lie between two heartbeats ({2 * t.heartbeat_ms}) "
                             f"and deadtime_ms - heartbeat_ms ({t.deadtime_ms - t.heartbeat_ms}): shorter fences "
                             "on harmless pauses, longer lets the peer close its relays first")
        arbitration = info.data.get("arbitration")
        if fencing.device.agent and arbitration is not None and not arbitration.enabled:
            raise ValueError("fencing.device needs [arbitration] enabled: a node fences its peer only where the "
                             "LAN probe cannot prove the peer let go")
        return fencing

    @field_validator("sensors")
    @classmethod
    def _sensors(cls, value: list[SensorConfig]) -> list[SensorConfig]:
        repeated = _repeated([s.name for s in value])
        if repeated:
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(repeated)}")
        return value


class ResourcesConfig(BaseModel):
    """The parts of a node config that `tandem release` needs; every other key is ignored.

    A release must work when the rest of the file is broken (a bad timer, a
    link to a port that is gone): only these sections have to be valid.
    """

    model_config = ConfigDict(STRICT, extra="ignore")

    node: Name
    board: Annotated[NonEmptyText, Field(max_length=1024)]
    state_dir: ConfigPath = paths.STATE_DIR
    control_socket: SocketPath = DEFAULT_CONTROL_SOCKET  # to refuse while a daemon answers
    journal: JournalConfig = JournalConfig()
    shared_ips: SharedIps = []
    service: ServiceConfig = ServiceConfig()
    relay_groups: RelayGroups = []
    actions: ActionsConfig = ActionsConfig()
