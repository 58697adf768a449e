"""The result schema shared by the simulator and the hardware backend, and its atomic writer.

One run of one policy yields a :class:`RunResult`:

``requests`` (polars, one row per arrived request)
    ``request_id`` u32, ``arrival_s`` f64, ``departure_s`` f64 (null unless done), ``latency_s`` f64
    (null unless done), ``status`` str (``done`` | ``dropped`` | ``unfinished``), ``dropped_at`` str (stage
    name, null unless dropped), ``in_warmup`` bool, ``accuracy`` f64 (estimated from the levels it was served
    at; null unless done or when the profile has no accuracy), ``level_<stage>`` i8 per stage (null where
    not served).
``timeline`` (polars, one row per control period × stage)
    ``time_s``, ``stage``, ``level`` (in effect during the period), ``decided`` (the policy's answer at
    ``time_s``), ``queue_len``, ``busy``, ``arrivals``, ``arrival_rate_hz``, ``served``,
    ``service_time_s`` (mean measured, null if none), ``env_factor`` (measured / profiled, null if none),
    ``dropped``.
``summary`` (dict, the figures of the comparison table; see :func:`summarise`).

On disk (``--out DIR``)::

    DIR/scenario.toml                 the resolved scenario (seed, profile path, defaults filled in)
    DIR/summary.json                  {"scenario": ..., "seed": ..., "policies": {name: summary}}
    DIR/<policy>/requests.parquet
    DIR/<policy>/timeline.parquet

The directory is built under a temporary name next to ``DIR`` and renamed into place at the end
(:mod:`edgeprune.atomic`), so a crash, an error, Ctrl-C or SIGTERM never leaves a half-written result.
Nothing time- or host-dependent is written: ``scenario.toml`` names the profile (and a replayed trace)
relative to ``DIR``, so the same scenario and seed give byte-identical files, in any clone of the project.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import tomli_w

from edgeprune.atomic import atomic_dir, atomic_write_text
from edgeprune.errors import ResultError

__all__ = [
    "SCENARIO_PATH_KEYS",
    "SUMMARY_FIELDS",
    "RunResult",
    "atomic_write_text",
    "check_out_dir",
    "portable_scenario_toml",
    "read_run_dir",
    "summarise",
    "write_run_dir",
]

#: Keys of a scenario holding file paths (relative values are relative to the file holding them).
SCENARIO_PATH_KEYS: tuple[tuple[str, ...], ...] = (("profile",), ("arrivals", "path"))

SUMMARY_FIELDS = (
    "arrived",
    "completed",
    "dropped",
    "unfinished",
    "throughput_hz",
    "goodput_hz",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "mean_latency_s",
    "slo_attainment",
    "mean_accuracy",
    "switches",
)


@dataclass(frozen=True)
class RunResult:
    """One policy's run: per-request records, per-period timeline, and the summary."""

    policy: str
    requests: pl.DataFrame
    timeline: pl.DataFrame
    summary: Mapping[str, Any]


def summarise(
    requests: pl.DataFrame, *, slo_s: float, window_start_s: float, window_end_s: float, switches: int
) -> dict[str, Any]:
    """The comparison figures of one run.

    Only requests arriving at or after ``window_start_s`` (the warm-up) count.  SLO attainment is the share
    of those that finished within ``slo_s``; dropped and unfinished ones are misses.  Latency percentiles
    are over finished requests.  Throughput is completions per second inside
    ``[window_start_s, window_end_s)``; goodput counts only the ones that met the SLO.
    """
    req = requests.filter(~pl.col("in_warmup"))
    arrived = req.height
    done = req.filter(pl.col("status") == "done")
    lat = done["latency_s"].to_numpy()
    span_s = window_end_s - window_start_s
    dep = done["departure_s"].to_numpy()
    in_window = (dep >= window_start_s) & (dep < window_end_s)
    met = lat <= slo_s
    acc = done["accuracy"].drop_nulls()

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if lat.size else None

    return {
        "arrived": arrived,
        "completed": done.height,
        "dropped": int((req["status"] == "dropped").sum()),
        "unfinished": int((req["status"] == "unfinished").sum()),
        "throughput_hz": float(in_window.sum() / span_s) if span_s > 0 else None,
        "goodput_hz": float((in_window & met).sum() / span_s) if span_s > 0 else None,
        "p50_latency_s": pct(50),
        "p95_latency_s": pct(95),
        "p99_latency_s": pct(99),
        "mean_latency_s": float(lat.mean()) if lat.size else None,
        "slo_attainment": float(met.sum() / arrived) if arrived else None,
        "mean_accuracy": float(acc.mean()) if acc.len() else None,  # type: ignore[arg-type]
        "switches": int(switches),
    }


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value: Any) -> Any:
    """JSON has no NaN: write ``null`` for it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def summary_json(header: Mapping[str, Any], results: Sequence[RunResult]) -> str:
    """The ``summary.json`` text: stable key order, no wall-clock data."""
    doc = dict(header)
    doc["policies"] = {r.policy: dict(r.summary) for r in results}
    return json.dumps(_clean(doc), indent=2, sort_keys=True, default=_json_default) + "\n"


def check_out_dir(out: str | os.PathLike[str], force: bool = False) -> None:
    """Refuse an output folder that cannot be written, before any work is done (nothing is created).

    ``out`` must not be a file, must be empty or absent unless ``force``, and its nearest existing ancestor
    must be a folder this process may create entries in (missing parents are created when writing).
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ResultError(f"{path}: exists and is not a folder")
    if path.is_dir() and not force and any(path.iterdir()):
        raise ResultError(f"{path}: output exists and is not empty (pass --force to replace it)")
    anc = path.absolute().parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ResultError(f"{path}: cannot create output: {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ResultError(f"{path}: cannot create output: no permission to write in {anc}")


def portable_scenario_toml(scenario_toml: str, folder: str | os.PathLike[str]) -> str:
    """``scenario_toml`` with its file paths (``SCENARIO_PATH_KEYS``) relative to ``folder``.

    The resolved scenario names its profile and trace by absolute path; written into a result folder, that
    path would make two clones of the project write different bytes for the same run.  Relative to the
    folder the file is written to, the copy still loads from there (``edgeprune-sim DIR/scenario.toml``).
    """
    doc = tomllib.loads(scenario_toml)
    base = Path(folder).resolve()
    changed = False
    for keys in SCENARIO_PATH_KEYS:
        node: Any = doc
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and Path(value).is_absolute():
            node[keys[-1]] = os.path.relpath(value, base)
            changed = True
    return tomli_w.dumps(doc) if changed else scenario_toml


def write_run_dir(
    out: str | os.PathLike[str],
    *,
    scenario_toml: str,
    header: Mapping[str, Any],
    results: Sequence[RunResult],
    force: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> None:
    """Write a run directory atomically (see the module docstring for the layout).

    ``scenario_toml`` is written with its file paths relative to ``out`` (:func:`portable_scenario_toml`);
    ``extra_files`` (name -> text, e.g. the HIL backend's ``sim_vs_hw.*``) go into the folder before it is
    published.
    """
    out = Path(out)
    check_out_dir(out, force)
    text = portable_scenario_toml(scenario_toml, out)
    with atomic_dir(out, replace=force) as tmp:
        (tmp / "scenario.toml").write_text(text, encoding="utf-8")
        (tmp / "summary.json").write_text(summary_json(header, results), encoding="utf-8")
        for r in results:
            d = tmp / r.policy
            d.mkdir()
            r.requests.write_parquet(d / "requests.parquet", statistics=False)
            r.timeline.write_parquet(d / "timeline.parquet", statistics=False)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")


def read_run_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, RunResult]]:
    """Read a run directory back: the summary document and every policy's :class:`RunResult`."""
    p = Path(path)
    try:
        doc = json.loads((p / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{p}: not a run directory (no summary.json)") from None
    runs = {}
    for name, summ in doc["policies"].items():
        runs[name] = RunResult(
            policy=name,
            requests=pl.read_parquet(p / name / "requests.parquet"),
            timeline=pl.read_parquet(p / name / "timeline.parquet"),
            summary=summ,
        )
    return doc, runs
