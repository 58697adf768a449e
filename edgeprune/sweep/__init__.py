"""Parameter sweeps: one base scenario, axes over any of its keys, seeds, and every cell run in parallel.

A sweep file (TOML, read by :func:`load_sweep`)::

    name = "fig5"                      # default: the file's stem
    description = "..."
    base = "bursty.toml"               # the base scenario, relative to this file
    seeds = [0, 1, 2, 3, 4]            # every axis combination runs with each seed (default [0])
    policies = ["no-pruning", "dynamic"]   # a subset of the base's policies (default: all)
    keep_runs = "first-seed"           # "none" | "first-seed" | "all": also keep per-request records and
                                       # timelines (runs/<cell-id>/) for the report's CDFs and timelines

    [[axis]]
    key = "arrivals.rate_hz"           # a key path into the base scenario (grammar below)
    values = [2.0, 4.0, 6.0, 8.0]
    name = "rate_hz"                   # column in results.parquet (default: the key)

    [[axis]]
    key = "environment[0].slowdown"
    values = [1.0, 1.6]
    zip = "env"                        # axes sharing a zip group step together (same number of values);
                                       # other axes are crossed (cartesian product)
    [[axis]]
    key = "environment[0].end_s"
    values = [300.0, 400.0]
    zip = "env"

Key paths: dotted names, ``[i]`` indices and ``[name]`` (or ``.name``) selecting the element of an array
of tables by its ``name`` key: ``arrivals.rates_hz``, ``queue.capacity``, ``device.pi2.speed``,
``stage[1].device``, ``policy.dynamic.min_accuracy``, ``policy["dyn.v2"].period_s``.  A value may be a
number, string, array or table (``key = "arrivals"`` with ``values = [{kind = "poisson", rate_hz = 4.0}]``
swaps the whole arrival process; ``key = "stage"`` plus ``key = "profile"`` zipped changes the stage count).
Relative ``profile`` and ``arrivals.path`` values are resolved against the sweep file.  ``seed`` is not an
axis: use ``seeds``.

Each cell (axis combination × seed) is the base document with the values set, validated by the scenario
loader; any problem is one :class:`~edgeprune.errors.ConfigError` line naming the sweep file, the axis or
cell, the key and the closest valid name.  Cells are enumerated with the first axis (group) slowest and the
seed fastest; that order is ``cell_index``.  A cell's id is a hash of its resolved scenario (file paths
replaced by their contents' hashes), so a rerun skips finished cells and an edited profile invalidates them.

Output folder::

    OUT/sweep.json              the sweep: axes, seeds, every cell's id, index, axis values
    OUT/cells/<id>.toml         the cell's resolved scenario (edgeprune-sim can rerun it)
    OUT/cells/<id>.parquet      the cell's rows (written last: its existence marks the cell finished)
    OUT/runs/<id>/              edgeprune-sim run folder of kept cells (see edgeprune.results)
    OUT/results.parquet         every finished cell's rows in cell order
    OUT/failures.json           cells that failed, with a one-line error (absent when none did)

``results.parquet``: one row per cell × policy: ``cell_id``, ``cell_index``, one column per axis (scalar
values keep their type; arrays and tables are compact JSON text), ``scenario``, ``seed``, ``policy``,
``slo_s``, ``offered_rate_hz`` (measured arrivals per second in the summary window) and every field of
:data:`edgeprune.results.SUMMARY_FIELDS`.  Nothing time- or host-dependent is in it: any scheduler and
worker count give byte-identical files.
"""

from edgeprune.sweep.cells import CELL_SCHEMA, CellOutcome, run_cell
from edgeprune.sweep.execute import Failure, SweepOutcome, assemble_results, run_sweep
from edgeprune.sweep.spec import RESERVED_COLUMNS, Axis, AxisSpec, Cell, Sweep, cell_id_of, load_sweep

__all__ = [
    "CELL_SCHEMA",
    "RESERVED_COLUMNS",
    "Axis",
    "AxisSpec",
    "Cell",
    "CellOutcome",
    "Failure",
    "Sweep",
    "SweepOutcome",
    "assemble_results",
    "cell_id_of",
    "load_sweep",
    "run_cell",
    "run_sweep",
]
