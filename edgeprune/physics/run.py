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
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edgeprune.physics import flat
from edgeprune.physics.flat import READ_COLS, Nodes, build_nodes
from edgeprune.physics.model import NodeState, dynamic_energy_j, tenant_schedule
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

    A view of node ``j`` of a :class:`~edgeprune.physics.flat.Nodes` state, whose functions are the one
    implementation of the physics: :class:`NodeRun` builds its own one-node state; the simulator builds one
    state for all its nodes (compiled in its fast path) and reads each node through :meth:`of`.
    """

    def __init__(self, phys: DevicePhysics, end_s: float, rng: np.random.Generator) -> None:
        times, shares, watts = tenant_schedule(phys.tenant, end_s, rng)
        tenants = [(times.tolist(), shares.tolist(), watts.tolist())]
        nodes = build_nodes([phys], [0], tenants, end_s, np.full((1, 1, READ_COLS), np.nan), False)
        self._bind(phys, nodes, 0)

    @classmethod
    def of(cls, phys: DevicePhysics, nodes: Nodes, j: int) -> NodeRun:
        """Node ``j`` of a shared state (lists or numpy arrays)."""
        run = cls.__new__(cls)
        run._bind(phys, nodes, j)
        return run

    def _bind(self, phys: DevicePhysics, nodes: Nodes, j: int) -> None:
        self.phys = phys
        self._nd, self._j = nodes, j
        self._fst, self._ist = nodes.small[j][flat.FST], nodes.ints[j][flat.IST]
        n_ten = int(nodes.ints[j][flat.NPAR][flat.N_TEN])
        ten = nodes.ten[j]
        # the tenants' schedule: from tenant_times_s[j] on they take tenant_shares[j] and draw tenant_watts[j]
        self.tenant_times_s: list[float] = [float(x) for x in ten[flat.TEN_T][:n_ten]]
        self.tenant_shares: list[float] = [float(x) for x in ten[flat.TEN_SHARE][:n_ten]]
        self.tenant_watts: list[float] = [float(x) for x in ten[flat.TEN_W][:n_ten]]

    @property
    def t_s(self) -> float:
        """Time advanced to."""
        return float(self._fst[flat.T_S])

    @property
    def next_s(self) -> float:
        """The next change instant (governor decision or tenant change)."""
        return float(self._fst[flat.NEXT_S])

    @property
    def factor(self) -> float:
        """The service-time multiplier now: ``(f_max / f)^alpha`` x the tenants' slowdown."""
        return float(self._fst[flat.FACTOR])

    @property
    def state(self) -> NodeState:
        """Temperature and frequency step now."""
        return NodeState(float(self._fst[flat.TEMP]), int(self._ist[flat.STEP]))

    @property
    def tenant_share(self) -> float:
        """Share of the node's cores the tenants take now."""
        return float(self._fst[flat.SHARE])

    @property
    def edges_s(self) -> list[float]:
        """The change instants at which the conditions changed (the first is 0)."""
        return [float(x) for x in self._nd.edges[self._j][flat.EDGE_T][: self._n_edges()]]

    @property
    def steps(self) -> list[int]:
        """The frequency step from each of :attr:`edges_s` on."""
        return [int(x) for x in self._nd.edges[self._j][flat.EDGE_STEP][: self._n_edges()]]

    @property
    def shares(self) -> list[float]:
        """The tenants' share from each of :attr:`edges_s` on."""
        return [float(x) for x in self._nd.edges[self._j][flat.EDGE_SHARE][: self._n_edges()]]

    def _n_edges(self) -> int:
        return int(self._ist[flat.N_EDGES])

    def advance(self, t_s: float, busy: np.ndarray | Sequence[Sequence[float]]) -> float:
        """Integrate to ``t_s`` (not beyond :attr:`next_s`) over the busy intervals ``busy`` (``[m, 2]``:
        start, end; clipped to the period); at a change instant apply it.  Returns T(t_s)."""
        if not self.t_s <= t_s <= self.next_s:
            raise ValueError(f"NodeRun.advance: t_s = {t_s} outside [{self.t_s}, next change {self.next_s}]")
        self._room()
        pairs = busy.tolist() if isinstance(busy, np.ndarray) else busy
        starts = [float(p[0]) for p in pairs]
        ends = [float(p[1]) for p in pairs]
        flat.advance_node(self._nd, self._j, t_s, starts, ends, 0, len(starts), False)
        return float(self._fst[flat.TEMP])

    def _room(self) -> None:
        """A one-node state of lists grows its change log when a caller goes on past the run's end."""
        rows = self._nd.edges[self._j]
        if self._n_edges() + 1 < len(rows[0]) or not isinstance(rows[0], list):
            return
        for row in rows:
            row.extend([0.0] * len(row))

    def request_energy_j(self, start_s: float, end_s: float) -> float:
        """A service's dynamic energy over ``[start_s, end_s)``, split where the conditions changed.

        :func:`~edgeprune.physics.model.dynamic_energy_j` over the recorded conditions: the same powers
        as :meth:`advance`, so the services' energies sum to ``totals().busy_j`` (up to rounding) when the
        same intervals were passed to :meth:`advance`.  Call it once the run is past ``end_s``.
        """
        return dynamic_energy_j(self.phys, start_s, end_s, self.edges_s, self.steps, self.shares)

    def totals(self) -> NodeTotals:
        """Energy, peak temperature and time per frequency step so far."""
        f = self._fst
        n_steps = int(self._nd.ints[self._j][flat.NPAR][flat.N_STEPS])
        at = tuple(float(x) for x in self._nd.small[self._j][flat.AT_STEP][:n_steps])
        return NodeTotals(
            float(f[flat.TOTAL_J]),
            float(f[flat.BASE_J]),
            float(f[flat.BUSY_J]),
            float(f[flat.PEAK]),
            math.fsum(at[1:]),
            at,
        )
