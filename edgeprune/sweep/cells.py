"""Running one cell (on a Dask worker or in-process) and the tidy rows it yields.

:func:`run_cell` is what a worker executes: it gets a :class:`~edgeprune.sweep.spec.Cell` (the resolved
scenario as TOML text, so a worker needs no file from the client except the profile and traces it names),
runs every policy on common random numbers, and returns a :class:`CellOutcome`.  It never raises: a failure
comes back as a one-line error plus its traceback, so one broken cell cannot take the others down.

A cell's rows (one per policy) hold only what the scenario determines (``CELL_SCHEMA``); the axis columns
and ``cell_index`` are attached when ``results.parquet`` is assembled, so a finished cell file stays valid
when a later sweep reaches the same scenario under other axis names.
"""

from __future__ import annotations

import tomllib
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from edgeprune.errors import EdgePruneError
from edgeprune.results import SUMMARY_FIELDS, RunResult
from edgeprune.scenario import Scenario, scenario_from_table
from edgeprune.sweep.spec import Cell

__all__ = ["CELL_SCHEMA", "CellOutcome", "cell_rows", "run_cell"]

_INT_FIELDS = {"arrived", "completed", "dropped", "unfinished", "switches"}

#: Columns of a cell file, in order.
CELL_SCHEMA: dict[str, Any] = {
    "cell_id": pl.String,
    "scenario": pl.String,
    "seed": pl.Int64,
    "policy": pl.String,
    "slo_s": pl.Float64,
    "offered_rate_hz": pl.Float64,
    **{f: (pl.Int64 if f in _INT_FIELDS else pl.Float64) for f in SUMMARY_FIELDS},
}


@dataclass(frozen=True)
class CellOutcome:
    """What a worker sends back: the rows and (when asked) the full runs, or a one-line error."""

    cell: Cell
    rows: pl.DataFrame | None = None
    runs: tuple[RunResult, ...] | None = None
    header: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None

    @classmethod
    def failed(cls, cell: Cell, exc: BaseException) -> CellOutcome:
        """An outcome carrying ``exc`` as one line (user errors as is, bugs with their type)."""
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        line = msg if isinstance(exc, EdgePruneError) else f"{type(exc).__name__}: {msg}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(cell=cell, error=line, traceback=tb)


def _offered_rate_hz(sc: Scenario, results: Sequence[RunResult]) -> float | None:
    """Arrivals per second inside the measurement window (identical for every policy: common random numbers)."""
    if not results:
        return None
    req = results[0].requests
    last_s = float(req["arrival_s"].max()) if req.height else 0.0  # type: ignore[arg-type]
    end_s = sc.duration_s if sc.duration_s is not None else last_s
    span_s = end_s - sc.warmup_s
    return float(results[0].summary["arrived"]) / span_s if span_s > 0 else None


def cell_rows(cell: Cell, sc: Scenario, results: Sequence[RunResult]) -> pl.DataFrame:
    """One row per policy: the cell's identity and every summary figure (see ``CELL_SCHEMA``)."""
    rate = _offered_rate_hz(sc, results)
    records = [
        {
            "cell_id": cell.cell_id,
            "scenario": sc.name,
            "seed": sc.seed,
            "policy": r.policy,
            "slo_s": sc.slo_s,
            "offered_rate_hz": rate,
            **{f: r.summary.get(f) for f in SUMMARY_FIELDS},
        }
        for r in results
    ]
    return pl.DataFrame(records, schema=CELL_SCHEMA)


def _scenario_of(cell: Cell) -> Scenario:
    """The cell's resolved scenario, validated in memory (its paths are absolute: no file is written)."""
    return scenario_from_table(tomllib.loads(cell.scenario_toml), f"cell {cell.cell_id}", Path.cwd())


def run_cell(cell: Cell) -> CellOutcome:
    """Simulate one cell; never raises (see the module docstring)."""
    from edgeprune.runs import header
    from sim import run_scenario

    try:
        sc = _scenario_of(cell)
        results = run_scenario(sc)
        rows = cell_rows(cell, sc, results)
        runs = tuple(results) if cell.keep_run else None
        return CellOutcome(cell=cell, rows=rows, runs=runs, header=header(sc) if cell.keep_run else None)
    except Exception as exc:
        return CellOutcome.failed(cell, exc)
