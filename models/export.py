"""Physically pruned dense stages, exported with torch-pruning (for deployments where memory matters).

A nested stage keeps every level's weights resident (one shared set, the size of the unpruned stage).  A
device that will only ever run one level can instead hold a *dense export*: a copy of the stage whose
linears have physically lost the pruned heads and MLP channels.  :func:`export_dense_stage` copies the
stage into :class:`~models.blocks.DenseBlock` form and asks torch-pruning's dependency graph to remove,
in every block, the trailing heads (rooted at ``attn.proj``'s input channels; torch-pruning removes the
matching q, k and v rows of ``attn.qkv``) and the trailing MLP channels (rooted at ``mlp.c_fc``'s outputs,
with ``c_proj``'s input columns).  Because the nested weights are importance-ordered, "trailing" is
exactly what the nested level drops, so the export computes the same function as the nested level.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.errors import ModelError
from models.blocks import DenseBlock, NestedBlock, dense_from_nested
from models.slicing import Stage

__all__ = ["export_dense_stage", "parameter_bytes"]


def parameter_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _prune_block(graph: object, blk: DenseBlock, heads: int, mlp_hidden: int) -> None:
    import torch_pruning as tp

    a, c_fc = blk.attn, blk.c_fc
    drop_dims = list(range(heads * a.head_dim, a.num_heads * a.head_dim))
    if drop_dims:
        group = graph.get_pruning_group(a.proj, tp.prune_linear_in_channels, idxs=drop_dims)  # type: ignore[attr-defined]
        group.prune()
        a.num_heads = heads
    drop_channels = list(range(mlp_hidden, c_fc.out_features))
    if drop_channels:
        group = graph.get_pruning_group(c_fc, tp.prune_linear_out_channels, idxs=drop_channels)  # type: ignore[attr-defined]
        group.prune()
    if a.qkv.out_features != 3 * heads * a.head_dim or blk.c_fc.out_features != mlp_hidden:
        raise ModelError("torch-pruning export did not produce the expected widths (unsupported block layout)")


def export_dense_stage(stage: Stage, level: int) -> Stage:
    """A physically pruned, independent copy of a nested ``stage`` at ``level`` (torch-pruning does the cut).

    The copy's blocks are :class:`DenseBlock` objects with smaller linears; the residual width is kept, so it
    slots into the same pipeline.  The copy cannot switch level (its ladder is just the exported rung).
    """
    if not stage.is_nested or not stage.levels:
        raise ModelError(f"stage {stage.index}: only nested stages can be exported")
    if not 0 <= level < len(stage.levels):
        raise ModelError(f"--level = {level}: outside 0..{len(stage.levels) - 1}")
    import torch_pruning as tp

    spec = stage.levels[level]
    with torch.inference_mode(False):  # torch-pruning traces with autograd; copies must be normal tensors
        dense = [dense_from_nested(b) for b in stage.blocks if isinstance(b, NestedBlock)]
        out = Stage(
            dense,
            index=stage.index,
            block_range=stage.block_range,
            n_tokens=stage.n_tokens,
            width=stage.width,
            embed=copy.deepcopy(stage.embed),
            pool=copy.deepcopy(stage.pool),
            levels=None,
        )
        out.classifier = copy.deepcopy(stage.classifier)
    with torch.inference_mode(False), torch.enable_grad():
        seq = nn.Sequential(*dense)
        example = torch.zeros(1, stage.n_tokens, stage.width, dtype=dense[0].attn.qkv.weight.dtype)
        graph = tp.DependencyGraph().build_dependency(seq, example_inputs=example)
        for blk in dense:
            _prune_block(graph, blk, spec.heads, spec.mlp_hidden)
    return out.eval()
