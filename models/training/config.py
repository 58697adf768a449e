"""Training hyper-parameters: one TOML file per strategy and named set, validated on load.

The paper compares two sets of training hyper-parameters (its Fig. 4), so every strategy ships two named
sets, ``a`` and ``b``, as ``models/configs/<strategy>-<set>.toml``; a user may also pass any TOML file of
the same shape.  Files are read through :func:`edgeprune.config.build`, so an unknown key is rejected with
the closest valid name and every bound is checked, in one line naming the file and the key.

The defaults of a file describe training a small model from scratch (the tiny ViT on digits).  Its
optional ``[pretrained]`` table overrides them when the model starts from pretrained weights (e.g. BioCLIP
fine-tuning wants a learning rate ~100× smaller).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeprune.config import Ctx, build, load_toml, spec_field
from edgeprune.errors import ConfigError, did_you_mean

__all__ = [
    "CONFIG_DIR",
    "SET_NAMES",
    "STRATEGIES",
    "PretrainedOverrides",
    "TrainConfig",
    "available_configs",
    "config_path",
    "load_config",
]

Strategy = Literal["baseline", "sandwich", "sandwich-distill"]
STRATEGIES: tuple[str, ...] = ("baseline", "sandwich", "sandwich-distill")
SET_NAMES: tuple[str, ...] = ("a", "b")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class PretrainedOverrides:
    """Values that replace the top-level ones when training starts from pretrained weights."""

    lr: float | None = spec_field(default=None, gt=0, doc="peak learning rate for fine-tuning")
    epochs: int | None = spec_field(default=None, ge=1, doc="epochs for fine-tuning")
    batch_size: int | None = spec_field(default=None, ge=1, doc="images per step for fine-tuning")


@dataclass(frozen=True)
class TrainConfig:
    """One strategy's hyper-parameters (see ``models/configs/*.toml`` for commented examples)."""

    strategy: Strategy
    description: str = ""
    epochs: int = spec_field(default=10, ge=1, doc="passes over the training split")
    lr: float = spec_field(default=2e-3, gt=0, doc="peak AdamW learning rate (linear warm-up, cosine decay)")
    weight_decay: float = spec_field(default=0.05, ge=0, doc="AdamW decoupled weight decay")
    warmup_fraction: float = spec_field(default=0.1, ge=0, lt=1, doc="share of all steps spent warming up")
    batch_size: int = spec_field(default=64, ge=1, doc="images per optimizer step")
    k_random: int = spec_field(default=0, ge=0, doc="random per-stage level vectors per step (sandwich rule)")
    distill_weight: float = spec_field(default=0.0, ge=0, le=1, doc="weight of KL to the full-width output")
    distill_temperature: float = spec_field(default=1.0, gt=0, doc="softmax temperature of the distillation")
    label_smoothing: float = spec_field(default=0.0, ge=0, lt=1, doc="cross-entropy label smoothing")
    augment_shift_px: int = spec_field(default=0, ge=0, doc="random translation of training images, pixels")
    initial_order: Literal["auto", "importance", "identity"] = "auto"
    head_logit_scale: float = spec_field(default=10.0, gt=0, doc="scale of the trained cosine head's logits")
    pretrained: PretrainedOverrides | None = None

    def check(self) -> list[tuple[str, object, str]]:
        """Cross-field rules: each key means something for the chosen strategy only."""
        problems: list[tuple[str, object, str]] = []
        if self.strategy == "baseline" and self.k_random:
            problems.append(("k_random", self.k_random, "baseline trains the full width only; must be 0"))
        if self.strategy != "sandwich-distill" and self.distill_weight:
            problems.append(("distill_weight", self.distill_weight, f"{self.strategy} does not distil; must be 0"))
        if self.strategy == "sandwich-distill" and not self.distill_weight:
            problems.append(("distill_weight", self.distill_weight, "sandwich-distill needs a weight > 0"))
        return problems

    @property
    def pruning_aware(self) -> bool:
        """True for the strategies that train sub-widths (sandwich, sandwich-distill)."""
        return self.strategy != "baseline"

    def for_pretrained(self) -> TrainConfig:
        """The config with the ``[pretrained]`` overrides applied (itself when there are none)."""
        over = self.pretrained
        if over is None:
            return self
        changes = {f.name: getattr(over, f.name) for f in dataclasses.fields(over) if getattr(over, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON / TOML / checkpoint friendly); ``None`` entries dropped."""
        raw = dataclasses.asdict(self)
        if raw["pretrained"] is None:
            del raw["pretrained"]
        else:
            raw["pretrained"] = {k: v for k, v in raw["pretrained"].items() if v is not None}
        return raw

    @staticmethod
    def from_dict(raw: dict[str, Any], source: str = "<checkpoint>") -> TrainConfig:
        """Inverse of :meth:`to_dict`, validated like a file."""
        return build(TrainConfig, raw, Ctx(source))


def config_path(strategy: str, set_name: str) -> Path:
    """Path of the shipped file for ``strategy`` and hyper-parameter set ``set_name``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy = {strategy!r}: unknown strategy" + did_you_mean(strategy, STRATEGIES))
    if set_name not in SET_NAMES:
        raise ConfigError(f"--hparams = {set_name!r}: unknown hyper-parameter set" + did_you_mean(set_name, SET_NAMES))
    return CONFIG_DIR / f"{strategy}-{set_name}.toml"


def available_configs() -> list[tuple[str, str]]:
    """Every shipped ``(strategy, set)`` pair."""
    return [(s, n) for s in STRATEGIES for n in SET_NAMES]


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a hyper-parameter file; any problem is one :class:`ConfigError` line."""
    p = Path(path)
    return build(TrainConfig, load_toml(p), Ctx(str(p)))
