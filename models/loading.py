"""Loading open_clip models by architecture name, hub id or local folder — offline-safe.

Model ids:

* an open_clip architecture name (``ViT-B-16``), or a name registered from a config file with
  :func:`register_model_config` (how the tests build a tiny ViT);
* ``hf-hub:org/repo`` — config and weights from the Hugging Face cache (``HF_HOME``);
* ``local-dir:/path`` — a folder holding ``open_clip_config.json`` and the weights.

Weights: the id's own (hub / local folder), a local checkpoint file (``weights=PATH``, for architecture
names), or none (``random_init=True``: latency needs no weights; seeded, so runs repeat).

No network at run time: importing this module puts the Hugging Face hub client in its offline mode
(``HF_HUB_OFFLINE=1``, unless the environment sets it already), so hub ids are served from the local cache
only and nothing probes the hub.  A hub id whose files are not in the cache fails at once, with one line
saying how to provide them.  ``HF_HUB_OFFLINE=0`` set explicitly lets the hub client download (a one-off
fetch on a connected machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before huggingface_hub is imported (it reads the setting once, at import): cache only, no connections.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

from edgeprune.errors import ModelError, did_you_mean

__all__ = ["LoadedModel", "hub_offline", "load_model", "model_config", "register_model_config"]

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
_HUB_CONFIG = "open_clip_config.json"
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_INIT = "random-init"


@dataclass
class LoadedModel:
    """A loaded model: the vision tower always, the full CLIP model and tokenizer when text was asked for."""

    model_id: str
    weights: str  # "random-init", a checkpoint path, "hf-hub" or "local-dir"
    visual: nn.Module
    model_cfg: dict[str, Any]
    image_size: tuple[int, int]
    preprocess: Callable[[Any], torch.Tensor]
    clip: nn.Module | None = None
    tokenizer: Callable[..., torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def register_model_config(path: str | Path) -> str:
    """Register an open_clip model config JSON (``embed_dim``, ``vision_cfg``, ``text_cfg``); returns its name.

    The name is the file's stem, usable as ``--model`` afterwards (how tests build a tiny CLIP).
    """
    import json

    import open_clip

    p = Path(path)
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"--model-config = {p}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model-config = {p}: not a readable JSON file ({exc})") from None
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ModelError(f"--model-config = {p}: missing {', '.join(missing)} (an open_clip model config)")
    open_clip.add_model_config(p)
    return p.stem


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` says offline now (the default here; see the module docstring) or the hub
    client read it so at its import."""
    from huggingface_hub import is_offline_mode

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(is_offline_mode())


def _cached(repo: str, filename: str, cache_dir: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return hit if isinstance(hit, str) else None


def _hub_help(model_id: str, repo: str, what: str) -> str:
    return (
        f"--model = {model_id}: {what} not in the local Hugging Face cache (model loading is offline); "
        f"run `huggingface-cli download {repo}` on a connected machine and copy the cache into "
        f"HF_HOME here, or pass a local checkpoint with --weights PATH and its architecture as --model "
        f"(e.g. ViT-B-16), or use --model local-dir:/folder/with/{_HUB_CONFIG}"
    )


def _require_hub_files(model_id: str, need_weights: bool, cache_dir: str | None) -> None:
    """Fail fast when a hub model's files are neither cached nor downloadable."""
    repo = model_id[len(HUB_PREFIX) :]
    have_config = _cached(repo, _HUB_CONFIG, cache_dir) is not None
    have_weights = any(_cached(repo, f, cache_dir) is not None for f in _HUB_WEIGHTS)
    if have_config and (have_weights or not need_weights):
        return
    if hub_offline():
        raise ModelError(_hub_help(model_id, repo, "weights" if need_weights else "model config"))


def model_config(model_id: str, cache_dir: str | None = None) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, …) of ``model_id``."""
    import json

    import open_clip

    if model_id.startswith(HUB_PREFIX):
        _require_hub_files(model_id, need_weights=False, cache_dir=cache_dir)
    if model_id.startswith(LOCAL_PREFIX):
        path = Path(model_id[len(LOCAL_PREFIX) :]) / _HUB_CONFIG
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ModelError(f"--model = {model_id}: cannot read {path}") from None
        cfg = raw.get("model_cfg", raw)
    else:
        try:
            cfg = open_clip.get_model_config(model_id)
        except Exception as exc:  # the hub client raises many kinds
            raise ModelError(f"--model = {model_id}: cannot read its config: {_first_line(exc)}") from None
    if cfg is None:
        raise ModelError(
            f"--model = {model_id}: unknown open_clip model" + did_you_mean(model_id, open_clip.list_models())
        )
    return dict(cfg)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _build_visual(model_cfg: dict[str, Any]) -> nn.Module:
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(
        model_cfg["embed_dim"], model_cfg["vision_cfg"], quick_gelu=bool(model_cfg.get("quick_gelu", False))
    )


def _build_clip(model_cfg: dict[str, Any]) -> nn.Module:
    import open_clip

    cfg = {k: v for k, v in model_cfg.items() if k not in {"custom_text"}}
    if "hf_model_name" in cfg.get("text_cfg", {}) or model_cfg.get("custom_text"):
        return open_clip.CustomTextCLIP(**cfg)
    return open_clip.CLIP(**cfg)


def _image_size(visual: nn.Module) -> tuple[int, int]:
    size = getattr(visual, "image_size", None)
    if size is None:
        raise ModelError(f"{type(visual).__name__}: vision tower has no image_size")
    h, w = (size, size) if isinstance(size, int) else size
    return int(h), int(w)


def _random_init(model_id: str, model_cfg: dict[str, Any], with_text: bool, seed: int) -> LoadedModel:
    """Random weights from ``seed``; the global RNG is forked (restored afterwards), never reseeded for good."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip: Any = _build_clip(model_cfg) if with_text else None
        visual: nn.Module = clip.visual if clip is not None else _build_visual(model_cfg)
    visual.eval()
    size = _image_size(visual)
    tokenizer = open_clip.get_tokenizer(model_id) if with_text else None
    return LoadedModel(
        model_id=model_id,
        weights=RANDOM_INIT,
        visual=visual,
        model_cfg=model_cfg,
        image_size=size,
        preprocess=open_clip.image_transform(size, is_train=False),
        clip=clip.eval() if clip is not None else None,
        tokenizer=tokenizer,
        extra={"seed": seed},
    )


def load_model(
    model_id: str,
    *,
    weights: str | None = None,
    random_init: bool = False,
    with_text: bool = False,
    seed: int = 0,
    cache_dir: str | None = None,
) -> LoadedModel:
    """Load ``model_id`` (see the module docstring); every failure is a one-line :class:`ModelError`."""
    import open_clip

    if random_init and weights:
        raise ModelError("--random-init and --weights exclude each other")
    is_hub, is_local = model_id.startswith(HUB_PREFIX), model_id.startswith(LOCAL_PREFIX)
    if weights and (is_hub or is_local):
        raise ModelError(f"--weights: {model_id} brings its own weights; pass its architecture as --model instead")
    if is_hub and not random_init:  # say "weights" (not just "config") when the weights are what is missing
        _require_hub_files(model_id, need_weights=True, cache_dir=cache_dir)
    model_cfg = model_config(model_id, cache_dir)
    if random_init:
        return _random_init(model_id, model_cfg, with_text, seed)
    if weights:
        if not Path(weights).is_file():
            raise ModelError(f"--weights = {weights}: file not found")
    elif not is_local and not is_hub:
        raise ModelError(f"--model = {model_id}: no weights given; pass --weights PATH or --random-init")
    try:
        created: Any = open_clip.create_model_and_transforms(
            model_id, pretrained=weights, cache_dir=cache_dir, require_pretrained=True
        )
    except Exception as exc:  # open_clip / hub / torch.load raise many kinds; report one line
        raise ModelError(f"--model = {model_id}: cannot load weights: {_first_line(exc)}") from None
    clip, _, preprocess = created
    clip.eval()
    return LoadedModel(
        model_id=model_id,
        weights=str(weights) if weights else ("hf-hub" if is_hub else "local-dir"),
        visual=clip.visual,
        model_cfg=model_cfg,
        image_size=_image_size(clip.visual),
        preprocess=preprocess,
        clip=clip if with_text else None,
        tokenizer=open_clip.get_tokenizer(model_id) if with_text else None,
    )
