"""Heat on the local cluster: no-pruning gets throttled, the heat-aware policy avoids most of it, and the
simulator, given the same physics, predicts both (issue #16, "must show", first item).  Root only.

    python bench/bench_hil_thermal.py                       # 3 repeats of no-pruning, thermal and bottleneck
    python bench/bench_hil_thermal.py --repeats 1 --policies no-pruning thermal bottleneck
    python bench/bench_hil_thermal.py --keep DIR            # keep the run folders (and reuse DIR/profile.json)
    python bench/bench_hil_thermal.py --rate-hz 8           # another arrival rate

What it does: starts the 4-node local cluster (``hil.local``, cgroups, 0.4 CPU per node), writes the
``RUN_VIT`` checkpoint (~70-90 ms per stage at 0.4 CPU), a cluster file in which every host is emulated
(``emulate_physics``: the coordinator's thermal emulator turns the node's measured CPU use into heat and
applies the emulated frequency as its quota), profiles the nodes once (``edgeprune-hil profile``), then runs
the scenario below ``--repeats`` times with ``edgeprune-hil run`` (each run: every policy, fresh cold nodes,
the simulator's prediction with the same physics in ``sim_vs_hw.json``) and prints per run and policy the
time throttled on the emulated hardware, p50 / p95 / p99 / SLO attainment, the simulator's prediction, the
errors against the project's bounds (p50 5 %, p95 10 %, SLO 3 points, throttled 10 %), the hardware
percentiles' 95 % intervals, the level switches on both sides, and the spread across runs.

Physics (*assumptions*, not measurements): the ``rpi4b`` preset (its sources are in the preset file) with
the thermal time constant scaled from ~120 s to ``TAU_S`` so that a run of about a minute heats up; pi2 sits
in a closed enclosure (R = ``HOT_R`` C/W), the others on a bare board (the preset's R = 10 C/W); every node
starts at its idle steady state.  Poisson arrivals at ``RATE_HZ`` keep each node ~45-55 % busy unpruned
(services of ~70-85 ms at 0.4 CPU, as fast as the shared host lets them run): pi2 then settles above 80 C
and throttles (1500 -> 1000 MHz, services ~1.47x slower), the others stay below it.  At 5 req/s (the rate
before 2026-12-03) no-pruning throttled 0-10 s of a run on a host that ran the services in ~70 ms: too
close to the threshold to show what pruning avoids; in simulation at 6 req/s it throttles 14-41 s for
service-time factors 0.9-1.15, the heat-aware policy 6-11 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE_CPUS = 0.4
TAU_S = 15.0  # assumption: scaled from the Pi 4B's ~120 s so that a 60 s run heats up
HOT_R = 14.0  # assumption: pi2 in a closed enclosure (C/W); the others keep the preset's 10
RATE_HZ = 6.0
DURATION_S = 60.0
SLO_S = 1.0
AMBIENT_C = 25.0  # the preset's
IDLE_W = 2.7  # the preset's

SCENARIO = """\
# Written by bench/bench_hil_thermal.py: Poisson {rate_hz} req/s through the 4 local nodes for {duration_s} s.
name = "hil-thermal"
seed = {seed}
duration_s = {duration_s}
warmup_s = 2.0
slo_s = {slo_s}
drain_s = 5.0
profile = "profile.json"
{devices}
{stages}
[arrivals]
kind = "poisson"
rate_hz = {rate_hz}
[[policy]]
name = "no-pruning"
kind = "static"
levels = [0, 0, 0, 0]
period_s = 0.5
[[policy]]
name = "thermal"
kind = "thermal"
period_s = 0.5
cooldown_s = 3.0
[[policy]]
name = "bottleneck"
kind = "bottleneck"
period_s = 0.5
cooldown_s = 3.0
"""


def physics_of(node: str) -> str:
    """The emulated physics of a node as a TOML inline table (see the module docstring)."""
    r = HOT_R if node == "pi2" else 10.0
    idle_c = AMBIENT_C + r * IDLE_W
    thermal = f"resistance_c_per_w = {r}, time_constant_s = {TAU_S}, initial_c = {idle_c:.2f}"
    return f'{{ preset = "rpi4b", thermal = {{ {thermal} }} }}'


def physics_table(node: str) -> Any:
    """:func:`physics_of` as the validated physics."""
    from edgeprune.config import Ctx
    from edgeprune.physics import device_physics_from_table

    return device_physics_from_table(tomllib.loads(f"x = {physics_of(node)}")["x"], Ctx("bench_hil_thermal"))


def scenario_text(seed: int, rate_hz: float = RATE_HZ) -> str:
    """The scenario (its devices carry no physics: the run gives each stage its host's emulated physics)."""
    devices = "\n".join(f'[[device]]\nname = "pi{k}"\nprofile_device = "local"' for k in range(1, 5))
    stages = "\n".join(f'[[stage]]\nname = "s{k}"\ndevice = "pi{k + 1}"' for k in range(4))
    return SCENARIO.format(
        seed=seed, duration_s=DURATION_S, slo_s=SLO_S, rate_hz=rate_hz, devices=devices, stages=stages
    )


def cluster_file(cluster: Any, root: Path) -> Path:
    """Every host emulated, its readings in files in its own folder (where its worker reads them)."""
    from hil.local import RUN_VIT, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(root / "model", RUN_VIT)
    extra = {
        n.name: f'thermal_zone_file = "{n.dir / "temp"}"\ncpu_freq_file = "{n.dir / "freq"}"\n'
        f"emulate_physics = {physics_of(n.name)}"
        for n in cluster.nodes
    }
    path = root / "pis.toml"
    path.write_text(cluster.cluster_toml(ckpt, cpu_quota=BASE_CPUS, slowdown="stress", host_extra=extra))
    return path


def run_once(
    cluster_toml: Path, folder: Path, profile: Path, policies: list[str], seed: int, rate_hz: float = RATE_HZ
) -> dict[str, Any]:
    """One ``edgeprune-hil run`` of every policy; its comparison document."""
    from hil.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, folder / "profile.json")
    sc = folder / "hil-thermal.toml"
    sc.write_text(scenario_text(seed, rate_hz))
    out = folder / "run"
    cmd = ["--cluster", str(cluster_toml), "run", str(sc), "--out", str(out), "--profile", str(profile)]
    for p in policies:
        cmd += ["--policy", p]
    if main(cmd) != 0:
        raise SystemExit(f"run in {folder} failed")
    return dict(json.loads((out / "sim_vs_hw.json").read_text()))


def recompare(folder: Path) -> dict[str, Any]:
    """The comparison of a kept run folder again, with this checkout's ``hil.compare`` (the hop probe's overhead
    as the run measured it); written beside the run's own as ``sim_vs_hw.recomputed.json``."""
    from hil.calibrate import load_run
    from hil.compare import sim_vs_hw, to_json

    run = folder / "run"
    sc, results = load_run(run)
    if all(d.physics is None for d in sc.devices):  # folders kept before scenario.toml carried the physics
        sc = replace(sc, devices=tuple(replace(d, physics=physics_table(d.name)) for d in sc.devices))
    old = json.loads((run / "sim_vs_hw.json").read_text())
    emulated = {d.name: d.physics.preset for d in sc.devices if d.physics is not None}
    doc = sim_vs_hw(sc, list(results.values()), old["hop_probe"]["overhead_s"], emulated)
    doc["hop_probe"] = old["hop_probe"]
    (folder / "sim_vs_hw.recomputed.json").write_text(to_json(doc))
    return doc


def _pct(v: float | None, unit: str = "%") -> str:
    return "-" if v is None else f"{v:+.1f}{unit}"


def row_text(policy: str, rows: dict[str, Any]) -> str:
    """One line: hardware throttled time, percentiles and SLO, each with the prediction's error."""
    th = rows.get("throttled_s") or {}
    hw_s, sim_s = th.get("hw") or 0.0, th.get("sim") or 0.0
    parts = [f"{policy:<12} throttled hw {hw_s:6.1f} s sim {sim_s:6.1f} s ({_pct(th.get('error'))})"]
    for m, name in (("p50_latency_s", "p50"), ("p95_latency_s", "p95"), ("p99_latency_s", "p99")):
        r = rows[m]
        flag = "!" if r.get("interval_within_bound") is False else ""
        parts.append(f"{name} {r['hw'] * 1000:6.0f} ms ({_pct(r['error'])}{flag})")
    r = rows["slo_attainment"]
    parts.append(f"SLO {r['hw'] * 100:5.1f}% ({_pct(r['error'], ' pt')}) n={r['n_hw']}")
    sw = rows.get("switches")
    if sw is not None:
        parts.append(f"switches hw {sw['hw']} sim {sw['sim']}")
    return "  ".join(parts)


def policies_of(doc: dict[str, Any], table: str) -> dict[str, Any]:
    """The per-policy rows of the as-stated (``policies``) or the ``as_realised`` table."""
    return dict(doc["policies"] if table == "policies" else doc.get(table, {}).get("policies", {}))


def spread_text(policy: str, docs: list[dict[str, Any]], table: str) -> str:
    """Across runs: min..max of each error and how many runs met each bound; the hardware's throttled time."""
    rows = [policies_of(d, table)[policy] for d in docs if policy in policies_of(d, table)]
    if not rows:
        return f"{policy:<12} (no runs)"
    out = [f"{policy:<12}"]
    for m in ("throttled_s", "p50_latency_s", "p95_latency_s", "p99_latency_s", "slo_attainment"):
        errs = [r[m]["error"] for r in rows if m in r and r[m]["error"] is not None]
        met = [r[m].get("within_bound") for r in rows if m in r]
        ok = sum(1 for x in met if x)
        shown = f"{min(errs):+.1f}..{max(errs):+.1f}" if errs else "-"
        bound = f" met {ok}/{len(met)}" if any(x is not None for x in met) else ""
        out.append(f"{m.split('_')[0]} err {shown}{bound}")
    hw_th = [r["throttled_s"]["hw"] for r in rows if "throttled_s" in r and r["throttled_s"]["hw"] is not None]
    if hw_th:
        out.append(f"hw throttled {statistics.mean(hw_th):.1f} s (range {min(hw_th):.1f}..{max(hw_th):.1f})")
    return "  ".join(out)


def main() -> int:
    """Start the cluster, profile, run the repeats, print the figures; stop the cluster whatever happens."""
    from hil.local import cgroup_missing, missing, start_local_cluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", nargs="+", default=["no-pruning", "thermal", "bottleneck"])
    ap.add_argument("--first-seed", type=int, default=21, help="run i uses seed first + i (fresh arrivals)")
    ap.add_argument("--rate-hz", type=float, default=RATE_HZ, help="Poisson arrival rate (req/s)")
    ap.add_argument("--keep", type=Path, help="keep the run folders here (and reuse its profile.json)")
    ap.add_argument("--compare-only", type=Path, help="no cluster: redo the comparison of DIR/run*/ (a --keep DIR)")
    args = ap.parse_args()
    if args.compare_only is not None:
        docs = [
            recompare(f) for f in sorted(args.compare_only.glob("run[0-9]*")) if (f / "run" / "sim_vs_hw.json").exists()
        ]
        print_figures(docs, args.policies)
        return 0
    why = missing() or cgroup_missing()
    if why is not None:
        print(f"bench_hil_thermal: cannot start the local cluster: {why}", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-hil-thermal-"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = start_local_cluster(4, cgroups=True)
    docs: list[dict[str, Any]] = []
    try:
        ctoml = cluster_file(cluster, cluster.root)
        profile = work / "profile.json"
        if not profile.exists():
            from hil.cli import main as hil_main

            t0 = time.perf_counter()
            cmd = ["--cluster", str(ctoml), "profile", "--out", str(profile), "--samples", "20", "--warmup", "3"]
            if hil_main(cmd) != 0:
                return 1
            print(f"profiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for i in range(args.repeats):
            t0 = time.perf_counter()
            doc = run_once(ctoml, work / f"run{i + 1}", profile, args.policies, args.first_seed + i, args.rate_hz)
            docs.append(doc)
            print(f"run {i + 1} took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        left = cluster.stop()
        if left:
            print(f"bench_hil_thermal: processes left on the nodes: {left}", file=sys.stderr)
    print_figures(docs, args.policies)
    print(f"\nrun folders: {work}" if args.keep else "")
    return 0


def print_figures(docs: list[dict[str, Any]], policies: list[str]) -> None:
    """Per run and policy, then the spread across runs; as stated and as realised."""
    for table in ("policies", "as_realised"):
        title = "as stated (the scenario + the emulated physics)" if table == "policies" else "as realised"
        print(f"\n{title}: hardware figure (error = (hw - sim) / sim; '!' = the 95% interval is wider than the bound)")
        for i, doc in enumerate(docs):
            for policy, rows in policies_of(doc, table).items():
                print(f"run {i + 1}  " + row_text(policy, rows))
        print("spread across runs:")
        for policy in policies:
            print("  " + spread_text(policy, docs, table))


if __name__ == "__main__":
    raise SystemExit(main())
