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

from firmware import paths
from firmware.errors import ConfigError
from firmware.config.board import BoardProfile
from firmware.config.node import NodeConfig, ResourcesConfig

DEFAULT_CONFIG_PATH = paths.CONFIG_FILE
BOARD_PROFILE_DIRS = (
    paths.ETC_DIR / "board_profiles",
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


MAX_FILE_BYTES = 1 << 20  # a config or board profile is a few kilobytes
MAX_DEPTH = 16  # tables and arrays nested deeper than this are no config of ours

_UNSET = object()
_TAG = re.compile(r"^(udp|serial|int|float|bool|str|constrained-str|[a-z-]+\[.*\])$")


def format_location(loc: tuple[Any, ...], data: Any = _UNSET) -> str:
    """A pydantic error location as the key the user wrote: ``links[1].bind``.

    Given the input ``data``, parts that are no key of it (pydantic's union and validator
    tags) are left out; without it, tags are recognised by their look.
    """
    key = ""
    for part in loc:
        if data is not _UNSET:
            if isinstance(data, dict) and part in data:
                data = data[part]
            elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
                data = data[part]
            else:
                continue  # a tag pydantic added: no key of the input
        elif isinstance(part, str) and _TAG.match(part):
            continue
        key += f"[{part}]" if isinstance(part, int) else ("." if key else "") + str(part)
    return key


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    reason = error["msg"].removeprefix("Value error, ")
    if kind in {"int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type", "model_type",
                "model_attributes_type", "literal_error", "int_parsing", "float_parsing"}:
        reason += f", not {_shown(error.get('input'))}"
    return reason


def reasons(error: ValidationError) -> str:
    """Every problem pydantic found, worded as the config loader words it, on one line (settings outside a file)."""
    return "; ".join(_reason(item) for item in error.errors())


def _shown(value: Any) -> str:
    """A value as the TOML it was written in, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_error(path: Path, error: ValidationError, data: Any = _UNSET) -> ConfigError:
    """One problem per key pydantic found (several reasons for one key, as from a union, on one line)."""
    reasons: dict[str, list[str]] = {}
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "missing" and loc:  # the last part is the key the input lacks
            key = ".".join(k for k in (format_location(loc[:-1], data), str(loc[-1])) if k)
        else:
            key = format_location(loc, data)
        reason = _reason(item)
        if reason not in reasons.setdefault(key, []):
            reasons[key].append(reason)
    return ConfigError.of([ConfigError(path, key, "; or ".join(found)) for key, found in reasons.items()])


def _walk(value: Any, key: str, depth: int, problems: list[tuple[str, str]]) -> None:
    """Problems no schema can see once the file is parsed: nesting too deep, NUL bytes in keys or text."""
    if depth > MAX_DEPTH:
        problems.append((key, f"nested more than {MAX_DEPTH} levels deep"))
        return
    if isinstance(value, str):
        if "\x00" in value:
            problems.append((key, "contains a NUL byte"))
    elif isinstance(value, dict):
        for name, item in value.items():
            if "\x00" in name:
                problems.append((key, f"the key {_shown(name)} contains a NUL byte"))
                continue
            _walk(item, f"{key}.{name}" if key else name, depth + 1, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{key}[{index}]", depth + 1, problems)


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML as data; ConfigError for a file that is not a small, UTF-8, well-formed TOML file."""
    try:
        # Non-blocking: a FIFO or a device named as the config must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(path, "", f"cannot be opened: {getattr(exc, 'strerror', None) or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ConfigError(path, "", "is a directory, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(path, "", "is not a regular file")
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(path, "", f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(path, "", f"is larger than {MAX_FILE_BYTES // 1024} KiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(path, "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
                                    "(TOML files are UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(path, "", f"not a config: arrays or tables nested more than {MAX_DEPTH} levels "
                                    "deep") from None
    return data


def _validate(path: Path, model: type[Any], data: dict[str, Any]) -> Any:
    """``model`` validated from ``data``; ConfigError with every problem, one per key.

    What no schema sees (NUL bytes in keys and text, nesting too deep) is found first, and
    the schema's problems with the same or an enclosing key are then not repeated.
    """
    found: list[tuple[str, str]] = []
    if model.model_config.get("extra") == "ignore":  # only the keys it reads (`tandem release`)
        _walk({k: v for k, v in data.items() if k in model.model_fields}, "", 0, found)
    else:
        _walk(data, "", 0, found)
    problems = [ConfigError(path, key, reason) for key, reason in found]
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        covered = [key for key, _ in found]
        problems += [problem for problem in _validation_error(path, exc, data).problems
                     if not any(_within(problem.key, key) or _within(key, problem.key) for key in covered)]
    if problems:
        raise ConfigError.of(problems)
    return validated


def _within(key: str, outer: str) -> bool:
    """Whether ``key`` is ``outer`` or lies inside it (``links[0].bind`` inside ``links``)."""
    return key == outer or (key.startswith(outer) and key[len(outer):][:1] in (".", "[")) if outer else True


def find_board_profile(name: str, relative_to: Path) -> Path:
    """Return the profile file for `name`: a path (absolute or relative to the config) or a name."""
    if not name or "\x00" in name:
        raise ConfigError(relative_to, "board", f"{name!r} is not a profile name or file")
    if "/" in name or name.endswith(".toml"):
        try:
            candidate = (relative_to.parent / name).resolve()
            found = candidate.is_file()
        except (OSError, RuntimeError, ValueError) as exc:  # too long a name, a symlink loop
            raise ConfigError(relative_to, "board", f"board profile file {name}: {exc}") from None
        if found:
            return candidate
        raise ConfigError(relative_to, "board", f"board profile file {candidate} does not exist")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ConfigError(relative_to, "board", f"{name!r} is not a profile name")
    for directory in BOARD_PROFILE_DIRS:
        candidate = directory / f"{name}.toml"
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    searched = ", ".join(str(d) for d in BOARD_PROFILE_DIRS)
    raise ConfigError(relative_to, "board", f"no board profile {name!r} (searched {searched})")


def _relative_to(value: Any, base: Path) -> Any:
    """A relative path made relative to the config file's folder; anything else as it was (for the schema)."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value or os.path.isabs(value):
        return value
    try:
        return str((base.parent / value).resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long: the schema or start says so
        return str(base.parent / value)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file paths in the node config relative to the config file's folder."""
    resolved = dict(raw)
    for key in ("key_file", "state_dir", "control_socket"):
        if key in resolved:
            resolved[key] = _relative_to(resolved[key], base)
    hooks = resolved.get("hooks")
    if isinstance(hooks, dict) and "dir" in hooks:
        resolved["hooks"] = {**hooks, "dir": _relative_to(hooks["dir"], base)}
    links = resolved.get("links")
    if isinstance(links, list):
        resolved["links"] = [{**link, "port": _relative_to(link["port"], base)}
                             if isinstance(link, dict) and "port" in link else link for link in links]
    return resolved


def load_board_profile(path: Path) -> BoardProfile:
    """Load and validate one board profile file."""
    return _validate(path, BoardProfile, _read_toml(path))


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
    data = _resolve_paths(_read_toml(path), path)
    try:
        node = _validate(path, node_model, data)
    except ConfigError as exc:
        problems = [exc]
        board = data.get("board")
        if isinstance(board, str) and not any(_within(p.key, "board") for p in exc.problems):
            try:  # the board profile's own problems are worth reporting in the same run
                load_board_profile(find_board_profile(board, path))
            except ConfigError as board_error:
                problems.append(board_error)
        raise ConfigError.of(problems) from None
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
    except (OSError, ValueError) as exc:  # a name too long, a symlink loop, a NUL byte
        raise ConfigError(config_path, "key_file", f"{path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
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
    problems = []
    for index, group in enumerate(config.node.relay_groups):
        for field, banks in (("outputs", config.board.relays), ("feedback", config.board.feedback)):
            for ref in getattr(group, field):
                bank = ref.partition(":")[0]
                if bank not in banks:
                    known = ", ".join(sorted(banks)) or "none"
                    problems.append(ConfigError(config.path, f"relay_groups[{index}].{field}",
                                                f"{ref}: the board profile {config.board_path.name} has no bank "
                                                f"{bank!r} (it has: {known})"))
    if problems:
        raise ConfigError.of(problems)


def effective_config(config: Config) -> dict[str, Any]:
    """The effective configuration with every default filled in, as plain data."""
    return {
        "config_file": str(config.path),
        "board_profile_file": str(config.board_path),
        "node": config.node.model_dump(mode="json"),
        "board": config.board.model_dump(mode="json"),
    }
