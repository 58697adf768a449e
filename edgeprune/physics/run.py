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
    advance,
    dynamic_power_w,
    freq_factor,
    govern,
    initial_state,
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
    """A node's state, change instants and energy over one run (see the module docstring)."""

    def __init__(self, phys: DevicePhysics, end_s: float, rng: np.random.Generator) -> None:
        self.phys = phys
        times, shares, watts = tenant_schedule(phys.tenant, end_s, rng)
        # the tenants' schedule: from tenant_times_s[j] on they take tenant_shares[j] and draw tenant_watts[j]
        self.tenant_times_s = times.tolist()
        self.tenant_shares = shares.tolist()
        self.tenant_watts = watts.tolist()
        self._next_tenant = 1  # index of the next tenant change
        self._share = self.tenant_shares[0]
        self._watt = self.tenant_watts[0]
        self._n_gov = 1  # the next governor instant is n x period_s
        self.state: NodeState = initial_state(phys)
        self.t_s = 0.0
        self._energy = [0.0, 0.0, 0.0]  # total, base, busy
        self._peak_c = self.state.temp_c
        self._at_step = [0.0] * len(phys.dvfs.freqs_mhz)
        # conditions by change instant: from edges_s[j] on, step steps[j] and tenant share shares[j]
        self.edges_s: list[float] = [0.0]
        self.steps: list[int] = [self.state.freq_index]
        self.shares: list[float] = [self._share]
        self._dyn_w: dict[tuple[int, float], float] = {}

    @property
    def next_s(self) -> float:
        """The next change instant (a governor decision or a tenant change)."""
        gov = self._n_gov * self.phys.dvfs.period_s
        ten = self.tenant_times_s[self._next_tenant] if self._next_tenant < len(self.tenant_times_s) else math.inf
        return gov if gov <= ten else ten

    @property
    def factor(self) -> float:
        """Service-time multiplier now: ``(f_max / f)^alpha`` x the tenants' slowdown."""
        return freq_factor(self.phys, self.state.freq_index) * tenant_slowdown(self.phys, self._share)

    @property
    def tenant_share(self) -> float:
        """Share of the node's cores the tenants take now."""
        return self._share

    def advance(self, t_s: float, busy: np.ndarray | Sequence[Sequence[float]]) -> NodeState:
        """Integrate to ``t_s`` (not beyond :attr:`next_s`); at a change instant, apply the change."""
        nxt = self.next_s
        if t_s > nxt or t_s < self.t_s:
            raise ValueError(f"NodeRun.advance: t_s = {t_s} outside [{self.t_s}, next change {nxt}]")
        state, e = advance(self.phys, self.state, self.t_s, t_s, busy, self._share, self._watt)
        self._account(t_s - self.t_s, e.total_j, e.base_j, e.busy_j)
        self.t_s = t_s
        self._peak_c = max(self._peak_c, state.temp_c)
        if t_s == nxt:
            state = self._change(state, t_s)
        self.state = state
        return state

    def _account(self, h_s: float, total_j: float, base_j: float, busy_j: float) -> None:
        en = self._energy
        en[0] += total_j
        en[1] += base_j
        en[2] += busy_j
        self._at_step[self.state.freq_index] += h_s

    def _change(self, state: NodeState, t_s: float) -> NodeState:
        """Apply the governor's decision and / or the tenant change due at ``t_s``; record the conditions."""
        period_s = self.phys.dvfs.period_s
        if self._n_gov * period_s == t_s:
            state = NodeState(state.temp_c, govern(self.phys.dvfs, state.freq_index, state.temp_c))
            self._n_gov += 1
        k = self._next_tenant
        if k < len(self.tenant_times_s) and self.tenant_times_s[k] == t_s:
            self._share, self._watt = self.tenant_shares[k], self.tenant_watts[k]
            self._next_tenant = k + 1
        if state.freq_index != self.steps[-1] or self._share != self.shares[-1]:
            self.edges_s.append(t_s)
            self.steps.append(state.freq_index)
            self.shares.append(self._share)
        return state

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
        w = self._dyn_w.get(key)
        if w is None:
            w = self._dyn_w[key] = dynamic_power_w(self.phys, step, share)
        return w

    def totals(self) -> NodeTotals:
        """Energy, peak temperature and time per frequency step so far."""
        at = tuple(self._at_step)
        return NodeTotals(self._energy[0], self._energy[1], self._energy[2], self._peak_c, math.fsum(at[1:]), at)
