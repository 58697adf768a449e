"""A node's physics figures over a run, and the run's physics summary: one rule for every backend.

The simulator gets a node's figures from its :class:`~edgeprune.physics.NodeRun` (:func:`run_figures`);
the HIL coordinator from what the node reported every control period (:class:`MeasuredNode`: temperature,
frequency, throttle flag, CPU time, an optional power meter).  :func:`physics_summary` turns either into the
same ``summary.json`` keys, so the two backends' summaries compare key by key.

On hardware the node's power is read from its power meter where one is configured, else estimated from the
node's power model (``[[host]] physics`` in the cluster file) at the measured frequency and utilisation:
``P = idle_w + busy_core_w(f) × busy cores`` (:func:`measured_power_w`), where busy cores is the CPU time
everything on the node used in the period (the stage and every other process) over the period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edgeprune.physics.params import DevicePhysics
from edgeprune.physics.run import NodeRun

__all__ = ["MeasuredNode", "NodeFigures", "measured_power_w", "physics_summary", "run_figures"]


class NodeFigures(NamedTuple):
    """One node's figures over a run (NaN: not known, e.g. no power model and no meter)."""

    energy_j: float  # ∫P dt, idle included
    peak_temp_c: float
    throttled_s: float  # time below the top frequency
    time_at_freq_s: dict[float, float]  # MHz -> seconds


def run_figures(phys: DevicePhysics, run: NodeRun) -> NodeFigures:
    """The figures of a simulated node (its :meth:`NodeRun.totals`, keyed by its ladder's frequencies)."""
    t = run.totals()
    at = dict(zip(phys.dvfs.freqs_mhz, t.time_at_step_s, strict=True))
    return NodeFigures(t.energy_j, t.peak_temp_c, t.throttled_s, at)


def _known(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def physics_summary(nodes: Sequence[NodeFigures], completed: int, end_s: float) -> dict[str, Any]:
    """The run's physics figures (``summary.json``) over ``[0, end_s)``: total energy (idle included) over
    the nodes whose energy is known, energy per completed inference, mean power, the peak temperature, and
    node-seconds below the top frequency and at each frequency (``None`` where no node knows the figure)."""
    energies = _known([n.energy_j for n in nodes])
    energy_j = math.fsum(energies) if energies else None
    peaks = _known([n.peak_temp_c for n in nodes])
    throttled = _known([n.throttled_s for n in nodes])
    at_freq: dict[str, float] = {}
    for f_mhz, seconds in sorted(((f, s) for n in nodes for f, s in n.time_at_freq_s.items()), key=lambda fs: -fs[0]):
        at_freq[f"{f_mhz:g}"] = at_freq.get(f"{f_mhz:g}", 0.0) + seconds
    return {
        "energy_j": energy_j,
        "energy_per_inference_j": energy_j / completed if energy_j is not None and completed else None,
        "mean_power_w": energy_j / end_s if energy_j is not None and end_s > 0 else None,
        "peak_temp_c": max(peaks) if peaks else None,
        "throttled_s": math.fsum(throttled) if throttled else None,
        "time_at_freq_s": at_freq,
    }


def measured_power_w(phys: DevicePhysics, freq_mhz: float, busy_cores: float) -> float:
    """The node's power from its model at a measured frequency and utilisation (see the module docstring).

    ``busy_core_w`` is interpolated linearly in frequency between the ladder's steps (held beyond its ends);
    an unknown frequency (NaN) counts as the top step (*assumption*: a node that exposes no frequency is not
    throttled).  ``busy_cores`` is capped at the node's cores.
    """
    freqs = np.asarray(phys.dvfs.freqs_mhz[::-1], dtype=np.float64)
    watts = np.asarray(phys.power.busy_core_w[::-1], dtype=np.float64)
    f = freqs[-1] if math.isnan(freq_mhz) else freq_mhz
    per_core_w = float(np.interp(f, freqs, watts))
    cores = min(max(busy_cores, 0.0), float(phys.power.cores))
    return phys.power.idle_w + per_core_w * cores


class MeasuredNode:
    """One node's reports, period by period, turned into its power and throttle state and its figures.

    ``phys`` is the node's power model (``None``: none; energy then only from a meter).  A period's power is
    the meter's reading where there is one, else the model's estimate where the utilisation is known, else
    NaN; the node's energy is NaN as soon as one period's power is unknown (never a partial sum).  Throttled
    is the node's own flag (``vcgencmd get_throttled``) where it has one, else "below the model's top
    frequency" where the model and the frequency are known, else unknown.
    """

    def __init__(self, phys: DevicePhysics | None) -> None:
        self.phys = phys
        self.periods = 0
        self.energy_j = 0.0
        self.peak_temp_c = math.nan
        self.throttled_s = math.nan
        self.time_at_freq_s: dict[float, float] = {}

    def throttled(self, flag: bool | None, freq_mhz: float) -> float:
        """1.0 / 0.0 / NaN (unknown): see the class docstring."""
        if flag is not None:
            return float(flag)
        if self.phys is None or math.isnan(freq_mhz):
            return math.nan
        return float(freq_mhz < self.phys.dvfs.freqs_mhz[0])

    def power_w(self, freq_mhz: float, busy_cores: float, meter_w: float) -> float:
        """The period's power: the meter, else the model's estimate, else NaN."""
        if not math.isnan(meter_w):
            return meter_w
        if self.phys is None or math.isnan(busy_cores):
            return math.nan
        return measured_power_w(self.phys, freq_mhz, busy_cores)

    def add(
        self, period_s: float, temp_c: float, freq_mhz: float, flag: bool | None, busy_cores: float, meter_w: float
    ) -> tuple[float, float]:
        """Account one period of ``period_s`` ending with these readings; returns ``(power_w, throttled)``."""
        power_w = self.power_w(freq_mhz, busy_cores, meter_w)
        throttled = self.throttled(flag, freq_mhz)
        self.periods += 1
        self.energy_j += power_w * period_s
        if not math.isnan(temp_c) and not temp_c <= self.peak_temp_c:
            self.peak_temp_c = temp_c
        if not math.isnan(throttled):
            self.throttled_s = (0.0 if math.isnan(self.throttled_s) else self.throttled_s) + throttled * period_s
        if not math.isnan(freq_mhz):
            self.time_at_freq_s[freq_mhz] = self.time_at_freq_s.get(freq_mhz, 0.0) + period_s
        return power_w, throttled

    def figures(self) -> NodeFigures:
        """The node's figures so far (energy unknown before the first period)."""
        energy_j = self.energy_j if self.periods else math.nan
        return NodeFigures(energy_j, self.peak_temp_c, self.throttled_s, dict(self.time_at_freq_s))
