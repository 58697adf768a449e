"""Benchmark of models/: nested pruning levels of the 4-stage ViT-B/16 vision tower vs torch-pruning exports.

Prints, at batch 1 and ``--threads`` torch threads (1 by default), with random-init weights (latency does
not depend on the values):

* latency of the whole 4-stage chain per pruning ratio, nested (one shared weight set, leading slices) and
  dense export (physically pruned by torch-pruning), their speedups over ratio 0 and nested/dense;
* the time to switch every stage's level (``StagedVision.set_levels``) and one stage's level;
* resident memory (VmRSS, measured in fresh child processes) of one stage holding all levels vs the same
  stage unpruned, and of the alternative: one dense export per level kept in memory.

* how long ``edgeprune-profile latency --model hf-hub:...`` takes to fail offline when the weights are not
  cached, beside the same command failing on a bad option (``--threads 0``) in the same run: "a hub id
  fails at once" (README) means about as fast as a usage error (``--hub-offline-only`` prints just this).

Then checks the issue's must-show thresholds and prints PASS / FAIL for each.  Timings interleave nested
and dense runs so that load from other processes hits both alike; check ``/proc/loadavg`` before trusting
them (the script prints the load average at start and end).

    python bench/bench_models.py [--threads 1] [--runs 9] [--model ViT-B-16]
    python bench/bench_models.py --hub-offline-only
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
CUTS = ((0, 3), (3, 6), (6, 9), (9, 12))


def _rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _trim() -> None:
    """Collect garbage and give freed heap pages back to the OS (glibc), so RSS reflects live tensors."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _stage_config(model: str) -> dict[str, Any]:
    """The model's open_clip config cut to 3 blocks: one stage of the 4-stage ViT-B/16, plus embedding and pooling."""
    from models.loading import model_config

    cfg = model_config(model)
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "layers": 3}
    return cfg


def _write_stage_checkpoint(model: str, path: Path) -> None:
    """A nested checkpoint of one 3-block stage with all levels (what a deployed device would load)."""
    import torch

    from models.checkpoint import save_nested
    from models.loading import _build_visual
    from models.nested import build_nested

    cfg = _stage_config(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = _build_visual(cfg).eval()
    save_nested(build_nested(visual, [(0, 3)], RATIOS, info={"model_id": model, "model_cfg": cfg}), path)


def _rss_child(kind: str, model: str, threads: int, checkpoint: str) -> None:
    """Hold one 3-block stage of ``model`` in a fresh process and report (RSS, peak, baseline, parameter bytes).

    ``plain``: the open_clip blocks as built; ``nested``: the nested stage loaded from ``checkpoint`` (the
    deployment path) and run at every level; ``dense-all``: one torch-pruning export per level kept resident.
    """
    import torch

    from models.checkpoint import load_nested
    from models.export import export_dense_stage, parameter_bytes
    from models.loading import _build_visual
    from models.slicing import slice_vision

    torch.set_num_threads(threads)
    cfg = _stage_config(model)
    _trim()
    base = _rss_bytes()[0]
    size = cfg["vision_cfg"].get("image_size", 224)
    x = torch.randn(1, 3, size, size)
    keep: list[Any] = []
    with torch.inference_mode():
        if kind == "plain":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                visual: Any = _build_visual(cfg).eval()
            stage = slice_vision(visual, [(0, 3)])[0]
            keep.append(stage)
            stage(x)
        else:
            pipe = load_nested(checkpoint)
            stage = pipe.stage_list[0]
            if kind == "nested":
                keep.append(pipe)
                for level in range(len(RATIOS)):
                    pipe.set_levels(level)
                    stage(x)
            else:  # one dense export per level, as a deployment without nesting would hold them
                keep.extend(export_dense_stage(stage, level) for level in range(len(RATIOS)))
                del pipe, stage
                for s in keep:
                    s(x)
    _trim()
    rss, hwm = _rss_bytes()
    params = sum(parameter_bytes(m) for m in keep)
    print(f"{rss} {hwm} {base} {params}")


def _measure_rss(kind: str, model: str, threads: int, checkpoint: Path) -> tuple[int, int, int, int]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            kind,
            "--model",
            model,
            "--threads",
            str(threads),
            "--checkpoint",
            str(checkpoint),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    ).stdout.split()
    rss, hwm, base, params = (int(v) for v in out[-4:])
    return rss, hwm, base, params


def _time_chain(stages: list[Any], x: Any) -> float:
    t0 = time.perf_counter()
    for s in stages:
        x = s(x)
    return time.perf_counter() - t0


HUB_OFFLINE_GOAL_S = 2.0  # the bound the models CLI test asserted before timings moved here


def _hub_offline(runs: int) -> tuple[str, bool]:
    """Best-of-``runs`` time of the offline hub failure beside a usage error of the same command."""
    from models.cli import main as profile_main

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HOME"] = str(Path(tmp) / "hf-home")  # an empty cache
        argv = ["latency", "--model", "hf-hub:imageomics/bioclip", "--stages", "4", "--out", str(Path(tmp) / "p.json")]
        argv += ["--samples", "3", "--warmup", "1", "--no-progress"]
        best = {"usage error (--threads 0)": float("inf"), "hub id, weights not cached": float("inf")}
        for _ in range(runs + 1):  # the first round pays one-off lazy imports
            for label, extra in zip(best, (["--threads", "0"], []), strict=True):
                with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
                    t0 = time.perf_counter()
                    code = profile_main(argv + extra)
                    best[label] = min(best[label], time.perf_counter() - t0)
                assert code == 2, f"{label}: exit {code}"
    usage_s, hub_s = best.values()
    print(f"offline failure: usage error {usage_s * 1e3:.1f} ms, hub id {hub_s * 1e3:.1f} ms ({hub_s / usage_s:.1f}x)")
    return f"hub id fails offline in < {HUB_OFFLINE_GOAL_S:.0f} s ({hub_s:.3f} s)", hub_s < HUB_OFFLINE_GOAL_S


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per level and variant")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--mlp-round-to", type=int, default=1, help="round MLP widths to a multiple (e.g. 64)")
    parser.add_argument("--rss-child", choices=("plain", "nested", "dense-all"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--hub-offline-only", action="store_true", help="only time the offline hub-id failure")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss_child:
        _rss_child(args.rss_child, args.model, args.threads, args.checkpoint)
        return 0
    if args.hub_offline_only:
        text, ok = _hub_offline(args.runs)
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        return 0 if ok else 1

    import torch

    from models.export import export_dense_stage, parameter_bytes
    from models.loading import load_model
    from models.nested import build_nested

    torch.set_num_threads(args.threads)
    print(
        f"bench_models: {args.model}, 4 stages {list(CUTS)}, batch 1, fp32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), load avg at start {os.getloadavg()}"
    )
    loaded = load_model(args.model, random_init=True)
    x = torch.randn(1, 3, *loaded.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        loaded.visual(x)
        unsliced_s = statistics.median(_time_chain([loaded.visual], x) for _ in range(args.runs))
    t0 = time.perf_counter()
    pipe = build_nested(loaded.visual, CUTS, RATIOS, mlp_round_to=args.mlp_round_to).eval()
    build_s = time.perf_counter() - t0
    stages = pipe.stage_list
    print(
        f"unsliced open_clip tower: {unsliced_s * 1e3:.1f} ms; one-time nested build (importance + re-pack): "
        f"{build_s:.2f} s"
    )
    print()
    print("ratio heads  mlp   nested_ms speedup  dense_ms speedup  nested/dense  export_s")
    rows = []
    with torch.inference_mode():
        dense_by_level, export_by_level = [], []
        for level in range(len(pipe.levels)):
            t0 = time.perf_counter()
            dense_by_level.append([export_dense_stage(s, level) for s in stages])
            export_by_level.append(time.perf_counter() - t0)
        # Round-robin over the levels, nested and dense back to back: slow drifts of this shared machine's
        # speed hit every level alike instead of biasing the levels measured last.
        nested_t: list[list[float]] = [[] for _ in pipe.levels]
        dense_t: list[list[float]] = [[] for _ in pipe.levels]
        for rnd in range(args.runs + 2):  # two warm-up rounds
            for level in range(len(pipe.levels)):
                pipe.set_levels(level)
                n_s = _time_chain(stages, x)
                d_s = _time_chain(dense_by_level[level], x)
                if rnd >= 2:
                    nested_t[level].append(n_s)
                    dense_t[level].append(d_s)
        for level, spec in enumerate(pipe.levels):
            paired = statistics.median(a / b for a, b in zip(nested_t[level], dense_t[level], strict=True))
            rows.append(
                (
                    spec,
                    statistics.median(nested_t[level]),
                    statistics.median(dense_t[level]),
                    paired,
                    export_by_level[level],
                )
            )
        del dense_by_level
        gc.collect()
    base_n, base_d = rows[0][1], rows[0][2]
    for spec, n_s, d_s, pair, e_s in rows:
        print(
            f"{spec.ratio:5.1f} {spec.heads:5d} {spec.mlp_hidden:5d} {n_s * 1e3:10.1f} {base_n / n_s:6.2f}x "
            f"{d_s * 1e3:9.1f} {base_d / d_s:6.2f}x {pair:12.3f} {e_s:9.2f}"
        )
    print("(ms: medians of the runs; nested/dense: median over rounds of the ratio of back-to-back runs)")

    switch_all, switch_one = [], []
    for i in range(20000):
        level = i % len(RATIOS)
        t0 = time.perf_counter()
        pipe.set_levels(level)
        switch_all.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stages[1].set_level(level)
        switch_one.append(time.perf_counter() - t0)
    all_us, one_us = statistics.median(switch_all) * 1e6, statistics.median(switch_one) * 1e6
    p99_all_us = sorted(switch_all)[int(0.99 * len(switch_all))] * 1e6
    print()
    print(f"switch all 4 stages: median {all_us:.2f} us (p99 {p99_all_us:.2f} us); one stage: {one_us:.2f} us")
    print(f"parameter bytes of the 4 nested stages (all levels): {parameter_bytes(pipe) / 2**20:.1f} MiB")

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "stage.pt"
        _write_stage_checkpoint(args.model, ckpt)
        plain = _measure_rss("plain", args.model, args.threads, ckpt)
        nested = _measure_rss("nested", args.model, args.threads, ckpt)
        dense_all = _measure_rss("dense-all", args.model, args.threads, ckpt)
    print()
    print("resident memory of one 3-block stage + embedding + pooling, each in a fresh process after gc + malloc_trim")
    print("(unpruned: open_clip blocks; nested: loaded from a nested checkpoint; baseline: libraries imported):")
    for name, (rss, hwm, base, params) in (
        ("unpruned stage", plain),
        ("nested, all 7 levels", nested),
        ("7 dense exports", dense_all),
    ):
        print(
            f"  {name:22s} RSS {rss / 2**20:7.1f} MiB (peak {hwm / 2**20:7.1f}, baseline {base / 2**20:6.1f}, "
            f"above baseline {(rss - base) / 2**20:6.1f}); parameters {params / 2**20:6.1f} MiB"
        )
    print()
    offline = _hub_offline(args.runs)
    rss_ratio = nested[0] / plain[0]
    above_ratio = (nested[0] - nested[2]) / (plain[0] - plain[2])
    print(f"  nested / unpruned: RSS {rss_ratio:.3f}x, above baseline {above_ratio:.3f}x")

    by_ratio = {round(spec.ratio, 2): base_n / n_s for spec, n_s, _, _, _ in rows}
    worst = max(abs(pair - 1) for _, _, _, pair, _ in rows)
    checks = [
        (f"speedup at ratio 0.3 >= 1.4x (nested: {by_ratio[0.3]:.2f}x)", by_ratio[0.3] >= 1.4),
        (f"speedup at ratio 0.5 >= 1.9x (nested: {by_ratio[0.5]:.2f}x)", by_ratio[0.5] >= 1.9),
        (f"nested within 5% of dense export at every level (worst {worst * 100:.1f}%)", worst <= 0.05),
        (f"switch all stages < 100 us ({all_us:.1f} us)", all_us < 100),
        (f"RSS of a stage with all levels <= 1.05x unpruned ({rss_ratio:.3f}x)", rss_ratio <= 1.05),
        offline,
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"load avg at end {os.getloadavg()}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
