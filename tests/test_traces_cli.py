"""``edgeprune-trace inspect`` / ``fit`` and the paper replay scenarios that run from the repository alone."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.config import Ctx
from edgeprune.runs import header
from edgeprune.scenario import load_scenario
from traces import CameraTrapArrivals, ReplayArrivals, arrivals_from_table, generate
from traces.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "scenarios" / "paper"


@pytest.fixture
def camera_csv(tmp_path: Path) -> Path:
    """Two locations of a camera trap in Camtrap DP media.csv layout, with sequence ids."""
    spec = CameraTrapArrivals(
        trigger_rate_hz=1 / 300, burst_size_mean=4, burst_size_max=4, frame_interval_s=1.0, burst_size_dist="fixed"
    )
    rows = []
    for d, seed in (("dA", 1), ("dB", 2)):
        t = generate(spec, np.random.default_rng(seed), n_requests=400)
        stamps = np.datetime_as_string((1_600_000_000 + t).astype("datetime64[s]"), unit="s")
        rows += [f"m{d}{i},{d},{d}-{i // 4},{s}Z" for i, s in enumerate(stamps)]
    path = tmp_path / "media.csv"
    path.write_text("mediaID,deploymentID,sequenceID,timestamp\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_inspect_prints_rates_burstiness_bursts_per_location_and_writes_a_png(
    camera_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "chart.png"
    assert main(["inspect", str(camera_csv), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "rows 800, events 800" in out and "rate per minute: mean" in out and "CV of inter-arrivals" in out
    assert "bursts (sequence ids):" in out
    assert "  dA: 400 events in 100 bursts, 4 frames per trigger (max 4), gap within 1 s" in out
    assert "  dB: 400 events in 100 bursts" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_json_has_the_numbers(camera_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(camera_csv), "--deployment", "dA", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["events"] == 400 and doc["rows"] == 800 and doc["peak_per_min"] >= 4
    assert doc["bursts"][0]["frames_per_trigger_mean"] == 4.0
    assert doc["cv_gap"] > 1.5  # bursts: far burstier than Poisson


def test_fit_prints_and_writes_the_arrivals_block(
    camera_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "fitted.toml"
    assert main(["fit", str(camera_csv), "--model", "camera-trap", "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert printed == out_file.read_text(encoding="utf-8")
    assert "# recorded CV " in printed and "generated (median of 5 seeds over the recorded span) CV " in printed
    table = tomllib.loads(printed)["arrivals"]
    spec = arrivals_from_table(table, Ctx(str(out_file), "arrivals"), tmp_path)
    assert isinstance(spec, CameraTrapArrivals) and spec.burst_size_dist == "fixed" and spec.burst_size_mean == 4


def test_a_millisecond_trace_is_refused_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "req.jsonl"
    f.write_text("".join(f'{{"timestamp": {v}}}\n' for v in range(0, 3_600_000, 1000)), encoding="utf-8")
    assert main(["inspect", str(f)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("edgeprune-trace: error: ")
    assert "set unit = 'ms'" in captured.err
    assert main(["inspect", str(f), "--unit", "ms"]) == 0


def test_bad_options_are_one_line_errors(camera_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(camera_csv), "--model", "camra"]) == 2
    assert "unknown model (did you mean 'camera-trap'?)" in capsys.readouterr().err
    assert main(["fit", str(camera_csv), "--model", "camera-trap", "--triggers", "mmp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--triggers = 'mmp': unknown trigger law (did you mean 'mmpp'?)" in err
    assert main(["inspect", str(camera_csv), "--outliers", "dorp"]) == 2
    assert "outliers = 'dorp': not one of the valid choices (did you mean 'drop'?)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["replay-azure", "replay-mica"])
def test_paper_replays_load_and_report_from_the_repository_alone(name: str) -> None:
    sc = load_scenario(PAPER / f"{name}.toml")
    assert isinstance(sc.arrivals, ReplayArrivals)
    assert Path(sc.arrivals.path).is_relative_to(ROOT / "traces" / "data")
    arrivals = generate(sc.arrivals, np.random.default_rng(0), duration_s=sc.duration_s)
    doc = header(sc)["arrivals"]
    assert doc["arrivals"] == arrivals.size > 100
    assert doc["rows_read"] == doc["kept"] + sum(doc["dropped"].values())


def test_a_synthetic_scenario_summary_has_no_arrivals_key(tmp_path: Path) -> None:
    sc = load_scenario(PAPER / "camtrap.toml")
    assert "arrivals" not in header(sc)
    table = tomllib.loads((PAPER / "replay-mica.toml").read_text(encoding="utf-8"))["arrivals"]
    assert isinstance(arrivals_from_table(table, Ctx("m.toml", "arrivals"), PAPER), ReplayArrivals)


def test_the_html_report_charts_a_replayed_trace() -> None:
    import polars as pl

    from edgeprune.report.charts import replay_chart
    from edgeprune.results import RunResult

    arrivals = np.array([0.0, 0.5, 1.0, 60.0, 60.5, 200.0])
    run = RunResult("p", pl.DataFrame({"request_id": np.arange(6), "arrival_s": arrivals}), pl.DataFrame(), {})
    replay = {"source": "media.csv", "rows_read": 9, "kept": 6, "dropped": {"before start_s": 3}}
    chart = replay_chart("r1", {"p": run}, replay, "run-r1-trace")
    rows = chart.spec["datasets"]["table"]
    assert sum(r["count"] for r in rows if r["panel"] == "time") == 6
    assert sum(r["count"] for r in rows if r["panel"] == "gap") == 5
    assert chart.caption == "media.csv: read 9 rows, kept 6, dropped {'before start_s': 3}"


def _clone(root: Path) -> Path:
    """The files the MICA replay scenario needs, laid out as in the repository under ``root``."""
    import shutil

    profile = "models/profiles/vit-b16_x86-2c_digits-proxy.json"
    for part in ("scenarios/paper/replay-mica.toml", profile, *map(str, _mica_files())):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, root / part)
    return root / "scenarios" / "paper" / "replay-mica.toml"


def _mica_files() -> list[Path]:
    return [p.relative_to(ROOT) for p in (ROOT / "traces" / "data" / "mica_camtrapdp").iterdir()]


def test_a_replay_summary_is_byte_identical_in_two_clones(tmp_path: Path) -> None:
    from edgeprune.cli.sim import main as sim_main

    summaries = []
    for clone in (tmp_path / "a", tmp_path / "elsewhere" / "deeper" / "b"):
        scenario = _clone(clone)
        out = clone / "out"
        assert sim_main([str(scenario), "--policy", "no-pruning", "--no-progress", "--out", str(out)]) == 0
        summaries.append((out / "summary.json").read_bytes())
    assert summaries[0] == summaries[1]
    replay = json.loads(summaries[0])["arrivals"]
    assert replay["source"].startswith("camtraptor_mica_media.csv [all 4 locations] (window ")
    assert str(tmp_path) not in summaries[0].decode()
    digest = hashlib.sha256((ROOT / "traces/data/mica_camtrapdp/camtraptor_mica_media.csv").read_bytes())
    assert replay["sha256"] == digest.hexdigest()
