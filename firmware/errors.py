"""The one root of every error Tandem raises on purpose, and its two most common branches.

Code that decides by error catches a class or reads a field (``key``,
``reason``), never the message: rewording a message must not change behaviour.

* :class:`ConfigError`: a configuration problem, worded ``file: key: reason``
  (the daemon exits 78 on it).
* :class:`HardwareError`: a driver could not reach or drive its device; ``key``
  names the board-profile or config key that chose the device, when known, so
  the daemon can turn it into a ConfigError pointing at the right line.

Other families (protocol, link, control, action and sensor errors) derive from
:class:`TandemError` directly, next to the code that raises them.
"""

from __future__ import annotations

from pathlib import Path


class TandemError(Exception):
    """Root of Tandem's own errors."""


class ConfigError(TandemError):
    """A configuration problem, worded as `file: key: reason`.

    One error may carry several problems (:meth:`of`): ``path``, ``key`` and
    ``reason`` are the first one's, ``problems`` lists them all, and the
    message has one `file: key: reason` line per problem.
    """

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        self.problems: list[ConfigError] = [self]
        super().__init__(self.line)

    @property
    def line(self) -> str:
        """This problem alone as `file: key: reason` (the first line of the message)."""
        line = (f"{self.path}: {self.key}: " if self.key else f"{self.path}: ") + self.reason
        return " ".join(line.splitlines())  # one problem, one line (a driver's reason may span several)

    @classmethod
    def of(cls, errors: list[ConfigError]) -> ConfigError:
        """One error reporting every problem of ``errors`` (each may carry several), in order."""
        problems = [problem for error in errors for problem in error.problems]
        if not problems:
            raise ValueError("ConfigError.of needs at least one error")
        first = problems[0]
        combined = cls(first.path, first.key, first.reason)
        combined.problems = problems
        combined.args = ("\n".join(problem.line for problem in problems),)
        return combined


class HardwareError(TandemError):
    """A device that cannot be opened or driven; ``key`` is the profile/config key that named it ("" if unknown)."""

    def __init__(self, message: str, key: str = "") -> None:
        self.key = key
        super().__init__(message)
