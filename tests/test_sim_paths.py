"""The fast path is an accelerator of the reference SimPy model: on every shipped scenario the two give
byte-identical result files (the scenario's own seed and arrivals; every policy, except on the day-long
``thermal.toml``, where two of its four policies run — no-pruning, the most throttled, and ``thermal``, which
reads the physics — to keep CI under its time budget: its reference run takes ~3 minutes for all four;
the physics property test in tests/test_sim_physics.py covers ``bottleneck`` with physics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.results import write_run_dir
from edgeprune.runs import header, scenario_toml
from edgeprune.scenario import load_scenario
from sim.runner import run_scenario

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"thermal.toml": ["no-pruning", "thermal"]}  # scenario file name -> the policies compared
SHIPPED = sorted(
    p
    for p in (ROOT / "scenarios").rglob("*.toml")
    if "sweep" not in p.name and "hil" not in p.parts  # sweeps expand to these; HIL ones run on hardware
)


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "scenarios")) for p in SHIPPED])
def test_reference_and_fast_path_write_identical_results(path: Path, tmp_path: Path) -> None:
    sc = load_scenario(path, policies=POLICIES.get(path.name))
    if sc.queue.capacity is not None:
        pytest.skip("bounded queues run on the reference model only")
    dirs = {}
    for engine in ("reference", "fast"):
        results = run_scenario(sc, path=engine)
        dirs[engine] = tmp_path / engine
        write_run_dir(dirs[engine], scenario_toml=scenario_toml(sc), header=header(sc), results=results)
    ref, fast = _files(dirs["reference"]), _files(dirs["fast"])
    assert ref.keys() == fast.keys()
    assert len(ref) == 2 + 2 * len(sc.policies)
    for name in ref:
        assert ref[name] == fast[name], name
