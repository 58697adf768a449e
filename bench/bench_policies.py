"""The paper's headline, reproduced and beaten in simulation: the figures of the README, in one command.

    python bench/bench_policies.py                       # scenarios/paper/, their profile
    python bench/bench_policies.py --profile P.json      # the same scenarios on another profile
    python bench/bench_policies.py --quick               # fewer rates, shorter runs (a smoke test)

Prints, for the scenarios of ``scenarios/paper/``:

1. **Decision time** per ``decide`` call of every policy (4 stages x 7 levels), from the contract checker
   (:func:`edgeprune.checker.check_policy`) on its synthetic observation sequence.
2. **Arrival-rate sweep** (the paper's Fig. 5) on ``fig5-base.toml``: SLO attainment and mean estimated
   accuracy per policy and rate; the *sustainable throughput* of a policy is the highest swept rate up to
   which every rate has >= 90 % SLO attainment; the *stressed rate* is the lowest swept rate at which
   no-pruning attains <= 30 %.
3. **The scenario set**: every ``*.toml`` of the folder (the replays read the traces shipped in
   ``traces/data/``; a scenario that cannot be loaded is an error, not a skip), per policy SLO attainment
   and accuracy.
4. **Must-show checks**, each PASS / FAIL with its numbers.

Every run uses the scenario's seed, so the output is deterministic (the decision times excepted).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeprune.checker import check_policy
from edgeprune.config import load_toml
from edgeprune.errors import EdgePruneError
from edgeprune.scenario import Scenario, load_scenario, scenario_from_table
from sim.runner import curves_for, draw_streams, run_policy
from traces import PoissonArrivals, ReplayArrivals

ROOT = Path(__file__).resolve().parent.parent
SWEEP_RATES_HZ = tuple(round(1.0 + 0.25 * i, 2) for i in range(21))  # 1.0 .. 6.0
QUICK_RATES_HZ = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
ATTAIN_OK = 0.90
STRESSED = 0.30
TOLERANCE_ACC = 5e-4  # "equal accuracy": within 0.05 points (float noise of mixed vectors)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One policy on one scenario variant."""

    slo: float
    accuracy: float
    p95_s: float
    switches: int


def load(path: Path, profile: Path | None) -> Scenario:
    """Load a scenario, optionally on another profile (its table changed in memory: no copy is written)."""
    if profile is None:
        return load_scenario(path)
    table = load_toml(path)
    table["profile"] = str(profile.resolve())
    return scenario_from_table(table, path, path.parent)


def run_all(sc: Scenario) -> dict[str, Cell]:
    """Every policy of the scenario on the same streams."""
    streams = draw_streams(sc)
    out = {}
    for spec in sc.policies:
        s = run_policy(sc, spec, streams).summary
        out[spec.name] = Cell(
            slo=float(s["slo_attainment"] or 0.0),
            accuracy=float(s["mean_accuracy"] or float("nan")),
            p95_s=float(s["p95_latency_s"] or float("nan")),
            switches=int(s["switches"]),
        )
    return out


def decision_times(sc: Scenario) -> None:
    """Section 1: the checker's per-call timings."""
    curves = curves_for(sc)
    print(f"\n## Decision time per call ({curves.n_stages} stages x {curves.n_levels} levels, contract checker)\n")
    print(f"{'policy':<12} {'kind':<11} {'median µs':>10} {'p99 µs':>9} {'max µs':>9}  contract")
    for spec in sc.policies:
        rep = check_policy(spec, curves, timing_passes=5)
        print(f"{spec.name:<12} {spec.kind:<11} {rep.median_us:>10.1f} {rep.p99_us:>9.1f} {rep.max_us:>9.1f}  OK")
        TIMES[spec.kind] = rep.median_us, rep.p99_us


TIMES: dict[str, tuple[float, float]] = {}


def sweep(sc: Scenario, rates: Sequence[float], duration_s: float | None) -> dict[float, dict[str, Cell]]:
    """Section 2: every policy at every Poisson rate."""
    out = {}
    for rate in rates:
        variant = dataclasses.replace(sc, arrivals=PoissonArrivals(rate_hz=rate))
        if duration_s is not None:
            variant = dataclasses.replace(variant, duration_s=duration_s)
        out[rate] = run_all(variant)
    names = [p.name for p in sc.policies]
    print("\n## Arrival-rate sweep (Poisson; SLO attainment % / mean accuracy)\n")
    print(f"{'rate/s':>6}  " + "  ".join(f"{n:>17}" for n in names))
    for rate, cells in out.items():
        row = "  ".join(f"{100 * cells[n].slo:>7.1f}% / {cells[n].accuracy:.4f}" for n in names)
        print(f"{rate:>6.2f}  {row}")
    return out


def sustainable_hz(table: Mapping[float, Mapping[str, Cell]], name: str) -> float:
    """Highest swept rate up to which every rate has >= 90 % attainment (0 if even the lowest fails)."""
    best = 0.0
    for rate in sorted(table):
        if table[rate][name].slo < ATTAIN_OK:
            break
        best = rate
    return best


def scenario_set(folder: Path, profile: Path | None, quick: bool) -> dict[str, dict[str, Cell]]:
    """Section 3: every scenario file of the folder."""
    out = {}
    print("\n## Scenario set (SLO attainment % / mean accuracy / switches)\n")
    for path in sorted(folder.glob("*.toml")):
        if path.name == "sweep.toml":  # a sweep spec over fig5-base.toml (edgeprune-sim sweep), not a scenario
            continue
        sc = load(path, profile)
        if quick and sc.duration_s is not None:
            sc = dataclasses.replace(sc, duration_s=min(sc.duration_s, 300.0), arrivals=_quick_arrivals(sc, 300.0))
        cells = out[path.stem] = run_all(sc)
        print(f"{path.stem}:")
        for name, c in cells.items():
            print(f"  {name:<12} {100 * c.slo:6.1f}% / {c.accuracy:.4f} / {c.switches:5d}   p95 {c.p95_s:.2f} s")
    return out


def _quick_arrivals(sc: Scenario, duration_s: float) -> Any:
    """A replay shortened on purpose (its window, not a silent cut by duration_s, which a replay refuses)."""
    arr = sc.arrivals
    if not isinstance(arr, ReplayArrivals) or arr.loop or sc.duration_s is None or sc.duration_s <= duration_s:
        return arr
    return dataclasses.replace(arr, end_s=arr.start_s + duration_s * arr.speedup, min_kept_fraction=0.0)


def must_show(
    sweep_table: Mapping[float, Mapping[str, Cell]], scen: Mapping[str, Mapping[str, Cell]], floor: float
) -> bool:
    """Section 4: the issue's must-show figures, PASS / FAIL."""
    ok_all = True

    def verdict(ok: bool, text: str) -> None:
        nonlocal ok_all
        ok_all &= ok
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")

    print("\n## Must-show\n")
    base, bott = sustainable_hz(sweep_table, "no-pruning"), sustainable_hz(sweep_table, "bottleneck")
    ratio = bott / base if base else float("inf")
    accs = [c["bottleneck"].accuracy for r, c in sweep_table.items() if r <= bott]
    acc_min = min(accs) if accs else float("nan")
    verdict(
        ratio >= 1.5 and acc_min >= floor - 1e-9,
        f"speedup: sustainable throughput bottleneck {bott:.2f}/s / no-pruning {base:.2f}/s = {ratio:.2f}x (>= 1.5x); "
        f"lowest mean accuracy up to it {acc_min:.4f} (floor {floor})",
    )
    stressed = [r for r in sorted(sweep_table) if sweep_table[r]["no-pruning"].slo <= STRESSED]
    if stressed:
        r = stressed[0]
        a, b = sweep_table[r]["no-pruning"].slo, sweep_table[r]["bottleneck"].slo
        verdict(
            b >= 3 * a,
            f"SLO attainment at the stressed rate {r:.2f}/s: bottleneck {100 * b:.1f}% vs no-pruning "
            f"{100 * a:.1f}% = " + (f"{b / a:.1f}x" if a > 0 else "unbounded (no-pruning meets none)") + " (>= 3x)",
        )
    else:
        verdict(False, "no swept rate stresses no-pruning to <= 30 % attainment")
    for sname, cells in scen.items():
        pc, bc, oc = cells["predictive"], cells["bottleneck"], cells.get("oracle")
        verdict(
            pc.slo >= bc.slo and pc.accuracy >= bc.accuracy - TOLERANCE_ACC,
            f"{sname}: predictive {100 * pc.slo:.1f}% / {pc.accuracy:.4f} vs bottleneck "
            f"{100 * bc.slo:.1f}% / {bc.accuracy:.4f} (SLO >=, accuracy >= within {TOLERANCE_ACC})",
        )
        if oc is not None:
            verdict(
                oc.slo - pc.slo <= 0.05,
                f"{sname}: predictive within 5 points of oracle ({100 * pc.slo:.1f}% vs {100 * oc.slo:.1f}%)",
            )
    for kind, limit in (("bottleneck", 50.0), ("predictive", 1000.0)):
        if kind in TIMES:
            med, p99 = TIMES[kind]
            verdict(med < limit, f"decision time {kind}: median {med:.1f} µs, p99 {p99:.1f} µs (< {limit:g} µs)")
    return ok_all


def floor_of(sc: Scenario) -> float:
    """The accuracy floor the scenario's bottleneck policy enforces."""
    for spec in sc.policies:
        if spec.kind == "bottleneck" and spec.params.min_accuracy is not None:
            return float(spec.params.min_accuracy)
    return 0.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section; exit status 1 if a must-show check fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=Path, default=ROOT / "scenarios" / "paper", help="the scenario folder")
    ap.add_argument("--profile", type=Path, help="use this profile instead of the scenarios' own")
    ap.add_argument("--quick", action="store_true", help="fewer rates and shorter runs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        base = load(args.scenarios / "fig5-base.toml", args.profile)
    except EdgePruneError as exc:
        print(f"bench_policies: {exc}", file=sys.stderr)
        return 2
    acc = base.profile.accuracy
    print(
        f"# Policies on scenarios/paper (profile {base.profile_path.name}; accuracy "
        f"{'PROXY: ' + acc.dataset if acc is not None and acc.proxy else (acc.dataset if acc else 'none')})"
    )
    decision_times(base)
    table = sweep(base, QUICK_RATES_HZ if args.quick else SWEEP_RATES_HZ, 300.0 if args.quick else None)
    scen = scenario_set(args.scenarios, args.profile, args.quick)
    ok = must_show(table, scen, floor_of(base))
    print(f"\n(wall time {time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
