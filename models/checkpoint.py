"""Saving and loading nested pipelines as plain data: (model id, config, partition, channel order, state dict).

No module is pickled: the file is a ``torch.save`` of a dictionary of tensors, strings, numbers and lists,
read back with ``torch.load(weights_only=True)``.  Loading rebuilds the vision tower from the stored open_clip
config, re-creates the nested stages in the stored order (``order="keep"``: the stored weights are already
permuted) and loads the state dict, so a pruning-aware trained model keeps its trained channel order.
Written atomically by :mod:`edgeprune.atomic` (an interrupt leaves the old file or none, never half of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgeprune.atomic import atomic_file
from edgeprune.errors import ModelError
from models.nested import StagedVision, build_nested
from models.ordering import ChannelOrder
from models.slicing import ZeroShotHead

__all__ = ["FORMAT", "CheckpointMeta", "load_nested", "read_meta", "save_nested"]

FORMAT = "edgeprune.nested"
VERSION = 1


def save_nested(pipe: StagedVision, path: str | Path) -> None:
    """Write ``pipe`` (and its zero-shot head, if the last stage has one) to ``path`` atomically."""
    if "model_cfg" not in pipe.info:
        raise ModelError(f"{path}: the pipeline has no open_clip config (build it from models.loading.load_model)")
    last = pipe.stage_list[-1]
    head = last.classifier
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": str(pipe.info.get("model_id", "")),
        "weights": str(pipe.info.get("weights", "")),
        "model_cfg": pipe.info["model_cfg"],
        "partition": [list(b) for b in pipe.partition],
        "ratios": list(pipe.ratios),
        "mlp_round_to": int(pipe.info.get("mlp_round_to", 1)),
        "channel_order": pipe.channel_order.to_dict(),
        "state_dict": {k: v for k, v in pipe.state_dict().items() if not k.endswith("class_embeddings")},
    }
    if head is not None:
        emb: torch.Tensor = head.class_embeddings  # type: ignore[assignment]
        payload["head"] = {
            "class_names": list(head.class_names),
            "class_embeddings": emb.clone(),
            "logit_scale": head.logit_scale,
        }
    atomic_torch_save(payload, Path(path))


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` a dict of tensors and plain data through the core atomic writer (:mod:`edgeprune.atomic`)."""
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a nested checkpoint holds besides its tensors: enough to check compatibility before loading."""

    model_id: str
    ratios: tuple[float, ...]
    partition: tuple[tuple[int, int], ...]


def _read_raw(p: Path, *, mmap: bool) -> dict[str, Any]:
    """The checkpoint's dictionary, format and version checked (``mmap``: tensors stay on disk)."""
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ModelError(f"--checkpoint = {p}: file not found") from None
    except Exception as exc:
        raise ModelError(f"--checkpoint = {p}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelError(f"--checkpoint = {p}: not an EdgePrune nested checkpoint (format != {FORMAT!r})")
    if raw.get("version") != VERSION:
        raise ModelError(f"--checkpoint = {p}: version {raw.get('version')!r} unsupported (this build reads {VERSION})")
    return raw


def read_meta(path: str | Path) -> CheckpointMeta:
    """Model id, ladder and partition of a checkpoint, without building the model (tensors memory-mapped)."""
    raw = _read_raw(Path(path), mmap=True)
    return CheckpointMeta(
        model_id=str(raw.get("model_id", "")),
        ratios=tuple(float(r) for r in raw["ratios"]),
        partition=tuple((int(a), int(b)) for a, b in raw["partition"]),
    )


def load_nested(path: str | Path) -> StagedVision:
    """Rebuild a :class:`StagedVision` saved by :func:`save_nested`."""
    from models.loading import _build_visual

    p = Path(path)
    raw = _read_raw(p, mmap=False)
    cfg = dict(raw["model_cfg"])
    with torch.random.fork_rng(devices=[]):  # placeholder weights, overwritten by the state dict below
        visual = _build_visual(cfg).eval()
    info = {"model_id": raw["model_id"], "weights": f"checkpoint:{p}", "model_cfg": cfg}
    blocks = [(int(a), int(b)) for a, b in raw["partition"]]
    round_to = int(raw.get("mlp_round_to", 1))
    pipe = build_nested(visual, blocks, raw["ratios"], order="keep", info=info, mlp_round_to=round_to)
    missing, unexpected = pipe.load_state_dict(raw["state_dict"], strict=False)
    if unexpected or [k for k in missing if not k.endswith("class_embeddings")]:
        raise ModelError(
            f"--checkpoint = {p}: state dict does not match its config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors)"
        )
    pipe.channel_order = ChannelOrder.from_dict(raw["channel_order"])
    if "head" in raw:
        h = raw["head"]
        head = ZeroShotHead(h["class_embeddings"], float(h["logit_scale"]), h["class_names"])
        with torch.no_grad():  # the saved embeddings are already normalised: keep them bit for bit
            head.class_embeddings.copy_(h["class_embeddings"])  # type: ignore[operator]
        pipe.stage_list[-1].classifier = head
    return pipe.eval()
