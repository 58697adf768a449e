"""Nested-level pipelines: every stage switches pruning level in microseconds from one weight set.

:func:`build_nested` turns an open_clip ``VisionTransformer`` into a :class:`StagedVision` — a chain of
:class:`~models.slicing.Stage` objects whose blocks are :class:`~models.blocks.NestedBlock` — in four steps:

1. re-pack each block's ``nn.MultiheadAttention`` into separate ``qkv`` / ``proj`` linears (DenseBlock);
2. choose a channel order: torch-pruning importance (``order="importance"``), the stored order
   (``order="keep"``, e.g. for a pruning-aware trained model) or a given :class:`ChannelOrder`;
3. permute heads and MLP channels into that order (the function is unchanged by the permutation);
4. re-pack qkv per head and cut the blocks into stages with the level ladder.

Levels are nested: level ``i`` keeps the leading heads and channels that level ``i - 1`` keeps, minus a
suffix.  ``set_level`` only stores integers; no tensor is allocated and memory equals the unpruned stage.
The residual width never changes, so any stage at any level accepts any other stage's output.

Typical use (training code can call ``stage.set_widths`` with per-block widths instead)::

    pipe = build_nested(visual, blocks=[(0, 3), (3, 6), (6, 9), (9, 12)], ratios=[0, 0.1, 0.3, 0.5])
    pipe.set_levels([0, 2, 1, 3])      # one level per stage
    features = pipe(images)           # or chain pipe.stages[k] across processes / devices
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from edgeprune.errors import ModelError
from models.blocks import DenseBlock, NestedBlock, dense_from_openclip, nested_from_dense, permute_dense_block
from models.levels import LevelSpec, ladder
from models.ordering import ChannelOrder, identity_order, importance_order
from models.slicing import Stage, StageEmbed, StagePool, check_cuts, check_vision, n_tokens

__all__ = ["StagedVision", "build_nested", "restage"]


class StagedVision(nn.Module):
    """A vision tower as a chain of nested stages plus what is needed to save and rebuild it.

    Attributes: ``stages`` (``nn.ModuleList`` of :class:`Stage`), ``ratios``, ``levels`` (the ladder),
    ``partition`` (block ranges), ``channel_order`` and ``info`` (model id, weights, open_clip config).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        levels: Sequence[LevelSpec],
        channel_order: ChannelOrder,
        image_size: tuple[int, int],
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self._stage_tuple: tuple[Stage, ...] = tuple(stages)  # plain tuple: fast iteration when switching
        self.levels = tuple(levels)
        self.channel_order = channel_order
        self.image_size = image_size
        self.info: dict[str, Any] = dict(info or {})

    @property
    def ratios(self) -> tuple[float, ...]:
        """Pruning ratio of every level."""
        return tuple(s.ratio for s in self.levels)

    @property
    def partition(self) -> tuple[tuple[int, int], ...]:
        """Block range ``(start, stop)`` of every stage."""
        return tuple(s.block_range for s in self.stage_list)

    @property
    def stage_list(self) -> list[Stage]:
        """The stages, typed."""
        return list(self._stage_tuple)

    def set_levels(self, levels: int | Sequence[int]) -> None:
        """One level for every stage (an int) or one per stage (a sequence); allocation-free."""
        stages = self._stage_tuple
        if isinstance(levels, int):
            for stage in stages:
                stage.set_level(levels)
            return
        if len(levels) != len(stages):
            raise ModelError(f"levels {list(levels)}: expected {len(stages)} values, one per stage")
        for stage, level in zip(stages, levels, strict=True):
            stage.set_level(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Chain every stage: images [B, 3, H, W] → features [B, D] (or logits with a classifier)."""
        for stage in self.stages:
            x = stage(x)
        return x

    def stage_inputs(self, generator: torch.Generator, batch: int = 1) -> list[torch.Tensor]:
        """Random example inputs of every stage (image for stage 0, tokens after), e.g. for benchmarking."""
        dtype = next(self.parameters()).dtype
        return [
            torch.randn(s.input_shape(self.image_size, batch), generator=generator, dtype=dtype)
            for s in self.stage_list
        ]


def _dense_blocks(visual: nn.Module) -> list[DenseBlock]:
    tower: Any = visual
    return [dense_from_openclip(b) for b in tower.transformer.resblocks]


def _resolve_order(
    dense: Sequence[DenseBlock], order: Literal["importance", "keep"] | ChannelOrder, tokens: int
) -> ChannelOrder:
    a = dense[0].attn
    if isinstance(order, ChannelOrder):
        if len(order.heads) != len(dense) or any(
            len(h) != a.num_heads or len(m) != dense[0].c_fc.out_features
            for h, m in zip(order.heads, order.mlp, strict=True)
        ):
            raise ModelError("channel order does not match the model's blocks, heads or MLP width")
        return order
    if order == "importance":
        return importance_order(dense, tokens)
    if order == "keep":
        return identity_order(len(dense), a.num_heads, dense[0].c_fc.out_features)
    raise ModelError(f"order = {order!r}: expected 'importance', 'keep' or a ChannelOrder")


def build_nested(
    visual: nn.Module,
    blocks: Sequence[tuple[int, int]],
    ratios: Sequence[float],
    order: Literal["importance", "keep"] | ChannelOrder = "importance",
    info: Mapping[str, Any] | None = None,
    mlp_round_to: int = 1,
) -> StagedVision:
    """Build nested stages from an open_clip ``VisionTransformer`` (any width / depth / patch size).

    ``visual``'s tensors are shared or replaced (qkv is re-packed), so use the returned object, not
    ``visual``, afterwards.  ``blocks`` tiles the blocks into stages; ``ratios`` is the level ladder;
    ``mlp_round_to`` rounds every level's MLP width to a multiple (see :func:`models.levels.mlp_kept`).
    """
    check_vision(visual)
    dense = _dense_blocks(visual)
    check_cuts(blocks, len(dense))
    tokens = n_tokens(visual)
    with torch.no_grad():
        channel_order = _resolve_order(dense, order, tokens)
        if channel_order.source != "identity" or isinstance(order, ChannelOrder):
            for blk, h, m in zip(dense, channel_order.heads, channel_order.mlp, strict=True):
                permute_dense_block(blk, torch.tensor(h), torch.tensor(m))
        nested: list[NestedBlock] = [nested_from_dense(b) for b in dense]
    a = dense[0].attn
    levels = ladder(ratios, a.num_heads, dense[0].c_fc.out_features, mlp_round_to)
    info = {**(info or {}), "mlp_round_to": mlp_round_to}
    tower: Any = visual
    width = int(tower.transformer.width)
    last = len(blocks) - 1
    stages = [
        Stage(
            nested[lo:hi],
            index=k,
            block_range=(lo, hi),
            n_tokens=tokens,
            width=width,
            embed=StageEmbed(visual) if k == 0 else None,
            pool=StagePool(visual) if k == last else None,
            levels=levels,
        )
        for k, (lo, hi) in enumerate(blocks)
    ]
    image_size = tuple(int(v) for v in tower.image_size)
    return StagedVision(stages, levels, channel_order, (image_size[0], image_size[1]), info)


def restage(pipe: StagedVision, blocks: Sequence[tuple[int, int]]) -> StagedVision:
    """The same blocks (shared, not copied) regrouped into a new partition."""
    stages = pipe.stage_list
    flat = [b for s in stages for b in s.blocks]
    check_cuts(blocks, len(flat))
    first, last_stage = stages[0], stages[-1]
    last = len(blocks) - 1
    new = [
        Stage(
            flat[lo:hi],
            index=k,
            block_range=(lo, hi),
            n_tokens=first.n_tokens,
            width=first.width,
            embed=first.embed if k == 0 else None,
            pool=last_stage.pool if k == last else None,
            levels=pipe.levels,
        )
        for k, (lo, hi) in enumerate(blocks)
    ]
    new[-1].classifier = last_stage.classifier
    return StagedVision(new, pipe.levels, pipe.channel_order, pipe.image_size, pipe.info)
