"""Top-1 accuracy per pruning level on a user's labelled images, by CLIP zero-shot classification.

Data: an image folder with one sub-folder per class (``DIR/zebra/*.jpg``; the folder name, with ``_`` as a
space, is the class name), or a CSV file with a header holding ``path`` (or ``image`` / ``file``) and
``label`` columns (paths relative to the CSV's folder; the label is the class name).  Class prompts
("a photo of a {name}.") are embedded once by the text tower into a :class:`~models.slicing.ZeroShotHead`;
then each image goes through the nested pipeline at every requested level vector (uniform levels and any
per-stage vectors), decoding each image once.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from edgeprune.errors import ModelError
from edgeprune.profile import AccuracyCurve
from models.nested import StagedVision
from models.slicing import ZeroShotHead

__all__ = [
    "DEFAULT_TEMPLATES",
    "IMAGE_SUFFIXES",
    "LabelledImages",
    "accuracy_curve",
    "load_labelled",
    "top1_per_vector",
    "wilson_interval",
    "with_wilson_intervals",
    "zero_shot_head",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class LabelledImages:
    """Image paths with integer labels into ``class_names``."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str


def _image_folder(root: Path) -> LabelledImages:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for idx, folder in enumerate(classes):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(idx)
    if len(classes) < 2 or not paths:
        raise ModelError(
            f"--data = {root}: need at least two class folders holding images ({len(classes)} folders, "
            f"{len(paths)} images)"
        )
    names = tuple(d.name.replace("_", " ") for d in classes)
    return LabelledImages(tuple(paths), tuple(labels), names, str(root))


def _labelled_csv(path: Path) -> LabelledImages:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        col = next((fields[c] for c in ("path", "image", "file", "filename") if c in fields), None)
        if col is None or "label" not in fields:
            raise ModelError(f"--data = {path}: CSV needs a header with 'path' and 'label' columns")
        rows = [(r[col].strip(), r[fields["label"]].strip()) for r in reader]
    names = tuple(sorted({lab for _, lab in rows}))
    if len(names) < 2:
        raise ModelError(f"--data = {path}: need at least two distinct labels, found {len(names)}")
    index = {n: i for i, n in enumerate(names)}
    paths = []
    for line, (rel, _) in enumerate(rows, start=2):
        p = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        if not p.is_file():
            raise ModelError(f"--data = {path}: line {line}: image {rel!r} not found")
        paths.append(p)
    return LabelledImages(tuple(paths), tuple(index[lab] for _, lab in rows), names, str(path))


def load_labelled(path: str | Path) -> LabelledImages:
    """An image folder (one sub-folder per class) or a labelled CSV file."""
    p = Path(path)
    if p.is_dir():
        return _image_folder(p)
    if p.is_file() and p.suffix.lower() == ".csv":
        return _labelled_csv(p)
    raise ModelError(f"--data = {p}: not a folder of class folders nor a .csv file")


def zero_shot_head(
    clip_model: nn.Module,
    tokenizer: Callable[..., torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> ZeroShotHead:
    """Embed every class's prompts once (mean of normalised template embeddings)."""
    clip: Any = clip_model
    with torch.inference_mode():
        rows = []
        for name in class_names:
            tokens = tokenizer([t.format(name) for t in templates])
            emb = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1).mean(0)
            rows.append(emb)
        scale = float(clip.logit_scale.exp()) if hasattr(clip, "logit_scale") else 100.0
    return ZeroShotHead(torch.stack(rows), scale, class_names)


def _open_image(path: Path, preprocess: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return preprocess(im.convert("RGB"))
    except (OSError, UnidentifiedImageError):
        raise ModelError(f"--data: cannot read image {path}") from None


def top1_per_vector(
    pipe: StagedVision,
    head: ZeroShotHead,
    data: LabelledImages,
    preprocess: Callable[[Any], torch.Tensor],
    vectors: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> list[float]:
    """Top-1 accuracy of the pipeline (+ ``head``) at each per-stage level vector."""
    correct = [0] * len(vectors)
    labels = torch.tensor(data.labels)
    bar = tqdm(total=len(data.paths), desc="accuracy", unit="img", file=sys.stderr, disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, len(data.paths), batch_size):
            batch = torch.stack([_open_image(p, preprocess) for p in data.paths[start : start + batch_size]])
            truth = labels[start : start + batch_size]
            for i, vec in enumerate(vectors):
                pipe.set_levels(list(vec))
                pred = head(pipe(batch)).argmax(dim=-1)
                correct[i] += int((pred == truth).sum())
            bar.update(len(batch))
    bar.close()
    pipe.set_levels(0)
    return [c / len(data.paths) for c in correct]


#: Confidence level of the accuracy intervals written into profiles.
INTERVAL_LEVEL = 0.95


def wilson_interval(correct: int, n: int, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (Wilson 1927), as ``(low, high)`` in [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 or n correct, which
    matters for accuracies near 1 scored on a few hundred images.
    """
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got {correct} of {n}")
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return float(max(0.0, ci.low)), float(min(1.0, ci.high))


def with_wilson_intervals(curve: AccuracyCurve, n_evaluated: int, level: float = INTERVAL_LEVEL) -> AccuracyCurve:
    """``curve`` with a Wilson interval on every value, each scored on the same ``n_evaluated`` images."""

    def bounds(acc: float) -> tuple[float, float]:
        return wilson_interval(round(acc * n_evaluated), n_evaluated, level)

    return dataclasses.replace(
        curve,
        n_evaluated=n_evaluated,
        interval=f"wilson-{level * 100:g}",
        uniform_interval=tuple(bounds(a) for a in curve.uniform),
        per_stage_interval={k: bounds(a) for k, a in curve.per_stage.items()},
    )


def accuracy_curve(
    pipe: StagedVision,
    head: ZeroShotHead,
    data: LabelledImages,
    preprocess: Callable[[Any], torch.Tensor],
    per_stage: Sequence[Sequence[int]] = (),
    *,
    batch_size: int = 32,
    progress: bool = True,
    note: str = "",
) -> AccuracyCurve:
    """Uniform-ladder accuracy (every stage at level ``i``) plus the given per-stage vectors."""
    n_stages, n_levels = len(pipe.stage_list), len(pipe.levels)
    for vec in per_stage:
        if len(vec) != n_stages or any(not 0 <= v < n_levels for v in vec):
            raise ModelError(f"--vectors: {list(vec)} needs {n_stages} levels in 0..{n_levels - 1}")
    uniform = [[lvl] * n_stages for lvl in range(n_levels)]
    vectors = uniform + [list(v) for v in per_stage]
    acc = top1_per_vector(pipe, head, data, preprocess, vectors, batch_size=batch_size, progress=progress)
    curve = AccuracyCurve(
        ratios=pipe.ratios,
        uniform=tuple(acc[:n_levels]),
        per_stage={tuple(v): a for v, a in zip(vectors[n_levels:], acc[n_levels:], strict=True)},
        metric="top1",
        dataset=f"{data.source} ({len(data.paths)} images, {len(data.class_names)} classes)",
        proxy=False,
        note=note or "zero-shot CLIP classification from class names",
    )
    return with_wilson_intervals(curve, len(data.paths))
