"""The interfaces every panel driver implements, so screens and menus never know the hardware.

A board profile names one display, one or more key sources and one set of
indicators (LEDs and buzzer), each by import path. Drivers:

- `Display`: a character display takes lines of text (already transliterated
  and padded by the renderer); a graphic display takes a PIL image of its
  exact size and mode. ``frame()`` returns what is on the glass now as a PIL
  image (for the simulator's PNG and golden tests).
- `KeySource`: turns GPIO buttons, a rotary encoder or a serial keypad into
  normalised `KeyEvent`s and hands them to one callback, from whatever thread
  the hardware uses (the panel queues them).
- `Indicators`: role LED, fault LED, buzzer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Literal

from PIL import Image

__all__ = ["Blink", "Display", "Indicators", "Key", "KeyAction", "KeyCallback", "KeyEvent", "KeySource"]


class Key(Enum):
    """The normalised keys. Panels without LEFT/RIGHT never send them; an encoder turns into UP/DOWN."""

    UP = "up"
    DOWN = "down"
    LEFT = "left"
    RIGHT = "right"
    ENTER = "enter"
    BACK = "back"


KeyAction = Literal["press", "release", "hold"]
"""``hold`` is sent once when a key has been held for the source's hold time (still down)."""


@dataclass(frozen=True)
class KeyEvent:
    """One key event; ``at`` is ``time.monotonic()`` when the hardware reported it."""

    key: Key
    action: KeyAction
    at: float


KeyCallback = Callable[[KeyEvent], None]

Blink = Literal["off", "on", "slow", "fast"]
"""LED modes: ``slow`` is 1 Hz (STANDBY), ``fast`` 4 Hz (alarm)."""


class Display(ABC):
    """A display the renderer draws on."""

    kind: Literal["text", "graphic"]
    columns: int = 0
    """Characters per line (text displays)."""
    rows: int = 0
    """Lines (text displays)."""
    width: int = 0
    """Pixels across (graphic displays)."""
    height: int = 0
    """Pixels down (graphic displays)."""
    mode: str = "1"
    """PIL image mode the graphic display takes (``1`` or ``RGB``)."""

    @abstractmethod
    def show_text(self, lines: list[str]) -> None:
        """Text displays: put ``rows`` lines of exactly ``columns`` characters the display can show."""

    @abstractmethod
    def show_image(self, image: Image.Image) -> None:
        """Graphic displays: put an image of exactly ``width`` × ``height`` in ``mode``."""

    @abstractmethod
    def set_backlight(self, level: int) -> None:
        """Backlight 0 (off) to 100 (full)."""

    @abstractmethod
    def frame(self) -> Image.Image:
        """What is on the glass now, as an image (the HD44780 ROM font for text displays)."""

    def close(self) -> None:
        """Release the device (the default has nothing to release)."""


class KeySource(ABC):
    """Hardware keys, normalised."""

    @property
    def key_names(self) -> tuple[str, ...]:
        """The names of the keys this source can send (`Key` values); none unless the source says so."""
        return ()

    @abstractmethod
    def start(self, callback: KeyCallback) -> None:
        """Begin delivering events to ``callback`` (from any thread)."""

    def close(self) -> None:
        """Stop delivering events and release the hardware."""


class Indicators(ABC):
    """Role LED, fault LED and buzzer."""

    @abstractmethod
    def set_role(self, mode: Blink) -> None:
        """Role LED: ``on`` when ACTIVE, ``slow`` when STANDBY, ``off`` otherwise."""

    @abstractmethod
    def set_fault(self, mode: Blink) -> None:
        """Fault LED: ``on`` or ``fast`` while alarms are active."""

    @abstractmethod
    def set_buzzer(self, on: bool) -> None:
        """Buzzer on (alarm not silenced) or off."""

    def close(self) -> None:
        """Everything off and the hardware released."""
