"""The sim-cfa635 board's front panel: the real Crystalfontz drivers on an emulated module.

The board profile names the three drivers below instead of
``firmware.panel.cfa.adapters``'s. As a real profile's display, keys and LEDs
share one USB port, they share one `CfaEmulator` (``emulator`` names it,
"panel" by default): the first of them to open plugs it in, the last one to
close unplugs it. The emulators belong to the drivers that use them; nothing
outlives them but a safety net that closes a forgotten one at exit.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from firmware.panel.cfa.adapters import CfaDisplay, CfaIndicators, CfaKeys
from sim.cfa635 import CfaEmulator

__all__ = ["EmulatedCfaDisplay", "EmulatedCfaIndicators", "EmulatedCfaKeys", "acquire_emulator", "release_emulator"]

_lock = threading.Lock()
_emulators: dict[str, list[Any]] = {}  # name → [CfaEmulator, number of drivers using it]


def acquire_emulator(name: str = "panel", model: str = "cfa635") -> CfaEmulator:
    """The emulator called ``name``, plugged in by the first driver that asks; pair with `release_emulator`.

    ValueError if it is already running as another model.
    """
    with _lock:
        entry = _emulators.get(name)
        if entry is None:
            emulator = CfaEmulator(model)
            atexit.register(emulator.close)  # idempotent: a driver that was never closed leaves no pty behind
            _emulators[name] = [emulator, 1]
            return emulator
        if entry[0].model != model:
            raise ValueError(f"emulator {name!r} is already a {entry[0].model}, not a {model}")
        entry[1] += 1
        return entry[0]


def release_emulator(emulator: CfaEmulator) -> None:
    """Drop one driver's use of ``emulator``; the last one closes it."""
    with _lock:
        name = next((key for key, entry in _emulators.items() if entry[0] is emulator), None)
        if name is None:
            return
        _emulators[name][1] -= 1
        if _emulators[name][1] > 0:
            return
        del _emulators[name]
    emulator.close()


class _OnEmulator:
    """What the emulated drivers share: the emulator they use from before they open until after they close.

    Listed before the real driver class, so ``super()`` is that driver.
    """

    emulator: CfaEmulator
    _closed: bool

    def __init__(self, emulator: str = "panel", model: str = "cfa635", **options: Any) -> None:
        """Open the real driver on the port of the shared emulator called ``emulator``."""
        self.emulator = acquire_emulator(emulator, model)
        try:
            super().__init__(port=self.emulator.port, model=model, **options)  # type: ignore[call-arg]
        except BaseException:
            release_emulator(self.emulator)
            raise

    def close(self) -> None:
        """Close the real driver, then let go of the emulator. Idempotent."""
        if not self._closed:
            super().close()  # type: ignore[misc]
            release_emulator(self.emulator)


class EmulatedCfaDisplay(_OnEmulator, CfaDisplay):
    """The real CFA display driver, on the board's emulated module."""


class EmulatedCfaIndicators(_OnEmulator, CfaIndicators):
    """The real CFA LED driver, on the board's emulated module."""


class EmulatedCfaKeys(_OnEmulator, CfaKeys):
    """The real CFA keypad driver on the emulated module; `inject` presses the module's keys."""

    def inject(self, key: str, action: str) -> None:
        """Press or release a key on the emulated module: it sends the key report over the wire."""
        if key not in self.key_names:
            raise ValueError(f"unknown key {key!r}: the keys are {', '.join(self.key_names)}")
        (self.emulator.press if action == "press" else self.emulator.release)(key)
