"""Host sensors: load, memory, swap, disk usage, clock synchronisation, a process being alive."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil
from pydantic import Field, model_validator

from .base import Level, Reading, Sensor, SensorContext, SensorError, SensorOptions

__all__ = ["ClockSyncSensor", "DiskUsageSensor", "LoadSensor", "MemorySensor", "ProcessSensor", "SwapSensor"]

MIB = 1024 ** 2
GIB = 1024 ** 3


class LoadSensor(Sensor):
    """Load averages over 1, 5 and 15 minutes, also divided by the number of CPUs."""

    family = "load"

    def read(self) -> Reading:
        """Read the load averages; the level is always OK (thresholds judge the values)."""
        load1, load5, load15 = psutil.getloadavg()
        cpus = psutil.cpu_count() or 1
        values = {"load1": load1, "load5": load5, "load15": load15,
                  "load1_per_cpu": load1 / cpus, "load5_per_cpu": load5 / cpus, "load15_per_cpu": load15 / cpus}
        return Reading(summary=f"load {load1:.2f} {load5:.2f} {load15:.2f} on {cpus} CPUs",
                       values={k: round(v, 3) for k, v in values.items()}, info={"cpus": str(cpus)})


class MemorySensor(Sensor):
    """RAM use: percent used and MiB still available (page cache counts as available)."""

    family = "memory"

    def read(self) -> Reading:
        """Read /proc/meminfo through psutil."""
        memory = psutil.virtual_memory()
        available_mb = memory.available / MIB
        return Reading(summary=f"{memory.percent:.1f}% used, {available_mb:.0f} MB available",
                       values={"used_pct": memory.percent, "available_mb": round(available_mb, 1),
                               "total_mb": round(memory.total / MIB, 1)},
                       units={"used_pct": "%", "available_mb": "MB", "total_mb": "MB"})


class SwapSensor(Sensor):
    """Swap use in percent (0 when there is no swap)."""

    family = "swap"

    def read(self) -> Reading:
        """Read swap totals through psutil."""
        swap = psutil.swap_memory()
        summary = "no swap" if swap.total == 0 else f"{swap.percent:.1f}% of {swap.total / MIB:.0f} MB used"
        return Reading(summary=summary,
                       values={"used_pct": swap.percent, "used_mb": round(swap.used / MIB, 1),
                               "total_mb": round(swap.total / MIB, 1)},
                       units={"used_pct": "%", "used_mb": "MB", "total_mb": "MB"})


class DiskUsageOptions(SensorOptions):
    """Options of the ``disk_usage`` family."""

    path: str = "/"
    """Any path on the file system to watch (its mount point is measured)."""


class DiskUsageSensor(Sensor):
    """Space and inodes used on the file system holding ``path``."""

    family = "disk_usage"
    Options = DiskUsageOptions

    def read(self) -> Reading:
        """Measure with statvfs; used_pct is of the space ordinary users may fill (root's reserve excluded)."""
        path = self.options.path  # type: ignore[attr-defined]
        try:
            usage = psutil.disk_usage(path)
            stats = os.statvfs(path)
        except OSError as exc:
            raise SensorError(f"cannot measure {path}: {exc.strerror or exc}") from None
        values = {"used_pct": usage.percent, "free_gb": round(usage.free / GIB, 3),
                  "total_gb": round(usage.total / GIB, 3)}
        units = {"used_pct": "%", "free_gb": "GB", "total_gb": "GB"}
        if stats.f_files:  # some file systems (btrfs, vfat) report no inode counts
            values["inodes_used_pct"] = round(100.0 * (stats.f_files - stats.f_ffree) / stats.f_files, 2)
            units["inodes_used_pct"] = "%"
        return Reading(summary=f"{path}: {usage.percent:.1f}% used, {usage.free / GIB:.1f} GB free",
                       values=values, units=units)


class ClockSyncOptions(SensorOptions):
    """Options of the ``clock_sync`` family."""

    command_timeout_s: float = Field(10, gt=0)


_CHRONY_OFFSET = re.compile(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", re.MULTILINE)
_CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+)$", re.MULTILINE)
_CHRONY_STRATUM = re.compile(r"^Stratum\s*:\s*(\d+)", re.MULTILINE)


class ClockSyncSensor(Sensor):
    """Whether the system clock is NTP-synchronised: timedatectl, else chronyc; not synchronised → WARNING.

    Both nodes stamp events and the journal; a drifting clock makes the two
    nodes' histories disagree, hence a warning.
    """

    family = "clock_sync"
    Options = ClockSyncOptions

    def read(self) -> Reading:
        """Ask timedatectl (systemd); when it cannot answer, ask chronyc."""
        timeout = self.options.command_timeout_s  # type: ignore[attr-defined]
        reasons = []
        try:
            proc = self.context.run([self.context.command("timedatectl"), "show", "-p", "NTPSynchronized",
                                     "--value"], timeout=timeout)
            answer = proc.stdout.strip().lower()
            if proc.returncode == 0 and answer in ("yes", "no"):
                return self._verdict(answer == "yes", "timedatectl")
            reasons.append(f"timedatectl: {_first_line(proc) or f'exit {proc.returncode}'}")
        except SensorError as exc:
            reasons.append(str(exc))
        try:
            proc = self.context.run([self.context.command("chronyc"), "-n", "tracking"], timeout=timeout)
            leap = _CHRONY_LEAP.search(proc.stdout or "")
            if proc.returncode == 0 and leap:
                return self._chrony(proc.stdout, leap.group(1).strip())
            reasons.append(f"chronyc: {_first_line(proc) or f'exit {proc.returncode}'}")
        except SensorError as exc:
            reasons.append(str(exc))
        raise SensorError("clock synchronisation unknown: " + "; ".join(reasons))

    @staticmethod
    def _verdict(synced: bool, source: str, values: dict[str, float] | None = None,
                 detail: str = "") -> Reading:
        values = {"synchronized": 1.0 if synced else 0.0, **(values or {})}
        units = {"offset_ms": "ms"} if "offset_ms" in values else {}
        summary = ("synchronized" if synced else "not synchronized") + (f" ({detail})" if detail else "")
        return Reading(level=Level.OK if synced else Level.WARNING, summary=summary, values=values, units=units,
                       conditions=() if synced else ("not_synchronized",), info={"source": source})

    def _chrony(self, text: str, leap: str) -> Reading:
        values: dict[str, float] = {}
        offset = _CHRONY_OFFSET.search(text)
        if offset:
            seconds = float(offset.group(1))
            values["offset_ms"] = round(seconds * 1000 * (1 if offset.group(2) == "fast" else -1), 3)
        stratum = _CHRONY_STRATUM.search(text)
        if stratum:
            values["stratum"] = float(stratum.group(1))
        return self._verdict(leap.lower() != "not synchronised", "chronyc", values, f"leap status {leap}")


def _first_line(proc: object) -> str:
    text = ((getattr(proc, "stderr", "") or "") + "\n" + (getattr(proc, "stdout", "") or "")).strip()
    return text.splitlines()[0].strip() if text else ""


class ProcessOptions(SensorOptions):
    """Options of the ``process`` family: exactly one of ``process``, ``pidfile``, ``cmdline_contains``.

    (``process``, not ``name``: ``name`` is the sensor's own name in a ``[[sensors]]`` table.)
    """

    process: str | None = None
    """Process name as in ``ps -e`` (``asterisk``); also matches the basename of argv[0]."""
    pidfile: str | None = None
    """A pid file (``/var/run/asterisk/asterisk.pid``): that pid must be alive."""
    cmdline_contains: str | None = None
    """A substring of the full command line (``freeswitch -nc``)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ProcessOptions:
        given = [key for key in ("process", "pidfile", "cmdline_contains") if getattr(self, key)]
        if len(given) != 1:
            raise ValueError("give exactly one of process, pidfile, cmdline_contains"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class ProcessSensor(Sensor):
    """Whether a process (the PBX) is running; absent → CRITICAL. Values: count, rss_mb, cpu_pct."""

    family = "process"
    Options = ProcessOptions

    def __init__(self, name: str, options: SensorOptions, context: SensorContext) -> None:
        """Keep psutil.Process objects between reads so cpu_percent measures since the last read."""
        super().__init__(name, options, context)
        self._known: dict[int, psutil.Process] = {}

    @property
    def label(self) -> str:
        """What the summary calls the process."""
        options: ProcessOptions = self.options  # type: ignore[assignment]
        if options.process:
            return options.process
        if options.pidfile:
            return Path(options.pidfile).stem
        return repr(options.cmdline_contains)

    def _by_pidfile(self, pidfile: str) -> tuple[list[psutil.Process], str]:
        try:
            text = Path(pidfile).read_text().strip()
        except FileNotFoundError:
            return [], f"no pidfile {pidfile}"
        except OSError as exc:
            raise SensorError(f"cannot read {pidfile}: {exc.strerror or exc}") from None
        if not text.split() or not text.split()[0].isdigit():
            raise SensorError(f"{pidfile} holds no pid: {text[:40]!r}")
        pid = int(text.split()[0])
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                return [proc], ""
        except psutil.NoSuchProcess:
            pass
        return [], f"stale pidfile {pidfile}, pid {pid}"

    def _scan(self) -> list[psutil.Process]:
        options: ProcessOptions = self.options  # type: ignore[assignment]
        found = []
        for proc in psutil.process_iter(["name", "cmdline", "status"]):
            info = proc.info
            if info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = info["cmdline"] or []
            if options.process:
                argv0 = os.path.basename(cmdline[0]) if cmdline else ""
                if options.process not in (info["name"], argv0):
                    continue
            elif options.cmdline_contains not in " ".join(cmdline):
                continue
            found.append(proc)
        return found

    def read(self) -> Reading:
        """Find the matching processes and sum their memory and CPU."""
        options: ProcessOptions = self.options  # type: ignore[assignment]
        why = ""
        if options.pidfile:
            procs, why = self._by_pidfile(options.pidfile)
        else:
            procs = self._scan()
        rss = cpu = 0.0
        alive: dict[int, psutil.Process] = {}
        for proc in procs:
            known = self._known.get(proc.pid)
            if known is not None and known == proc:  # same pid and start time: keep its CPU baseline
                proc = known
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += proc.cpu_percent(None)  # since the previous read; 0 at the first
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                pass
            alive[proc.pid] = proc
        self._known = alive
        values = {"count": float(len(alive)), "rss_mb": round(rss / MIB, 1), "cpu_pct": round(cpu, 1)}
        units = {"rss_mb": "MB", "cpu_pct": "%"}
        if not alive:
            summary = f"{self.label} is not running" + (f" ({why})" if why else "")
            return Reading(level=Level.CRITICAL, summary=summary, values=values, units=units,
                           conditions=("not_running",))
        pids = sorted(alive)
        where = f"pid {pids[0]}" if len(pids) == 1 else f"{len(pids)} processes"
        return Reading(summary=f"{self.label} running ({where}), {rss / MIB:.0f} MB", values=values, units=units,
                       info={"pids": " ".join(map(str, pids[:20]))})
