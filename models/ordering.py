"""Channel order: which head / MLP channel sits at each position of the nested weights.

Nested levels keep *leading* slices, so the weights are sorted once, most important first.  Importance
comes from torch-pruning's dependency graph: :func:`importance_order` builds the graph over the dense
blocks (see :mod:`models.blocks`), takes for each block the pruning group rooted at ``attn.proj``'s input
channels (which torch-pruning couples with the q, k and v rows of ``attn.qkv``) and the group rooted at
``mlp.c_fc``'s output channels (coupled with ``c_proj``'s input columns), and scores them with
``GroupMagnitudeImportance`` (L2 over every coupled weight); a head's score is the mean over its
dimensions, as torch-pruning's own head pruning does.

A model trained pruning-aware already has a meaningful order; re-sorting it by magnitude hurts it
(models-facts.md), so :func:`identity_order` keeps the order as stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import ModelError
from models.blocks import DenseBlock

__all__ = ["ChannelOrder", "identity_order", "importance_order"]


@dataclass(frozen=True)
class ChannelOrder:
    """Per block, the original index of the head / MLP channel stored at each position."""

    heads: tuple[tuple[int, ...], ...]
    mlp: tuple[tuple[int, ...], ...]
    source: str = "identity"

    def to_dict(self) -> dict[str, Any]:
        """JSON/torch.save-friendly form (plain lists)."""
        return {"heads": [list(h) for h in self.heads], "mlp": [list(m) for m in self.mlp], "source": self.source}

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> ChannelOrder:
        """Inverse of :meth:`to_dict`; checks that every entry is a permutation."""
        order = ChannelOrder(
            heads=tuple(tuple(int(i) for i in h) for h in raw["heads"]),
            mlp=tuple(tuple(int(i) for i in m) for m in raw["mlp"]),
            source=str(raw.get("source", "identity")),
        )
        for perm in (*order.heads, *order.mlp):
            if sorted(perm) != list(range(len(perm))):
                raise ModelError("channel order: an entry is not a permutation")
        if len(order.heads) != len(order.mlp):
            raise ModelError("channel order: heads and mlp cover different numbers of blocks")
        return order

    def compose(self, inner: ChannelOrder) -> ChannelOrder:
        """Order after applying ``inner`` on top of weights already permuted by ``self``."""
        return ChannelOrder(
            heads=tuple(tuple(o[i] for i in p) for o, p in zip(self.heads, inner.heads, strict=True)),
            mlp=tuple(tuple(o[i] for i in p) for o, p in zip(self.mlp, inner.mlp, strict=True)),
            source=inner.source if self.source == "identity" else f"{self.source}+{inner.source}",
        )


def identity_order(n_blocks: int, n_heads: int, mlp_hidden: int) -> ChannelOrder:
    """Keep every block's heads and channels where they are."""
    return ChannelOrder(
        heads=tuple(tuple(range(n_heads)) for _ in range(n_blocks)),
        mlp=tuple(tuple(range(mlp_hidden)) for _ in range(n_blocks)),
        source="identity",
    )


def importance_order(blocks: Sequence[DenseBlock], n_tokens: int, p: int = 2) -> ChannelOrder:
    """Sort each block's heads and MLP channels by torch-pruning group-magnitude importance (descending).

    ``n_tokens`` is the sequence length used to trace the graph (any positive value works).  The sort is
    stable, so equal scores keep their stored order.  torch-pruning traces with autograd, so this runs with
    gradients enabled even when called inside ``torch.inference_mode``.
    """
    import torch_pruning as tp

    if not blocks:
        raise ModelError("importance_order: no blocks")
    d = blocks[0].attn.qkv.in_features
    seq = nn.Sequential(*blocks)
    heads: list[tuple[int, ...]] = []
    mlp: list[tuple[int, ...]] = []
    with torch.inference_mode(False), torch.enable_grad():
        example = torch.zeros(1, n_tokens, d, dtype=blocks[0].attn.qkv.weight.dtype)
        graph = tp.DependencyGraph().build_dependency(seq, example_inputs=example)
        scorer = tp.importance.GroupMagnitudeImportance(p=p)
        for blk in blocks:
            a = blk.attn
            group = graph.get_pruning_group(a.proj, tp.prune_linear_in_channels, idxs=list(range(a.proj.in_features)))
            head_score = scorer(group).detach().view(a.num_heads, a.head_dim).mean(1)
            heads.append(tuple(int(i) for i in torch.argsort(head_score, descending=True, stable=True)))
            c_fc = blk.c_fc
            group = graph.get_pruning_group(c_fc, tp.prune_linear_out_channels, idxs=list(range(c_fc.out_features)))
            mlp_score = scorer(group).detach()
            mlp.append(tuple(int(i) for i in torch.argsort(mlp_score, descending=True, stable=True)))
    return ChannelOrder(heads=tuple(heads), mlp=tuple(mlp), source=f"torch-pruning GroupMagnitudeImportance(p={p})")
