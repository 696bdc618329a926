"""Loading and checking the node config and its board profile; every error names file, key and reason."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

from firmware.errors import ConfigError
from firmware.config.board import BoardProfile
from firmware.config.node import NodeConfig, ResourcesConfig

DEFAULT_CONFIG_PATH = Path("/etc/tandem/tandem.toml")
BOARD_PROFILE_DIRS = (
    Path("/etc/tandem/board_profiles"),
    Path(__file__).resolve().parent.parent.parent / "board_profiles",
    Path("/usr/share/tandem/board_profiles"),
)


class Config(BaseModel):
    """The effective configuration: node config, its board profile and where they came from."""

    model_config = ConfigDict(frozen=True)

    path: Path
    node: NodeConfig
    board: BoardProfile
    board_path: Path


def format_location(loc: tuple[Any, ...]) -> str:
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
    key = format_location(tuple(first["loc"]))
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
    return _load(Path(path), NodeConfig, Config)


class ReleaseConfig(BaseModel):
    """What `tandem release` reads: the node config's resource sections and the board profile."""

    model_config = ConfigDict(frozen=True)

    path: Path
    node: ResourcesConfig
    board: BoardProfile
    board_path: Path


_Loaded = TypeVar("_Loaded", Config, ReleaseConfig)


def load_release_config(path: Path | str = DEFAULT_CONFIG_PATH) -> ReleaseConfig:
    """Load only what a release needs (`ResourcesConfig`) and the board profile; ConfigError on a problem there."""
    return _load(Path(path), ResourcesConfig, ReleaseConfig)


def _load(path: Path, node_model: type[Any], config_model: type[_Loaded]) -> _Loaded:
    """Validate the node config at `path` as `node_model`, find and load its board profile, check relays."""
    try:
        node = node_model.model_validate(_resolve_paths(_read_toml(path), path))
    except ValidationError as exc:
        raise _validation_error(path, exc) from None
    board_path = find_board_profile(node.board, path)
    config = config_model(path=path, node=node, board=load_board_profile(board_path), board_path=board_path)
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


def check_relay_references(config: Config | ReleaseConfig) -> None:
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
