"""The privileged helper: the few things the unprivileged daemon needs root for, and nothing else.

The daemon runs as the user ``tandem``. Reading the SMBIOS tables (dmidecode) and asking some disk
controllers for SMART data (smartctl) need root. Instead of a root daemon, a socket-activated helper
(``tandem-helper.socket``, ``tandem-helper@.service``: one short-lived root process per request,
itself sandboxed) answers exactly these operations, with their arguments checked against fixed
patterns:

  dmidecode      ``-t N`` pairs (N an SMBIOS type, 0-127)
  smartctl       ``-a -j -n standby [-d TYPE] DEVICE`` (TYPE and DEVICE from fixed patterns)
  factory-reset  exactly ``factory-reset --yes``: `tandem factory-reset` leaves its flag on the ESP
                 and reboots (the panel's "Factory reset", through the daemon)
  bootgate       exactly ``pass``: the update's good gate passed, the slot on trial is marked good
                 (``/usr/libexec/tandem/bootgate pass``, hardware_docs/updates.md); or ``install BUNDLE
                 pair|single``: put the inactive slot on trial and install the bundle into it (RAUC's
                 D-Bus service lets only root install), BUNDLE a ``.raucb`` file directly in the bulk
                 channel's inbox or on a mounted USB stick (``/media/<label>/``); it may take 30 min

The daemon reaches it through its sensor host's command overrides: the board profile names
``/usr/libexec/tandem/dmidecode`` (a two-line script running ``python -m firmware.appliance.helper
run dmidecode -- …``) instead of ``dmidecode``, so the sensors' code is the same with or without the
helper. Both sides run this module alone (standard library only, not the whole CLI): on a slow box a
request must fit the inventory's 10 s.

Protocol: one JSON line each way on the connection. Request ``{"op": "dmidecode", "args": [...]}``;
answer ``{"ok": true, "returncode": 0, "stdout": "...", "stderr": "..."}`` or
``{"ok": false, "error": "why"}``. Requests are at most 4 KiB; commands get 30 s (an install 30 min).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

SOCKET = Path("/run/tandem-helper.sock")
MAX_REQUEST = 4096
COMMAND_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 1800.0  # a bundle of a few hundred MiB on a slow disk; RAUC's own install has no limit

_SMBIOS_TYPE = re.compile(r"^(?:\d|[1-9]\d|1[01]\d|12[0-7])$")
_DEVICE = re.compile(r"^/dev/(?:sd[a-z]{1,2}|nvme\d{1,2}(?:n\d{1,2})?|hd[a-z]|vd[a-z]{1,2}|sg\d{1,3}|bus/\d{1,2})$")
# A bundle directly in the bulk channel's inbox, or on a USB stick mounted under /media: no "..", no
# other folder, nothing that is not a plain name.
_BUNDLE = re.compile(r"^(?:/var/lib/tandem/inbox|/media/[A-Za-z0-9_-][A-Za-z0-9._-]{0,63})/"
                     r"[A-Za-z0-9_-][A-Za-z0-9._+-]{0,200}\.raucb$")
_DEVICE_TYPE = re.compile(r"^(?:auto|ata|sat|scsi|nvme|usbjmicron|usbsunplus|usbcypress|"
                          r"(?:megaraid|cciss|3ware|areca|aacraid|hpt),\d{1,3}(?:,\d{1,3}){0,2})$")


class HelperError(RuntimeError):
    """A request was refused (not an allowed operation or argument) or the helper could not be reached."""


@dataclass(frozen=True)
class Operation:
    """One allowed operation: the program it runs and how its arguments are checked."""

    program: str
    check: Callable[[list[str]], None]
    timeout_s: Callable[[list[str]], float] = lambda args: COMMAND_TIMEOUT_S


def _check_dmidecode(args: list[str]) -> None:
    if not args or len(args) % 2:
        raise HelperError("dmidecode takes -t TYPE pairs")
    for flag, value in zip(args[::2], args[1::2]):
        if flag != "-t" or not _SMBIOS_TYPE.fullmatch(value):
            raise HelperError(f"dmidecode: {flag} {value}: only -t with an SMBIOS type number (0-127)")


def _check_smartctl(args: list[str]) -> None:
    if args[:4] != ["-a", "-j", "-n", "standby"] or len(args) not in (5, 7):
        raise HelperError("smartctl takes -a -j -n standby [-d TYPE] DEVICE")
    if len(args) == 7 and (args[4] != "-d" or not _DEVICE_TYPE.fullmatch(args[5])):
        raise HelperError(f"smartctl: {' '.join(args[4:6])}: not an allowed -d device type")
    if not _DEVICE.fullmatch(args[-1]):
        raise HelperError(f"smartctl: {args[-1]}: not a disk device")


def _check_factory_reset(args: list[str]) -> None:
    if args != ["factory-reset", "--yes"]:
        raise HelperError("factory-reset takes exactly: factory-reset --yes")


def _check_bootgate(args: list[str]) -> None:
    if args in (["pass"], ["abort"]):
        return
    if len(args) != 3 or args[0] != "install" or args[2] not in ("pair", "single"):
        raise HelperError("bootgate takes exactly: pass, abort, or install BUNDLE pair|single")
    if not _BUNDLE.fullmatch(args[1]):
        raise HelperError(f"bootgate install: {args[1]}: a bundle is installed only from "
                          "/var/lib/tandem/inbox/NAME.raucb or /media/STICK/NAME.raucb")


def _bootgate_timeout(args: list[str]) -> float:
    return INSTALL_TIMEOUT_S if args[:1] == ["install"] else COMMAND_TIMEOUT_S


OPERATIONS: dict[str, Operation] = {
    "dmidecode": Operation("dmidecode", _check_dmidecode),
    "smartctl": Operation("smartctl", _check_smartctl),
    "factory-reset": Operation("tandem", _check_factory_reset),
    "bootgate": Operation("/usr/libexec/tandem/bootgate", _check_bootgate, _bootgate_timeout),
}


def parse_request(line: bytes) -> tuple[Operation, list[str]]:
    """The operation and checked arguments of a request line; HelperError if it is not allowed."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HelperError(f"not a JSON request: {exc}") from None
    if not isinstance(request, dict) or set(request) - {"op", "args"}:
        raise HelperError("a request is {\"op\": ..., \"args\": [...]} and nothing else")
    op, args = request.get("op"), request.get("args", [])
    if op not in OPERATIONS:
        raise HelperError(f"unknown operation {op!r}: allowed are {', '.join(sorted(OPERATIONS))}")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise HelperError("args must be a list of strings")
    OPERATIONS[op].check(args)
    return OPERATIONS[op], args


def answer(line: bytes, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, Any]:
    """The answer to one request line (runs the command if the request is allowed)."""
    try:
        operation, args = parse_request(line)
    except HelperError as exc:
        return {"ok": False, "error": str(exc)}
    timeout = operation.timeout_s(args)
    try:
        done = run([operation.program, *args], capture_output=True, text=True, timeout=timeout,
                   stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return {"ok": False, "error": f"{operation.program} is not installed"}
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"{operation.program} took more than {timeout:g} s"}
    return {"ok": True, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def serve(reader: BinaryIO, writer: BinaryIO) -> None:
    """Answer the one request on a connection (systemd's Accept=yes hands it over as stdin/stdout)."""
    line = reader.readline(MAX_REQUEST + 1)
    reply = (answer(line) if len(line) <= MAX_REQUEST and line.endswith(b"\n")
             else {"ok": False, "error": f"a request is one line of at most {MAX_REQUEST} bytes"})
    writer.write(json.dumps(reply).encode() + b"\n")
    writer.flush()


def call(op: str, args: list[str], path: Path = SOCKET, timeout: float = COMMAND_TIMEOUT_S + 5) -> dict[str, Any]:
    """Ask the helper; its answer (HelperError if it cannot be reached or refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise HelperError(f"the privileged helper at {path} cannot be reached: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise HelperError(f"the privileged helper gave no answer ({len(data)} bytes)") from None
    if not reply.get("ok"):
        raise HelperError(f"the privileged helper refused: {reply.get('error')}")
    return reply


def main(argv: list[str] | None = None) -> int:
    """``serve`` (the root side, one request on stdin/stdout) or ``run OP -- ARGS`` (the daemon's side)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["serve"]:
        serve(sys.stdin.buffer, sys.stdout.buffer)
        return 0
    if len(args) >= 2 and args[0] == "run":
        rest = args[2:]
        try:
            reply = call(args[1], rest[1:] if rest[:1] == ["--"] else rest)
        except HelperError as exc:
            print(f"tandem helper: {exc}", file=sys.stderr)
            return 1
        sys.stdout.write(reply["stdout"])
        sys.stderr.write(reply["stderr"])
        return int(reply["returncode"])
    print("usage: python -m firmware.appliance.helper serve | run OP -- ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
