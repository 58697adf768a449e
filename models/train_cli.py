"""``edgeprune-train``: train a model to survive pruning applied after deployment, at runtime levels.

Examples::

    edgeprune-train --model tiny-vit --dataset digits --strategy sandwich           # built-in data, minutes on a CPU
    edgeprune-train --model hf-hub:imageomics/bioclip --data DIR --strategy sandwich-distill --epochs 5 \\
        --out ckpt/bioclip-robust                                                    # one folder per class
    edgeprune-train --out ckpt/bioclip-robust --resume                               # continue after an interruption

Hyper-parameters come from ``models/configs/<strategy>-<set>.toml`` (``--hparams a|b``) or ``--config
FILE``; ``--epochs``, ``--lr``, ``--batch-size`` and ``--k`` override single values.  The output folder holds
``model.pt`` (a nested checkpoint: ``models.checkpoint.load_nested``), ``train.json`` (spec, history,
accuracy curves) and ``train_state.pt`` (for ``--resume``).  Curves into a profile:
``python -m models.training.curves --checkpoint DIR --dataset digits --profile P.json --out P2.json``.

Errors a user can cause print ``edgeprune-train: error: <one line>`` and exit with status 2, before
anything is written.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.cli.common import ArgumentParser, report_error, seed_arg
from edgeprune.errors import ConfigError, EdgePruneError, ModelError

PROG = "edgeprune-train"
DEFAULT_HPARAMS = "a"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Pruning-aware training: accuracy that survives post-deployment pruning.")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="tiny-vit, an open_clip architecture, hf-hub:org/repo or local-dir:PATH")
    m.add_argument("--model-config", help="register an open_clip config JSON; its stem becomes a --model name")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--weights", help="local open_clip checkpoint for an architecture --model")
    src.add_argument("--random-init", action="store_true", default=None, help="start from random weights")
    m.add_argument("--head", choices=("linear", "zero-shot"), help="trained cosine head, or frozen class prompts")
    m.add_argument("--stages", type=int, help="pipeline stages, even block split (default 4)")
    m.add_argument("--blocks", help="explicit partition, e.g. 0:3,3:6,6:9,9:12")
    m.add_argument("--levels", help="pruning ratios of the ladder (default 0,0.1,...,0.6)")
    d = p.add_argument_group("data")
    data = d.add_mutually_exclusive_group()
    data.add_argument("--dataset", choices=("digits",), help="built-in data set (scikit-learn digits)")
    data.add_argument("--data", help="image folder (one folder per class) or labelled CSV (path,label)")
    d.add_argument("--val-data", help="separate validation folder/CSV (default: hold out --val-fraction)")
    d.add_argument("--val-fraction", type=float, help="share of --data held out for validation (default 0.2)")
    d.add_argument("--split-seed", type=int, help="seed of the validation hold-out (default 0)")
    t = p.add_argument_group("training")
    t.add_argument("--strategy", help="baseline, sandwich or sandwich-distill")
    t.add_argument("--hparams", help="named hyper-parameter set: a or b (default a)")
    t.add_argument("--config", help="hyper-parameter TOML file instead of a named set")
    t.add_argument("--epochs", type=int, help="override the config's epochs")
    t.add_argument("--lr", type=float, help="override the config's peak learning rate")
    t.add_argument("--batch-size", type=int, help="override the config's batch size")
    t.add_argument("--k", type=int, help="override the config's random level vectors per step")
    t.add_argument("--seed", type=seed_arg, help="seed of initialisation, data order and level sampling (default 0)")
    t.add_argument("--vectors", type=int, help="random per-stage vectors scored at the end (default 20)")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (default ckpt/<model>-<strategy>-<set>-seed<seed>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _parse_blocks(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(a), int(b)) for a, b in (part.split(":") for part in text.split(",")))
    except ValueError:
        raise ModelError(f"--blocks = {text!r}: expected ranges such as 0:3,3:6,6:9,9:12") from None


def _config(args: argparse.Namespace, base: Any, pretrained: bool) -> tuple[Any, str]:
    """The effective TrainConfig and its name (named set, file stem, or the resumed run's)."""
    from models.training.config import TrainConfig, config_path, load_config

    if args.config:
        cfg = load_config(args.config)
        if args.strategy and args.strategy != cfg.strategy:
            raise ConfigError(f"--strategy = {args.strategy!r}: {args.config} configures {cfg.strategy!r}")
        name = Path(args.config).stem
    elif args.strategy or args.hparams or base is None:
        if not args.strategy:
            raise ModelError("--strategy: required (baseline, sandwich or sandwich-distill), or --config FILE")
        hp = args.hparams or DEFAULT_HPARAMS
        cfg, name = load_config(config_path(args.strategy, hp)), f"{args.strategy}-{hp}"
    else:
        return base.config, base.config_name
    if pretrained:
        cfg = cfg.for_pretrained()
    over = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "k_random": args.k}
    over = {k: v for k, v in over.items() if v is not None}
    if over:
        from edgeprune.config import Ctx, build

        cfg = build(TrainConfig, {**cfg.to_dict(), **over}, Ctx("command line"))
    return cfg, name


def _pick(value: Any, base: Any, field: str, default: Any) -> Any:
    """An explicit option, else the resumed run's value, else the default."""
    if value is not None:
        return value
    return getattr(base, field) if base is not None else default


def _spec(args: argparse.Namespace, base: Any) -> Any:
    """The run spec from the options (a resumed run supplies what the options leave out)."""
    from models.levels import DEFAULT_RATIOS, parse_ratios
    from models.training.loop import RunSpec
    from models.training.network import TINY_VIT

    model = _pick(args.model, base, "model_id", None)
    if not model:
        raise ModelError("--model: required (e.g. tiny-vit or hf-hub:imageomics/bioclip)")
    random_init = bool(_pick(args.random_init, base, "random_init", False))
    weights = _pick(args.weights, base, "weights", None)
    pretrained = model != TINY_VIT and not random_init
    cfg, name = _config(args, base, pretrained)
    data = "digits" if args.dataset else args.data
    data = _pick(data, base, "data", None)
    if data is None:
        raise ModelError("--data or --dataset digits: required")
    if data != "digits" and not Path(data).exists():
        raise ModelError(f"--data = {data}: no such folder or file")
    if args.stages is not None and args.stages < 1:
        raise ModelError(f"--stages = {args.stages}: need at least one stage")
    blocks = _parse_blocks(args.blocks) if args.blocks else (base.blocks if base is not None else None)
    ratios = parse_ratios(args.levels) if args.levels else _pick(None, base, "ratios", DEFAULT_RATIOS)
    vectors = _pick(args.vectors, base, "eval_vectors", 20)
    if vectors < 0:
        raise ModelError(f"--vectors = {vectors}: must be >= 0")
    return RunSpec(
        model_id=model,
        config=cfg,
        config_name=name,
        data=data,
        val_data=_pick(args.val_data, base, "val_data", None),
        val_fraction=float(_pick(args.val_fraction, base, "val_fraction", 0.2)),
        split_seed=int(_pick(args.split_seed, base, "split_seed", 0)),
        weights=weights,
        random_init=random_init,
        head=_pick(args.head, base, "head", "linear" if model == TINY_VIT else "zero-shot"),
        n_stages=int(_pick(args.stages, base, "n_stages", len(blocks) if blocks else 4)),
        blocks=blocks,
        ratios=tuple(ratios),
        seed=int(_pick(args.seed, base, "seed", 0)),
        eval_vectors=int(vectors),
    )


def _default_out(spec: Any) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.model_id).strip("-")
    return Path("ckpt") / f"{slug}-{spec.config_name}-seed{spec.seed}"


def _check_out(out: Path, resume: bool) -> None:
    from models.training.loop import STATE_FILE

    if out.exists() and not out.is_dir():
        raise ModelError(f"--out = {out}: exists and is not a folder")
    if not resume and (out / STATE_FILE).exists():
        raise ModelError(f"--out = {out}: already holds a training run; pass --resume or choose another folder")


def _run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        raise ModelError(
            "torch is not installed; install it (see README), then `pip install edgeprune[models]`"
        ) from None
    from models.training.curves import print_curve
    from models.training.loop import MODEL_FILE, SIDECAR_FILE, read_state_spec, train

    if args.model_config:
        from models.loading import register_model_config

        name = register_model_config(args.model_config)
        args.model = args.model or name
    if args.resume and not args.out:
        raise ModelError("--resume needs --out (the folder of the run to continue)")
    base = read_state_spec(args.out) if args.resume else None
    spec = _spec(args, base)
    out = Path(args.out) if args.out else _default_out(spec)
    _check_out(out, args.resume)
    if spec.blocks is not None and len(spec.blocks) != spec.n_stages:
        raise ModelError(f"--blocks: {len(spec.blocks)} ranges but --stages = {spec.n_stages}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(spec, out=out, resume=args.resume, progress=not args.no_progress)
    assert result is not None
    h = result.history[-1]
    print(
        f"{spec.model_id} {spec.config_name} seed {spec.seed}: {len(result.history)} epochs, "
        f"{result.seconds:.0f} s, last loss {h['loss']:.4f}"
    )
    print_curve(result.curve)
    print(f"wrote {out / MODEL_FILE} and {out / SIDECAR_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-train``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return _run(args)
    except EdgePruneError as exc:
        return report_error(PROG, exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
