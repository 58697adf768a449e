"""What a report is made of: sweep folders and run folders, recognised by their contents.

* a **sweep folder** (``edgeprune-sim sweep --out``) holds ``results.parquet`` and ``sweep.json``; its kept
  runs (``runs/<cell-id>/``) feed the latency CDFs and timelines;
* a **run folder** (``edgeprune-sim --out``, or ``edgeprune-hil`` once it writes the same layout) holds
  ``summary.json`` and ``<policy>/{requests,timeline}.parquet`` (:func:`edgeprune.results.read_run_dir`).
  ``summary.json`` may say ``"backend": "hil"``; without the key it is a simulator run.  A hardware run and
  a simulator run of the same scenario name and seed form a pair for the simulator-vs-hardware comparison.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from edgeprune.errors import ResultError
from edgeprune.results import SUMMARY_FIELDS, RunResult, read_run_dir

__all__ = ["RunSource", "SweepSource", "environment_events", "load_sources", "runs_frame", "shown_path"]


@dataclass(frozen=True)
class RunSource:
    """A run folder: the summary document and every policy's records."""

    path: Path
    label: str
    scenario: str
    seed: int | None
    backend: str
    slo_s: float | None
    runs: dict[str, RunResult]
    prediction: dict[str, Any] | None = None  # sim_vs_hw.json of a hardware run (edgeprune-hil)
    replay: dict[str, Any] | None = None  # summary.json "arrivals" of a replay run (traces.ReplayReport)


@dataclass(frozen=True)
class SweepSource:
    """A sweep folder: its results table, manifest and the run folders it kept."""

    path: Path
    name: str
    manifest: dict[str, Any]
    results: pl.DataFrame
    axis_columns: tuple[str, ...]
    kept: tuple[tuple[str, Path], ...]  # (cell label, run folder), in cell order


def _label(cell: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in cell.get("axes", {}).items()]
    return ", ".join([*parts, f"seed={cell.get('seed')}"])


def _load_sweep(path: Path) -> SweepSource:
    try:
        manifest = json.loads((path / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: sweep.json cannot be read ({exc})") from None
    results_path = path / "results.parquet"
    if not results_path.is_file():
        raise ResultError(f"{path}: no results.parquet (has the sweep finished any cell?)")
    results = pl.read_parquet(results_path)
    axis_columns = tuple(a["column"] for a in manifest.get("axes", []))
    kept = tuple(
        (_label(c), path / "runs" / c["id"])
        for c in manifest.get("cells", [])
        if (path / "runs" / c["id"] / "summary.json").is_file()
    )
    return SweepSource(path, str(manifest.get("name", path.name)), manifest, results, axis_columns, kept)


def load_run(path: Path, label: str | None = None) -> RunSource:
    """Read one run folder (see the module docstring for the hardware marker)."""
    doc, runs = read_run_dir(path)
    seed = doc.get("seed")
    prediction = None
    if (path / "sim_vs_hw.json").is_file():
        try:
            prediction = json.loads((path / "sim_vs_hw.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultError(f"{path / 'sim_vs_hw.json'}: cannot be read ({exc})") from None
    return RunSource(
        path=path,
        label=label or path.name,
        scenario=str(doc.get("scenario", path.name)),
        seed=int(seed) if seed is not None else None,
        backend=str(doc.get("backend", "sim")),
        slo_s=doc.get("slo_s"),
        runs=runs,
        prediction=prediction,
        replay=doc.get("arrivals"),
    )


def load_sources(paths: Sequence[str | Path]) -> tuple[list[SweepSource], list[RunSource]]:
    """Classify and read every given folder; anything else is a one-line ResultError."""
    sweeps: list[SweepSource] = []
    runs: list[RunSource] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise ResultError(f"{p}: not a folder (give a sweep --out or an edgeprune-sim --out folder)")
        if (p / "sweep.json").is_file():
            sweeps.append(_load_sweep(p))
        elif (p / "summary.json").is_file():
            runs.append(load_run(p))
        else:
            raise ResultError(f"{p}: neither a sweep folder (sweep.json) nor a run folder (summary.json)")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):  # same folder names in different places: use the full paths
        runs = [RunSource(**{**r.__dict__, "label": str(r.path)}) for r in runs]
    return sweeps, runs


def shown_path(path: str | Path, out_dir: Path | None) -> str:
    """How a report names an input: as the user gave it when relative, else relative to the report's folder.

    A report never shows an absolute path of the machine that built it.
    """
    p = Path(path)
    if not p.is_absolute() or out_dir is None:
        return p.as_posix()
    return Path(os.path.relpath(p, out_dir.resolve())).as_posix()


def _event_windows(ev: dict[str, Any], end_of_run_s: float) -> list[tuple[float, float, str]]:
    """The windows in which an ``[[environment]]`` entry changes its node's speed (factor != 1)."""
    device = str(ev.get("device", "?"))
    if ev.get("slowdown") is not None:
        end = float(ev.get("end_s") or end_of_run_s)
        return [(float(ev.get("start_s", 0.0)), end, f"{device} ×{float(ev['slowdown']):g} slower")]
    times, factors = ev.get("times_s") or [], ev.get("slowdowns") or []
    bounds = [*map(float, times), end_of_run_s]
    return [
        (bounds[i], bounds[i + 1], f"{device} ×{float(f):g} slower")
        for i, f in enumerate(factors)
        if float(f) != 1.0 and i + 1 < len(bounds)
    ]


def environment_events(run_dir: Path) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, label)`` of the environment events in a run folder's ``scenario.toml`` (none if absent).

    Read from the TOML as written, so the scenario's profile need not be found to shade a timeline.
    """
    try:
        doc = tomllib.loads((run_dir / "scenario.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    end_s = float(doc.get("duration_s", 0.0))
    return [w for ev in doc.get("environment", []) if isinstance(ev, dict) for w in _event_windows(ev, end_s)]


def runs_frame(runs: Sequence[RunSource]) -> pl.DataFrame:
    """One row per run folder × policy: ``source``, ``scenario``, ``backend``, ``seed``, ``policy``, summary."""
    records = []
    for src in runs:
        for name, r in src.runs.items():
            rec: dict[str, Any] = {
                "source": src.label,
                "scenario": src.scenario,
                "backend": src.backend,
                "seed": src.seed,
                "policy": name,
            }
            rec.update({f: r.summary.get(f) for f in SUMMARY_FIELDS})
            records.append(rec)
    schema: dict[str, Any] = {
        "source": pl.String,
        "scenario": pl.String,
        "backend": pl.String,
        "seed": pl.Int64,
        "policy": pl.String,
    }
    schema.update({f: pl.Float64 for f in SUMMARY_FIELDS})
    return pl.DataFrame(records, schema=schema)
