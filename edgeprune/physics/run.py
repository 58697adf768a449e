"""One node's physics through a run: the object a backend advances between the node's change instants.

A node's conditions change only at its *change instants*: the governor's decisions at ``n x
dvfs.period_s`` (``n >= 1``, computed by multiplication so that every backend gets the same floats) and
the tenants' on/off changes (drawn up front from the scenario's generator).  Between two of them the
frequency step and the tenant load are constant, hence so is :attr:`NodeRun.factor`, the service-time
multiplier the backend applies at service start (like an environment factor): the simulator's fast path
advances requests between change instants exactly as between controller ticks.

Protocol: at each change instant ``t = run.next_s`` the backend calls ``run.advance(t, busy)`` with the
node's service intervals overlapping the time since the previous call (parts outside are clipped), then
reads ``run.factor`` for services starting from ``t`` on.  It may also call ``advance`` at any earlier time
(a controller tick) to read the temperature there; nothing changes until ``next_s``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edgeprune.physics.model import (
    NodeState,
    dynamic_power_w,
    freq_factor,
    govern,
    initial_state,
    node_power_w,
    rc_period,
    tenant_schedule,
    tenant_slowdown,
)
from edgeprune.physics.params import DevicePhysics

__all__ = ["NodeRun", "NodeTotals"]


class NodeTotals(NamedTuple):
    """A node's figures over the time advanced so far."""

    energy_j: float  # ∫P dt (idle, tenants and services)
    base_j: float  # the part at the stage-idle power
    busy_j: float  # the services' dynamic part (= sum of request_energy_j over the services)
    peak_temp_c: float  # highest temperature at a change instant or advance call
    throttled_s: float  # time below the top frequency
    time_at_step_s: tuple[float, ...]  # time at each step of the ladder


class NodeRun:
    """A node's state, change instants and energy over one run (see the module docstring).

    Per-call work is a handful of float operations: the powers and the factor of the current conditions
    are cached and recomputed only when the step or the tenant load changes (the simulator calls
    :meth:`advance` once per node per governor period).
    """

    def __init__(self, phys: DevicePhysics, end_s: float, rng: np.random.Generator) -> None:
        self.phys = phys
        times, shares, watts = tenant_schedule(phys.tenant, end_s, rng)
        # the tenants' schedule: from tenant_times_s[j] on they take tenant_shares[j] and draw tenant_watts[j]
        self.tenant_times_s: list[float] = times.tolist()
        self.tenant_shares: list[float] = shares.tolist()
        self.tenant_watts: list[float] = watts.tolist()
        self._th = phys.thermal
        self._period_s = phys.dvfs.period_s
        self._soft_c = phys.dvfs.soft_limit_c
        self._next_tenant = 1  # index of the next tenant change
        self._share = self.tenant_shares[0]
        self._watt = self.tenant_watts[0]
        self._n_gov = 1  # the next governor instant is n x period_s
        start = initial_state(phys)
        self._temp_c = start.temp_c
        self._step = start.freq_index
        self.t_s = 0.0
        self._total_j = self._base_j = self._busy_j = 0.0
        self._peak_c = self._temp_c
        self._at_step = [0.0] * len(phys.dvfs.freqs_mhz)
        # conditions by change instant: from edges_s[j] on, step steps[j] and tenant share shares[j]
        self.edges_s: list[float] = [0.0]
        self.steps: list[int] = [self._step]
        self.shares: list[float] = [self._share]
        self._dyn_memo: dict[tuple[int, float], float] = {}
        self._conditions()

    def _conditions(self) -> None:
        """Cache the powers and the factor of the current conditions, and the next change instant."""
        phys, step, share = self.phys, self._step, self._share
        self._base_w = node_power_w(phys, step, False, share, self._watt)
        self._dyn_w = self._dyn(step, share)
        # the service-time multiplier now: (f_max / f)^alpha x the tenants' slowdown
        self.factor = freq_factor(phys, step) * tenant_slowdown(phys, share)
        self._schedule_next()

    def _schedule_next(self) -> None:
        gov = self._n_gov * self._period_s
        k = self._next_tenant
        ten = self.tenant_times_s[k] if k < len(self.tenant_times_s) else math.inf
        self.next_s = gov if gov <= ten else ten  # the next change instant (governor decision or tenant change)

    @property
    def state(self) -> NodeState:
        """Temperature and frequency step now."""
        return NodeState(self._temp_c, self._step)

    @property
    def tenant_share(self) -> float:
        """Share of the node's cores the tenants take now."""
        return self._share

    def advance(self, t_s: float, busy: np.ndarray | Sequence[Sequence[float]]) -> float:
        """Integrate to ``t_s`` (not beyond :attr:`next_s`); at a change instant apply it.  Returns T(t_s)."""
        t0_s = self.t_s
        if not t0_s <= t_s <= self.next_s:
            raise ValueError(f"NodeRun.advance: t_s = {t_s} outside [{t0_s}, next change {self.next_s}]")
        pairs = busy.tolist() if isinstance(busy, np.ndarray) else busy
        temp_c, busy_s = rc_period(self._th, self._temp_c, t0_s, t_s, pairs, self._base_w, self._dyn_w)
        h_s = t_s - t0_s
        base_j = self._base_w * h_s
        busy_j = self._dyn_w * busy_s
        self._total_j += base_j + busy_j
        self._base_j += base_j
        self._busy_j += busy_j
        self._at_step[self._step] += h_s
        self.t_s = t_s
        self._temp_c = temp_c
        if temp_c > self._peak_c:
            self._peak_c = temp_c
        if t_s == self.next_s:
            self._change(t_s)
        return temp_c

    def _change(self, t_s: float) -> None:
        """Apply the governor's decision and / or the tenant change due at ``t_s``; record new conditions."""
        step, share, watt = self._step, self._share, self._watt
        if self._n_gov * self._period_s == t_s:
            if step or self._temp_c >= self._soft_c:  # at the top step below the first threshold: stays
                self._step = govern(self.phys.dvfs, step, self._temp_c)
            self._n_gov += 1
        k = self._next_tenant
        if k < len(self.tenant_times_s) and self.tenant_times_s[k] == t_s:
            self._share, self._watt = self.tenant_shares[k], self.tenant_watts[k]
            self._next_tenant = k + 1
        if self._step != step or self._share != share or self._watt != watt:
            self.edges_s.append(t_s)
            self.steps.append(self._step)
            self.shares.append(self._share)
            self._conditions()
        else:
            self._schedule_next()

    def request_energy_j(self, start_s: float, end_s: float) -> float:
        """A service's dynamic energy over ``[start_s, end_s)``, split where the conditions changed.

        Uses the same powers as :meth:`advance`, so the services' energies sum to ``totals().busy_j``
        (up to rounding) when the same intervals were passed to :meth:`advance`.  Call it once the run
        has been advanced past ``end_s``.
        """
        edges = self.edges_s
        j = max(bisect_right(edges, start_s) - 1, 0)
        total = 0.0
        while j < len(edges) and edges[j] < end_s:
            a = start_s if start_s > edges[j] else edges[j]
            b = edges[j + 1] if j + 1 < len(edges) and edges[j + 1] < end_s else end_s
            if b > a:
                total += self._dyn(self.steps[j], self.shares[j]) * (b - a)
            j += 1
        return total

    def _dyn(self, step: int, share: float) -> float:
        key = (step, share)
        w = self._dyn_memo.get(key)
        if w is None:
            w = self._dyn_memo[key] = dynamic_power_w(self.phys, step, share)
        return w

    def totals(self) -> NodeTotals:
        """Energy, peak temperature and time per frequency step so far."""
        at = tuple(self._at_step)
        return NodeTotals(self._total_j, self._base_j, self._busy_j, self._peak_c, math.fsum(at[1:]), at)
