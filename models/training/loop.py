"""The training run: seeded, resumable, checkpointed, and evaluated as accuracy curves at the end.

A run is described by a :class:`RunSpec` (model, data, strategy config, partition, ladder, seed) and
produces, in its output folder:

* ``model.pt`` — a :func:`models.checkpoint.save_nested` checkpoint (model id, open_clip config, partition,
  ladder, channel order, state dict, and the trained head stored as a ``ZeroShotHead``), loadable with
  :func:`models.checkpoint.load_nested`: ``load_nested(out / "model.pt")(images)`` gives class logits at any
  level vector;
* ``train.json`` — the run spec, the effective hyper-parameters, the per-epoch history and the final
  accuracy curves (uniform ladder + random per-stage vectors on the validation split);
* ``train_state.pt`` — written after every epoch (atomically): network and optimizer state, schedule
  position, the ``torch.Generator`` state and the history, so ``resume`` continues from the last finished
  epoch and ends bit-identical to an uninterrupted run (same machine and thread count).

Everything is plain data (``torch.save`` of tensors and built-in types, read with ``weights_only=True``);
no module is pickled.  All randomness (data order, augmentation, level vectors) comes from one generator
seeded with the run's seed; model initialisation uses a forked, seeded global RNG (open_clip draws from it)
and library code never reseeds the global RNG for good.

Channel order: pruning-aware strategies fix it before training (torch-pruning importance of pretrained
weights, identity for random init) and keep it afterwards — re-sorting a pruning-aware model by magnitude
hurts it.  ``baseline`` trains the unmodified tower and nests it in importance order only at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgeprune.errors import ModelError
from edgeprune.profile import AccuracyCurve
from edgeprune.progress import progress_bar
from models.checkpoint import atomic_torch_save
from models.levels import DEFAULT_RATIOS
from models.nested import StagedVision
from models.ordering import ChannelOrder
from models.training import data as datasets
from models.training.config import TrainConfig
from models.training.curves import deviations, measure_curve
from models.training.network import Classifier, HeadKind, ModelParts, load_parts, nest
from models.training.strategies import step_function

__all__ = [
    "MODEL_FILE",
    "SIDECAR_FILE",
    "STATE_FILE",
    "RunSpec",
    "TrainResult",
    "read_state_spec",
    "train",
]

MODEL_FILE = "model.pt"
SIDECAR_FILE = "train.json"
STATE_FILE = "train_state.pt"
STATE_FORMAT = "edgeprune.train-state"
STATE_VERSION = 1
EVAL_SEED_OFFSET = 104_729  # per-stage evaluation vectors: a stream independent of the training one


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run (a resumed run must match it exactly)."""

    model_id: str
    config: TrainConfig
    config_name: str
    data: str = datasets.DIGITS
    val_data: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    weights: str | None = None
    random_init: bool = False
    head: HeadKind = "linear"
    n_stages: int = 4
    blocks: tuple[tuple[int, int], ...] | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    seed: int = 0
    eval_vectors: int = 20

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON and ``weights_only`` friendly)."""
        raw = dataclasses.asdict(self)
        raw["config"] = self.config.to_dict()
        raw["ratios"] = list(self.ratios)
        raw["blocks"] = [list(b) for b in self.blocks] if self.blocks is not None else None
        return raw

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> RunSpec:
        """Inverse of :meth:`to_dict`."""
        fields = dict(raw)
        fields["config"] = TrainConfig.from_dict(dict(raw["config"]))
        fields["ratios"] = tuple(float(r) for r in raw["ratios"])
        fields["blocks"] = tuple((int(a), int(b)) for a, b in raw["blocks"]) if raw.get("blocks") else None
        return RunSpec(**fields)

    def differences(self, other: RunSpec) -> list[str]:
        """Names of the fields that differ (for a one-line resume error)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if mine[k] != theirs[k]]


@dataclass
class TrainResult:
    """A finished run: the nested classifier, its curves, and how training went."""

    pipe: StagedVision
    curve: AccuracyCurve
    history: list[dict[str, float]]
    spec: RunSpec
    seconds: float
    out: Path | None


# ------------------------------------------------------------------------------------------------ building


def class_names_of(spec: RunSpec) -> tuple[str, ...]:
    """Class names of the run's data, without decoding any image."""
    if spec.data == datasets.DIGITS:
        return tuple(str(i) for i in range(10))
    from models.accuracy import load_labelled

    return load_labelled(spec.data).class_names


def load_data(spec: RunSpec, parts: ModelParts) -> datasets.TrainData:
    """The run's training and validation splits, shaped for the model's input."""
    if spec.data == datasets.DIGITS:
        return datasets.digits(parts.image_size)
    preprocess = parts.preprocess
    if preprocess is None:
        import open_clip

        preprocess = open_clip.image_transform(parts.image_size, is_train=False)
    return datasets.image_files(
        spec.data, preprocess, val_fraction=spec.val_fraction, split_seed=spec.split_seed, val_path=spec.val_data
    )


def _blocks(spec: RunSpec, parts: ModelParts) -> tuple[tuple[int, int], ...]:
    from models.partition import even_partition

    return spec.blocks if spec.blocks is not None else even_partition(parts.n_blocks, spec.n_stages)


def _initial_order(cfg: TrainConfig, parts: ModelParts) -> str:
    if cfg.initial_order == "importance" or (cfg.initial_order == "auto" and parts.pretrained):
        return "importance"
    return "keep"


def build_network(spec: RunSpec, parts: ModelParts, order: ChannelOrder | None = None) -> Classifier:
    """The trainable network: nested (pruning-aware, order fixed now) or the plain tower (baseline)."""
    if not spec.config.pruning_aware:
        return Classifier(parts.visual.train(), parts.head)
    chosen: Any = order if order is not None else _initial_order(spec.config, parts)
    pipe = nest(parts, _blocks(spec, parts), spec.ratios, chosen)
    return Classifier(pipe.train(), parts.head)


def finalize(net: Classifier, spec: RunSpec, parts: ModelParts, class_names: Sequence[str]) -> StagedVision:
    """The deployable nested classifier: baseline is nested now, in torch-pruning importance order."""
    pipe = net.pipe if net.pipe is not None else nest(parts, _blocks(spec, parts), spec.ratios, "importance")
    pipe.stage_list[-1].classifier = net.head.to_zero_shot(class_names)
    pipe.set_levels(0)
    return pipe.eval()


# ------------------------------------------------------------------------------------------------ optimising


def _optimizer(net: Classifier, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, vectors (norms, biases, tokens) do not."""
    params = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Linear warm-up to the peak, then cosine decay to zero."""
    warmup = max(1, round(total_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class _State:
    """What changes while training (saved after every epoch)."""

    epoch: int
    history: list[dict[str, float]]
    seconds: float


def _save_state(
    path: Path, spec: RunSpec, net: Classifier, opt: Any, sched: Any, g: torch.Generator, st: _State, complete: bool
) -> None:
    pipe = net.pipe
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "spec": spec.to_dict(),
        "epoch": st.epoch,
        "complete": complete,
        "seconds": st.seconds,
        "history": st.history,
        "channel_order": pipe.channel_order.to_dict() if pipe is not None else None,
        "net": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": g.get_state(),
    }
    atomic_torch_save(payload, path)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"--resume: {path} not found (nothing to resume)") from None
    except Exception as exc:
        raise ModelError(f"--resume: {path} is not a readable training state ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT or raw.get("version") != STATE_VERSION:
        raise ModelError(f"--resume: {path} is not an EdgePrune training state (version {STATE_VERSION})")
    return raw


def read_state_spec(out: str | Path) -> RunSpec:
    """The run spec stored in ``out``'s training state (what ``--resume`` continues)."""
    return RunSpec.from_dict(_load_state(Path(out) / STATE_FILE)["spec"])


def _epoch(
    net: Classifier, train: datasets.Split, cfg: TrainConfig, opt: Any, sched: Any, g: torch.Generator, bar: Any
) -> float:
    step = step_function(cfg)
    net.train()
    order = torch.randperm(len(train), generator=g)
    losses: list[float] = []
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        images = datasets.shift_augment(train.images(idx), cfg.augment_shift_px, g)
        opt.zero_grad(set_to_none=True)
        losses.append(step(net, images, train.labels[idx], g))
        opt.step()
        sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return math.fsum(losses) / max(1, len(losses))


def _quick_eval(net: Classifier, val: datasets.Split, spec: RunSpec, n_stages: int) -> dict[str, float]:
    from models.training.curves import top1

    net.eval()
    if net.pipe is None:
        (full,) = top1(net, val, [[0] * n_stages])
        return {"val_top1_full": full}
    full, smallest = top1(net, val, [[0] * n_stages, [len(spec.ratios) - 1] * n_stages])
    return {"val_top1_full": full, "val_top1_smallest": smallest}


# ------------------------------------------------------------------------------------------------ the run


def train(
    spec: RunSpec,
    *,
    data: datasets.TrainData | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    stop_after_epochs: int | None = None,
) -> TrainResult | None:
    """Train (or resume) the run; write its folder when ``out`` is given.

    ``data`` replaces the run's data (e.g. a subset in a test); ``stop_after_epochs`` ends early after
    saving the state (returns ``None``), which is how an interruption is reproduced.
    """
    cfg = spec.config
    out_dir = Path(out) if out is not None else None
    stored: dict[str, Any] | None = None
    if resume:
        if out_dir is None:
            raise ModelError("--resume needs --out (the folder of the run to continue)")
        stored = _load_state(out_dir / STATE_FILE)
        diff = RunSpec.from_dict(stored["spec"]).differences(spec)
        if diff:
            raise ModelError(f"--resume: {out_dir} was started with different settings ({', '.join(diff)})")
    names = data.class_names if data is not None else class_names_of(spec)
    parts = load_parts(
        spec.model_id,
        weights=spec.weights,
        random_init=spec.random_init,
        head=spec.head,
        class_names=names,
        logit_scale=cfg.head_logit_scale,
        seed=spec.seed,
    )
    data = data if data is not None else load_data(spec, parts)
    order = ChannelOrder.from_dict(stored["channel_order"]) if stored and stored["channel_order"] else None
    net = build_network(spec, parts, order)
    n_stages = len(_blocks(spec, parts))
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = _optimizer(net, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.warmup_fraction))
    g = torch.Generator().manual_seed(spec.seed)
    st = _State(epoch=0, history=[], seconds=0.0)
    if stored is not None:
        net.load_state_dict(stored["net"])
        opt.load_state_dict(stored["optimizer"])
        sched.load_state_dict(stored["scheduler"])
        g.set_state(stored["generator"])
        st = _State(int(stored["epoch"]), list(stored["history"]), float(stored["seconds"]))
    bar = progress_bar(
        enabled=progress,
        total=total,
        initial=st.epoch * steps_per_epoch,
        desc=f"{cfg.strategy}",
        unit="step",
        leave=False,
    )
    while st.epoch < cfg.epochs:
        t0 = time.perf_counter()
        loss = _epoch(net, data.train, cfg, opt, sched, g, bar)
        st.epoch += 1
        st.history.append({"epoch": st.epoch, "loss": loss, **_quick_eval(net, data.val, spec, n_stages)})
        st.seconds += time.perf_counter() - t0
        if out_dir is not None:
            _save_state(out_dir / STATE_FILE, spec, net, opt, sched, g, st, complete=st.epoch == cfg.epochs)
        if stop_after_epochs is not None and st.epoch >= stop_after_epochs and st.epoch < cfg.epochs:
            bar.close()
            return None
    bar.close()
    pipe = finalize(net, spec, parts, names)
    curve = measure_curve(
        pipe,
        data.val,
        pipe.ratios,
        len(pipe.stage_list),
        n_vectors=spec.eval_vectors,
        generator=torch.Generator().manual_seed(spec.seed + EVAL_SEED_OFFSET),
        dataset=f"{data.describe()}; validation split",
        note=f"{spec.model_id} trained with {spec.config_name} ({cfg.strategy}), seed {spec.seed}",
    )
    result = TrainResult(pipe, curve, st.history, spec, st.seconds, out_dir)
    if out_dir is not None:
        _write_outputs(result, data)
    return result


def _write_outputs(result: TrainResult, data: datasets.TrainData) -> None:
    from edgeprune.results import atomic_write_text
    from models.checkpoint import save_nested

    assert result.out is not None
    save_nested(result.pipe, result.out / MODEL_FILE)
    atomic_write_text(result.out / SIDECAR_FILE, json.dumps(sidecar(result, data), indent=1) + "\n")


def sidecar(result: TrainResult, data: datasets.TrainData) -> dict[str, Any]:
    """The ``train.json`` content: spec, effective config, history and final curves."""
    curve = result.curve
    dev = deviations(curve)
    return {
        "format": "edgeprune.train-run",
        "version": 1,
        "checkpoint": MODEL_FILE,
        "spec": result.spec.to_dict(),
        "dataset": data.describe(),
        "class_names": list(data.class_names),
        "partition": [list(b) for b in result.pipe.partition],
        "channel_order": result.pipe.channel_order.source,
        "seconds": result.seconds,
        "history": result.history,
        "metrics": {
            "ratios": list(curve.ratios),
            "uniform": list(curve.uniform),
            "per_stage": [
                {"levels": list(v), "accuracy": a, "deviation_from_uniform": dev[v]} for v, a in curve.per_stage.items()
            ],
        },
    }
