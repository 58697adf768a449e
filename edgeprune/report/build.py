"""From sweep folders, run folders and profiles to the report's sections (tables and charts), in memory.

Sections, each present only when its inputs are:

0. findings, always first: per sweep and regime, who meets the SLO target, each policy's sustainable
   load with its interval, the ratio to the baseline and the accuracy (and energy) it costs; per run
   folder, who meets the target and the best attainment (:mod:`edgeprune.report.findings`);
1. per sweep: the SLO-attainment pivot (setting × policy, shaded), Fig. 5 (SLO attainment and log-scale
   p95 latency versus arrival rate), the sustainable-load and accuracy-vs-SLO (Pareto) charts, latency
   CDFs of its kept runs, and the level and queue timelines of its most loaded kept run;
2. run folders: CDFs and timelines with the environment events shaded;
3. simulator vs hardware, when a hardware run (``"backend": "hil"``) has a simulator twin (same scenario
   name and seed): the error table beside the per-policy simulator and hardware latency distributions;
4. profiles: Figs. 3–4, speedup per device and accuracy per strategy (with its interval, proxies labelled);
5. full results: the long tables (mean ± 95% CI across seeds of every figure per setting and policy).

Every policy keeps one colour, marker and dash across the report.  Inputs are named relative to the
report's folder (or as given when relative), never by an absolute path.

The x axis of Fig. 5 is the sweep's first numeric axis whose name mentions a rate, else the measured
``offered_rate_hz``; in that case settings are told apart by the axes that do not vary the arrivals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from edgeprune.errors import ConfigError, ResultError, did_you_mean
from edgeprune.profile import Profile, load_profile
from edgeprune.report import charts as ch
from edgeprune.report import findings as fi
from edgeprune.report.sources import (
    RunSource,
    SweepSource,
    environment_events,
    load_run,
    load_sources,
    runs_frame,
    shown_path,
)
from edgeprune.report.stats import mean_ci
from edgeprune.report.tables import (
    HW_METRICS,
    DisplayTable,
    findings_table,
    headline_table,
    hw_error_frame,
    hw_error_table,
    run_table,
    slo_pivot,
    sweep_table,
)

__all__ = ["Report", "Section", "build_report", "choose_x"]

MAX_CDF_PANELS = 8
MAX_TIMELINE_RUNS = 3
OFFERED = "offered_rate_hz"


@dataclass(frozen=True)
class Section:
    """A part of the report: a heading, a sentence or two, tables and charts."""

    title: str
    text: str
    tables: tuple[DisplayTable, ...] = ()
    charts: tuple[ch.Chart, ...] = ()
    bullets: tuple[str, ...] = ()
    side_by_side: bool = False  # tables beside the first chart (the simulator-vs-hardware comparison)


@dataclass(frozen=True)
class Report:
    """The whole report, ready to render."""

    title: str
    sources: tuple[str, ...]  # as shown: relative to the report, or as the user gave them
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class Options:
    """What the report is asked: the SLO-attainment target, the baseline policy, where the report goes."""

    slo_target: float = fi.DEFAULT_SLO_TARGET
    baseline: str = fi.DEFAULT_BASELINE
    out_dir: Path | None = None
    x: str | None = None


def _numeric_axes(sweep: SweepSource) -> list[tuple[str, str]]:
    """``(column, key)`` of the axes with int or float values."""
    return [(a["column"], a["key"]) for a in sweep.manifest.get("axes", []) if a.get("kind") in ("int", "float")]


def choose_x(sweep: SweepSource, requested: str | None) -> tuple[str, str, list[str]]:
    """The Fig. 5 x column, its axis title, and the columns that tell settings apart (see module doc)."""
    numeric = _numeric_axes(sweep)
    if requested is not None:
        valid = [c for c, _ in numeric] + [OFFERED]
        if requested not in valid:
            raise ConfigError(
                f"--x = {requested!r}: not a numeric axis of {sweep.path}" + did_you_mean(requested, valid)
            )
        x = requested
    else:
        x = next((c for c, k in numeric if "rate" in c or "rate" in k), OFFERED)
    keys = {a["column"]: a["key"] for a in sweep.manifest.get("axes", [])}
    if x == OFFERED:
        groups = [c for c in sweep.axis_columns if not keys.get(c, "").startswith("arrivals")]
        return x, "offered load (requests/s, measured)", groups
    return x, f"{x} (requests/s)" if "rate" in x else x, [c for c in sweep.axis_columns if c != x]


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def _spread(items: Sequence[tuple[str, Path]], k: int) -> list[tuple[str, Path]]:
    """At most ``k`` items evenly spread over ``items`` (first and last kept)."""
    if len(items) <= k:
        return list(items)
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def _unit(x: str) -> str:
    return "req/s" if "rate" in x else ""


def _sweep_section(
    sweep: SweepSource, opts: Options, taken: set[str], policies: Sequence[str]
) -> tuple[Section, Section, DisplayTable]:
    """The sweep's section, its findings (sentences + table) and its long table (for the end)."""
    x, x_title, groups = choose_x(sweep, opts.x)
    table = headline_table(sweep.results, sweep.axis_columns)
    slo = next(iter(sweep.results["slo_s"].drop_nulls().to_list()), None) if "slo_s" in sweep.results.columns else None
    charts = ch.fig5_charts(table, x, x_title, groups, sweep.name, policies=policies, target=opts.slo_target, slo_s=slo)
    found = fi.sweep_findings(sweep.results, x, groups, target=opts.slo_target, baseline=opts.baseline, unit=_unit(x))
    sustain = pl.concat([f.table for f in found], how="diagonal_relaxed")
    charts.append(ch.sustainable_chart(sustain, groups, x_title, sweep.name, policies))
    charts.append(ch.pareto_chart(table, x, groups, sweep.name, policies))
    charts = [ch.Chart(_unique(c.name, taken), c.title, c.spec, c.caption) for c in charts]
    charts += _kept_run_charts(sweep, taken, policies)
    n_cells = sweep.results["cell_id"].n_unique()
    text = (
        f"{n_cells} cells, axes: {', '.join(sweep.axis_columns) or 'none'}; seeds: "
        f"{', '.join(str(s) for s in sweep.manifest.get('seeds', []))}. Source: {shown_path(sweep.path, opts.out_dir)}."
    )
    pivot = slo_pivot(
        table, sweep.axis_columns, opts.slo_target, f"SLO attainment by setting and policy ({sweep.name})"
    )
    section = Section(f"Sweep {sweep.name}", text, (pivot,), tuple(charts))
    bullets = tuple(f"{sweep.name}: {s}" for f in found for s in f.sentences)
    ftable = findings_table(sustain, groups, _unit(x), opts.baseline)
    ftable = DisplayTable(f"{ftable.title} ({sweep.name})", ftable.headers, ftable.rows, ftable.note)
    findings = Section("", "", (ftable,), (), bullets)
    return section, findings, sweep_table(sweep.results, sweep.axis_columns, f"All results ({sweep.name})")


def _kept_run_charts(sweep: SweepSource, taken: set[str], policies: Sequence[str]) -> list[ch.Chart]:
    """CDFs of (at most MAX_CDF_PANELS) kept runs and the timelines of the most loaded one."""
    kept = _spread(sweep.kept, MAX_CDF_PANELS)
    if not kept:
        return []
    loaded = [(label, load_run(path, label)) for label, path in kept]
    slo = next((r.slo_s for _, r in loaded if r.slo_s is not None), None)
    name = _unique(f"{ch.slug(sweep.name)}-latency-cdf", taken)
    runs = [(lbl, r.runs) for lbl, r in loaded]
    charts = [ch.cdf_chart(runs, slo, name, f"Latency CDF ({sweep.name})", policies=policies)]
    busiest = _busiest(sweep, [p for _, p in sweep.kept])
    label, path = next((lp for lp in sweep.kept if lp[1] == busiest), sweep.kept[-1])
    run = load_run(path, label)
    tl_name = _unique(f"{ch.slug(sweep.name)}-timeline", taken)
    return charts + ch.timeline_charts(label, run.runs, tl_name, environment_events(path))


def _busiest(sweep: SweepSource, kept_paths: Sequence[Path]) -> Path | None:
    """The kept run with the highest measured offered load (the most telling timeline)."""
    ids = {p.name for p in kept_paths}
    rows = sweep.results.filter(pl.col("cell_id").is_in(list(ids))).sort(OFFERED, descending=True, nulls_last=True)
    if rows.height == 0:
        return None
    best = rows["cell_id"][0]
    return next(p for p in kept_paths if p.name == best)


def _runs_section(runs: Sequence[RunSource], taken: set[str], policies: Sequence[str]) -> Section:
    charts = []
    slo = next((r.slo_s for r in runs if r.slo_s is not None), None)
    cdf_name = _unique("runs-latency-cdf", taken)
    charts.append(
        ch.cdf_chart([(r.label, r.runs) for r in runs], slo, cdf_name, "Latency CDF (runs)", policies=policies)
    )
    for r in runs[:MAX_TIMELINE_RUNS]:
        name = _unique(f"run-{ch.slug(r.label)}-timeline", taken)
        charts += ch.timeline_charts(r.label, r.runs, name, environment_events(r.path))
    for r in runs:
        if r.replay is not None:  # a replayed trace: what arrived, over time and as gaps
            charts.append(ch.replay_chart(r.label, r.runs, r.replay, _unique(f"run-{ch.slug(r.label)}-trace", taken)))
    text = f"{len(runs)} run folder(s): " + ", ".join(f"{r.label} ({r.backend}, seed {r.seed})" for r in runs) + "."
    return Section("Runs", text, (), tuple(charts))


def _hw_section(runs: Sequence[RunSource], taken: set[str]) -> Section | None:
    hw = [r for r in runs if r.backend == "hil"]
    if not hw:
        return None
    sims = {(r.scenario, r.seed): r for r in runs if r.backend != "hil"}
    predictions = [(r.scenario, r.seed, r.prediction) for r in hw if r.prediction is not None]
    unpaired = [r for r in hw if (r.scenario, r.seed) not in sims and r.prediction is None]
    note = ""
    if unpaired:
        note = " No simulator twin for: " + ", ".join(f"{r.label} ({r.scenario}, seed {r.seed})" for r in unpaired)
    errors = hw_error_frame(runs_frame(runs), predictions)
    if errors.height == 0:
        return Section("Simulator vs hardware", "No hardware run has a simulator twin among the inputs." + note)
    summary = mean_ci(errors, ["scenario", "policy", "metric"], ["error"])
    charts = [ch.hw_error_chart(summary, {m.field: m.label for m in HW_METRICS})]
    first = next((r for r in hw if (r.scenario, r.seed) in sims), None)
    if first is not None:
        twin = sims[(first.scenario, first.seed)]
        charts.insert(
            0,
            ch.sim_hw_cdf_chart(
                [(twin.label, twin.runs), (first.label, first.runs)],
                first.slo_s,
                _unique("sim-vs-hw-cdf", taken),
                f"Latency CDF per policy: simulator vs hardware ({first.scenario}, seed {first.seed})",
            ),
        )
    n_twins = len({(r.scenario, r.seed) for r in hw} & set(sims))
    text = (
        f"{n_twins} hardware run(s) paired with a simulator run of the same scenario and seed, "
        f"{len(hw) - n_twins - len(unpaired)} compared with their own prediction (sim_vs_hw.json)." + note
    )
    return Section("Simulator vs hardware", text, (hw_error_table(errors),), tuple(charts), side_by_side=True)


def _profile_section(profiles: Sequence[tuple[str, Profile]]) -> Section:
    charts = [ch.speedup_chart(profiles)]
    acc = ch.accuracy_chart(profiles)
    if acc is not None:
        charts.append(acc)
    notes = []
    for label, p in profiles:
        a = p.accuracy
        if a is None:
            notes.append(f"{label}: no accuracy curve.")
        elif a.proxy:
            notes.append(f"{label}: accuracy is a PROXY ({a.dataset}): {a.note}".rstrip(": ") + ".")
    text = "Profiles: " + ", ".join(label for label, _ in profiles) + ". " + " ".join(notes)
    return Section("Profiles", text.strip(), (), tuple(charts))


def _policies(sweeps: Sequence[SweepSource], runs: Sequence[RunSource]) -> list[str]:
    """Every policy of the inputs, in first-appearance order (fixes each one's colour, marker and dash)."""
    names: list[str] = []
    for sw in sweeps:
        names += sw.results["policy"].unique(maintain_order=True).to_list()
    for r in runs:
        names += list(r.runs)
    return list(dict.fromkeys(names))


def _findings_section(per_sweep: Sequence[Section], runs: Sequence[RunSource], opts: Options) -> Section:
    bullets = [b for s in per_sweep for b in s.bullets]
    if runs:
        bullets += fi.run_findings(runs_frame(runs), target=opts.slo_target, baseline=opts.baseline)
    text = (
        f"SLO target: {opts.slo_target:.0%} of requests within the SLO; baseline: {opts.baseline}; "
        "intervals: 95% t-intervals across seeds. Every sentence is computed from the results below."
    )
    tables = tuple(t for s in per_sweep for t in s.tables)
    if not bullets:
        text = "No sweep or run folder among the inputs: nothing to compare."
    return Section("Findings", text, tables, (), tuple(bullets))


def build_report(
    paths: Sequence[str | Path],
    *,
    profiles: Sequence[str | Path] = (),
    x: str | None = None,
    title: str = "EdgePrune report",
    slo_target: float = fi.DEFAULT_SLO_TARGET,
    baseline: str | None = None,
    out_dir: Path | None = None,
) -> Report:
    """Read the inputs and build every section (see the module docstring).

    ``out_dir``: the folder the report is written to; inputs given by absolute path are named relative to it.
    """
    if not paths and not profiles:
        raise ResultError("nothing to report: give sweep or run folders and/or --profile files")
    if not 0.0 < slo_target <= 1.0:
        raise ConfigError(f"--slo-target = {slo_target * 100:g}: must be a percentage in (0, 100]")
    sweeps, runs = load_sources(paths)
    runs = [RunSource(**{**r.__dict__, "label": shown_path(r.label, out_dir)}) for r in runs]
    loaded_profiles = []
    for p in profiles:
        prof = load_profile(p)
        model = prof.model.get("id")
        loaded_profiles.append((f"{Path(p).stem}" + (f" ({model})" if model else ""), prof))
    taken: set[str] = set()
    policies = _policies(sweeps, runs)
    if baseline is None:
        baseline = fi.DEFAULT_BASELINE  # its comparisons are left out when the inputs lack it
    elif policies and baseline not in policies:
        raise ConfigError(f"--baseline = {baseline!r}: not a policy of the inputs" + did_you_mean(baseline, policies))
    opts = Options(slo_target, baseline, out_dir, x)
    built = [_sweep_section(s, opts, taken, policies) for s in sweeps]
    sections = [_findings_section([f for _, f, _ in built], runs, opts), *(s for s, _, _ in built)]
    if runs:
        sections.append(_runs_section(runs, taken, policies))
        hw = _hw_section(runs, taken)
        if hw is not None:
            sections.append(hw)
    if loaded_profiles:
        sections.append(_profile_section(loaded_profiles))
    long_tables = [t for _, _, t in built] + ([run_table(runs_frame(runs), "All results (runs)")] if runs else [])
    if long_tables:
        sections.append(Section("Full results", "Every figure per setting and policy.", tuple(long_tables)))
    sources = tuple(shown_path(p, out_dir) for p in [*paths, *profiles])
    return Report(title, sources, tuple(sections))
