"""The network being trained: a vision tower (plain or nested) with a classification head.

Models:

* ``tiny-vit`` — a 4-block, width-96, 6-head open_clip ``VisionTransformer`` on 32×32 inputs with 8×8
  patches (16 patches + class token), 64-d output.  It is the CPU-sized proxy for BioCLIP's ViT-B/16: with 6
  heads the ladder 0…0.6 keeps 6/5/4/4/3/3/2 heads, so every rung removes whole heads, like 12/10/…/4 on
  ViT-B/16.  Its open_clip config travels in every checkpoint, so :func:`models.checkpoint.load_nested`
  rebuilds it without registration.  Always trained from scratch (random init from the run's seed).
* any id :func:`models.loading.load_model` accepts (``hf-hub:imageomics/bioclip``, ``ViT-B-16`` with
  ``--weights``, a registered config with ``--random-init``).

Heads (both are cosine classifiers ``scale · normalise(f) · normalise(W)ᵀ``, the form of
:class:`models.slicing.ZeroShotHead`, so a trained head is saved *as* a ``ZeroShotHead`` and the checkpoint
holds the whole classifier):

* ``zero-shot`` — ``W`` = text embeddings of the class prompts, frozen (CLIP models only);
* ``linear`` — ``W`` trained; initialised from the class prompts when the model has a text tower, else
  randomly (the tiny ViT).

Pruning-aware strategies train the nested :class:`~models.nested.StagedVision` directly, with its channel
order fixed before training; ``baseline`` trains the unmodified open_clip tower and is nested (importance
order) only afterwards, as post-hoc pruning would do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ModelError
from models.nested import StagedVision, build_nested
from models.ordering import ChannelOrder
from models.slicing import ZeroShotHead

__all__ = [
    "TINY_VIT",
    "TINY_VIT_CFG",
    "Classifier",
    "CosineHead",
    "ModelParts",
    "load_parts",
    "nest",
]

TINY_VIT = "tiny-vit"
TINY_VIT_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 16, "mlp_ratio": 4.0, "patch_size": 8},
}
HeadKind = Literal["linear", "zero-shot"]


class CosineHead(nn.Module):
    """Cosine classifier over image features; ``trainable=False`` freezes ``weight`` (zero-shot)."""

    def __init__(self, weight: torch.Tensor, logit_scale: float, trainable: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float(), requires_grad=trainable)
        self.logit_scale = float(logit_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, C]``."""
        return self.logit_scale * F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def to_zero_shot(self, class_names: Sequence[str]) -> ZeroShotHead:
        """The same function as a :class:`ZeroShotHead` (what checkpoints store)."""
        emb = self.weight.detach()
        return ZeroShotHead(emb, self.logit_scale, class_names)


class Classifier(nn.Module):
    """``head(body(images))``; ``body`` is a plain tower (baseline) or a :class:`StagedVision`."""

    def __init__(self, body: nn.Module, head: CosineHead) -> None:
        super().__init__()
        self.body = body
        self.head = head

    @property
    def pipe(self) -> StagedVision | None:
        """The nested body, when the body is nested."""
        return self.body if isinstance(self.body, StagedVision) else None

    def set_levels(self, levels: int | Sequence[int]) -> None:
        """Switch the nested body's levels (a plain body only has level 0)."""
        pipe = self.pipe
        if pipe is not None:
            pipe.set_levels(levels)
        elif levels != 0 and any(int(v) for v in ([levels] if isinstance(levels, int) else levels)):
            raise ModelError("a plain (baseline) tower has no pruning levels until it is nested")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of ``images``."""
        return self.head(self.body(images))


@dataclass
class ModelParts:
    """What training starts from: the tower, its provenance and how to feed and label it."""

    model_id: str
    weights: str
    pretrained: bool
    visual: nn.Module
    model_cfg: dict[str, Any]
    image_size: tuple[int, int]
    preprocess: Any
    head: CosineHead

    @property
    def info(self) -> dict[str, Any]:
        """``StagedVision.info`` (what :func:`models.checkpoint.save_nested` records)."""
        return {"model_id": self.model_id, "weights": self.weights, "model_cfg": self.model_cfg}

    @property
    def n_blocks(self) -> int:
        """Transformer blocks in the tower."""
        tower: Any = self.visual
        return len(tower.transformer.resblocks)


def _tiny_vit(seed: int, n_classes: int, logit_scale: float) -> ModelParts:
    from models.loading import _build_visual

    with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG: fork, seed, restore
        torch.manual_seed(seed)
        visual = _build_visual(TINY_VIT_CFG)
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_classes, int(TINY_VIT_CFG["embed_dim"]), generator=g)
    size = int(TINY_VIT_CFG["vision_cfg"]["image_size"])
    return ModelParts(
        model_id=TINY_VIT,
        weights=f"random-init (seed {seed})",
        pretrained=False,
        visual=visual,
        model_cfg=dict(TINY_VIT_CFG),
        image_size=(size, size),
        preprocess=None,
        head=CosineHead(weight, logit_scale, trainable=True),
    )


def load_parts(
    model_id: str,
    *,
    weights: str | None,
    random_init: bool,
    head: HeadKind,
    class_names: Sequence[str],
    logit_scale: float,
    seed: int,
) -> ModelParts:
    """Load the tower and build the head (see the module docstring)."""
    if model_id == TINY_VIT:
        if weights:
            raise ModelError("--weights: tiny-vit is always trained from scratch")
        if head == "zero-shot":
            raise ModelError("--head zero-shot: tiny-vit has no text tower; use --head linear")
        return _tiny_vit(seed, len(class_names), logit_scale)
    from models.accuracy import zero_shot_head
    from models.loading import load_model

    loaded = load_model(model_id, weights=weights, random_init=random_init, with_text=True, seed=seed)
    if loaded.clip is None or loaded.tokenizer is None:
        raise ModelError(f"--model = {model_id}: no text tower to build the class-prompt head")
    zs = zero_shot_head(loaded.clip, loaded.tokenizer, class_names)
    emb: torch.Tensor = zs.class_embeddings  # type: ignore[assignment]
    scale = zs.logit_scale if head == "zero-shot" else logit_scale
    return ModelParts(
        model_id=loaded.model_id,
        weights=loaded.weights,
        pretrained=loaded.weights != "random-init",
        visual=loaded.visual.train(),
        model_cfg=loaded.model_cfg,
        image_size=loaded.image_size,
        preprocess=loaded.preprocess,
        head=CosineHead(emb, scale, trainable=head == "linear"),
    )


def nest(
    parts: ModelParts,
    blocks: Sequence[tuple[int, int]],
    ratios: Sequence[float],
    order: Literal["importance", "keep"] | ChannelOrder,
) -> StagedVision:
    """Nested stages of ``parts.visual`` (its tensors move into the result: use the result afterwards)."""
    return build_nested(parts.visual, blocks, ratios, order=order, info=parts.info)
