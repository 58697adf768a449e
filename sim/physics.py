"""Device physics in the simulator: each node's temperature, DVFS step, tenants and energy, advanced at
control instants by ``sim.control`` — the same code for the reference model and the fast path.

The physics itself is ``edgeprune.physics``: every node of the run lives in one flat state
(:class:`~edgeprune.physics.flat.Nodes`) stepped by :func:`~edgeprune.physics.flat.heat_step`, the one
implementation of a node's run (``NodeRun`` reads the same state).  It runs as plain Python for the
reference model and short runs, and compiled by numba with the compiled fast path, where a Python step per
node and instant would cost more than the requests between instants.  Power only changes at the edges of a
node's busy intervals and frequencies only at the governor's decision instants (``n × dvfs.period_s``), so
the fast path stays exact: it advances the requests to an instant, and only then is the node's heat
integrated over the busy intervals the requests left.  A node is also integrated to every controller tick,
so an observation's temperature and a period's energy are exact there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edgeprune.physics import DevicePhysics, NodeFigures, NodeRun, dynamic_power_w, flat, run_figures, tenant_schedule
from edgeprune.physics.flat import build_nodes
from sim import kernels
from sim.core import SimSetup

__all__ = ["Heat", "NodeHeat", "Services"]


class Services(Protocol):
    """What the physics reads from a request path: every stage's service starts and times so far."""

    def services(self) -> tuple[Any, Any, Any]:
        """``(start_s, service_s, started)``: ``[k][i]`` rows over requests; stage ``k``'s first
        ``started[k]`` requests have started."""
        ...


class NodeHeat:
    """The physics of the node that ran stage ``k``, read after the run (``run``: a view of its state)."""

    def __init__(self, k: int, phys: DevicePhysics, run: NodeRun) -> None:
        self.k = k
        self.phys = phys
        self.run = run

    def figures(self) -> NodeFigures:
        """The node's figures so far (``edgeprune.physics.physics_summary`` sums them over the nodes)."""
        return run_figures(self.phys, self.run)

    def request_energy_j(self, start_s: np.ndarray, service_s: np.ndarray, end_s: float) -> np.ndarray:
        """Each service's dynamic energy ``∫ (P(busy) - P(idle)) dt`` within the run (NaN where not served).

        The node's dynamic power is constant between its change instants (``NodeRun.edges_s``), so a
        service's energy is the difference of the cumulative dynamic energy at its end and at its start,
        vectorised over the requests; the sum equals the node's ``busy_j`` up to rounding.
        """
        run = self.run
        edges = np.asarray(run.edges_s)
        power = np.array([dynamic_power_w(self.phys, f, sh) for f, sh in zip(run.steps, run.shares, strict=True)])
        ends = np.append(edges[1:], end_s)
        cum = np.concatenate(([0.0], np.cumsum(power * (ends - edges))))

        def energy_at(t: np.ndarray) -> np.ndarray:
            j = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 1)
            return cum[j] + power[j] * (np.minimum(t, ends[j]) - edges[j])

        b = np.minimum(start_s, end_s)
        return energy_at(np.minimum(b + service_s, end_s)) - energy_at(b)


class Heat:
    """Every node with physics in one run, one :class:`~edgeprune.physics.flat.Nodes` state, stepped by
    ``sim.control`` at its instants: plain Python, or compiled (numpy state) for the compiled fast path."""

    def __init__(
        self,
        physics: Sequence[DevicePhysics | None],
        seeds: Sequence[np.random.SeedSequence],
        end_s: float,
        read: np.ndarray,
        compiled: bool = False,
    ) -> None:
        for k, phys in enumerate(physics):
            if phys is not None and phys.tenant and k >= len(seeds):
                raise ValueError(f"stage {k}'s node has tenants but no seed was passed to draw them")
        self.stages = [k for k, phys in enumerate(physics) if phys is not None]
        self.physics = [p for p in physics if p is not None]
        tenants = []
        for k, phys in zip(self.stages, self.physics, strict=True):
            times, shares, watts = tenant_schedule(
                phys.tenant, end_s, np.random.default_rng(seeds[k] if k < len(seeds) else 0)
            )
            tenants.append((times.tolist(), shares.tolist(), watts.tolist()))
        self.nd = build_nodes(self.physics, self.stages, tenants, end_s, read, compiled)
        self.step = kernels.compiled_heat(self.nd) if compiled else flat.heat_step
        self.next_s = min(float(self.nd.small[j][flat.FST][flat.NEXT_S]) for j in range(len(self.stages)))
        self.n_changed = 0  # nodes whose factor the last step changed (``changes``)

    @classmethod
    def of(cls, setup: SimSetup, compiled: bool, read: np.ndarray) -> Heat | None:
        """The physics of a run's nodes, compiled for the compiled fast path, logging each tick's readings in
        ``read`` (``[tick][stage][PHYSICS_TIMELINE]``, the request path's log); ``None`` without physics."""
        if not setup.has_physics:
            return None
        return cls(setup.physics, setup.tenant_seeds, setup.end_s, read, compiled)

    def factors(self) -> list[tuple[int, float]]:
        """``(stage, factor)`` of every node now."""
        return [(k, float(self.nd.small[j][flat.FST][flat.FACTOR])) for j, k in enumerate(self.stages)]

    def at(self, t_s: float, row: int, period_s: float, path: Services) -> None:
        """At a control instant: integrate the nodes that need it (at a tick, ``row >= 0``, every node, and
        then log their readings in row ``row``; ``DUE_ONLY``: the nodes whose change is due) over the
        services ``path`` ran.  The compiled fast path does the same in its own kernel call
        (``sim.kernels.step_heat``) and records the outcome here as this does: ``n_changed``, ``next_s``."""
        start, svc, started = path.services()
        self.n_changed, self.next_s = self.step(self.nd, t_s, row, period_s, start, svc, started)

    def changes(self) -> list[tuple[int, float]]:
        """``(stage, factor)`` of the nodes whose service-time factor the last step changed."""
        if not self.n_changed:
            return []
        nd = self.nd
        return [
            (k, float(nd.small[j][flat.FST][flat.FACTOR]))
            for j, k in enumerate(self.stages)
            if nd.ints[j][flat.IST][flat.CHANGED]
        ]

    def finish(self, end_s: float, path: Services) -> dict[int, NodeHeat]:
        """Integrate every node to the end of the run; the nodes by stage."""
        start, svc, started = path.services()
        self.step(self.nd, end_s, flat.ALL_NODES, 0.0, start, svc, started)
        return {
            k: NodeHeat(k, phys, NodeRun.of(phys, self.nd, j))
            for j, (k, phys) in enumerate(zip(self.stages, self.physics, strict=True))
        }
