"""The fast path is an accelerator of the reference SimPy model: on every shipped scenario the two give
byte-identical result files (every policy, the scenario's own seed and arrivals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.results import write_run_dir
from edgeprune.runs import header, scenario_toml
from edgeprune.scenario import load_scenario
from sim.runner import run_scenario

ROOT = Path(__file__).resolve().parents[1]
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
    sc = load_scenario(path)
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
