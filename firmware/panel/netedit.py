"""Setting one of the box's own ports at the front panel: the port, DHCP or a static address and gateway.

A pure state machine the panel's `PanelUi` hands its keys to while the operator is in "Network set"
(or, on an unpaired box, "Shared IP": the port, then the address; the pairing sends it to the peer):

    pick the port  ->  DHCP | Static  ->  address ddd.ddd.ddd.ddd/pp  ->  gateway ddd.ddd.ddd.ddd

The address and gateway are entered digit by digit as the PIN is: UP/DOWN change the digit,
ENTER or RIGHT go to the next one, LEFT to the previous one (from the first, back a step), BACK
leaves. A gateway of 000.000.000.000 means none. `key` returns None while the operator is still
at it, ``CANCEL`` when they left, or the parameters of the ``network-set`` command to confirm
(``{"port", "dhcp"}`` or ``{"port", "dhcp", "address", "gateway"}``); the daemon checks them
again (mgmtnet.PortSettings), and a wrong setting is undone with "Network undo".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from firmware.panel.base import Key
from firmware.panel.screens import Screen

CANCEL = "cancel"
DEFAULT_ADDRESS = "192.168.001.010/24"


def _digits(text: str) -> list[int]:
    return [int(c) for c in text if c.isdigit()]


def _address_digits(address: str | None) -> list[int]:
    """14 digits (four octets of three, a prefix of two) for an IPv4 interface, or the default."""
    try:
        interface = ipaddress.IPv4Interface(address or "")
    except ValueError:
        return _digits(DEFAULT_ADDRESS)
    octets = "".join(f"{int(o):03d}" for o in str(interface.ip).split("."))
    return _digits(f"{octets}{interface.network.prefixlen:02d}")


def _gateway_digits(gateway: str | None, address: list[int]) -> list[int]:
    """12 digits for the gateway: the current one, else the address's network with .1 at the end."""
    try:
        return _digits("".join(f"{int(o):03d}" for o in str(ipaddress.IPv4Address(gateway or "")).split(".")))
    except ValueError:
        return address[:9] + [0, 0, 1]


def _text(digits: Sequence[int], prefix: bool) -> str:
    """``ddd.ddd.ddd.ddd`` (``/pp`` with the prefix)."""
    groups = ["".join(map(str, digits[i:i + 3])) for i in range(0, 12, 3)]
    return ".".join(groups) + (f"/{digits[12]}{digits[13]}" if prefix else "")


def _column(position: int) -> int:
    """Where digit `position` sits in `_text`'s output (dots and the slash take a column)."""
    return position + min(position // 3, 4) if position < 12 else position + 4


def _value(digits: Sequence[int], prefix: bool) -> tuple[str | None, str | None]:
    """The address text and None, or None and why the digits are not one."""
    octets = [digits[i] * 100 + digits[i + 1] * 10 + digits[i + 2] for i in range(0, 12, 3)]
    if any(octet > 255 for octet in octets):
        return None, "a number is over 255"
    text = ".".join(map(str, octets))
    if prefix:
        length = digits[12] * 10 + digits[13]
        if not 1 <= length <= 32:
            return None, "prefix must be 1-32"
        text += f"/{length}"
    return text, None


class NetworkEditor:
    """The "Network set" dialog's state (see the module docstring)."""

    def __init__(self, ports: Sequence[str], settings: Mapping[str, Mapping[str, Any]],
                 shared_ip: bool = False) -> None:
        """`ports`: the box's Ethernet ports; `settings`: their current settings (mgmtnet's JSON form).

        `shared_ip`: enter the shared IP of an unpaired box instead (the port, then the address with its
        prefix; no DHCP, no gateway); the outcome is ``{"port", "address"}``.
        """
        self.ports = list(ports)
        self.settings = settings
        self.shared_ip = shared_ip
        self.step = "port"
        self.index = 0
        self.port = ""
        self.address: list[int] = []
        self.gateway: list[int] = []
        self.position = 0
        self.message: str | None = None

    # ------------------------------------------------------------------ keys

    def key(self, key: Key) -> dict[str, Any] | str | None:
        """One key; the outcome (see the module docstring)."""
        if key is Key.BACK:
            return CANCEL
        if self.step in ("port", "mode"):
            return self._choose(key)
        return self._edit(key)

    def _choices(self) -> list[str]:
        return [*self.ports, "Back"] if self.step == "port" else ["DHCP", "Static", "Back"]

    def _choose(self, key: Key) -> dict[str, Any] | str | None:
        choices = self._choices()
        if key in (Key.UP, Key.DOWN):
            self.index = (self.index + (1 if key is Key.DOWN else -1)) % len(choices)
            return None
        if key is Key.LEFT:
            return CANCEL if self.step == "port" else self._to("port")
        if key not in (Key.ENTER, Key.RIGHT):
            return None
        chosen = choices[self.index]
        if chosen == "Back":
            return CANCEL if self.step == "port" else self._to("port")
        if self.step == "port":
            self.port = chosen
            if self.shared_ip:
                self.address = _digits(DEFAULT_ADDRESS)
                return self._to("address")
            return self._to("mode")
        if chosen == "DHCP":
            return {"port": self.port, "dhcp": True}
        current = self.settings.get(self.port) or {}
        self.address = _address_digits(current.get("address"))
        self.gateway = _gateway_digits(current.get("gateway"), self.address)
        return self._to("address")

    def _to(self, step: str) -> None:
        self.step, self.index, self.position, self.message = step, 0, 0, None
        return None

    def _edit(self, key: Key) -> dict[str, Any] | str | None:
        digits = self.address if self.step == "address" else self.gateway
        if key in (Key.UP, Key.DOWN):
            digits[self.position] = (digits[self.position] + (1 if key is Key.UP else -1)) % 10
            self.message = None
        elif key is Key.LEFT:
            if self.position == 0:
                back = "port" if self.shared_ip else "mode"
                return self._to(back if self.step == "address" else "address")
            self.position -= 1
        elif key in (Key.ENTER, Key.RIGHT):
            if self.position < len(digits) - 1:
                self.position += 1
                return None
            return self._finish_field()
        return None

    def _finish_field(self) -> dict[str, Any] | None:
        if self.step == "address":
            address, why = _value(self.address, prefix=True)
            if address is None:
                self.message = why
                return None
            if self.shared_ip:
                return {"port": self.port, "address": address}
            self.step, self.position, self.message = "gateway", 0, None
            return None
        gateway, why = _value(self.gateway, prefix=False)
        if gateway is None:
            self.message = why
            return None
        address, _ = _value(self.address, prefix=True)
        return {"port": self.port, "dhcp": False, "address": address,
                "gateway": None if gateway == "0.0.0.0" else gateway}

    # ------------------------------------------------------------------ screen

    def screen(self) -> Screen:
        """What the dialog shows now."""
        if self.step in ("port", "mode"):
            title = "Network: port" if self.step == "port" else f"{self.port}: address by"
            return Screen(title=title, lines=tuple(self._choices()), kind="menu", highlight=self.index)
        prefix = self.step == "address"
        digits = self.address if prefix else self.gateway
        caret = " " * _column(self.position) + "^"
        hint = self.message or ("UP/DOWN digit, ENTER" if prefix else "0.0.0.0: no gateway")
        return Screen(title=f"{self.port} {self.step}", lines=(_text(digits, prefix), caret, hint),
                      tone="error" if self.message else "normal")
