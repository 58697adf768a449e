"""`edgeprune-sim` as a user runs it: the table, the output directory, determinism and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from edgeprune.cli.sim import main
from edgeprune.results import read_run_dir


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_prints_a_comparison_table(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(case), "--no-progress"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("policy"))
    for col in ("thr/s", "p50 s", "p95 s", "p99 s", "SLO %", "accuracy", "switches"):
        assert col in header
    assert any(line.startswith("no-pruning") for line in out.splitlines())
    assert any(line.startswith("dynamic") for line in out.splitlines())


def test_out_directory_schema_and_bottleneck_beats_no_pruning(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "b1"
    assert main([str(case), "--out", str(out), "--no-progress"]) == 0
    doc, runs = read_run_dir(out)
    assert set(runs) == {"no-pruning", "dynamic"}
    assert (out / "scenario.toml").is_file()
    req = runs["dynamic"].requests
    assert {"request_id", "arrival_s", "departure_s", "latency_s", "status", "accuracy", "level_s0"} <= set(req.columns)
    tl = runs["dynamic"].timeline
    assert {"time_s", "stage", "level", "queue_len", "service_time_s", "arrival_rate_hz"} <= set(tl.columns)
    assert tl.filter(pl.col("stage") == "s1")["level"].max() > 0  # the slowed node got pruned
    summ = doc["policies"]
    assert summ["dynamic"]["slo_attainment"] > summ["no-pruning"]["slo_attainment"]
    assert summ["dynamic"]["mean_accuracy"] >= 0.85 - 1e-9
    # the summary agrees with the per-request records
    kept = req.filter(~pl.col("in_warmup"))
    met = kept.filter((pl.col("status") == "done") & (pl.col("latency_s") <= 1.0)).height
    assert summ["dynamic"]["slo_attainment"] == pytest.approx(met / kept.height)


def test_same_seed_byte_identical_other_seed_differs(case: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main([str(case), "--out", str(a), "--no-progress"]) == 0
    assert main([str(case), "--out", str(b), "--no-progress"]) == 0
    assert main([str(case), "--out", str(c), "--seed", "3", "--no-progress"]) == 0
    assert _files(a) == _files(b)
    fc = _files(c)
    assert fc.keys() == _files(a).keys()
    assert fc["dynamic/requests.parquet"] != _files(a)["dynamic/requests.parquet"]
    assert json.loads(fc["summary.json"])["seed"] == 3


def test_policy_filter_and_rerun_of_resolved_scenario(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    assert main([str(case), "--out", str(out), "--policy", "dynamic", "--no-progress"]) == 0
    _doc, runs = read_run_dir(out)
    assert list(runs) == ["dynamic"]
    again = tmp_path / "again"
    assert main([str(out / "scenario.toml"), "--out", str(again), "--no-progress"]) == 0
    assert _files(out)["dynamic/requests.parquet"] == _files(again)["dynamic/requests.parquet"]


def test_existing_output_is_refused_without_force(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main([str(case), "--out", str(out), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([str(case), "--out", str(out), "--force", "--no-progress"]) == 0
    assert not (out / "keep.txt").exists()


def _edit(case: Path, old: str, new: str) -> Path:
    text = case.read_text()
    assert old in text
    case.write_text(text.replace(old, new, 1))
    return case


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("seed = 7", "seed = 7\nslo_s = [", "malformed TOML"),
        ("seed = 7", "sed = 7", "sed = 7: unknown key (did you mean 'seed'?)"),
        ('kind = "mmpp"', 'kind = "mmmp"', "arrivals.kind = 'mmmp': unknown arrival kind (did you mean 'mmpp'?)"),
        (
            'kind = "bottleneck"',
            'kind = "botleneck"',
            "policy[1].kind = 'botleneck': unknown policy kind (did you mean 'bottleneck'?)",
        ),
        (
            "min_accuracy = 0.85",
            "min_acuracy = 0.85",
            "policy[1].min_acuracy = 0.85: unknown key (did you mean 'min_accuracy'?)",
        ),
        (
            "levels = [0, 0, 0, 0]",
            "levels = [0, 0, 9, 0]",
            "policy[0].levels = [0, 0, 9, 0]: level 9 is outside the ladder 0..6",
        ),
        (
            'device = "pi2"\n\n[network]',
            'device = "pi3"\n\n[network]',
            "stage[3].device = 'pi3': unknown device (did you mean 'pi2'?)",
        ),
        ('profile = "profile.json"', 'profile = "nope.json"', "nope.json: profile file not found"),
        ("slo_s = 1.0", "slo_s = -1.0", "slo_s = -1.0: must be > 0"),
        ("rates_hz = [3.0, 12.0]", 'rates_hz = [3.0, "x"]', "arrivals.rates_hz[1] = 'x': expected a number"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_output(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    _edit(case, old, new)
    out = tmp_path / "never"
    assert main([str(case), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"edgeprune-sim: error: {case}") or "nope.json" in err, err
    assert expected in err
    assert not out.exists()
    assert not any(p.name.startswith(".never") for p in tmp_path.iterdir())


def test_missing_scenario_and_unknown_policy_filter(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/nonexistent/x.toml"]) == 2
    assert "/nonexistent/x.toml: file not found" in capsys.readouterr().err
    assert main([str(case), "--policy", "dynamc"]) == 2
    assert "(did you mean 'dynamic'?)" in capsys.readouterr().err


def test_nan_time_in_replayed_trace(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (case.parent / "t.csv").write_text("time_s\n0.5\nnan\n2.0\n")
    text = case.read_text()
    start = text.index("[arrivals]")
    end = text.index("[[environment]]")
    case.write_text(text[:start] + '[arrivals]\nkind = "replay"\npath = "t.csv"\nunit = "s"\n\n' + text[end:])
    assert main([str(case), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "row" in err and "time_s" in err


def test_console_script_exit_status_and_no_traceback(case: Path) -> None:
    _edit(case, "seed = 7", "seed = -1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.sim", str(case)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "seed = -1: must be >= 0" in proc.stderr


def test_missing_trace_file_names_key_and_path(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = case.read_text()
    start, end = text.index("[arrivals]"), text.index("[[environment]]")
    case.write_text(text[:start] + '[arrivals]\nkind = "replay"\npath = "gone.csv"\n\n' + text[end:])
    assert main([str(case), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "arrivals.path" in err and "gone.csv" in err
