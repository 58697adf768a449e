"""Calibrate once on the cluster, then predict another scenario in simulation (issue #16, "must show", third
item).  Root only.

    python bench/bench_hil_calibrate.py                     # one pair: run A, calibrate, run B, compare
    python bench/bench_hil_calibrate.py --repeats 2 --keep DIR
    python bench/bench_hil_calibrate.py --analyse-only DIR  # no cluster: redo the fits of a --keep DIR

What it does: starts the 4-node local cluster (``hil.local``, cgroups, ``BASE_CPUS`` CPU per node), writes
the ``RUN_VIT`` checkpoint, a cluster file in which every host runs the thermal emulator with the *true*
physics below (deliberately not the ``rpi4b`` preset: another ambient, and R / tau per node, so calibrate has
to find them), profiles the nodes once, then per repeat:

1. runs scenario A (Poisson arrivals at ``RATE_A_HZ``; no-pruning and thermal) with ``edgeprune-hil run``;
2. ``edgeprune-hil calibrate`` on A's folder (R, tau, ambient, alpha per node, the time per request outside
   the services);
3. runs scenario B (a different arrival process and load: MMPP switching between ``RATES_B_HZ``; the same
   policies) and compares the simulator's prediction *from the calibrated fragment* (not from the true
   physics: B's scenario with every node's physics replaced by the fitted one) against B's measurement:
   p50 / p95 / SLO attainment / time throttled against the bounds (5 %, 10 %, 3 points, 10 %).

It prints the recovered parameters beside the emulator's true ones for each power source of the thermal fit
(``hil.calibrate``): ``busy`` (the default: the power model at each period's measured busy time and
frequency, from the timeline alone, as on a real node without a meter), ``timeline`` (the timeline's
``power_w``: the model at the capped cgroup's CPU time — shown to be the wrong power for an emulated node)
and ``emulator`` (the emulator's own records: a check that the fit is exact on exact data), and the holdout
errors per policy and metric; with ``--repeats`` the spread.

Physics (*assumptions*, not measurements): the ``rpi4b`` preset's power model, ladder and governor, with the
thermal time constant scaled from ~120 s to 12-20 s so that a 60 s run shows the heating transient several
times over (the fit needs the temperature to move: a tau much longer than the run leaves R and tau
confounded), the ambient at 30 C instead of the preset's 25 C, and per node R / tau in ``TRUE``; every node
starts at its idle steady state.  At ``RATE_A_HZ`` pi2 (R = 13.5 C/W) heats past 80 C and throttles, the others
stay below it; at 1000 MHz pi2 settles near 80 C, inside the governor's 78-82 C band, so it stays there (with
R = 16 it fell to 750 MHz and its queue grew without bound: a regime no model predicts to 5 %).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE_CPUS = 0.4
AMBIENT_C = 30.0  # assumption: a warm room (the preset says 25 C)
IDLE_W = 2.7  # the rpi4b preset's idle power (W), for the idle steady state the nodes start at
TRUE: dict[str, tuple[float, float]] = {  # node -> (R C/W, tau s), assumptions (see the module docstring)
    "pi1": (9.0, 18.0),
    "pi2": (13.5, 15.0),
    "pi3": (9.0, 20.0),
    "pi4": (8.0, 15.0),
}
RATE_A_HZ = 5.0
RATES_B_HZ = (3.0, 6.0)  # MMPP states (req/s)
DWELL_B_S = (12.0, 12.0)
DURATION_S = 60.0
SLO_S = 0.6
POLICIES = ("no-pruning", "thermal")
BOUNDS = {"p50_latency_s": 5.0, "p95_latency_s": 10.0, "slo_attainment": 3.0, "throttled_error_pct": 10.0}

HEAD = """\
# Written by bench/bench_hil_calibrate.py: scenario {name} through the 4 local nodes for {duration_s} s.
name = "{name}"
seed = {seed}
duration_s = {duration_s}
warmup_s = 2.0
slo_s = {slo_s}
drain_s = 5.0
profile = "profile.json"
"""
POLICY_TOML = """\
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
"""
ARRIVALS_A = f'[arrivals]\nkind = "poisson"\nrate_hz = {RATE_A_HZ}\n'
ARRIVALS_B = f'[arrivals]\nkind = "mmpp"\nrates_hz = {list(RATES_B_HZ)}\nmean_dwell_s = {list(DWELL_B_S)}\n'


def physics_of(node: str) -> str:
    """The emulated (true) physics of a node as a TOML inline table."""
    r, tau = TRUE[node]
    idle_c = AMBIENT_C + r * IDLE_W
    thermal = f"resistance_c_per_w = {r}, time_constant_s = {tau}, ambient_c = {AMBIENT_C}, initial_c = {idle_c:.2f}"
    return f'{{ preset = "rpi4b", thermal = {{ {thermal} }} }}'


def scenario_text(name: str, seed: int, arrivals: str) -> str:
    """A scenario (its devices carry no physics: the run gives each stage its host's emulated physics)."""
    devices = "\n".join(f'[[device]]\nname = "pi{k}"\nprofile_device = "local"' for k in range(1, 5))
    stages = "\n".join(f'[[stage]]\nname = "s{k}"\ndevice = "pi{k + 1}"' for k in range(4))
    head = HEAD.format(name=name, seed=seed, duration_s=DURATION_S, slo_s=SLO_S)
    return "\n".join([head, devices, stages, arrivals, POLICY_TOML])


def cluster_file(cluster: Any, root: Path) -> Path:
    """Every host emulated with its true physics; its readings in files in its own folder."""
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


def run_scenario(cluster_toml: Path, folder: Path, profile: Path, text: str) -> Path:
    """One ``edgeprune-hil run`` of every policy of ``text``; its run folder."""
    from hil.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, folder / "profile.json")
    sc = folder / "scenario-in.toml"
    sc.write_text(text)
    out = folder / "run"
    cmd = ["--cluster", str(cluster_toml), "run", str(sc), "--out", str(out), "--profile", str(profile)]
    if main(cmd) != 0:
        raise SystemExit(f"run in {folder} failed")
    return out


def analyse(pair: Path) -> dict[str, Any]:
    """Calibrate on ``pair/a/run`` (CLI, fragment in ``pair/calibrated.toml``), predict ``pair/b/run``; the
    fitted values from both power sources beside the true ones, and the holdout errors."""
    from hil.calibrate import calibrate, holdout_errors, load_run
    from hil.cli import main

    run_a, run_b = pair / "a" / "run", pair / "b" / "run"
    if main(["calibrate", str(run_a), "--out", str(pair / "calibrated.toml"), "--holdout", str(run_b)]) != 0:
        raise SystemExit(f"calibrate {run_a} failed")
    sc, _ = load_run(run_a)
    doc: dict[str, Any] = {"fits": {}, "holdout": {}, "true": {}}
    for d in sc.devices:  # the emulated physics the run gave each host (hil.compare.with_cluster_physics)
        if d.physics is not None:
            th = d.physics.thermal
            doc["true"][d.name] = [th.resistance_c_per_w, th.tau_s, th.ambient_c, d.physics.dvfs.alpha]
    for source in ("busy", "timeline", "emulator"):
        cal = calibrate(run_a, power=source)
        doc["fits"][source] = {
            d: {k: f.value for k, f in th.items()} | ({"alpha": cal.alpha[d].value} if d in cal.alpha else {})
            for d, th in cal.thermal.items()
        }
        doc["fits"][source]["hop_latency_s"] = cal.hop_latency_s
        doc["holdout"][source] = holdout_errors(cal, run_b)["policies"]
    (pair / "analysis.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def fits_text(doc: dict[str, Any]) -> list[str]:
    """Recovered vs true, per power source and node."""
    lines = []
    for source, fits in doc["fits"].items():
        lines.append(f"  fitted with power from the {source}  (hop latency {fits.get('hop_latency_s') or 0:.4f} s)")
        for node, (r, tau, ambient_c, alpha) in doc["true"].items():
            f = fits.get(node)
            if f is None:
                lines.append(f"    {node}: not fitted")
                continue
            lines.append(
                f"    {node}: R {f['resistance_c_per_w']:6.2f} (true {r:5.1f}, {_rel(f['resistance_c_per_w'], r)})  "
                f"tau {f['time_constant_s']:6.2f} s (true {tau:4.1f}, {_rel(f['time_constant_s'], tau)})  "
                f"ambient {f['ambient_c']:6.2f} C (true {ambient_c:.1f})  alpha {f.get('alpha', float('nan')):.3f} "
                f"(true {alpha})"
            )
    return lines


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} sd {statistics.stdev(values):.2f}"


def _rel(v: float, true: float) -> str:
    return f"{(v - true) / true * 100:+.1f}%"


def holdout_text(doc: dict[str, Any]) -> list[str]:
    """Per power source and policy: each error against its bound."""
    lines = []
    for source, policies in doc["holdout"].items():
        lines.append(f"  scenario B predicted from the {source} fit (error = (hw - sim) / sim; pt for SLO)")
        for policy, e in policies.items():
            parts = []
            for m, bound in BOUNDS.items():
                v = e.get(m)
                ok = "-" if v is None else ("ok" if abs(v) <= bound else "MISS")
                parts.append(f"{m.split('_')[0]} {'-' if v is None else f'{v:+.1f}'} ({ok})")
            th = f"throttled hw {e.get('throttled_s', 0):.1f} s sim {e.get('throttled_s_predicted', 0):.1f} s"
            lines.append(f"    {policy:<11} " + "  ".join(parts) + f"  {th}  temp rmse {e.get('temp_rmse_c', 0):.2f} C")
    return lines


def spread_text(docs: list[dict[str, Any]]) -> list[str]:
    """Across pairs: min..max of each holdout error and how many met the bound (emulator-power fit)."""
    lines = ["spread across pairs (the default fit: power from the measured busy time):"]
    for policy in POLICIES:
        rows = [d["holdout"]["busy"][policy] for d in docs if policy in d["holdout"]["busy"]]
        parts = []
        for m, bound in BOUNDS.items():
            vals = [r[m] for r in rows if r.get(m) is not None]
            if vals:
                met = sum(abs(v) <= bound for v in vals)
                parts.append(f"{m.split('_')[0]} {min(vals):+.1f}..{max(vals):+.1f} met {met}/{len(vals)}")
        lines.append(f"  {policy:<11} " + "  ".join(parts))
    for node in TRUE:
        fits = [d["fits"]["busy"][node] for d in docs if node in d["fits"]["busy"]]
        if len(fits) > 1:
            keys = ("resistance_c_per_w", "time_constant_s", "ambient_c")
            parts = [f"{k.split('_')[0]} {_mean_sd([f[k] for f in fits])}" for k in keys]
            lines.append(f"  {node} fitted over pairs: " + "  ".join(parts))
    return lines


def main() -> int:
    """Start the cluster, profile, run the pairs, print the figures; stop the cluster whatever happens."""
    from hil.local import cgroup_missing, missing, start_local_cluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="pairs (A, B) to run")
    ap.add_argument("--first-seed", type=int, default=31, help="pair i uses seeds first + 2i (A), first + 2i + 1 (B)")
    ap.add_argument("--keep", type=Path, help="keep the run folders here (and reuse its profile.json)")
    ap.add_argument("--analyse-only", type=Path, help="no cluster: redo the fits of DIR/pair*/ (a --keep DIR)")
    args = ap.parse_args()
    if args.analyse_only is not None:
        print_figures([analyse(p) for p in sorted(args.analyse_only.glob("pair[0-9]*")) if (p / "b" / "run").exists()])
        return 0
    why = missing() or cgroup_missing()
    if why is not None:
        print(f"bench_hil_calibrate: cannot start the local cluster: {why}", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-hil-calibrate-"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = start_local_cluster(4, cgroups=True)
    pairs: list[Path] = []
    try:
        ctoml = cluster_file(cluster, cluster.root)
        profile = work / "profile.json"
        if not profile.exists():
            from hil.cli import main as hil_main

            cmd = ["--cluster", str(ctoml), "profile", "--out", str(profile), "--samples", "20", "--warmup", "3"]
            if hil_main(cmd) != 0:
                return 1
        for i in range(args.repeats):
            t0 = time.perf_counter()
            pair = work / f"pair{i + 1}"
            seed = args.first_seed + 2 * i
            run_scenario(ctoml, pair / "a", profile, scenario_text("calib-a", seed, ARRIVALS_A))
            run_scenario(ctoml, pair / "b", profile, scenario_text("calib-b", seed + 1, ARRIVALS_B))
            pairs.append(pair)
            print(f"pair {i + 1} took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        left = cluster.stop()
        if left:
            print(f"bench_hil_calibrate: processes left on the nodes: {left}", file=sys.stderr)
    print_figures([analyse(p) for p in pairs])
    print(f"\nrun folders: {work}")
    return 0


def print_figures(docs: list[dict[str, Any]]) -> None:
    """Per pair: recovered vs true, the holdout errors; then the spread."""
    for i, doc in enumerate(docs):
        print(f"\npair {i + 1}: calibrated on scenario A (Poisson {RATE_A_HZ} req/s), held out scenario B (MMPP)")
        print("\n".join(fits_text(doc) + holdout_text(doc)))
    if docs:
        print("\n" + "\n".join(spread_text(docs)))


if __name__ == "__main__":
    raise SystemExit(main())
