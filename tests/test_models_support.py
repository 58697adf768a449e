"""Tiny open_clip models for the models/ tests (no tests here; imported by test_models_*.py).

A width-96, 4-block, 6-head ViT on 32x32 images with patch 8 (17 tokens) and a one-layer text tower: every
test builds it from a fixed seed in well under a second.  Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def tiny_visual(seed: int = 0, **overrides: Any) -> Any:
    """A random tiny open_clip VisionTransformer in eval mode (global RNG forked, not reseeded)."""
    import torch
    from open_clip.transformer import VisionTransformer

    kw: dict[str, Any] = dict(image_size=32, patch_size=8, width=96, layers=4, heads=6, mlp_ratio=4.0, output_dim=32)
    kw.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VisionTransformer(**kw).eval()


def write_tiny_config(folder: Path, name: str = "tiny-vit") -> Path:
    """Write the tiny open_clip config JSON (usable with --model-config)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CFG), encoding="utf-8")
    return path


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("zebra", "impala", "warthog"), per_class: int = 3
) -> Path:
    """A small image folder (one sub-folder per class) of random PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root
