"""Node configuration and board profile: schema, loading and validation.

Both files are TOML. Every key is declared here; unknown keys are errors, and
every error names the file, the key and the reason (:class:`ConfigError`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from firmware.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/tandem/tandem.toml")
BOARD_PROFILE_DIRS = (
    Path("/etc/tandem/board_profiles"),
    Path(__file__).resolve().parent.parent / "board_profiles",
    Path("/usr/share/tandem/board_profiles"),
)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"
UDP_DEFAULT_PORT = 694


class _Strict(BaseModel):
    """Base for all config sections: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def parse_host_port(text: str, default_port: int = UDP_DEFAULT_PORT) -> tuple[str, int]:
    """Parse `host[:port]` or `[v6]:port` into (host, port); raise ValueError if malformed."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\](?::(\d+))?", text)
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") > 1:  # bare IPv6 address, no port
        host, port = text, None
    else:
        host, _, port = text.partition(":")
        port = port or None
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address (write e.g. 192.0.2.1:694 or [2001:db8::1]:694)") from exc
    number = int(port) if port is not None else default_port
    if not 0 < number < 65536:
        raise ValueError(f"port {number} is outside 1-65535")
    return host, number


class UdpLinkConfig(_Strict):
    """A UDP heartbeat link: where this node listens and where the peer listens."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Literal["udp"]
    bind: str
    peer: str

    @field_validator("bind", "peer")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @property
    def bind_address(self) -> tuple[str, int]:
        """The (host, port) this node binds."""
        return parse_host_port(self.bind)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The (host, port) heartbeats are sent to."""
        return parse_host_port(self.peer)


class SerialLinkConfig(_Strict):
    """A serial null-modem heartbeat link."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Literal["serial"]
    port: Annotated[str, Field(min_length=1)]
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 115200


LinkConfig = Annotated[UdpLinkConfig | SerialLinkConfig, Field(discriminator="kind")]


class TimersConfig(_Strict):
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


class WitnessConfig(_Strict):
    """Split-brain guard used when the peer is silent on every link."""

    targets: list[Annotated[str, Field(pattern=r"^(tcp://.+:\d+|icmp://.+)$")]] = []
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
                    ipaddress.ip_address(rest.strip("[]"))
                else:
                    parse_host_port(rest)
            except ValueError as exc:
                raise ValueError(f"{target}: {exc}") from None
        return value


class HealthConfig(_Strict):
    """How the health score (0-100) is judged from the sensors.

    Each sensor's `weight` is the number of health points it takes away while
    CRITICAL; WARNING and UNKNOWN take that weight times their factor.
    """

    critical: Annotated[int, Field(ge=0, le=100)] = 30
    warning_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    unknown_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    history: bool = True


class ThresholdConfig(_Strict):
    """Levels for one numeric value of a sensor, with the margin that must be crossed back to clear."""

    warn_above: float | None = None
    crit_above: float | None = None
    warn_below: float | None = None
    crit_below: float | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0

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

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    type: Annotated[str, Field(pattern=r"^[\w.]+(:\w+)?$")]
    enabled: bool = True
    interval_s: Annotated[float, Field(ge=0.5, le=86_400)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    weight: Annotated[float, Field(ge=0, le=100)] = 10.0
    clear_after: Annotated[int, Field(ge=1, le=100)] = 2
    thresholds: dict[Annotated[str, Field(pattern=r"^\w+$")], ThresholdConfig] = {}

    @property
    def options(self) -> dict[str, Any]:
        """The family-specific keys."""
        return dict(self.model_extra or {})


class PanelConfig(_Strict):
    """How the front panel (if the board profile has one) may be used."""

    enabled: bool = True
    view_only: bool = False
    pin_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    pin_length: Annotated[int, Field(ge=4, le=8)] = 4
    relock_s: Annotated[float, Field(ge=10, le=86_400)] = 120.0
    backlight_timeout_s: Annotated[float, Field(ge=5, le=86_400)] = 60.0
    menu_timeout_s: Annotated[float, Field(ge=5, le=3600)] = 30.0
    hold_confirm_s: Annotated[float, Field(ge=1, le=10)] = 3.0


class FailbackConfig(_Strict):
    """What a returning primary does while the secondary is ACTIVE."""

    policy: Literal["never", "auto", "window"] = "never"
    hold_down_s: Annotated[float, Field(ge=0)] = 60.0
    min_uptime_s: Annotated[float, Field(ge=0)] = 300.0
    window: Annotated[str, Field(pattern=r"^\d\d:\d\d-\d\d:\d\d$")] = "02:00-04:00"

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        for part in value.split("-"):
            hours, minutes = (int(x) for x in part.split(":"))
            if hours > 23 or minutes > 59:
                raise ValueError(f"{part} is not a time of day (HH:MM, 00:00-23:59)")
        return value

    @property
    def window_minutes(self) -> tuple[int, int]:
        """The window as (start, end) minutes of the day; end < start wraps midnight."""
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in self.window.split("-"))
        return start, end


class FlapConfig(_Strict):
    """Flap damping: a node that failed this often stays STANDBY until an operator acts."""

    max_failures: Annotated[int, Field(ge=1)] = 3
    window_min: Annotated[float, Field(gt=0)] = 30.0


class JournalConfig(_Strict):
    """Event journal rotation."""

    max_bytes: Annotated[int, Field(ge=4096)] = 1_048_576
    keep: Annotated[int, Field(ge=1, le=100)] = 5


class SharedIpConfig(_Strict):
    """A shared address that follows the ACTIVE node."""

    address: str
    interface: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,15}$")]
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    announce_count: Annotated[int, Field(ge=0, le=100)] = 5
    announce_interval_ms: Annotated[int, Field(ge=10, le=10_000)] = 200
    refresh_s: Annotated[float, Field(ge=0)] = 0.0
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
        ipaddress.ip_interface(value)
        return value

    @property
    def ip(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address with its prefix."""
        return ipaddress.ip_interface(self.address)


class ServiceConfig(_Strict):
    """The PBX service: `cold` (started on promote, stopped on demote), `hot` (always running) or `none`."""

    mode: Literal["cold", "hot", "none"] = "none"
    start: list[str] = ["systemctl", "start", "asterisk.service"]
    stop: list[str] = ["systemctl", "stop", "asterisk.service"]
    status: list[str] = ["systemctl", "is-active", "--quiet", "asterisk.service"]
    ready: list[str] = []
    timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 30_000
    ready_timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 60_000

    @model_validator(mode="after")
    def _commands(self) -> ServiceConfig:
        if self.mode != "none" and not (self.start and self.stop and self.status):
            raise ValueError("start, stop and status commands are required unless mode is none")
        return self


class ActionsConfig(_Strict):
    """How takeover actions run."""

    order: list[Literal["shared_ips", "service", "relays"]] = ["shared_ips", "relays", "service"]
    on_failure: Literal["handover", "tolerate"] = "handover"
    veto_backoff_s: Annotated[float, Field(ge=0)] = 10.0

    @field_validator("order")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each action may appear once")
        return value


class RelayGroupConfig(_Strict):
    """Relay channels that switch together with the node's role (e.g. the T1/PRI trunks)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    outputs: Annotated[list[Annotated[str, Field(pattern=r"^[\w-]+:\d+$")]], Field(min_length=1)]
    energized_when_active: bool = True
    feedback: list[Annotated[str, Field(pattern=r"^[\w-]+:\d+$")]] = []
    on_mismatch: Literal["alarm", "block"] = "alarm"
    settle_ms: Annotated[int, Field(ge=0, le=60_000)] = 200

    @model_validator(mode="after")
    def _feedback_matches(self) -> RelayGroupConfig:
        if self.feedback and len(self.feedback) != len(self.outputs):
            raise ValueError("feedback needs one input per output (or none)")
        return self


class WatchdogConfig(_Strict):
    """Optional hardware watchdog, pinged from the heartbeat tick while it runs on time."""

    device: str = ""  # e.g. "/dev/watchdog"; empty: not used
    timeout_s: Annotated[int, Field(ge=1, le=3600)] = 10


class FencingConfig(_Strict):
    """Self-fencing of an ACTIVE node that may no longer be the right one to hold the calls."""

    isolated: bool = True          # release when every link is silent and the witness fails
    stall_ms: Annotated[int, Field(ge=0, le=600_000)] = 0  # release after a loop stall this long (0: the deadtime)


class HooksConfig(_Strict):
    """Operator hook scripts: `<dir>/<event kind>/*` and `<dir>/all/*`, run-parts style."""

    dir: Path = Path("/etc/tandem/hooks.d")
    timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 10_000


class NodeConfig(_Strict):
    """The node configuration file (`/etc/tandem/tandem.toml`)."""

    node: Annotated[str, Field(pattern=NAME_PATTERN)]
    peer: Annotated[str, Field(pattern=NAME_PATTERN)]
    role: Literal["primary", "secondary", "equal"] = "equal"
    board: Annotated[str, Field(min_length=1)]
    key_file: Path = Path("/etc/tandem/cluster.key")
    state_dir: Path = Path("/var/lib/tandem")
    control_socket: Path = Path("/run/tandem/control.sock")
    control_group: str | None = None
    links: Annotated[list[LinkConfig], Field(min_length=1, max_length=8)]
    timers: TimersConfig = TimersConfig()
    witness: WitnessConfig = WitnessConfig()
    health: HealthConfig = HealthConfig()
    failback: FailbackConfig = FailbackConfig()
    flap: FlapConfig = FlapConfig()
    journal: JournalConfig = JournalConfig()
    hooks: HooksConfig = HooksConfig()
    shared_ips: list[SharedIpConfig] = []
    service: ServiceConfig = ServiceConfig()
    relay_groups: list[RelayGroupConfig] = []
    watchdog: WatchdogConfig = WatchdogConfig()
    fencing: FencingConfig = FencingConfig()
    actions: ActionsConfig = ActionsConfig()
    sensors: list[SensorConfig] = []
    panel: PanelConfig = PanelConfig()

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        stall, t = self.fencing.stall_ms, self.timers
        if stall and not 2 * t.heartbeat_ms <= stall <= t.deadtime_ms - t.heartbeat_ms:
            raise ValueError(f"fencing.stall_ms ({stall}) must lie between two heartbeats ({2 * t.heartbeat_ms}) "
                             f"and deadtime_ms - heartbeat_ms ({t.deadtime_ms - t.heartbeat_ms}): shorter fences "
                             "on harmless pauses, longer lets the peer close its relays first")
        if self.node == self.peer:
            raise ValueError("node and peer must have different names")
        sensor_names = [s.name for s in self.sensors]
        repeated = sorted({n for n in sensor_names if sensor_names.count(n) > 1})
        if repeated:
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(repeated)}")
        names = [link.name for link in self.links]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"link names must be unique; repeated: {', '.join(duplicates)}")
        ids = [zlib.crc32(n.encode()) & 0xFFFF for n in names]  # the wire id (protocol.link_id)
        if len(set(ids)) != len(ids):
            raise ValueError("two link names share a wire id (a CRC16 collision); rename one of them")
        return self


class PulseConfig(_Strict):
    """A GPIO toggled while the node is ACTIVE and healthy, for external failover switches."""

    pin: Annotated[int, Field(ge=0)]
    pin_factory: str = "lgpio"
    active_high: bool = True
    interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


DriverSpec = Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]


class DriverTable(BaseModel):
    """A driver by import path plus its keyword arguments (`{driver = "module:Class", …}`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: DriverSpec

    @property
    def kwargs(self) -> dict[str, Any]:
        """The driver's keyword arguments."""
        return dict(self.model_extra or {})


class PanelProfile(_Strict):
    """The front panel hardware: one display, key sources by name, optional LEDs and buzzer."""

    display: DriverTable
    keys: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], DriverTable] = {}
    indicators: DriverTable | None = None


class BoardProfile(_Strict):
    """A board profile (`board_profiles/<vendor-model>.toml`): names the hardware drivers."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    # Callables named by import path that extend a composed node (firmware/node.py), e.g. the
    # simulator's fault injection: "sim.extension:install".
    extensions: list[Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]] = []
    network: Annotated[str, Field(pattern=r"^[\w.]+:\w+$")] = "firmware.core.actions.netlink:NetlinkNetwork"
    # Relay banks and feedback-input banks by name: {driver = "module:Class", …driver parameters}.
    watchdog_pulse: PulseConfig | None = None
    relays: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], dict[str, Any]] = {}
    feedback: dict[Annotated[str, Field(pattern=r"^[\w-]+$")], dict[str, Any]] = {}
    # Powering off / rebooting after leaving the cluster (panel Shutdown/Reboot, `tandem poweroff`).
    power: DriverTable = DriverTable(driver="firmware.core.actions.power:SystemPower")
    # Front panel (display, keys, LEDs/buzzer); none on a headless board.
    panel: PanelProfile | None = None
    # What the sensors talk to: I2C bus opener, sysfs/procfs roots, command overrides (SensorContext).
    sensor_host: DriverTable | None = None
    # Sensors the chassis implies (its power supplies, temperature sensors); the node config's
    # [[sensors]] entries with the same name replace them.
    sensors: list[SensorConfig] = []

    @field_validator("relays", "feedback")
    @classmethod
    def _drivers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for bank, params in value.items():
            driver = params.get("driver")
            if not isinstance(driver, str) or not re.fullmatch(r"[\w.]+:\w+", driver):
                raise ValueError(f"{bank}: `driver` must name a class as \"module:Class\"")
        return value


class Config(BaseModel):
    """The effective configuration: node config, its board profile and where they came from."""

    model_config = ConfigDict(frozen=True)

    path: Path
    node: NodeConfig
    board: BoardProfile
    board_path: Path


def _format_location(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in ("udp", "serial", "function-after[_address(), str]"):
            continue  # pydantic's union/validator tags are not keys the user wrote
        else:
            key += ("." if key else "") + str(part)
    return key


def _validation_error(path: Path, error: ValidationError) -> ConfigError:
    first = error.errors()[0]
    key = _format_location(tuple(first["loc"]))
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif first["type"] == "missing":
        reason = "required key is missing"
    count = error.error_count()
    if count > 1:
        reason += f" (and {count - 1} more problem{'s' if count > 2 else ''})"
    return ConfigError(path, key, reason)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None


def find_board_profile(name: str, relative_to: Path) -> Path:
    """Return the profile file for `name`: a path (absolute or relative to the config) or a name."""
    if "/" in name or name.endswith(".toml"):
        candidate = (relative_to.parent / name).resolve()
        if candidate.is_file():
            return candidate
        raise ConfigError(relative_to, "board", f"board profile file {candidate} does not exist")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(relative_to, "board", f"{name!r} is not a profile name")
    for directory in BOARD_PROFILE_DIRS:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in BOARD_PROFILE_DIRS)
    raise ConfigError(relative_to, "board", f"no board profile {name!r} (searched {searched})")


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file paths in the node config relative to the config file's folder."""
    resolved = dict(raw)
    for key in ("key_file", "state_dir", "control_socket"):
        value = resolved.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            resolved[key] = str((base.parent / value).resolve())
    hooks = resolved.get("hooks")
    if isinstance(hooks, dict) and isinstance(hooks.get("dir"), str) and not os.path.isabs(hooks["dir"]):
        resolved["hooks"] = {**hooks, "dir": str((base.parent / hooks["dir"]).resolve())}
    links = resolved.get("links")
    if isinstance(links, list):
        fixed = []
        for link in links:
            if isinstance(link, dict) and isinstance(link.get("port"), str) and not os.path.isabs(link["port"]):
                link = {**link, "port": str((base.parent / link["port"]).resolve())}
            fixed.append(link)
        resolved["links"] = fixed
    return resolved


def load_board_profile(path: Path) -> BoardProfile:
    """Load and validate one board profile file."""
    try:
        return BoardProfile.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise _validation_error(path, exc) from None


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> Config:
    """Load the node config at `path` and its board profile; raise ConfigError on any problem."""
    path = Path(path)
    raw = _read_toml(path)
    try:
        node = NodeConfig.model_validate(_resolve_paths(raw, path))
    except ValidationError as exc:
        raise _validation_error(path, exc) from None
    board_path = find_board_profile(node.board, path)
    config = Config(path=path, node=node, board=load_board_profile(board_path), board_path=board_path)
    check_relay_references(config)
    return config


def check_key_file_permissions(path: Path, config_path: Path) -> None:
    """Refuse a key file that is missing, unreadable, or readable by group or others (like ssh)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(config_path, "key_file", f"{path} does not exist (create it with `tandem keygen {path}`)") from None
    except PermissionError:
        raise ConfigError(config_path, "key_file", f"{path} cannot be read: permission denied") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(config_path, "key_file", f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            config_path,
            "key_file",
            f"{path} has permissions {mode:04o}, which let other users read the cluster key; "
            f"run `chmod 600 {path}`",
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(config_path, "key_file", f"{path} cannot be read: permission denied")


def check_relay_references(config: Config) -> None:
    """Every relay group names banks the board profile has (channel counts are checked at start)."""
    for index, group in enumerate(config.node.relay_groups):
        for field, banks in (("outputs", config.board.relays), ("feedback", config.board.feedback)):
            for ref in getattr(group, field):
                bank = ref.partition(":")[0]
                if bank not in banks:
                    known = ", ".join(sorted(banks)) or "none"
                    raise ConfigError(config.path, f"relay_groups[{index}].{field}",
                                      f"{ref}: the board profile {config.board_path.name} has no bank {bank!r} "
                                      f"(it has: {known})")


def effective_config(config: Config) -> dict[str, Any]:
    """The effective configuration with every default filled in, as plain data."""
    return {
        "config_file": str(config.path),
        "board_profile_file": str(config.board_path),
        "node": config.node.model_dump(mode="json"),
        "board": config.board.model_dump(mode="json"),
    }
