"""Accuracy curves of a nested classifier: every uniform level and random per-stage level vectors.

Stages are pruned independently at run time, so a profile's accuracy section (see
:mod:`edgeprune.profile`) holds the uniform curve (every stage at level ``i``) and measured per-stage
vectors; for an unmeasured vector the controller interpolates the uniform curve at the vector's mean
ratio.  :func:`deviations` measures how far each measured vector is from that interpolation — small
deviations are what make the interpolation (and the controller's accuracy floor) trustworthy.

Command line (what ``edgeprune-profile accuracy --checkpoint`` should delegate to for trained
checkpoints; see the training issue's report)::

    python -m models.training.curves --checkpoint ckpt/run [--dataset digits | --data DIR|FILE.csv]
        --profile LATENCY.json --out PROFILE.json [--vectors 20] [--seed 0] [--proxy] [--note TEXT]
    python -m models.training.curves --checkpoint ckpt/run --dataset digits --out ACC.json   # no profile yet
    python -m models.training.curves --merge ACC.json --profile LATENCY.json --out PROFILE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch

from edgeprune.errors import EdgePruneError, ModelError
from edgeprune.profile import AccuracyCurve, Profile, load_profile
from models.training.data import Split

__all__ = [
    "Leveled",
    "add_accuracy",
    "checkpoint_curve",
    "checkpoint_file",
    "curve_from_standalone",
    "deviations",
    "main",
    "measure_curve",
    "random_vectors",
    "standalone_dict",
    "top1",
    "with_accuracy",
]

PROG = "python -m models.training.curves"


class Leveled(Protocol):
    """Anything that maps images to logits and switches per-stage levels."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def set_levels(self, levels: int | Sequence[int]) -> None: ...


def top1(model: Leveled, split: Split, vectors: Sequence[Sequence[int]], batch_size: int = 256) -> list[float]:
    """Top-1 accuracy at each level vector; each batch is read once and scored at every vector."""
    correct = [0] * len(vectors)
    n = len(split)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            images, truth = split.images(idx), split.labels[idx]
            for i, vec in enumerate(vectors):
                model.set_levels(list(vec))
                correct[i] += int((model(images).argmax(dim=-1) == truth).sum())
    model.set_levels(0)
    return [c / n for c in correct]


def random_vectors(n_stages: int, n_levels: int, count: int, generator: torch.Generator) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct non-uniform level vectors, each stage's level uniform over the ladder."""
    possible = n_levels**n_stages - n_levels
    want = min(count, possible)
    out: list[tuple[int, ...]] = []
    while len(out) < want:
        vec = tuple(int(v) for v in torch.randint(0, n_levels, (n_stages,), generator=generator))
        if len(set(vec)) > 1 and vec not in out:
            out.append(vec)
    return out


def measure_curve(
    model: Leveled,
    split: Split,
    ratios: Sequence[float],
    n_stages: int,
    *,
    n_vectors: int,
    generator: torch.Generator,
    dataset: str,
    proxy: bool = False,
    note: str = "",
) -> AccuracyCurve:
    """Uniform curve plus ``n_vectors`` random per-stage vectors, on ``split``."""
    uniform = [[lvl] * n_stages for lvl in range(len(ratios))]
    per_stage = random_vectors(n_stages, len(ratios), n_vectors, generator)
    acc = top1(model, split, uniform + [list(v) for v in per_stage])
    curve = AccuracyCurve(
        ratios=tuple(float(r) for r in ratios),
        uniform=tuple(acc[: len(ratios)]),
        per_stage=dict(zip(per_stage, acc[len(ratios) :], strict=True)),
        metric="top1",
        dataset=dataset,
        proxy=proxy,
        note=note,
    )
    from models.accuracy import with_wilson_intervals  # local: models.accuracy pulls in the CLIP slicing

    return with_wilson_intervals(curve, len(split))


def deviations(curve: AccuracyCurve) -> dict[tuple[int, ...], float]:
    """Measured accuracy of each per-stage vector minus the uniform curve at the vector's mean ratio."""
    bare = AccuracyCurve(ratios=curve.ratios, uniform=curve.uniform)
    return {vec: acc - bare.of(vec) for vec, acc in curve.per_stage.items()}


def with_accuracy(profile: Profile, curve: AccuracyCurve) -> Profile:
    """``profile`` with ``curve`` as its accuracy section; ladders and stage counts must match."""
    if tuple(profile.ratios) != tuple(curve.ratios):
        raise ModelError(
            f"--profile = {profile.source}: its levels {list(profile.ratios)} differ from the checkpoint's "
            f"{list(curve.ratios)}"
        )
    n = {len(v) for v in curve.per_stage}
    if n and n != {profile.n_stages}:
        raise ModelError(
            f"--profile = {profile.source}: {profile.n_stages} stages, but the checkpoint has {n.pop()}; "
            "per-stage vectors would not fit"
        )
    return dataclasses.replace(profile, accuracy=curve)


# ---------------------------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ModelError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Write a trained checkpoint's accuracy curves into a profile.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="training output folder (or its model.pt) to measure")
    what.add_argument("--merge", help="standalone accuracy JSON (written without --profile) to put into --profile")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=("digits",), help="built-in data: its fixed validation split")
    src.add_argument("--data", help="image folder (one folder per class) or labelled CSV: every image is scored")
    p.add_argument("--profile", help="latency profile to add the accuracy section to (else: standalone --out)")
    p.add_argument("--out", help="file to write (default: update --profile in place)")
    p.add_argument("--vectors", type=int, default=20, help="random per-stage level vectors to measure")
    p.add_argument("--seed", type=int, default=0, help="seed of the random per-stage vectors")
    p.add_argument("--proxy", action="store_true", help="mark the curve as measured on a proxy model / data")
    p.add_argument("--dataset-label", default="", help="text for accuracy.dataset (default: describes the data)")
    p.add_argument("--note", default="", help="text for accuracy.note")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def checkpoint_file(path: str | Path) -> Path:
    """``model.pt`` inside a training folder, or the file itself."""
    p = Path(path)
    return p / "model.pt" if p.is_dir() else p


def _eval_split(
    pipe: Any, class_names: Sequence[str], dataset: str | None, data: str | Path | None
) -> tuple[Split, str]:
    from models.training import data as datasets

    if dataset is not None:
        if dataset != datasets.DIGITS:
            raise ModelError(f"--dataset = {dataset!r}: unknown built-in data set (valid: 'digits')")
        d = datasets.digits(pipe.image_size)
        return d.val, f"{d.source}, validation split ({len(d.val)} images)"
    if data is None:
        raise ModelError("--data or --dataset: required")
    import open_clip

    from models.accuracy import load_labelled

    found = load_labelled(data)
    if tuple(found.class_names) != tuple(class_names):
        raise ModelError(f"--data = {data}: its classes differ from the checkpoint's head ({len(class_names)})")
    preprocess = open_clip.image_transform(pipe.image_size, is_train=False)
    split = datasets.FileSplit(found.paths, torch.tensor(found.labels), preprocess)
    return split, f"{found.source} ({len(found.paths)} images, {len(found.class_names)} classes)"


def checkpoint_curve(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data: str | Path | None = None,
    n_vectors: int = 20,
    seed: int = 0,
    proxy: bool = False,
    dataset_label: str = "",
    note: str = "",
    n_stages: int | None = None,
) -> tuple[AccuracyCurve, Any]:
    """Measure a trained checkpoint with its own head: ``(curve, pipe)``.

    ``dataset="digits"`` scores the fixed digits validation split (never trained on); ``data`` scores every
    image of a folder / CSV whose classes match the checkpoint's head.  ``n_stages``, when given, must
    equal the checkpoint's stage count (checked before any image is read).
    """
    from models.checkpoint import load_nested

    if n_vectors < 0:
        raise ModelError(f"--vectors = {n_vectors}: must be >= 0")
    pipe = load_nested(checkpoint_file(checkpoint))
    head = pipe.stage_list[-1].classifier
    if head is None:
        raise ModelError(f"--checkpoint = {checkpoint}: no classification head (not a trained checkpoint)")
    if n_vectors and n_stages is not None and n_stages != len(pipe.stage_list):
        raise ModelError(
            f"--profile: {n_stages} stages, but the checkpoint has {len(pipe.stage_list)}; "
            "per-stage vectors would not fit"
        )
    split, described = _eval_split(pipe, head.class_names, dataset, data)
    curve = measure_curve(
        pipe,
        split,
        pipe.ratios,
        len(pipe.stage_list),
        n_vectors=n_vectors,
        generator=torch.Generator().manual_seed(seed),
        dataset=dataset_label or described,
        proxy=proxy,
        note=note or f"top-1 of checkpoint {checkpoint}",
    )
    return curve, pipe


def add_accuracy(checkpoint: str | Path, profile_path: str | Path, out_path: str | Path, **kw: Any) -> AccuracyCurve:
    """Measure ``checkpoint`` (see :func:`checkpoint_curve` for ``kw``); write the profile + accuracy."""
    from models.benchmark import write_profile

    profile = load_profile(profile_path)
    curve, _ = checkpoint_curve(checkpoint, n_stages=profile.n_stages, **kw)
    write_profile(with_accuracy(profile, curve), out_path)
    return curve


STANDALONE = "edgeprune.accuracy"


def standalone_dict(curve: AccuracyCurve, pipe: Any, checkpoint: str | Path) -> dict[str, Any]:
    """A curve on its own (no latency profile yet): the profile's accuracy section plus ladder and partition."""
    return {
        "schema": STANDALONE,
        "version": 1,
        "model": {"id": pipe.info.get("model_id", ""), "checkpoint": str(checkpoint)},
        "partition": {"n_stages": len(pipe.stage_list), "blocks": [list(b) for b in pipe.partition]},
        "levels": {"ratios": list(curve.ratios)},
        "accuracy": {
            "metric": curve.metric,
            "dataset": curve.dataset,
            "proxy": curve.proxy,
            "note": curve.note,
            "uniform": list(curve.uniform),
            "per_stage": [
                {"levels": list(v), "accuracy": a}
                | ({"interval": list(curve.per_stage_interval[v])} if v in curve.per_stage_interval else {})
                for v, a in curve.per_stage.items()
            ],
        }
        | (
            {
                "n_evaluated": curve.n_evaluated,
                "interval": curve.interval,
                "uniform_interval": [list(b) for b in curve.uniform_interval],
            }
            if curve.uniform_interval is not None
            else {}
        ),
    }


def curve_from_standalone(path: str | Path) -> AccuracyCurve:
    """Read a file written by :func:`standalone_dict`."""
    import json

    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        if raw.get("schema") != STANDALONE:
            raise ModelError(f"--merge = {p}: not a standalone accuracy file (schema != {STANDALONE!r})")
        a = raw["accuracy"]
        return AccuracyCurve(
            ratios=tuple(float(r) for r in raw["levels"]["ratios"]),
            uniform=tuple(float(x) for x in a["uniform"]),
            per_stage={tuple(int(v) for v in e["levels"]): float(e["accuracy"]) for e in a.get("per_stage", [])},
            metric=str(a.get("metric", "top1")),
            dataset=str(a.get("dataset", "")),
            proxy=bool(a.get("proxy", False)),
            note=str(a.get("note", "")),
            n_evaluated=int(a["n_evaluated"]) if a.get("n_evaluated") is not None else None,
            interval=str(a.get("interval", "")),
            uniform_interval=(
                tuple((float(lo), float(hi)) for lo, hi in a["uniform_interval"]) if a.get("uniform_interval") else None
            ),
            per_stage_interval={
                tuple(int(v) for v in e["levels"]): (float(e["interval"][0]), float(e["interval"][1]))
                for e in a.get("per_stage", [])
                if e.get("interval") is not None
            },
        )
    except FileNotFoundError:
        raise ModelError(f"--merge = {p}: file not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"--merge = {p}: malformed accuracy file ({type(exc).__name__}: {exc})") from None


def _run(args: argparse.Namespace) -> int:
    import json

    from edgeprune.results import atomic_write_text
    from models.benchmark import write_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or args.profile
    if not out:
        raise ModelError("--out: required without --profile (a standalone accuracy file is written there)")
    if args.merge:
        if not args.profile:
            raise ModelError("--merge needs --profile (the latency profile to add the accuracy section to)")
        curve = curve_from_standalone(args.merge)
        write_profile(with_accuracy(load_profile(args.profile), curve), out)
    else:
        if not (args.dataset or args.data):
            raise ModelError("--data or --dataset: required with --checkpoint")
        kw: dict[str, Any] = {
            "dataset": args.dataset,
            "data": args.data,
            "n_vectors": args.vectors,
            "seed": args.seed,
            "proxy": args.proxy,
            "dataset_label": args.dataset_label,
            "note": args.note,
        }
        if args.profile:
            curve = add_accuracy(args.checkpoint, args.profile, out, **kw)
        else:
            curve, pipe = checkpoint_curve(args.checkpoint, **kw)
            text = json.dumps(standalone_dict(curve, pipe, args.checkpoint), indent=1) + "\n"
            atomic_write_text(Path(out), text)
    print_curve(curve)
    print(f"wrote {out}")
    return 0


def print_curve(curve: AccuracyCurve) -> None:
    """The uniform curve and the per-stage vectors' deviation from it, as a small table."""
    print("level  ratio  top1")
    for lvl, (r, a) in enumerate(zip(curve.ratios, curve.uniform, strict=True)):
        print(f"{lvl:>5}  {r:5.2f}  {a:.4f}")
    dev = deviations(curve)
    if dev:
        worst = max(dev.values(), key=abs)
        mean_abs = math.fsum(abs(v) for v in dev.values()) / len(dev)
        print(f"{len(dev)} per-stage vectors: mean |deviation| from uniform {mean_abs:.4f}, worst {worst:+.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors are one line on stderr with exit status 2."""
    try:
        return _run(_parser().parse_args(argv))
    except EdgePruneError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
