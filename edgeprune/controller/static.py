"""``static``: fixed levels for the whole run (no-pruning and always-max are two instances)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import spec_field
from edgeprune.controller.contract import Levels, Observation, PipelineCurves
from edgeprune.controller.registry import PolicyKind, register

__all__ = ["StaticParams", "StaticPolicy"]


@dataclass(frozen=True)
class StaticParams:
    """Parameters of ``kind = "static"``."""

    levels: tuple[int, ...] = spec_field(ge=0, doc="level per stage (index into the profile's ladder)")
    period_s: float = spec_field(default=1.0, gt=0, doc="monitoring period (the timeline's resolution)")

    def check_pipeline(self, *, n_stages: int, n_levels: int, has_accuracy: bool) -> list[tuple[str, object, str]]:
        """Levels must name every stage and lie on the ladder."""
        if len(self.levels) != n_stages:
            return [("levels", list(self.levels), f"need one level per stage ({n_stages})")]
        bad = [lv for lv in self.levels if lv >= n_levels]
        if bad:
            return [("levels", list(self.levels), f"level {bad[0]} is outside the ladder 0..{n_levels - 1}")]
        return []


class StaticPolicy:
    """Always answers the same levels."""

    def __init__(self, levels: Levels) -> None:
        self._levels = tuple(int(v) for v in levels)

    def decide(self, observation: Observation) -> Levels:
        """The fixed levels, whatever is observed."""
        return self._levels


def _make(params: StaticParams, curves: PipelineCurves) -> StaticPolicy:
    return StaticPolicy(params.levels)


register(PolicyKind("static", StaticParams, _make, "fixed levels"))
