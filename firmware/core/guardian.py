"""The guardian: a forked copy of `tandem run` that lets go of the node the instant the daemon dies.

systemd's ``ExecStopPost=tandem release`` starts a fresh Python process after
the daemon died: a few hundred milliseconds of imports before the first
relay opens, while the peer may already be claiming the address. So
`tandem run` forks once, before it opens any hardware or starts a thread;
the child, with everything already imported, blocks on the read end of a
pipe whose write end only the daemon holds (the descriptor is
close-on-exec, so the PBX and hooks never inherit it). However the daemon
ends (SIGKILL, the OOM killer, a crash), the kernel closes its end and the
guardian reads end-of-file: it runs the release (`release.release_node`,
source ``guardian``) at once and exits, unless another daemon answers on the
control socket (this one never got going because one already runs). A clean exit writes one byte first:
the daemon demoted on its way out, so there is nothing to release.

The guardian ignores SIGTERM, SIGINT and SIGHUP: when the daemon dies,
systemd signals the rest of the unit's control group (and a terminal's
Ctrl-C reaches the whole process group), and the release must finish.
``ExecStopPost=`` runs after the control group is empty; it then finds
nothing, and it is the backstop when the guardian itself is gone (an alarm
says so while the daemon runs).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from firmware.core.alarms import Alarm

log = logging.getLogger(__name__)

CLEAN_EXIT = b"c"  # written by the daemon before a clean exit: nothing to release


class Guardian:
    """The daemon's handle on its guardian process: the pipe's write end and the child's pid."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self._pipe: int | None = pipe
        self._exit_status: int | None = None

    @classmethod
    def fork(cls, config_path: Path) -> "Guardian":
        """Fork the guardian for the node configured at `config_path` (call before any thread starts)."""
        read_end, write_end = os.pipe()  # both close-on-exec: no program the daemon starts inherits them
        pid = os.fork()
        if pid == 0:  # the guardian
            os.close(write_end)
            status = 1
            try:
                status = guard(read_end, config_path)
            finally:
                os._exit(status)
        os.close(read_end)
        return cls(pid, write_end)

    @property
    def alive(self) -> bool:
        """Whether the guardian still runs (reaps it once it has ended)."""
        if self._exit_status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, -1
            if pid == self.pid:
                self._exit_status = status
        return self._exit_status is None

    def clean_exit(self) -> None:
        """Tell the guardian the daemon left the cluster cleanly: it ends without releasing."""
        if self._pipe is None:
            return
        try:
            os.write(self._pipe, CLEAN_EXIT)
        except OSError:  # the guardian is gone already
            pass
        os.close(self._pipe)
        self._pipe = None

    def status(self) -> dict[str, Any]:
        """The guardian's part of the status snapshot (key ``guardian``)."""
        return {"guardian": {"pid": self.pid, "alive": self.alive}}

    def alarms(self) -> list[Alarm]:
        """A critical alarm while the guardian is gone: only ExecStopPost would release after a crash."""
        if self.alive:
            return []
        return [Alarm("guardian", "critical",
                      f"the release guardian (pid {self.pid}) is gone: after a crash only systemd's "
                      "ExecStopPost releases this node, a few hundred milliseconds later; restart tandem")]


def guard(pipe: int, config_path: Path) -> int:
    """The guardian's life: wait for the daemon's end, release unless it ended cleanly; the exit status."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        ending = os.read(pipe, 1)
    except OSError:
        ending = b""
    if ending == CLEAN_EXIT:
        return 0
    from firmware.config import load_release_config
    from firmware.core.control import socket_in_use
    from firmware.core.release import release_node
    from firmware.errors import TandemError

    try:
        config = load_release_config(config_path)
        if socket_in_use(config.node.control_socket):
            # This daemon never got going (another one runs the node, e.g. a second `tandem run`): hands off.
            log.error("guardian: a daemon answers on %s: not releasing its node", config.node.control_socket)
            return 1
        result = release_node(config, "guardian")
    except TandemError as exc:
        log.error("guardian: cannot release: %s", exc)
        return 1
    log.warning("guardian: the daemon ended without leaving the cluster: %s", result.release_record()["detail"])
    return 0 if result.ok else 1
