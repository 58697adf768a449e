"""Open-loop interference on the 4-node local cluster: pi2 slowed by a co-located ``stress-ng`` that nobody
retunes (``slowdown = "stress"``), profiled under that load, and the comparison's account of it (why as stated
differs, the as-realised replay, the as-profiled table; issue #16).  Its fidelity figures are measured by
``bench/bench_hil_stress.py``, not held here (see the run test's docstring).

The cluster is the one of ``tests/test_hil_run.py`` (0.4 CPU per node, ``RUN_VIT``); the scenario is a shorter
``bursty-4node`` (``DURATION_S`` of MMPP bursts, pi2 slowed ``STATED``x from ``SLOWED_FROM_S``) so that the
whole module, profiles included, takes about two and a half minutes of wall time.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from hil_cluster import RUN_VIT, LocalCluster, capped_cluster_marks, cluster_fixtures, make_tiny_checkpoint

from hil.cli import main

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytestmark = capped_cluster_marks()

SCENARIO = Path(__file__).parents[1] / "scenarios" / "hil" / "bursty-4node.toml"
STATED = 2.0  # stress-ng --cpu 1 on pi2 (the scenario file's factor; 3x overloads no-pruning: see the README)
DURATION_S = 30.0
SLOWED_FROM_S = 15.0

cluster, no_leftovers = cluster_fixtures(4, cgroups=True)


@pytest.fixture(scope="module")
def cluster_file(cluster: LocalCluster) -> Path:
    """RUN_VIT, 0.4 CPU per node, every slowdown a co-located stress-ng (open-loop)."""
    ckpt = make_tiny_checkpoint(cluster.root / "model", RUN_VIT)
    path = cluster.root / "pis.toml"
    path.write_text(cluster.cluster_toml(ckpt, cpu_quota=0.4, slowdown="stress"))
    return path


@pytest.fixture(scope="module")
def profiles(cluster_file: Path, cluster: LocalCluster) -> tuple[Path, Path]:
    """The clean profile and the one measured with ``stress-ng --cpu 1`` on pi2 (``profile --under``)."""
    clean, under = cluster.root / "local-cluster.json", cluster.root / "under-stress1.json"
    base = ["--cluster", str(cluster_file), "profile", "--samples", "8", "--warmup", "2"]
    assert main([*base, "--out", str(clean)]) == 0
    assert main([*base, "--out", str(under), "--under", "stress:1", "--node", "pi2", "--baseline", str(clean)]) == 0
    return clean, under


def _scenario(folder: Path, clean: Path) -> Path:
    text = SCENARIO.read_text()
    for old, new in (
        ("duration_s = 60.0", f"duration_s = {DURATION_S}"),
        ("start_s = 30.0", f"start_s = {SLOWED_FROM_S}"),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "local-cluster.json").write_bytes(clean.read_bytes())
    path = folder / "bursty-stress.toml"
    path.write_text(text)
    return path


def test_profile_under_stress_slows_the_loaded_node_only(profiles: tuple[Path, Path]) -> None:
    """pi2 under a hog serves every level much slower than clean, the other nodes do not (the hog stays in
    pi2's cgroup); the factors are recorded per node and level beside what loaded which node."""
    from edgeprune.profile import load_profile

    dev = load_profile(profiles[1]).devices["local"]
    assert dev.meta["under"] == {"load": "stress-ng --cpu 1", "stress_cpus": 1, "nodes": ["pi2"]}
    factors = dev.meta["interference_factors"]
    assert list(factors) == ["pi1", "pi2", "pi3", "pi4"] and all(len(f) == 4 for f in factors.values())
    # per level against the other nodes' median, never an absolute bound: at 8 samples one ~16 ms level of a
    # clean node can read 1.5x by the host's noise alone (a fresh-clone CI run: pi3's last level 1.52), and the
    # host itself can slow between the two profiles (another: every clean node 1.23-1.52x, pi2 2.7-3.0x)
    for level, loaded in enumerate(factors["pi2"]):
        clean = statistics.median(factors[n][level] for n in ("pi1", "pi3", "pi4"))
        assert loaded > 1.5 * clean, (level, factors)


def test_open_loop_stress_run_says_why_as_stated_differs(
    cluster_file: Path, profiles: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stress load is never retuned; the comparison says why as stated misses (stated vs realised factor),
    replays the stressed window in drift slices (``hil.compare.DRIFT_SLICE_S``) and adds the as-profiled table.

    The fidelity bounds are not asserted here: on this shared 2-core host they held as realised in 7 of 12
    rows of ``bench/bench_hil_stress.py`` at a stated 2x (README, "Interference"), so a test holding them
    would fail at random; the bench measures them."""
    clean, under = profiles
    sc = _scenario(tmp_path / "sc", clean)
    out = tmp_path / "run"
    cmd = ["--cluster", str(cluster_file), "run", str(sc), "--out", str(out), "--profile", str(clean)]
    rc = main([*cmd, "--under-profile", str(under)])
    printed = capsys.readouterr()
    with capsys.disabled():
        print("\n" + printed.out)
    assert rc == 0, printed.err
    cmp = json.loads((out / "sim_vs_hw.json").read_text())
    doc = json.loads((out / "summary.json").read_text())
    for policy in ("no-pruning", "dynamic"):
        applied = doc["environment_applied"][policy]
        assert [(e["node"], e["how"]) for e in applied] == [("pi2", "stress-ng --cpu 1 (open-loop)")]
        assert "retuned" not in applied[0]  # open-loop: nothing retunes a stress load
        window = cmp["interference"][policy]["pi2"][1]
        assert (window["from_s"], window["stated"]) == (SLOWED_FROM_S, STATED)
        assert window["realised"] > 1.5  # measurably slowed, by whatever it realised
        assert window["reason"].startswith(f"from {SLOWED_FROM_S:g} s: stated {STATED:g}x, realised ")
        assert "stress-ng --cpu 1, open-loop" in window["reason"]
        assert set(cmp["as_realised"]["policies"][policy]["within_bounds"]) == {"p50", "p95", "slo"}
        assert len(window["replayed"]) >= 2  # the stressed window was replayed slice by slice
    assert set(cmp["as_profiled"]["policies"]) == {"no-pruning", "dynamic"}
    text = (out / "sim_vs_hw.txt").read_text()
    assert "why as stated differs under no-pruning: pi2 from" in text
    assert "as profiled under interference" in text
