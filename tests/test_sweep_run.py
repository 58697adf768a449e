"""Running sweeps: tidy results, skipping finished cells, failures kept apart, Dask equal to sequential."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from simfixtures import short_scenario, write_sweep

from edgeprune.results import SUMMARY_FIELDS, read_run_dir
from edgeprune.sweep import Cell, CellOutcome, load_sweep, run_cell, run_sweep
from edgeprune.sweep.execute import assemble_results

SHORT = short_scenario(60, slowed_s=(20, 40))
SPEC = """\
base = "case/scenario.toml"
seeds = [0, 1, 2]
[[axis]]
key = "arrivals"
name = "rate_hz"
values = [{kind = "poisson", rate_hz = 2.0}, {kind = "poisson", rate_hz = 5.0}]
[[axis]]
key = "environment[0].slowdown"
name = "slowdown"
values = [1.0, 2.0]
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_sweep(tmp_path, SPEC, SHORT)


class Counting:
    """A cell function that counts its calls (in-process runs only)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, cell: Cell) -> CellOutcome:
        self.ids.append(cell.cell_id)
        return run_cell(cell)


def fail_seed_one(cell: Cell) -> CellOutcome:
    """Runs on a Dask worker: raises (a bug, not a user error) for every seed-1 cell with slowdown 2."""
    if cell.seed == 1 and dict(cell.columns)["slowdown"] == 2.0:
        raise RuntimeError("boom in the worker")
    return run_cell(cell)


def test_results_are_tidy_one_row_per_cell_and_policy(spec: Path, tmp_path: Path) -> None:
    sw = load_sweep(spec)
    res = run_sweep(sw, tmp_path / "out", scheduler="none")
    assert (res.total, res.ran, res.skipped, res.failures) == (12, 12, 0, ())
    df = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert df.height == 12 * 2
    expected = {"cell_id", "cell_index", "rate_hz", "slowdown", "scenario", "seed", "policy", "slo_s"}
    assert expected | {"offered_rate_hz", *SUMMARY_FIELDS} == set(df.columns)
    assert df["cell_index"].to_list() == sorted(df["cell_index"].to_list())
    assert df.schema["slowdown"] == pl.Float64
    assert df.schema["rate_hz"] == pl.String  # a table value: compact JSON text
    assert df.group_by("cell_id").len()["len"].to_list() == [2] * 12
    # the offered rate is the measured one and follows the axis
    low = df.filter(pl.col("rate_hz").str.contains('"rate_hz":2.0'))["offered_rate_hz"].mean()
    high = df.filter(pl.col("rate_hz").str.contains('"rate_hz":5.0'))["offered_rate_hz"].mean()
    assert 1.5 < low < 2.5 < 4.0 < high < 6.0  # type: ignore[operator]
    # kept runs: the first seed's cells, readable as edgeprune-sim run folders
    kept = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert kept == sorted(c.cell_id for c in sw.cells if c.seed == 0)
    _doc, runs = read_run_dir(tmp_path / "out" / "runs" / kept[0])
    row = df.filter((pl.col("cell_id") == kept[0]) & (pl.col("policy") == "dynamic")).row(0, named=True)
    assert runs["dynamic"].summary["p95_latency_s"] == row["p95_latency_s"]
    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [c["id"] for c in manifest["cells"]] == [c.cell_id for c in sw.cells]


def test_rerun_runs_only_missing_cells_and_gives_identical_results(spec: Path, tmp_path: Path) -> None:
    sw = load_sweep(spec)
    out = tmp_path / "out"
    run_sweep(sw, out, scheduler="none")
    first = (out / "results.parquet").read_bytes()
    again = Counting()
    assert run_sweep(sw, out, scheduler="none", cell_fn=again).skipped == 12
    assert again.ids == []
    victims = [sw.cells[3].cell_id, sw.cells[7].cell_id]
    for v in victims:
        (out / "cells" / f"{v}.parquet").unlink()
    done = subprocess.Popen(["true"])
    done.wait()  # its PID names a writer that is gone
    leftover = out / "cells" / f".leftover.parquet.tmp-{done.pid}-0123abcd"
    leftover.write_text("from a killed run")
    third = Counting()
    res = run_sweep(sw, out, scheduler="none", cell_fn=third)
    assert sorted(third.ids) == sorted(victims)
    assert (res.ran, res.skipped) == (2, 10)
    assert (out / "results.parquet").read_bytes() == first
    assert not leftover.exists()


def test_failing_cell_is_recorded_and_the_others_kept(spec: Path, tmp_path: Path) -> None:
    sw = load_sweep(spec)
    out = tmp_path / "out"

    def broken(cell: Cell) -> CellOutcome:
        if cell.index == 4:
            return CellOutcome.failed(cell, ValueError("no luck"))
        return run_cell(cell)

    res = run_sweep(sw, out, scheduler="none", cell_fn=broken)
    assert len(res.failures) == 1 and res.ran == 11
    fails = json.loads((out / "failures.json").read_text())
    assert fails == [{"cell_id": sw.cells[4].cell_id, "cell": sw.cells[4].label(), "error": "ValueError: no luck"}]
    assert pl.read_parquet(out / "results.parquet")["cell_id"].n_unique() == 11
    res = run_sweep(sw, out, scheduler="none")
    assert (res.ran, res.failures) == (1, ())
    assert not (out / "failures.json").exists()


def test_results_follow_the_current_spec_axis_names(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(load_sweep(spec), out, scheduler="none")
    spec.write_text(SPEC.replace('name = "slowdown"', 'name = "env_factor"'))
    sw = load_sweep(spec)
    counting = Counting()
    run_sweep(sw, out, scheduler="none", cell_fn=counting)
    assert counting.ids == []  # same scenarios: same cells
    assert "env_factor" in pl.read_parquet(out / "results.parquet").columns


def test_refuses_a_folder_that_is_not_a_sweep(spec: Path, tmp_path: Path) -> None:
    from edgeprune.errors import ResultError

    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ResultError, match="holds no sweep"):
        run_sweep(load_sweep(spec), out, scheduler="none")


@pytest.mark.slow
def test_dask_cluster_with_a_crashing_cell_then_rerun_equals_sequential(spec: Path, tmp_path: Path) -> None:
    sw = load_sweep(spec)
    seq = tmp_path / "seq"
    run_sweep(sw, seq, scheduler="none")
    par = tmp_path / "par"
    res = run_sweep(sw, par, scheduler="local", workers=2, cell_fn=fail_seed_one)
    bad = [c for c in sw.cells if c.seed == 1 and dict(c.columns)["slowdown"] == 2.0]
    assert sorted(f.cell_id for f in res.failures) == sorted(c.cell_id for c in bad)
    assert all(f.error == "RuntimeError: boom in the worker" for f in res.failures)
    for c in sw.cells:
        if c not in bad:
            assert (par / "cells" / f"{c.cell_id}.parquet").read_bytes() == (
                seq / "cells" / f"{c.cell_id}.parquet"
            ).read_bytes()
    counting = Counting()
    res = run_sweep(sw, par, scheduler="none", cell_fn=counting)
    assert sorted(counting.ids) == sorted(c.cell_id for c in bad)
    assert (par / "results.parquet").read_bytes() == (seq / "results.parquet").read_bytes()
    assembled = assemble_results(sw, par)
    assert assembled is not None and assembled.height == 24
