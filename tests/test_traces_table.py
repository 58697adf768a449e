"""Scenario ``[arrivals]`` tables → arrival specs: every kind, and the one-line errors users will see."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.config import Ctx
from edgeprune.errors import ConfigError, TraceError
from traces import (
    CameraTrapArrivals,
    MmppArrivals,
    PoissonArrivals,
    RateScheduleArrivals,
    ReplayArrivals,
    arrivals_from_table,
    generate,
)

CTX = Ctx("scenarios/s.toml", "arrivals")
CAMERA = 'kind = "camera-trap"\ntrigger_rate_hz = 1\nburst_size_mean = 5\nburst_size_max = 9\nframe_interval_s = 1\n'


def table(text: str) -> dict[str, object]:
    return tomllib.loads(text)["arrivals"]


def from_toml(text: str, base_dir: Path = Path(".")) -> object:
    return arrivals_from_table(table(text), CTX, base_dir)


def test_every_synthetic_kind_builds_from_toml() -> None:
    assert from_toml('[arrivals]\nkind = "poisson"\nrate_hz = 2') == PoissonArrivals(2.0)
    mmpp = from_toml('[arrivals]\nkind = "mmpp"\nrates_hz = [1, 10]\nmean_dwell_s = [30, 5]\nnext_state = "uniform"')
    assert mmpp == MmppArrivals((1.0, 10.0), (30.0, 5.0), next_state="uniform")
    cam = from_toml(
        '[arrivals]\nkind = "camera-trap"\ntrigger_rate_hz = 0.01\nburst_size_mean = 10\nburst_size_max = 10\n'
        'frame_interval_s = 1\nburst_size_dist = "fixed"'
    )
    assert cam == CameraTrapArrivals(0.01, 10.0, 10, 1.0, burst_size_dist="fixed")
    sched = from_toml('[arrivals]\nkind = "schedule"\ntimes_s = [0, 600]\nrates_hz = [1, 5]\namplitude = 0.3')
    assert sched == RateScheduleArrivals(times_s=(0.0, 600.0), rates_hz=(1.0, 5.0), amplitude=0.3)


def test_mmpp_with_a_transition_matrix() -> None:
    spec = from_toml(
        "[arrivals]\nkind = 'mmpp'\nrates_hz = [1, 5, 0]\nmean_dwell_s = [10, 2, 5]\n"
        "transition = [[0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]]"
    )
    assert isinstance(spec, MmppArrivals)
    assert spec.stationary() == pytest.approx(np.array([10, 1, 2.5]) / 13.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate_hz = 1", r"^scenarios/s.toml: arrivals.kind: required key is missing \(valid: 'poisson', 'mmpp'"),
        (
            'kind = "poison"\nrate_hz = 1',
            r"^scenarios/s.toml: arrivals.kind = 'poison': unknown arrival kind \(did you mean 'poisson'\?\)$",
        ),
        (
            'kind = "camera_trap"',
            r"arrivals.kind = 'camera_trap': unknown arrival kind \(did you mean 'camera-trap'\?\)",
        ),
        ('kind = "poisson"\nrate = 1', r"arrivals.rate = 1: unknown key \(did you mean 'rate_hz'\?\)"),
        ('kind = "poisson"\nrate_hz = 0', r"arrivals.rate_hz = 0.0: must be > 0"),
        ('kind = "poisson"', r"arrivals.rate_hz: required key is missing"),
        (
            'kind = "mmpp"\nrates_hz = [1]\nmean_dwell_s = [1]',
            r"arrivals.rates_hz = \[1.0\]: an MMPP needs 2 or more states",
        ),
        (
            'kind = "mmpp"\nrates_hz = [1, 2]\nmean_dwell_s = [1]',
            r"arrivals.mean_dwell_s = \[1.0\]: needs one value per state \(2\)",
        ),
        (
            'kind = "mmpp"\nrates_hz = [1, 2]\nmean_dwell_s = [1, 1]\nstart_state = 2',
            r"arrivals.start_state = 2: must be <",
        ),
        (
            'kind = "mmpp"\nrates_hz = [1, 2]\nmean_dwell_s = [1, 1]\nnext_state = "random"',
            r"next_state = 'random': not one of the valid choices",
        ),
        (
            'kind = "mmpp"\nrates_hz = [1, 2, 3]\nmean_dwell_s = [1, 1, 1]\n'
            "transition = [[0, 1, 0], [1, 0, 0], [0.5, 0.5, 0]]",
            r"arrivals.transition = .*: every state must be reachable",
        ),
        (
            'kind = "camera-trap"\ntrigger_rate_hz = 1\nburst_size_mean = 5\nburst_size_max = 3\nframe_interval_s = 1',
            r"arrivals.burst_size_max = 3: must be >= burst_size_mean \(5.0\)",
        ),
        (
            CAMERA + "trigger_modulation = [0, 1]\ntrigger_mean_dwell_s = [10]",
            r"arrivals.trigger_mean_dwell_s = \[10.0\]: needs one value per state \(2\)",
        ),
        (
            CAMERA + "trigger_modulation = [0, 0]\ntrigger_mean_dwell_s = [1, 1]",
            r"trigger_modulation = .*positive rate",
        ),
        (CAMERA + "trigger_modulation = [-1, 1]\ntrigger_mean_dwell_s = [1, 1]", r"trigger_modulation.*>= 0"),
        (CAMERA + "trigger_mean_dwell_s = [1, 1]", r"arrivals.trigger_modulation = \[\]: .* need trigger_modulation"),
        (
            CAMERA + "trigger_modulation = [0, 1, 2]\ntrigger_mean_dwell_s = [1, 1, 1]\n"
            "trigger_transition = [[0, 1, 0], [1, 0, 0], [0.5, 0.5, 0]]",
            r"arrivals.trigger_transition = .*: every state must be reachable",
        ),
        (
            'kind = "schedule"\ntimes_s = [0, 10]\nrates_hz = [1]',
            r"arrivals.times_s = \[0.0, 10.0\]: needs one time per rate \(1\)",
        ),
        (
            'kind = "schedule"\ntimes_s = [5]\nrates_hz = [1]',
            r"arrivals.times_s = \[5.0\]: the first change point must be 0",
        ),
        (
            'kind = "schedule"\ntimes_s = [0]\nrates_hz = [1]\nmean_rate_hz = 2',
            r"give either change points .* or mean_rate_hz",
        ),
        ('kind = "schedule"\nmean_rate_hz = 2\namplitude = 1.5', r"arrivals.amplitude = 1.5: must be <= 1"),
        (
            'kind = "replay"\npath = "x.csv"\nstart_s = 10\nend_s = 5',
            r"arrivals.end_s = 5.0: must be > start_s \(10.0\)",
        ),
        ('kind = "replay"\npath = "x.csv"\nformat = "xls"', r"arrivals.format = 'xls': not one of the valid choices"),
    ],
)
def test_bad_tables_are_one_line_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        from_toml("[arrivals]\n" + text)
    assert "\n" not in str(err.value)


def test_replay_path_is_relative_to_the_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text("time\n0\n1\n3\n", encoding="utf-8")
    spec = from_toml('[arrivals]\nkind = "replay"\npath = "traces/t.csv"\nspeedup = 2', base_dir=tmp_path)
    assert isinstance(spec, ReplayArrivals)
    assert Path(spec.path).is_absolute() and Path(spec.path) == (tmp_path / "traces" / "t.csv").resolve()
    assert generate(spec, np.random.default_rng(0), duration_s=10.0).tolist() == [0.0, 0.5, 1.5]


def test_replay_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^scenarios/s.toml: arrivals.path = 'gone.csv': trace file not found \(looked for .*gone.csv\)$",
    ):
        from_toml('[arrivals]\nkind = "replay"\npath = "gone.csv"', base_dir=tmp_path)


def test_replay_of_a_bad_trace_fails_when_the_scenario_is_read(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time\n0\nsoon\n3\n", encoding="utf-8")
    with pytest.raises(
        TraceError, match=r"^scenarios/s.toml: arrivals: .*t.csv: row 2, column 'time': unparseable number: 'soon'$"
    ):
        from_toml('[arrivals]\nkind = "replay"\npath = "t.csv"', base_dir=tmp_path)
    with pytest.raises(TraceError, match=r"t.csv: no column 'tme' \(did you mean 'time'\?\)"):
        from_toml('[arrivals]\nkind = "replay"\npath = "t.csv"\ncolumn = "tme"', base_dir=tmp_path)


def test_every_field_is_documented() -> None:
    import dataclasses

    from traces import KINDS

    for cls in KINDS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
