"""Device physics in the simulator: each node's temperature, DVFS step, tenants and energy, advanced at
control instants by ``sim.control`` — the same code for the reference model and the fast path.

The physics itself is ``edgeprune.physics`` (:class:`~edgeprune.physics.NodeRun`: the node's change
instants, service-time factor and exact RC integration); this module hands it what the simulated requests
did.  Power only changes at the edges of a node's busy intervals and frequencies only at the governor's
decision instants (``n × dvfs.period_s``), so the fast path stays exact: it advances the requests to an
instant, and only then is the node's heat integrated over the busy intervals the requests left.  A node
is also integrated to every controller tick, so an observation's temperature and a period's energy are
exact there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from edgeprune.physics import DevicePhysics, NodeFigures, NodeRun, dynamic_power_w, run_figures

__all__ = ["NO_READING", "Heat", "NodeHeat", "Services"]

NO_READING = (math.nan, math.nan, False)  # temp_c, freq_mhz, throttled of a stage without physics


class Services(Protocol):
    """What the physics reads from a request path: stage ``k``'s service starts and times so far."""

    def services(self, k: int) -> tuple[Sequence[float], Sequence[float], int]:
        """``(start_s, service_s, n_started)``: rows over requests; the first ``n_started`` have started."""
        ...


class NodeHeat:
    """The physics of the node that runs stage ``k``, fed with that stage's services."""

    def __init__(self, k: int, phys: DevicePhysics, end_s: float, rng: np.random.Generator) -> None:
        self.k = k
        self.phys = phys
        self.run = NodeRun(phys, end_s, rng)
        self.first = 0  # the first request whose service may still overlap the next integration
        self.tick_energy_j = 0.0  # the node's energy at the last controller tick

    def integrate(self, t_s: float, path: Services) -> None:
        """Advance the node to ``t_s`` over the services that ran since the last call."""
        start, svc, n = path.services(self.k)
        spans = [(start[i], start[i] + svc[i]) for i in range(self.first, n)]
        while self.first < n and not start[self.first] + svc[self.first] > t_s:  # ended (or dropped: NaN)
            self.first += 1
        self.run.advance(t_s, spans)

    def reading(self) -> tuple[float, float, bool]:
        """What the node exposes: temperature, frequency, throttled flag."""
        state = self.run.state
        return state.temp_c, self.phys.dvfs.freqs_mhz[state.freq_index], state.freq_index > 0

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
    """Every node with physics in one run, stepped by ``sim.control`` at its instants."""

    def __init__(
        self, physics: Sequence[DevicePhysics | None], seeds: Sequence[np.random.SeedSequence], end_s: float
    ) -> None:
        for k, phys in enumerate(physics):
            if phys is not None and phys.tenant and k >= len(seeds):
                raise ValueError(f"stage {k}'s node has tenants but no seed was passed to draw them")
        self.nodes = [
            NodeHeat(k, phys, end_s, np.random.default_rng(seeds[k] if k < len(seeds) else 0))
            for k, phys in enumerate(physics)
            if phys is not None
        ]
        self.n_stages = len(physics)

    def next_s(self) -> float:
        """The earliest next change instant of any node (a governor decision or a tenant change)."""
        return min(node.run.next_s for node in self.nodes)

    def factors(self) -> list[tuple[int, float]]:
        """``(stage, factor)`` of every node now."""
        return [(node.k, node.run.factor) for node in self.nodes]

    def at(self, t_s: float, tick: bool, path: Services) -> list[tuple[int, float]]:
        """At a control instant: integrate the nodes that need it (their change applies at their instant);
        the ``(stage, factor)`` that changed."""
        changed = []
        for node in self.nodes:
            run = node.run
            due = run.next_s == t_s
            if tick or due:
                before = run.factor
                node.integrate(t_s, path)
                if due and run.factor != before:
                    changed.append((node.k, run.factor))
        return changed

    def readings(self) -> list[tuple[float, float, bool]]:
        """Per stage: temperature, frequency, throttled (NaN / NaN / False where no physics)."""
        out = [NO_READING] * self.n_stages
        for node in self.nodes:
            out[node.k] = node.reading()
        return out

    def tick_power(self, period_s: float) -> list[float]:
        """Per stage: mean power since the last tick (NaN where no physics, or at the start tick)."""
        out = [math.nan] * self.n_stages
        for node in self.nodes:
            energy_j = node.run.totals().energy_j
            out[node.k] = (energy_j - node.tick_energy_j) / period_s if period_s > 0 else math.nan
            node.tick_energy_j = energy_j
        return out

    def finish(self, end_s: float, path: Services) -> dict[int, NodeHeat]:
        """Integrate every node to the end of the run; the nodes by stage."""
        for node in self.nodes:
            node.integrate(end_s, path)
        return {node.k: node for node in self.nodes}
