"""Custom sensors: any executable following the Nagios plugin convention.

Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 (or anything else) UNKNOWN. The first
output line is the status text; after a ``|`` comes performance data,
``'label'=value[UOM];[warn];[crit];[min];[max]`` separated by spaces. Later
lines are long text, and a ``|`` in them starts more performance data that
runs to the end of the output. The plugin's own thresholds already decided
its exit code; only the values are kept here.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

from pydantic import Field, field_validator

from .base import Level, Reading, Sensor, SensorError, SensorOptions

__all__ = ["NagiosSensor", "parse_perfdata", "parse_plugin_output"]

EXIT_LEVELS = {0: Level.OK, 1: Level.WARNING, 2: Level.CRITICAL, 3: Level.UNKNOWN}

_ITEM = re.compile(r"(?:'((?:[^']|'')*)'|([^\s=']+))=(\S*)")
_VALUE = re.compile(r"^([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?)([A-Za-z%]*)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def sanitize_label(label: str) -> str:
    """A perfdata label as a value name: only ``[A-Za-z0-9_]``; ``"/var"`` → ``"var"``, ``"/"`` → ``"root"``."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_")
    return name or ("root" if label.strip() == "/" else "value")


def parse_perfdata(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Values and units from performance data; items whose value is ``U`` or unparsable are skipped."""
    values: dict[str, float] = {}
    units: dict[str, str] = {}
    for match in _ITEM.finditer(text):
        quoted, plain, rest = match.groups()
        label = quoted.replace("''", "'") if quoted is not None else plain
        number = _VALUE.match(rest.split(";", 1)[0])
        if not number:
            continue
        name = base = sanitize_label(label)
        suffix = 2
        while name in values:
            name, suffix = f"{base}_{suffix}", suffix + 1
        values[name] = float(number.group(1).replace(",", "."))
        if number.group(2):
            units[name] = number.group(2)
    return values, units


def parse_plugin_output(exit_code: int, stdout: str) -> Reading:
    """Turn a plugin's exit code and output into a Reading (UNKNOWN is a reading, not an error)."""
    lines = stdout.splitlines()
    first = lines[0] if lines else ""
    status_text, _, perfdata = first.partition("|")
    long_text, sep, more_perfdata = "\n".join(lines[1:]).partition("|")
    if sep:
        perfdata = f"{perfdata} {more_perfdata}"
    perfdata = " ".join(perfdata.split())
    values, units = parse_perfdata(perfdata)
    level = EXIT_LEVELS.get(exit_code, Level.UNKNOWN)
    summary = status_text.strip() or "(no output)"
    if exit_code < 0:
        summary = f"killed by signal {-exit_code}: {summary}"
    elif exit_code not in EXIT_LEVELS:
        summary = f"unexpected exit code {exit_code}: {summary}"
    info = {"exit_code": str(exit_code)}
    if perfdata:
        info["perfdata"] = perfdata[:1000]
    if long_text.strip():
        info["long_output"] = long_text.strip()[:1000]
    return Reading(level=level, summary=summary, values=values, units=units, info=info)


class NagiosOptions(SensorOptions):
    """Options of the ``nagios`` family."""

    command: list[str] = Field(min_length=1)
    """argv; the first element is an absolute path or a name found on $PATH."""
    env: dict[str, str] = Field(default_factory=dict)
    """Added to the daemon's environment for the plugin."""
    command_timeout_s: float = Field(10, gt=0)

    @field_validator("env")
    @classmethod
    def _names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [name for name in env if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(bad)}")
        return env


class NagiosSensor(Sensor):
    """Runs a Nagios-convention plugin; its exit code is the level, its perfdata the values."""

    family = "nagios"
    Options = NagiosOptions

    def _executable(self) -> str:
        """The plugin's path, checked, or SensorError saying why it cannot be run."""
        command = self.context.command(self.options.command[0])  # type: ignore[attr-defined]
        if os.sep not in command:
            found = shutil.which(command)
            if found is None:
                raise SensorError(f"{command}: not found on PATH")
            return found
        path = Path(command)
        if not path.exists():
            raise SensorError(f"{command}: no such file")
        if path.is_dir():
            raise SensorError(f"{command}: is a directory")
        if not os.access(path, os.X_OK):
            raise SensorError(f"{command}: not executable (mode {path.stat().st_mode & 0o777:04o})")
        return command

    def read(self) -> Reading:
        """Run the plugin with a timeout and parse what it printed."""
        options: NagiosOptions = self.options  # type: ignore[assignment]
        argv = [self._executable(), *options.command[1:]]
        if options.env:
            # The runner takes only argv and a timeout, so env(1) adds the variables.
            argv = [shutil.which("env") or "/usr/bin/env", *(f"{k}={v}" for k, v in options.env.items()), *argv]
        try:
            proc = self.context.run(argv, timeout=options.command_timeout_s)
        except OSError as exc:
            raise SensorError(f"{argv[0]}: cannot execute: {exc.strerror or exc}") from None
        reading = parse_plugin_output(proc.returncode, proc.stdout or "")
        stderr = (proc.stderr or "").strip()
        if not (proc.stdout or "").strip() and stderr:
            reading = replace(reading, summary=f"{reading.summary} stderr: {stderr.splitlines()[0][:200]}")
        return reading
