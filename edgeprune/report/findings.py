"""The findings that open a report: who meets the SLO target, how much load each policy sustains, at what cost.

Everything here is computed from the results table; no sentence is written by hand.

* **Regime**: one setting of the sweep axes other than the load axis ``x`` (e.g. a slowdown), or the whole
  sweep when the load is the only axis.
* **Sustainable throughput** of a policy in a regime, per seed: the highest load ``x`` reached before the
  first load (in increasing order) whose SLO attainment falls below the target; 0 when the lowest load
  already misses it.  The reported figure is its mean and 95% t-interval across seeds
  (:func:`edgeprune.report.stats.mean_ci`).  When every seed holds the target at every tested load it is a
  lower bound ("at least"), flagged ``censored``.
* **Accuracy (and energy) it costs**: the policy's mean accuracy at its sustained load (per seed, then
  averaged), against the baseline policy's mean accuracy over the regime (default ``no-pruning``).  Energy
  figures (e.g. ``energy_per_inference_j``) are included the same way when the results table has them.
* **Winner**: the policy with the highest mean sustainable throughput (ties: the higher accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from edgeprune.report.stats import mean_ci

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_SLO_TARGET",
    "ENERGY_FIELDS",
    "RegimeFindings",
    "regime_label",
    "run_findings",
    "sustainable_frame",
    "sweep_findings",
]

DEFAULT_SLO_TARGET = 0.9
DEFAULT_BASELINE = "no-pruning"
#: Energy columns of a results table (written by the device-physics work), with their unit; used if present.
ENERGY_FIELDS = (("energy_per_inference_j", "J per inference"),)


@dataclass(frozen=True)
class RegimeFindings:
    """The findings of one regime: its sentences and the per-policy figures they come from."""

    regime: str
    sentences: tuple[str, ...]
    table: pl.DataFrame  # one row per policy: sustainable_x (+ _lo/_hi), accuracy, energy, ratio, censored


def energy_fields(columns: Sequence[str]) -> list[tuple[str, str]]:
    """The energy columns present in ``columns`` (none before the device-physics work lands)."""
    return [(f, unit) for f, unit in ENERGY_FIELDS if f in columns]


def regime_label(row: dict[str, object], regime_columns: Sequence[str]) -> str:
    """``"slowdown=2"``-style text naming a regime (``"all"`` when there is no other axis)."""
    return ", ".join(f"{c}={_num(row[c])}" for c in regime_columns) or "all"


def _num(value: object) -> str:
    """A load or axis value, four significant digits at most (measured rates are not round)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _per_seed(results: pl.DataFrame, x: str, keys: Sequence[str], target: float, extra: Sequence[str]) -> pl.DataFrame:
    """Per regime, policy and seed: the sustained load and the figures of ``extra`` at it."""
    rows = []
    for key, grp in results.sort(x).group_by(list(keys), maintain_order=True):
        xs, att = grp[x].to_list(), grp["slo_attainment"].to_list()
        first_miss = next((i for i, a in enumerate(att) if a is None or a < target), len(att))
        rec = dict(zip(keys, key, strict=True))
        rec["sustainable_x"] = float(xs[first_miss - 1]) if first_miss > 0 else 0.0
        rec["all_met"] = first_miss == len(att)
        for f in extra:
            rec[f] = grp[f][first_miss - 1] if first_miss > 0 else None
        rows.append(rec)
    schema = {k: results.schema[k] for k in keys} | {"sustainable_x": pl.Float64, "all_met": pl.Boolean}
    schema |= {f: pl.Float64 for f in extra}
    return pl.DataFrame(rows, schema=schema)


def sustainable_frame(
    results: pl.DataFrame, x: str, regime_columns: Sequence[str], target: float = DEFAULT_SLO_TARGET
) -> pl.DataFrame:
    """Per regime and policy: ``sustainable_x`` and the accuracy/energy at it, each with its interval.

    ``results`` has one row per (cell, policy) with ``seed``, ``x``, ``slo_attainment`` and
    ``mean_accuracy``.  ``censored`` is true when every seed met the target at every tested load.
    """
    extra = ["mean_accuracy", *(f for f, _ in energy_fields(results.columns))]
    seed_col = ["seed"] if "seed" in results.columns else []
    keys = [*regime_columns, "policy", *seed_col]
    per_seed = _per_seed(results.drop_nulls(x), x, keys, target, extra)
    summary = mean_ci(per_seed, [*regime_columns, "policy"], ["sustainable_x", *extra])
    censored = per_seed.group_by([*regime_columns, "policy"], maintain_order=True).agg(
        pl.col("all_met").all().alias("censored")
    )
    top = float(results[x].max())  # type: ignore[arg-type]
    clipped = summary.with_columns(
        pl.col("sustainable_x_lo").clip(0.0, top), pl.col("sustainable_x_hi").clip(0.0, top)
    )  # a load outside the tested range is not a finding
    return clipped.join(censored, on=[*regime_columns, "policy"], how="left", maintain_order="left")


def _pm(mean: float, lo: float | None, hi: float | None, digits: int) -> str:
    """``mean ± half-width``, or ``mean (lo–hi)`` when the interval was clipped to the metric's range."""
    text = f"{mean:.{digits}f}"
    if lo is None or hi is None:
        return text
    if abs((hi - mean) - (mean - lo)) > 1e-9 * max(1.0, abs(mean)):
        return text + f" ({lo:.{digits}f}–{hi:.{digits}f})"
    return text + f" ± {(hi - lo) / 2:.{digits}f}"


def _load_text(row: dict[str, object], unit: str) -> str:
    mean = float(row["sustainable_x"])  # type: ignore[arg-type]
    if mean == 0.0:
        return "no tested load"
    text = _pm(mean, row["sustainable_x_lo"], row["sustainable_x_hi"], 2) + unit  # type: ignore[arg-type]
    return f"at least {text} (every tested load)" if row["censored"] else text


def _cost_text(
    row: dict[str, object], base: dict[str, float] | None, energy: Sequence[tuple[str, str]], base_name: str
) -> str:
    """``mean accuracy 0.973 (-0.018 vs no-pruning), 1.2 J per inference (+5% vs no-pruning)``."""
    parts = []
    acc = row.get("mean_accuracy")
    if acc is not None:
        text = f"mean accuracy {float(acc):.3f}"  # type: ignore[arg-type]
        if base is not None and base.get("mean_accuracy") is not None:
            text += f" ({_signed(float(acc) - base['mean_accuracy'], 3)} vs {base_name})"  # type: ignore[arg-type]
        parts.append(text)
    for field, unit in energy:
        value = row.get(field)
        if value is not None:
            text = f"{float(value):.3g} {unit}"  # type: ignore[arg-type]
            if base is not None and base.get(field):
                text += f" ({float(value) / base[field] - 1:+.0%} vs {base_name})"  # type: ignore[arg-type]
            parts.append(text)
    return ", ".join(parts)


def _baseline_figures(regime_rows: pl.DataFrame, baseline: str, fields: Sequence[str]) -> dict[str, float] | None:
    """The baseline's mean of each field over the whole regime (its accuracy does not depend on load)."""
    rows = regime_rows.filter(pl.col("policy") == baseline)
    if rows.height == 0:
        return None
    return {f: rows[f].mean() for f in fields if f in rows.columns}  # type: ignore[misc]


def _regime_sentences(
    label: str, table: pl.DataFrame, cell_slo: pl.DataFrame, base: dict[str, float] | None, opts: _Opts
) -> list[str]:
    rows = table.sort(["sustainable_x", "mean_accuracy"], descending=True, nulls_last=True).to_dicts()
    energy = energy_fields(table.columns)
    where = "" if label == "all" else f"{label}: "
    target = f"{opts.target:.0%}"
    sentences = [_meets_sentence(where, cell_slo, opts)]
    best = rows[0]
    tied = [r["policy"] for r in rows[1:] if r["sustainable_x"] == best["sustainable_x"]]
    tie = f" (tied with {_join(tied)}; the highest accuracy of them)" if tied else ""
    base_row = next((r for r in rows if r["policy"] == opts.baseline), None)
    ratio = ""
    if base_row is not None and best["policy"] != opts.baseline:
        if float(base_row["sustainable_x"]) > 0:
            ratio = f", {float(best['sustainable_x']) / float(base_row['sustainable_x']):.1f}× {opts.baseline}"
        ratio += f" ({_load_text(base_row, opts.unit)})"
    cost = _cost_text(best, base, energy, opts.baseline)
    sentences.append(
        f"{where}{best['policy']}{tie} sustains the most load with ≥ {target} SLO attainment: "
        f"{_load_text(best, opts.unit)}{ratio}" + (f", at {cost}." if cost else ".")
    )
    others = [r for r in rows[1:] if r["policy"] != opts.baseline]
    if others:
        sentences.append(
            "The others: "
            + "; ".join(
                f"{r['policy']} {_load_text(r, opts.unit)}"
                + (f" at {c}" if (c := _cost_text(r, base, energy, opts.baseline)) else "")
                for r in others
            )
            + "."
        )
    return sentences


def _meets_sentence(where: str, cell_slo: pl.DataFrame, opts: _Opts) -> str:
    """Up to which load every policy meets the target, and from which load none does (mean over seeds)."""
    target = f"{opts.target:.0%}"
    met = cell_slo.with_columns((pl.col("slo_attainment").fill_null(0.0) >= opts.target).alias("met"))
    per_x = met.group_by("x").agg(pl.col("met").all().alias("all"), pl.col("met").any().alias("any")).sort("x")
    xs, all_met, any_met = per_x["x"].to_list(), per_x["all"].to_list(), per_x["any"].to_list()
    n = cell_slo["policy"].n_unique()
    if all(all_met):
        return f"{where}all {n} policies meet the {target} SLO-attainment target at every tested load ({opts.x_range})."
    if not any(any_met):
        return f"{where}no policy meets the {target} SLO-attainment target at any tested load ({opts.x_range})."
    first_fail = all_met.index(False)
    text = f"{where}"
    if first_fail > 0:
        text += f"all {n} policies meet the {target} SLO-attainment target up to {_num(xs[first_fail - 1])}{opts.unit}"
    else:
        text += f"not every policy meets the {target} SLO-attainment target even at {_num(xs[0])}{opts.unit}"
    none_from = next((i for i in range(len(xs)) if not any(any_met[i:])), None)
    if none_from is not None:
        text += f"; from {_num(xs[none_from])}{opts.unit} on, none does"
    return text + f" (tested: {opts.x_range})."


def _signed(value: float, digits: int) -> str:
    """``+0.012`` / ``-0.012``; a difference that rounds to zero prints as ``+0.000``, never ``-0.000``."""
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0.0 else text


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class _Opts:
    target: float
    baseline: str
    unit: str
    x_range: str


def sweep_findings(
    results: pl.DataFrame,
    x: str,
    regime_columns: Sequence[str],
    *,
    target: float = DEFAULT_SLO_TARGET,
    baseline: str = DEFAULT_BASELINE,
    unit: str = "",
) -> list[RegimeFindings]:
    """Per regime: the sentences (see the module docstring) and the per-policy table behind them."""
    table = sustainable_frame(results, x, regime_columns, target)
    cells = [*regime_columns, x, "policy"]
    by_cell = results.group_by(cells, maintain_order=True).agg(pl.col("slo_attainment").mean())
    out = []
    regimes = table.select(regime_columns).unique(maintain_order=True) if regime_columns else pl.DataFrame([{}])
    for reg in regimes.iter_rows(named=True):
        match = [pl.col(c) == v for c, v in reg.items()]
        rows, sub, cell_rows = (f.filter(*match) if match else f for f in (results, table, by_cell))
        lo, hi = rows[x].min(), rows[x].max()
        opts = _Opts(target, baseline, f" {unit}" if unit else "", f"{x} {_num(lo)}–{_num(hi)}{unit and ' ' + unit}")
        fields = ["mean_accuracy", *(f for f, _ in energy_fields(results.columns))]
        base = _baseline_figures(rows, baseline, fields)
        label = regime_label(reg, regime_columns)
        sub = sub.with_columns(
            (pl.col("sustainable_x") / _base_x(sub, baseline)).alias("ratio_to_baseline"),
            (pl.col("mean_accuracy") - (base or {}).get("mean_accuracy", float("nan"))).alias("accuracy_delta"),
        )
        out.append(
            RegimeFindings(
                label,
                tuple(
                    _regime_sentences(
                        label, sub, cell_rows.select(x, "policy", "slo_attainment").rename({x: "x"}), base, opts
                    )
                ),
                sub,
            )
        )
    return out


def _base_x(table: pl.DataFrame, baseline: str) -> float:
    rows = table.filter(pl.col("policy") == baseline)
    value = float(rows["sustainable_x"][0]) if rows.height else 0.0
    return value if value > 0 else float("nan")


def run_findings(
    frame: pl.DataFrame, *, target: float = DEFAULT_SLO_TARGET, baseline: str = DEFAULT_BASELINE
) -> list[str]:
    """Sentences for run folders (one scenario × backend each): who meets the target, the best attainment.

    ``frame``: :func:`edgeprune.report.sources.runs_frame` rows (seeds are averaged per policy).
    """
    energy = energy_fields(frame.columns)
    fields = ["slo_attainment", "mean_accuracy", "p95_latency_s", *(f for f, _ in energy)]
    table = mean_ci(frame, ["scenario", "backend", "policy"], fields)
    out = []
    for (scen, backend), grp in table.group_by(["scenario", "backend"], maintain_order=True):
        meets = grp.filter(pl.col("slo_attainment") >= target)["policy"].to_list()
        where = f"{scen} ({backend})"
        base = _baseline_figures(grp, baseline, ["mean_accuracy", *(f for f, _ in energy)])
        best = grp.sort(["slo_attainment", "mean_accuracy"], descending=True, nulls_last=True).row(0, named=True)
        p95 = best.get("p95_latency_s")
        cost = _cost_text(best, base, energy, baseline)
        out.append(
            f"{where}: {_join(meets) or 'no policy'} meet{'s' if len(meets) == 1 else ''} the {target:.0%} "
            f"SLO-attainment target. Best: {best['policy']} at "
            f"{_pm(*_slo_pct(best), 1)}% "
            + (f"(p95 {p95:.3g} s)" if p95 is not None else "(no request finished)")
            + (f", {cost}." if cost else ".")
        )
    return out


def _slo_pct(row: dict[str, object]) -> tuple[float, float | None, float | None]:
    """SLO attainment mean and interval in %, the interval clipped to [0, 100]."""
    lo, hi = row["slo_attainment_lo"], row["slo_attainment_hi"]
    return (
        float(row["slo_attainment"]) * 100,  # type: ignore[arg-type]
        None if lo is None else max(0.0, float(lo) * 100),  # type: ignore[arg-type]
        None if hi is None else min(100.0, float(hi) * 100),  # type: ignore[arg-type]
    )
