"""``edgeprune-sim``: evaluate the policies of a scenario on the simulated pipeline.

edgeprune-sim scenarios/bursty.toml
edgeprune-sim scenarios/bursty.toml --out runs/b1 --seed 3 --policy dynamic
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from edgeprune.cli.common import ArgumentParser, Progress, guarded, seed_arg
from edgeprune.results import RunResult, check_out_dir, write_run_dir
from edgeprune.scenario import Scenario, load_scenario, scenario_to_dict

__all__ = ["format_table", "main"]

PROG = "edgeprune-sim"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Simulate a pruned inference pipeline under a scenario.",
        epilog="Sweeps: `edgeprune-sim sweep SPEC.toml [--out DIR]` runs a grid of scenarios in parallel "
        "(see `edgeprune-sim sweep --help`).",
    )
    p.add_argument("scenario", type=Path, help="scenario TOML file")
    p.add_argument("--out", type=Path, help="write per-request records, timelines and the summary here")
    p.add_argument("--seed", type=seed_arg, help="override the scenario's seed")
    p.add_argument("--policy", action="append", default=None, help="run only this policy (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--engine",
        choices=["auto", "fast", "reference"],
        default="auto",
        help="request path: the SimPy reference model, the fast path (unbounded queues), or auto (fast when it can)",
    )
    return p


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value * scale:.{digits}f}"


def format_table(results: Sequence[RunResult]) -> str:
    """The comparison table printed by the command."""
    head = ("policy", "thr/s", "p50 s", "p95 s", "p99 s", "SLO %", "accuracy", "switches", "done", "dropped")
    rows = [head]
    for r in results:
        s = r.summary
        rows.append(
            (
                r.policy,
                _fmt(s["throughput_hz"], digits=2),
                _fmt(s["p50_latency_s"]),
                _fmt(s["p95_latency_s"]),
                _fmt(s["p99_latency_s"]),
                _fmt(s["slo_attainment"], 100.0, 1),
                _fmt(s["mean_accuracy"]),
                _fmt(s["switches"]),
                f"{s['completed']}/{s['arrived']}",
                _fmt(s["dropped"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header(sc: Scenario) -> dict[str, Any]:
    """The scenario-level fields of ``summary.json``."""
    acc = sc.profile.accuracy
    doc: dict[str, Any] = {
        "scenario": sc.name,
        "seed": sc.seed,
        "slo_s": sc.slo_s,
        "stages": [s.name for s in sc.stages],
        "profile": {
            "model": sc.profile.model.get("id"),
            "accuracy_proxy": acc.proxy if acc is not None else None,
            "accuracy_note": acc.note if acc is not None else "no accuracy curve in the profile",
        },
    }
    report = _replay_report(sc)
    if report is not None:  # only replays: other scenarios' summary.json stays as it was
        doc["arrivals"] = report.to_json()
    return doc


def _replay_report(sc: Scenario) -> Any:
    """What a replay scenario's trace read, kept and dropped (``traces.ReplayReport``), else None."""
    from traces import ReplayArrivals, replay_report

    if not isinstance(sc.arrivals, ReplayArrivals):
        return None
    return replay_report(sc.arrivals, duration_s=sc.duration_s, n_requests=sc.n_requests)


def scenario_toml(sc: Scenario) -> str:
    """The resolved scenario as TOML text."""
    return tomli_w.dumps(_drop_none(scenario_to_dict(sc)))


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _run(args: argparse.Namespace) -> int:
    from sim import run_scenario

    sc = load_scenario(args.scenario)
    if args.seed is not None:
        sc = sc.with_seed(args.seed)
    if args.policy:
        sc = sc.with_policies(args.policy)
    if args.out is not None:
        check_out_dir(args.out, args.force)  # before simulating: a bad --out costs nothing
    progress = Progress(enabled=not args.no_progress)
    t0 = time.perf_counter()
    try:
        results = run_scenario(sc, progress=progress, path=args.engine)
    finally:
        progress.close()
    wall_s = time.perf_counter() - t0
    if args.out is not None:
        write_run_dir(args.out, scenario_toml=scenario_toml(sc), header=header(sc), results=results, force=args.force)
    if args.json:
        from edgeprune.results import summary_json

        sys.stdout.write(summary_json(header(sc), results))
    else:
        acc = sc.profile.accuracy
        print(f"scenario {sc.name}  seed {sc.seed}  SLO {sc.slo_s:g} s  ({wall_s:.1f} s wall)")
        print(format_table(results))
        report = _replay_report(sc)
        if report is not None:
            print(report.line())
        if acc is None:
            print("accuracy: the profile has no accuracy curve")
        elif acc.proxy:
            print(
                f"accuracy: estimated from a PROXY curve ({acc.dataset}); see accuracy.note in {sc.profile_path.name}"
            )
        if args.out is not None:
            print(f"results written to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-sim``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        from edgeprune.cli.sweep import main as sweep_main

        return sweep_main(argv[1:])
    return guarded(PROG, lambda: _run(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
