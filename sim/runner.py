"""From a scenario to results: compile the numbers, draw the random streams, run every policy.

Random streams come from ``numpy.random.SeedSequence(seed)``: child 0 draws the arrivals, child 1 the
per-request service quantiles.  Every policy of a scenario sees the *same* arrivals and the same
quantiles (common random numbers), so differences between policies are the policies' doing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from edgeprune.controller import PipelineCurves, PolicySpec, make_policy
from edgeprune.profile import Profile
from edgeprune.results import RunResult, summarise
from edgeprune.scenario import Scenario, hop_time_s
from sim.engine import DONE, DROPPED, NO_LEVEL, EngineOutput, SimSetup, simulate

__all__ = ["Streams", "compile_setup", "curves_for", "draw_streams", "run_policy", "run_scenario"]


@dataclass(frozen=True)
class Streams:
    """The random inputs of a run, shared by all its policies."""

    arrivals_s: np.ndarray
    quantiles: np.ndarray  # [n_stages, n]


def draw_streams(sc: Scenario, seed: int | None = None) -> Streams:
    """Arrival times and service quantiles for the scenario's seed (or ``seed``)."""
    from traces import generate

    root = np.random.SeedSequence(sc.seed if seed is None else seed)
    arr_seq, svc_seq = root.spawn(2)
    arrivals = generate(sc.arrivals, np.random.default_rng(arr_seq), duration_s=sc.duration_s, n_requests=sc.n_requests)
    quantiles = np.random.default_rng(svc_seq).random((len(sc.stages), arrivals.size))
    return Streams(arrivals_s=np.ascontiguousarray(arrivals, dtype=np.float64), quantiles=quantiles)


def _stage_factors(sc: Scenario) -> tuple[tuple[float, ...], tuple[tuple[float, int, float], ...]]:
    """Initial factor per stage and the time-sorted factor changes (1/speed x active slowdowns)."""
    times = sorted({t for ev in sc.environment for t, _ in ev.change_points()} | {0.0})
    per_time: list[tuple[float, int, float]] = []
    initial: list[float] = []
    for k in range(len(sc.stages)):
        dev = sc.device_of(k)
        events = [ev for ev in sc.environment if ev.device == dev.name]
        prev = None
        for t in times:
            f = 1.0 / dev.speed
            for ev in events:
                f *= _factor_at(ev.change_points(), t)
            if t == 0.0:
                initial.append(f)
            elif f != prev:
                per_time.append((t, k, f))
            prev = f
    per_time.sort(key=lambda c: (c[0], c[1]))
    return tuple(initial), tuple(per_time)


def _factor_at(points: list[tuple[float, float]], t: float) -> float:
    f = 1.0
    for tp, fp in points:
        if tp <= t:
            f = fp
    return f


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
    last = sc.duration_s if sc.duration_s is not None else (float(arrivals_s[-1]) if arrivals_s.size else 0.0)
    return last + sc.drain_s


def compile_setup(sc: Scenario, policy: PolicySpec, arrivals_s: np.ndarray) -> SimSetup:
    """The engine's numbers for one policy of the scenario."""
    samples = _samples(sc.profile, sc)
    initial, changes = _stage_factors(sc)
    hops = [hop_time_s(sc, k) for k in range(len(sc.stages) - 1)]
    return SimSetup(
        stage_names=tuple(s.name for s in sc.stages),
        samples_s=samples,
        # nominal times in the units of PipelineCurves.latency_s (device speed applied), so that
        # StageObs.env_factor measures the environment only
        mean_s=tuple(
            tuple(math.fsum(lv) / len(lv) / sc.device_of(k).speed for lv in st) for k, st in enumerate(samples)
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
    )


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
    )


def _accuracy(out: EngineOutput, curves: PipelineCurves) -> np.ndarray:
    """Estimated accuracy of every finished request from the levels it was served at."""
    acc = np.full(out.status.size, np.nan)
    done = out.status == DONE
    if curves.accuracy is None or not done.any():
        return acc
    n_levels = len(curves.ratios)
    codes = np.zeros(int(done.sum()), dtype=np.int64)
    for k in range(out.levels.shape[1]):  # one integer code per level vector (base n_levels)
        codes = codes * n_levels + out.levels[done, k]
    uniq, inverse = np.unique(codes, return_inverse=True)
    values = np.array([curves.accuracy.of(_decode(int(c), n_levels, out.levels.shape[1])) for c in uniq])
    acc[done] = values[inverse]
    return acc


def _decode(code: int, n_levels: int, n_stages: int) -> tuple[int, ...]:
    digits = []
    for _ in range(n_stages):
        code, d = divmod(code, n_levels)
        digits.append(d)
    return tuple(reversed(digits))


def _requests_table(sc: Scenario, streams: Streams, out: EngineOutput, curves: PipelineCurves) -> pl.DataFrame:
    names = [s.name for s in sc.stages]
    status_names = np.array(["done", "dropped", "unfinished"])
    dep = out.departure_s
    done = out.status == DONE
    cols: dict[str, pl.Series] = {
        "request_id": pl.Series(np.arange(dep.size, dtype=np.uint32)),
        "arrival_s": pl.Series(streams.arrivals_s),
        "departure_s": pl.Series(dep, nan_to_null=True),
        "latency_s": pl.Series(np.where(done, dep - streams.arrivals_s, np.nan), nan_to_null=True),
        "status": pl.Series(status_names[out.status]),
        "dropped_at": pl.Series(np.where(out.status == DROPPED, out.dropped_at, -1).astype(np.int16)).replace_strict(
            {k: n for k, n in enumerate(names)}, default=None, return_dtype=pl.String
        ),
        "in_warmup": pl.Series(streams.arrivals_s < sc.warmup_s),
        "accuracy": pl.Series(_accuracy(out, curves), nan_to_null=True),
    }
    for k, name in enumerate(names):
        lv = out.levels[:, k].astype(np.int16)
        cols[f"level_{name}"] = pl.Series(np.where(lv == NO_LEVEL, -1, lv).astype(np.int8)).replace(-1, None)
    return pl.DataFrame(cols)


def _timeline_table(sc: Scenario, out: EngineOutput, period_s: float) -> pl.DataFrame:
    tl = pl.DataFrame(out.timeline)
    names = [s.name for s in sc.stages]
    return tl.select(
        pl.col("time_s"),
        pl.col("stage").replace_strict(dict(enumerate(names)), return_dtype=pl.String),
        pl.col("level").cast(pl.Int8),
        pl.col("decided").cast(pl.Int8),
        pl.col("queue_len").cast(pl.Int32),
        pl.col("busy"),
        pl.col("arrivals").cast(pl.Int32),
        pl.when(pl.col("time_s") > 0).then(pl.col("arrivals") / period_s).alias("arrival_rate_hz"),
        pl.col("served").cast(pl.Int32),
        pl.when(pl.col("served") > 0).then(pl.col("busy_s") / pl.col("served")).alias("service_time_s"),
        pl.when(pl.col("nominal_s") > 0).then(pl.col("busy_s") / pl.col("nominal_s")).alias("env_factor"),
        pl.col("dropped").cast(pl.Int32),
    )


def run_policy(
    sc: Scenario, spec: PolicySpec, streams: Streams, *, progress: Callable[[float], None] | None = None
) -> RunResult:
    """Simulate one policy of the scenario on the given streams."""
    curves = curves_for(sc)
    setup = compile_setup(sc, spec, streams.arrivals_s)
    policy = make_policy(spec, curves)
    out = simulate(setup, policy, streams.arrivals_s, streams.quantiles, progress=progress)
    requests = _requests_table(sc, streams, out, curves)
    window_end = sc.duration_s if sc.duration_s is not None else setup.end_s - sc.drain_s
    summary = summarise(
        requests, slo_s=sc.slo_s, window_start_s=sc.warmup_s, window_end_s=window_end, switches=out.switches
    )
    return RunResult(
        policy=spec.name, requests=requests, timeline=_timeline_table(sc, out, setup.period_s), summary=summary
    )


def run_scenario(sc: Scenario, *, progress: Callable[[str, float, float], None] | None = None) -> list[RunResult]:
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

        results.append(run_policy(sc, spec, streams, progress=cb))
    return results
