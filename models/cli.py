"""``edgeprune-profile``: measure a sliced, nested-pruned ViT and write an EdgePrune profile.

Sub-commands::

    edgeprune-profile latency   --model ID (--weights PATH | --random-init | --checkpoint CKPT) --stages N
                                --levels 0,0.1,... --device-name NAME [--threads 1] --out PROFILE.json
    edgeprune-profile accuracy  --profile PROFILE.json --data DIR|FILE.csv [--weights PATH] [--out P.json]
    edgeprune-profile partition --profile PROFILE.json --devices pi1=1.0,pi2=1.0,jetson=2.5 [--stages 3]
    edgeprune-profile nest      --model ID ... --stages N --levels ... --out CKPT.pt   (nested checkpoint)

Errors a user can cause print ``edgeprune-profile: error: <one line>`` on stderr and exit with status 2;
outputs are written atomically, so a failed run leaves no partial file.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.atomic import Terminated, atomic_write_text
from edgeprune.cli.common import ArgumentParser, report_error, seed_arg
from edgeprune.errors import EdgePruneError, ModelError

PROG = "edgeprune-profile"


def _add_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--model", required=required, help="open_clip architecture (ViT-B-16), hf-hub:org/repo or local-dir:PATH"
    )
    p.add_argument(
        "--model-config", help="register an open_clip model config JSON; its file stem becomes a --model name"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="local open_clip checkpoint file for an architecture --model")
    src.add_argument("--random-init", action="store_true", help="random weights (latency needs none)")
    src.add_argument("--checkpoint", help="nested checkpoint written by `edgeprune-profile nest` or training")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of --random-init weights and of benchmark inputs")
    p.add_argument(
        "--order",
        choices=("importance", "keep"),
        default="importance",
        help="channel order of the nested levels: torch-pruning importance, or keep the stored order",
    )
    p.add_argument(
        "--mlp-round-to",
        type=int,
        default=1,
        help="round every level's MLP width to a multiple of this (e.g. 64: much faster kernels; default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Slice a ViT into stages, nest its pruning levels and profile it.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    lat = sub.add_parser("latency", help="measure latency per stage and level; write a profile")
    _add_model_args(lat, required=False)
    lat.add_argument("--stages", type=int, help="number of stages (balanced from per-block latencies)")
    lat.add_argument("--blocks", help="explicit partition, e.g. 0:3,3:6,6:9,9:12")
    lat.add_argument("--levels", help="pruning ratios, starting at 0 (default 0,0.1,...,0.6)")
    lat.add_argument("--device-name", default="local", help="device name(s), comma-separated, one per --threads")
    lat.add_argument("--threads", default="1", help="torch thread count(s), comma-separated")
    lat.add_argument("--samples", type=int, default=25, help="timed runs per stage and level")
    lat.add_argument("--warmup", type=int, default=5, help="untimed runs per stage and level first")
    lat.add_argument(
        "--append", action="store_true", help="add the device(s) to an existing --out profile (its partition is kept)"
    )
    lat.add_argument("--notes", default="", help="free text for the profile's provenance")
    lat.add_argument("--out", required=True, help="profile JSON to write")

    acc = sub.add_parser("accuracy", help="add top-1 accuracy per level to a profile")
    _add_model_args(acc, required=False)
    acc.add_argument("--profile", required=True, help="profile JSON written by `latency`")
    acc.add_argument("--data", help="image folder (one folder per class) or labelled CSV (path,label)")
    acc.add_argument("--dataset", choices=["digits"], help="built-in labelled data (for edgeprune-train checkpoints)")
    acc.add_argument("--random-vectors", type=int, default=20, help="random per-stage vectors (trained checkpoints)")
    acc.add_argument("--vectors", default="", help="per-stage level vectors to measure too, e.g. '0,0,1,2;0,3,3,0'")
    acc.add_argument("--template", action="append", help="prompt template with {} (repeatable)")
    acc.add_argument("--batch-size", type=int, default=32)
    acc.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    acc.add_argument("--out", help="profile to write (default: update --profile in place)")

    part = sub.add_parser("partition", help="min-max contiguous partition for devices of given speeds")
    part.add_argument("--profile", required=True)
    part.add_argument("--devices", required=True, help="name=relative_speed,... in pipeline order")
    part.add_argument("--stages", type=int, help="number of stages (must equal the number of devices)")
    part.add_argument("--device-name", help="profiled device whose per-block latencies to use (default: the first)")
    part.add_argument("--level", type=int, default=0, help="pruning level the partition is balanced at")
    part.add_argument("--any-order", action="store_true", help="also choose the order of the devices")
    part.add_argument(
        "--raw-block-latency",
        action="store_true",
        help="use each block's own measured latency (default: the median over the model's identical blocks)",
    )
    part.add_argument("--out", help="write the partition as JSON")

    nest = sub.add_parser(
        "nest", help="build nested stages and save a checkpoint (model id, partition, order, weights)"
    )
    _add_model_args(nest, required=False)
    nest.add_argument("--stages", type=int, required=True)
    nest.add_argument("--levels", help="pruning ratios, starting at 0 (default 0,0.1,...,0.6)")
    nest.add_argument("--out", required=True)
    return parser


def _parse_blocks(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (part.split(":") for part in text.split(","))]
    except ValueError:
        raise ModelError(f"--blocks = {text!r}: expected ranges such as 0:3,3:6,6:9,9:12") from None


def _load_pipeline(
    args: argparse.Namespace,
    blocks: Sequence[tuple[int, int]] | None,
    ratios: Sequence[float] | None,
    n_stages: int | None,
    with_text: bool = False,
) -> tuple[Any, Any]:
    """(StagedVision, LoadedModel or None) from the model arguments; stages even until re-balanced.

    ``ratios`` None means the checkpoint's levels, or the default ladder when building from a model.
    """
    from models.checkpoint import load_nested
    from models.levels import DEFAULT_RATIOS
    from models.loading import load_model, register_model_config
    from models.nested import build_nested
    from models.partition import even_partition

    if args.model_config:
        name = register_model_config(args.model_config)
        args.model = args.model or name
    if args.checkpoint:
        pipe = load_nested(args.checkpoint)
        if n_stages is not None and n_stages != len(pipe.stage_list):
            raise ModelError(f"--stages = {n_stages}: {args.checkpoint} holds {len(pipe.stage_list)} stages")
        if ratios is not None and tuple(ratios) != pipe.ratios:
            raise ModelError(f"--levels: {args.checkpoint} holds levels {list(pipe.ratios)}, not {list(ratios)}")
        loaded = None
        if with_text:
            loaded = load_model(
                pipe.info["model_id"],
                weights=args.weights,
                random_init=args.random_init,
                with_text=True,
                seed=args.seed,
            )
        return pipe, loaded
    if not args.model:
        raise ModelError("--model: required (or --checkpoint)")
    loaded = load_model(
        args.model, weights=args.weights, random_init=args.random_init, with_text=with_text, seed=args.seed
    )
    tower: Any = loaded.visual
    n_blocks = len(tower.transformer.resblocks)
    cuts = list(blocks) if blocks else even_partition(n_blocks, n_stages or 1)
    info = {"model_id": loaded.model_id, "weights": loaded.weights, "model_cfg": loaded.model_cfg}
    ladder_ratios = DEFAULT_RATIOS if ratios is None else ratios
    round_to = int(getattr(args, "mlp_round_to", 1))
    return build_nested(loaded.visual, cuts, ladder_ratios, order=args.order, info=info, mlp_round_to=round_to), loaded


def _balanced(pipe: Any, n_stages: int, threads: int, generator: Any) -> Any:
    """Re-cut ``pipe`` by the min-max partition of its measured per-block latencies (equal devices)."""
    import torch

    from models.benchmark import _Threads, block_latency_s
    from models.nested import restage
    from models.partition import min_max_partition, pool_identical_blocks

    with _Threads(threads), torch.inference_mode():
        embed_s, per_level, pool_s = block_latency_s(pipe, generator, samples=5)
    shapes = [(b.n_heads_full, b.head_dim, b.mlp_full) for s in pipe.stage_list for b in s.blocks]
    part = min_max_partition(pool_identical_blocks(per_level[0], shapes), [1.0] * n_stages, embed_s, pool_s)
    return restage(pipe, part.blocks)


def _cmd_latency(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import torch

    from edgeprune.profile import load_profile
    from models.benchmark import measure_device, merge_profiles, profile_for, provenance, write_profile
    from models.levels import parse_ratios

    threads = [_positive_int(t, "--threads") for t in args.threads.split(",")]
    names = [n.strip() for n in args.device_name.split(",")]
    if len(names) == 1 and len(threads) > 1:
        names = [f"{names[0]}-{t}thr" for t in threads]
    if len(names) != len(threads):
        raise ModelError(f"--device-name = {args.device_name}: {len(names)} names for {len(threads)} thread counts")
    if args.stages is None and not args.blocks and not args.checkpoint:
        raise ModelError("--stages: required (or --blocks)")
    blocks = _parse_blocks(args.blocks) if args.blocks else None
    if blocks and args.stages is not None and len(blocks) != args.stages:
        raise ModelError(f"--blocks = {args.blocks}: {len(blocks)} ranges but --stages = {args.stages}")
    old = load_profile(args.out) if args.append and Path(args.out).exists() else None
    if old is not None and blocks is None and old.blocks is not None:
        blocks = list(old.blocks)  # a device added to a profile is measured on the profile's partition
    prov = provenance(argv, args.notes)
    ratios = parse_ratios(args.levels) if args.levels else None
    pipe, _ = _load_pipeline(args, blocks, ratios, args.stages)
    pipe.eval()
    generator = torch.Generator().manual_seed(args.seed)
    if not blocks and not args.checkpoint and args.stages and args.stages > 1:
        pipe = _balanced(pipe, args.stages, threads[0], generator)
    devices = [
        measure_device(
            pipe, name, t, samples=args.samples, warmup=args.warmup, generator=generator, progress=not args.no_progress
        )
        for name, t in zip(names, threads, strict=True)
    ]
    if pipe.info.get("weights") == "random-init":
        prov["notes"] = (prov["notes"] + " " if prov["notes"] else "") + (
            "Random-init weights: latency only; accuracy not measured (no accuracy field)."
        )
    profile = profile_for(pipe, devices, prov, generator)
    if old is not None:
        profile = merge_profiles(old, profile)
    write_profile(profile, args.out)
    _print_latency_summary(profile)
    print(f"wrote {args.out}")
    return 0


def _print_latency_summary(profile: Any) -> None:
    for name, dev in profile.devices.items():
        print(f"device {name} ({dev.meta.get('threads')} threads): median ms per stage, by level ratio")
        print("  stage " + " ".join(f"{r:>7.2f}" for r in profile.ratios))
        for k in range(profile.n_stages):
            row = " ".join(f"{dev.quantile_s(k, lvl, 0.5) * 1e3:7.2f}" for lvl in range(profile.n_levels))
            print(f"  {k:>5} {row}")
        print(f"  switch one stage: {dev.switch_s * 1e6:.1f} us; memory per stage: {list(dev.memory_bytes or [])}")


def _positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ModelError(f"{option} = {text!r}: expected a positive integer")
    return value


def _parse_vectors(text: str) -> list[list[int]]:
    try:
        return [[int(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        raise ModelError(f"--vectors = {text!r}: expected level vectors such as 0,0,1,2;0,3,3,0") from None


def _check_checkpoint(args: argparse.Namespace, profile: Any, trained: bool) -> Any:
    """The checkpoint's metadata, refused when its ladder or stages cannot fit ``profile``; None without one.

    Reads only the checkpoint's header (tensors memory-mapped), so a mismatch is reported before any model,
    text tower or data set is loaded.
    """
    from models.checkpoint import read_meta
    from models.training.curves import checkpoint_file

    if not args.checkpoint:
        return None
    meta = read_meta(checkpoint_file(args.checkpoint))
    where = f"--checkpoint = {args.checkpoint}"
    if tuple(meta.ratios) != tuple(profile.ratios):
        raise ModelError(f"{where}: its levels {list(meta.ratios)} differ from {args.profile}'s {list(profile.ratios)}")
    if trained:
        if args.random_vectors and len(meta.partition) != profile.n_stages:
            raise ModelError(
                f"{where}: {len(meta.partition)} stages, but {args.profile} has {profile.n_stages}; "
                "per-stage vectors would not fit (pass --random-vectors 0 for the uniform curve only)"
            )
    elif profile.blocks is not None and tuple(meta.partition) != tuple(profile.blocks):
        raise ModelError(f"{where}: its partition {list(meta.partition)} differs from {args.profile}'s")
    return meta


def _cmd_accuracy(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from edgeprune.profile import load_profile
    from models.accuracy import DEFAULT_TEMPLATES, accuracy_curve, load_labelled, mark_proxy, zero_shot_head
    from models.benchmark import write_profile

    if (args.data is None) == (args.dataset is None):
        raise ModelError("accuracy: give exactly one of --data DIR_OR_CSV or --dataset digits")
    profile = load_profile(args.profile)
    trained = bool(args.checkpoint) and (Path(args.checkpoint).is_dir() or args.dataset is not None)
    meta = _check_checkpoint(args, profile, trained)
    if trained:
        return _trained_accuracy(args, profile, meta)
    vectors = _parse_vectors(args.vectors)
    model_id = profile.model.get("id")
    if not args.model and not args.checkpoint:
        if not model_id:
            raise ModelError(f"--profile = {args.profile}: the profile names no model; pass --model")
        args.model = model_id
    if profile.model.get("weights") == "random-init" and not (args.weights or args.random_init or args.checkpoint):
        raise ModelError(
            f"--weights: {args.profile} was measured with random-init weights; pass --weights PATH, "
            "--checkpoint CKPT, or --random-init to score random weights"
        )
    data = load_labelled(args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe, loaded = _load_pipeline(args, profile.blocks, profile.ratios, profile.n_stages, with_text=True)
    if pipe.ratios != profile.ratios or pipe.partition != profile.blocks:
        raise ModelError(f"--checkpoint = {args.checkpoint}: its levels or partition differ from {args.profile}")
    assert loaded is not None and loaded.clip is not None and loaded.tokenizer is not None
    head = zero_shot_head(loaded.clip, loaded.tokenizer, data.class_names, args.template or DEFAULT_TEMPLATES)
    curve = accuracy_curve(
        pipe.eval(), head, data, loaded.preprocess, vectors, batch_size=args.batch_size, progress=not args.no_progress
    )
    if loaded.weights == "random-init":
        curve = dataclasses.replace(curve, note=curve.note + "; RANDOM-INIT weights (not meaningful)")
    curve = mark_proxy(curve, profile, str(pipe.info.get("model_id", args.model)))
    out = args.out or args.profile
    write_profile(dataclasses.replace(profile, accuracy=curve), out)
    print("level  ratio  top1")
    for lvl, (r, a) in enumerate(zip(curve.ratios, curve.uniform, strict=True)):
        print(f"{lvl:>5}  {r:5.2f}  {a:.4f}")
    for vec, a in curve.per_stage.items():
        print(f"levels {list(vec)}: {a:.4f}")
    print(f"wrote {out}")
    return 0


def _trained_accuracy(args: argparse.Namespace, profile: Any, meta: Any) -> int:
    """Score an ``edgeprune-train`` checkpoint with its own trained head (no text tower needed)."""
    from models.accuracy import proxy_reason
    from models.training.curves import add_accuracy, print_curve

    out = args.out or args.profile
    reason = proxy_reason(profile, meta.model_id)
    curve = add_accuracy(
        args.checkpoint,
        args.profile,
        out,
        dataset=args.dataset,
        data=args.data,
        n_vectors=args.random_vectors,
        seed=args.seed,
        proxy=reason is not None,
        note=f"{reason}; top-1 of checkpoint {args.checkpoint}" if reason else "",
    )
    print_curve(curve)
    if reason:
        print(reason)
    print(f"wrote {out}")
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    import json

    from edgeprune.profile import load_profile
    from models.partition import best_device_order, min_max_partition, parse_devices, pool_identical_blocks

    profile = load_profile(args.profile)
    devices = parse_devices(args.devices)
    if args.stages is not None and args.stages != len(devices):
        raise ModelError(f"--stages = {args.stages}: --devices lists {len(devices)} devices, one per stage")
    dev = profile.device(args.device_name) if args.device_name else next(iter(profile.devices.values()))
    per_level = dev.meta.get("block_latency_s")
    if not per_level:
        raise ModelError(
            f"--profile = {args.profile}: devices.{dev.name}.meta has no block_latency_s "
            "(re-measure with `edgeprune-profile latency`)"
        )
    if not 0 <= args.level < len(per_level):
        raise ModelError(f"--level = {args.level}: outside 0..{len(per_level) - 1}")
    blocks_s = [float(v) for v in per_level[args.level]]
    if not args.raw_block_latency:  # every block of an open_clip ViT has one shape: differences are noise
        blocks_s = pool_identical_blocks(blocks_s, [0] * len(blocks_s))
    embed_s, pool_s = float(dev.meta.get("embed_latency_s", 0.0)), float(dev.meta.get("pool_latency_s", 0.0))
    if args.any_order:
        part = best_device_order(blocks_s, devices, embed_s, pool_s)
    else:
        part = min_max_partition(blocks_s, [s for _, s in devices], embed_s, pool_s, devices=[n for n, _ in devices])
    print(f"partition of {len(blocks_s)} blocks from {args.profile} (device {dev.name}, level {args.level}):")
    for k, ((a, b), name, speed, lat) in enumerate(
        zip(part.blocks, part.devices, part.speeds, part.stage_latency_s, strict=True)
    ):
        print(f"  stage {k}: blocks {a}:{b} on {name} (speed {speed:g}): {lat * 1e3:.2f} ms")
    print(f"  bottleneck {part.bottleneck_s * 1e3:.2f} ms -> {1.0 / part.bottleneck_s:.2f} requests/s")
    print("  --blocks " + ",".join(f"{a}:{b}" for a, b in part.blocks))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(part.to_dict(), indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _cmd_nest(args: argparse.Namespace) -> int:
    from models.checkpoint import save_nested
    from models.levels import parse_ratios

    pipe, _ = _load_pipeline(args, None, parse_ratios(args.levels) if args.levels else None, args.stages)
    save_nested(pipe, args.out)
    print(f"wrote {args.out}: {len(pipe.stage_list)} stages {list(pipe.partition)}, levels {list(pipe.ratios)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-profile``; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "partition":  # needs only the profile, not torch
            return _cmd_partition(args)
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelError(
                "torch is not installed; install it (see README), then `pip install edgeprune[models]`"
            ) from None
        if args.command == "latency":
            return _cmd_latency(args, argv)
        if args.command == "accuracy":
            return _cmd_accuracy(args)
        return _cmd_nest(args)
    except EdgePruneError as exc:
        return report_error(PROG, exc)
    except Terminated as exc:  # SIGTERM / SIGHUP during a write
        print(f"{PROG}: interrupted ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
