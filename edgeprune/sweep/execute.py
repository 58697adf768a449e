"""Running a sweep's cells (in-process, on a local Dask cluster, on an existing one or on SLURM) and
assembling the results.

Only the client writes into the output folder, so a remote cluster needs no shared output filesystem (it
does need the profile and trace files at the same paths).  Every file is written under a temporary name
and renamed into place; a cell counts as finished once its ``cells/<id>.parquet`` exists (and, when the
sweep keeps it, its ``runs/<id>/`` folder, written first).  Killing a sweep therefore loses at most the
cells in flight, and a rerun runs only the missing ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from edgeprune.atomic import atomic_file, atomic_write_text, remove_stale
from edgeprune.errors import ConfigError, ResultError
from edgeprune.progress import progress_bar
from edgeprune.results import portable_scenario_toml, write_run_dir
from edgeprune.sweep.cells import CellOutcome, run_cell
from edgeprune.sweep.spec import Axis, Cell, Sweep

__all__ = ["Failure", "SweepOutcome", "assemble_results", "run_sweep"]

CellFn = Callable[[Cell], CellOutcome]

MAX_CHUNK = 8  # cells per Dask task at most
TASKS_PER_SLOT = 4  # tasks per worker thread at least, when there are enough cells

_AXIS_DTYPES: dict[str, Any] = {
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
    "str": pl.String,
    "json": pl.String,
}


@dataclass(frozen=True)
class Failure:
    """A cell that did not finish: which, and why in one line."""

    cell_id: str
    label: str
    error: str


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep run did."""

    total: int
    ran: int
    skipped: int
    failures: tuple[Failure, ...]
    results_path: Path | None
    rows: int
    run_wall_s: float  # time spent running cells (cluster start-up excluded)


def _is_finished(out: Path, cell: Cell) -> bool:
    done = (out / "cells" / f"{cell.cell_id}.parquet").is_file()
    return done and (not cell.keep_run or (out / "runs" / cell.cell_id / "summary.json").is_file())


def _check_out(out: Path) -> None:
    """Refuse a path that is not a folder, or a non-empty folder that holds no sweep (nothing is written)."""
    if out.exists() and not out.is_dir():
        raise ResultError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.json").is_file():
        raise ResultError(f"{out}: exists, is not empty and holds no sweep (sweep.json); choose another --out")


def _prepare_out(out: Path, force: bool) -> None:
    """Create the layout; with ``force`` drop finished cells; remove temporaries of a killed run (once here,
    so each cell's write need not scan the folder)."""
    if force:
        for name in ("cells", "runs"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("results.parquet", "failures.json"):
            (out / name).unlink(missing_ok=True)
    try:
        for name in ("cells", "runs"):
            (out / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultError(f"{out}: cannot create output: {exc.strerror}") from None
    for folder in (out, out / "cells", out / "runs"):
        remove_stale(folder)


def _write_parquet_atomic(df: pl.DataFrame, path: Path, clean_stale: bool = True) -> None:
    with atomic_file(path, clean_stale=clean_stale) as tmp:
        df.write_parquet(tmp, statistics=False)


def _record(out: Path, outcome: CellOutcome) -> None:
    """Write a finished cell: its run folder (when kept), its scenario, then its rows (the commit mark)."""
    cell = outcome.cell
    assert outcome.rows is not None
    if outcome.runs is not None:
        write_run_dir(
            out / "runs" / cell.cell_id,
            scenario_toml=cell.scenario_toml,
            header=outcome.header or {},
            results=outcome.runs,
            force=True,
        )
    cells = out / "cells"
    atomic_write_text(
        cells / f"{cell.cell_id}.toml", portable_scenario_toml(cell.scenario_toml, cells), clean_stale=False
    )
    _write_parquet_atomic(outcome.rows, cells / f"{cell.cell_id}.parquet", clean_stale=False)


def _sequential(cells: Sequence[Cell], cell_fn: CellFn) -> Iterator[CellOutcome]:
    for cell in cells:
        yield cell_fn(cell)


def _warm_up() -> None:
    """Import the simulator on a worker before timing starts (the first import costs seconds)."""
    import sim  # noqa: F401
    import traces  # noqa: F401


def _run_chunk(cells: Sequence[Cell], cell_fn: CellFn) -> list[CellOutcome]:
    """Run a few cells in one task (on a worker); an exception fails only its cell."""
    outcomes = []
    for cell in cells:
        try:
            outcomes.append(cell_fn(cell))
        except Exception as exc:
            outcomes.append(CellOutcome.failed(cell, exc))
    return outcomes


def _chunks(cells: Sequence[Cell], n_slots: int) -> list[list[Cell]]:
    """Cells grouped so every worker slot gets about ``TASKS_PER_SLOT`` tasks of at most ``MAX_CHUNK`` cells.

    Cells can take tens of milliseconds, comparable to Dask's per-task cost; grouping them amortises it
    while keeping the load balanced and losing at most a few cells per worker when a sweep is killed.
    """
    size = max(1, min(MAX_CHUNK, len(cells) // (max(n_slots, 1) * TASKS_PER_SLOT)))
    return [list(cells[i : i + size]) for i in range(0, len(cells), size)]


def _dask_outcomes(client: Any, cells: Sequence[Cell], cell_fn: CellFn) -> Iterator[CellOutcome]:
    """Submit every cell (in chunks), yield outcomes as they complete; a lost worker fails only its chunk."""
    from distributed import as_completed

    chunks = _chunks(cells, sum(client.nthreads().values()))
    by_key = {f"edgeprune-cells-{c[0].cell_id}-{len(c)}": c for c in chunks}
    futures = client.map(_run_chunk, list(by_key.values()), key=list(by_key), cell_fn=cell_fn, pure=False)
    for fut in as_completed(futures):
        if fut.status == "finished":
            yield from fut.result()
        else:
            exc = fut.exception()
            err = exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
            for cell in by_key[fut.key]:
                yield CellOutcome.failed(cell, err)
        fut.release()


def _start_local_cluster(n_workers: int) -> Any:
    """A local cluster of ``n_workers`` single-thread processes that ignore SIGINT.

    Ctrl-C in a terminal signals the whole foreground process group; workers that took it would die with
    tracebacks and be restarted by their nannies.  An ignored signal stays ignored across ``exec``, so the
    worker processes are spawned while this process ignores SIGINT (in the main thread; elsewhere no
    handler can be set) and only this process acts on Ctrl-C: it stops the workers itself
    (:func:`_local_client`).  A Ctrl-C during these start-up seconds is therefore lost; press it again.
    """
    from distributed import LocalCluster

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _kill_workers(pids: Sequence[int]) -> None:
    """Stop the local worker processes at once (an interrupt: their cells are lost anyway) and silence
    the cluster's logging, which would otherwise report the lost workers with tracebacks."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def _local_client(workers: int | None) -> Iterator[Any]:
    """A client of a fresh local cluster; on an interrupt (or any error) the workers are killed before the
    cluster is closed, so the sweep stops within a second instead of waiting for running cells."""
    import dask
    from distributed import Client

    with dask.config.set({"distributed.worker.profile.enabled": False}):  # its sampling slows pure Python
        cluster = _start_local_cluster(workers or os.cpu_count() or 1)
    pids: list[int] = []
    try:
        with Client(cluster) as client:
            pids = [int(p) for p in client.run(os.getpid).values()]
            try:
                yield client
            except BaseException:
                _kill_workers(pids)
                raise
    except BaseException:
        _kill_workers(pids)
        cluster.close()
        raise
    cluster.close()


@contextmanager
def _client(scheduler: str, workers: int | None) -> Iterator[Any]:
    """A Dask client: a fresh local cluster, an existing scheduler (tcp://...), or SLURM via dask-jobqueue."""
    from distributed import Client

    if scheduler == "local":
        with _local_client(workers) as client:
            yield client
    elif scheduler == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ConfigError("--scheduler slurm: dask-jobqueue is not installed (pip install dask-jobqueue)") from None
        with SLURMCluster() as cluster, Client(cluster) as client:  # queue, cores, memory: dask's jobqueue config
            cluster.scale(jobs=workers or 1)
            yield client
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot reach the scheduler ({exc})") from None
        with client:
            yield client


def _progress_bar(total: int, enabled: bool) -> Any:
    return progress_bar(enabled=enabled, total=total, desc="cells", unit="cell")


def _consume(out: Path, outcomes: Iterator[CellOutcome], bar: Any, failures: list[Failure]) -> float:
    """Record outcomes as they arrive; return the seconds spent."""
    t0 = time.perf_counter()
    for outcome in outcomes:
        if outcome.error is not None:
            failures.append(Failure(outcome.cell.cell_id, outcome.cell.label(), outcome.error))
            bar.set_postfix(failed=len(failures))
        else:
            _record(out, outcome)
        bar.update(1)
    return time.perf_counter() - t0


@contextmanager
def _runner(todo: Sequence[Cell], scheduler: str, workers: int | None, cell_fn: CellFn) -> Iterator[Any]:
    """A function from cells to outcomes, ready to go: the cluster is up (or unreachable: an error) first."""
    if not todo or scheduler == "none":
        yield lambda cells: _sequential(cells, cell_fn)
        return
    with _client(scheduler, workers) as client:
        client.run(_warm_up)
        yield lambda cells: _dask_outcomes(client, cells, cell_fn)


def _axis_columns(axes: Sequence[Axis], cells: Sequence[Cell], rows_per_cell: Sequence[int]) -> list[pl.Series]:
    series = []
    for i, a in enumerate(axes):
        values = [c.columns[i][1] for c, n in zip(cells, rows_per_cell, strict=True) for _ in range(n)]
        series.append(pl.Series(a.column, values, dtype=_AXIS_DTYPES[a.kind]))
    return series


def assemble_results(sweep: Sweep, out: Path) -> pl.DataFrame | None:
    """``results.parquet``: the finished cells' rows in cell order, with ``cell_index`` and axis columns."""
    done = [c for c in sweep.cells if (out / "cells" / f"{c.cell_id}.parquet").is_file()]
    if not done:
        return None
    frames = [pl.read_parquet(out / "cells" / f"{c.cell_id}.parquet") for c in done]
    body = pl.concat(frames, how="vertical")
    sizes = [f.height for f in frames]
    index = pl.Series("cell_index", [c.index for c, n in zip(done, sizes, strict=True) for _ in range(n)], pl.Int64)
    axis_cols = _axis_columns(sweep.axes, done, sizes)
    front = body.select("cell_id").with_columns(index, *axis_cols)
    return pl.concat([front, body.drop("cell_id")], how="horizontal")


def _write_failures(out: Path, failures: Sequence[Failure], cells: Sequence[Cell]) -> None:
    path = out / "failures.json"
    if not failures:
        path.unlink(missing_ok=True)
        return
    order = {c.cell_id: c.index for c in cells}
    doc = [
        {"cell_id": f.cell_id, "cell": f.label, "error": f.error}
        for f in sorted(failures, key=lambda f: order[f.cell_id])
    ]
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
    cell_fn: CellFn = run_cell,
) -> SweepOutcome:
    """Run the sweep's unfinished cells and (re)write ``results.parquet``; see :mod:`edgeprune.sweep`.

    ``scheduler``: ``"none"`` (in this process, one cell after another), ``"local"`` (a local Dask cluster
    of ``workers`` processes, default one per core), ``"slurm"`` (dask-jobqueue, ``workers`` jobs) or a
    scheduler address (``tcp://host:8786``).  ``cell_fn`` is the seam tests use to inject failures.
    """
    out = Path(out)
    _check_out(out)
    todo = [c for c in sweep.cells if force or not _is_finished(out, c)]
    failures: list[Failure] = []
    with _runner(todo, scheduler, workers, cell_fn) as run:  # before writing anything: no half-made folder
        _prepare_out(out, force)
        atomic_write_text(out / "sweep.json", json.dumps(sweep.manifest(), indent=1, sort_keys=True) + "\n")
        bar = _progress_bar(len(todo), progress)
        try:
            wall_s = _consume(out, run(todo), bar, failures)
        finally:
            bar.close()
    _write_failures(out, failures, sweep.cells)
    results = assemble_results(sweep, out)
    path = out / "results.parquet"
    if results is None:
        path.unlink(missing_ok=True)
    else:
        _write_parquet_atomic(results, path)
    return SweepOutcome(
        total=len(sweep.cells),
        ran=len(todo) - len(failures),
        skipped=len(sweep.cells) - len(todo),
        failures=tuple(failures),
        results_path=path if results is not None else None,
        rows=results.height if results is not None else 0,
        run_wall_s=wall_s,
    )
