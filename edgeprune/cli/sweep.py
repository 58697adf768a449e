"""``edgeprune-sim sweep``: run a sweep's cells in parallel and write tidy Parquet results.

edgeprune-sim sweep scenarios/sweep-example.toml --out runs/sweep              # local cores
edgeprune-sim sweep scenarios/sweep-example.toml --scheduler tcp://host:8786   # an existing Dask cluster
edgeprune-sim sweep scenarios/sweep-example.toml --scheduler none              # in this process, in order

The spec format and the output folder are documented in :mod:`edgeprune.sweep`.  Exit status: 0 when every
cell finished, 1 when some failed (the others are kept; see ``OUT/failures.json``), 2 for a bad spec or
output folder (one line, nothing written), 130 after Ctrl-C (``interrupted``; 143 after SIGTERM): the
workers are stopped at once, finished cells are kept and a rerun runs only the missing ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeprune.atomic import signals_raise
from edgeprune.cli.common import ArgumentParser, guarded
from edgeprune.sweep import Sweep, load_sweep, run_sweep

__all__ = ["main"]

PROG = "edgeprune-sim sweep"
EXIT_CELLS_FAILED = 1
_MAX_TABLE_ROWS = 40


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Run a policy-comparison sweep (see edgeprune.sweep).")
    p.add_argument("spec", type=Path, help="sweep TOML file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<sweep name>)")
    p.add_argument(
        "--scheduler",
        default="local",
        help="'local' (a local Dask cluster, default), 'none' (in-process, sequential), 'slurm' (dask-jobqueue) "
        "or a scheduler address such as tcp://host:8786",
    )
    p.add_argument("--workers", type=int, help="local worker processes (default: one per core) or SLURM jobs")
    p.add_argument("--keep-runs", choices=("none", "first-seed", "all"), help="override the spec's keep_runs")
    p.add_argument("--force", action="store_true", help="discard finished cells and run everything again")
    p.add_argument("--dry-run", action="store_true", help="validate and list the cells; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> None:
    from edgeprune.errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers = {args.workers}: must be >= 1")
    sched = args.scheduler
    if sched not in ("local", "none", "slurm") and "://" not in sched:
        raise ConfigError(f"--scheduler = {sched!r}: expected local, none, slurm or an address like tcp://host:8786")


def _print_dry_run(sweep: Sweep) -> None:
    print(f"sweep {sweep.name}: {len(sweep.cells)} cells, base {sweep.base}")
    for c in sweep.cells:
        print(f"  {c.index:4d}  {c.cell_id}  {c.label()}")


def _print_summary(results_path: Path, axis_columns: list[str]) -> None:
    """Per axis combination and policy: mean ± 95% CI across seeds of the headline figures."""
    import polars as pl

    from edgeprune.report.tables import format_text, sweep_table

    table = sweep_table(pl.read_parquet(results_path), axis_columns)
    if len(table.rows) > _MAX_TABLE_ROWS:
        print(f"({len(table.rows)} rows; the first {_MAX_TABLE_ROWS} follow; edgeprune-report shows all)")
        table = dataclasses.replace(table, rows=table.rows[:_MAX_TABLE_ROWS])
    print(format_text(table))
    print(table.note)


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    sweep = load_sweep(args.spec)
    if args.keep_runs is not None:
        keep = args.keep_runs
        cells = tuple(
            dataclasses.replace(c, keep_run=keep == "all" or (keep == "first-seed" and c.seed == sweep.seeds[0]))
            for c in sweep.cells
        )
        sweep = dataclasses.replace(sweep, keep_runs=keep, cells=cells)
    if args.dry_run:
        _print_dry_run(sweep)
        return 0
    out = args.out if args.out is not None else Path("runs") / sweep.name
    res = run_sweep(
        sweep,
        out,
        scheduler=args.scheduler,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )
    rate = f", {res.ran / res.run_wall_s:.2f} cells/s" if res.ran and res.run_wall_s > 0 else ""
    print(
        f"sweep {sweep.name}: {res.total} cells: ran {res.ran}, skipped {res.skipped} (finished earlier), "
        f"failed {len(res.failures)}{rate}"
    )
    if res.results_path is not None:
        _print_summary(res.results_path, [a.column for a in sweep.axes])
        print(f"results: {res.results_path} ({res.rows} rows)")
    if res.failures:
        for f in res.failures[:10]:
            print(f"failed cell {f.cell_id} ({f.label}): {f.error}", file=sys.stderr)
        more = len(res.failures) - 10
        if more > 0:
            print(f"... and {more} more", file=sys.stderr)
        print(f"{len(res.failures)} cell(s) failed: see {out / 'failures.json'}; rerun to retry them", file=sys.stderr)
        return EXIT_CELLS_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-sim sweep``."""
    args = list(sys.argv[1:] if argv is None else argv)
    with signals_raise():  # SIGTERM / SIGHUP stop the workers like Ctrl-C does
        return guarded(PROG, lambda: _run(_parser().parse_args(args)))


if __name__ == "__main__":
    sys.exit(main())
