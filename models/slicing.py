"""Cutting an open_clip VisionTransformer into contiguous pipeline stages.

Stage 0 holds the patch embedding (``conv1``, class token, positional embedding, ``ln_pre``) and its
blocks; middle stages hold blocks; the last holds its blocks, ``ln_post``, the class-token pooling and the
projection, and optionally a :class:`ZeroShotHead` (class-prompt text embeddings computed once) that turns
image features into class logits.  Between stages flows the token tensor ``[B, N, width]``.

:func:`slice_vision` makes plain stages that share the tower's own modules: chained, they compute exactly
the tower's forward.  :mod:`models.nested` builds the prunable form from the same pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ModelError
from models.blocks import NestedBlock
from models.levels import LevelSpec

__all__ = [
    "Stage",
    "StageEmbed",
    "StagePool",
    "ZeroShotHead",
    "check_cuts",
    "check_vision",
    "n_tokens",
    "slice_vision",
]


class StageEmbed(nn.Module):
    """Patch embedding of the first stage: image [B, 3, H, W] → tokens [B, N, width] (shares the tower's modules)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        tower: Any = visual
        self.conv1: nn.Module = tower.conv1
        self.class_embedding: nn.Parameter = tower.class_embedding
        self.positional_embedding: nn.Parameter = tower.positional_embedding
        self.patch_dropout: nn.Module = tower.patch_dropout
        self.ln_pre: nn.Module = tower.ln_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same arithmetic as open_clip's ``VisionTransformer._embeds``."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(self.patch_dropout(x))


class StagePool(nn.Module):
    """End of the last stage: ``ln_post``, token pooling and projection → features [B, output_dim]."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        tower: Any = visual
        self.ln_post: nn.Module = tower.ln_post
        self.proj: nn.Parameter | None = tower.proj
        self.pool_type: str = str(tower.pool_type)
        self.final_ln_after_pool: bool = bool(tower.final_ln_after_pool)

    def _global_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x[:, 1:].mean(dim=1)
        if self.pool_type == "tok":
            return x[:, 0]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same arithmetic as open_clip's ``VisionTransformer._pool`` (no attentional pooler) + ``@ proj``."""
        pooled = self.ln_post(self._global_pool(x)) if self.final_ln_after_pool else self._global_pool(self.ln_post(x))
        return pooled @ self.proj if self.proj is not None else pooled


class ZeroShotHead(nn.Module):
    """CLIP zero-shot classifier: logits = scale · normalise(features) · class_embeddingsᵀ.

    ``class_embeddings`` [C, D] are the (normalised, template-averaged) text embeddings of the class
    prompts, computed once by :func:`models.accuracy.zero_shot_head`; no text tower is needed at run time.
    """

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float, class_names: Sequence[str]) -> None:
        super().__init__()
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.class_names = tuple(class_names)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] of image features [B, D]."""
        emb: torch.Tensor = self.class_embeddings  # type: ignore[assignment]
        return self.logit_scale * F.normalize(features, dim=-1) @ emb.to(features.dtype).T


class Stage(nn.Module):
    """One pipeline stage: optional embedding, a run of blocks, optional pooling and classifier.

    With :class:`~models.blocks.NestedBlock` blocks and a ladder of ``levels``, :meth:`set_level` and
    :meth:`set_widths` switch the active widths by storing integers only (safe between requests).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        *,
        index: int,
        block_range: tuple[int, int],
        n_tokens: int,
        width: int,
        embed: StageEmbed | None = None,
        pool: StagePool | None = None,
        levels: Sequence[LevelSpec] | None = None,
    ) -> None:
        super().__init__()
        self.index, self.block_range, self.n_tokens, self.width = index, block_range, n_tokens, width
        self.embed = embed
        self.blocks = nn.ModuleList(blocks)
        self.pool = pool
        self.classifier: ZeroShotHead | None = None
        self.levels: tuple[LevelSpec, ...] = tuple(levels) if levels is not None else ()
        # Switching touches only these plain lists (the blocks' active widths) and ints: no allocation, no
        # nn.Module.__setattr__.  ``_state[0]`` is the current level.
        self._actives: tuple[list[int], ...] = tuple(b.active for b in self.blocks if isinstance(b, NestedBlock))
        self._state: list[int] = [0]

    @property
    def is_nested(self) -> bool:
        """True when every block can switch width."""
        return all(isinstance(b, NestedBlock) for b in self.blocks)

    @property
    def level(self) -> int:
        """The level last set with :meth:`set_level` (-1 after :meth:`set_widths`)."""
        return self._state[0]

    def set_level(self, level: int) -> None:
        """Switch every block to rung ``level`` of the ladder (allocation-free, a few microseconds)."""
        levels = self.levels
        if not 0 <= level < max(len(levels), 1):
            raise ModelError(f"stage {self.index}: level {level} outside 0..{max(len(levels), 1) - 1}")
        if levels:
            spec = levels[level]
            heads, hidden = spec.heads, spec.mlp_hidden
            for active in self._actives:
                active[0] = heads
                active[1] = hidden
        self._state[0] = level

    def set_widths(self, widths: Sequence[tuple[int, int]]) -> None:
        """Set each block's ``(heads, mlp_hidden)`` individually (for per-block or training-time widths)."""
        if len(widths) != len(self.blocks):
            raise ModelError(f"stage {self.index}: {len(widths)} widths for {len(self.blocks)} blocks")
        if not self.is_nested:
            raise ModelError(f"stage {self.index}: blocks are not nested; widths cannot change")
        for blk, (heads, hidden) in zip(self.blocks, widths, strict=True):
            blk.set_width(heads, hidden)  # type: ignore[operator]
        self._state[0] = -1

    def input_shape(self, image_size: tuple[int, int], batch: int = 1) -> tuple[int, ...]:
        """Shape of the tensor this stage takes: the image for stage 0, tokens otherwise."""
        if self.embed is not None:
            return (batch, 3, *image_size)
        return (batch, self.n_tokens, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image or tokens in; tokens, features or logits out."""
        if self.embed is not None:
            x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.classifier is not None:
            x = self.classifier(x)
        return x


def check_vision(visual: nn.Module) -> None:
    """Raise :class:`ModelError` unless ``visual`` is an open_clip ViT tower we can slice."""
    resblocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not hasattr(visual, "conv1") or resblocks is None:
        raise ModelError(
            f"{type(visual).__name__}: not an open_clip VisionTransformer (timm/ResNet towers are not supported)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ModelError("vision tower uses an attentional pooler; only token/average pooling is supported")
    if not getattr(visual.transformer, "batch_first", True):
        raise ModelError("vision transformer is not batch_first; rebuild it with open_clip >= 2.24")


def n_tokens(visual: nn.Module) -> int:
    """Tokens per image between stages: patches + class token."""
    tower: Any = visual
    gh, gw = tower.grid_size
    return int(gh * gw + 1)


def slice_vision(visual: nn.Module, blocks: Sequence[tuple[int, int]]) -> list[Stage]:
    """Plain (unpruned) stages sharing ``visual``'s modules; ``blocks[k] = (start, stop)`` must tile all blocks."""
    check_vision(visual)
    tower: Any = visual
    resblocks = list(tower.transformer.resblocks)
    check_cuts(blocks, len(resblocks))
    width = int(tower.transformer.width)
    last = len(blocks) - 1
    return [
        Stage(
            resblocks[a:b],
            index=k,
            block_range=(a, b),
            n_tokens=n_tokens(visual),
            width=width,
            embed=StageEmbed(visual) if k == 0 else None,
            pool=StagePool(visual) if k == last else None,
        )
        for k, (a, b) in enumerate(blocks)
    ]


def check_cuts(blocks: Sequence[tuple[int, int]], n_blocks: int) -> None:
    """Contiguous, non-empty ranges covering ``0..n_blocks``, else :class:`ModelError` naming ``--blocks``."""
    text = ",".join(f"{a}:{b}" for a, b in blocks)
    if not blocks or blocks[0][0] != 0 or blocks[-1][1] != n_blocks:
        raise ModelError(f"--blocks = {text}: ranges must cover blocks 0..{n_blocks}")
    for (a, b), (c, _) in zip(blocks, [*blocks[1:], (n_blocks, n_blocks)], strict=True):
        if not a < b or b != c:
            raise ModelError(f"--blocks = {text}: ranges must be non-empty and contiguous")
