"""Labelled images for training and evaluation: built-in digits, an image folder, or a labelled CSV.

* ``digits`` — scikit-learn's 1797 handwritten 8×8 digits (shipped inside the wheel, so it works offline),
  bilinearly upsampled to the model's input size, grey replicated to 3 channels, scaled to [-1, 1].  A
  fixed stratified split (25 % validation, split seed 0) makes every run and every strategy score the same
  450 validation images.
* an image folder (one sub-folder per class) or a CSV with ``path`` and ``label`` columns — read by
  :func:`models.accuracy.load_labelled`; images are decoded lazily with the model's preprocessing, and a
  seeded stratified share is held out for validation unless a separate validation source is given.

A :class:`Split` hands out batches by index, so the training loop draws the order with its own
``torch.Generator`` (seeded, resumable) and never touches the global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from edgeprune.errors import ModelError

__all__ = [
    "DIGITS",
    "FileSplit",
    "Split",
    "TensorSplit",
    "TrainData",
    "digits",
    "image_files",
    "shift_augment",
    "stratified_split",
]

DIGITS = "digits"
DIGITS_VAL_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


class Split(Protocol):
    """Labelled images addressed by index."""

    @property
    def labels(self) -> torch.Tensor:
        """Class index of every image."""
        ...

    def __len__(self) -> int: ...

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Images ``[len(idx), 3, H, W]`` of the given indices."""
        ...


@dataclass(frozen=True)
class TensorSplit:
    """Images held in memory as one tensor (digits, or anything small)."""

    pixels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Index the in-memory tensor."""
        return self.pixels[idx]

    def take(self, idx: torch.Tensor) -> TensorSplit:
        """A subset (e.g. a short test run)."""
        return TensorSplit(self.pixels[idx], self.labels[idx])


@dataclass(frozen=True)
class FileSplit:
    """Image files decoded on demand with the model's preprocessing (large user data sets)."""

    paths: tuple[Path, ...]
    labels: torch.Tensor
    preprocess: Callable[[Any], torch.Tensor]

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Decode and preprocess the files of ``idx``."""
        from models.accuracy import _open_image

        return torch.stack([_open_image(self.paths[int(i)], self.preprocess) for i in idx])


@dataclass(frozen=True)
class TrainData:
    """A training and a validation split over the same classes, and where they came from."""

    train: Split
    val: Split
    class_names: tuple[str, ...]
    source: str

    def describe(self) -> str:
        """One line: source, sizes and class count (stored in checkpoints and profiles)."""
        return (
            f"{self.source} ({len(self.train)} train / {len(self.val)} validation images, "
            f"{len(self.class_names)} classes)"
        )


def stratified_split(
    labels: torch.Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)`` holding out ``val_fraction`` of every class (at least one image each)."""
    if not 0.0 < val_fraction < 1.0:
        raise ModelError(f"--val-fraction = {val_fraction}: expected a number between 0 and 1")
    train, val = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = max(1, round(len(members) * val_fraction))
        if n_val >= len(members):
            raise ModelError(f"class {cls}: {len(members)} image(s) cannot be split into training and validation")
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def digits(image_size: tuple[int, int]) -> TrainData:
    """scikit-learn's digits, upsampled to ``image_size``, with the fixed validation split."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    small = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=image_size, mode="bilinear", align_corners=False)
    pixels = ((big - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    labels = torch.tensor(raw.target, dtype=torch.long)
    train, val = stratified_split(labels, DIGITS_VAL_FRACTION, torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    full = TensorSplit(pixels, labels)
    names = tuple(str(i) for i in range(10))
    return TrainData(full.take(train), full.take(val), names, "sklearn digits (8x8 upsampled)")


def _file_split(paths: Sequence[Path], labels: Sequence[int], preprocess: Callable[[Any], torch.Tensor]) -> FileSplit:
    return FileSplit(tuple(paths), torch.tensor(list(labels), dtype=torch.long), preprocess)


def image_files(
    path: str | Path,
    preprocess: Callable[[Any], torch.Tensor],
    *,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    val_path: str | Path | None = None,
) -> TrainData:
    """An image folder or labelled CSV; validation is ``val_path`` or a seeded stratified hold-out."""
    from models.accuracy import load_labelled

    data = load_labelled(path)
    if val_path is not None:
        held = load_labelled(val_path)
        if held.class_names != data.class_names:
            raise ModelError(
                f"--val-data = {val_path}: its classes differ from --data's ({len(held.class_names)} vs "
                f"{len(data.class_names)})"
            )
        train = _file_split(data.paths, data.labels, preprocess)
        val = _file_split(held.paths, held.labels, preprocess)
        return TrainData(train, val, data.class_names, f"{data.source} + validation {held.source}")
    labels = torch.tensor(data.labels, dtype=torch.long)
    tr, va = stratified_split(labels, val_fraction, torch.Generator().manual_seed(split_seed))
    train = _file_split([data.paths[i] for i in tr.tolist()], [data.labels[i] for i in tr.tolist()], preprocess)
    val = _file_split([data.paths[i] for i in va.tolist()], [data.labels[i] for i in va.tolist()], preprocess)
    return TrainData(train, val, data.class_names, data.source)


def shift_augment(batch: torch.Tensor, max_px: int, generator: torch.Generator) -> torch.Tensor:
    """Translate every image by an independent random offset of up to ``max_px`` pixels (edges padded)."""
    if max_px <= 0:
        return batch
    h, w = batch.shape[-2:]
    padded = F.pad(batch, (max_px, max_px, max_px, max_px), mode="replicate")
    offsets = torch.randint(0, 2 * max_px + 1, (batch.shape[0], 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
