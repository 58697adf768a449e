"""``edgeprune-trace``: look at a recorded trace and fit a synthetic arrival model to it.

    edgeprune-trace inspect FILE [--png OUT.png] [--json] [trace options]
    edgeprune-trace fit FILE --model mmpp|camera-trap [--states 2|3] [--triggers auto|poisson|mmpp]
                        [--out arrivals.toml] [trace options]

The trace options are the keys of a replay's ``[arrivals]`` table (``--column`` once, or twice for a
date and a time column; ``--unit``, ``--timezone``, ``--deployment``, ``--location``, ``--camera``,
``--outliers``, ``--start-s``, ``--end-s``), so what is inspected is what a scenario would replay.  ``fit``
prints the ``[arrivals]`` TOML block (and writes it atomically with ``--out``), headed by a comment that
compares the recording's inter-arrival CV and peak per minute with those of traces generated from the fit
(seeds 0-4, over the recorded span); paste it into a scenario and change ``seed`` or the rates to generate
many days like the recorded one.  Bad input is one line
``edgeprune-trace: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.cli.common import ArgumentParser, guarded

__all__ = ["main"]

PROG = "edgeprune-trace"
CHECK_SEEDS = range(5)  # fit's comment compares the recording with traces generated from these seeds


def _trace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="trace file (CSV, JSONL, Parquet, Camtrap DP, COCO Camera Traps JSON)")
    p.add_argument("--format", default="auto", help="auto, csv, jsonl, parquet, camtrap-dp, coco-camera-traps, ...")
    p.add_argument("--column", action="append", help="time column; give it twice for a date and a time column")
    p.add_argument("--unit", default="auto", help="auto, iso8601, s or ms")
    p.add_argument("--timezone", help="zone of times without an offset: '+02:00' or an IANA name")
    p.add_argument("--deployment", help="keep only this deployment")
    p.add_argument("--location", help="keep only this location")
    p.add_argument("--camera", help="keep only this camera")
    p.add_argument("--outliers", default="keep", help="keep or drop clock-reset outliers (always reported)")
    p.add_argument("--start-s", type=float, default=0.0, help="window start, s after the first event")
    p.add_argument("--end-s", type=float, help="window end, s after the first event")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Inspect a recorded arrival trace or fit a model to it.")
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="rates, burstiness and bursts of a trace; a PNG chart with --png")
    _trace_options(ins)
    ins.add_argument("--png", type=Path, help="write arrivals over time and the inter-arrival histogram here")
    ins.add_argument("--burst-gap-s", type=float, help="a gap over this starts a new burst (default: from the trace)")
    ins.add_argument("--json", action="store_true", help="print the summary as JSON")
    fit = sub.add_parser("fit", help="fit an MMPP or camera-trap model and print its [arrivals] TOML block")
    _trace_options(fit)
    fit.add_argument("--model", required=True, help="mmpp or camera-trap")
    fit.add_argument("--states", type=int, default=2, help="MMPP states (2 or 3)")
    fit.add_argument("--burst-gap-s", type=float, help="camera-trap: a gap over this starts a new burst")
    fit.add_argument(
        "--triggers", default="auto", help="camera-trap triggers: auto (MMPP when BIC prefers it), poisson or mmpp"
    )
    fit.add_argument("--out", type=Path, help="write the [arrivals] block to this TOML file")
    return p


def _spec(args: argparse.Namespace) -> Any:
    """The replay spec the options describe, validated like a scenario's ``[arrivals]`` table."""
    from edgeprune.config import Ctx, build
    from traces.spec import ReplayArrivals

    column: Any = args.column[0] if args.column and len(args.column) == 1 else args.column
    table = {
        "path": str(args.file),
        "format": args.format,
        "column": column,
        "unit": args.unit,
        "timezone": args.timezone,
        "deployment": args.deployment,
        "location": args.location,
        "camera": args.camera,
        "outliers": args.outliers,
        "start_s": args.start_s,
        "end_s": args.end_s,
    }
    table = {k: v for k, v in table.items() if v is not None}
    return build(ReplayArrivals, table, Ctx(str(args.file), "options"))


def _load(args: argparse.Namespace) -> Any:
    from traces.replay import load_replay

    return load_replay(_spec(args))


def _inspect(args: argparse.Namespace) -> int:
    from traces.inspect import arrivals_chart, inspect_trace, write_png

    info = _load(args)
    summary = inspect_trace(info, burst_gap_s=args.burst_gap_s)
    if args.png is not None:
        write_png(arrivals_chart(info), args.png)
    if args.json:
        doc = {"trace": info.describe(), **summary.to_json()}
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, allow_nan=True) + "\n")
        return 0
    print(info.describe())
    print("\n".join(summary.lines()))
    if args.png is not None:
        print(f"chart written to {args.png}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from edgeprune.errors import ConfigError, did_you_mean
    from edgeprune.results import atomic_write_text
    from traces.fit import arrivals_toml, compare_generated, fit_camera_trap, fit_mmpp

    models = ("mmpp", "camera-trap")
    if args.model not in models:
        raise ConfigError(f"--model = {args.model!r}: unknown model" + did_you_mean(args.model, models))
    laws = ("auto", "poisson", "mmpp")
    if args.triggers not in laws:
        raise ConfigError(f"--triggers = {args.triggers!r}: unknown trigger law" + did_you_mean(args.triggers, laws))
    info = _load(args)
    if args.model == "mmpp":
        fitted = fit_mmpp(info.times_s, args.states)
        spec: Any = fitted.spec
        how = f"{args.states}-state MMPP, maximum likelihood, log-likelihood {fitted.log_likelihood:.6g}"
    else:
        spec = fit_camera_trap(
            info.times_s, sequences=info.sequences, burst_gap_s=args.burst_gap_s, triggers=args.triggers
        )
        bursts = "sequence ids" if info.sequences is not None and args.burst_gap_s is None else "gaps"
        triggers = "MMPP" if spec.trigger_modulation else "Poisson"
        how = f"camera-trap model (bursts from {bursts}, {triggers} triggers)"
    check = compare_generated(spec, info.times_s, CHECK_SEEDS)
    comment = f"fitted by {PROG} to {info.source}\n{how}, {info.n_events} events\n{check.describe()}"
    text = arrivals_toml(spec, comment)
    if args.out is not None:
        atomic_write_text(args.out, text)
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-trace``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: _dispatch(_parser().parse_args(argv)))


def _dispatch(args: argparse.Namespace) -> int:
    return _inspect(args) if args.command == "inspect" else _fit(args)


if __name__ == "__main__":
    sys.exit(main())
