"""Inputs that used to crash or mislead: each class refused up front with one line and exit status 2.

Sizes that would exhaust memory or overflow a generator, empty schedules, a negative ``--seed``, argparse
errors of every command, a profile whose per-stage accuracy entry lacks a field, and an ``--out`` that
names an existing file (reported before simulating).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from simfixtures import BASE_SCENARIO, write_case

import edgeprune.limits
import sim
from edgeprune.cli.sim import main as sim_main
from edgeprune.errors import ConfigError
from edgeprune.limits import BYTES_PER_REQUEST_STAGE
from edgeprune.scenario import load_scenario

MMPP = 'kind = "mmpp"\nrates_hz = [3.0, 12.0]\nmean_dwell_s = [60.0, 15.0]'
EVENT = "start_s = 200\nend_s = 400\nslowdown = 1.6"


def _case(tmp_path: Path, old: str, new: str) -> Path:
    assert old in BASE_SCENARIO
    return write_case(tmp_path / "case", BASE_SCENARIO.replace(old, new, 1))


def _run_sim(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = sim_main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err.splitlines()


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record any call to the simulator (none may happen for a refused input)."""
    calls: list[object] = []
    monkeypatch.setattr(sim, "run_scenario", lambda *a, **k: calls.append(a))
    return calls


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("duration_s = 600", "duration_s = 1e9", "duration_s = 1000000000.0"),
        (MMPP, 'kind = "poisson"\nrate_hz = 1e7', "arrivals.rate_hz = 10000000.0"),
        (MMPP, 'kind = "poisson"\nrate_hz = 1e308', "arrivals.rate_hz = 1e+308"),
        (MMPP, 'kind = "mmpp"\nrates_hz = [3.0, 1e308]\nmean_dwell_s = [60.0, 15.0]', "arrivals.rates_hz = "),
        (MMPP, 'kind = "schedule"\nmean_rate_hz = 1e9\namplitude = 0.5', "arrivals.mean_rate_hz = 1000000000.0"),
        ("duration_s = 600", "n_requests = 1000000000000", "n_requests = 1000000000000"),
        ("min_accuracy = 0.85", "min_accuracy = 0.85\nperiod_s = 1e-9", "policy[1].period_s = 1e-09"),
        ("mean_dwell_s = [60.0, 15.0]", "mean_dwell_s = [60.0, 1e-12]", "arrivals.mean_dwell_s = [60.0, 1e-12]"),
    ],
)
def test_sizes_beyond_the_limits_are_refused_before_drawing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_simulation: list[object], old: str, new: str, key: str
) -> None:
    path = _case(tmp_path, old, new).parent / "scenario.toml"
    if new.startswith("n_requests"):
        path.write_text(path.read_text().replace("warmup_s = 30\n", ""))
    code, out, err = _run_sim([str(path), "--no-progress"], capsys)
    assert (code, out, no_simulation) == (2, "", [])
    assert len(err) == 1 and err[0].startswith(f"edgeprune-sim: error: {path}: {key}")
    assert re.search(r"the limit is 2,147,483,647 [a-zA-Z ]+ and .* \(this machine's memory\)", err[0])


def test_memory_estimate_scales_with_requests_stages_and_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _case(tmp_path, "duration_s = 600", "n_requests = 10000")
    path.write_text(path.read_text().replace("warmup_s = 30\n", ""))
    requests_bytes = 10_000 * 4 * 2 * BYTES_PER_REQUEST_STAGE  # requests x stages x policies: the largest part
    monkeypatch.setattr(edgeprune.limits, "memory_limit_bytes", lambda: 2 * requests_bytes)
    assert load_scenario(path).n_requests == 10_000
    monkeypatch.setattr(edgeprune.limits, "memory_limit_bytes", lambda: requests_bytes - 1)
    with pytest.raises(ConfigError, match=r"n_requests = 10000: about 1e\+04 requests, needing ~1[2-9].\d MiB"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("times_s = []\nslowdowns = []", r"environment\[0\].times_s = \[\]: need at least 1 entry"),
        ("times_s = [0.0]\nslowdowns = []", r"environment\[0\].slowdowns = \[\]: need at least 1 entry"),
        ("times_s = []\nslowdowns = [2.0]", r"environment\[0\].times_s = \[\]: need at least 1 entry"),
    ],
)
def test_empty_environment_schedule_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_simulation: list[object], new: str, message: str
) -> None:
    path = _case(tmp_path, EVENT, new)
    code, out, err = _run_sim([str(path)], capsys)
    assert (code, out, no_simulation, len(err)) == (2, "", [], 1)
    assert re.search(message, err[0])


def test_profile_per_stage_entry_without_a_field_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_simulation: list[object]
) -> None:
    path = write_case(tmp_path / "case")
    prof = path.parent / "profile.json"
    doc = json.loads(prof.read_text())
    doc["accuracy"]["per_stage"] = [{"levels": [0, 0, 1, 1]}]
    prof.write_text(json.dumps(doc))
    code, out, err = _run_sim([str(path)], capsys)
    assert (code, out, no_simulation, len(err)) == (2, "", [], 1)
    assert err[0].endswith("accuracy.per_stage[0].accuracy: required key is missing")


def test_out_naming_an_existing_file_is_refused_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_simulation: list[object]
) -> None:
    path = write_case(tmp_path / "case")
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    code, stdout, err = _run_sim([str(path), "--out", str(out)], capsys)
    assert (code, stdout, no_simulation, len(err)) == (2, "", [], 1)
    assert "exists and is not a folder" in err[0] and out.read_text() == "keep me"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code, stdout, err = _run_sim([str(path), "--out", str(tmp_path / "full")], capsys)
    assert (code, no_simulation, len(err)) == (2, [], 1) and "is not empty" in err[0]


def _clis() -> dict[str, Callable[[list[str]], int]]:
    from edgeprune.cli.report import main as report_main
    from edgeprune.cli.sweep import main as sweep_main
    from hil.cli import main as hil_main
    from models.cli import main as profile_main
    from models.train_cli import main as train_main
    from traces.cli import main as trace_main

    return {
        "edgeprune-sim": sim_main,
        "edgeprune-sim sweep": sweep_main,
        "edgeprune-report": report_main,
        "edgeprune-profile": profile_main,
        "edgeprune-train": train_main,
        "edgeprune-hil": hil_main,
        "edgeprune-trace": trace_main,
    }


BAD_ARGV = {
    "edgeprune-sim": [[], ["s.toml", "--seed", "-1"], ["s.toml", "--seed", "abc"], ["s.toml", "--bogus"]],
    "edgeprune-sim sweep": [[], ["w.toml", "--workers", "x"], ["w.toml", "--bogus"]],
    "edgeprune-report": [["--bogus"], ["-o"]],
    "edgeprune-profile": [[], ["latency", "--seed", "-1", "--out", "p.json"], ["nest", "--bogus"]],
    "edgeprune-train": [["--seed", "-1"], ["--seed", "abc"], ["--epochs", "x"], ["--bogus"]],
    "edgeprune-hil": [[], ["--cluster", "c.toml", "run", "s.toml", "--out", "o", "--seed", "-1"], ["--bogus"]],
    "edgeprune-trace": [[], ["inspect"], ["fit", "t.csv", "--bogus"]],
}


@pytest.mark.parametrize(
    ("prog", "argv"), [(prog, argv) for prog, cases in BAD_ARGV.items() for argv in cases], ids=str
)
def test_usage_errors_are_one_line_and_one_hint(
    prog: str, argv: list[str], capsys: pytest.CaptureFixture[str], no_simulation: list[object]
) -> None:
    code = _clis()[prog](argv)
    cap = capsys.readouterr()
    err = cap.err.splitlines()
    assert (code, cap.out, no_simulation) == (2, "", [])
    assert len(err) == 2, err
    assert err[0].startswith(f"{prog}: error: ") and "usage" not in err[0]
    assert err[1].startswith("usage: ") and len(err[1]) <= 120
    if "-1" in argv:
        assert err[0].endswith("argument --seed: must be >= 0 (got -1)")


def test_sweep_cross_product_beyond_the_cell_limit_is_refused_before_expanding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeprune.sweep.spec as spec

    write_case(tmp_path / "case")
    path = tmp_path / "sweep.toml"
    axes = "".join(
        f'[[axis]]\nkey = "environment[0].{k}"\nvalues = {v}\n'
        for k, v in (
            ("slowdown", [1.5, 2.0, 2.5]),
            ("start_s", [100.0, 150.0]),
        )
    )
    path.write_text(f'base = "case/scenario.toml"\nseeds = [1, 2]\n{axes}')
    monkeypatch.setattr(spec, "_load_doc", lambda *a: pytest.fail("a cell was expanded"))
    monkeypatch.setattr(spec, "MAX_CELLS", 11)
    with pytest.raises(
        ConfigError, match=r"sweep.toml: axis = 12: the axes and seeds make 3 x 2 x 2 = 12 cells; the limit is 11$"
    ):
        spec.load_sweep(path)
