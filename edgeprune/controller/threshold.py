"""``threshold``: the reactive baseline, stepping a stage's level on its queue length.

Every period, per stage, looking only at that stage's waiting queue:

* ``queue_len >= high_queue`` → one level up (more pruning), unless the step would take the pipeline's
  estimated accuracy below ``min_accuracy`` or the stage is at ``max_level``;
* ``queue_len <= low_queue`` for the stage's cool-down in a row → one level down, and the cool-down
  restarts;
* otherwise hold.

Anti-flapping: when a stage must be pruned within one cool-down of a relaxation (of any stage: relaxing
one stage moves the queue to the next), the cool-down doubles (up to ``max_backoff`` times
``cooldown_s``); a step up long after the last relaxation halves it back.  Under a stationary load
between two rungs the policy thus settles instead of oscillating.

No model, no rate estimate: the policy every adaptive system is first compared with (and the one the paper's
"dynamic pruning" has to beat to mean anything).  It reacts only once a queue has formed, so bursts are paid
for before it prunes, and it relaxes one rung per cool-down.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import spec_field
from edgeprune.controller.contract import Levels, Observation, PipelineCurves
from edgeprune.controller.estimate import AccuracyTable
from edgeprune.controller.params import AdaptiveParams
from edgeprune.controller.registry import PolicyKind, register

__all__ = ["ThresholdParams", "ThresholdPolicy"]


@dataclass(frozen=True)
class ThresholdParams(AdaptiveParams):
    """Parameters of ``kind = "threshold"``."""

    high_queue: int = spec_field(default=3, ge=1, doc="waiting requests at which a stage is pruned one more level")
    low_queue: int = spec_field(default=1, ge=0, doc="waiting requests at or below which a stage may relax")
    cooldown_s: float = spec_field(default=10.0, ge=0, doc="time a queue must stay low before relaxing one level")
    max_backoff: float = spec_field(default=4.0, ge=1, doc="cool-down grows up to this many times cooldown_s")

    def check(self) -> list[tuple[str, object, str]]:
        """The low threshold must lie below the high one (else every queue both prunes and relaxes)."""
        if self.low_queue >= self.high_queue:
            return [("low_queue", self.low_queue, f"must be < high_queue ({self.high_queue})")]
        return []


class ThresholdPolicy:
    """Queue-length thresholds per stage, one rung at a time, with a cool-down before relaxing."""

    def __init__(self, params: ThresholdParams, curves: PipelineCurves) -> None:
        self.p = params
        self.c = curves
        n = curves.n_stages
        self._top = params.top_level(curves.n_levels)
        self._levels = [0] * n
        self._low_since: list[float | None] = [None] * n
        self._relaxed_at: float | None = None
        self._backoff = 1.0
        self._acc = AccuracyTable(curves)

    def decide(self, observation: Observation) -> Levels:
        """Levels for the next period (see the module docstring)."""
        if observation.period_s <= 0:
            return tuple(self._levels)
        now = observation.time_s
        for k, st in enumerate(observation.stages):
            if st.queue_len >= self.p.high_queue:
                self._low_since[k] = None
                self._step_up(k, now)
            elif st.queue_len <= self.p.low_queue and self._levels[k] > 0:
                since = self._low_since[k]
                if since is None:
                    self._low_since[k] = now
                elif now - since >= self.p.cooldown_s * self._backoff:
                    self._levels[k] -= 1
                    self._low_since[k] = self._relaxed_at = now
            else:
                self._low_since[k] = None
        return tuple(self._levels)

    def _step_up(self, k: int, now_s: float) -> None:
        relaxed = self._relaxed_at
        if relaxed is not None:  # was the last relaxation a mistake?
            undone = now_s - relaxed < self.p.cooldown_s * self._backoff
            self._backoff = min(max(self._backoff * (2.0 if undone else 0.5), 1.0), self.p.max_backoff)
            self._relaxed_at = None
        if self._levels[k] >= self._top:
            return
        self._levels[k] += 1
        floor = self.p.min_accuracy
        if floor is not None and self._acc.of(self._levels) < floor:
            self._levels[k] -= 1


def _make(params: ThresholdParams, curves: PipelineCurves) -> ThresholdPolicy:
    return ThresholdPolicy(params, curves)


register(PolicyKind("threshold", ThresholdParams, _make, "queue-length thresholds, one level at a time"))
