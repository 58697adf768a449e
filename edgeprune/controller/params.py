"""Parameters every adaptive policy shares: the control period, the accuracy floor and the highest level."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import spec_field

__all__ = ["AdaptiveParams"]


@dataclass(frozen=True)
class AdaptiveParams:
    """Base of the ``bottleneck``, ``threshold``, ``predictive`` and ``oracle`` parameter tables."""

    period_s: float = spec_field(default=1.0, gt=0, doc="control period")
    min_accuracy: float | None = spec_field(default=None, gt=0, le=1, doc="accuracy floor (needs profile accuracy)")
    max_level: int | None = spec_field(default=None, ge=0, doc="highest level the policy may choose")

    def check_pipeline(self, *, n_stages: int, n_levels: int, has_accuracy: bool) -> list[tuple[str, object, str]]:
        """``max_level`` must be on the ladder; an accuracy floor needs an accuracy curve."""
        if self.max_level is not None and self.max_level >= n_levels:
            return [("max_level", self.max_level, f"outside the ladder 0..{n_levels - 1}")]
        if self.min_accuracy is not None and not has_accuracy:
            return [("min_accuracy", self.min_accuracy, "the profile has no accuracy curve to enforce it with")]
        return []

    def top_level(self, n_levels: int) -> int:
        """The highest level the policy may choose: ``max_level`` if set, else the ladder's last level."""
        return n_levels - 1 if self.max_level is None else self.max_level
