"""Linux software RAID (md) state from /proc/mdstat, cross-checked with /sys/block/mdX/md/array_state.

/proc/mdstat is read for everything: one read lists every array with its
members, slot map and the rebuild progress line people know. It has no word
for one state, though: a RAID 0 or linear array that lost a member stays
"active" there, while the kernel's own ``array_state`` says ``broken``
(Documentation/admin-guide/md.rst), so that file is read per array when it
exists. ``mdadm --detail --export`` is not used: it needs root and a process
per array and carries identity (UUID, metadata), not health. Why mdstat and
not sysfs throughout: docs/library-decisions.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import Level, Reading, Sensor, SensorError, SensorOptions

__all__ = ["MdRaidSensor", "array_state", "parse_mdstat"]

REDUNDANT_LEVELS = {"raid1", "raid4", "raid5", "raid6", "raid10"}
# Sync actions that restore redundancy (a degraded array getting better) vs. scrubs.
REBUILD_ACTIONS = {"recovery", "resync", "reshape"}
SCRUB_ACTIONS = {"check", "repair"}

_HEADER = re.compile(r"^(md[\w/-]*)\s*:\s*(\S+)\s*(.*)$")
_MEMBER = re.compile(r"^(\S+?)\[(\d+)\]((?:\([A-Z]\))*)$")
_SLOTS = re.compile(r"\[(\d+)/(\d+)\]")
_MAP = re.compile(r"\[([U_]+)\]")
_PROGRESS = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*([\d.]+)%")
_PENDING = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*(DELAYED|PENDING)")
_FINISH = re.compile(r"\bfinish=(\S+)")
_SPEED = re.compile(r"\bspeed=(\S+)")


def _new_array(name: str, state: str, rest: str) -> dict[str, Any]:
    array: dict[str, Any] = {
        "name": name, "state": state, "read_only": None, "level": None, "members": [],
        "blocks": None, "slots": None, "in_sync": None, "map": None, "degraded": False,
        "container": False, "sync_action": None, "progress_pct": None, "sync_status": None,
        "finish": None, "speed": None,
    }
    for token in rest.split():
        member = _MEMBER.match(token)
        if member:
            flags = member.group(3).replace("(", "").replace(")", "")
            array["members"].append({"name": member.group(1), "index": int(member.group(2)), "flags": flags,
                                     "faulty": "F" in flags, "spare": "S" in flags})
        elif token.startswith("(") and token.endswith(")"):
            array["read_only"] = token.strip("()")
        elif array["level"] is None and not array["members"]:
            array["level"] = token
    return array


def _detail_line(array: dict[str, Any], line: str) -> None:
    if " blocks" in line:
        blocks = re.search(r"(\d+) blocks", line)
        array["blocks"] = int(blocks.group(1)) if blocks else None
        array["container"] = "super external:" in line and "external:/" not in line
        slots = _SLOTS.search(line)
        if slots:
            array["slots"], array["in_sync"] = int(slots.group(1)), int(slots.group(2))
        status_map = _MAP.search(line)
        if status_map:
            array["map"] = status_map.group(1)
    progress = _PROGRESS.search(line)
    if progress:
        array["sync_action"], array["progress_pct"] = progress.group(1), float(progress.group(2))
    pending = _PENDING.search(line)
    if pending:
        array["sync_action"], array["sync_status"] = pending.group(1), pending.group(2)
    for key, pattern in (("finish", _FINISH), ("speed", _SPEED)):
        found = pattern.search(line)
        if found:
            array[key] = found.group(1)


def parse_mdstat(text: str) -> list[dict[str, Any]]:
    """Parse /proc/mdstat into one dict per array.

    Keys: ``name``, ``state`` (active/inactive), ``read_only`` (e.g.
    ``"auto-read-only"`` or None), ``level`` (``raid1``… or None when
    inactive), ``members`` (name, index, flags, faulty (F), spare (S)),
    ``blocks``, ``slots`` and ``in_sync`` (from ``[2/1]``), ``map``
    (``"U_"``), ``degraded``, ``container`` (IMSM/DDF container),
    ``sync_action`` (recovery/resync/reshape/check/repair), ``progress_pct``,
    ``sync_status`` (DELAYED/PENDING), ``finish`` (``"6.7min"``), ``speed``.
    """
    arrays: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith((" ", "\t")):
            current = _new_array(*header.groups())
            arrays.append(current)
        elif current is not None and line.strip() and line[0] in " \t":
            _detail_line(current, line)
        else:
            current = None
    for array in arrays:
        short = array["slots"] is not None and array["in_sync"] is not None and array["in_sync"] < array["slots"]
        array["degraded"] = short or "_" in (array["map"] or "")
    return arrays


def _judge(array: dict[str, Any]) -> tuple[Level, str, list[str]]:
    """(level, phrase, conditions) for one array."""
    name = array["name"]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name)
    if array["state"] != "active" and array["container"]:
        return Level.OK, f"{name} container", []
    levels: list[Level] = []
    words: list[str] = []
    conditions: list[str] = []
    action = array["sync_action"]
    if array.get("array_state") == "broken":
        levels.append(Level.CRITICAL)
        words.append("broken (a member is missing)")
        conditions.append(f"{slug}_broken")
    if array["state"] != "active":
        levels.append(Level.CRITICAL)
        words.append(array["state"])
        conditions.append(f"{slug}_{array['state']}")
    if array["degraded"] and array["level"] in REDUNDANT_LEVELS:
        # A degraded array being rebuilt is on its way back; one left degraded is not.
        levels.append(Level.WARNING if action in ("recovery", "reshape") else Level.CRITICAL)
        words.append(f"degraded [{array['map']}]" if array["map"] else "degraded")
        conditions.append(f"{slug}_degraded")
    for member in array["members"]:
        if member["faulty"]:
            levels.append(Level.CRITICAL)
            words.append(f"{member['name']} faulty")
            conditions.append(f"{slug}_{re.sub(r'[^A-Za-z0-9]+', '_', member['name'])}_faulty")
    if action is not None:
        progress = f"{array['progress_pct']:g}%" if array["progress_pct"] is not None else \
            (array["sync_status"] or "").lower()
        words.append(f"{action} {progress}".strip() + (f", finish {array['finish']}" if array["finish"] else ""))
        if action in REBUILD_ACTIONS:
            levels.append(Level.WARNING)
            conditions.append(f"{slug}_rebuilding")
        else:
            conditions.append(f"{slug}_checking")
    if not words:
        words.append(" ".join(str(x) for x in (array["level"], f"[{array['map']}]" if array["map"] else None)
                              if x) or array["state"])
    return Level.worst(*levels), f"{name} " + ", ".join(words), conditions


def array_state(sysfs: Path, name: str) -> str | None:
    """The kernel's ``array_state`` of array ``name`` (``clean``, ``active``, ``broken`` …), None if unreadable."""
    try:
        return (sysfs / "block" / name / "md" / "array_state").read_text().strip() or None
    except (OSError, ValueError):
        return None


class MdRaidOptions(SensorOptions):
    """Options of the ``mdraid`` family."""

    array: str | None = None
    """One array (``md0``); by default every array in /proc/mdstat."""


class MdRaidSensor(Sensor):
    """State of md arrays: degraded, faulty or broken → CRITICAL, rebuilding → WARNING with progress."""

    family = "mdraid"
    Options = MdRaidOptions

    def read(self) -> Reading:
        """Read /proc/mdstat (and each array's sysfs array_state) and judge the selected arrays."""
        options: MdRaidOptions = self.options  # type: ignore[assignment]
        path = self.context.procfs / "mdstat"
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""  # md driver not loaded: no arrays
        except OSError as exc:
            raise SensorError(f"cannot read {path}: {exc.strerror or exc}") from None
        arrays = parse_mdstat(text)
        for array in arrays:
            array["array_state"] = array_state(self.context.sysfs, array["name"])
        if options.array is not None:
            wanted = options.array.removeprefix("/dev/")
            arrays = [a for a in arrays if a["name"] == wanted]
            if not arrays:
                return Reading(level=Level.CRITICAL, summary=f"{wanted} not found in {path}",
                               conditions=(f"{re.sub(r'[^A-Za-z0-9]+', '_', wanted)}_missing",))
        if not arrays:
            return Reading(level=Level.OK, summary="no md arrays", values={"arrays": 0.0})
        levels, phrases, conditions = [], [], []
        for array in arrays:
            level, phrase, conds = _judge(array)
            levels.append(level)
            phrases.append(phrase)
            conditions += conds
        values = {
            "arrays": float(len(arrays)),
            "degraded": float(sum(a["degraded"] and a["level"] in REDUNDANT_LEVELS for a in arrays)),
            "faulty": float(sum(m["faulty"] for a in arrays for m in a["members"])),
        }
        units: dict[str, str] = {}
        for kind, actions in (("rebuild_pct", REBUILD_ACTIONS), ("check_pct", SCRUB_ACTIONS)):
            progress = [a["progress_pct"] for a in arrays
                        if a["sync_action"] in actions and a["progress_pct"] is not None]
            if progress:
                values[kind], units[kind] = min(progress), "%"
        if len(arrays) == 1 and arrays[0]["slots"] is not None:
            values["slots"], values["in_sync"] = float(arrays[0]["slots"]), float(arrays[0]["in_sync"])
        info = {f"{a['name']}_members": " ".join(m["name"] for m in a["members"]) for a in arrays}
        info.update({f"{a['name']}_level": a["level"] for a in arrays if a["level"]})
        info.update({f"{a['name']}_array_state": a["array_state"] for a in arrays if a["array_state"]})
        return Reading(level=Level.worst(*levels), summary="; ".join(phrases), values=values, units=units,
                       conditions=tuple(conditions), info=info)
