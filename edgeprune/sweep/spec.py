"""The sweep spec file: validated, expanded into cells, each cell a fully resolved scenario with a stable id.

See :mod:`edgeprune.sweep` for the file format.  Every cell's scenario is built by applying the axis values
to the base scenario's TOML document and validating the result, in memory, through the same loader as
``edgeprune-sim`` (:func:`edgeprune.scenario.scenario_from_table`, which ``load_scenario`` calls), so a sweep
accepts exactly what a scenario file accepts and reports problems the same way, prefixed with the sweep file
and the offending axis or cell.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeprune.config import Ctx, build, load_toml, spec_field
from edgeprune.errors import ConfigError, EdgePruneError, did_you_mean
from edgeprune.results import SCENARIO_PATH_KEYS, SUMMARY_FIELDS
from edgeprune.scenario import Scenario, load_scenario, scenario_from_table, scenario_to_dict
from edgeprune.sweep.keys import KeyPathError, Token, parse_key, set_key

__all__ = ["RESERVED_COLUMNS", "Axis", "AxisSpec", "Cell", "Sweep", "cell_id_of", "load_sweep"]

#: Columns every results row has; an axis may not take one of these names.
RESERVED_COLUMNS = (
    "cell_id",
    "cell_index",
    "scenario",
    "seed",
    "policy",
    "slo_s",
    "offered_rate_hz",
    *SUMMARY_FIELDS,
)

#: Keys holding file paths: relative values are resolved against the file that wrote them.
PATH_KEYS: tuple[tuple[Token, ...], ...] = SCENARIO_PATH_KEYS

CELL_ID_SALT = "edgeprune.sweep.cell/1"

#: Most cells one sweep may expand to.  Every cell is validated through the scenario loader when the sweep
#: is read (~50 ms each here), so 100,000 cells are over an hour before the first runs; an assumption, not a
#: measured capacity.  A larger study is several sweeps.
MAX_CELLS = 100_000

AxisKind = Literal["int", "float", "bool", "str", "json"]


@dataclass(frozen=True)
class AxisSpec:
    """One ``[[axis]]`` table as written."""

    key: str = spec_field(doc="scenario key path: arrivals.rate_hz, environment[0].slowdown, policy.dynamic.period_s")
    values: tuple[Any, ...] = spec_field(doc="the values the key takes, one per step of the axis")
    name: str = spec_field(
        default="", doc="column name in results.parquet (default: the key; axis.<key> if a results column has it)"
    )
    zip: str = spec_field(default="", doc="axes sharing a zip group step together instead of being crossed")

    def check(self) -> list[tuple[str, object, str]]:
        """At least one value."""
        if not self.values:
            return [("values", [], "need at least one value")]
        return []


@dataclass(frozen=True)
class _RawSweep:
    """The sweep file as written."""

    base: str = spec_field(doc="the base scenario TOML, relative to the sweep file")
    axis: tuple[AxisSpec, ...] = spec_field(default=(), doc="what varies")
    seeds: tuple[int, ...] = spec_field(default=(0,), ge=0, doc="root seeds; every axis combination runs each")
    policies: tuple[str, ...] = spec_field(default=(), doc="run only these policies of the base (default: all)")
    keep_runs: Literal["none", "first-seed", "all"] = field(
        default="first-seed",
        metadata={"doc": "also write per-request records and timelines: for no cell, the first seed's, or all"},
    )
    name: str = spec_field(default="", doc="sweep name (default: the file's stem)")
    description: str = spec_field(default="", doc="free text")

    def check(self) -> list[tuple[str, object, str]]:
        """Seeds and policy names are distinct."""
        dup = next((s for s in self.seeds if self.seeds.count(s) > 1), None)
        if dup is not None:
            return [("seeds", list(self.seeds), f"seed {dup} appears twice")]
        pdup = next((p for p in self.policies if self.policies.count(p) > 1), None)
        if pdup is not None:
            return [("policies", list(self.policies), f"policy {pdup!r} appears twice")]
        return []


@dataclass(frozen=True)
class Axis:
    """A validated axis: where it points, its column in the results and the column's type."""

    key: str
    tokens: tuple[Token, ...]
    column: str
    values: tuple[Any, ...]
    kind: AxisKind
    group: str

    def cell_value(self, value: Any) -> Any:
        """The value as stored in the results table (non-scalar values as compact JSON text)."""
        if self.kind == "json":
            return json.dumps(value, sort_keys=True, separators=(",", ":"))
        if self.kind == "float":
            return float(value)
        return value


@dataclass(frozen=True)
class Cell:
    """One unit of work: a resolved scenario (one axis combination, one seed) and where it sits in the sweep."""

    cell_id: str
    index: int
    seed: int
    columns: tuple[tuple[str, Any], ...]  # axis column -> value as stored
    scenario_toml: str
    keep_run: bool

    def label(self) -> str:
        """``column=value, ..., seed=s``: how messages and reports name the cell."""
        return ", ".join([*(f"{c}={v}" for c, v in self.columns), f"seed={self.seed}"])


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its axes, seeds and every cell in a deterministic order."""

    source: Path
    name: str
    description: str
    base: Path
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    policies: tuple[str, ...]
    keep_runs: str
    cells: tuple[Cell, ...]

    def manifest(self) -> dict[str, Any]:
        """The ``sweep.json`` document: what the sweep is, for the report and for humans."""
        return {
            "schema": "edgeprune.sweep",
            "version": 1,
            "name": self.name,
            "description": self.description,
            "spec": str(self.source),
            "base": str(self.base),
            "axes": [
                {"key": a.key, "column": a.column, "kind": a.kind, "zip": a.group, "values": list(a.values)}
                for a in self.axes
            ],
            "seeds": list(self.seeds),
            "policies": list(self.policies),
            "keep_runs": self.keep_runs,
            "cells": [
                {"id": c.cell_id, "index": c.index, "seed": c.seed, "axes": dict(c.columns), "run": c.keep_run}
                for c in self.cells
            ],
        }


def _axis_kind(values: Sequence[Any]) -> AxisKind:
    """The narrowest column type holding every value."""
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


def _resolve_axes(raw: _RawSweep, ctx: Ctx) -> tuple[Axis, ...]:
    axes = []
    columns: list[str] = []
    for i, spec in enumerate(raw.axis):
        actx = ctx.child("axis").child(i)
        try:
            tokens = parse_key(spec.key)
        except KeyPathError as exc:
            raise actx.child("key").error(spec.key, str(exc)) from None
        if tokens[0] == "seed":
            raise actx.child("key").error(spec.key, "vary the seed with the top-level seeds = [...]")
        column = spec.name or (f"axis.{spec.key}" if spec.key in RESERVED_COLUMNS else spec.key)
        if column in RESERVED_COLUMNS:
            raise actx.child("name").error(column, "clashes with a results column; choose another name")
        if column in columns:
            raise actx.child("name").error(column, "two axes share this column name; set name")
        columns.append(column)
        kind = _axis_kind(spec.values)
        axes.append(Axis(spec.key, tokens, column, spec.values, kind, spec.zip or f"#{i}"))
    groups: dict[str, list[Axis]] = {}
    for a in axes:
        groups.setdefault(a.group, []).append(a)
    for g, members in groups.items():
        if len({len(a.values) for a in members}) > 1:
            sizes = ", ".join(f"{a.key}: {len(a.values)}" for a in members)
            raise ctx.child("axis").error(g, f"axes zipped together need as many values each ({sizes})")
    return tuple(axes)


def _check_cell_count(axes: tuple[Axis, ...], seeds: tuple[int, ...], ctx: Ctx) -> None:
    """Refuse a sweep whose cross product exceeds :data:`MAX_CELLS` before expanding it."""
    steps = {a.group: len(a.values) for a in axes}
    n_cells = math.prod(steps.values()) * len(seeds)
    if n_cells > MAX_CELLS:
        sizes = " x ".join(str(n) for n in [*steps.values(), len(seeds)])
        raise ctx.child("axis").error(
            n_cells, f"the axes and seeds make {sizes} = {n_cells:,} cells; the limit is {MAX_CELLS:,}"
        )


def _combinations(axes: tuple[Axis, ...]) -> list[tuple[Any, ...]]:
    """Every axis combination: zip groups stepped together, groups crossed, the last group fastest."""
    order: list[str] = []
    for a in axes:
        if a.group not in order:
            order.append(a.group)
    per_group = []
    for g in order:
        idx = [i for i, a in enumerate(axes) if a.group == g]
        n = len(axes[idx[0]].values)
        per_group.append([[(i, axes[i].values[step]) for i in idx] for step in range(n)])
    combos = []
    for choice in itertools.product(*per_group):
        values: list[Any] = [None] * len(axes)
        for part in choice:
            for i, v in part:
                values[i] = v
        combos.append(tuple(values))
    return combos


def _absolute_paths(doc: dict[str, Any], folder: Path) -> None:
    """Rewrite the path-valued keys of a scenario document as absolute paths (relative to ``folder``)."""
    for tokens in PATH_KEYS:
        node: Any = doc
        for t in tokens[:-1]:
            node = node.get(t) if isinstance(node, Mapping) else None
        last = tokens[-1]
        if isinstance(node, dict) and isinstance(node.get(last), str):
            p = Path(node[last]).expanduser()
            node[last] = str(p if p.is_absolute() else (folder / p).resolve())


def _apply(base_doc: Mapping[str, Any], axes: Sequence[Axis], values: Sequence[Any], sweep_dir: Path) -> dict[str, Any]:
    doc = copy.deepcopy(dict(base_doc))
    for a, v in zip(axes, values, strict=True):
        value = copy.deepcopy(v)
        if a.tokens in PATH_KEYS and isinstance(value, str) and not Path(value).expanduser().is_absolute():
            value = str((sweep_dir / value).resolve())
        set_key(doc, a.tokens, value)
    return doc


def _load_doc(doc: Mapping[str, Any], where: str, sweep_dir: Path) -> Scenario:
    """Validate a scenario document through the scenario loader; errors are prefixed with ``where``.

    The document's paths are absolute already (base paths resolved against the base scenario, axis values
    against the sweep file), so ``sweep_dir`` only anchors what a future path key might leave relative."""
    try:
        return scenario_from_table(doc, where, sweep_dir)
    except EdgePruneError as exc:
        text = str(exc).removeprefix(f"{where}: ")
        raise ConfigError(f"{where}: {text}") from None


def _file_digest(path: str) -> str:
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return path


def cell_id_of(sc: Scenario) -> str:
    """A stable id of everything that determines a cell's results.

    The resolved scenario (seed and policies included) with file paths replaced by their contents' hashes,
    so moving the project keeps the ids while editing the profile or a trace changes them.  Free text
    (``name``, ``description``) does not count.
    """
    doc = scenario_to_dict(sc)
    doc.pop("name", None)
    doc.pop("description", None)
    doc["profile"] = _file_digest(str(sc.profile_path))
    arrivals = dict(doc.get("arrivals", {}))
    if isinstance(arrivals.get("path"), str):
        arrivals["path"] = _file_digest(arrivals["path"])
    doc["arrivals"] = arrivals
    text = json.dumps([CELL_ID_SALT, doc], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file and resolve every cell (see :mod:`edgeprune.sweep`)."""
    from edgeprune.runs import scenario_toml  # the same resolved-scenario text edgeprune-sim writes

    src = Path(path)
    ctx = Ctx(str(src))
    raw = build(_RawSweep, load_toml(src), ctx)
    base_path = (src.parent / raw.base).resolve() if not Path(raw.base).is_absolute() else Path(raw.base)
    if not base_path.is_file():
        raise ctx.child("base").error(raw.base, f"base scenario not found (looked for {base_path})")
    base_sc = load_scenario(base_path)
    known = [p.name for p in base_sc.policies]
    for i, name in enumerate(raw.policies):
        if name not in known:
            raise ctx.child("policies").child(i).error(name, "not a policy of the base" + did_you_mean(name, known))
    axes = _resolve_axes(raw, ctx)
    _check_cell_count(axes, raw.seeds, ctx)
    base_doc = load_toml(base_path)
    _absolute_paths(base_doc, base_path.parent)
    base_doc["name"] = base_sc.name
    for i, a in enumerate(axes):
        where = f"{src}: axis[{i}].key = {a.key!r}"
        try:
            doc = _apply(base_doc, [a], [a.values[0]], src.parent)
        except KeyPathError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        _load_doc(doc, where, src.parent)
    cells: list[Cell] = []
    for values in _combinations(axes):
        columns = tuple((a.column, a.cell_value(v)) for a, v in zip(axes, values, strict=True))
        label = ", ".join(f"{a.key} = {json.dumps(v)}" for a, v in zip(axes, values, strict=True)) or "the base"
        sc = _load_doc(_apply(base_doc, axes, values, src.parent), f"{src}: with {label}", src.parent)
        if raw.policies:
            sc = sc.with_policies(list(raw.policies))
        for seed in raw.seeds:
            sc_seed = sc.with_seed(seed)
            keep = raw.keep_runs == "all" or (raw.keep_runs == "first-seed" and seed == raw.seeds[0])
            cells.append(Cell(cell_id_of(sc_seed), len(cells), seed, columns, scenario_toml(sc_seed), keep))
    counts = Counter(c.cell_id for c in cells)
    dup = next((c for c in cells if counts[c.cell_id] > 1), None)
    if dup is not None:
        raise ctx.child("axis").error(dup.label(), "two cells resolve to the same scenario (an axis repeats a value)")
    return Sweep(
        source=src,
        name=raw.name or src.stem,
        description=raw.description,
        base=base_path,
        axes=axes,
        seeds=raw.seeds,
        policies=raw.policies,
        keep_runs=raw.keep_runs,
        cells=tuple(cells),
    )
