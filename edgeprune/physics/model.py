"""The device-physics math, written once: RC temperature, governor, power, service-time factor, energy.

Pure functions of :class:`~edgeprune.physics.params.DevicePhysics` and plain numbers / numpy arrays: no
clock, no SimPy, no torch.  The simulator, the HIL coordinator and the policies call the same code.

Coupling (one node): busy intervals + tenant load -> power (constant between interval edges) ->
temperature (closed form of ``C dT/dt = P - (T - T_amb) / R`` over each constant piece) -> the governor's
frequency step at its decision instants -> service-time factor ``(f_max / f)^alpha``.  The frequency is
constant between two decision instants, so the caller integrates one governor period at a time with
:func:`advance` and then asks :func:`govern` for the next step (``edgeprune.physics.run.NodeRun`` does
exactly that for a backend).

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

from edgeprune.physics.flat import (
    ambient_part,
    base_power_w,
    dyn_power_w,
    freq_factor,
    govern_step,
    rc_pieces,
    rc_temp,
)
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
    if not busy:
        return base_power_w(pw.idle_w, pw.busy_core_w[freq_index], float(pw.cores), tenant_share, tenant_w)
    cores = min(float(pw.cores), phys.service_cores + tenant_share * pw.cores)
    return pw.idle_w + pw.busy_core_w[freq_index] * cores + tenant_w


def dynamic_power_w(phys: DevicePhysics, freq_index: int, tenant_share: float = 0.0) -> float:
    """What a service adds to the node's power: ``P(busy) - P(idle)`` at this step and tenant load."""
    pw = phys.power
    return dyn_power_w(pw.busy_core_w[freq_index], float(pw.cores), phys.service_cores, tenant_share)


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
    thr = dvfs.thresholds_c
    return govern_step(thr, len(thr), dvfs.hard_limit_c, dvfs.hysteresis_c, len(dvfs.freqs_mhz), freq_index, temp_c)


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
    starts = [p[0] for p in pairs]
    ends = [p[1] for p in pairs]
    busy_s, weight = rc_pieces(tau, t0_s, t1_s, starts, ends, 0, len(starts), False)
    decay = math.exp((t0_s - t1_s) / tau)
    times, ambient = th.schedule_times_s, th.schedule_ambient_c
    amb = ambient_part(th.ambient_c, times, ambient, len(times), tau, t0_s, t1_s, decay)
    return rc_temp(temp_c, decay, th.resistance_c_per_w, base_w, dyn_w, weight, amb), busy_s


def dynamic_energy_j(
    phys: DevicePhysics,
    start_s: float,
    end_s: float,
    edges_s: Sequence[float],
    freq_index: Sequence[int],
    tenant_share: Sequence[float] | None = None,
) -> float:
    """One service's dynamic energy: ``∫ (P(busy) - P(idle)) dt`` over ``[start_s, end_s)``.

    ``edges_s`` are the instants at which the node's conditions change (governor decisions and tenant
    changes), sorted, ``edges_s[0] <= start_s``, with ``freq_index[j]`` and ``tenant_share[j]`` holding on
    ``[edges_s[j], edges_s[j+1])``; the service is split at those instants exactly as :func:`advance`
    splits the periods, with the same powers, so per-request energies sum to the periods' ``busy_j``.
    """
    j = max(bisect_right(edges_s, start_s) - 1, 0)
    n = len(edges_s)
    total = 0.0
    while j < n and edges_s[j] < end_s:
        a = start_s if start_s > edges_s[j] else edges_s[j]
        b = edges_s[j + 1] if j + 1 < n and edges_s[j + 1] < end_s else end_s
        if b > a:
            share = 0.0 if tenant_share is None else tenant_share[j]
            total += dynamic_power_w(phys, freq_index[j], share) * (b - a)
        j += 1
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
