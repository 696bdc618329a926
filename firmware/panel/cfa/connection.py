"""One serial connection to a Crystalfontz module (`CfaPanel`), shared per port by the adapters.

The host sends one command at a time and waits up to 250 ms for the
response (``0x40|cmd``) or error (``0xC0|cmd``); key reports (``0x80``)
arrive at any time (the packets are in ``protocol``).

Threads and latency. One `CfaPanel` per port owns two threads:

- the *reader* reads the port, decodes packets, hands responses to the
  command waiting for them and dispatches reports to listeners; when the
  port fails (USB unplugged) it closes it and polls every
  ``reopen_interval`` to open it again, like ``firmware.core.links``;
- the *sync* thread pushes the wanted state (text rows, backlight,
  contrast, LED levels, key masks, host watchdog) to the module, one
  acknowledged command at a time, and drives LED blinking. After a
  reconnect it forgets what the module shows and re-sends everything.

So the ``set_*`` methods never wait for the module: they record the wanted
state and return at once (``flush`` waits until the module has acknowledged
it). Only the direct calls `CfaPanel.command`, `ping` and
`set_host_watchdog` wait for the module's answer and raise `CfaError`
subclasses.

A board profile's display, keys and LEDs are three drivers built one by one,
but one USB port carries them all: `acquire_panel` and `release_panel` share
one `CfaPanel` per port, reference-counted, for as long as one of them uses
it.

The module is a little over 600 lines because `CfaPanel` is one connection
whose two threads share one set of state; split, each half would need the
other's locks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from firmware import serialport
from firmware.errors import HardwareError
from firmware.panel.base import Blink
from firmware.panel.cfa.protocol import (
    ALL_KEYS_MASK,
    CMD_BACKLIGHT,
    CMD_CONTRAST,
    CMD_HOST_WATCHDOG,
    CMD_KEY_MASKS,
    CMD_LED,
    CMD_PING,
    CMD_TEXT,
    KIND_ERROR,
    KIND_REPORT,
    KIND_RESPONSE,
    LED_COLOURS,
    LedColour,
    Packet,
    PacketDecoder,
    encode_packet,
    get_model,
    led_indexes,
)

__all__ = [
    "CfaDisconnected",
    "CfaError",
    "CfaPanel",
    "CfaRejected",
    "CfaTimeout",
    "acquire_panel",
    "clamp",
    "release_panel",
]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # how often the reader looks up from a silent port (stop, lost write)
STALE_CHECK_S = 0.5  # how often a silent port is checked for a vanished device node
WRITE_TIMEOUT_S = 0.5
_BLINK_PERIOD_S = {"slow": 1.0, "fast": 0.25}  # 1 Hz and 4 Hz, half on and half off


# ------------------------------------------------------------------------- errors


class CfaError(HardwareError, OSError):
    """A Crystalfontz module that cannot be opened, does not answer or refuses a command."""


class CfaTimeout(CfaError):
    """No response after every try."""


class CfaRejected(CfaError):
    """The module answered with an error packet (0xC0|cmd)."""


class CfaDisconnected(CfaError):
    """The port is not open (device unplugged); the reader is polling to reopen it."""


# ------------------------------------------------------------------------- the connection

ReportListener = Callable[[Packet], None]
ConnectionListener = Callable[[bool], None]
_Slot = tuple[Any, ...]


@dataclass
class _Led:
    colour: str
    mode: Blink
    level: int


class CfaPanel:
    """One connection to a Crystalfontz module: commands, reports, wanted state and reconnects.

    Counters (read-only properties): ``retries`` (commands re-sent after no
    answer), ``bad_crc`` (received packets dropped for a bad CRC or length),
    ``reconnects`` (successful reopens after a lost port), ``timeouts``
    (commands that got no answer at all) and ``errors`` (state pushes that
    failed).
    """

    def __init__(self, port: str, model: str = "cfa635", baudrate: int | None = None, *,
                 timeout: float = 0.25, tries: int = 3, reopen_interval: float = 0.1,
                 retry_interval: float = 1.0) -> None:
        """Open ``port`` (CfaError naming the port and reason if impossible) and start the threads.

        ``baudrate`` defaults to the model's (115200 for the CFA-635, 19200 for
        the CFA-533). ``timeout`` is the wait for each response, ``tries`` how
        many times a command is sent, ``reopen_interval`` how often a lost port
        is reopened and ``retry_interval`` how long the state push rests after
        the module stopped answering.
        """
        if not isinstance(port, str) or not port.strip():
            raise ValueError(f"port must be a serial device path such as /dev/ttyUSB0, not {port!r}")
        self.model = get_model(model)
        if baudrate is None:
            baudrate = self.model.baudrate
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive integer, not {baudrate!r}")
        if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
            raise ValueError(f"tries must be an integer >= 1, not {tries!r}")
        if not timeout > 0 or not reopen_interval > 0 or not retry_interval > 0:
            raise ValueError("timeout, reopen_interval and retry_interval must be > 0")
        self.port = port
        self.baudrate = baudrate
        self.timeout = float(timeout)
        self.tries = tries
        self.reopen_interval = float(reopen_interval)
        self.retry_interval = float(retry_interval)
        self.name = f"{self.model.name} panel on {port}"

        self._cmd_lock = threading.Lock()  # one command at a time
        self._port_lock = threading.Lock()  # writes vs. the reader closing the port
        self._cond = threading.Condition()  # guards the state below; wakes the sync thread
        self._stop = threading.Event()
        self._decoder = PacketDecoder(self.model.max_data)
        self._serial: serial.Serial | None = None
        self._lost: str | None = None  # set by a failed write; the reader closes the port
        self._generation = 0  # bumped on every open and close
        self._pending: int | None = None  # command awaiting its response
        self._response: Packet | None = None
        self._answered = threading.Event()
        self._want: dict[_Slot, tuple[int, bytes]] = {}
        self._have: dict[_Slot, tuple[int, bytes]] = {}
        self._leds: dict[int, _Led] = {}
        self._blink_epoch = time.monotonic()
        self._rest_until = 0.0
        self._failing = False
        self._report_listeners: list[ReportListener] = []
        self._connection_listeners: list[ConnectionListener] = []
        self._retries = self._timeouts = self._reconnects = self._errors = 0

        port_obj = self._open()
        if isinstance(port_obj, str):
            raise CfaError(f"{self.name}: cannot open {port}: {port_obj}")
        self._attach(port_obj)
        self._reader = threading.Thread(target=self._read_loop, name=f"cfa-reader-{port}", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name=f"cfa-sync-{port}", daemon=True)
        self._reader.start()
        self._syncer.start()

    # ----------------------------------------------------------------- properties

    @property
    def connected(self) -> bool:
        """Whether the port is open (the module may still fail to answer; see ``timeouts``)."""
        return self._serial is not None

    @property
    def retries(self) -> int:
        """Commands re-sent because no answer came in time."""
        return self._retries

    @property
    def bad_crc(self) -> int:
        """Received packets dropped for a bad CRC, a bad length or garbage."""
        return self._decoder.bad_packets

    @property
    def reconnects(self) -> int:
        """Times the port was reopened after it was lost."""
        return self._reconnects

    @property
    def timeouts(self) -> int:
        """Commands that were not answered after every try."""
        return self._timeouts

    @property
    def errors(self) -> int:
        """State pushes that failed (timed out or were rejected)."""
        return self._errors

    def stats(self) -> dict[str, Any]:
        """The connection state and counters as plain data (for the status snapshot)."""
        return {"port": self.port, "model": self.model.name, "connected": self.connected,
                "retries": self.retries, "bad_crc": self.bad_crc, "reconnects": self.reconnects,
                "timeouts": self.timeouts, "errors": self.errors}

    # ----------------------------------------------------------------- commands

    def command(self, cmd: int, data: bytes = b"", *, tries: int | None = None,
                timeout: float | None = None) -> bytes:
        """Send command ``cmd`` and return the response data, retrying when no answer comes.

        Raises CfaTimeout after ``tries`` unanswered sends, CfaRejected if the
        module answers with an error packet, CfaDisconnected if the port is not
        open. Blocks for at most ``tries`` × ``timeout``.
        """
        if not 0 <= cmd <= 0x3F:
            raise ValueError(f"command must be 0..63, not {cmd!r}")
        data = bytes(data)
        if len(data) > self.model.max_data:
            raise ValueError(f"command {cmd}: {len(data)} data bytes, the {self.model.name} takes "
                             f"at most {self.model.max_data}")
        tries = self.tries if tries is None else tries
        timeout = self.timeout if timeout is None else timeout
        packet = encode_packet(cmd, data)
        with self._cmd_lock:
            try:
                for attempt in range(tries):
                    if self._stop.is_set():
                        raise CfaDisconnected(f"{self.name}: closed")
                    if attempt:
                        self._retries += 1
                    with self._cond:
                        self._pending, self._response = cmd, None
                        self._answered.clear()
                    self._write(packet)
                    if not self._answered.wait(timeout):
                        continue
                    response = self._response
                    if response is None:
                        raise CfaDisconnected(f"{self.name}: port lost while waiting for command {cmd}")
                    if response.kind == KIND_ERROR:
                        raise CfaRejected(f"{self.name}: module rejected command {cmd} "
                                          f"(data {data.hex(' ') or 'none'})")
                    return response.data
                self._timeouts += 1
                raise CfaTimeout(f"{self.name}: no answer to command {cmd} after {tries} tries of "
                                 f"{timeout * 1000:.0f} ms")
            finally:
                with self._cond:
                    self._pending = None

    def ping(self, payload: bytes = b"") -> bytes:
        """Ping (command 0); the module echoes ``payload`` (up to 16 bytes) back."""
        return self.command(CMD_PING, payload)

    def set_host_watchdog(self, seconds: int) -> None:
        """Arm the module's host watchdog (1–255 s; 0 = off) and wait for the module's answer.

        The setting is also kept and re-sent after a reconnect. Raises
        CfaError if the module is unplugged or does not answer (it is then
        sent when the module is back).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 255:
            raise ValueError(f"host watchdog must be 0 (off) to 255 seconds, not {seconds!r}")
        value = (CMD_HOST_WATCHDOG, bytes((seconds,)))
        self._set_want(("watchdog",), value)
        self.command(*value)
        with self._cond:
            if self._want.get(("watchdog",)) == value:
                self._have[("watchdog",)] = value
            self._cond.notify_all()

    def clear(self) -> None:
        """Want every row blank (sent as rows of spaces, so the diffing stays exact)."""
        self.set_text([" " * self.model.columns] * self.model.rows)

    # ----------------------------------------------------------------- wanted state (never blocks)

    def set_text(self, lines: list[str]) -> None:
        """Want these rows on the glass; rows equal to what the module has are not re-sent.

        Each row is padded or cut to the width; characters outside printable
        ASCII become '?' (the module's ROM would show something else).
        """
        with self._cond:
            for row in range(self.model.rows):
                text = lines[row] if row < len(lines) else ""
                text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
                text = text[:self.model.columns].ljust(self.model.columns)
                self._want[("row", row)] = (CMD_TEXT, bytes((0, row)) + text.encode("ascii"))
            self._cond.notify_all()

    def text(self) -> list[str]:
        """The wanted rows (what the glass shows once the module has acknowledged them)."""
        with self._cond:
            rows = []
            for row in range(self.model.rows):
                value = self._want.get(("row", row))
                rows.append(value[1][2:].decode("ascii") if value else " " * self.model.columns)
            return rows

    def set_backlight(self, level: int) -> None:
        """Want the backlight at ``level`` (0–100; clamped)."""
        self._set_want(("backlight",), (CMD_BACKLIGHT, bytes((clamp(level, 100, "backlight"),))))

    def set_contrast(self, level: int) -> None:
        """Want the contrast at ``level`` (0–254 on the CFA-635, 0–200 on the CFA-533; clamped)."""
        top = 254 if self.model.name == "cfa635" else 200
        self._set_want(("contrast",), (CMD_CONTRAST, bytes((clamp(level, top, "contrast"),))))

    def set_key_masks(self, press: int, release: int) -> None:
        """Want key reports for the keys in the ``press`` and ``release`` masks (bits as KEY_MASK_BITS)."""
        for mask in (press, release):
            if not 0 <= mask <= ALL_KEYS_MASK:
                raise ValueError(f"key mask must be 0..0x3F, not {mask!r}")
        self._set_want(("keys",), (CMD_KEY_MASKS, bytes((press, release))))

    def set_led(self, led: int, colour: LedColour, mode: Blink = "on", level: int = 100) -> None:
        """Want bicolour LED ``led`` (0 top … 3 bottom) in ``colour``, steady or blinking.

        ValueError on a model without LEDs (the CFA-533).
        """
        if not self.model.leds:
            raise ValueError(f"the {self.model.name} has no LEDs")
        led_indexes(led)
        if colour not in LED_COLOURS:
            raise ValueError(f"LED colour must be one of {sorted(LED_COLOURS)}, not {colour!r}")
        if mode not in ("off", "on", "slow", "fast"):
            raise ValueError(f"LED mode must be off, on, slow or fast, not {mode!r}")
        with self._cond:
            self._leds[led] = _Led(colour, mode, clamp(level, 100, "LED level"))
            self._update_leds(time.monotonic())
            self._cond.notify_all()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until the module has acknowledged the whole wanted state; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.connected and self._in_step()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ----------------------------------------------------------------- listeners

    def add_report_listener(self, listener: ReportListener) -> None:
        """Call ``listener(packet)`` from the reader thread for every report (0x80+) packet."""
        with self._cond:
            self._report_listeners.append(listener)

    def remove_report_listener(self, listener: ReportListener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with self._cond:
            if listener in self._report_listeners:
                self._report_listeners.remove(listener)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        """Call ``listener(connected)`` from the reader thread when the port is lost or reopened."""
        with self._cond:
            self._connection_listeners.append(listener)

    def remove_connection_listener(self, listener: ConnectionListener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with self._cond:
            if listener in self._connection_listeners:
                self._connection_listeners.remove(listener)

    def close(self) -> None:
        """Stop both threads and close the port. Idempotent."""
        self._stop.set()
        with self._cond:
            self._response = None
            self._answered.set()  # a command waiting for an answer gives up now
            self._cond.notify_all()
        for thread in (self._reader, self._syncer):
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        with self._port_lock:
            self._close_port()

    # ----------------------------------------------------------------- port handling

    def _open(self) -> serial.Serial | str:
        """The opened port, or the reason it cannot be opened."""
        try:
            return serialport.open_port(self.port, self.baudrate, READ_TIMEOUT_S, WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            return serialport.reason(exc)

    def _attach(self, port: serial.Serial) -> None:
        try:
            port.reset_input_buffer()  # stale reports from before we opened it
        except (serial.SerialException, OSError):
            pass
        self._decoder.reset()
        with self._cond:
            self._serial, self._lost = port, None
            self._generation += 1
            self._have.clear()  # a (re)plugged module shows its boot screen: re-send everything
            self._rest_until = 0.0
            self._cond.notify_all()

    def _write(self, packet: bytes) -> None:
        with self._port_lock:
            port = self._serial
            if port is None or self._lost:
                raise CfaDisconnected(f"{self.name}: not connected ({self._lost or 'port closed'})")
            try:
                port.write(packet)
            except serial.SerialTimeoutException:
                return  # counts as an unanswered try
            except (serial.SerialException, OSError) as exc:
                self._lost = f"write failed: {serialport.reason(exc)}"
                raise CfaDisconnected(f"{self.name}: {self._lost}") from None

    def _close_port(self) -> None:
        """Close the port; called with _port_lock held."""
        port, self._serial = self._serial, None
        serialport.close_quietly(port)

    def _drop(self, why: str) -> None:
        log.warning("%s: %s; reopening when it is back", self.name, why)
        with self._port_lock:
            self._close_port()
        with self._cond:
            self._generation += 1
            self._have.clear()
            if self._pending is not None:
                self._response = None
                self._answered.set()  # fail the waiting command now, not after its timeout
            self._cond.notify_all()
        self._notify_connection(False)

    # ----------------------------------------------------------------- reader thread

    def _read_loop(self) -> None:
        last_reason = ""
        next_check = 0.0
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                result = self._open()
                if isinstance(result, str):
                    if result != last_reason:
                        log.info("%s: cannot open %s: %s (retrying)", self.name, self.port, result)
                        last_reason = result
                    self._stop.wait(self.reopen_interval)
                    continue
                self._reconnects += 1  # the first open is in __init__
                self._attach(result)
                last_reason = ""
                log.info("%s: reopened", self.name)
                self._notify_connection(True)
                continue
            if self._lost:
                self._drop(self._lost)
                continue
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial on a descriptor closed under it.
                self._drop(f"read failed: {serialport.reason(exc)}")
                continue
            if data:
                self._receive(data)
            elif time.monotonic() >= next_check:
                next_check = time.monotonic() + STALE_CHECK_S
                gone = serialport.port_gone(port, self.port)
                if gone:
                    self._drop(gone)

    def _receive(self, data: bytes) -> None:
        for packet in self._decoder.feed(data):
            if packet.kind in (KIND_RESPONSE, KIND_ERROR):
                with self._cond:
                    if packet.code == self._pending:
                        self._response = packet
                        self._answered.set()
                    # else: a late answer to a try we already gave up on; ignore it
            elif packet.kind == KIND_REPORT:
                with self._cond:
                    listeners = list(self._report_listeners)
                for listener in listeners:
                    try:
                        listener(packet)
                    except Exception:  # a listener's bug must not stop the reader
                        log.exception("%s: report listener failed", self.name)

    def _notify_connection(self, connected: bool) -> None:
        with self._cond:
            listeners = list(self._connection_listeners)
        for listener in listeners:
            try:
                listener(connected)
            except Exception:
                log.exception("%s: connection listener failed", self.name)

    # ----------------------------------------------------------------- sync thread

    def _set_want(self, slot: _Slot, value: tuple[int, bytes]) -> None:
        with self._cond:
            self._want[slot] = value
            self._cond.notify_all()

    def _in_step(self) -> bool:
        return all(self._have.get(slot) == value for slot, value in self._want.items())

    def _update_leds(self, now: float) -> float | None:
        """Set the wanted LED levels for ``now``; return when the next blink edge is due (or None)."""
        next_edge: float | None = None
        for led, state in self._leds.items():
            lit = state.mode == "on"
            period = _BLINK_PERIOD_S.get(state.mode)
            if period is not None:
                half = period / 2
                phase = int((now - self._blink_epoch) / half)
                lit = phase % 2 == 0
                edge = self._blink_epoch + (phase + 1) * half
                next_edge = edge if next_edge is None else min(next_edge, edge)
            green_on, red_on = LED_COLOURS[state.colour]
            for index, on in zip(led_indexes(led), (green_on, red_on)):
                level = state.level if lit and on else 0
                self._want[("led", index)] = (CMD_LED, bytes((index, level)))
        return next_edge

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                next_edge = self._update_leds(now)
                todo = None
                if self.connected and now >= self._rest_until:
                    todo = next(((slot, value) for slot, value in self._want.items()
                                 if self._have.get(slot) != value), None)
                if todo is None:
                    waits = [t - now for t in (next_edge, self._rest_until) if t is not None and t > now]
                    self._cond.notify_all()  # flush() waiters: we may be in step
                    self._cond.wait(min(waits) if waits else None)
                    continue
                generation = self._generation
            self._push(generation, *todo)

    def _push(self, generation: int, slot: _Slot, value: tuple[int, bytes]) -> None:
        try:
            self.command(*value)
        except CfaDisconnected:
            return  # the reader reopens the port; everything is re-sent then
        except CfaRejected as exc:
            self._errors += 1
            log.warning("%s", exc)  # not retried: the same bytes would be refused again
        except CfaError as exc:
            self._errors += 1
            with self._cond:
                self._rest_until = time.monotonic() + self.retry_interval
                if not self._failing:
                    log.warning("%s; retrying every %g s", exc, self.retry_interval)
                self._failing = True
            return
        with self._cond:
            if generation == self._generation:
                self._have[slot] = value
            if self._failing:
                log.info("%s: answering again", self.name)
                self._failing = False
            self._cond.notify_all()


def clamp(level: int, top: int, what: str) -> int:
    """``level`` as an int within 0..top; TypeError naming ``what`` if it is not a number."""
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise TypeError(f"{what} must be a number 0..{top}, not {level!r}")
    return max(0, min(top, int(level)))


# ------------------------------------------------------------------------- shared connections

_registry_lock = threading.Lock()
_registry: dict[str, list[Any]] = {}  # port → [CfaPanel, reference count]


def acquire_panel(port: str, model: str = "cfa635", baudrate: int | None = None,
                  **options: Any) -> CfaPanel:
    """The shared `CfaPanel` for ``port``, opened on first use; pair with `release_panel`.

    ``options`` (timeout, tries, reopen_interval, retry_interval) apply when
    the port is first opened. A second user asking for another model or
    baud rate on the same port gets a ValueError.
    """
    wanted = get_model(model)
    with _registry_lock:
        entry = _registry.get(port)
        if entry is None:
            panel = CfaPanel(port, model, baudrate, **options)
            _registry[port] = [panel, 1]
            return panel
        panel = entry[0]
        if panel.model != wanted or (baudrate is not None and baudrate != panel.baudrate):
            raise ValueError(f"{port} is already open as a {panel.model.name} at {panel.baudrate} baud")
        entry[1] += 1
        return panel


def release_panel(panel: CfaPanel) -> None:
    """Drop one reference to a shared panel; the last one closes it."""
    with _registry_lock:
        entry = _registry.get(panel.port)
        if entry is None or entry[0] is not panel:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _registry[panel.port]
    panel.close()
