"""An alarm: a condition an operator must see, with an identity that does not depend on its wording.

`text` is for people and may carry live values ("inlet CRITICAL: 71 °C");
`key` (source and level) is what silencing and acknowledging remember, so
rewording a message never changes which alarm it is. An alarm that goes away
and comes back, or gets worse, is a new alarm.

Sources are dotted names: the decision core's start with ``cluster.``
(``cluster.peer``, ``cluster.link.<name>``, ``cluster.flap_hold``,
``cluster.maintenance``, ``cluster.actions``); a sensor's is its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class AlarmLevel(Enum):
    """How bad it is (the same names as a sensor's non-OK states)."""

    WARNING = "WARNING"
    UNKNOWN = "UNKNOWN"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class Alarm:
    """One active alarm."""

    source: str        # what raised it, e.g. "cluster.peer" or a sensor's name
    level: AlarmLevel
    text: str          # what the status, the panel and the journal show

    @property
    def key(self) -> str:
        """The stable identity: source and level, never the text."""
        return f"{self.source} {self.level.value}"
