"""Simulator vs hardware: the simulator's prediction of the same scenario next to what the cluster did.

The prediction is :func:`sim.runner.run_policy` on the same scenario, the same arrival times
(:func:`sim.runner.draw_streams`) and the profile measured on the same nodes (``edgeprune-hil profile``).
Errors: latency percentiles and throughput as relative errors ``(hw - sim) / sim`` in percent, SLO
attainment as the difference in percentage points.  The acceptance bounds of the project (p50 within 10 %,
SLO attainment within 5 points) are flagged per policy.

Latency percentiles here are over *every* request that arrived after the warm-up, a dropped or unfinished one
counting as infinitely late, so both sides describe the same population (a run summary's percentiles are
over finished requests, and a run that leaves more requests unfinished would look faster).  A percentile
that lands on an unfinished request is reported as ``inf``.

Two predictions are made.  *As stated* uses the scenario's slowdown factors.  *As realised* replays two
inputs the run measured itself: for every node, the service-time factor (measured / profiled) its stage
actually showed in each window of the scenario's schedule (a stress load or a CPU quota rarely slows a node
by exactly the stated factor, and a node under the run's mix of load serves a little faster or slower than
when it was profiled); and the fixed per-request time spent outside the profiled services (sockets, the
coordinator, a capped node waiting out its CFS period between two requests), estimated as the median
difference between the hardware's latency and the factor-replayed prediction over the requests that arrived
before the first environment change, and spread evenly over the inter-stage hops.  This trace-driven check
separates those input errors from the simulator's own (queueing, controller).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from edgeprune.environment import merged_schedule
from edgeprune.errors import HilError
from edgeprune.profile import Profile
from edgeprune.results import RunResult
from edgeprune.scenario import DeviceSpec, EnvironmentEvent, LinkSpec, Scenario, hop_spec

__all__ = [
    "P50_BOUND",
    "SLO_BOUND_POINTS",
    "as_realised",
    "compare",
    "format_compare",
    "idle_overhead_s",
    "predict",
    "realised_overhead_s",
    "with_hop_overhead",
    "with_profile",
]

P50_BOUND = 0.10
SLO_BOUND_POINTS = 5.0
_METRICS = ("p50_latency_s", "p95_latency_s", "p99_latency_s", "slo_attainment", "throughput_hz")


def with_profile(sc: Scenario, profile: Profile, device: str | None = None) -> Scenario:
    """``sc`` using ``profile``; with ``device``, every stage's node maps to that profile device."""
    if device is None:
        for k in range(len(sc.stages)):
            profile.device(sc.device_of(k).profile_device)  # raises with the closest name
        return replace(sc, profile=profile, profile_path=profile.source)  # type: ignore[arg-type]
    if profile.n_stages != len(sc.stages) or profile.n_levels != sc.profile.n_levels:
        raise HilError(
            f"{profile.source}: {profile.n_stages} stages x {profile.n_levels} levels, the scenario "
            f"{sc.source} has {len(sc.stages)} x {sc.profile.n_levels}"
        )
    names = {s.device for s in sc.stages} | {d.name for d in sc.devices} | {e.device for e in sc.environment}
    devices = tuple(DeviceSpec(name=n, profile_device=device, speed=1.0) for n in sorted(names))
    return replace(sc, profile=profile, profile_path=profile.source, devices=devices)  # type: ignore[arg-type]


def predict(sc: Scenario, policies: Sequence[str]) -> dict[str, RunResult]:
    """The simulator's results for the named policies of ``sc``."""
    from sim.runner import draw_streams, run_policy

    streams = draw_streams(sc)
    return {p.name: run_policy(sc, p, streams) for p in sc.policies if p.name in policies}


def realised_factors(sc: Scenario, hw: RunResult) -> dict[str, list[tuple[float, float]]]:
    """Per scenario device: ``(time_s, factor)`` change points with the service-time factors the hardware
    showed, relative to the profile.

    The windows are the device's schedule (one window from 0 for a device without events).  In each, the
    factor is the device's stages' measured / profiled service time summed over the periods inside the
    window (the first period after a change left out as a transition).  A window without a completed
    service keeps its stated factor.
    """
    tl = hw.timeline
    period_s = _period_s(tl)
    out: dict[str, list[tuple[float, float]]] = {}
    for device in sorted({s.device for s in sc.stages}):
        stages = [s.name for s in sc.stages if s.device == device]
        points = merged_schedule([ev for ev in sc.environment if ev.device == device])
        rows = tl.filter(pl.col("stage").is_in(stages) & (pl.col("served") > 0))
        ends = [p[0] for p in points[1:]] + [math.inf]
        realised = []
        for (t, stated), end in zip(points, ends, strict=True):
            r = _ratio(rows, t + period_s if t > 0 else -math.inf, end)
            realised.append((t, stated if r is None else r))
        out[device] = realised
    return out


def _period_s(tl: pl.DataFrame) -> float:
    times = np.unique(tl["time_s"].to_numpy())
    return float(np.median(np.diff(times))) if times.size > 1 else 0.0


def _ratio(rows: pl.DataFrame, start_s: float, end_s: float) -> float | None:
    """Measured / profiled service time summed over the periods ending in (start_s, end_s].

    The timeline (result schema) holds per period ``served``, the mean ``service_time_s`` and ``env_factor``
    = measured / profiled, so busy time = served x service_time_s and profiled time = busy / env_factor.
    """
    w = rows.filter((pl.col("time_s") > start_s) & (pl.col("time_s") <= end_s) & (pl.col("env_factor") > 0))
    busy = w["served"].cast(pl.Float64) * w["service_time_s"]
    nominal = float((busy / w["env_factor"]).sum()) if w.height else 0.0
    return float(busy.sum()) / nominal if nominal > 0 else None


def as_realised(sc: Scenario, factors: Mapping[str, Sequence[tuple[float, float]]]) -> Scenario:
    """``sc`` with each device's environment events replaced by one schedule of the given factors."""
    kept = [ev for ev in sc.environment if ev.device not in factors]
    for device, pts in factors.items():
        kept.append(
            EnvironmentEvent(
                device=device, times_s=tuple(t for t, _ in pts), slowdowns=tuple(max(f, 1e-6) for _, f in pts)
            )
        )
    return replace(sc, environment=tuple(kept))


def realised_overhead_s(sc: Scenario, hw: RunResult, replayed: RunResult) -> float | None:
    """Median ``hw - replayed`` latency per request: the time the hardware spent outside profiled services.

    ``replayed`` is the prediction with the realised factors (:func:`as_realised`) and the same arrivals.
    Over the post-warm-up requests that arrived before the first environment change (all post-warm-up
    requests when nothing changes, or nothing arrived before) and finished on both sides; ``None`` if none
    did.  The median, because a request that queued on one side but not the other is an outlier here.
    """
    changes = [t for ev in sc.environment for t, _ in ev.change_points() if t > 0]
    first_s = min(changes, default=math.inf)
    cols = ["request_id", "arrival_s", "in_warmup", "latency_s"]
    both = hw.requests.select(cols).join(
        replayed.requests.select("request_id", pl.col("latency_s").alias("sim_s")), on="request_id"
    )
    both = both.filter(~pl.col("in_warmup")).drop_nulls(["latency_s", "sim_s"])
    before = both.filter(pl.col("arrival_s") < first_s)
    use = before if before.height else both
    if not use.height:
        return None
    return float(np.median((use["latency_s"] - use["sim_s"]).to_numpy()))


def idle_overhead_s(probe: RunResult) -> float | None:
    """Per request, the time outside the profiled services on an idle chain (``hil.coordinator.probe_hops``):
    the median latency of the probe's finished requests minus the sum over stages of their mean measured
    service time (the timeline's ``served`` x ``service_time_s``); ``None`` when nothing finished."""
    lat = probe.requests["latency_s"].drop_nulls()
    tl = probe.timeline.filter(pl.col("served") > 0)
    if lat.is_empty() or tl.is_empty():
        return None
    per_stage = tl.group_by("stage").agg(
        ((pl.col("served") * pl.col("service_time_s")).sum() / pl.col("served").sum()).alias("mean_s")
    )
    return float(np.median(lat.to_numpy())) - float(per_stage["mean_s"].sum())


def with_hop_overhead(sc: Scenario, overhead_s: float) -> Scenario:
    """``sc`` with ``overhead_s`` per request added to its hops' latency, spread evenly over the inter-stage
    hops (the simulator has no hop into the first stage or out of the last).  Unchanged for one stage or a
    non-positive overhead."""
    k_n = len(sc.stages)
    if k_n < 2 or overhead_s <= 0:
        return sc
    extra_s = overhead_s / (k_n - 1)
    links = tuple(
        LinkSpec(
            after=st.name,
            bandwidth_mbit_s=hop_spec(sc, k).bandwidth_mbit_s,
            latency_s=hop_spec(sc, k).latency_s + extra_s,
        )
        for k, st in enumerate(sc.stages[:-1])
    )
    return replace(sc, links=links)


def population_metrics(result: RunResult, slo_s: float) -> dict[str, float | None]:
    """Latency percentiles over every post-warm-up arrival (unfinished / dropped = inf), SLO attainment and
    throughput as in the run summary."""
    req = result.requests.filter(~pl.col("in_warmup"))
    lat = req["latency_s"].fill_null(math.inf).to_numpy().astype(np.float64)
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        out[f"p{q}_latency_s"] = float(np.percentile(lat, q, method="inverted_cdf")) if lat.size else None
    out["slo_attainment"] = result.summary.get("slo_attainment")
    out["throughput_hz"] = result.summary.get("throughput_hz")
    return out


def _err(metric: str, sim: float | None, hw: float | None) -> float | None:
    if sim is None or hw is None:
        return None
    if metric == "slo_attainment":
        return (hw - sim) * 100.0
    if math.isinf(sim) or math.isinf(hw):
        return 0.0 if sim == hw else None
    return (hw - sim) / sim * 100.0 if sim else None


def compare(
    hw: Mapping[str, RunResult],
    sim: Mapping[str, RunResult],
    slo_s: float,
    realised: Mapping[str, RunResult] | None = None,
    factors: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
    overhead_s: float | None = None,
    overhead_from: Sequence[str] = (),
) -> dict[str, Any]:
    """Per policy: sim and hw figures, the errors, and whether the bounds hold; with ``realised`` (the
    prediction with what the hardware showed: ``factors`` per policy, and ``overhead_s`` per request as
    measured under the policies ``overhead_from``) a second table."""
    out: dict[str, Any] = {
        "errors": "latency and throughput: (hw - sim) / sim in %; slo_attainment: hw - sim in points",
        "latency": "percentiles over every post-warm-up arrival; dropped and unfinished requests count as inf",
        "bounds": {"p50_latency_pct": P50_BOUND * 100, "slo_attainment_points": SLO_BOUND_POINTS},
        "policies": _table(hw, sim, slo_s),
    }
    if realised is not None:
        out["as_realised"] = {
            "factors": {p: dict(f) for p, f in (factors or {}).items()},
            "overhead_s": overhead_s,
            "overhead_from": list(overhead_from),
        }
        out["as_realised"]["policies"] = _table(hw, realised, slo_s)
    return out


def _table(hw: Mapping[str, RunResult], sim: Mapping[str, RunResult], slo_s: float) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, h in hw.items():
        s = sim.get(name)
        if s is None:
            continue
        hm, sm = population_metrics(h, slo_s), population_metrics(s, slo_s)
        rows: dict[str, Any] = {m: {"sim": sm[m], "hw": hm[m], "error": _err(m, sm[m], hm[m])} for m in _METRICS}
        p50 = rows["p50_latency_s"]["error"]
        slo = rows["slo_attainment"]["error"]
        rows["within_bounds"] = {
            "p50": p50 is not None and abs(p50) <= P50_BOUND * 100,
            "slo": slo is not None and abs(slo) <= SLO_BOUND_POINTS,
        }
        table[name] = rows
    return table


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "slo_attainment":
        return f"{v * 100:.1f}%"
    if metric == "throughput_hz":
        return f"{v:.2f}/s"
    if math.isinf(v):
        return "inf"
    return f"{v * 1000:.1f}ms"


def format_compare(doc: Mapping[str, Any]) -> str:
    """The sim-vs-hardware table(s) as text."""
    probe = doc.get("hop_probe") or {}
    hops = (
        f"; hops carry {probe['overhead_s'] * 1000:+.1f} ms per request, timed on the idle chain before the run"
        if probe.get("overhead_s") is not None
        else ""
    )
    lines = [f"as stated (the scenario's slowdowns{hops}):", *_format_table(doc["policies"])]
    if "as_realised" in doc:
        for policy, per_device in doc["as_realised"]["factors"].items():
            shown = "; ".join(
                f"{dev} " + ", ".join(f"x{f:.2f} from {t:g}s" for t, f in pts) for dev, pts in per_device.items()
            )
            lines.append(f"service-time factors realised under {policy}: {shown or 'none'}")
        overhead_s = doc["as_realised"].get("overhead_s")
        if overhead_s is None:
            lines.append("fixed time per request outside the profiled services: not measurable")
        else:
            lines.append(
                f"fixed time per request outside the profiled services: {overhead_s * 1000:+.1f} ms "
                f"(measured under {', '.join(doc['as_realised']['overhead_from'])}; added to every replay when > 0)"
            )
        lines += [
            "as realised (the service-time factors and the per-request overhead the hardware showed):",
            *_format_table(doc["as_realised"]["policies"]),
        ]
    return "\n".join(lines)


def _format_table(policies: Mapping[str, Any]) -> list[str]:
    lines = [f"{'policy':<14}{'metric':<16}{'sim':>10}{'hw':>10}{'error':>10}"]
    for name, rows in policies.items():
        for m in _METRICS:
            r = rows[m]
            e = r["error"]
            unit = " pt" if m == "slo_attainment" else " %"
            err = "-" if e is None else f"{e:+.1f}{unit}"
            lines.append(f"{name:<14}{m:<16}{_fmt(m, r['sim']):>10}{_fmt(m, r['hw']):>10}{err:>10}")
        ok = rows["within_bounds"]
        lines.append(f"{name:<14}{'within bounds':<16}  p50 ±10%: {ok['p50']}  SLO ±5 pt: {ok['slo']}")
    return lines


def to_json(doc: Mapping[str, Any]) -> str:
    """Stable JSON text."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
