"""systemd's notify protocol (READY, STATUS, WATCHDOG, STOPPING) without depending on systemd.

Does nothing when NOTIFY_SOCKET is not set, so the daemon runs the same way
under systemd, another supervisor, or a terminal.

Kept rather than python3-systemd's ``systemd.daemon.notify`` or the
``sdnotify`` package (docs/library-decisions.md): the socket is opened once
and never blocks the heartbeat tick, the watchdog interval comes from
WATCHDOG_USEC/WATCHDOG_PID (neither library parses it), and it needs no C
extension.
"""

from __future__ import annotations

import os
import socket


def _one_line(value: str | int) -> str:
    return " ".join(str(value).splitlines())


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket namespace
        self.address = address or None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2
        if environ is None:
            # As sd_notify(unset_environment=1): the PBX commands, hooks and systemctl the daemon runs
            # must not inherit the socket (systemd logs each of their messages as a foreign PID's).
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (e.g. READY=1, STATUS=...); False if nobody listens.

        A line break in a value becomes a space: the protocol is one field a
        line, so a status text must not be able to add a field (WATCHDOG=1).
        """
        if self._sock is None or self.address is None:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items()).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        """Tell the supervisor start-up is complete."""
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        """Update the one-line status `systemctl status` shows."""
        self.send(STATUS=status)

    def watchdog(self) -> None:
        """Pet the systemd watchdog."""
        self.send(WATCHDOG=1)

    def stopping(self) -> None:
        """Tell the supervisor the daemon is shutting down."""
        self.send(STOPPING=1)
