"""From a scenario to results: compile the numbers, draw the random streams, run every policy.

Random streams come from ``numpy.random.SeedSequence(seed)``: child 0 draws the arrivals, child 1 the
per-request service quantiles.  Every policy of a scenario sees the *same* arrivals and the same
quantiles (common random numbers), so differences between policies are the policies' doing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from edgeprune.controller import PipelineCurves, PolicySpec, make_policy
from edgeprune.environment import factor_changes, merged_schedule
from edgeprune.physics import DevicePhysics, physics_summary
from edgeprune.profile import Profile
from edgeprune.records import request_accuracy, requests_table, timeline_table
from edgeprune.results import RunResult, summarise
from edgeprune.scenario import Scenario, arrivals_end_s, hop_time_s
from sim.engine import DONE, NO_LEVEL, EngineOutput, Path, SimSetup, simulate

__all__ = ["Streams", "compile_setup", "curves_for", "draw_streams", "run_policy", "run_scenario"]


@dataclass(frozen=True)
class Streams:
    """The random inputs of a run, shared by all its policies."""

    arrivals_s: np.ndarray
    quantiles: np.ndarray  # [n_stages, n]
    tenant_seeds: tuple[np.random.SeedSequence, ...] = ()  # per stage: draws its node's tenants (if any)


def draw_streams(sc: Scenario, seed: int | None = None) -> Streams:
    """Arrival times and service quantiles for the scenario's seed (or ``seed``)."""
    from traces import generate

    root = np.random.SeedSequence(sc.seed if seed is None else seed)
    arr_seq, svc_seq, tenant_seq = root.spawn(3)  # children 0 and 1 are the same whatever the count
    arrivals = generate(sc.arrivals, np.random.default_rng(arr_seq), duration_s=sc.duration_s, n_requests=sc.n_requests)
    quantiles = np.random.default_rng(svc_seq).random((len(sc.stages), arrivals.size))
    return Streams(
        arrivals_s=np.ascontiguousarray(arrivals, dtype=np.float64),
        quantiles=quantiles,
        tenant_seeds=tuple(tenant_seq.spawn(len(sc.stages))),
    )


def _stage_factors(sc: Scenario) -> tuple[tuple[float, ...], tuple[tuple[float, int, float], ...]]:
    """Initial factor per stage and the time-sorted factor changes (1/speed x active slowdowns)."""
    initial: list[float] = []
    per_time: list[tuple[float, int, float]] = []
    for k in range(len(sc.stages)):
        dev = sc.device_of(k)
        schedule = merged_schedule([ev for ev in sc.environment if ev.device == dev.name], start=1.0 / dev.speed)
        initial.append(schedule[0][1])
        per_time += [(t, k, f) for t, f in factor_changes(schedule[1:], before=schedule[0][1])]
    per_time.sort(key=lambda c: (c[0], c[1]))
    return tuple(initial), tuple(per_time)


def _samples(profile: Profile, sc: Scenario) -> tuple[tuple[tuple[float, ...], ...], ...]:
    out = []
    for k in range(len(sc.stages)):
        dev = profile.device(sc.device_of(k).profile_device)
        out.append(dev.latency_s[k])
    return tuple(out)


def _switch_s(sc: Scenario) -> float:
    vals = [sc.profile.device(sc.device_of(k).profile_device).switch_s for k in range(len(sc.stages))]
    known = [v for v in vals if v is not None]
    return max(known) if known else 0.0


def _end_s(sc: Scenario, arrivals_s: np.ndarray) -> float:
    return arrivals_end_s(sc, arrivals_s) + sc.drain_s


def compile_setup(sc: Scenario, policy: PolicySpec, streams: Streams, known_profile: Profile | None = None) -> SimSetup:
    """The engine's numbers for one policy of the scenario; ``known_profile`` (default: the scenario's) gives
    the nominal times the environment factor is measured against, where the services follow another profile
    (a replay of what hardware did)."""
    arrivals_s = streams.arrivals_s
    samples = _samples(sc.profile, sc)
    nominal = samples if known_profile is None else _samples(known_profile, sc)
    initial, changes = _stage_factors(sc)
    hops = [hop_time_s(sc, k) for k in range(len(sc.stages) - 1)]
    return SimSetup(
        stage_names=tuple(s.name for s in sc.stages),
        samples_s=samples,
        # nominal times in the units of PipelineCurves.latency_s (device speed applied), so that
        # StageObs.env_factor measures the environment only
        mean_s=tuple(
            tuple(math.fsum(lv) / len(lv) / sc.device_of(k).speed for lv in st) for k, st in enumerate(nominal)
        ),
        speed=tuple(sc.device_of(k).speed for k in range(len(sc.stages))),
        switch_s=_switch_s(sc),
        hop_tx_s=tuple(h[0] for h in hops),
        hop_latency_s=tuple(h[1] for h in hops),
        env_changes=changes,
        initial_factor=initial,
        queue_capacity=sc.queue.capacity,
        drop_head=sc.queue.drop == "head",
        period_s=policy.period_s,
        end_s=_end_s(sc, arrivals_s),
        physics=_physics(sc),
        tenant_seeds=streams.tenant_seeds if any(sc.device_of(k).physics for k in range(len(sc.stages))) else (),
    )


def _physics(sc: Scenario) -> tuple[DevicePhysics | None, ...]:
    """Per stage, its node's physics; empty when no node has any (the simulator then runs without)."""
    phys = tuple(sc.device_of(k).physics for k in range(len(sc.stages)))
    return phys if any(p is not None for p in phys) else ()


def curves_for(sc: Scenario) -> PipelineCurves:
    """What policies may know in advance: the profile's curves for this placement (device speed applied)."""
    mean, p95 = [], []
    for k in range(len(sc.stages)):
        dev = sc.device_of(k)
        prof = sc.profile.device(dev.profile_device)
        mean.append(tuple(prof.mean_s(k, lv) / dev.speed for lv in range(sc.profile.n_levels)))
        p95.append(tuple(prof.quantile_s(k, lv, 0.95) / dev.speed for lv in range(sc.profile.n_levels)))
    hops = tuple(sum(hop_time_s(sc, k)) for k in range(len(sc.stages) - 1))
    return PipelineCurves(
        ratios=sc.profile.ratios,
        latency_s=tuple(mean),
        latency_p95_s=tuple(p95),
        hop_s=hops,
        switch_s=_switch_s(sc),
        slo_s=sc.slo_s,
        accuracy=sc.profile.accuracy,
        stage_names=tuple(s.name for s in sc.stages),
        physics=_physics(sc),
    )


def _tables(
    sc: Scenario, streams: Streams, out: EngineOutput, curves: PipelineCurves, period_s: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The result tables of one run (``edgeprune.records``, shared with the hardware backend)."""
    names = [s.name for s in sc.stages]
    levels = np.where(out.levels == NO_LEVEL, -1, out.levels.astype(np.int16))
    accuracy = request_accuracy(levels, out.status == DONE, curves.accuracy, len(curves.ratios))
    requests = requests_table(
        names,
        streams.arrivals_s,
        out.departure_s,
        out.status,
        out.dropped_at,
        levels,
        warmup_s=sc.warmup_s,
        accuracy=accuracy,
    )
    if out.heat:
        assert out.start_s is not None
        energy = {
            k: node.request_energy_j(out.start_s[:, k], out.service_s[:, k], _end_s(sc, streams.arrivals_s))
            for k, node in out.heat.items()
        }
        requests = requests.with_columns(
            pl.Series("energy_j", np.nansum(np.stack(list(energy.values()), 1), axis=1)),
            *(pl.Series(f"energy_{names[k]}_j", e, nan_to_null=True) for k, e in sorted(energy.items())),
        )
    return requests, timeline_table(out.timeline, names, period_s)


def run_policy(
    sc: Scenario,
    spec: PolicySpec,
    streams: Streams,
    *,
    progress: Callable[[float], None] | None = None,
    path: Path = "auto",
    known_profile: Profile | None = None,
) -> RunResult:
    """Simulate one policy of the scenario on the given streams (``path``: see :func:`sim.engine.simulate`).
    ``known_profile``: what the policy knows in advance and measures its environment factor against, where
    the services follow the scenario's profile (default: the same)."""
    curves = curves_for(sc if known_profile is None else replace(sc, profile=known_profile))
    setup = compile_setup(sc, spec, streams, known_profile)
    policy = make_policy(spec, curves)
    out = simulate(setup, policy, streams.arrivals_s, streams.quantiles, progress=progress, path=path)
    requests, timeline = _tables(sc, streams, out, curves, setup.period_s)
    summary = summarise(
        requests,
        slo_s=sc.slo_s,
        window_start_s=sc.warmup_s,
        window_end_s=arrivals_end_s(sc, streams.arrivals_s),
        switches=out.switches,
    )
    if out.heat:
        completed = int((out.status == DONE).sum())
        summary.update(physics_summary([node.figures() for node in out.heat.values()], completed, setup.end_s))
    return RunResult(policy=spec.name, requests=requests, timeline=timeline, summary=summary)


def run_scenario(
    sc: Scenario, *, progress: Callable[[str, float, float], None] | None = None, path: Path = "auto"
) -> list[RunResult]:
    """Every policy of the scenario on the same streams, in the scenario's order."""
    streams = draw_streams(sc)
    results = []
    for spec in sc.policies:
        cb = None
        if progress is not None:
            end_s = _end_s(sc, streams.arrivals_s)
            name = spec.name

            def cb(now_s: float, name: str = name, end_s: float = end_s) -> None:
                progress(name, now_s, end_s)

        results.append(run_policy(sc, spec, streams, progress=cb, path=path))
    return results
