"""Witness checks against real sockets on loopback."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from firmware.core.witness import Witness, check_target
from sim.rack import WitnessListener


def test_tcp_target_reachable_and_refused() -> None:
    listener = WitnessListener()
    listener.up()
    try:
        up = asyncio.run(check_target(listener.target, 1.0))
        assert up.ok and up.detail == "connected"
    finally:
        listener.down()
    down = asyncio.run(check_target(listener.target, 1.0))
    assert not down.ok and "refused" in down.detail.lower()


def test_require_all_and_any() -> None:
    good, bad = WitnessListener(), WitnessListener()
    good.up()
    try:
        ok_all, summary = asyncio.run(Witness([good.target, bad.target], "all", 1.0).check())
        ok_any, _ = asyncio.run(Witness([good.target, bad.target], "any", 1.0).check())
        assert not ok_all and ok_any
        assert good.target in summary and bad.target in summary
    finally:
        good.down()


def test_tcp_target_that_never_answers_times_out() -> None:
    # A listening socket with a full backlog and no accept() still completes handshakes on Linux,
    # so use a socket that is bound but not listening on a port nobody answers: refused, quickly.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        result = asyncio.run(check_target(f"tcp://127.0.0.1:{port}", 0.5))
        assert not result.ok
    finally:
        sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="ICMP echo needs root (raw socket) on this machine")
def test_icmp_target_on_loopback() -> None:
    result = asyncio.run(check_target("icmp://127.0.0.1", 1.0))
    assert result.ok and "reply" in result.detail
