"""Node configuration and board profile: schema, loading and validation.

Both files are TOML. Every key is declared in this package; unknown keys are
errors, and every error names the file, the key and the reason
(:class:`~firmware.errors.ConfigError`).

* :mod:`firmware.config.base`: the strict base model, name and address rules;
* :mod:`firmware.config.node`: the node config's sections (`tandem.toml`);
* :mod:`firmware.config.board`: the board profile (which driver runs which hardware);
* :mod:`firmware.config.loading`: reading, resolving and checking both files.

The names below are the package's public API; import them from here.
"""

from firmware.config.base import NAME_PATTERN, UDP_DEFAULT_PORT, parse_host_port
from firmware.config.board import BoardProfile, DriverTable, PanelProfile, PulseConfig
from firmware.config.loading import (
    BOARD_PROFILE_DIRS,
    DEFAULT_CONFIG_PATH,
    Config,
    ReleaseConfig,
    check_key_file_permissions,
    check_relay_references,
    effective_config,
    find_board_profile,
    format_location,
    load_board_profile,
    load_config,
    load_release_config,
)
from firmware.config.node import (
    ActionsConfig,
    ArbitrationConfig,
    FailbackConfig,
    FencingConfig,
    FlapConfig,
    HealthConfig,
    HooksConfig,
    JournalConfig,
    NodeConfig,
    PanelConfig,
    RelayGroupConfig,
    ResourcesConfig,
    SensorConfig,
    SerialLinkConfig,
    ServiceConfig,
    SharedIpConfig,
    ThresholdConfig,
    TimersConfig,
    UdpLinkConfig,
    WatchdogConfig,
    WitnessConfig,
)

__all__ = [
    "ActionsConfig", "ArbitrationConfig", "BOARD_PROFILE_DIRS", "BoardProfile", "Config", "DEFAULT_CONFIG_PATH",
    "DriverTable",
    "FailbackConfig", "FencingConfig", "FlapConfig", "HealthConfig", "HooksConfig", "JournalConfig",
    "NAME_PATTERN", "NodeConfig", "PanelConfig", "PanelProfile", "PulseConfig", "RelayGroupConfig",
    "ReleaseConfig", "ResourcesConfig",
    "SensorConfig", "SerialLinkConfig", "ServiceConfig", "SharedIpConfig", "ThresholdConfig", "TimersConfig",
    "UDP_DEFAULT_PORT", "UdpLinkConfig", "WatchdogConfig", "WitnessConfig", "check_key_file_permissions",
    "check_relay_references", "effective_config", "find_board_profile", "format_location", "load_board_profile",
    "load_config", "load_release_config", "parse_host_port",
]
