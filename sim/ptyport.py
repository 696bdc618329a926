"""Pseudo-terminals that stand in for serial devices, reachable through a stable link.

Emulators (the null-modem cable, the USB relay board, the Crystalfontz panel)
put a raw pty behind a fixed path, like udev's /dev/serial/by-id links, so a
driver reopens the same path after an unplug and replug.
"""

from __future__ import annotations

import itertools
import os
import tty
from pathlib import Path

_ids = itertools.count()


def link_atomically(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one step: a temporary symlink renamed over it."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{next(_ids)}.tmp")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)


def open_raw_pty() -> tuple[int, int]:
    """A new pty pair: the slave in raw mode (no echo, no line editing), the master non-blocking."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def plug_pty(link: Path) -> tuple[int, int]:
    """A raw pty pair whose slave ``link`` now points at; the caller owns both descriptors."""
    master, slave = open_raw_pty()
    try:
        link_atomically(os.ttyname(slave), link)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave
