"""Device physics in the simulator: each node's temperature, DVFS step, tenants and energy, advanced at
control instants by ``sim.control`` — the same code for the reference model and the fast path.

The coupling (``edgeprune.physics``): the node's busy intervals and its tenants' load give its power,
constant between interval edges; the RC equation is integrated exactly over each constant piece; at every
governor decision instant (``n × dvfs.period_s``) the governor picks the frequency step from the
temperature; the service-time factor ``(f_max / f)^alpha × tenant slowdown`` then holds until the next
instant, as an environment factor does — taken at each service's start.  Because power only changes at
interval edges and frequencies only at instants, the fast path stays exact: it advances the requests to
an instant, and only then is the node's heat integrated over the busy intervals the requests left.

A node is integrated up to every controller tick too (so an observation's temperature and a period's
energy are exact at the tick) and at every tenant change (the tenant's power is constant in between).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeprune.physics import (
    DevicePhysics,
    NodeState,
    advance,
    dynamic_power_w,
    freq_factor,
    govern,
    initial_state,
    tenant_slowdown,
)

__all__ = ["Heat", "NodeHeat", "NodeLog", "Services", "TenantSchedule"]

TenantSchedule = tuple[np.ndarray, np.ndarray, np.ndarray]  # times_s, share, extra_w (edgeprune.physics)
NO_READING = (math.nan, math.nan, False)  # temp_c, freq_mhz, throttled of a stage without physics


class Services(Protocol):
    """What the physics reads from a request path: stage ``k``'s service starts and times so far."""

    def services(self, k: int) -> tuple[Sequence[float], Sequence[float], int]:
        """``(start_s, service_s, n_started)``: rows over requests; the first ``n_started`` have started."""
        ...


@dataclass
class NodeLog:
    """One node's history: one entry per integrated piece ``[t0_s[j], t0_s[j+1])`` (the last ends at the
    run's end) with the step in force, the tenants' share and the piece's energies; and the temperature
    at every piece's end."""

    t0_s: list[float] = field(default_factory=list)
    freq_index: list[int] = field(default_factory=list)
    share: list[float] = field(default_factory=list)
    total_j: list[float] = field(default_factory=list)
    base_j: list[float] = field(default_factory=list)
    busy_j: list[float] = field(default_factory=list)
    temp_end_c: list[float] = field(default_factory=list)


class NodeHeat:
    """The physics of the node that runs stage ``k``."""

    def __init__(self, k: int, phys: DevicePhysics, tenants: TenantSchedule) -> None:
        self.k = k
        self.phys = phys
        self.state: NodeState = initial_state(phys)
        self.t_s = 0.0  # integrated up to here
        self.first = 0  # the first request whose service may still overlap the next piece
        self.tenant_times, self.tenant_share, self.tenant_w = (np.asarray(a).tolist() for a in tenants)
        self.j = 0  # tenant schedule entry in force
        self.next_gov = 1
        self.log = NodeLog()
        self.tick_energy_j = 0.0  # since the last controller tick
        self.peak_c = self.state.temp_c

    @property
    def factor(self) -> float:
        """Service-time factor now: frequency step x tenant slowdown."""
        share = self.tenant_share[self.j]
        return freq_factor(self.phys, self.state.freq_index) * tenant_slowdown(self.phys, share)

    @property
    def next_s(self) -> float:
        """The node's next governor decision or tenant change."""
        gov = self.next_gov * self.phys.dvfs.period_s
        ten = self.tenant_times[self.j + 1] if self.j + 1 < len(self.tenant_times) else math.inf
        return gov if gov <= ten else ten

    def integrate(self, t_s: float, path: Services) -> None:
        """Heat and energy over ``[self.t_s, t_s)`` from the services that ran in it."""
        if t_s <= self.t_s:
            return
        start, svc, n = path.services(self.k)
        spans: list[Sequence[float]] = []
        i = self.first
        while i < n:
            spans.append((start[i], start[i] + svc[i]))
            i += 1
        while self.first < n and not start[self.first] + svc[self.first] > t_s:  # ended (or dropped: NaN)
            self.first += 1
        share, watts = self.tenant_share[self.j], self.tenant_w[self.j]
        state, energy = advance(self.phys, self.state, self.t_s, t_s, spans, share, watts)
        log = self.log
        log.t0_s.append(self.t_s)
        log.freq_index.append(state.freq_index)
        log.share.append(share)
        log.total_j.append(energy.total_j)
        log.base_j.append(energy.base_j)
        log.busy_j.append(energy.busy_j)
        log.temp_end_c.append(state.temp_c)
        self.tick_energy_j += energy.total_j
        self.peak_c = max(self.peak_c, state.temp_c)
        self.state, self.t_s = state, t_s

    def decide(self, t_s: float) -> bool:
        """The governor's decision and tenant changes due at ``t_s``; whether the factor changed."""
        before = (self.state.freq_index, self.j)
        if self.next_gov * self.phys.dvfs.period_s == t_s:
            self.state = NodeState(self.state.temp_c, govern(self.phys.dvfs, self.state.freq_index, self.state.temp_c))
            self.next_gov += 1
        while self.j + 1 < len(self.tenant_times) and self.tenant_times[self.j + 1] == t_s:
            self.j += 1
        return (self.state.freq_index, self.j) != before

    def request_energy_j(self, start_s: np.ndarray, service_s: np.ndarray, end_s: float) -> np.ndarray:
        """Each service's dynamic energy ``∫ (P(busy) - P(idle)) dt`` within the run (NaN where not served):
        the node's dynamic power is constant on every logged piece, so a service's energy is the difference
        of the cumulative dynamic energy at its end and its start (vectorised over the requests)."""
        log = self.log
        edges = np.asarray(log.t0_s)
        power = np.array([dynamic_power_w(self.phys, f, sh) for f, sh in zip(log.freq_index, log.share, strict=True)])
        ends = np.append(edges[1:], end_s)
        cum = np.concatenate(([0.0], np.cumsum(power * (ends - edges))))

        def energy_at(t: np.ndarray) -> np.ndarray:
            j = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 1)
            return cum[j] + power[j] * (np.minimum(t, ends[j]) - edges[j])

        b = np.minimum(start_s, end_s)
        return energy_at(np.minimum(b + service_s, end_s)) - energy_at(b)

    def reading(self) -> tuple[float, float, bool]:
        """What the node exposes: temperature, frequency, throttled flag."""
        idx = self.state.freq_index
        return self.state.temp_c, self.phys.dvfs.freqs_mhz[idx], idx > 0


class Heat:
    """Every node with physics in one run, stepped by ``sim.control`` at its instants."""

    def __init__(self, physics: Sequence[DevicePhysics | None], tenants: Sequence[TenantSchedule | None]) -> None:
        self.nodes = [
            NodeHeat(k, phys, tenants[k] or _no_tenants()) for k, phys in enumerate(physics) if phys is not None
        ]
        self.n_stages = len(physics)

    def next_s(self) -> float:
        """The earliest next physics instant of any node."""
        return min(node.next_s for node in self.nodes)

    def factors(self) -> list[tuple[int, float]]:
        """``(stage, factor)`` of every node now."""
        return [(node.k, node.factor) for node in self.nodes]

    def at(self, t_s: float, tick: bool, path: Services) -> list[tuple[int, float]]:
        """At a control instant: integrate the nodes that need it, decide, and the factors that changed."""
        changed = []
        for node in self.nodes:
            due = node.next_s == t_s
            if tick or due:
                node.integrate(t_s, path)
            if due and node.decide(t_s):
                changed.append((node.k, node.factor))
        return changed

    def readings(self) -> list[tuple[float, float, bool]]:
        """Per stage: temperature, frequency, throttled (NaN / NaN / False where no physics)."""
        out = [NO_READING] * self.n_stages
        for node in self.nodes:
            out[node.k] = node.reading()
        return out

    def tick_power(self, period_s: float) -> list[float]:
        """Per stage: mean power since the last tick (NaN where no physics, or at the start tick); resets."""
        out = [math.nan] * self.n_stages
        for node in self.nodes:
            out[node.k] = node.tick_energy_j / period_s if period_s > 0 else math.nan
            node.tick_energy_j = 0.0
        return out

    def finish(self, end_s: float, path: Services) -> dict[int, Any]:
        """Integrate every node to the end of the run; per stage, its log and physics."""
        for node in self.nodes:
            node.integrate(end_s, path)
        return {node.k: node for node in self.nodes}


def _no_tenants() -> TenantSchedule:
    return np.zeros(1), np.zeros(1), np.zeros(1)


def physics_summary(nodes: Sequence[NodeHeat], completed: int, end_s: float) -> dict[str, Any]:
    """The run's physics figures (``summary.json``), over ``[0, end_s)`` and every node with physics:
    total energy (idle included), energy per completed inference, mean power, the peak temperature at the
    integration instants (the governor's sampling), node-seconds below the top frequency and at each step."""
    energy_j = math.fsum(j for node in nodes for j in node.log.total_j)
    at_freq: dict[str, float] = {}
    throttled_s = 0.0
    for node in nodes:
        log = node.log
        ends = [*log.t0_s[1:], end_s]
        for t0, t1, idx in zip(log.t0_s, ends, log.freq_index, strict=True):
            key = f"{node.phys.dvfs.freqs_mhz[idx]:g}"
            at_freq[key] = at_freq.get(key, 0.0) + (t1 - t0)
            throttled_s += (t1 - t0) if idx > 0 else 0.0
    return {
        "energy_j": energy_j,
        "energy_per_inference_j": energy_j / completed if completed else None,
        "mean_power_w": energy_j / end_s if end_s > 0 else None,
        "peak_temp_c": max(node.peak_c for node in nodes),
        "throttled_s": throttled_s,
        "time_at_freq_s": dict(sorted(at_freq.items(), key=lambda kv: -float(kv[0]))),
    }
