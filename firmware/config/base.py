"""What every configuration section shares: strict models, name and address rules."""

from __future__ import annotations

import ipaddress
import re

from pydantic import (
    BaseModel,
    ConfigDict,
)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"
UDP_DEFAULT_PORT = 694


class Strict(BaseModel):
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
