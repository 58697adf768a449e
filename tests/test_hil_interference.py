"""Open-loop interference without a cluster: the per-level factors of a profile measured under a co-located
load, which scenario devices they apply to, the as-profiled prediction, and the stated-vs-realised reason
(the simulator stands in for the hardware)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from simfixtures import short_scenario, write_case

from edgeprune.errors import ConfigError, ProfileError
from edgeprune.profile import Profile
from edgeprune.scenario import Scenario, load_scenario
from hil.cluster import ClusterSpec, load_cluster
from hil.profiling import Interference


def _cluster(tmp_path: Path, slowdown: str = "stress") -> ClusterSpec:
    """Four hosts n1..n4 named like the profile device ``cpu``'s cluster, stage s<k> on n<k+1>."""
    lines = ['name = "cpu"', "[coordinator]", 'listen_address = "10.0.0.1"', "[model]", 'checkpoint = "t.pt"']
    for i in range(1, 5):
        lines += ["[[host]]", f'name = "n{i}"', f'address = "10.0.0.{i}"', 'python = "p"', 'workdir = "/w"']
        lines += [f'slowdown = "{slowdown}"', f'cpu_cgroup = "/sys/fs/cgroup/cpu/n{i}"']
    for k in range(4):
        lines += ["[[stage]]", f'name = "s{k}"', f'host = "n{k + 1}"']
    path = tmp_path / "pis.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_cluster(path)


def _scenario(tmp_path: Path, duration_s: int = 120, slowed_s: tuple[int, int] = (40, 80)) -> Scenario:
    """:func:`short_scenario`: pi2 (stages s1, s3) slowed 1.6x (one stress-ng hog) in ``slowed_s``."""
    return load_scenario(write_case(tmp_path / "case", short_scenario(duration_s, slowed_s=slowed_s)))


def _under(clean: Profile, per_level: dict[int, list[float]], load: Interference) -> Profile:
    """``clean`` with stage ``k``'s samples scaled per level by ``per_level[k]`` and ``meta["under"]`` set, as
    ``profile --under`` writes it (nodes n1..n4 for stages 0..3)."""
    dev = clean.devices["cpu"]
    rows = [
        tuple(tuple(x * per_level.get(k, [1.0] * len(lv))[i] for x in s) for i, s in enumerate(lv))
        for k, lv in enumerate(dev.latency_s)
    ]
    meta = {"nodes": ["n1", "n2", "n3", "n4"], "under": load.meta()}
    return replace(clean, devices={"cpu": replace(dev, latency_s=tuple(rows), meta=meta)})


def test_interference_factors_are_per_node_and_level(tmp_path: Path) -> None:
    from hil.profiling import interference_factors, profiled_interference

    clean = _scenario(tmp_path).profile
    shape = [1.8 + 0.2 * lv for lv in range(clean.n_levels)]  # pruned levels slowed more, as on the local cluster
    under = _under(clean, {1: shape}, Interference(1, ("n2",)))
    assert profiled_interference(under) == ("cpu", Interference(1, ("n2",)))
    got = interference_factors(clean, under)
    assert list(got) == ["n1", "n2", "n3", "n4"]
    assert got["n2"] == pytest.approx(shape)
    assert got["n1"] == pytest.approx([1.0] * clean.n_levels)  # unloaded nodes: the clean means
    with pytest.raises(ProfileError, match=r"meta\.under: missing"):
        profiled_interference(clean)


def test_parse_under_names_what_is_wrong(tmp_path: Path) -> None:
    from hil.profiling import parse_under

    cluster = _cluster(tmp_path)
    assert parse_under("stress:2", cluster, None) == Interference(2, ("n1", "n2", "n3", "n4"))
    assert parse_under("stress:1", cluster, ["n2", "n2"]) == Interference(1, ("n2",))
    for bad in ("stress:0", "stress", "cpu:2", "stress:x"):
        with pytest.raises(ConfigError, match=r"expected stress:N"):
            parse_under(bad, cluster, None)
    with pytest.raises(ConfigError, match=r"--node 'pi9': not a stage host"):
        parse_under("stress:1", cluster, ["pi9"])


def test_with_interference_applies_only_where_the_run_starts_that_load(tmp_path: Path) -> None:
    """pi2 stands for n2 and n4 (stages s1, s3); its stated 1.6x starts one hog.  A profile under one hog on
    both applies to pi2, per stage; under two hogs, or on a host that slows by quota, it applies nowhere."""
    from hil.profiling import with_interference

    sc = _scenario(tmp_path)
    shape = [1.8 + 0.2 * lv for lv in range(sc.profile.n_levels)]
    one_hog = _under(sc.profile, {1: shape, 3: shape}, Interference(1, ("n2", "n4")))
    got = with_interference(sc, _cluster(tmp_path), one_hog)
    assert list(got) == ["pi2"] and list(got["pi2"]) == ["s1", "s3"]
    assert got["pi2"]["s1"] == pytest.approx(shape)
    assert with_interference(sc, _cluster(tmp_path), replace_load(one_hog, Interference(2, ("n2", "n4")))) == {}
    assert with_interference(sc, _cluster(tmp_path), replace_load(one_hog, Interference(1, ("n2",)))) == {}
    assert with_interference(sc, _cluster(tmp_path, slowdown="cgroup"), one_hog) == {}


def replace_load(profile: Profile, load: Interference) -> Profile:
    """``profile`` claiming to be measured under ``load``."""
    from hil.profiling import replace_meta

    return replace_meta(profile, "cpu", under=load.meta())


def _stand_in(sc: Scenario, window_factor: float, shapes: dict[str, list[float]]) -> Scenario:
    """The "hardware": pi2's window at ``window_factor`` (not the stated one) and levels shaped per stage."""
    from hil.compare import with_level_shapes

    events = tuple(replace(ev, slowdown=window_factor) for ev in sc.environment)
    return with_level_shapes(replace(sc, environment=events), shapes)


def test_as_profiled_predicts_a_level_dependent_load_the_statement_misses(tmp_path: Path) -> None:
    """Stand-in hardware slows pi2 2.6x at level 0 and up to 3.8x at its last level where 1.6x is stated.  Given
    those per-level factors (as ``profile --under`` measures them), the as-profiled prediction holds the
    bounds where the as-stated one misses, and the reason names the stated and the realised factor."""
    from hil.compare import as_profiled, format_interference, realised_factors, stated_vs_realised
    from sim.runner import draw_streams, run_policy

    sc = _scenario(tmp_path, duration_s=200, slowed_s=(60, 200))
    measured = [2.6 + 0.2 * lv for lv in range(sc.profile.n_levels)]
    shapes = {st: [f / measured[0] for f in measured] for st in ("s1", "s3")}
    truth = _stand_in(sc, measured[0], shapes)
    streams = draw_streams(sc)
    hw = [run_policy(truth, p, streams, known_profile=sc.profile) for p in sc.policies]
    stated = {p.name: run_policy(sc, p, streams) for p in sc.policies}
    doc = as_profiled(sc, hw, {"pi2": {"s1": measured, "s3": measured}}, None)
    assert doc["window_factor"] == {"pi2": pytest.approx(2.6)}
    for r in hw:
        assert all(doc["policies"][r.policy]["within_bounds"].values()), doc["policies"][r.policy]
    from hil.compare import compare

    as_stated = compare({r.policy: r for r in hw}, stated, sc.slo_s)["policies"]
    assert not all(all(as_stated[p]["within_bounds"].values()) for p in as_stated)
    factors = {r.policy: realised_factors(sc, r) for r in hw}
    reasons = stated_vs_realised(sc, hw, factors, {"pi2": "stress-ng --cpu 1, open-loop"})
    window = reasons["no-pruning"]["pi2"][1]
    assert (window["from_s"], window["stated"]) == (60.0, 1.6)
    assert window["realised"] == pytest.approx(2.6, rel=0.05)
    assert window["per_level"][0] == pytest.approx(2.6, rel=0.05)  # no-pruning serves level 0 only
    assert window["per_level"][1:] == [None] * (sc.profile.n_levels - 1)
    assert window["reason"].startswith("from 60 s: stated 1.6x, realised 2.6")
    assert "(stress-ng --cpu 1, open-loop)" in window["reason"]
    dynamic = reasons["dynamic"]["pi2"][1]["per_level"]  # the pruned levels show their own, larger factors
    seen = [(lv, f) for lv, f in enumerate(dynamic) if f is not None]
    assert any(lv > 0 for lv, _ in seen)
    for lv, f in seen:
        assert f == pytest.approx(measured[lv], rel=0.05), (lv, dynamic)
    text = format_interference({"interference": reasons, "as_profiled": doc})
    assert "why as stated differs under no-pruning: pi2 from 60 s: stated 1.6x" in text[0]
    assert any(line.startswith("as profiled under interference") for line in text)


def test_cli_refuses_bad_interference_options_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``profile --node`` without ``--under``, a malformed ``--under``, and a ``run --under-profile`` measured
    under another load than the scenario's stress slowdown starts: one line each, exit 2, before any node is
    contacted (the cluster's addresses do not exist) and with nothing written."""
    from hil.cli import main

    sc = _scenario(tmp_path)
    cluster = tmp_path / "pis.toml"
    _cluster(tmp_path)  # writes pis.toml
    out = tmp_path / "p.json"
    cases = [
        (["profile", "--out", str(out), "--node", "n2"], "--node and --baseline go with --under stress:N"),
        (["profile", "--out", str(out), "--under", "stress:0"], "expected stress:N with N >= 1"),
    ]
    two_hogs = tmp_path / "under.json"
    _under(sc.profile, {1: [2.0] * sc.profile.n_levels}, Interference(2, ("n2", "n4"))).save(two_hogs)
    run = ["run", str(sc.source), "--out", str(tmp_path / "run"), "--under-profile", str(two_hogs)]
    cases.append((run, "no environment event of"))
    for argv, says in cases:
        rc = main(["--cluster", str(cluster), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0], err
    assert not out.exists() and not (tmp_path / "run").exists()


def _rows(times_s: list[float], served: list[int], factor: list[float], nominal_s: float = 0.1) -> pl.DataFrame:
    """Timeline rows of one stage: per period its services, each ``factor`` times its profiled ``nominal_s``."""
    return pl.DataFrame(
        {
            "time_s": times_s,
            "served": served,
            "service_time_s": [nominal_s * f for f in factor],
            "env_factor": factor,
        }
    )
