"""Simulator vs hardware: the simulator's prediction of the same scenario next to what the cluster did.

The prediction is :func:`sim.runner.run_policy` on the same scenario, the same arrival times
(:func:`sim.runner.draw_streams`) and the profile measured on the same nodes (``edgeprune-hil profile``).
Errors: latency percentiles and throughput as relative errors ``(hw - sim) / sim`` in percent, SLO
attainment as the difference in percentage points.  Each row is held to the project's goals (``BOUNDS``:
p50 within 5 %, p95 within 10 %, SLO attainment within 3 points, time throttled within 10 %) and carries the
number of requests behind it and a 95 % interval of the hardware's figure (order statistics for percentiles,
Clopper-Pearson for attainment), so that a row whose interval is wider than its bound says it cannot be
judged.  Where hosts emulate physics (:func:`with_cluster_physics`), both predictions run the same physics.

Latency percentiles here are over *every* request that arrived after the warm-up, a dropped or unfinished one
counting as infinitely late, so both sides describe the same population (a run summary's percentiles are
over finished requests, and a run that leaves more requests unfinished would look faster).  A percentile
that lands on an unfinished request is reported as ``inf``.

Two predictions are made.  *As stated* uses the scenario's slowdown factors.  *As realised* replays what the
run measured itself: for every node, the service-time factor (measured / profiled) its stage actually showed
in each window of the scenario's schedule (a stress load or a CPU quota rarely slows a node by exactly the
stated factor, and a node under the run's mix of load serves a little faster or slower than when it was
profiled), cut into slices of ``DRIFT_SLICE_S`` (:func:`drift_factors`: a shared host's speed drifts within
a run), shaped per level (:func:`level_shapes`), per frequency step (:func:`realised_freq_factors`: an
emulated step's quota slows the service by its own realised factor) and spread as widely as the run's
services spread (:func:`service_dispersion`), while the policy still knows the profile; and the
fixed per-request time spent outside the profiled services (sockets, the
coordinator, a capped node waiting out its CFS period between two requests), estimated as the median
difference between the hardware's latency and the factor-replayed prediction over the requests that arrived
before the first environment change, and spread evenly over the inter-stage hops.  This trace-driven check
separates those input errors from the simulator's own (queueing, controller).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from edgeprune.environment import merged_schedule
from edgeprune.errors import HilError
from edgeprune.profile import Profile
from edgeprune.results import RunResult
from edgeprune.scenario import DeviceSpec, EnvironmentEvent, LinkSpec, Scenario, hop_spec, hop_time_s
from hil.cluster import ClusterSpec

__all__ = [
    "BOUNDS",
    "CONFIDENCE",
    "DRIFT_SLICE_S",
    "EMULATION_APPROXIMATIONS",
    "Overhead",
    "RealisedInputs",
    "as_realised",
    "attainment_interval",
    "compare",
    "drift_factors",
    "format_compare",
    "found_empty_residuals_s",
    "idle_overhead_s",
    "level_shapes",
    "level_switches",
    "overhead_per_request_s",
    "percentile_interval",
    "predict",
    "realised_factors",
    "realised_freq_factors",
    "realised_inputs",
    "service_dispersion",
    "sim_vs_hw",
    "throttled_node_s",
    "with_cluster_physics",
    "with_dispersion",
    "with_hop_overhead",
    "with_level_shapes",
    "with_profile",
    "with_realised_ladder",
]

# The project's goals for the simulator against hardware: p50 within 5 %, p95 within 10 %, SLO attainment within
# 3 points, time throttled within 10 % (percent of the prediction; points for attainment).  p99 has none.
BOUNDS: dict[str, float] = {"p50_latency_s": 5.0, "p95_latency_s": 10.0, "slo_attainment": 3.0, "throttled_s": 10.0}
CONFIDENCE = 0.95  # of the intervals on the hardware figures
_QUANTILES = {"p50_latency_s": 50.0, "p95_latency_s": 95.0, "p99_latency_s": 99.0}
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


EMULATION_APPROXIMATIONS = (
    "the emulator sees CPU time per step (each control tick and governor instant), not the services inside "
    "it: the node's power is the step's mean (P(idle) + busy fraction of its quota x (P(busy) - P(idle))), "
    "where the simulator switches between P(idle) and P(busy) at each service's start and end",
    "the busy fraction is the stage's serving time from the workers' reports (a service counted in the "
    "control period it ends in) plus the CPU time of everything else in the node's cgroup over its quota; the "
    "simulator counts the services only, each over its own interval",
    "a frequency step is applied as the CPU quota cpu_quota x (f / f_max)^alpha (CFS throttling, not a "
    "slower clock): a service's time scales by (f_max / f)^alpha on average, with the CFS period's jitter; "
    "measured a little more (1.51-1.54x at 1000 MHz for a stated 1.47x once the host's drift is taken out; "
    "the worker's own CPU outside the service shares the quota, a candidate cause, not isolated): the "
    "as-realised replay uses each step's measured factor",
    "the coordinator observes an emulated node's temperature and frequency after the emulator has stepped to "
    "the tick (the simulator's order): the temperature is integrated to every control tick, as in the "
    "simulator, and the governor decides at its own instants only",
)


def with_cluster_physics(sc: Scenario, cluster: ClusterSpec) -> Scenario:
    """``sc`` with every stage on a device of its own host, carrying the physics the cluster emulates there.

    Unchanged when no host has ``emulate_physics``.  Otherwise each host that runs a stage becomes a device of
    that name (the stage's old device's profile device and speed; the host's ``emulate_physics``, else the old
    device's physics), because on the cluster every host heats on its own, whatever device name the scenario
    gave its stages; an environment event on a scenario device moves to every host that device stands for
    (:func:`hil.environment.hosts_of_device`, as the run applies it).  The simulator then integrates the same
    thermal constants, ladder, governor and power model the emulator runs (see ``EMULATION_APPROXIMATIONS``).
    """
    from hil.environment import hosts_of_device

    if len(cluster.stages) != len(sc.stages):
        raise HilError(f"{cluster.source}: {len(cluster.stages)} stages, the scenario {sc.source} has {len(sc.stages)}")
    hosts = cluster.stage_hosts()
    if all(h.emulate_physics is None for h in hosts):
        return sc
    devices: dict[str, DeviceSpec] = {}
    for k, host in enumerate(hosts):
        old = sc.device_of(k)
        phys = host.emulate_physics if host.emulate_physics is not None else old.physics
        devices.setdefault(host.name, replace(old, name=host.name, physics=phys))
    stages = tuple(replace(st, device=hosts[k].name) for k, st in enumerate(sc.stages))
    events = tuple(
        replace(ev, device=h) for ev in sc.environment for h in sorted(hosts_of_device(sc, cluster, ev.device))
    )
    raw = dict(sc.raw)  # the run folder's scenario.toml is written from raw: it must say what was simulated
    raw["device"] = [{k: v for k, v in asdict(d).items() if v is not None} for d in devices.values()]
    raw["stage"] = [{"name": st.name, "device": st.device} for st in stages]
    raw["environment"] = [
        dict(e, device=h)
        for e in sc.raw.get("environment", [])
        for h in sorted(hosts_of_device(sc, cluster, str(e["device"])))
    ]
    return replace(sc, devices=tuple(devices.values()), stages=stages, environment=events, raw=raw)


def predict(sc: Scenario, policies: Sequence[str], known_profile: Profile | None = None) -> dict[str, RunResult]:
    """The simulator's results for the named policies of ``sc`` (``known_profile``: what the policies know,
    where the services follow another profile; see :func:`sim.runner.run_policy`)."""
    from sim.runner import draw_streams, run_policy

    streams = draw_streams(sc)
    return {p.name: run_policy(sc, p, streams, known_profile=known_profile) for p in sc.policies if p.name in policies}


MIN_LEVEL_SERVICES = 10  # a level's own factor needs this many services of the stage at it


def level_shapes(
    sc: Scenario,
    hw: RunResult,
    factors: Mapping[str, Sequence[tuple[float, float]]],
    steps: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, list[float]]:
    """Per stage: per level, its measured / profiled service time over the run relative to all its levels
    together, each period first divided by its window's realised factor (``factors``, from
    :func:`realised_factors`: a level used only while the node was slowed would otherwise carry the
    slowdown twice) and by its frequency slowdown (``steps`` per device where given, see :func:`_without_freq`);
    1.0 for a level with fewer than ``MIN_LEVEL_SERVICES`` services.

    On the capped local nodes a service's time is not proportional to its profiled time (a fixed part per
    service, and a node's share of the host CPU that varies with the machine's load): pruned levels ran
    relatively slower than profiled.  One factor per node and window cannot replay that; these shapes can.
    """
    tl = hw.timeline.filter(pl.col("served") > 0)
    out: dict[str, list[float]] = {}
    for st in sc.stages:
        rows = _without_freq(tl.filter(pl.col("stage") == st.name), sc, st.device, (steps or {}).get(st.device))
        rows = _without_window(rows, factors.get(st.device, [(0.0, 1.0)]))
        overall = _ratio(rows, -math.inf, math.inf)
        shapes = []
        for lv in range(sc.profile.n_levels):
            at = rows.filter(pl.col("level") == lv)
            r = _ratio(at, -math.inf, math.inf) if int(at["served"].sum()) >= MIN_LEVEL_SERVICES else None
            shapes.append(1.0 if r is None or overall is None else r / overall)
        out[st.name] = shapes
    return out


def with_level_shapes(sc: Scenario, shapes: Mapping[str, Sequence[float]]) -> Scenario:
    """``sc`` whose profile's samples of stage ``k`` at level ``l`` are scaled by ``shapes[stage k][l]`` (on the
    profile device each stage uses); the policies still know the original (``predict(..., known_profile)``)."""
    devices = dict(sc.profile.devices)
    for k, st in enumerate(sc.stages):
        name = sc.device_of(k).profile_device
        dev = devices[name]
        rows = list(dev.latency_s)
        factors = shapes.get(st.name, [1.0] * len(rows[k]))
        rows[k] = tuple(tuple(x * f for x in samples) for samples, f in zip(rows[k], factors, strict=True))
        devices[name] = replace(dev, latency_s=tuple(rows))
    return replace(sc, profile=replace(sc.profile, devices=devices))


def service_dispersion(
    sc: Scenario,
    hw: RunResult,
    drift: Mapping[str, Sequence[tuple[float, float]]],
    shapes: Mapping[str, Sequence[float]],
    steps: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float]:
    """Per stage: how much wider its service times spread on the run than in the profile, ``k = cv_run /
    cv_profile`` (1.0 where fewer than ``MIN_LEVEL_SERVICES`` periods with a service).

    ``cv_run``: in each period at the level of the period before (no switch inside, where one level's shape
    would be wrong for part of its services) the ``env_factor`` (its services' mean measured / profiled
    time) with its slice's factor (``drift``), its frequency's and its level's shape taken out is the mean of
    ``served`` draws of the service-time ratio, so ``sum served x (x - mean)^2 / (periods - 1)`` estimates
    the ratio's variance for independent services.  ``cv_profile``: the profile's samples' coefficient of
    variation at the levels the stage served, weighted by its services there.

    Why: on the shared host a capped node's service times spread wider than when it was profiled alone
    (measured: cv 0.11-0.23 against the profile's 0.09-0.13, after the slow drift is taken out), and the tail
    of a four-stage chain adds those spreads.
    """
    out: dict[str, float] = {}
    for k, st in enumerate(sc.stages):
        rows = hw.timeline.filter(pl.col("stage") == st.name).sort("time_s")
        steady = (pl.col("level") == pl.col("level").shift(1)) & (pl.col("served") > 0)
        rows = _without_freq(rows.filter(steady), sc, st.device, (steps or {}).get(st.device))
        rows = _without_window(rows, drift.get(st.device, [(0.0, 1.0)]))
        shape = pl.Series(list(shapes.get(st.name, [1.0] * sc.profile.n_levels)), dtype=pl.Float64)
        rows = rows.filter(pl.col("env_factor") > 0)
        if rows.height < MIN_LEVEL_SERVICES:
            out[st.name] = 1.0
            continue
        x = (rows["env_factor"] / shape.gather(rows["level"])).to_numpy()
        n = rows["served"].to_numpy().astype(np.float64)
        mean = float((n * x).sum() / n.sum())
        cv_run = math.sqrt(float((n * (x - mean) ** 2).sum()) / (x.size - 1)) / mean
        prof = sc.profile.device(sc.device_of(k).profile_device).latency_s[k]
        cvs = np.asarray([np.std(v) / np.mean(v) for v in prof])
        served_at = np.bincount(rows["level"].to_numpy(), weights=n, minlength=len(prof))
        cv_profile = float((cvs * served_at).sum() / served_at.sum())
        out[st.name] = cv_run / cv_profile if cv_profile > 0 else 1.0
    return out


def with_dispersion(sc: Scenario, spread: Mapping[str, float]) -> Scenario:
    """``sc`` whose profile's samples of each stage are spread ``spread[stage]`` times as wide around each
    level's mean (the mean kept; samples floored at a tenth of it; order kept)."""
    devices = dict(sc.profile.devices)
    for k, st in enumerate(sc.stages):
        name = sc.device_of(k).profile_device
        dev = devices[name]
        rows = list(dev.latency_s)
        f = spread.get(st.name, 1.0)
        widened = []
        for samples in rows[k]:
            m = float(np.mean(samples))
            widened.append(tuple(max(0.1 * m, m + f * (x - m)) for x in samples))
        rows[k] = tuple(widened)
        devices[name] = replace(dev, latency_s=tuple(rows))
    return replace(sc, profile=replace(sc.profile, devices=devices))


def realised_factors(sc: Scenario, hw: RunResult) -> dict[str, list[tuple[float, float]]]:
    """Per scenario device: ``(time_s, factor)`` change points with the service-time factors the hardware
    showed, relative to the profile.

    The windows are the device's schedule (one window from 0 for a device without events).  In each, the
    factor is the device's stages' measured / profiled service time summed over the periods inside the
    window (the first period after a change left out as a transition).  A window without a completed
    service keeps its stated factor.  Where the device has physics and the timeline its frequency, each
    period's slowdown from the frequency (``(f_max / f)^alpha``) is taken out: the replay's physics applies
    it again, from its own temperature.
    """
    tl = hw.timeline
    period_s = _period_s(tl)
    out: dict[str, list[tuple[float, float]]] = {}
    for device in sorted({s.device for s in sc.stages}):
        stages = [s.name for s in sc.stages if s.device == device]
        points = merged_schedule([ev for ev in sc.environment if ev.device == device])
        rows = _without_freq(tl.filter(pl.col("stage").is_in(stages) & (pl.col("served") > 0)), sc, device)
        ends = [p[0] for p in points[1:]] + [math.inf]
        realised = []
        for (t, stated), end in zip(points, ends, strict=True):
            r = _ratio(rows, t + period_s if t > 0 else -math.inf, end)
            realised.append((t, stated if r is None else r))
        out[device] = realised
    return out


DRIFT_SLICE_S = 5.0  # the as-realised replay's time resolution of a node's speed (see drift_factors)
MIN_SLICE_SERVICES = 8  # a slice's own factor needs this many services on the node


def drift_factors(
    sc: Scenario,
    hw: RunResult,
    factors: Mapping[str, Sequence[tuple[float, float]]],
    steps: Mapping[str, Sequence[float]] | None = None,
    slice_s: float = DRIFT_SLICE_S,
) -> dict[str, list[tuple[float, float]]]:
    """``factors`` (:func:`realised_factors`) cut into slices of ``slice_s``: per device, ``(time_s, factor)``
    change points, each slice's factor measured as its window's (frequency taken out: ``steps`` per device
    where given, :func:`realised_freq_factors`), its window's factor where the node served fewer than
    ``MIN_SLICE_SERVICES`` requests in it.

    Why: the local cluster's "Pis" share a host with other jobs, and the host's speed drifts within a run,
    all nodes together (measured: 0.77-1.24x profiled in 10 s slices of one 60 s run, where the window's
    factor was 0.96-0.99).  One factor per window replays the mean, not the slow stretches where the
    hardware's queues and tail latency build up.
    """
    tl = hw.timeline
    period_s = _period_s(tl)
    last_s = float(tl["time_s"].max()) if tl.height else 0.0  # type: ignore[arg-type]
    out: dict[str, list[tuple[float, float]]] = {}
    for device, points in factors.items():
        stages = [s.name for s in sc.stages if s.device == device]
        rows = tl.filter(pl.col("stage").is_in(stages) & (pl.col("served") > 0))
        rows = _without_freq(rows, sc, device, (steps or {}).get(device))
        ends = [p[0] for p in points[1:]] + [max(last_s, points[-1][0] + slice_s)]
        sliced: list[tuple[float, float]] = []
        for (t, window), end in zip(points, ends, strict=True):
            a = t
            while a < end - 1e-9:
                b = min(a + slice_s, end)
                lo = a + period_s if a == t and t > 0 else (a if a > 0 else -math.inf)
                w = rows.filter((pl.col("time_s") > lo) & (pl.col("time_s") <= b))
                r = _ratio(w, -math.inf, math.inf) if int(w["served"].sum()) >= MIN_SLICE_SERVICES else None
                sliced.append((a, window if r is None else r))
                a = b
        out[device] = sliced
    return out


def realised_freq_factors(
    sc: Scenario,
    hw: RunResult,
    drift: Mapping[str, Sequence[tuple[float, float]]],
    shapes: Mapping[str, Sequence[float]],
) -> dict[str, list[float]]:
    """Per device with physics: the service-time factor each frequency step realised on the node, relative to
    its top step (``[1.0, ...]``), from the periods the hardware spent at each step, each first divided by its
    slice's factor (``drift``) and its level's shape (``shapes``); the stated ``(f_max / f)^alpha`` for a step
    with fewer than ``MIN_LEVEL_SERVICES`` services (or without any at the top step).

    Why: the emulator applies a step as the CPU quota ``cpu_quota x (f / f_max)^alpha``, and a quota is not a
    clock: it is shared by everything the node runs besides the service (the worker's sockets and reports),
    and CFS hands it out in periods.  Measured on the local cluster: 1000 MHz realised 1.51-1.54x the top
    step's service time for a stated 1.47x once the host's drift is taken out (1.56-1.64x with the drift
    left in, which the slices now carry).  A Pi's DVFS would differ in its own way; the replay uses what
    the node showed.
    """
    tl = hw.timeline.filter(pl.col("served") > 0)
    out: dict[str, list[float]] = {}
    for device in sorted({s.device for s in sc.stages}):
        phys = next((d.physics for d in sc.devices if d.name == device), None)
        if phys is None or "freq_mhz" not in tl.columns:
            continue
        stages = [s.name for s in sc.stages if s.device == device]
        parts = []
        for st in stages:
            rows = _without_window(tl.filter(pl.col("stage") == st), drift.get(device, [(0.0, 1.0)]))
            shape = pl.Series(list(shapes.get(st, [1.0] * sc.profile.n_levels)), dtype=pl.Float64)
            parts.append(rows.with_columns(pl.col("env_factor") / shape.gather(rows["level"])))
        rows = pl.concat(parts)
        stated = [(phys.dvfs.freqs_mhz[0] / f) ** phys.dvfs.alpha for f in phys.dvfs.freqs_mhz]
        at = [rows.filter(pl.col("freq_mhz") == f) for f in phys.dvfs.freqs_mhz]
        top = _ratio(at[0], -math.inf, math.inf) if int(at[0]["served"].sum()) >= MIN_LEVEL_SERVICES else None
        realised = [1.0]
        for i in range(1, len(at)):
            r = _ratio(at[i], -math.inf, math.inf) if int(at[i]["served"].sum()) >= MIN_LEVEL_SERVICES else None
            realised.append(stated[i] if r is None or top is None else max(r / top, realised[-1] * (1 + 1e-6)))
        out[device] = realised
    return out


def with_realised_ladder(sc: Scenario, steps: Mapping[str, Sequence[float]]) -> Scenario:
    """``sc`` whose devices' frequency ladders are the *effective* frequencies ``f_max / x_i^(1/alpha)`` of the
    realised step factors ``x_i`` (:func:`realised_freq_factors`), so the simulator's ``(f_max / f)^alpha``
    slows each step's services as the node did; thresholds, hysteresis and power per step are unchanged
    (a device with ``alpha = 0`` keeps its ladder: no frequency can express a slowdown there)."""
    devices = []
    for d in sc.devices:
        x = steps.get(d.name)
        if d.physics is None or x is None or d.physics.dvfs.alpha <= 0:
            devices.append(d)
            continue
        dv = d.physics.dvfs
        freqs = tuple(dv.freqs_mhz[0] / xi ** (1.0 / dv.alpha) for xi in x)
        devices.append(replace(d, physics=replace(d.physics, dvfs=replace(dv, freqs_mhz=freqs))))
    return replace(sc, devices=tuple(devices))


def _without_freq(rows: pl.DataFrame, sc: Scenario, device: str, steps: Sequence[float] | None = None) -> pl.DataFrame:
    """``rows`` with ``env_factor`` divided by each period's frequency factor where the device has physics and
    the rows a known ``freq_mhz`` (unchanged otherwise): ``steps[i]`` at the ladder's step ``i`` where given
    (:func:`realised_freq_factors`), else ``(f_max / f)^alpha``."""
    phys = next((d.physics for d in sc.devices if d.name == device), None)
    if phys is None or "freq_mhz" not in rows.columns:
        return rows
    f_max, alpha = phys.dvfs.freqs_mhz[0], phys.dvfs.alpha
    factor = (f_max / pl.col("freq_mhz")).pow(alpha)
    for f, x in zip(phys.dvfs.freqs_mhz, steps or (), strict=False):
        factor = pl.when(pl.col("freq_mhz") == f).then(pl.lit(x)).otherwise(factor)
    return rows.with_columns((pl.col("env_factor") / factor.fill_null(1.0)).alias("env_factor"))


def _without_window(rows: pl.DataFrame, points: Sequence[tuple[float, float]]) -> pl.DataFrame:
    """``rows`` with ``env_factor`` divided by the factor of the window each period ends in (``points``:
    ``(time_s, factor)`` change points, the first at 0)."""
    times = np.asarray([t for t, _ in points], dtype=np.float64)
    values = np.asarray([f for _, f in points], dtype=np.float64)
    at = np.clip(np.searchsorted(times, rows["time_s"].to_numpy(), side="left") - 1, 0, len(values) - 1)
    return rows.with_columns(pl.col("env_factor") / pl.Series(values[at]))


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


def found_empty_residuals_s(sc: Scenario, result: RunResult) -> np.ndarray:
    """Per request that found the pipeline empty (arrived after every earlier request had left; done, after the
    warm-up): its latency minus its expected services, each stage's profiled mean at the level the request
    was served at times the stage's measured service-time factor in that period (a period without a service
    carries the last measured one; 1 before any).  No queue and no replay enter it: what is left is the
    request's time outside the services (sockets, (de)serialisation, waits for the node's CPU quota)."""
    from sim.runner import curves_for

    req = result.requests.sort("arrival_s")
    dep = req["departure_s"].fill_null(np.nan).to_numpy()
    arr = req["arrival_s"].to_numpy()
    left_before = np.concatenate([[-np.inf], np.fmax.accumulate(np.nan_to_num(dep, nan=-np.inf))[:-1]])
    alone = (req["status"] == "done").to_numpy() & ~req["in_warmup"].to_numpy() & (arr > left_before)
    curves = curves_for(sc)
    expected = np.zeros(int(alone.sum()))
    for k, st in enumerate(sc.stages):
        levels = req[f"level_{st.name}"].to_numpy()[alone].astype(int)
        mean_s = np.asarray(curves.latency_s[k])[levels]
        expected += mean_s * _factor_at(result.timeline, st.name, arr[alone])
    return np.asarray(req["latency_s"].to_numpy()[alone] - expected)


def _factor_at(tl: pl.DataFrame, stage: str, times: np.ndarray) -> np.ndarray:
    """The stage's measured service-time factor in the period containing each time (a period without a
    service carries the last measured one; 1 before any)."""
    rows = tl.filter(pl.col("stage") == stage).sort("time_s")
    t = rows["time_s"].to_numpy()
    f = rows["env_factor"].forward_fill().fill_null(np.nan).to_numpy()
    j = np.clip(np.searchsorted(t, times, side="left"), 0, max(t.size - 1, 0))
    out = f[j] if t.size else np.full(times.size, np.nan)
    return np.where(np.isfinite(out), out, 1.0)


class Overhead(NamedTuple):
    """The fixed time per request outside the profiled services (:func:`overhead_per_request_s`)."""

    mean_s: float  # all of it: the scenario's own hops (transfer and latency) included
    stderr_s: float
    n: int  # requests that found the pipeline empty
    policies: list[str]  # the policies whose runs gave them
    hops_s: float  # of which the scenario's hops carry this much already (sum over its inter-stage hops)

    @property
    def beyond_hops_s(self) -> float:
        """What a replay of the scenario must add per request (:func:`with_hop_overhead`)."""
        return self.mean_s - self.hops_s


def overhead_per_request_s(sc: Scenario, results: Sequence[RunResult]) -> Overhead | None:
    """The mean of :func:`found_empty_residuals_s` over every policy's run (a property of the cluster, not of
    the policy: one figure serves every replay), its standard error and sample size, and how much of it the
    scenario's hops carry already; ``None`` for one stage or under two such requests.

    Why not the replay's latency difference: under a congested policy that difference is mostly the replay's
    queueing error (one measured run: -151.5 ms from a saturated no-pruning replay, where the found-empty
    requests of the same run gave +13.3 +- 2.5 ms, and +13.8 / +15.0 ms on two repeats)."""
    per_policy = {r.policy: found_empty_residuals_s(sc, r) for r in results}
    values = np.concatenate([v for v in per_policy.values()]) if per_policy else np.zeros(0)
    if values.size < 2 or len(sc.stages) < 2:
        return None
    stderr_s = float(values.std(ddof=1) / math.sqrt(values.size))
    used = [p for p, v in per_policy.items() if v.size]
    hops_s = math.fsum(sum(hop_time_s(sc, k)) for k in range(len(sc.stages) - 1))
    return Overhead(float(values.mean()), stderr_s, int(values.size), used, hops_s)


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


def percentile_interval(values: np.ndarray, q: float, level: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free ``level`` interval for the ``q``-th percentile of the population ``values`` came
    from: the order statistics ``x_(l) <= x_(u)`` with ``l`` and ``u - 1`` the binomial ``(1 -+ level) / 2``
    quantiles of ``Binomial(n, q / 100)`` (the number of values below the true percentile), which covers it
    with probability >= ``level`` whatever the distribution.  No lower order statistic qualifies on few values:
    the lower end is then 0 (latencies are >= 0); no upper one: ``inf`` (the data cannot bound the
    percentile, e.g. a p95 of 30 requests).  ``values`` may hold ``inf`` (unfinished requests)."""
    from scipy import stats  # lazily: scipy.stats cannot be imported where torch is blocked (test_no_torch)

    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    lo_rank = int(stats.binom.ppf(tail, n, q / 100.0))  # 1-based
    hi_rank = int(stats.binom.ppf(1.0 - tail, n, q / 100.0)) + 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else 0.0
    hi = float(x[hi_rank - 1]) if hi_rank <= n else math.inf
    return (lo, hi)


def attainment_interval(met: int, n: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` interval of an SLO attainment of ``met`` out of ``n``."""
    from scipy import stats

    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(met, n).proportion_ci(confidence_level=level, method="exact")
    return (float(ci.low), float(ci.high))


def population_metrics(result: RunResult, slo_s: float) -> dict[str, Any]:
    """Latency percentiles over every post-warm-up arrival (unfinished / dropped = inf), SLO attainment (the
    run summary's rule: finished within ``slo_s`` over arrived) and throughput as in the run summary; with
    ``n`` (the arrivals behind them) and a :data:`CONFIDENCE` interval for each percentile and the attainment
    (``intervals``)."""
    req = result.requests.filter(~pl.col("in_warmup"))
    lat = req["latency_s"].fill_null(math.inf).to_numpy().astype(np.float64)
    out: dict[str, Any] = {"n": int(lat.size), "intervals": {}}
    for metric, q in _QUANTILES.items():
        out[metric] = float(np.percentile(lat, q, method="inverted_cdf")) if lat.size else None
        out["intervals"][metric] = percentile_interval(lat, q)
    met = int((lat <= slo_s).sum())
    out["slo_attainment"] = met / lat.size if lat.size else None
    out["intervals"]["slo_attainment"] = attainment_interval(met, int(lat.size))
    out["throughput_hz"] = result.summary.get("throughput_hz")
    return out


def throttled_node_s(result: RunResult, end_s: float) -> float | None:
    """Node-seconds throttled in the timeline up to ``end_s``: each row's ``throttled`` (1 / 0; null unknown)
    times the timeline's period, summed over stages; ``None`` without the column or any known value."""
    tl = result.timeline
    if "throttled" not in tl.columns:
        return None
    rows = tl.filter(pl.col("time_s") <= end_s + 1e-9)["throttled"].cast(pl.Float64).drop_nulls()
    if rows.is_empty():
        return None
    return float(rows.sum()) * _period_s(tl)


def level_switches(result: RunResult) -> int:
    """Level changes over the run, summed over stages (from the timeline's per-period ``level``): how often the
    policy switched, to set the hardware's against the prediction's."""
    tl = result.timeline.sort("time_s")
    if tl.is_empty():
        return 0
    changed = tl.select((pl.col("level").diff().over("stage").fill_null(0) != 0).sum())
    return int(changed.item())


def _throttled_row(hw: RunResult, sim: RunResult) -> dict[str, Any] | None:
    """Time throttled on both sides over the time both timelines cover; ``None`` when neither knows it."""
    if hw.timeline.is_empty() or sim.timeline.is_empty():
        return None
    end_s = min(float(hw.timeline["time_s"].max()), float(sim.timeline["time_s"].max()))  # type: ignore[arg-type]
    h, s = throttled_node_s(hw, end_s), throttled_node_s(sim, end_s)
    if h is None and s is None:
        return None
    err = None if h is None or s is None else (0.0 if h == s else ((h - s) / s * 100.0 if s > 0 else math.inf))
    bound = BOUNDS["throttled_s"]
    return {"sim": s, "hw": h, "error": err, "until_s": end_s, "bound": bound, "within_bound": _within(err, bound)}


def _err(metric: str, sim: float | None, hw: float | None) -> float | None:
    if sim is None or hw is None:
        return None
    if metric == "slo_attainment":
        return (hw - sim) * 100.0
    if math.isinf(sim) or math.isinf(hw):
        return 0.0 if sim == hw else None
    return (hw - sim) / sim * 100.0 if sim else None


def _within(err: float | None, bound: float | None) -> bool | None:
    if bound is None:
        return None
    return err is not None and abs(err) <= bound


def _interval_spread(metric: str, hw: float | None, interval: tuple[float, float]) -> tuple[float, float] | None:
    """The hardware interval's ends relative to the hardware figure: in % of it (percentiles), in points
    (attainment); ``None`` where the figure is unknown, zero or infinite."""
    lo, hi = interval
    if hw is None or math.isnan(lo):
        return None
    if metric == "slo_attainment":
        return ((lo - hw) * 100.0, (hi - hw) * 100.0)
    if hw == 0 or math.isinf(hw):
        return None
    return ((lo - hw) / hw * 100.0, (hi - hw) / hw * 100.0)


def compare(
    hw: Mapping[str, RunResult],
    sim: Mapping[str, RunResult],
    slo_s: float,
    realised: Mapping[str, RunResult] | None = None,
    factors: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
    overhead_s: float | None = None,
    overhead_from: Sequence[str] = (),
) -> dict[str, Any]:
    """Per policy: sim and hw figures, the errors, the hardware figures' intervals, and whether the bounds
    hold; with ``realised`` (the prediction with what the hardware showed: ``factors`` per policy, and
    ``overhead_s`` per request as measured under the policies ``overhead_from``) a second table."""
    out: dict[str, Any] = {
        "errors": "latency and throughput: (hw - sim) / sim in %; slo_attainment: hw - sim in points",
        "latency": "percentiles over every post-warm-up arrival; dropped and unfinished requests count as inf",
        "intervals": (
            f"{CONFIDENCE:.0%} intervals of the hardware figures: order statistics for percentiles "
            "(distribution-free), Clopper-Pearson for SLO attainment; interval_pct: their ends relative to the "
            "hardware figure (points for attainment); interval_within_bound false: n is too small for the "
            "row's error to be judged against its bound"
        ),
        "bounds": {
            "p50_latency_pct": BOUNDS["p50_latency_s"],
            "p95_latency_pct": BOUNDS["p95_latency_s"],
            "slo_attainment_points": BOUNDS["slo_attainment"],
            "throttled_pct": BOUNDS["throttled_s"],
        },
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


def _metric_row(metric: str, hm: Mapping[str, Any], sm: Mapping[str, Any]) -> dict[str, Any]:
    err = _err(metric, sm[metric], hm[metric])
    bound = BOUNDS.get(metric)
    row: dict[str, Any] = {"sim": sm[metric], "hw": hm[metric], "error": err, "n_sim": sm["n"], "n_hw": hm["n"]}
    row["bound"] = bound
    row["within_bound"] = _within(err, bound)
    interval = hm["intervals"].get(metric)
    if interval is not None:
        spread = _interval_spread(metric, hm[metric], interval)
        row["hw_interval"] = list(interval)
        row["interval_pct"] = None if spread is None else list(spread)
        if bound is not None:
            row["interval_within_bound"] = spread is not None and max(-spread[0], spread[1]) <= bound
    return row


def _table(hw: Mapping[str, RunResult], sim: Mapping[str, RunResult], slo_s: float) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, h in hw.items():
        s = sim.get(name)
        if s is None:
            continue
        hm, sm = population_metrics(h, slo_s), population_metrics(s, slo_s)
        rows: dict[str, Any] = {m: _metric_row(m, hm, sm) for m in _METRICS}
        ok = {"p50": "p50_latency_s", "p95": "p95_latency_s", "slo": "slo_attainment"}
        rows["within_bounds"] = {k: bool(rows[m]["within_bound"]) for k, m in ok.items()}
        rows["switches"] = {"hw": level_switches(h), "sim": level_switches(s)}
        throttled = _throttled_row(h, s)
        if throttled is not None:
            rows["throttled_s"] = throttled
            rows["within_bounds"]["throttled"] = bool(throttled["within_bound"])
        table[name] = rows
    return table


def _fmt(metric: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if metric == "slo_attainment":
        return f"{v * 100:.1f}%"
    if metric == "throughput_hz":
        return f"{v:.2f}/s"
    if metric == "throttled_s":
        return f"{v:.1f}s"
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
    lines = _format_physics(doc.get("physics"))
    lines += [f"as stated (the scenario's slowdowns{hops}):", *_format_table(doc["policies"])]
    if "as_realised" in doc:
        for policy, per_device in doc["as_realised"]["factors"].items():
            shown = "; ".join(
                f"{dev} " + ", ".join(f"x{f:.2f} from {t:g}s" for t, f in pts) for dev, pts in per_device.items()
            )
            lines.append(f"service-time factors realised under {policy}: {shown or 'none'}")
            shapes = doc["as_realised"].get("level_shapes", {}).get(policy)
            if shapes:
                per_stage = "; ".join(f"{st} " + "/".join(f"{x:.2f}" for x in v) for st, v in shapes.items())
                lines.append(f"  per level (relative to the stage's factor): {per_stage}")
            lines += _format_inputs(doc["as_realised"], policy)
        overhead_s = doc["as_realised"].get("overhead_s")
        if overhead_s is None:
            lines.append("fixed time per request outside the profiled services: not measurable")
        else:
            lines.append(f"fixed time per request outside the profiled services: {_overhead_text(doc['as_realised'])}")
        lines += [
            "as realised (the service-time factors, their drift, steps and spread, and the per-request overhead the "
            "hardware showed):",
            *_format_table(doc["as_realised"]["policies"]),
        ]
    lines.append(
        f"hw {CONFIDENCE:.0%}: the hardware figure's interval (order statistics; Clopper-Pearson for SLO); "
        "'!' marks an interval wider than the row's bound: too few requests to judge that row"
    )
    return "\n".join(lines)


def _overhead_text(realised: Mapping[str, Any]) -> str:
    """The as-realised overhead, where it was measured and its standard error."""
    value = f"{realised['overhead_s'] * 1000:+.1f} ms"
    n = realised.get("overhead_n")
    if n is None:  # not measurable on the run: the hop probe's
        where = f"from {', '.join(realised['overhead_from'])}"
    else:
        value += f" +- {realised['overhead_stderr_s'] * 1000:.1f}"
        where = f"mean over {n} requests that found the pipeline empty, under {', '.join(realised['overhead_from'])}"
    return f"{value} ({where}; added to every replay when > 0)"


def _format_inputs(realised: Mapping[str, Any], policy: str) -> list[str]:
    """The drift slices' range, the frequency steps' realised factors and the spreads of one policy's replay
    (empty for a document without them)."""
    lines = []
    drift = realised.get("drift_factors", {}).get(policy) or {}
    if any(len(pts) > 1 for pts in drift.values()):
        ranges = "; ".join(f"{d} x{min(f for _, f in p):.2f}..{max(f for _, f in p):.2f}" for d, p in drift.items())
        lines.append(f"  in slices of {DRIFT_SLICE_S:g} s (the host's drift): {ranges}")
    steps = realised.get("freq_step_factors", {}).get(policy) or {}
    if steps:
        shown = "; ".join(f"{d} " + "/".join(f"{x:.2f}" for x in v) for d, v in steps.items())
        lines.append(f"  per frequency step (relative to the top step): {shown}")
    spread = realised.get("service_spread", {}).get(policy) or {}
    if spread:
        shown = "; ".join(f"{st} x{x:.2f}" for st, x in spread.items())
        lines.append(f"  service times spread (relative to the profile's): {shown}")
    return lines


def _format_physics(physics: Mapping[str, Any] | None) -> list[str]:
    """What the prediction assumed about emulated physics (empty without)."""
    if not physics:
        return []
    nodes = ", ".join(f"{n} ({p or 'custom'})" for n, p in physics["emulated"].items())
    lines = [f"emulated physics given to the simulator on {nodes}; the emulator's approximations:"]
    return lines + [f"  - {a}" for a in physics["approximations"]]


def _format_interval(metric: str, row: Mapping[str, Any]) -> str:
    spread = row.get("interval_pct")
    if "hw_interval" not in row:
        return ""
    if spread is None:
        return "-"
    unit = "pt" if metric == "slo_attainment" else "%"
    hi = "+inf" if math.isinf(spread[1]) else f"{spread[1]:+.0f}"
    flag = "!" if row.get("interval_within_bound") is False else ""
    return f"{spread[0]:+.0f}..{hi}{unit}{flag}"


def _format_row(name: str, metric: str, r: Mapping[str, Any]) -> str:
    e = r["error"]
    unit = " pt" if metric == "slo_attainment" else " %"
    err = "-" if e is None else ("inf" if math.isinf(e) else f"{e:+.1f}{unit}")
    bound = "" if r.get("bound") is None else f"±{r['bound']:g}{unit.strip()}"
    n = r.get("n_hw", "")
    return (
        f"{name:<14}{metric:<16}{_fmt(metric, r['sim']):>10}{_fmt(metric, r['hw']):>10}{err:>10}{bound:>7}"
        f"{n!s:>6}{_format_interval(metric, r):>14}"
    )


def _format_table(policies: Mapping[str, Any]) -> list[str]:
    lines = [f"{'policy':<14}{'metric':<16}{'sim':>10}{'hw':>10}{'error':>10}{'bound':>7}{'n':>6}{'hw 95%':>14}"]
    for name, rows in policies.items():
        for m in (*_METRICS, "throttled_s"):
            if m in rows:
                lines.append(_format_row(name, m, rows[m]))
        ok = rows["within_bounds"]
        shown = "  ".join(f"{k} {'yes' if v else 'NO'}" for k, v in ok.items())
        lines.append(f"{name:<14}{'within bounds':<16}  {shown}")
    return lines


class RealisedInputs(NamedTuple):
    """What the as-realised replay of one policy's run takes from the run (:func:`realised_inputs`)."""

    drift: dict[str, list[tuple[float, float]]]  # per device: (time_s, factor) per slice (drift_factors)
    shapes: dict[str, list[float]]  # per stage: per level (level_shapes)
    steps: dict[str, list[float]]  # per device with physics: per frequency step (realised_freq_factors)
    spread: dict[str, float]  # per stage: service-time spread relative to the profile's (service_dispersion)
    scenario: Scenario  # the replay's scenario: the four applied to sc


def realised_inputs(
    sc: Scenario,
    hw: RunResult,
    factors: Mapping[str, Sequence[tuple[float, float]]],
    slice_s: float = DRIFT_SLICE_S,
    freq_steps: bool = True,
    dispersion: bool = True,
) -> RealisedInputs:
    """The replay's inputs from one run: slices of the windows' factors, per-level shapes and per-frequency-step
    factors, each measured with the others taken out (the step factors need the slices and shapes; the slices
    and shapes are then measured again with the realised step factors taken out instead of the stated ones).
    ``slice_s = inf`` and ``freq_steps = False``: one factor per window and the stated ladder (as before
    these were measured; kept for comparisons)."""
    drift = drift_factors(sc, hw, factors, slice_s=slice_s)
    shapes = level_shapes(sc, hw, drift)
    steps: dict[str, list[float]] = {}
    if freq_steps:
        steps = realised_freq_factors(sc, hw, drift, shapes)
        drift = drift_factors(sc, hw, factors, steps, slice_s=slice_s)
        shapes = level_shapes(sc, hw, drift, steps)
    spread = service_dispersion(sc, hw, drift, shapes, steps) if dispersion else {}
    replayed = with_level_shapes(with_realised_ladder(as_realised(sc, drift), steps), shapes)
    return RealisedInputs(drift, shapes, steps, spread, with_dispersion(replayed, spread))


def sim_vs_hw(
    sc: Scenario,
    results: Sequence[RunResult],
    idle_s: float | None,
    emulated: Mapping[str, str | None],
) -> dict[str, Any]:
    """The whole comparison of a hardware run (``sim_vs_hw.json`` less the hop probe's entry).

    *As stated*: ``sc`` (its profile, slowdowns and, where ``emulated`` names hosts, their physics), with
    ``idle_s`` per request — the time outside the profiled services on the idle chain — spread over the hops.
    *As realised*: per policy, the run's own inputs (:func:`realised_inputs`: each node's service-time factor
    per schedule window cut into drift slices, per-level shapes, per-frequency-step factors and the
    services' spread) applied to the services while the policy still knows the profile, plus one fixed
    overhead per request (:func:`overhead_per_request_s`, over every policy's requests that found the pipeline
    empty; the hop probe's where none did)."""
    stated_sc = with_hop_overhead(sc, idle_s) if idle_s is not None else sc
    sim = predict(stated_sc, [r.policy for r in results])
    factors = {r.policy: realised_factors(sc, r) for r in results}
    inputs = {r.policy: realised_inputs(sc, r, factors[r.policy]) for r in results}
    replays = {p: (inp.scenario, predict(inp.scenario, [p], sc.profile)[p]) for p, inp in inputs.items()}
    overhead = overhead_per_request_s(sc, results)
    overhead_s, source = (overhead.beyond_hops_s, overhead.policies) if overhead is not None else (None, [])
    if overhead_s is None and idle_s is not None:
        overhead_s, source = idle_s, ["the hop probe"]
    realised = {}
    for p, (rsc, replayed) in replays.items():
        with_overhead = overhead_s is not None and overhead_s > 0 and len(rsc.stages) > 1
        realised[p] = (
            predict(with_hop_overhead(rsc, overhead_s or 0.0), [p], sc.profile)[p] if with_overhead else replayed
        )
    doc = compare({r.policy: r for r in results}, sim, sc.slo_s, realised, factors, overhead_s, source)
    if overhead is not None:
        doc["as_realised"]["overhead_stderr_s"] = overhead.stderr_s
        doc["as_realised"]["overhead_n"] = overhead.n
    doc["as_realised"]["level_shapes"] = {p: inp.shapes for p, inp in inputs.items()}
    doc["as_realised"]["drift_factors"] = {p: inp.drift for p, inp in inputs.items()}
    doc["as_realised"]["freq_step_factors"] = {p: inp.steps for p, inp in inputs.items()}
    doc["as_realised"]["service_spread"] = {p: inp.spread for p, inp in inputs.items()}
    doc["profile"] = str(sc.profile_path)
    if emulated:
        doc["physics"] = {"emulated": dict(emulated), "approximations": list(EMULATION_APPROXIMATIONS)}
    return doc


def to_json(doc: Mapping[str, Any]) -> str:
    """Stable JSON text."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# -- interference (open-loop stress): why as stated differs, and the prediction from profile --under -----------
def stated_vs_realised(
    sc: Scenario,
    results: Sequence[RunResult],
    factors: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    methods: Mapping[str, str],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per policy, per scenario device with environment events, per window of its schedule: the stated factor,
    the realised one, the factors replayed (``factors``: the drift slices of :func:`realised_inputs`), per
    level the realised factor of its stages in that window (``None`` under ``MIN_LEVEL_SERVICES`` services)
    and a one-line ``reason`` (``methods``: per device, how the slowdown was realised, e.g. ``stress-ng --cpu
    2, open-loop``) — what the as-stated prediction got wrong when the environment is not tuned to the
    scenario."""
    slowed = sorted({ev.device for ev in sc.environment})
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for hw in results:
        per_device: dict[str, list[dict[str, Any]]] = {}
        for device in slowed:
            stated = merged_schedule([ev for ev in sc.environment if ev.device == device])
            replayed = factors.get(hw.policy, {}).get(device, [])
            per_device[device] = [
                _window_row(
                    sc, hw, device, (t, end), f, [x for u, x in replayed if t <= u < end], methods.get(device, "")
                )
                for (t, f), end in zip(stated, [p[0] for p in stated[1:]] + [math.inf], strict=True)
            ]
        out[hw.policy] = per_device
    return out


def _window_row(
    sc: Scenario,
    hw: RunResult,
    device: str,
    window: tuple[float, float],
    stated: float,
    replayed: Sequence[float],
    how: str,
) -> dict[str, Any]:
    """One window of :func:`stated_vs_realised` (``replayed``: the factors replayed in it, one per drift slice)."""
    start_s, end_s = window
    stages = [s.name for s in sc.stages if s.device == device]
    tl = hw.timeline
    rows = _without_freq(tl.filter(pl.col("stage").is_in(stages) & (pl.col("served") > 0)), sc, device)
    lo = start_s + _period_s(tl) if start_s > 0 else -math.inf
    realised = _ratio(rows, lo, end_s)
    per_level = []
    for lv in range(sc.profile.n_levels):
        at = rows.filter((pl.col("level") == lv) & (pl.col("time_s") > lo) & (pl.col("time_s") <= end_s))
        enough = int(at["served"].sum()) >= MIN_LEVEL_SERVICES
        per_level.append(_ratio(at, -math.inf, math.inf) if enough else None)
    levels = "/".join("-" if f is None else f"{f:.2f}" for f in per_level)
    shown = "-" if realised is None else f"{realised:.2f}x"
    reason = f"from {start_s:g} s: stated {stated:g}x, realised {shown}" + (f" ({how})" if how else "")
    if len(replayed) > 1:
        reason += f", replayed in {len(replayed)} drift slices of x{min(replayed):.2f}..{max(replayed):.2f}"
    reason += f"; per level {levels}"
    return {
        "from_s": start_s,
        "stated": stated,
        "realised": realised,
        "replayed": list(replayed),
        "per_level": per_level,
        "reason": reason,
    }


PROFILED_NOTE = (
    "as profiled: each stress-slowed device's windows take the level-0 factor `profile --under` measured "
    "(instead of the stated one) and its stages' levels the measured per-level factors relative to it; the "
    "per-level shape applies to the whole run (the simulator's environment factor is per stage, not per level), "
    "so a pruned level outside the slowed window is scaled too; hops carry the hop probe's overhead as stated"
)


def as_profiled(
    sc: Scenario,
    results: Sequence[RunResult],
    profiled: Mapping[str, Mapping[str, Sequence[float]]],
    idle_s: float | None,
) -> dict[str, Any]:
    """The *as profiled* prediction of a run and its table (``sim_vs_hw.json``'s ``as_profiled``).

    ``profiled``: per device, per stage, per level the interference factor measured by ``profile --under``
    (:func:`hil.profiling.with_interference`).  A device's window factor is the mean of its stages' level-0
    factors; each stage's samples are scaled per level by its factor over that (:func:`with_level_shapes`),
    the policies still knowing the clean profile.  Nothing from the run itself is used, so this is what the
    simulator predicts from the calibration alone (see ``PROFILED_NOTE``)."""
    window = {d: float(np.mean([f[0] for f in per_stage.values()])) for d, per_stage in profiled.items()}
    points = {
        d: [
            (t, 1.0 if f == 1.0 else window[d])
            for t, f in merged_schedule([e for e in sc.environment if e.device == d])
        ]
        for d in profiled
    }
    shapes = {st: [x / window[d] for x in f] for d, per_stage in profiled.items() for st, f in per_stage.items()}
    psc = with_level_shapes(as_realised(sc, points), shapes)
    psc = with_hop_overhead(psc, idle_s) if idle_s is not None else psc
    sim = {r.policy: predict(psc, [r.policy], sc.profile)[r.policy] for r in results}
    return {
        "factors": {d: dict(v) for d, v in profiled.items()},
        "window_factor": window,
        "note": PROFILED_NOTE,
        "policies": _table({r.policy: r for r in results}, sim, sc.slo_s),
    }


def format_interference(doc: Mapping[str, Any]) -> list[str]:
    """The stated-vs-realised reasons and the as-profiled table as text lines (empty when neither is there)."""
    lines: list[str] = []
    for policy, per_device in doc.get("interference", {}).items():
        for device, windows in per_device.items():
            shown = "; ".join(w["reason"] for w in windows if w["stated"] != 1.0)
            if shown:
                lines.append(f"why as stated differs under {policy}: {device} {shown}")
    profiled = doc.get("as_profiled")
    if profiled:
        factors = "; ".join(
            f"{st} " + "/".join(f"{x:.2f}" for x in f)
            for per_stage in profiled["factors"].values()
            for st, f in per_stage.items()
        )
        lines += [
            f"as profiled under interference (profile --under; per level {factors}):",
            *_format_table(profiled["policies"]),
        ]
    return lines
