"""``edgeprune-report``: one self-contained HTML report (plus PNG/SVG charts and a Markdown summary).

edgeprune-report runs/sweep -o report.html
edgeprune-report runs/sweep runs/b1 runs/b1-hil --profile models/profiles/vit.json -o paper/report.html

Inputs are sweep folders (``edgeprune-sim sweep --out``) and run folders (``edgeprune-sim --out``; hardware
runs have ``"backend": "hil"`` in summary.json).  See :mod:`edgeprune.report` for what the report holds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeprune.cli.common import ArgumentParser, guarded

__all__ = ["main"]

PROG = "edgeprune-report"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Build a policy-comparison report from sweeps and runs.")
    p.add_argument("inputs", nargs="*", type=Path, help="sweep folders and/or run folders")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file (default report.html)")
    p.add_argument("--profile", action="append", type=Path, default=[], help="profile JSON for Figs. 3-4 (repeatable)")
    p.add_argument("--x", help="x axis of the SLO / p95 charts: a numeric sweep axis or offered_rate_hz")
    p.add_argument("--title", default="EdgePrune report", help="page title")
    p.add_argument(
        "--slo-target",
        type=float,
        default=90.0,
        metavar="PCT",
        help="SLO attainment (%%) a policy must keep to sustain a load, for the findings (default 90)",
    )
    p.add_argument(
        "--baseline", help="policy the findings compare against (default: no-pruning, when the inputs have it)"
    )
    return p


def _run(args: argparse.Namespace) -> int:
    from edgeprune.report import build_report, write_report

    report = build_report(
        args.inputs,
        profiles=args.profile,
        x=args.x,
        title=args.title,
        slo_target=args.slo_target / 100.0,
        baseline=args.baseline,
        out_dir=args.output.parent,
    )
    written = write_report(report, args.output)
    n_charts = sum(len(s.charts) for s in report.sections)
    print(f"report: {args.output} ({n_charts} charts; PNG/SVG in {written[0].stem}_files/, summary {written[1]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-report``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: _run(_parser().parse_args(args)))


if __name__ == "__main__":
    sys.exit(main())
