"""Open-loop interference on the local cluster: one node slowed by a co-located ``stress-ng`` that nobody retunes,
and the simulator's prediction of it (issue #16, "must show", second item).  Root only.

    python bench/bench_hil_stress.py                        # 3 repeats of no-pruning and dynamic, stated 2x
    python bench/bench_hil_stress.py --repeats 2 --slowdown 3.0
    python bench/bench_hil_stress.py --keep DIR             # keep the run folders (and reuse DIR's profiles)

What it does: starts the 4-node local cluster (``hil.local``, cgroups, 0.4 CPU per node), writes the ``RUN_VIT``
checkpoint (~90 ms per stage at 0.4 CPU) and a cluster file with ``slowdown = "stress"``, profiles the nodes
clean (``edgeprune-hil profile``) and with ``stress-ng`` on the slowed node (``profile --under stress:N
--node pi2 --baseline CLEAN``: its per-level interference factors), then runs ``scenarios/hil/bursty-4node.toml``
with its slowdown set to ``--slowdown`` (realised as ``stress-ng --cpu round(slowdown - 1)`` on pi2 from
t = 30 s, open-loop) ``--repeats`` times with ``edgeprune-hil run --under-profile`` and prints per run and
policy the hardware's p50 / p95 / p99 / SLO attainment with the errors of three predictions against the
project's bounds (p50 5 %, p95 10 %, SLO 3 points): *as stated* (the scenario's factor), *as profiled under
interference* (the factors ``profile --under`` measured before the run) and *as realised* (the factors the run
measured), the factor stated / realised on pi2, and the spread across runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "hil" / "bursty-4node.toml"
BASE_CPUS = 0.4
SLOWED = "pi2"
TABLES = {
    "policies": "as stated (the scenario's slowdown factor)",
    "as_profiled": "as profiled under interference (profile --under, measured before the run)",
    "as_realised": "as realised (the factors the run measured)",
}


def scenario_text(slowdown: float, seed: int) -> str:
    """``bursty-4node.toml`` with pi2's slowdown set to ``slowdown`` and the seed to ``seed``."""
    text = SCENARIO.read_text()
    for old, new in (("slowdown = 2.0", f"slowdown = {slowdown!r}"), ("seed = 11", f"seed = {seed}")):
        if old not in text:
            raise SystemExit(f"bench_hil_stress: {SCENARIO} no longer holds {old!r}")
        text = text.replace(old, new, 1)
    return text


def cluster_file(cluster: Any, root: Path) -> Path:
    """RUN_VIT, 0.4 CPU per node, every slowdown realised by ``stress-ng`` (open-loop)."""
    from hil.local import RUN_VIT, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(root / "model", RUN_VIT)
    path = root / "pis.toml"
    path.write_text(cluster.cluster_toml(ckpt, cpu_quota=BASE_CPUS, slowdown="stress"))
    return path


def profiles(ctoml: Path, work: Path, stress_cpus: int) -> tuple[Path, Path]:
    """The clean profile and the interference file (``profile --under stress:N --node pi2``); reused if there."""
    from hil.cli import main as hil_main

    clean, under = work / "profile.json", work / f"under-stress{stress_cpus}.json"
    base = ["--cluster", str(ctoml), "profile", "--samples", "20", "--warmup", "3"]
    if not clean.exists():
        t0 = time.perf_counter()
        if hil_main([*base, "--out", str(clean)]) != 0:
            raise SystemExit("bench_hil_stress: the clean profile failed")
        print(f"profiled clean in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not under.exists():
        t0 = time.perf_counter()
        cmd = [*base, "--out", str(under), "--under", f"stress:{stress_cpus}", "--node", SLOWED]
        if hil_main([*cmd, "--baseline", str(clean)]) != 0:
            raise SystemExit("bench_hil_stress: the profile under interference failed")
        print(f"profiled under stress:{stress_cpus} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return clean, under


def run_once(
    ctoml: Path, folder: Path, clean: Path, under: Path, policies: list[str], slowdown: float, seed: int
) -> dict[str, Any]:
    """One ``edgeprune-hil run`` of every policy; its comparison document."""
    from hil.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(clean, folder / "local-cluster.json")
    sc = folder / "bursty-stress.toml"
    sc.write_text(scenario_text(slowdown, seed))
    out = folder / "run"
    cmd = ["--cluster", str(ctoml), "run", str(sc), "--out", str(out), "--profile", str(clean)]
    cmd += ["--under-profile", str(under)]
    for p in policies:
        cmd += ["--policy", p]
    if main(cmd) != 0:
        raise SystemExit(f"bench_hil_stress: run in {folder} failed")
    return dict(json.loads((out / "sim_vs_hw.json").read_text()))


def recompare(folder: Path) -> dict[str, Any]:
    """The comparison of a kept run folder again, with this checkout's ``hil.compare`` (the hop probe's overhead,
    the slowdown methods and the as-profiled factors as the run recorded them); written beside the run's own as
    ``sim_vs_hw.recomputed.json``."""
    from hil.calibrate import load_run
    from hil.compare import as_profiled, sim_vs_hw, stated_vs_realised, to_json

    run = folder / "run"
    sc, results = load_run(run)
    old = json.loads((run / "sim_vs_hw.json").read_text())
    idle_s = old["hop_probe"]["overhead_s"]
    doc = sim_vs_hw(sc, list(results.values()), idle_s, {})
    doc["hop_probe"] = old["hop_probe"]
    doc["slowdown_methods"] = old.get("slowdown_methods", {})
    doc["interference"] = stated_vs_realised(
        sc, list(results.values()), doc["as_realised"]["drift_factors"], doc["slowdown_methods"]
    )
    if "as_profiled" in old:
        doc["as_profiled"] = as_profiled(sc, list(results.values()), old["as_profiled"]["factors"], idle_s)
    (folder / "sim_vs_hw.recomputed.json").write_text(to_json(doc))
    return doc


def _pct(v: float | None, unit: str = "%") -> str:
    return "-" if v is None else f"{v:+.1f}{unit}"


def policies_of(doc: dict[str, Any], table: str) -> dict[str, Any]:
    """The per-policy rows of the as-stated (``policies``), ``as_profiled`` or ``as_realised`` table."""
    return dict(doc["policies"] if table == "policies" else doc.get(table, {}).get("policies", {}))


def row_text(policy: str, rows: dict[str, Any]) -> str:
    """One line: hardware percentiles and SLO, each with the prediction's error."""
    parts = [f"{policy:<11}"]
    for m, name in (("p50_latency_s", "p50"), ("p95_latency_s", "p95"), ("p99_latency_s", "p99")):
        r = rows[m]
        flag = "!" if r.get("interval_within_bound") is False else ""
        hw = "inf" if r["hw"] is None or r["hw"] == float("inf") else f"{r['hw'] * 1000:6.0f} ms"
        parts.append(f"{name} {hw} ({_pct(r['error'])}{flag})")
    r = rows["slo_attainment"]
    parts.append(f"SLO {r['hw'] * 100:5.1f}% ({_pct(r['error'], ' pt')}) n={r['n_hw']}")
    ok = rows["within_bounds"]
    parts.append("bounds " + " ".join(f"{k}:{'ok' if v else 'NO'}" for k, v in ok.items()))
    return "  ".join(parts)


def spread_text(policy: str, docs: list[dict[str, Any]], table: str) -> str:
    """Across runs: min..max of each error and how many runs met each bound."""
    rows = [policies_of(d, table)[policy] for d in docs if policy in policies_of(d, table)]
    if not rows:
        return f"{policy:<11} (no runs)"
    out = [f"{policy:<11}"]
    for m in ("p50_latency_s", "p95_latency_s", "p99_latency_s", "slo_attainment"):
        errs = [r[m]["error"] for r in rows if r[m]["error"] is not None]
        met = [r[m].get("within_bound") for r in rows]
        ok = sum(1 for x in met if x)
        shown = f"{min(errs):+.1f}..{max(errs):+.1f}" if errs else "-"
        bound = f" met {ok}/{len(met)}" if any(x is not None for x in met) else ""
        out.append(f"{m.split('_')[0]} err {shown}{bound}")
    return "  ".join(out)


def factor_text(doc: dict[str, Any]) -> list[str]:
    """Per policy, the stated and realised factor of every slowed node (``interference`` in the document)."""
    lines = []
    for policy, nodes in doc.get("interference", {}).items():
        for node, windows in nodes.items():
            shown = "; ".join(w["reason"] for w in windows if w["stated"] != 1.0)
            lines.append(f"  {policy:<11} {node}: {shown}")
    return lines


def print_figures(docs: list[dict[str, Any]], policies: list[str]) -> None:
    """Per run and policy, then the spread across runs; per table."""
    for i, doc in enumerate(docs):
        print(f"\nrun {i + 1}: the slowed node's factors (stated vs realised; per level in brackets)")
        print("\n".join(factor_text(doc)) or "  (none)")
    for table, title in TABLES.items():
        if not any(policies_of(d, table) for d in docs):
            continue
        print(f"\n{title}: hardware figure (error = (hw - sim) / sim; '!' = the 95% interval is wider than the bound)")
        for i, doc in enumerate(docs):
            for policy, rows in policies_of(doc, table).items():
                print(f"run {i + 1}  " + row_text(policy, rows))
        print("spread across runs:")
        for policy in policies:
            print("  " + spread_text(policy, docs, table))


def main() -> int:
    """Start the cluster, profile, run the repeats, print the figures; stop the cluster whatever happens."""
    from hil.local import cgroup_missing, missing, start_local_cluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slowdown", type=float, default=2.0, help="pi2's stated factor (stress-ng --cpu round(f - 1))")
    ap.add_argument("--policies", nargs="+", default=["no-pruning", "dynamic"])
    ap.add_argument("--first-seed", type=int, default=11, help="run i uses seed first + i (fresh arrivals)")
    ap.add_argument("--keep", type=Path, help="keep the run folders here (and reuse its profiles)")
    ap.add_argument("--compare-only", type=Path, help="no cluster: redo the comparison of DIR/run*/ (a --keep DIR)")
    args = ap.parse_args()
    if args.compare_only is not None:
        runs = sorted(args.compare_only.glob("run[0-9]*"))
        print_figures([recompare(f) for f in runs if (f / "run" / "sim_vs_hw.json").exists()], args.policies)
        return 0
    why = missing() or cgroup_missing()
    if why is not None:
        print(f"bench_hil_stress: cannot start the local cluster: {why}", file=sys.stderr)
        return 2
    if shutil.which("stress-ng") is None:
        print("bench_hil_stress: stress-ng not installed (apt-get install stress-ng)", file=sys.stderr)
        return 2
    stress_cpus = round(args.slowdown - 1.0)
    if stress_cpus < 1:
        print(f"bench_hil_stress: --slowdown {args.slowdown}: needs >= 1.5 (one stress-ng worker)", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-hil-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = start_local_cluster(4, cgroups=True)
    docs: list[dict[str, Any]] = []
    try:
        ctoml = cluster_file(cluster, cluster.root)
        clean, under = profiles(ctoml, work, stress_cpus)
        for i in range(args.repeats):
            t0 = time.perf_counter()
            folder = work / f"run{i + 1}"
            docs.append(run_once(ctoml, folder, clean, under, args.policies, args.slowdown, args.first_seed + i))
            print(f"run {i + 1} took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        left = cluster.stop()
        if left:
            print(f"bench_hil_stress: processes left on the nodes: {left}", file=sys.stderr)
    print_figures(docs, args.policies)
    print(f"\nrun folders: {work}" if args.keep else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
