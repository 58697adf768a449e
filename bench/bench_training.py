"""Fig. 4: accuracy versus pruning ratio per training strategy and hyper-parameter set (tiny ViT, digits).

Trains the tiny ViT (``models.training.network``) on scikit-learn's digits with every strategy
(``baseline``, ``sandwich``, ``sandwich-distill``) and both shipped hyper-parameter sets (``a``, ``b``),
for seeds 0–2, one torch thread per run; prints accuracy per uniform pruning ratio (mean ± sd over seeds),
how far random per-stage level vectors fall from the uniform curve, and the issue's checks; writes the
chart ``runs/bench-training/fig4-accuracy.png`` (``--out-dir``; altair + vl-convert; the tracked
``docs/fig4-accuracy.png`` only with ``--fig docs/fig4-accuracy.png``), and with ``--json`` the raw numbers.

    python bench/bench_training.py --jobs 2           # full: 18 runs, ~20 min on 2 busy cores (~35 min --jobs 1)
    python bench/bench_training.py --quick            # smoke: 3 epochs, seed 0, ~3 min
    python bench/bench_training.py --jobs 2 --ckpt-dir /tmp/fig4-ckpt   # two runs at a time, keep checkpoints
    python bench/bench_training.py --json /tmp/fig4.json          # keep the raw numbers ...
    python bench/bench_training.py --from-json /tmp/fig4.json     # ... and re-print / re-plot without training
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STRATEGIES = ("baseline", "sandwich", "sandwich-distill")
SETS = ("a", "b")
QUICK_EPOCHS = 3
PER_STAGE_VECTORS = 20


def _one_run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (strategy, set, seed) on one thread; return plain numbers (runs in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from models.training.config import config_path, load_config
    from models.training.curves import deviations
    from models.training.loop import RunSpec, train
    from models.training.network import TINY_VIT

    cfg = load_config(config_path(job["strategy"], job["set"]))
    if job["epochs"]:
        cfg = dataclasses.replace(cfg, epochs=job["epochs"])
    spec = RunSpec(TINY_VIT, cfg, f"{job['strategy']}-{job['set']}", seed=job["seed"], eval_vectors=PER_STAGE_VECTORS)
    t0 = time.perf_counter()
    result = train(spec, out=job["out"])
    assert result is not None
    dev = deviations(result.curve)
    return {
        **{k: job[k] for k in ("strategy", "set", "seed")},
        "epochs": cfg.epochs,
        "ratios": list(result.curve.ratios),
        "uniform": list(result.curve.uniform),
        "per_stage": [
            {"levels": list(v), "accuracy": a, "deviation": dev[v]} for v, a in result.curve.per_stage.items()
        ],
        "seconds": time.perf_counter() - t0,
        "out": job["out"],
    }


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = QUICK_EPOCHS if args.quick else 0
    jobs = []
    for strategy in STRATEGIES:
        for hp in SETS:
            for seed in seeds:
                out = str(Path(args.ckpt_dir) / f"{strategy}-{hp}-seed{seed}") if args.ckpt_dir else None
                jobs.append({"strategy": strategy, "set": hp, "seed": seed, "epochs": epochs, "out": out})
    # longest first (pruning-aware runs cost ~3x a baseline) so parallel workers finish together
    return sorted(jobs, key=lambda j: (j["strategy"] == "baseline", j["set"]))


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run, sequentially or on ``--jobs`` worker processes; progress on stderr."""
    jobs = _jobs(args)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        acc = " ".join(f"{a:.3f}" for a in r["uniform"])
        print(
            f"[{len(results)}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {r['strategy']}-{r['set']} seed "
            f"{r['seed']}: {acc} ({r['seconds']:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    if args.jobs <= 1:
        for job in jobs:
            done(_one_run(job))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for r in pool.map(_one_run, jobs):
                done(r)
    return results


# ------------------------------------------------------------------------------------------------ reporting


def _groups(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault((r["strategy"], r["set"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(out.items())}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (strategy, set): mean and sd per ratio, per-stage deviation stats, time."""
    rows = []
    for (strategy, hp), runs in _groups(results).items():
        ratios = runs[0]["ratios"]
        stats = [_mean_sd([r["uniform"][i] for r in runs]) for i in range(len(ratios))]
        devs = [d["deviation"] for r in runs for d in r["per_stage"]]
        rows.append(
            {
                "strategy": strategy,
                "set": hp,
                "seeds": [r["seed"] for r in runs],
                "epochs": runs[0]["epochs"],
                "ratios": ratios,
                "mean": [m for m, _ in stats],
                "sd": [s for _, s in stats],
                "dev_mean_abs": statistics.fmean(abs(d) for d in devs) if devs else math.nan,
                "dev_max_abs": max((abs(d) for d in devs), default=math.nan),
                "dev_mean": statistics.fmean(devs) if devs else math.nan,
                "n_vectors": len(devs),
                "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
            }
        )
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Accuracy (mean ± sd over seeds) per uniform ratio, then per-stage deviation from uniform."""
    ratios = rows[0]["ratios"]
    head = f"{'strategy':<17}{'set':<4}{'ep':>3} " + "".join(f"{'r=' + format(r, 'g'):>14}" for r in ratios)
    print(f"Top-1 on the digits validation split (450 images), mean ± sd over seeds {rows[0]['seeds']}:")
    print(head)
    for row in rows:
        cells = "".join(f"{m:>8.3f}±{s:.3f}" for m, s in zip(row["mean"], row["sd"], strict=True))
        print(f"{row['strategy']:<17}{row['set']:<4}{row['epochs']:>3} {cells}")
    print()
    print("Per-stage random level vectors: accuracy minus the uniform curve at the vector's mean ratio")
    print(f"{'strategy':<17}{'set':<4}{'vectors':>8}{'mean':>9}{'mean|.|':>9}{'max|.|':>9}{'s/run':>8}")
    for row in rows:
        print(
            f"{row['strategy']:<17}{row['set']:<4}{row['n_vectors']:>8}{row['dev_mean']:>+9.4f}"
            f"{row['dev_mean_abs']:>9.4f}{row['dev_max_abs']:>9.4f}{row['seconds_mean']:>8.0f}"
        )


def checks(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's must-show claims, evaluated on the table."""
    by = {(r["strategy"], r["set"]): r for r in rows}
    last = len(rows[0]["ratios"]) - 1
    aware = [r for r in rows if r["strategy"] != "baseline"]
    base = [r for r in rows if r["strategy"] == "baseline"]
    best = max(aware, key=lambda r: r["mean"][last])
    base_best_full = max(base, key=lambda r: r["mean"][0])
    same_set = by[("baseline", best["set"])]
    out = [
        (
            f"best pruning-aware ({best['strategy']}-{best['set']}) keeps >= 0.95 at ratio {rows[0]['ratios'][last]}",
            best["mean"][last] >= 0.95,
            f"{best['mean'][last]:.3f}",
        ),
        (
            "baseline falls below 0.90 at the largest ratio (every set)",
            all(b["mean"][last] < 0.90 for b in base),
            ", ".join(f"{b['set']}: {b['mean'][last]:.3f}" for b in base),
        ),
        (
            f"at ratio 0 {best['strategy']}-{best['set']} is within 1 point of baseline-{best['set']}",
            best["mean"][0] >= same_set["mean"][0] - 0.01,
            f"{best['mean'][0]:.3f} vs {same_set['mean'][0]:.3f}",
        ),
        (
            f"at ratio 0 {best['strategy']}-{best['set']} is within 1 point of the best baseline "
            f"(baseline-{base_best_full['set']})",
            best["mean"][0] >= base_best_full["mean"][0] - 0.01,
            f"{best['mean'][0]:.3f} vs {base_best_full['mean'][0]:.3f}",
        ),
        (
            "pruning-aware per-stage vectors within 2 points of the uniform curve (every vector, every seed)",
            all(r["dev_max_abs"] <= 0.02 for r in aware),
            ", ".join(f"{r['strategy']}-{r['set']}: max {r['dev_max_abs']:.3f}" for r in aware),
        ),
    ]
    return out


def chart(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Fig. 4: mean accuracy vs pruning ratio, one line per strategy, dashed per set, ± sd band."""
    import altair as alt

    records = [
        {
            "ratio": r,
            "accuracy": m,
            "low": m - s,
            "high": m + s,
            "strategy": row["strategy"],
            "hyper-parameters": f"set {row['set']}",
        }
        for row in rows
        for r, m, s in zip(row["ratios"], row["mean"], row["sd"], strict=True)
    ]
    data = alt.Data(values=records)
    low = min(rec["low"] for rec in records)
    y_scale = alt.Scale(domain=[max(0.0, math.floor((low - 0.02) * 20) / 20), 1.0], clamp=True)
    color = alt.Color("strategy:N", scale=alt.Scale(domain=list(STRATEGIES)))
    dash = alt.StrokeDash(
        "hyper-parameters:N", legend=alt.Legend(title="set a: solid, set b: dashed", symbolType="stroke")
    )
    x = alt.X("ratio:Q", title="pruning ratio (every stage)", scale=alt.Scale(domain=[0, 0.6]))
    y = alt.Y("accuracy:Q", title="top-1 accuracy (mean of seeds, band ± sd)", scale=y_scale)
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.15)
        .encode(
            x=x,
            y=alt.Y("low:Q", scale=y_scale),
            y2="high:Q",
            color=color,
            detail="hyper-parameters:N",
        )
    )
    lines = alt.Chart(data).mark_line(point=True).encode(x=x, y=y, color=color, strokeDash=dash)
    seeds = rows[0]["seeds"]
    title = f"Accuracy vs pruning ratio: tiny ViT on digits, seeds {', '.join(map(str, seeds))} (proxy for Fig. 4)"
    fig = (band + lines).resolve_legend(color="shared").properties(width=520, height=320, title=title)
    from edgeprune.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.save(str(tmp), format=path.suffix.lstrip(".") or "png", scale_factor=2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or reload), print, check and plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, seed 0 (smoke test)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each")
    p.add_argument("--ckpt-dir", help="keep every run's checkpoint folder here")
    p.add_argument("--out-dir", default="runs/bench-training", help="folder of the chart (default runs/bench-training)")
    p.add_argument(
        "--fig",
        default=None,
        help="chart to write (default OUT_DIR/fig4-accuracy.png; '' for none; docs/fig4-accuracy.png updates the "
        "tracked figure, only on purpose)",
    )
    p.add_argument("--json", default=None, help="also write the raw results here (re-plot with --from-json)")
    p.add_argument("--from-json", help="re-use results written by an earlier run instead of training")
    args = p.parse_args(argv)
    args.seeds = args.seeds or ("0" if args.quick else "0,1,2")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text(encoding="utf-8"))["runs"]
    else:
        t0 = time.perf_counter()
        results = run_all(args)
        print(f"{len(results)} runs in {time.perf_counter() - t0:.0f} s wall ({args.jobs} job(s), 1 thread each)")
    rows = summarise(results)
    print_table(rows)
    print()
    for claim, ok, detail in checks(rows):
        print(f"[{'PASS' if ok else 'FAIL'}] {claim}: {detail}")
    if args.fig is None:
        args.fig = str(Path(args.out_dir) / "fig4-accuracy.png")
    if args.fig:
        fig = Path(args.fig)
        chart(rows, fig)
        print(f"wrote {fig}")
    if args.json and not args.from_json:
        raw = Path(args.json)
        from edgeprune.atomic import atomic_write_text

        atomic_write_text(raw, json.dumps({"runs": results, "summary": rows}, indent=1) + "\n")
        print(f"wrote {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
