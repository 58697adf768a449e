"""models — slice an open_clip ViT into pipeline stages, nest its pruning levels, and profile it.

Public API (torch-free modules: ``levels``, ``partition``; the rest need torch, open_clip, torch-pruning):

Loading (:mod:`models.loading`)
    ``load_model(model_id, *, weights=None, random_init=False, with_text=False, seed=0) -> LoadedModel``
    ``register_model_config(path) -> str``  (an open_clip config JSON; returns the model name)
Slicing (:mod:`models.slicing`)
    ``slice_vision(visual, blocks) -> list[Stage]``  plain stages sharing the tower's modules
    ``Stage``: ``forward``, ``set_level(level)``, ``set_widths([(heads, mlp_hidden), ...])``, ``classifier``
    ``ZeroShotHead(class_embeddings, logit_scale, class_names)``
Nested levels (:mod:`models.nested`, :mod:`models.blocks`, :mod:`models.ordering`, :mod:`models.levels`)
    ``build_nested(visual, blocks, ratios, order="importance" | "keep" | ChannelOrder, info=None, mlp_round_to=1)``
    ``StagedVision``: ``stages``, ``set_levels(int | [int, ...])``, ``forward``, ``levels``, ``ratios``,
    ``partition``, ``channel_order``; ``restage(pipe, blocks)``
    ``NestedBlock.set_width(n_heads, mlp_hidden)``; ``ChannelOrder``, ``importance_order``, ``identity_order``
    ``ladder(ratios, n_heads, mlp_hidden, mlp_round_to=1) -> tuple[LevelSpec, ...]``
Export and checkpoints (:mod:`models.export`, :mod:`models.checkpoint`)
    ``export_dense_stage(stage, level) -> Stage``  physically pruned by torch-pruning
    ``save_nested(pipe, path)`` / ``load_nested(path) -> StagedVision``  (id, config, partition, order, weights)
Partition (:mod:`models.partition`)
    ``min_max_partition(block_latency_s, speeds, first_extra_s=0, last_extra_s=0, devices=None) -> Partition``
    ``best_device_order(block_latency_s, devices, ...)``, ``even_partition(n_blocks, n_stages)``
Profiling (:mod:`models.benchmark`, :mod:`models.accuracy`)
    ``measure_device(pipe, name, threads, *, samples, warmup, generator) -> DeviceProfile``
    ``profile_for(pipe, devices, provenance, generator) -> Profile``; ``write_profile(profile, path)``
    ``load_labelled(path)``, ``zero_shot_head(clip, tokenizer, class_names)``, ``accuracy_curve(...)``
Command line: ``edgeprune-profile`` (:mod:`models.cli`).

Names are imported lazily (``models.build_nested`` works) so that importing ``models`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LoadedModel": "loading",
    "load_model": "loading",
    "register_model_config": "loading",
    "Stage": "slicing",
    "ZeroShotHead": "slicing",
    "slice_vision": "slicing",
    "StagedVision": "nested",
    "build_nested": "nested",
    "restage": "nested",
    "NestedBlock": "blocks",
    "DenseBlock": "blocks",
    "ChannelOrder": "ordering",
    "importance_order": "ordering",
    "identity_order": "ordering",
    "LevelSpec": "levels",
    "ladder": "levels",
    "export_dense_stage": "export",
    "parameter_bytes": "export",
    "save_nested": "checkpoint",
    "load_nested": "checkpoint",
    "Partition": "partition",
    "min_max_partition": "partition",
    "best_device_order": "partition",
    "even_partition": "partition",
    "measure_device": "benchmark",
    "profile_for": "benchmark",
    "write_profile": "benchmark",
    "load_labelled": "accuracy",
    "zero_shot_head": "accuracy",
    "accuracy_curve": "accuracy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the defining submodule on first use of a public name."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.{module}"), name)
