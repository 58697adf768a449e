"""``edgeprune-sim``: evaluate the policies of a scenario on the simulated pipeline.

edgeprune-sim scenarios/bursty.toml
edgeprune-sim scenarios/bursty.toml --out runs/b1 --seed 3 --policy dynamic
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edgeprune.cli.common import ArgumentParser, Progress, guarded, seed_arg
from edgeprune.results import check_out_dir, write_run_dir
from edgeprune.runs import format_table, header, replay_report, scenario_toml
from edgeprune.scenario import load_scenario

__all__ = ["main"]

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


def _run(args: argparse.Namespace) -> int:
    from sim import run_scenario

    sc = load_scenario(args.scenario, seed=args.seed, policies=args.policy)
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
        report = replay_report(sc)
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
