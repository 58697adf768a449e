"""From sweep folders, run folders and profiles to the report's sections (tables and charts), in memory.

Sections, each present only when its inputs are:

1. per sweep: the comparison table (mean ± 95% CI across seeds per setting and policy), Fig. 5 (SLO
   attainment and p95 latency versus arrival rate), latency CDFs of its kept runs, and the level and queue
   timelines of its most loaded kept run;
2. run folders: their table (grouped by scenario, backend and policy, CI across seeds), CDFs, timelines;
3. simulator vs hardware, when a hardware run (``"backend": "hil"``) has a simulator twin (same scenario
   name and seed): the error table and chart and the paired CDFs;
4. profiles: Figs. 3–4, speedup per device and accuracy per strategy.

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
from edgeprune.report.sources import RunSource, SweepSource, load_run, load_sources, runs_frame
from edgeprune.report.stats import mean_ci
from edgeprune.report.tables import HW_METRICS, DisplayTable, hw_error_frame, hw_error_table, run_table, sweep_table

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


@dataclass(frozen=True)
class Report:
    """The whole report, ready to render."""

    title: str
    sources: tuple[str, ...]
    sections: tuple[Section, ...]


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


def _sweep_section(sweep: SweepSource, x_req: str | None, taken: set[str]) -> Section:
    from edgeprune.report.tables import headline_table

    x, x_title, groups = choose_x(sweep, x_req)
    table = headline_table(sweep.results, sweep.axis_columns)
    charts = [
        ch.Chart(_unique(c.name, taken), c.title, c.spec, c.caption)
        for c in ch.fig5_charts(table, x, x_title, groups, sweep.name)
    ]
    kept = _spread(sweep.kept, MAX_CDF_PANELS)
    loaded = [(label, load_run(path, label)) for label, path in kept]
    slo = next((r.slo_s for _, r in loaded if r.slo_s is not None), None)
    if loaded:
        name = _unique(f"{ch.slug(sweep.name)}-latency-cdf", taken)
        charts.append(ch.cdf_chart([(lbl, r.runs) for lbl, r in loaded], slo, name, f"Latency CDF ({sweep.name})"))
        busiest = _busiest(sweep, [p for _, p in sweep.kept])
        label, path = next((lp for lp in sweep.kept if lp[1] == busiest), sweep.kept[-1])
        run = load_run(path, label)
        charts += ch.timeline_charts(label, run.runs, _unique(f"{ch.slug(sweep.name)}-timeline", taken))
    n_cells = sweep.results["cell_id"].n_unique()
    text = (
        f"{n_cells} cells, axes: {', '.join(sweep.axis_columns) or 'none'}; seeds: "
        f"{', '.join(str(s) for s in sweep.manifest.get('seeds', []))}. Source: {sweep.path}."
    )
    return Section(f"Sweep {sweep.name}", text, (sweep_table(sweep.results, sweep.axis_columns),), tuple(charts))


def _busiest(sweep: SweepSource, kept_paths: Sequence[Path]) -> Path | None:
    """The kept run with the highest measured offered load (the most telling timeline)."""
    ids = {p.name for p in kept_paths}
    rows = sweep.results.filter(pl.col("cell_id").is_in(list(ids))).sort(OFFERED, descending=True, nulls_last=True)
    if rows.height == 0:
        return None
    best = rows["cell_id"][0]
    return next(p for p in kept_paths if p.name == best)


def _runs_section(runs: Sequence[RunSource], taken: set[str]) -> Section:
    frame = runs_frame(runs)
    charts = []
    slo = next((r.slo_s for r in runs if r.slo_s is not None), None)
    charts.append(
        ch.cdf_chart([(r.label, r.runs) for r in runs], slo, _unique("runs-latency-cdf", taken), "Latency CDF (runs)")
    )
    for r in runs[:MAX_TIMELINE_RUNS]:
        charts += ch.timeline_charts(r.label, r.runs, _unique(f"run-{ch.slug(r.label)}-timeline", taken))
    for r in runs:
        if r.replay is not None:  # a replayed trace: what arrived, over time and as gaps
            charts.append(ch.replay_chart(r.label, r.runs, r.replay, _unique(f"run-{ch.slug(r.label)}-trace", taken)))
    text = f"{len(runs)} run folder(s): " + ", ".join(f"{r.label} ({r.backend}, seed {r.seed})" for r in runs) + "."
    return Section("Runs", text, (run_table(frame),), tuple(charts))


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
        charts.append(
            ch.cdf_chart(
                [(twin.label, twin.runs), (first.label, first.runs)],
                first.slo_s,
                _unique("sim-vs-hw-cdf", taken),
                f"Latency CDF: simulator vs hardware ({first.scenario}, seed {first.seed})",
                dash=["simulator", "hardware"],
            )
        )
    n_twins = len({(r.scenario, r.seed) for r in hw} & set(sims))
    text = (
        f"{n_twins} hardware run(s) paired with a simulator run of the same scenario and seed, "
        f"{len(hw) - n_twins - len(unpaired)} compared with their own prediction (sim_vs_hw.json)." + note
    )
    return Section("Simulator vs hardware", text, (hw_error_table(errors),), tuple(charts))


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


def build_report(
    paths: Sequence[str | Path],
    *,
    profiles: Sequence[str | Path] = (),
    x: str | None = None,
    title: str = "EdgePrune report",
) -> Report:
    """Read the inputs and build every section (see the module docstring)."""
    if not paths and not profiles:
        raise ResultError("nothing to report: give sweep or run folders and/or --profile files")
    sweeps, runs = load_sources(paths)
    loaded_profiles = []
    for p in profiles:
        prof = load_profile(p)
        model = prof.model.get("id")
        loaded_profiles.append((f"{Path(p).stem}" + (f" ({model})" if model else ""), prof))
    taken: set[str] = set()
    sections = [_sweep_section(s, x, taken) for s in sweeps]
    if runs:
        sections.append(_runs_section(runs, taken))
        hw = _hw_section(runs, taken)
        if hw is not None:
            sections.append(hw)
    if loaded_profiles:
        sections.append(_profile_section(loaded_profiles))
    sources = tuple(str(p) for p in paths) + tuple(str(p) for p in profiles)
    return Report(title, sources, tuple(sections))
