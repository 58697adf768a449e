"""The sweep spec: key paths, axis expansion (product and zip), cell ids, and one-line errors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from simfixtures import short_scenario, write_case, write_sweep

from edgeprune.config import load_toml
from edgeprune.errors import ConfigError
from edgeprune.scenario import load_scenario, scenario_from_table
from edgeprune.sweep import load_sweep, run_cell
from edgeprune.sweep.keys import KeyPathError, parse_key, set_key

SHORT = short_scenario(60, slowed_s=(20, 40))


def _sweep(folder: Path, body: str) -> Path:
    return write_sweep(folder, 'base = "case/scenario.toml"\n' + body, SHORT)


# --- key paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "tokens"),
    [
        ("seed", ("seed",)),
        ("arrivals.rates_hz", ("arrivals", "rates_hz")),
        ("environment[0].slowdown", ("environment", 0, "slowdown")),
        ("arrivals.rates_hz[1]", ("arrivals", "rates_hz", 1)),
        ("policy.no-pruning.levels", ("policy", "no-pruning", "levels")),
        ('policy["dyn.v2"].period_s', ("policy", "dyn.v2", "period_s")),
        ("policy[dynamic].min_accuracy", ("policy", "dynamic", "min_accuracy")),
    ],
)
def test_parse_key(key: str, tokens: tuple[object, ...]) -> None:
    assert parse_key(key) == tokens


@pytest.mark.parametrize("key", ["", "a.", ".a", "a..b", "a[", "a[x y]", "a b"])
def test_parse_key_rejects_malformed(key: str) -> None:
    with pytest.raises(KeyPathError):
        parse_key(key)


def test_set_key_by_index_name_and_new_table() -> None:
    doc: dict[str, Any] = {
        "environment": [{"device": "pi2", "slowdown": 1.6}],
        "policy": [{"name": "a"}, {"name": "b", "x": 1}],
    }
    set_key(doc, parse_key("environment[0].slowdown"), 2.0)
    set_key(doc, parse_key("policy.b.x"), 5)
    set_key(doc, parse_key("queue.capacity"), 8)
    assert doc["environment"][0]["slowdown"] == 2.0
    assert doc["policy"][1]["x"] == 5
    assert doc["queue"] == {"capacity": 8}


def test_set_key_errors_name_the_closest_choice() -> None:
    doc = {"environment": [{"slowdown": 1.0}], "policy": [{"name": "dynamic"}]}
    with pytest.raises(KeyPathError, match="did you mean 'environment'"):
        set_key(doc, parse_key("enviroment[0].slowdown"), 1.0)
    with pytest.raises(KeyPathError, match="did you mean 'dynamic'"):
        set_key(doc, parse_key("policy.dynamc.min_accuracy"), 0.9)
    with pytest.raises(KeyPathError, match="out of range"):
        set_key(doc, parse_key("environment[3].slowdown"), 1.0)


# --- expansion --------------------------------------------------------------------------------------------


def test_product_order_seed_fastest_and_columns(tmp_path: Path) -> None:
    path = _sweep(
        tmp_path,
        "seeds = [0, 1]\n"
        '[[axis]]\nkey = "arrivals.rates_hz"\nname = "rates"\nvalues = [[2.0, 6.0], [3.0, 9.0]]\n'
        '[[axis]]\nkey = "environment[0].slowdown"\nvalues = [1, 2.5]\n',
    )
    sw = load_sweep(path)
    assert len(sw.cells) == 2 * 2 * 2
    assert [c.index for c in sw.cells] == list(range(8))
    assert [c.seed for c in sw.cells[:4]] == [0, 1, 0, 1]
    assert sw.cells[0].columns == (("rates", "[2.0,6.0]"), ("environment[0].slowdown", 1.0))
    assert sw.cells[2].columns[1] == ("environment[0].slowdown", 2.5)
    assert [a.kind for a in sw.axes] == ["json", "float"]
    assert len({c.cell_id for c in sw.cells}) == 8


def test_zip_groups_step_together(tmp_path: Path) -> None:
    path = _sweep(
        tmp_path,
        '[[axis]]\nkey = "environment[0].slowdown"\nvalues = [1.5, 2.0, 3.0]\nzip = "env"\n'
        '[[axis]]\nkey = "environment[0].end_s"\nvalues = [30.0, 40.0, 50.0]\nzip = "env"\n'
        '[[axis]]\nkey = "slo_s"\nvalues = [0.8, 1.0]\n',
    )
    sw = load_sweep(path)
    assert len(sw.cells) == 3 * 2
    pairs = {(c.columns[0][1], c.columns[1][1]) for c in sw.cells}
    assert pairs == {(1.5, 30.0), (2.0, 40.0), (3.0, 50.0)}


def test_cell_scenario_is_a_valid_resolved_scenario(tmp_path: Path) -> None:
    path = _sweep(tmp_path, 'policies = ["dynamic"]\n[[axis]]\nkey = "policy.dynamic.min_accuracy"\nvalues = [0.9]\n')
    cell = load_sweep(path).cells[0]
    f = tmp_path / "cell.toml"
    f.write_text(cell.scenario_toml)
    sc = load_scenario(f)
    assert [p.name for p in sc.policies] == ["dynamic"]
    assert sc.policies[0].params.min_accuracy == 0.9
    assert Path(sc.profile_path).is_absolute()


def test_a_table_and_its_file_load_the_same_scenario(tmp_path: Path) -> None:
    path = write_case(tmp_path / "case", SHORT)
    from_file = load_scenario(path)
    from_table = scenario_from_table(load_toml(path), path, path.parent)
    assert from_table == from_file
    assert from_table.source == path and from_table.name == "scenario"


def test_a_table_error_names_its_source_key_and_value(tmp_path: Path) -> None:
    table = load_toml(write_case(tmp_path / "case", SHORT))
    table["slo_s"] = -1.0
    with pytest.raises(ConfigError) as info:
        scenario_from_table(table, "sweep.toml: with slo_s = -1.0", tmp_path / "case")
    assert str(info.value).startswith("sweep.toml: with slo_s = -1.0: slo_s = -1.0: must be > 0"), info.value
    table["slo_s"], table["profile"] = 1.0, "nowhere.json"  # relative paths resolve against base_dir
    with pytest.raises(ConfigError, match=r"^src: profile = 'nowhere.json': "):
        scenario_from_table(table, "src", tmp_path / "case")


def test_cells_are_validated_and_run_without_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweep cells go through the scenario loader in memory: making any temporary file fails the test."""

    def no_temp(*_: object, **__: object) -> str:
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr(tempfile, "mkdtemp", no_temp)
    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    path = _sweep(tmp_path, '[[axis]]\nkey = "slo_s"\nvalues = [0.8, 1.0]\n')
    sw = load_sweep(path)
    outcome = run_cell(sw.cells[1])
    assert outcome.error is None, outcome.traceback
    assert outcome.rows is not None and outcome.rows["slo_s"].to_list() == [1.0] * outcome.rows.height


def test_cell_ids_survive_a_move_and_follow_the_profile(tmp_path: Path) -> None:
    body = 'seeds = [0, 1]\n[[axis]]\nkey = "slo_s"\nvalues = [0.8, 1.0]\n'
    a = [c.cell_id for c in load_sweep(_sweep(tmp_path / "a", body)).cells]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert [c.cell_id for c in load_sweep(tmp_path / "b" / "sweep.toml").cells] == a
    write_case(tmp_path / "b" / "case", SHORT, base_s=0.09)  # other latencies: other results
    assert not set(c.cell_id for c in load_sweep(tmp_path / "b" / "sweep.toml").cells) & set(a)


def test_profile_axis_paths_are_relative_to_the_sweep_file(tmp_path: Path) -> None:
    path = _sweep(tmp_path, '[[axis]]\nkey = "profile"\nvalues = ["case/profile.json", "other/profile.json"]\n')
    write_case(tmp_path / "other", SHORT, base_s=0.05)
    sw = load_sweep(path)
    assert str((tmp_path / "other" / "profile.json").resolve()) in sw.cells[1].scenario_toml


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[axis]]\nkey = "arrivals.rate_hz"\nvalues = [2.0]\n', "did you mean 'rates_hz'"),
        ('[[axis]]\nkey = "enviroment[0].slowdown"\nvalues = [2.0]\n', "did you mean 'environment'"),
        ('[[axis]]\nkey = "policy.dynamc.min_accuracy"\nvalues = [0.9]\n', "did you mean 'dynamic'"),
        ('[[axis]]\nkey = "sloo_s"\nvalues = [1.0]\n', "did you mean 'slo_s'"),
        ('[[axis]]\nkey = "seed"\nvalues = [1]\n', "seeds = [...]"),
        ('[[axis]]\nkey = "slo_s"\nname = "policy"\nvalues = [1.0]\n', "clashes"),
        ('[[axis]]\nkey = "slo_s"\nvalues = [-1.0]\n', "slo_s = -1.0: must be > 0"),
        ('[[axis]]\nkey = "slo_s"\nvalues = []\n', "need at least one value"),
        ('[[axis]]\nkey = "slo_s"\nvalue = [1.0]\n', "did you mean 'values'"),
        ('policies = ["dynamc"]\n', "did you mean 'dynamic'"),
        ("seeds = [1, 1]\n", "appears twice"),
        ('keep_runs = "some"\n', "did you mean"),
        (
            '[[axis]]\nkey = "slo_s"\nvalues = [1.0, 2.0]\nzip = "z"\n'
            '[[axis]]\nkey = "warmup_s"\nvalues = [1.0]\nzip = "z"\n',
            "as many values",
        ),
        ('[[axis]]\nkey = "warmup_s"\nvalues = [5.0, 100.0]\n', "warmup_s = 100.0: must be < duration_s"),
    ],
)
def test_errors_are_one_line_naming_the_sweep_file(tmp_path: Path, body: str, needle: str) -> None:
    path = _sweep(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)), msg
    assert needle in msg, msg


def test_missing_base_is_named(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('base = "nope.toml"\n')
    with pytest.raises(ConfigError, match="base scenario not found"):
        load_sweep(p)


EXAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "sweep-example.toml"


def test_example_spec_is_valid_over_a_stand_in_base(tmp_path: Path) -> None:
    """The shipped example, over the test scenario standing in for scenarios/bursty.toml (same key shape)."""
    write_case(tmp_path, SHORT)
    (tmp_path / "scenario.toml").rename(tmp_path / "bursty.toml")
    shutil.copy(EXAMPLE, tmp_path / "sweep-example.toml")
    sw = load_sweep(tmp_path / "sweep-example.toml")
    assert len(sw.cells) == 18 and [a.column for a in sw.axes] == ["rates_hz", "slowdown"]


@pytest.mark.skipif(not (EXAMPLE.parent / "bursty.toml").is_file(), reason="scenarios/bursty.toml not written yet")
def test_example_spec_is_valid_over_the_shipped_base() -> None:
    assert len(load_sweep(EXAMPLE).cells) == 18
