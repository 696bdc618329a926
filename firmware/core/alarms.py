"""Alarms: what is wrong right now, who raised it, and which of them an operator silenced.

An :class:`Alarm` has a stable identity, its ``key`` (source and level), and a
text for people. The text may carry live values ("inlet CRITICAL: 55 °C …")
and may be reworded freely: silencing, acknowledging and clearing go by key,
never by text. Components (the decision core, the relays, the sensors) each
register a source of alarms with the :class:`AlarmBoard`; the board answers
"which alarms are active" and "are they all silenced".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


AlarmSource = Callable[[], list[Alarm]]


class AlarmBoard:
    """Every component's active alarms, and the operator's silencing of them.

    A silenced alarm stays silenced while it is active; one that went away and
    comes back (or a new one) sounds again.
    """

    def __init__(self) -> None:
        self._sources: list[AlarmSource] = []
        self._silenced: set[tuple[str, str]] = set()  # (source, level)

    def add_source(self, source: AlarmSource) -> None:
        """Register a component's alarms (called on every status snapshot)."""
        self._sources.append(source)

    def active(self) -> list[Alarm]:
        """Every active alarm, in the order the sources were registered."""
        return [alarm for source in self._sources for alarm in source()]

    def all_silenced(self, alarms: list[Alarm]) -> bool:
        """Whether there are alarms and every one is silenced; forgets silencing of alarms that went away."""
        keys = {(a.source, a.level) for a in alarms}
        self._silenced &= keys
        return bool(alarms) and keys <= self._silenced

    def silence(self, alarms: list[Alarm]) -> None:
        """Silence these alarms (until each goes away)."""
        self._silenced = {(a.source, a.level) for a in alarms}

    def forget(self, source: str) -> None:
        """An alarm of ``source`` cleared: if it returns, it sounds again."""
        self._silenced = {(s, level) for s, level in self._silenced if s != source}

    def snapshot(self) -> dict[str, Any]:
        """The status snapshot's ``alarms`` (objects with key, source, level, text) and ``alarm_silenced``."""
        alarms = self.active()
        return {"alarms": [a.to_json() for a in alarms], "alarm_silenced": self.all_silenced(alarms)}
