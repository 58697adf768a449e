"""What one optimisation step computes, per strategy.

* ``baseline`` — ordinary training of the full width (cross-entropy).  Pruning comes after the fact:
  the trained tower is nested in torch-pruning importance order (:mod:`models.training.loop`).
* ``sandwich`` — the sandwich rule of slimmable / once-for-all networks, over *per-stage* levels: every
  step trains the full width (all stages at level 0), the smallest (all stages at the last level) and
  ``k_random`` level vectors drawn from the ladder independently per stage — because at run time each
  pipeline stage is pruned on its own.  Gradients of all passes are summed into one optimiser step.
* ``sandwich-distill`` — the same, but every narrower pass also learns from the full-width output of the
  same step (in-place distillation, detached teacher): ``(1 - w)·CE + w·T²·KL(teacher ‖ student)``.
  A pure-KL student (``w = 1``) collapses on digits from scratch (the teacher is uniform at first and
  the students pull the shared leading channels towards it), hence the mix.

Level vectors are drawn with the loop's ``torch.Generator``, so a run is reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.training.config import TrainConfig
from models.training.network import Classifier

__all__ = ["StepFn", "sample_vectors", "step_function"]

StepFn = Callable[[Classifier, torch.Tensor, torch.Tensor, torch.Generator], float]


def sample_vectors(n_stages: int, n_levels: int, k: int, generator: torch.Generator) -> list[list[int]]:
    """Full width, smallest, then ``k`` vectors with each stage's level uniform over the ladder."""
    vectors = [[0] * n_stages, [n_levels - 1] * n_stages]
    vectors += [torch.randint(0, n_levels, (n_stages,), generator=generator).tolist() for _ in range(k)]
    return vectors


def _baseline(cfg: TrainConfig) -> StepFn:
    def step(net: Classifier, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> float:
        loss = F.cross_entropy(net(images), labels, label_smoothing=cfg.label_smoothing)
        loss.backward()
        return float(loss.detach())

    return step


def _distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` averaged over the batch."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


def _sandwich(cfg: TrainConfig, distill: bool) -> StepFn:
    w = cfg.distill_weight if distill else 0.0

    def step(net: Classifier, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> float:
        pipe = net.pipe
        assert pipe is not None, "pruning-aware strategies train a nested body"
        vectors = sample_vectors(len(pipe.stage_list), len(pipe.levels), cfg.k_random, generator)
        teacher: torch.Tensor | None = None
        total = 0.0
        for vec in vectors:
            pipe.set_levels(vec)
            logits = net(images)
            ce = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            if teacher is None:
                loss = ce
                teacher = logits.detach()
            elif w > 0.0:
                loss = (1.0 - w) * ce + w * _distill_loss(logits, teacher, cfg.distill_temperature)
            else:
                loss = ce
            loss.backward()
            total += float(loss.detach())
        pipe.set_levels(0)
        return total / len(vectors)

    return step


def step_function(cfg: TrainConfig) -> StepFn:
    """The step of ``cfg.strategy``: runs its forward/backward passes, returns the mean loss."""
    if cfg.strategy == "baseline":
        return _baseline(cfg)
    return _sandwich(cfg, distill=cfg.strategy == "sandwich-distill")
