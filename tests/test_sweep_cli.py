"""`edgeprune-sim sweep` as a user runs it: the summary, exit statuses, one-line errors, nothing half-written."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from simfixtures import short_scenario, write_sweep

import edgeprune.cli.sweep as cli_sweep
from edgeprune.cli.sim import main as sim_main
from edgeprune.sweep import Cell, CellOutcome, run_cell, run_sweep

SHORT = short_scenario(30, slowed_s=(10, 20))
SPEC = """\
base = "case/scenario.toml"
seeds = [0, 1]
keep_runs = "none"
[[axis]]
key = "slo_s"
values = [0.8, 1.2]
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_sweep(tmp_path, SPEC, SHORT)


def test_sweep_subcommand_prints_counts_and_a_ci_table(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--out", str(out), "--scheduler", "none", "--no-progress"]
    assert sim_main(args) == 0
    text = capsys.readouterr().out
    assert "4 cells: ran 4, skipped 0" in text
    assert "axis.slo_s" in text and "SLO %" in text and "±" in text
    assert (out / "results.parquet").is_file()
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    assert sim_main(args) == 0
    assert "ran 0, skipped 4" in capsys.readouterr().out


def test_dry_run_lists_cells_and_writes_nothing(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_sweep.main([str(spec), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "4 cells" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra_spec", "args", "needle"),
    [
        ('[[axis]]\nkey = "arrivals.rate_hz"\nvalues = [1.0]\n', [], "did you mean 'rates_hz'"),
        ("", ["--workers", "0"], "--workers = 0"),
        ("", ["--scheduler", "mars"], "--scheduler = 'mars'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra_spec: str, args: list[str], needle: str
) -> None:
    spec.write_text(SPEC + extra_spec)
    out = tmp_path / "o"
    assert cli_sweep.main([str(spec), "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgeprune-sim sweep: error:") and needle in err
    assert not out.exists()


def test_a_failed_cell_gives_exit_1_and_keeps_the_rest(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(cell: Cell) -> CellOutcome:
        return CellOutcome.failed(cell, RuntimeError("bad")) if cell.index == 1 else run_cell(cell)

    monkeypatch.setattr(cli_sweep, "run_sweep", functools.partial(run_sweep, cell_fn=broken))
    out = tmp_path / "o"
    assert cli_sweep.main([str(spec), "--out", str(out), "--scheduler", "none", "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert "ran 3" in cap.out and "failed 1" in cap.out
    assert "RuntimeError: bad" in cap.err and "failures.json" in cap.err
    assert (out / "failures.json").is_file()
