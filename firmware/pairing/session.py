"""Running a pairing over the serial crossover cable, and writing what it gives.

Messages travel as COBS frames (the heartbeat link's framing) holding
``TP`` and a JSON object, so a frame of any other kind (line noise, a
heartbeat) is skipped. What was sent last is sent again every
:data:`RESEND_S` until the peer moves on, so frames lost to noise cost a
resend, not the pairing. The operator's answer comes from ``ask(code)``:
the panel's confirmation or the CLI's prompt.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import serial

from firmware.core.journal import write_atomically
from firmware.core.links import FrameDecoder, encode_frame
from firmware.pairing.protocol import Message, Pairing, PairingError, PairingResult
from firmware.serialport import close_quietly, open_port, reason

log = logging.getLogger(__name__)

MAGIC = b"TP"
RESEND_S = 0.5
LINGER_S = 2.0  # after finishing, keep answering so the peer gets our CONFIRM too
MAX_FRAME = 4096
ABORT_COPIES = 3  # an ABORT is sent once and for all: copies, so line noise does not swallow it


def encode(message: Message) -> bytes:
    """One message as a serial frame."""
    return encode_frame(MAGIC + json.dumps(message, separators=(",", ":")).encode())


def decode(packet: bytes) -> Message | None:
    """The message in a frame, or None if the frame is not a pairing message."""
    if not packet.startswith(MAGIC):
        return None
    try:
        message = json.loads(packet[len(MAGIC):])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def pair_over_serial(port_path: str, pairing: Pairing, ask: Callable[[str], bool | None], timeout: float = 120.0,
                     baudrate: int = 115200, clock: Callable[[], float] = time.monotonic,
                     cancelled: Callable[[], bool] = lambda: False) -> PairingResult:
    """Pair with the box at the other end of the cable on `port_path`; PairingError with the reason if not.

    ``ask(code)`` shows the code and returns whether the operator confirmed that the
    other box shows the same (it may take as long as the operator needs; the peer waits), or None
    while the operator has not answered yet: it is asked again, and meanwhile the cable is still
    read, so an ABORT from the other box (its operator said No) ends the wait.
    ``cancelled()`` true ends it (the operator cancelled at the panel); the peer is told.
    """
    try:
        port = open_port(port_path, baudrate, read_timeout=0.1, write_timeout=2.0)
    except (serial.SerialException, OSError) as exc:
        raise PairingError(f"cannot open the serial port {port_path}: {reason(exc)}") from None
    try:
        return _run(port, pairing, ask, timeout, clock, cancelled)
    except serial.SerialException as exc:
        raise PairingError(f"the serial port {port_path} failed: {reason(exc)}") from None
    finally:
        close_quietly(port)


def _run(port: serial.Serial, pairing: Pairing, ask: Callable[[str], bool | None], timeout: float,
         clock: Callable[[], float], cancelled: Callable[[], bool]) -> PairingResult:
    decoder = FrameDecoder(MAX_FRAME)
    port.reset_input_buffer()
    deadline = clock() + timeout
    asked = False
    done_at: float | None = None
    last_sent = 0.0

    def send(messages: list[Message]) -> None:
        for message in messages:
            port.write(encode(message))
        port.flush()

    while True:
        now = clock()
        if pairing.result is not None:
            done_at = done_at if done_at is not None else now
            if now - done_at >= LINGER_S:
                return pairing.result
        elif now >= deadline:
            raise PairingError(_timeout_reason(pairing, timeout))
        elif cancelled():
            send([pairing.reject("the operator cancelled at the other box")] * ABORT_COPIES)
            raise PairingError("cancelled: nothing was written")
        if now - last_sent >= RESEND_S:
            send(pairing.pending())
            last_sent = now
        packets, _noise = decoder.feed(port.read(max(1, port.in_waiting)))
        for packet in packets:
            message = decode(packet)
            if message is None:
                continue
            try:
                send(pairing.receive(message))
            except PairingError as exc:
                send([pairing.reject(str(exc))] * ABORT_COPIES)
                raise
        verdict = ask(pairing.code) if pairing.code is not None and not asked else None
        if verdict is not None:
            asked = True
            if not verdict:
                send([pairing.reject()] * ABORT_COPIES)
                raise PairingError("the codes differ: pairing refused; nothing was written")
            try:
                send(pairing.confirm())
            except PairingError as exc:  # the peer's CONFIRM came first and its settings conflict with ours
                send([pairing.reject(str(exc))] * ABORT_COPIES)
                raise
            last_sent = clock()


def _timeout_reason(pairing: Pairing, timeout: float) -> str:
    if pairing.peer_id is None:
        return (f"no answer from another box on the cable within {timeout:g} s: is the crossover cable "
                "plugged into both, and is the other box pairing too?")
    if pairing.code is None:
        return f"{pairing.peer_name} answered but the key agreement did not finish within {timeout:g} s"
    return f"{pairing.peer_name} did not confirm the code within {timeout:g} s"


def save_pairing(result: PairingResult, key_file: Path, record: Path, own: dict[str, Any]) -> None:
    """Write the cluster key (mode 0600), then the pairing record, each atomically.

    The record names the peer, its settings and the key's fingerprint (never the key).
    """
    record.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(key_file, f"1 {result.cluster_key.hex()}\n".encode(), mode=0o600)
    os.chmod(key_file, 0o600)
    write_atomically(record, json.dumps({
        "peer": result.peer_name, "peer_settings": result.peer_settings, "own_settings": own,
        "fingerprint": result.fingerprint, "paired_at": round(time.time()), "code": result.code,
    }, indent=1).encode())
