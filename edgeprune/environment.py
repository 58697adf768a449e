"""The scripted environment as one schedule per node: written once, used by the simulator and the hardware
backend (which applies it as CPU quota, ``stress-ng`` or cpufreq, and replays what it measured).

A scenario's ``[[environment]]`` events each give a piecewise-constant service-time factor over time
(``EnvironmentEvent.change_points``); events on the same node multiply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeprune.scenario import EnvironmentEvent

__all__ = ["factor_at", "factor_changes", "merged_schedule"]


def factor_at(points: Sequence[tuple[float, float]], t: float) -> float:
    """The factor of a ``(time_s, factor)`` schedule in force at ``t`` (1 before the first point)."""
    f = 1.0
    for tp, fp in points:
        if tp <= t:
            f = fp
    return f


def merged_schedule(events: Sequence[EnvironmentEvent], start: float = 1.0) -> list[tuple[float, float]]:
    """``(time_s, factor)`` at 0 and at every change point of ``events``: ``start`` times the product of the
    events' factors in force (multiplied in the events' order, so every user gets the same floats)."""
    points = [ev.change_points() for ev in events]
    times = sorted({t for pts in points for t, _ in pts} | {0.0})
    return [(t, math.prod((factor_at(pts, t) for pts in points), start=start)) for t in times]


def factor_changes(schedule: Sequence[tuple[float, float]], before: float = 1.0) -> list[tuple[float, float]]:
    """The points of ``schedule`` where the factor differs from the one before (``before`` at first)."""
    out = []
    prev = before
    for t, f in schedule:
        if f != prev:
            out.append((t, f))
        prev = f
    return out
