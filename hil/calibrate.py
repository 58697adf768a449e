"""``edgeprune-hil calibrate``: the simulator's environment and overhead parameters fitted from a run's results.

The result schema is the same for the simulator and the cluster, so a run folder of either works (a simulated
run with known parameters is how the fits are tested).  From ``DIR/scenario.toml`` (stages, devices, the
profile) and every policy's ``timeline.parquet`` / ``requests.parquet``:

* **Thermal resistance, time constant, ambient** per node: nonlinear least squares
  (``scipy.optimize.least_squares``) of the exact RC step (``edgeprune.physics.rc_step``) from one timeline
  row to the next, ``temp_c[k] = rc_step(temp_c[k-1], ambient_c, power_w[k], R, h, tau)``, with ``power_w[k]``
  the node's mean power over the period (as both backends record it).  Started from the linear regression
  ``T[k] = a T[k-1] + b P[k] + c`` (exact for a constant period: ``a = exp(-h/tau)``, ``b = R (1 - a)``).
  The ambient is taken as constant over the run (a run under an ambient schedule is outside this fit).
  Fitted on the whole trajectory (output error; started from the one-step fit): see :func:`fit_thermal`.
  Power source (``power``): ``busy`` (``auto`` where the run's devices have physics) — the run's power model
  at each period's measured busy time and frequency (:func:`busy_power`), the power the simulator computes
  from what the node did, so the fitted R is the one that makes the simulator reproduce the measured
  temperatures; ``timeline`` — the timeline's ``power_w``, a power meter's readings where the host has one,
  else the model at the node's CPU time (on an emulated node, at the emulator's busy fraction:
  ``hil.records.RunRecorder``); ``emulator`` — the thermal emulator's own per-period power and temperature
  (``<policy>/thermal_emulator.csv``; a check of the fit, not something a real node has).
* **Frequency exponent** ``alpha`` per node: weighted regression of ``log env_factor`` (measured / profiled
  service time) on ``log(f_max / f)`` over the periods whose frequency did not change since the previous
  two readings (services of the period ran at that frequency), outside scripted slowdowns.
* **Hop overhead**: over the requests that found the pipeline empty (arrived after every earlier request had
  left), latency minus the expected services (profiled mean at the levels served x the stage's measured
  service-time factor in that period); the mean per request, its standard error, and the per-hop latency
  that leaves after the scenario's transfer times (the ``[network] latency_s`` that reproduces it).
* **Service times**: per node outside scripted windows, measured / profiled service time (the fitted
  alpha's frequency share divided out), and per stage per level its shape relative to that
  (:func:`fit_services`): how this cluster serves compared with its profile.  ``--holdout`` applies both.
* **Interference factors**: per scripted slowdown window of a node, the measured / profiled service time
  divided by the frequency's share ``(f_max / f)^alpha``, against the stated factor.

Standard errors: the least-squares covariance ``s^2 (J^T J)^-1`` for the thermal fit and alpha, ``sd / sqrt(n)``
for means.  The result is a scenario fragment (TOML, written atomically): a ``[[device]]`` per fitted node with
its ``physics`` (the run's physics with the fitted keys replaced, or only the fitted keys where the run's
scenario had none), ``[network] latency_s``, and a ``[calibration]`` table naming the source run and every
number's standard error and sample size.  ``--holdout DIR2`` simulates the held-out run's scenario with the
fitted parameters and reports predicted vs measured temperature, time throttled and latency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import tomli_w
from scipy.optimize import least_squares

from edgeprune.environment import merged_schedule
from edgeprune.errors import ResultError
from edgeprune.physics import DevicePhysics, dynamic_power_w, node_power_w, rc_step
from edgeprune.results import RunResult, read_run_dir
from edgeprune.scenario import Scenario, hop_time_s, load_scenario

__all__ = ["POWER_SOURCES", "Calibration", "Fit", "calibrate", "calibration_toml", "holdout_errors"]

_THERMAL_COLUMNS = ("time_s", "stage", "temp_c", "power_w")
_ALPHA_COLUMNS = ("time_s", "stage", "served", "env_factor", "freq_mhz")
EMULATOR_CSV = "thermal_emulator.csv"  # per policy folder, written by a run on emulated hosts (hil.thermal_emulator)
POWER_SOURCES = ("auto", "busy", "timeline", "emulator")


@dataclass(frozen=True)
class Fit:
    """A fitted number, its standard error and the number of observations it rests on."""

    value: float
    stderr: float
    n: int

    def doc(self) -> dict[str, float | int]:
        """For the TOML's ``[calibration]`` table."""
        return {"value": self.value, "stderr": self.stderr, "n": self.n}


@dataclass
class Calibration:
    """Everything fitted from one run."""

    source: str
    policies: list[str]
    thermal: dict[str, dict[str, Fit]] = field(default_factory=dict)  # device -> R, tau, ambient
    alpha: dict[str, Fit] = field(default_factory=dict)  # device -> alpha
    hop: Fit | None = None  # time per request outside the services
    hop_latency_s: float | None = None  # per hop, after the scenario's transfer times
    interference: list[dict[str, Any]] = field(default_factory=list)
    service_factor: dict[str, float] = field(default_factory=dict)  # device -> measured / profiled, no slowdown
    level_shapes: dict[str, list[float]] = field(default_factory=dict)  # stage -> per level, relative
    base_physics: dict[str, DevicePhysics] = field(default_factory=dict)  # the run's physics per device
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: Path) -> tuple[Scenario, dict[str, RunResult]]:
    """The run's resolved scenario and every policy's results (one-line errors when they are not there)."""
    _, results = read_run_dir(run_dir)
    if not (run_dir / "scenario.toml").is_file():
        raise ResultError(f"{run_dir}: not a run directory (no scenario.toml)")
    return load_scenario(run_dir / "scenario.toml"), results


def _need(run_dir: Path, policy: str, table: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ResultError(
            f"{run_dir}/{policy}/timeline.parquet: no column {missing[0]!r}, needed to fit {what} "
            "(a run with device physics: the simulator's, or a cluster whose nodes report temp_c / power_w)"
        )


def _stage_names(sc: Scenario, device: str) -> list[str]:
    return [s.name for s in sc.stages if s.device == device]


def _physics_devices(sc: Scenario, results: Mapping[str, RunResult]) -> list[str]:
    """Devices with any temperature reading in the run."""
    found = set()
    for r in results.values():
        if "temp_c" in r.timeline.columns:
            rows = r.timeline.filter(pl.col("temp_c").is_not_null())
            found |= set(rows["stage"].unique().to_list())
    return sorted({s.device for s in sc.stages if s.name in found})


def _rc_residuals(
    theta: np.ndarray, prev: np.ndarray, power: np.ndarray, h: np.ndarray, temp: np.ndarray
) -> np.ndarray:
    r_c_per_w, tau_s, ambient_c = (float(v) for v in theta)
    pred = [rc_step(t0, ambient_c, p, r_c_per_w, dt, tau_s) for t0, p, dt in zip(prev, power, h, strict=True)]
    return np.asarray(pred) - temp


def _steps(rows: pl.DataFrame) -> tuple[np.ndarray, ...]:
    """(T[k-1], P[k], h[k], T[k]) over consecutive rows with readings on both ends."""
    t = rows["time_s"].to_numpy()
    temp = rows["temp_c"].to_numpy()
    power = rows["power_w"].to_numpy()
    ok = np.isfinite(temp[1:]) & np.isfinite(temp[:-1]) & np.isfinite(power[1:]) & (np.diff(t) > 0)
    return temp[:-1][ok], power[1:][ok], np.diff(t)[ok], temp[1:][ok]


def _covariance_se(jac: np.ndarray, resid: np.ndarray) -> np.ndarray:
    n, p = jac.shape
    s2 = float(resid @ resid) / max(n - p, 1)
    cov = np.linalg.pinv(jac.T @ jac) * s2
    return np.sqrt(np.maximum(np.diag(cov), 0.0))


def _trajectory_residuals(theta: np.ndarray, segments: Sequence[tuple[np.ndarray, ...]]) -> np.ndarray:
    """Output error: each segment's temperature simulated from its first reading through its powers, minus
    the readings (a row without a reading is integrated through, not compared)."""
    r_c_per_w, tau_s, ambient_c = (float(v) for v in theta)
    out: list[float] = []
    for t, temp, power in segments:
        pred = float(temp[0])
        for k in range(1, t.size):
            pred = rc_step(pred, ambient_c, float(power[k]), r_c_per_w, float(t[k] - t[k - 1]), tau_s)
            if math.isfinite(temp[k]):
                out.append(pred - float(temp[k]))
    return np.asarray(out)


def _segment(rows: pl.DataFrame) -> tuple[np.ndarray, ...] | None:
    """(t, T, P) from the first row with a temperature reading on, over rows with a known power."""
    rows = rows.filter(pl.col("power_w").is_not_null() & pl.col("power_w").is_not_nan())
    temp = rows["temp_c"].fill_null(np.nan).to_numpy()
    first = np.flatnonzero(np.isfinite(temp))
    if first.size < 2:
        return None
    rows = rows.slice(int(first[0]))
    return rows["time_s"].to_numpy(), rows["temp_c"].fill_null(np.nan).to_numpy(), rows["power_w"].to_numpy()


def fit_thermal(series: Sequence[pl.DataFrame]) -> dict[str, Fit]:
    """R, tau and ambient of one node from its timeline rows (one frame per policy, sorted by time).

    Started from the one-step (equation-error) fit, refined on the whole trajectory (output error): a
    per-period power estimate is noisy (a service counted in the period it ends in, a reading a period late),
    and on one step that noise biases R towards 0 and the ambient up (errors in the regressor); through the
    RC filter it averages out."""
    parts = [_steps(rows) for rows in series]
    prev, power, h, temp = (np.concatenate([p[i] for p in parts]) for i in range(4))
    n = temp.size
    if n < 4 or np.ptp(power) <= 0:
        raise ResultError("not enough varying power readings to fit the thermal RC")
    design = np.column_stack([prev, power, np.ones(n)])
    (a, b, c), *_ = np.linalg.lstsq(design, temp, rcond=None)
    a = min(max(a, 1e-6), 1 - 1e-9)
    h_mean = float(np.mean(h))
    start = np.array([max(b / (1 - a), 1e-3), -h_mean / math.log(a), c / (1 - a)])
    lower, upper = [1e-6, 1e-6, -100.0], [np.inf, np.inf, 200.0]
    step = least_squares(
        _rc_residuals, np.clip(start, lower, [1e6, 1e6, 200.0]), args=(prev, power, h, temp), bounds=(lower, upper)
    )
    segments = [seg for seg in (_segment(rows) for rows in series) if seg is not None]
    res = least_squares(_trajectory_residuals, step.x, args=(segments,), bounds=(lower, upper))
    se = _covariance_se(res.jac, res.fun)
    names = ("resistance_c_per_w", "time_constant_s", "ambient_c")
    return {k: Fit(float(v), float(e), n) for k, v, e in zip(names, res.x, se, strict=True)}


def _spread_back(busy_s: np.ndarray, period_s: np.ndarray) -> np.ndarray:
    """Busy time per period, what exceeds a period moved into the periods before it: a service is counted in
    the period it ends in, and one longer than what is left of the period began before it."""
    out = np.zeros_like(busy_s)
    carry = 0.0
    for k in range(busy_s.size - 1, -1, -1):
        total = busy_s[k] + carry
        out[k] = min(total, max(period_s[k], 0.0))
        carry = total - out[k]
    return out


def busy_power(phys: DevicePhysics, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (one stage's timeline, sorted) with ``power_w`` replaced by the simulator's power model at each
    period's measured busy time (``served x service_time_s``, see :func:`_spread_back`) and the frequency in
    effect over it (the previous row's reading; the top before any): ``P(idle) + busy / period x (P(busy) -
    P(idle))``.  What the simulator would have computed from what the node did — on a node without a power
    meter the consistent power to fit R against."""
    freqs = list(phys.dvfs.freqs_mhz)
    t = rows["time_s"].to_numpy()
    period_s = np.diff(np.concatenate([[0.0], t]))
    busy_s = (rows["served"].cast(pl.Float64) * rows["service_time_s"].fill_null(0.0)).fill_null(0.0).to_numpy()
    util = _spread_back(busy_s, period_s) / np.where(period_s > 0, period_s, np.inf)
    f_in_effect = rows["freq_mhz"].shift(1).fill_null(freqs[0]).fill_nan(freqs[0]).to_numpy()
    steps = [int(np.argmin([abs(f - x) for x in freqs])) for f in f_in_effect]
    power = [node_power_w(phys, k, False) + u * dynamic_power_w(phys, k) for k, u in zip(steps, util, strict=True)]
    return rows.with_columns(pl.Series("power_w", power, dtype=pl.Float64))


def _stable_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Periods whose frequency reading equals the previous two (the services ran at it)."""
    f = pl.col("freq_mhz")
    return rows.filter((f == f.shift(1)) & (f == f.shift(2)))


def _outside_slowdowns(sc: Scenario, device: str, rows: pl.DataFrame) -> pl.DataFrame:
    points = merged_schedule([ev for ev in sc.environment if ev.device == device])
    ends = [p[0] for p in points[1:]] + [math.inf]
    keep = pl.lit(False)
    for (t, factor), end in zip(points, ends, strict=True):
        if factor == 1.0:
            keep = keep | ((pl.col("time_s") > t) & (pl.col("time_s") <= end))
    return rows.filter(keep)


def fit_alpha(sc: Scenario, device: str, series: Sequence[pl.DataFrame], f_max_mhz: float) -> Fit | None:
    """``alpha`` of one node (``None`` when it never ran below the top frequency in a usable period)."""
    frames = [_outside_slowdowns(sc, device, _stable_rows(rows)) for rows in series]
    use = pl.concat(frames).filter((pl.col("served") > 0) & (pl.col("env_factor") > 0))
    x = np.log(f_max_mhz / use["freq_mhz"].to_numpy())
    if use.height < 4 or np.ptp(x) <= 0:
        return None
    y = np.log(use["env_factor"].to_numpy())
    w = np.sqrt(use["served"].to_numpy().astype(np.float64))
    coef, cov = np.polyfit(x, y, 1, w=w, cov="unscaled")
    resid = (y - np.polyval(coef, x)) * w
    s2 = float(resid @ resid) / max(use.height - 2, 1)
    return Fit(float(coef[0]), float(math.sqrt(max(cov[0, 0] * s2, 0.0))), use.height)


def fit_hop(sc: Scenario, results: Mapping[str, RunResult]) -> tuple[Fit, float] | None:
    """The mean time per request outside the services (``hil.compare.overhead_per_request_s``, the rule the
    as-realised replay uses too) and the per-hop latency after transfer times."""
    from hil.compare import overhead_per_request_s

    overhead = overhead_per_request_s(sc, list(results.values()))
    if overhead is None:
        return None
    mean = overhead.mean_s
    fit = Fit(mean, overhead.stderr_s, overhead.n)
    transfer_s = sum(hop_time_s(sc, k)[0] for k in range(len(sc.stages) - 1))
    return fit, (mean - transfer_s) / (len(sc.stages) - 1)


def fit_interference(
    sc: Scenario, results: Mapping[str, RunResult], alpha: Mapping[str, Fit], f_max: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Per scripted slowdown window of a node: measured factor (frequency's share divided out) vs stated."""
    out = []
    for device in sorted({ev.device for ev in sc.environment}):
        points = merged_schedule([ev for ev in sc.environment if ev.device == device])
        ends = [p[0] for p in points[1:]] + [math.inf]
        stages = _stage_names(sc, device)
        for (t, stated), end in zip(points, ends, strict=True):
            ratios, weights = _window_ratios(results, stages, t, end, alpha.get(device), f_max.get(device))
            if ratios.size == 0:
                continue
            mean = float(np.average(ratios, weights=weights))
            se = float(np.std(ratios) / math.sqrt(ratios.size)) if ratios.size > 1 else math.nan
            out.append({"device": device, "start_s": t, "end_s": end, "stated": stated, "factor": mean, "stderr": se})
    return out


def _window_ratios(
    results: Mapping[str, RunResult],
    stages: Sequence[str],
    t: float,
    end: float,
    alpha: Fit | None,
    f_max: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    ratios: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for r in results.values():
        tl = r.timeline.sort("time_s")
        period_s = float(np.median(np.diff(np.unique(tl["time_s"].to_numpy())))) if tl.height > 1 else 0.0
        w = tl.filter(
            pl.col("stage").is_in(stages)
            & (pl.col("served") > 0)
            & (pl.col("env_factor") > 0)
            & (pl.col("time_s") > (t + period_s if t > 0 else -math.inf))
            & (pl.col("time_s") <= end)
        )
        factor = w["env_factor"].to_numpy()
        if alpha is not None and f_max is not None and "freq_mhz" in w.columns:
            factor = factor / (f_max / w["freq_mhz"].fill_null(f_max).to_numpy()) ** alpha.value
        ratios.append(factor)
        weights.append(w["served"].to_numpy().astype(np.float64))
    return np.concatenate(ratios), np.concatenate(weights)


def _emulator_records(run_dir: Path, policies: Sequence[str]) -> list[pl.DataFrame]:
    """Every policy's emulator records (time_s, node, power_w, temp_c; sorted by time)."""
    frames = []
    for path in (run_dir / p / EMULATOR_CSV for p in policies):
        if not (path.is_file() and path.stat().st_size > 0):
            raise ResultError(f"{path}: no emulator records (a run on hosts with emulate_physics writes them)")
        try:
            frame = pl.read_csv(path).select("time_s", "node", "power_w", "temp_c")
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ResultError(f"{path}: cannot read the emulator records: {exc}") from None
        frames.append(frame.sort("time_s"))
    return frames


def _device_busy_power(phys: DevicePhysics, rows: pl.DataFrame, stages: Sequence[str]) -> pl.DataFrame:
    """One row per period for the device: :func:`busy_power` of each of its stages, their services' power
    added (a device running two stages serves both)."""
    per_stage = [busy_power(phys, rows.filter(pl.col("stage") == st).sort("time_s")) for st in stages]
    if len(per_stage) == 1:
        return per_stage[0]
    idle = pl.col("power_w").min()
    both = (
        pl.concat(per_stage)
        .group_by("time_s")
        .agg(pl.col("temp_c").first(), (pl.col("power_w").sum() - (pl.len() - 1) * idle).alias("power_w"))
    )
    return both.sort("time_s")


def thermal_series(
    power: str, sc: Scenario, device: str, series: Sequence[pl.DataFrame], emulated: Sequence[pl.DataFrame]
) -> list[pl.DataFrame]:
    """The rows the thermal fit of ``device`` uses for the ``power`` source (see the module docstring)."""
    if power == "emulator":
        return [e.filter(pl.col("node") == device) for e in emulated]
    phys = next((d.physics for d in sc.devices if d.name == device), None)
    if power == "timeline" or (power == "auto" and phys is None):
        return list(series)
    if phys is None:
        raise ResultError(f"{sc.source}: device {device!r} has no physics: no power model for the busy time")
    return [_device_busy_power(phys, rows, _stage_names(sc, device)) for rows in series]


_POWER_NOTES = {
    "emulator": f"thermal fit on the emulator's own per-period power ({EMULATOR_CSV}; a check, not a measurement)",
    "timeline": "thermal fit on the timeline's power_w (a meter's readings, or the power model at the measured use)",
    "busy": "thermal fit on the run's power model at each period's measured busy time and frequency",
}


def calibrate(run_dir: Path, power: str = "auto") -> Calibration:
    """Every fit the run supports (see the module docstring); ``power`` says where the thermal fit takes the
    node's power from (``auto``: ``busy`` where the run's devices have physics, else the timeline's)."""
    sc, results = load_run(run_dir)
    cal = Calibration(source=str(run_dir.resolve()), policies=list(results))
    for policy, r in results.items():
        _need(run_dir, policy, r.timeline, _THERMAL_COLUMNS, "the thermal RC")
    if power not in POWER_SOURCES:
        raise ResultError(f"power source {power!r}: one of {', '.join(POWER_SOURCES)}")
    emulated = _emulator_records(run_dir, list(results)) if power == "emulator" else []
    auto = (
        "busy"
        if all(d.physics is not None for d in sc.devices if d.name in _physics_devices(sc, results))
        else "timeline"
    )
    cal.notes.append(_POWER_NOTES[auto if power == "auto" else power])
    f_max: dict[str, float] = {}
    for device in _physics_devices(sc, results):
        stages = _stage_names(sc, device)
        series = [r.timeline.filter(pl.col("stage").is_in(stages)).sort("time_s") for r in results.values()]
        try:
            cal.thermal[device] = fit_thermal(thermal_series(power, sc, device, series, emulated))
        except ResultError as exc:
            cal.notes.append(f"{device}: {exc}")
        phys = next((d.physics for d in sc.devices if d.name == device), None)
        if phys is not None:
            cal.base_physics[device] = phys
        f_max[device] = (
            phys.dvfs.freqs_mhz[0]
            if phys is not None
            else max(float(s["freq_mhz"].drop_nulls().to_numpy().max()) for s in series)
        )
        for policy, r in results.items():
            _need(run_dir, policy, r.timeline, _ALPHA_COLUMNS, "the frequency exponent")
        a = fit_alpha(sc, device, series, f_max[device])
        if a is None:
            cal.notes.append(f"{device}: never ran below its top frequency in a usable period: alpha not fitted")
        else:
            cal.alpha[device] = a
    if not cal.thermal:
        raise ResultError(f"{run_dir}: no node with temperature and power readings (temp_c / power_w all empty)")
    hop = fit_hop(sc, results)
    if hop is not None:
        cal.hop, cal.hop_latency_s = hop
    cal.interference = fit_interference(sc, results, cal.alpha, f_max)
    for device, a in cal.alpha.items():
        if a.value > ALPHA_MAX_SCHEMA:
            cal.notes.append(
                f"{device}: services slowed as alpha {a.value:.3f} > {ALPHA_MAX_SCHEMA:g}; the fragment carries "
                f"{ALPHA_MAX_SCHEMA:g} (the schema's bound), --holdout predicts with {a.value:.3f}"
            )
    cal.service_factor, cal.level_shapes = fit_services(_with_fitted_alpha(cal, sc), results)
    return cal


def _with_fitted_alpha(cal: Calibration, sc: Scenario) -> Scenario:
    """``sc`` whose devices' physics carry the fitted alpha (the services' factors are taken net of it)."""
    devices = []
    for d in sc.devices:
        if d.physics is not None and d.name in cal.alpha:
            d = replace(
                d,
                physics=replace(d.physics, dvfs=replace(d.physics.dvfs, alpha=fitted_alpha(cal, d.name, schema=False))),
            )
        devices.append(d)
    return replace(sc, devices=tuple(devices))


def fit_services(sc: Scenario, results: Mapping[str, RunResult]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per device outside its scripted windows, the measured / profiled service time over every policy's
    periods (the frequency's share divided out with the run's physics), and per stage the per-level shape
    of its service times relative to that (``hil.compare.realised_factors`` / ``level_shapes`` on the policies'
    timelines pooled): how this cluster's services differ from the profile — on the capped local nodes, the
    host CPU the other nodes share and a fixed part per service that the pruned levels do not shed."""
    from hil.compare import level_shapes, realised_factors

    first = next(iter(results.values()))
    pooled = replace(first, timeline=pl.concat([r.timeline for r in results.values()], how="diagonal_relaxed"))
    factors = realised_factors(sc, pooled)
    unslowed = {}
    for device, points in factors.items():
        stated = merged_schedule([ev for ev in sc.environment if ev.device == device])
        values = [f for (_, f), (_, s) in zip(points, stated, strict=True) if s == 1.0]
        if values:
            unslowed[device] = float(np.mean(values))
    return unslowed, level_shapes(sc, pooled, factors)


ALPHA_MAX_SCHEMA = 1.0  # the scenario schema's bound on dvfs.alpha (a physical node slows at most as f)


def fitted_alpha(cal: Calibration, device: str, *, schema: bool) -> float:
    """The fitted alpha, at least 0; with ``schema``, at most the scenario schema's bound.  A node whose
    services slowed *more* than the frequency ratio (the emulated cluster: a CPU quota cut under CFS costs
    more than its share) is predicted with what it did; the fragment can only carry the bound (noted)."""
    value = max(0.0, cal.alpha[device].value)
    return min(ALPHA_MAX_SCHEMA, value) if schema else value


def fitted_physics(cal: Calibration, device: str, base: DevicePhysics, *, schema: bool = False) -> DevicePhysics:
    """``base`` with the fitted thermal constants (and alpha, where fitted: :func:`fitted_alpha`) in place."""
    th = cal.thermal[device]
    thermal = replace(
        base.thermal,
        resistance_c_per_w=th["resistance_c_per_w"].value,
        time_constant_s=th["time_constant_s"].value,
        capacitance_j_per_c=None,
        ambient_c=th["ambient_c"].value,
    )
    alpha = fitted_alpha(cal, device, schema=schema) if device in cal.alpha else base.dvfs.alpha
    dvfs = replace(base.dvfs, alpha=alpha)
    return replace(base, thermal=thermal, dvfs=dvfs)


def _physics_table(cal: Calibration, device: str) -> dict[str, Any]:
    """The device's physics table: the run's physics with the fitted keys replaced, or only the fitted keys."""
    base = cal.base_physics.get(device)
    if base is not None:
        return dict(_drop_none(asdict(fitted_physics(cal, device, base, schema=True))))
    table: dict[str, Any] = {"thermal": {k: f.value for k, f in cal.thermal[device].items()}}
    if device in cal.alpha:
        table["dvfs"] = {"alpha": fitted_alpha(cal, device, schema=True)}
    return table


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None and v != ()}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def calibration_toml(cal: Calibration, holdout: Mapping[str, Any] | None = None) -> str:
    """The scenario fragment with the fitted values and their standard errors (see the module docstring)."""
    doc: dict[str, Any] = {"device": [{"name": d, "physics": _physics_table(cal, d)} for d in sorted(cal.thermal)]}
    if cal.hop_latency_s is not None:
        doc["network"] = {"latency_s": max(cal.hop_latency_s, 0.0)}
    calib: dict[str, Any] = {"source_run": cal.source, "policies": cal.policies}
    for d in sorted(cal.thermal):
        calib[d] = {k: f.doc() for k, f in cal.thermal[d].items()}
        if d in cal.alpha:
            calib[d]["alpha"] = cal.alpha[d].doc()
    if cal.hop is not None:
        calib["hop"] = {"overhead_per_request_s": cal.hop.doc(), "latency_per_hop_s": cal.hop_latency_s}
    if cal.interference:
        calib["interference"] = [{k: v for k, v in i.items() if not _is_inf(v)} for i in cal.interference]
    if cal.service_factor:
        calib["services"] = {
            "note": "measured / profiled service time per device outside scripted windows (frequency's share "
            "divided out), and per stage per level relative to it; --holdout applies both",
            "factor": cal.service_factor,
            "level_shapes": cal.level_shapes,
        }
    if cal.notes:
        calib["notes"] = cal.notes
    if holdout is not None:
        calib["holdout"] = dict(holdout)
    doc["calibration"] = calib
    head = (
        f"# edgeprune-hil calibrate: fitted from {cal.source} (policies {', '.join(cal.policies)}).\n"
        "# Merge each [[device]]'s physics into the scenario device of the same name (the keys override its\n"
        "# preset) and [network] latency_s into the scenario's hops; [calibration] holds every fitted value with\n"
        "# its standard error (stderr) and number of observations (n), and the held-out run's errors.\n"
    )
    return head + tomli_w.dumps(_nan_free(doc))


def _is_inf(v: object) -> bool:
    return isinstance(v, float) and math.isinf(v)


def _nan_free(value: Any) -> Any:
    """TOML has nan, but a reader should not have to handle it: NaN entries are left out, and so are unknown
    ones (``None``: an error with no figure on one side), which TOML cannot hold."""
    if isinstance(value, Mapping):
        return {
            k: _nan_free(v) for k, v in value.items() if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
    if isinstance(value, list):
        return [_nan_free(v) for v in value]
    return value


def predicted_scenario(cal: Calibration, sc: Scenario) -> Scenario:
    """``sc`` with the fitted physics on its devices of the same name and the fitted hop latency."""
    devices = []
    for d in sc.devices:
        base = d.physics or cal.base_physics.get(d.name)
        if d.name in cal.thermal and base is not None:
            d = replace(d, physics=fitted_physics(cal, d.name, base))
        devices.append(d)
    out = replace(sc, devices=tuple(devices))
    out = with_services(cal, out)
    if cal.hop_latency_s is not None:
        out = replace(out, network=replace(sc.network, latency_s=max(cal.hop_latency_s, 0.0)), links=())
    return out


def with_services(cal: Calibration, sc: Scenario) -> Scenario:
    """``sc`` with the fitted service-time factor on every device without scripted events of its own (one
    where the scenario scripts a slowdown keeps the script) and the fitted level shapes on its stages."""
    from hil.compare import as_realised, with_level_shapes

    scripted = {ev.device for ev in sc.environment}
    factors = {
        d: [(0.0, f)]
        for d, f in cal.service_factor.items()
        if d not in scripted and any(st.device == d for st in sc.stages)
    }
    shapes = {st.name: cal.level_shapes[st.name] for st in sc.stages if st.name in cal.level_shapes}
    return with_level_shapes(as_realised(sc, factors), shapes)


def holdout_errors(cal: Calibration, run_dir: Path) -> dict[str, Any]:
    """Predicted (the simulator with the fitted parameters) vs measured on a held-out run, per policy."""
    from hil.compare import compare, predict

    sc, results = load_run(run_dir)
    pred = predict(predicted_scenario(cal, sc), list(results), known_profile=sc.profile)
    doc = compare(results, pred, sc.slo_s)
    out: dict[str, Any] = {"run": str(run_dir.resolve()), "policies": {}}
    for policy, hw in results.items():
        rows = doc["policies"].get(policy, {})
        entry = {m: rows[m]["error"] for m in ("p50_latency_s", "p95_latency_s", "slo_attainment") if m in rows}
        entry.update(_physics_errors(sc, hw.timeline, pred[policy].timeline))
        out["policies"][policy] = entry
    return out


def _physics_errors(sc: Scenario, hw: pl.DataFrame, sim: pl.DataFrame) -> dict[str, float]:
    """Temperature RMSE and time throttled (measured vs predicted) over the ticks both have."""
    if "temp_c" not in hw.columns or "temp_c" not in sim.columns:
        return {}
    cols = ["time_s", "stage", "temp_c", "freq_mhz"]
    both = hw.select(cols).join(sim.select(cols), on=["time_s", "stage"], suffix="_sim").drop_nulls()
    if both.is_empty():
        return {}
    period_s = float(np.median(np.diff(np.unique(both["time_s"].to_numpy())))) if both.height > 1 else 0.0
    top = both.group_by("stage").agg(
        pl.col("freq_mhz").max().alias("top"), pl.col("freq_mhz_sim").max().alias("top_sim")
    )
    both = both.join(top, on="stage")
    hw_s = float((both["freq_mhz"] < both["top"]).sum()) * period_s
    sim_s = float((both["freq_mhz_sim"] < both["top_sim"]).sum()) * period_s
    err = (both["temp_c"] - both["temp_c_sim"]).to_numpy()
    return {
        "temp_rmse_c": float(np.sqrt(np.mean(err**2))),
        "throttled_s": hw_s,
        "throttled_s_predicted": sim_s,
        "throttled_error_pct": (hw_s - sim_s) / sim_s * 100.0 if sim_s > 0 else (0.0 if hw_s == 0 else math.inf),
    }


def format_calibration(cal: Calibration, holdout: Mapping[str, Any] | None = None) -> str:
    """The fitted values (± standard error) and the held-out run's errors as text."""
    lines = [f"calibrated from {cal.source} (policies {', '.join(cal.policies)}):"]
    for d in sorted(cal.thermal):
        th = cal.thermal[d]
        alpha = cal.alpha.get(d)
        shown = "-" if alpha is None else f"{alpha.value:.3f} ± {alpha.stderr:.3f}"
        lines.append(
            f"  {d:<8} R {th['resistance_c_per_w'].value:.3f} ± {th['resistance_c_per_w'].stderr:.3f} C/W  "
            f"tau {th['time_constant_s'].value:.2f} ± {th['time_constant_s'].stderr:.2f} s  "
            f"ambient {th['ambient_c'].value:.2f} ± {th['ambient_c'].stderr:.2f} C  alpha {shown}"
        )
    if cal.hop is not None and cal.hop_latency_s is not None:
        lines.append(
            f"  outside the services: {cal.hop.value * 1000:.1f} ± {cal.hop.stderr * 1000:.1f} ms per request "
            f"({cal.hop.n} requests that found the pipeline empty); latency per hop {cal.hop_latency_s * 1000:.1f} ms"
        )
    for i in cal.interference:
        lines.append(
            f"  {i['device']} from {i['start_s']:g} s: service-time factor {i['factor']:.3f} ± {i['stderr']:.3f} "
            f"(stated {i['stated']:g})"
        )
    if cal.service_factor:
        shown = "  ".join(f"{d} {f:.3f}" for d, f in sorted(cal.service_factor.items()))
        lines.append(f"  service time measured / profiled (no slowdown, frequency divided out): {shown}")
    lines += [f"  note: {n}" for n in cal.notes]
    if holdout is not None:
        lines.append(f"held-out run {holdout['run']}: predicted with the fitted values vs measured")
        for policy, e in holdout["policies"].items():
            parts = [f"{k} {_fmt_err(k, v)}" for k, v in e.items()]
            lines.append(f"  {policy:<14}" + "  ".join(parts))
    return "\n".join(lines)


def _fmt_err(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key == "slo_attainment":
        return f"{v:+.1f} pt"
    if key.endswith("_pct") or key.endswith("latency_s"):
        return f"{v:+.1f}%"
    return f"{v:.2f}"
