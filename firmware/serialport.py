"""The serial port of a USB serial device, opened and watched the same way by every driver.

This module's one job is the port handling that the serial heartbeat link
and the drivers of USB serial devices (the CH340 relay board, the
Crystalfontz panel module) share:
open the port 8N1 without flow control and exclusively, tell whether an open
port is still the plugged-in device (not hung up, and its path still names
the same device node after an unplug and replug), close it without raising,
and turn a pyserial or OS error into a short reason for the log and errors.
What a driver does about a lost port (reopen at once, retry on the next
command) stays in the driver.
"""

from __future__ import annotations

import os
import select

import serial

__all__ = ["close_quietly", "open_port", "port_gone", "reason"]

_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def open_port(path: str, baudrate: int, read_timeout: float, write_timeout: float) -> serial.Serial:
    """Open ``path`` at ``baudrate`` 8N1, no flow control, exclusively; pyserial's errors pass through."""
    return serial.Serial(
        path, baudrate, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE, timeout=read_timeout, write_timeout=write_timeout,
        xonxoff=False, rtscts=False, dsrdtr=False, exclusive=True,
    )


def port_gone(port: serial.Serial, path: str) -> str | None:
    """Why the open ``port`` is no longer the device plugged in at ``path`` (hung up, path gone or re-pointed).

    None while it still is. Never blocks.
    """
    try:
        fd = port.fileno()
        poller = select.poll()
        poller.register(fd, 0)  # hang-up and error events are always reported
        if any(events & _GONE for _, events in poller.poll(0)):
            return "device hung up"
        if os.stat(path).st_rdev != os.fstat(fd).st_rdev:
            return f"{path} now names another device"
    except FileNotFoundError:
        return f"{path} vanished"
    except (OSError, ValueError, serial.SerialException) as exc:
        return f"port check failed: {reason(exc)}"
    return None


def close_quietly(port: serial.Serial | None) -> None:
    """Close ``port`` (if any), ignoring the errors of a port already gone."""
    if port is not None:
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass


def reason(exc: BaseException) -> str:
    """A short one-line reason from a pyserial or OS error."""
    text = str(exc)
    if "exclusively lock" in text:
        return "in use by another process"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return text.splitlines()[0] if text else type(exc).__name__
