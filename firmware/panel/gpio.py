"""Front-panel keys and indicators on GPIO lines, through gpiozero.

The board profile names the pin factory (``pin_factory = "lgpio"`` on a
Raspberry Pi, ``"mock"`` in the simulator); it comes from the process's
registry, `firmware.gpio`, like the GPIO relays'. Tests may pass a gpiozero
``Factory`` object instead of a name.

- `GpioKeys`: one push button per key, wired from the GPIO to ground against
  the internal pull-up (``pull_up = true``), or to 3V3 against an external
  pull-down (``pull_up = false``).
- `EncoderKeys`: a quadrature rotary encoder (A/B to GPIO, C to ground) whose
  detents become UP/DOWN, its push button ENTER, and an optional BACK button.
- `GpioIndicators`: role LED, fault LED and buzzer outputs.

Every class claims its pins in the constructor, so a pin already in use or a
pin factory that cannot start here is reported when the board profile is
loaded, naming the pin or the factory. The key sources say how they are
wired (``pin_factory``, ``button_pins``, ``pull_up``, the encoder's ``a``,
``b`` and ``clockwise_key``): whatever drives the lines from outside (a
finger, or a simulated one on mock pins) needs nothing more, and nothing
here knows which it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import LED, Button, Buzzer, Device, RotaryEncoder
from gpiozero.pins import Factory

from firmware.errors import HardwareError
from firmware.gpio import resolve_factory
from firmware.panel.base import (
    Blink,
    Indicators,
    Key,
    KeyAction,
    KeyCallback,
    KeyEvent,
    KeySource,
)

__all__ = ["BLINK_TIMES", "EncoderKeys", "GpioError", "GpioIndicators", "GpioKeys"]

KEY_NAMES = tuple(key.value for key in Key)
BLINK_TIMES: dict[str, tuple[float, float]] = {"slow": (0.5, 0.5), "fast": (0.125, 0.125)}
"""(on, off) seconds of the blinking LED modes: ``slow`` 1 Hz, ``fast`` 4 Hz."""


class GpioError(HardwareError):
    """A GPIO panel device cannot be claimed or driven; the message names the pin or factory."""


def check_pin(pin: object, what: str) -> int:
    """A GPIO number from the profile, or ValueError naming ``what``."""
    if isinstance(pin, bool) or not isinstance(pin, int) or pin < 0:
        raise ValueError(f"{what} must be a GPIO number (BCM numbering), not {pin!r}")
    return pin


def claim(make: Callable[[], Device], pin: int, what: str) -> Device:
    """Construct a gpiozero device, turning its error (pin in use, no such pin) into one naming the pin."""
    try:
        return make()
    except Exception as exc:
        raise GpioError(f"GPIO {pin} ({what}): {exc}") from None


def close_all(devices: list[Device]) -> None:
    """Close gpiozero devices, never raising (used on close and on a failed constructor)."""
    for device in devices:
        try:
            device.close()
        except Exception:
            pass


class _ButtonKeys(KeySource):
    """What GPIO key sources share: buttons by key, event delivery, and how they are wired."""

    def __init__(self, factory: Factory, pull_up: bool, hold_time: float) -> None:
        if not isinstance(pull_up, bool):
            raise ValueError(f"pull_up must be true or false, not {pull_up!r}")
        if isinstance(hold_time, bool) or not isinstance(hold_time, (int, float)) or hold_time <= 0:
            raise ValueError(f"hold_time must be a positive number of seconds, not {hold_time!r}")
        self.pull_up = pull_up
        self.hold_time = float(hold_time)
        self._factory = factory
        self._callback: KeyCallback | None = None
        self._lock = threading.Lock()
        self._devices: list[Device] = []
        self._key_pins: dict[Key, int] = {}

    @property
    def pin_factory(self) -> Factory:
        """The gpiozero pin factory the pins are claimed from."""
        return self._factory

    @property
    def button_pins(self) -> dict[Key, int]:
        """The GPIO each push button is wired to (with ``pull_up``, a pressed button pulls its line low)."""
        return dict(self._key_pins)

    @property
    def closed(self) -> bool:
        """Whether ``close`` has released the pins."""
        return not self._devices

    def start(self, callback: KeyCallback) -> None:
        """Begin delivering events to ``callback`` (from gpiozero's threads); earlier events are dropped."""
        with self._lock:
            self._callback = callback

    def close(self) -> None:
        """Stop delivering events and release the pins."""
        with self._lock:
            self._callback = None
        close_all(self._devices)
        self._devices = []

    def _emit(self, key: Key, action: KeyAction) -> None:
        with self._lock:
            callback = self._callback
        if callback is not None:
            callback(KeyEvent(key, action, time.monotonic()))

    def _add_button(self, key: Key, pin: int, bounce_ms: int) -> None:
        bounce = bounce_ms / 1000 if bounce_ms else None
        button = claim(lambda: Button(pin, pull_up=self.pull_up, bounce_time=bounce, hold_time=self.hold_time,
                                      hold_repeat=False, pin_factory=self._factory), pin, f"{key.value} key")
        self._devices.append(button)
        self._key_pins[key] = pin
        button.when_pressed = lambda: self._emit(key, "press")
        button.when_released = lambda: self._emit(key, "release")
        button.when_held = lambda: self._emit(key, "hold")


def _key(name: object, allowed: tuple[str, ...]) -> Key:
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"unknown key {name!r}: the keys are {', '.join(allowed)}")
    return Key(name)


class GpioKeys(_ButtonKeys):
    """One push button per key on GPIO lines: press, release, and one ``hold`` after ``hold_time``."""

    def __init__(self, pins: dict[str, int], pull_up: bool = True, hold_time: float = 1.0, bounce_ms: int = 20,
                 pin_factory: str | Factory = "lgpio") -> None:
        """Claim one input per key, e.g. ``pins = {up = 5, down = 6, enter = 13, back = 19}``."""
        if not isinstance(pins, dict) or not pins:
            raise ValueError(f"pins must map key names ({', '.join(KEY_NAMES)}) to GPIO numbers, not {pins!r}")
        if isinstance(bounce_ms, bool) or not isinstance(bounce_ms, int) or not 0 <= bounce_ms <= 1000:
            raise ValueError(f"bounce_ms must be an integer 0..1000, not {bounce_ms!r}")
        keys = {_key(name, KEY_NAMES): check_pin(pin, f"pins.{name}") for name, pin in pins.items()}
        _check_distinct({f"pins.{key.value}": pin for key, pin in keys.items()})
        super().__init__(resolve_factory(pin_factory), pull_up, hold_time)
        self.pins = {key.value: pin for key, pin in keys.items()}
        self.bounce_ms = bounce_ms
        try:
            for key, pin in keys.items():
                self._add_button(key, pin, bounce_ms)
        except Exception:
            self.close()
            raise

    @property
    def key_names(self) -> tuple[str, ...]:
        """The keys this source has: one per button."""
        return tuple(self.pins)


class EncoderKeys(_ButtonKeys):
    """A rotary encoder with push button (and an optional BACK button) as normalised keys.

    Each detent is one key tap (``press`` then ``release``): clockwise is
    DOWN and counter-clockwise UP, so turning right walks down a menu list
    and raises nothing; ``reverse = true`` swaps them for encoders wired the
    other way round. The push button is ENTER (press, release, and ``hold``
    once after ``hold_time``, which screens use for hold-to-confirm); the
    optional ``back`` pin is a separate BACK button. Encoder A and B always
    use the internal pull-ups (the common pin goes to ground); ``pull_up``
    applies to the buttons.
    """

    def __init__(self, a: int, b: int, button: int | None = None, back: int | None = None, pull_up: bool = True,
                 hold_time: float = 1.0, reverse: bool = False, bounce_ms: int = 20,
                 pin_factory: str | Factory = "lgpio") -> None:
        """Claim the encoder's A and B lines and the buttons' lines."""
        named = {"a": check_pin(a, "a"), "b": check_pin(b, "b")}
        if button is not None:
            named["button"] = check_pin(button, "button")
        if back is not None:
            named["back"] = check_pin(back, "back")
        _check_distinct(named)
        if not isinstance(reverse, bool):
            raise ValueError(f"reverse must be true or false, not {reverse!r}")
        if isinstance(bounce_ms, bool) or not isinstance(bounce_ms, int) or not 0 <= bounce_ms <= 1000:
            raise ValueError(f"bounce_ms must be an integer 0..1000, not {bounce_ms!r}")
        super().__init__(resolve_factory(pin_factory), pull_up, hold_time)
        self.a, self.b, self.button, self.back = a, b, button, back
        self.reverse = reverse
        self._clockwise, self._counter = (Key.UP, Key.DOWN) if reverse else (Key.DOWN, Key.UP)
        try:
            # No bounce time on A/B: gpiozero's state machine already rejects contact jitter.
            encoder = claim(lambda: RotaryEncoder(a, b, max_steps=0, pin_factory=self._factory), a,
                            f"encoder A, with B on GPIO {b}")
            self._devices.append(encoder)
            encoder.when_rotated_clockwise = lambda: self._tap(self._clockwise)
            encoder.when_rotated_counter_clockwise = lambda: self._tap(self._counter)
            if button is not None:
                self._add_button(Key.ENTER, button, bounce_ms)
            if back is not None:
                self._add_button(Key.BACK, back, bounce_ms)
        except Exception:
            self.close()
            raise

    @property
    def key_names(self) -> tuple[str, ...]:
        """The keys this source has: UP and DOWN from the encoder, ENTER and BACK if their buttons are wired."""
        return ("up", "down") + (("enter",) if self.button is not None else ()) + \
               (("back",) if self.back is not None else ())

    @property
    def clockwise_key(self) -> Key:
        """The key a clockwise detent sends: DOWN, or UP with ``reverse``."""
        return self._clockwise

    def _tap(self, key: Key) -> None:
        self._emit(key, "press")
        self._emit(key, "release")


def _check_distinct(pins: dict[str, int]) -> None:
    """ValueError naming both keys if one GPIO is given twice."""
    seen: dict[int, str] = {}
    for name, pin in pins.items():
        if pin in seen:
            raise ValueError(f"{name} and {seen[pin]} both use GPIO {pin}")
        seen[pin] = name


class GpioIndicators(Indicators):
    """Role LED, fault LED and buzzer on GPIO outputs; an output without a pin is simply absent.

    LED modes: ``on``, ``off``, ``slow`` (0.5 s on / 0.5 s off) and ``fast``
    (0.125 s / 0.125 s). Setting the mode an output already has changes
    nothing, so a status refresh never restarts a blink cycle.
    """

    def __init__(self, role_pin: int | None = None, fault_pin: int | None = None, buzzer_pin: int | None = None,
                 active_high: bool = True, pin_factory: str | Factory = "lgpio") -> None:
        """Claim the outputs, all off."""
        named = {name: check_pin(pin, name) for name, pin in
                 (("role_pin", role_pin), ("fault_pin", fault_pin), ("buzzer_pin", buzzer_pin)) if pin is not None}
        _check_distinct(named)
        if not isinstance(active_high, bool):
            raise ValueError(f"active_high must be true or false, not {active_high!r}")
        self.role_pin, self.fault_pin, self.buzzer_pin = role_pin, fault_pin, buzzer_pin
        self.active_high = active_high
        self._factory = resolve_factory(pin_factory)
        self._lock = threading.Lock()
        self._modes: dict[str, Blink] = {"role": "off", "fault": "off"}
        self._buzzer_on = False
        self._outputs: dict[str, Any] = {}
        try:
            for name, pin, cls in (("role", role_pin, LED), ("fault", fault_pin, LED), ("buzzer", buzzer_pin, Buzzer)):
                if pin is not None:
                    self._outputs[name] = claim(
                        lambda cls=cls, pin=pin: cls(pin, active_high=active_high, initial_value=False,
                                                     pin_factory=self._factory), pin, f"{name} output")
        except Exception:
            close_all(list(self._outputs.values()))
            raise

    @property
    def role(self) -> Blink:
        """The role LED's mode."""
        return self._modes["role"]

    @property
    def fault(self) -> Blink:
        """The fault LED's mode."""
        return self._modes["fault"]

    @property
    def buzzer(self) -> bool:
        """Whether the buzzer is sounding."""
        return self._buzzer_on

    def set_role(self, mode: Blink) -> None:
        """Role LED: ``on`` ACTIVE, ``slow`` STANDBY, ``off`` otherwise."""
        self._set_led("role", mode)

    def set_fault(self, mode: Blink) -> None:
        """Fault LED: ``on`` or ``fast`` while alarms are active."""
        self._set_led("fault", mode)

    def set_buzzer(self, on: bool) -> None:
        """Buzzer on or off (steady)."""
        with self._lock:
            if bool(on) == self._buzzer_on:
                return
            self._buzzer_on = bool(on)
            device = self._outputs.get("buzzer")
            if device is not None:
                device.value = self._buzzer_on

    def close(self) -> None:
        """Everything off and the pins released."""
        with self._lock:
            for device in self._outputs.values():
                try:
                    device.off()
                except Exception:
                    pass
            close_all(list(self._outputs.values()))
            self._outputs = {}
            self._modes = {"role": "off", "fault": "off"}
            self._buzzer_on = False

    def _set_led(self, name: str, mode: Blink) -> None:
        if mode not in ("off", "on", "slow", "fast"):
            raise ValueError(f"{name} LED mode must be off, on, slow or fast, not {mode!r}")
        with self._lock:
            if self._modes[name] == mode:
                return
            self._modes[name] = mode
            led = self._outputs.get(name)
            if led is None:
                return
            if mode == "on":
                led.on()
            elif mode == "off":
                led.off()
            else:
                on_time, off_time = BLINK_TIMES[mode]
                led.blink(on_time=on_time, off_time=off_time, background=True)
