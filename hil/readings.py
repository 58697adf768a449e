"""What a node exposes about its physics, read by the stage worker at every period report (no torch).

* temperature: a thermal-zone file, millidegrees C as integer text (``/sys/class/thermal/thermal_zone0/temp``
  by default; an emulated node's file where the cluster file names one);
* frequency: a cpufreq file, kHz as integer text (``scaling_cur_freq``);
* throttle flag: ``vcgencmd get_throttled`` where the node has it (``throttled=0x50005``; bit 2, "currently
  throttled", as :class:`~edgeprune.controller.StageObs` defines it); absent: unknown;
* CPU time in the period: the worker process's own (``time.process_time``: every thread of the stage), and
  everything else on the node: the node cgroup's ``cpuacct.usage`` (ns) when the host has a ``cpu_cgroup``
  with a cpuacct counter, else ``/proc/stat``'s busy time (all CPUs), minus the worker's own;
* power: an optional shell command printing watts (a USB meter, a PMIC reader), whose reading replaces the
  coordinator's estimate from the node's power model.

Every read failure is an unknown reading (``None`` in the report, null in the timeline), never an error:
a node without a thermal zone, cpufreq or vcgencmd still runs.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "READING_FIELDS",
    "NodeProbe",
    "cpuacct_usage_file",
    "parse_cpuacct_s",
    "parse_khz_mhz",
    "parse_millidegrees_c",
    "parse_proc_stat_busy_s",
    "parse_throttled",
    "parse_watts",
]

THROTTLED_NOW = 0x4  # vcgencmd get_throttled: bit 2, ARM currently throttled
COMMAND_TIMEOUT_S = 1.0  # vcgencmd and the power meter must answer within this (the report waits for them)
# the reading fields of a worker report: numbers (finite) or None, throttled a bool or None
READING_FIELDS = ("temp_c", "freq_mhz", "throttled", "cpu_stage_s", "cpu_other_s", "power_w")


def _number(text: str) -> float | None:
    try:
        v = float(text.strip().split()[0])
    except (ValueError, IndexError):
        return None
    return v if math.isfinite(v) else None


def parse_millidegrees_c(text: str) -> float | None:
    """``"48312\\n"`` → 48.312 °C (``None`` if not a number)."""
    v = _number(text)
    return None if v is None else v / 1000.0


def parse_khz_mhz(text: str) -> float | None:
    """``"1500000\\n"`` (kHz) → 1500.0 MHz (``None`` if not a positive number)."""
    v = _number(text)
    return None if v is None or v <= 0 else v / 1000.0


def parse_throttled(text: str) -> bool | None:
    """``vcgencmd get_throttled`` output (``throttled=0x50005``) → currently throttled (bit 2), or ``None``."""
    _, sep, value = text.strip().partition("throttled=")
    if not sep:
        return None
    try:
        return bool(int(value.split()[0], 16) & THROTTLED_NOW)
    except (ValueError, IndexError):
        return None


def parse_proc_stat_busy_s(text: str, ticks_hz: float) -> float | None:
    """CPU seconds every CPU spent busy since boot, from ``/proc/stat``'s aggregate ``cpu`` line (all fields
    but idle and iowait; guest time is already inside user), or ``None``."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                ticks = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            except ValueError:
                return None
            if len(ticks) < 4:
                return None
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            return (sum(ticks) - idle) / ticks_hz
    return None


def parse_cpuacct_s(text: str) -> float | None:
    """``cpuacct.usage`` (ns) → seconds, or ``None``."""
    v = _number(text)
    return None if v is None or v < 0 else v / 1e9


def parse_watts(text: str) -> float | None:
    """A power meter's output: the first number on its last non-empty line, watts (``None`` if none, or
    negative)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    v = _number(lines[-1]) if lines else None
    return None if v is None or v < 0 else v


def cpuacct_usage_file(cpu_cgroup: str) -> str:
    """The ``cpuacct.usage`` counter of a cgroup v1 ``cpu`` folder: in the folder itself (``cpu,cpuacct``
    mounted together) or at the same place under the separate ``cpuacct`` hierarchy; ``""`` if neither."""
    if not cpu_cgroup:
        return ""
    folder = Path(cpu_cgroup)
    candidates = [folder / "cpuacct.usage"]
    parts = folder.parts
    for i, part in enumerate(parts):
        if part in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            candidates.append(Path(*parts[:i], "cpuacct", *parts[i + 1 :]) / "cpuacct.usage")
    return next((str(c) for c in candidates if c.is_file()), "")


def _read(path: str, parse: Callable[[str], Any]) -> Any:
    if not path:
        return None
    try:
        return parse(Path(path).read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def _command(argv: list[str] | str, parse: Callable[[str], Any]) -> Any:
    try:
        done = subprocess.run(
            argv, shell=isinstance(argv, str), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse(done.stdout) if done.returncode == 0 else None


class NodeProbe:
    """Reads the node's physics at every report (see the module docstring); CPU times are per period."""

    def __init__(
        self,
        thermal_file: str,
        freq_file: str,
        cpu_cgroup: str = "",
        meter_command: str = "",
        own_cpu_s: Callable[[], float] = time.process_time,
        proc_stat: str = "/proc/stat",
    ) -> None:
        self.thermal_file = thermal_file
        self.freq_file = freq_file
        self.usage_file = cpuacct_usage_file(cpu_cgroup)
        self.meter_command = meter_command
        self.own_cpu_s = own_cpu_s
        self.proc_stat = proc_stat
        self.vcgencmd = shutil.which("vcgencmd")
        self.ticks_hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._last = self._cpu()

    def _node_cpu_s(self) -> float | None:
        """CPU seconds used by everything on the node so far (the cgroup's, else all CPUs' busy time)."""
        if self.usage_file:
            return _read(self.usage_file, parse_cpuacct_s)  # type: ignore[no-any-return]
        return _read(self.proc_stat, lambda t: parse_proc_stat_busy_s(t, self.ticks_hz))  # type: ignore[no-any-return]

    def _cpu(self) -> tuple[float, float | None]:
        return self.own_cpu_s(), self._node_cpu_s()

    def restart(self) -> None:
        """Start a new period now (the run's counters were reset)."""
        self._last = self._cpu()

    def read(self) -> dict[str, Any]:
        """The readings now and the CPU times since the previous read (``None``: unknown)."""
        own, node = self._cpu()
        last_own, last_node = self._last
        self._last = (own, node)
        stage_s = max(own - last_own, 0.0)
        other_s = None if node is None or last_node is None else max(node - last_node - stage_s, 0.0)
        return {
            "temp_c": _read(self.thermal_file, parse_millidegrees_c),
            "freq_mhz": _read(self.freq_file, parse_khz_mhz),
            "throttled": _command([self.vcgencmd, "get_throttled"], parse_throttled) if self.vcgencmd else None,
            "cpu_stage_s": stage_s,
            "cpu_other_s": other_s,
            "power_w": _command(self.meter_command, parse_watts) if self.meter_command else None,
        }
