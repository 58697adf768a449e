"""The device-physics math, written once: RC temperature, governor, power, service-time factor, energy.

Pure functions of :class:`~edgeprune.physics.params.DevicePhysics` and plain numbers / numpy arrays: no
clock, no SimPy, no torch.  The simulator, the HIL coordinator and the policies call the same code.

Coupling (one node): busy intervals + tenant load -> power (constant between interval edges) ->
temperature (closed form of ``C dT/dt = P - (T - T_amb) / R`` over each constant piece) -> the governor's
frequency step at its decision instants -> service-time factor ``(f_max / f)^alpha``.  The frequency is
constant between two decision instants, so the caller integrates one governor period at a time with
:func:`advance` and then asks :func:`govern` for the next step.

Energy accounting is exact by construction: over a period, ``energy_j = base_j + busy_j`` where
``base_j`` is the node's power with the stage idle (idle + tenant) times the period and ``busy_j`` the
stage's dynamic power ``P(busy) - P(idle)`` times its busy time; :func:`dynamic_energy_j` gives one
request's share of ``busy_j`` from the same powers, split at the same decision instants.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edgeprune.physics.params import DevicePhysics, DvfsParams, TenantParams, ThermalParams

__all__ = [
    "NodeState",
    "PeriodEnergy",
    "advance",
    "dynamic_energy_j",
    "dynamic_power_w",
    "freq_factor",
    "govern",
    "initial_state",
    "node_power_w",
    "rc_period",
    "rc_step",
    "steady_temp_c",
    "tenant_schedule",
    "tenant_slowdown",
]


class NodeState(NamedTuple):
    """A node's physical state at a governor instant: temperature and the frequency step in effect."""

    temp_c: float
    freq_index: int

    @property
    def throttled(self) -> bool:
        """Below the top frequency (``vcgencmd get_throttled`` bit 2, "currently throttled")."""
        return self.freq_index > 0


class PeriodEnergy(NamedTuple):
    """Energy over one :func:`advance` call: total ``∫P dt`` = ``base_j + busy_j`` (up to rounding)."""

    total_j: float  # ∫ P dt over the period
    base_j: float  # the part at the stage-idle power (idle + tenant), over the whole period
    busy_j: float  # the stage's dynamic part: (P(busy) - P(idle)) x busy time


def rc_step(
    temp_c: float, ambient_c: float, power_w: float, resistance_c_per_w: float, h_s: float, tau_s: float
) -> float:
    """Exact RC update over ``h_s`` at constant power and ambient: ``T_ss + (T - T_ss) exp(-h / tau)``."""
    t_ss = ambient_c + resistance_c_per_w * power_w
    return t_ss + (temp_c - t_ss) * math.exp(-h_s / tau_s)


def node_power_w(
    phys: DevicePhysics, freq_index: int, busy: bool, tenant_share: float = 0.0, tenant_w: float = 0.0
) -> float:
    """Node power: idle + per-core power x busy cores (stage + tenant, capped at the node's cores) + tenant extra."""
    pw = phys.power
    cores = min(float(pw.cores), (phys.service_cores if busy else 0.0) + tenant_share * pw.cores)
    return pw.idle_w + pw.busy_core_w[freq_index] * cores + tenant_w


def dynamic_power_w(phys: DevicePhysics, freq_index: int, tenant_share: float = 0.0) -> float:
    """What a service adds to the node's power: ``P(busy) - P(idle)`` at this step and tenant load."""
    pw = phys.power
    base = min(float(pw.cores), tenant_share * pw.cores)
    busy = min(float(pw.cores), phys.service_cores + tenant_share * pw.cores)
    return pw.busy_core_w[freq_index] * (busy - base)


def freq_factor(phys: DevicePhysics, freq_index: int) -> float:
    """Service-time multiplier at a frequency step: ``(f_max / f)^alpha`` (1 at the top step)."""
    f = phys.dvfs.freqs_mhz
    return float((f[0] / f[freq_index]) ** phys.dvfs.alpha)


def tenant_slowdown(phys: DevicePhysics, tenant_share: float) -> float:
    """Service-time multiplier from co-located load: demand / capacity of cores when it exceeds 1."""
    cores = float(phys.power.cores)
    return max(1.0, (phys.service_cores + tenant_share * cores) / cores)


def steady_temp_c(phys: DevicePhysics, power_w: float, ambient_c: float | None = None) -> float:
    """Steady-state temperature ``T_amb + R P``."""
    amb = phys.thermal.ambient_c if ambient_c is None else ambient_c
    return amb + phys.thermal.resistance_c_per_w * power_w


def govern(dvfs: DvfsParams, freq_index: int, temp_c: float) -> int:
    """The governor's next step from the temperature: down at once, up only below threshold - hysteresis.

    At or above ``hard_limit_c``: the lowest step.  Otherwise the step is at least the number of thresholds
    reached (throttle at once) and at most the number reached by ``temp_c + hysteresis_c`` (relax only once
    the temperature is ``hysteresis_c`` below a threshold).
    """
    if temp_c >= dvfs.hard_limit_c:
        return len(dvfs.freqs_mhz) - 1
    down = bisect_right(dvfs.thresholds_c, temp_c)  # thresholds reached (they are ascending)
    up = bisect_right(dvfs.thresholds_c, temp_c + dvfs.hysteresis_c)
    return max(down, min(freq_index, up))


def initial_state(phys: DevicePhysics) -> NodeState:
    """State at t = 0: the start temperature and the step the governor picks for it from the top."""
    temp = phys.thermal.start_c
    return NodeState(temp, govern(phys.dvfs, 0, temp))


def advance(
    phys: DevicePhysics,
    state: NodeState,
    t0_s: float,
    t1_s: float,
    busy_intervals: np.ndarray | Sequence[Sequence[float]],
    tenant_share: float = 0.0,
    tenant_w: float = 0.0,
) -> tuple[NodeState, PeriodEnergy]:
    """Integrate one node over ``[t0_s, t1_s)`` at the frequency of ``state`` (exact, closed form).

    ``busy_intervals`` is an ``[m, 2]`` array (or sequence of pairs) of ``(start_s, end_s)`` service
    intervals of the node's stage, not overlapping (a FIFO server); parts outside ``[t0_s, t1_s)`` are
    ignored.  The tenant load is constant over the call (split the call at tenant changes); the ambient
    schedule is followed.  Returns the state at ``t1_s`` (same frequency step: call :func:`govern` for the
    next) and the period's energy (see :func:`rc_period` for the formula).
    """
    if t1_s < t0_s:
        raise ValueError(f"advance: t1_s ({t1_s}) before t0_s ({t0_s})")
    base_w = node_power_w(phys, state.freq_index, False, tenant_share, tenant_w)
    dyn_w = dynamic_power_w(phys, state.freq_index, tenant_share)
    pairs = busy_intervals.tolist() if isinstance(busy_intervals, np.ndarray) else busy_intervals
    temp, busy_s = rc_period(phys.thermal, state.temp_c, t0_s, t1_s, pairs, base_w, dyn_w)
    base_j = base_w * (t1_s - t0_s)
    busy_j = dyn_w * busy_s
    return NodeState(temp, state.freq_index), PeriodEnergy(base_j + busy_j, base_j, busy_j)


def rc_period(
    th: ThermalParams,
    temp_c: float,
    t0_s: float,
    t1_s: float,
    pairs: Sequence[Sequence[float]],
    base_w: float,
    dyn_w: float,
) -> tuple[float, float]:
    """Temperature at ``t1_s`` and busy time in ``[t0_s, t1_s)``: power ``base_w``, plus ``dyn_w`` while busy.

    The RC equation is linear, so the end temperature is ``T0 exp(-h/tau)`` plus the exact contribution
    ``x_j (exp(-(t1 - e_j)/tau) - exp(-(t1 - s_j)/tau))`` of every constant piece ``x_j`` on ``[s_j, e_j)``
    of the steady-state input ``T_amb + R P``.  Plain Python over the intervals: a period holds a handful,
    and numpy's per-call cost would dominate.  The one implementation of the thermal step.
    """
    tau = th.tau_s
    exp = math.exp
    busy_s = weight = 0.0
    for start_s, end_s in pairs:
        a = t0_s if start_s < t0_s else start_s
        b = t1_s if end_s > t1_s else end_s
        if b > a:
            busy_s += b - a
            weight += exp((b - t1_s) / tau) - exp((a - t1_s) / tau)
    decay = exp((t0_s - t1_s) / tau)
    r = th.resistance_c_per_w
    heat = r * base_w * (1.0 - decay) + r * dyn_w * weight
    return temp_c * decay + heat + _ambient_part(th, t0_s, t1_s, decay), busy_s


def _ambient_part(th: ThermalParams, t0_s: float, t1_s: float, decay: float) -> float:
    """Contribution of the ambient (schedule) over ``[t0_s, t1_s)`` to the temperature at ``t1_s``."""
    times = th.schedule_times_s
    j = bisect_right(times, t0_s)  # schedule entries at or before t0_s
    amb = th.ambient_c if j == 0 else th.schedule_ambient_c[j - 1]
    if j == len(times) or times[j] >= t1_s:  # the common case: no change inside
        return amb * (1.0 - decay)
    tau = th.tau_s
    total, a = 0.0, t0_s
    while j < len(times) and times[j] < t1_s:
        total += amb * (math.exp((times[j] - t1_s) / tau) - math.exp((a - t1_s) / tau))
        a, amb = times[j], th.schedule_ambient_c[j]
        j += 1
    return total + amb * (1.0 - math.exp((a - t1_s) / tau))


def dynamic_energy_j(
    phys: DevicePhysics,
    start_s: float,
    end_s: float,
    edges_s: np.ndarray,
    freq_index: np.ndarray,
    tenant_share: np.ndarray | None = None,
) -> float:
    """One service's dynamic energy: ``∫ (P(busy) - P(idle)) dt`` over ``[start_s, end_s)``.

    ``edges_s`` are the instants at which the node's conditions change (governor decisions and tenant
    changes), sorted, with ``freq_index[j]`` and ``tenant_share[j]`` holding on ``[edges_s[j],
    edges_s[j+1])``; the service is split at those instants exactly as :func:`advance` splits the
    period, so per-request energies sum to the periods' ``busy_j``.
    """
    edges = np.asarray(edges_s, dtype=float)
    lo = max(int(np.searchsorted(edges, start_s, side="right")) - 1, 0)
    hi = max(int(np.searchsorted(edges, end_s, side="left")), lo + 1)
    total = 0.0
    for j in range(lo, hi):
        a = max(start_s, float(edges[j]))
        b = min(end_s, float(edges[j + 1])) if j + 1 < edges.size else end_s
        if b > a:
            share = 0.0 if tenant_share is None else float(tenant_share[j])
            total += dynamic_power_w(phys, int(freq_index[j]), share) * (b - a)
    return total


def tenant_schedule(
    tenants: tuple[TenantParams, ...], duration_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On/off schedules of a node's tenants over ``[0, duration_s)``, drawn up front from ``rng``.

    Returns ``(times_s, share, extra_w)``: from ``times_s[j]`` on, the tenants together take ``share[j]``
    of the node's cores (capped at 1) and draw ``extra_w[j]``.  ``times_s[0] == 0``; consecutive entries
    differ.  Tenants are drawn in order, each its whole schedule, so the result depends only on ``rng``.
    """
    changes: list[tuple[float, float, float]] = []
    for tenant in tenants:
        changes.extend(_one_tenant(tenant, duration_s, rng))
    changes.sort(key=lambda c: c[0])
    times, shares, watts = [0.0], [0.0], [0.0]
    share = watt = 0.0
    for t, ds, dw in changes:
        share += ds
        watt += dw
        if t > times[-1]:
            times.append(t)
            shares.append(shares[-1])
            watts.append(watts[-1])
        shares[-1] = min(1.0, max(0.0, round(share, 12)))
        watts[-1] = max(0.0, round(watt, 12))
    return _dedup(np.asarray(times), np.asarray(shares), np.asarray(watts))


def _one_tenant(tenant: TenantParams, duration_s: float, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """``(time_s, d_share, d_w)`` changes of one tenant: +share/+w when it turns on, minus when off."""
    out: list[tuple[float, float, float]] = []
    t, on = 0.0, tenant.start_on
    if on:
        out.append((0.0, tenant.cpu_share, tenant.extra_w))
    while True:
        t += _duration(tenant.mean_on_s if on else tenant.mean_off_s, tenant.distribution, rng)
        if t >= duration_s:
            return out
        on = not on
        sign = 1.0 if on else -1.0
        out.append((t, sign * tenant.cpu_share, sign * tenant.extra_w))


def _duration(mean_s: float, dist: str, rng: np.random.Generator) -> float:
    if dist == "fixed":
        return mean_s
    if dist == "uniform":
        return float(rng.uniform(0.0, 2.0 * mean_s))
    return float(rng.exponential(mean_s))


def _dedup(times: np.ndarray, shares: np.ndarray, watts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop entries that change nothing (a tenant off while another turns on at the same instant)."""
    keep = np.ones(times.size, dtype=bool)
    keep[1:] = (shares[1:] != shares[:-1]) | (watts[1:] != watts[:-1])
    return times[keep], shares[keep], watts[keep]
