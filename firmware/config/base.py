"""What every configuration section shares: strict models, name, text, path and address rules."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"
UDP_DEFAULT_PORT = 694
# An import path "package.module:Name": ASCII identifiers only, never relative (".x:Y").
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH_PATTERN = rf"^{IDENTIFIER}(\.{IDENTIFIER})*:{IDENTIFIER}$"
MAX_UNIX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
PATH_MAX = 4096  # Linux: bytes in a path, with its terminating NUL
NAME_MAX = 255  # Linux: bytes in one file name

# What every model of the config shares: unknown keys are errors, values are frozen, and no value is
# coerced from another type (no "100" for 100, no 1 for true, no list for a tuple; an integer is a
# valid float); floats are finite (TOML has nan and inf).
STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


class Strict(BaseModel):
    """Base for all config sections: unknown keys are errors, no coercion, finite floats, frozen values."""

    model_config = STRICT


def _name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"{value!r} is not a name: 1-16 ASCII letters, digits, '.', '_' or '-', "
                         "beginning with a letter or digit")
    return value


Name = Annotated[str, AfterValidator(_name)]
"""A node, peer, link or relay-group name (`NAME_PATTERN`)."""


def _import_path(value: str) -> str:
    if len(value) > 200 or not re.fullmatch(IMPORT_PATH_PATTERN, value):
        raise ValueError(f"{value[:200]!r} is not an import path \"package.module:Class\" (ASCII names, "
                         "no relative import such as \".module:Class\")")
    return value


ImportPath = Annotated[str, AfterValidator(_import_path)]
"""A driver or extension named by import path, "package.module:Name"."""


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def _nonempty(value: str) -> str:
    _text(value)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_text)]
"""A string without NUL bytes (they end a C string early: the value seen would not be the one written)."""
NonEmptyText = Annotated[str, AfterValidator(_nonempty)]
"""A string with something in it besides white space, and no NUL byte."""


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a file path (a string)")
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError("must not begin or end with white space")
    encoded = os.fsencode(value)
    if len(encoded) >= PATH_MAX:
        raise ValueError(f"is {len(encoded)} bytes long; a path has fewer than {PATH_MAX}")
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise ValueError(f"has a name of {len(longest)} bytes; a file name has at most {NAME_MAX}")
    return Path(value)


ConfigPath = Annotated[Path, PlainValidator(_path), PlainSerializer(str, return_type=str, when_used="json")]
"""A file path written as a string: not empty, no NUL byte (strict mode would refuse a string for a Path)."""


def _socket_path(value: Path) -> Path:
    size = len(os.fsencode(str(value)))
    if size > MAX_UNIX_SOCKET_PATH:
        raise ValueError(f"is {size} bytes long; a Unix socket path has at most {MAX_UNIX_SOCKET_PATH}")
    return value


SocketPath = Annotated[ConfigPath, AfterValidator(_socket_path)]


def _argv(value: list[str]) -> list[str]:
    for index, arg in enumerate(value):
        if "\x00" in arg:
            raise ValueError(f"argument {index} contains a NUL byte")
    if value and not value[0].strip():
        raise ValueError("the command (the first element) must not be empty")
    return value


Argv = Annotated[list[str], AfterValidator(_argv)]
"""A command as an argument list: no NUL byte anywhere, a non-empty program name (or no command at all)."""


def finite(value: float) -> float:
    """ValueError for NaN and infinities (TOML has both)."""
    if not math.isfinite(value):
        raise ValueError("must be a finite number (not nan or inf)")
    return value


_PORT = re.compile(r"[0-9]{1,5}")
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.%A-Za-z_-]+)\](?::(.*))?", re.ASCII)


def parse_host_port(text: str, default_port: int = UDP_DEFAULT_PORT) -> tuple[str, int]:
    """Parse `host[:port]` or `[v6]:port` into (host, port); raise ValueError if malformed.

    The port is ASCII digits only: `int()` would also take "+694", " 694", "6_94" and
    other scripts' digits ("６９４").
    """
    if not isinstance(text, str) or not text.isprintable() or text != text.strip():
        raise ValueError(f"{text!r} is not an address (write e.g. 192.0.2.1:694 or [2001:db8::1]:694)")
    match = _BRACKETED.fullmatch(text)
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") > 1:  # bare IPv6 address, no port
        host, port = text, None
    else:
        host, separator, port = text.partition(":")
        if separator and not port:
            raise ValueError(f"{text!r} ends in ':' without a port")
        port = port or None
    address, _, scope = host.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address (write e.g. 192.0.2.1:694 or [2001:db8::1]:694)") from exc
    if scope and (parsed.version == 4 or not re.fullmatch(r"[A-Za-z0-9._@-]{1,15}", scope)):
        raise ValueError(f"{host!r}: a zone (%interface) is only for an IPv6 address and names an interface")
    if port is None:
        number = default_port
    elif not _PORT.fullmatch(port):
        raise ValueError(f"port {port!r} is not a number (ASCII digits 0-9 only)")
    else:
        number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} is outside 1-65535")
    return host, number
