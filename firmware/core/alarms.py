"""Alarms: what is wrong right now, and who raised it.

An :class:`Alarm` has a stable identity, its ``key`` (source and level), and a
text for people. The text may carry live values ("inlet CRITICAL: 55 °C …")
and may be reworded freely: silencing, acknowledging and clearing go by key,
never by text.
"""

from __future__ import annotations

from dataclasses import dataclass

ALARM_LEVELS = ("warning", "critical", "unknown")


@dataclass(frozen=True)
class Alarm:
    """One active alarm.

    ``source`` names what raised it (``peer``, ``link:serial``, ``sensor:psu1``,
    ``relays:trunk`` …); ``level`` is one of :data:`ALARM_LEVELS`.
    """

    source: str
    level: str
    text: str

    @property
    def key(self) -> str:
        """The identity that survives rewording and live values: source and level."""
        return f"{self.source}/{self.level}"

    def to_json(self) -> dict[str, str]:
        """The alarm as it appears in the status snapshot."""
        return {"key": self.key, "source": self.source, "level": self.level, "text": self.text}
