"""Summaries of arrival times: how many, over how long, at what rate, and how bursty.

Burstiness is the coefficient of variation (CV) of the inter-arrival times: 1 for a Poisson process,
above 1 for bursty traffic (camera-trap bursts, the Azure LLM trace's CV ≈ 13), below 1 for regular.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ArrivalStats", "BurstStats", "arrival_stats", "burst_stats", "cv_of_gaps", "peak_per_minute"]


def peak_per_minute(times_s: np.ndarray) -> int:
    """The most arrivals in any 60 s window ``[t, t + 60)`` starting at an arrival (0 for no arrivals).

    Sliding rather than fixed clock minutes, so that recorded and generated traces are binned alike
    whatever their phase.
    """
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0:
        return 0
    return int((np.searchsorted(t, t + 60.0, side="left") - np.arange(t.size)).max())


def cv_of_gaps(times_s: np.ndarray) -> float:
    """Coefficient of variation of the inter-arrival gaps of sorted ``times_s`` (NaN without a gap)."""
    gaps = np.diff(np.asarray(times_s, dtype=np.float64))
    if gaps.size == 0 or gaps.mean() <= 0:
        return float("nan")
    return float(gaps.std() / gaps.mean())


@dataclass(frozen=True)
class ArrivalStats:
    """Summary of sorted arrival times; rates and CV are NaN when there are fewer than two arrivals."""

    n: int
    span_s: float
    mean_rate_hz: float
    mean_gap_s: float
    cv_gap: float
    zero_gap_fraction: float
    peak_rate_1s_hz: float

    def describe(self) -> str:
        """One line: count, span, mean rate, CV of gaps, share of simultaneous arrivals, busiest second."""
        return (
            f"{self.n} arrivals over {self.span_s:.6g} s, mean {self.mean_rate_hz:.4g}/s, "
            f"CV of gaps {self.cv_gap:.3g}, {100 * self.zero_gap_fraction:.1f}% zero gaps, "
            f"peak {self.peak_rate_1s_hz:.0f} in 1 s"
        )


def arrival_stats(times_s: np.ndarray) -> ArrivalStats:
    """Summarise sorted arrival times (seconds)."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < 2:
        nan = float("nan")
        return ArrivalStats(int(t.size), 0.0, nan, nan, nan, nan, float(t.size))
    gaps = np.diff(t)
    span = float(t[-1] - t[0])
    mean_gap = float(gaps.mean())
    cv = float(gaps.std() / mean_gap) if mean_gap > 0 else float("inf")
    window_ends = np.searchsorted(t, t + 1.0, side="left")
    peak = float((window_ends - np.arange(t.size)).max())
    rate = (t.size - 1) / span if span > 0 else float("inf")
    return ArrivalStats(int(t.size), span, rate, mean_gap, cv, float((gaps == 0).mean()), peak)


@dataclass(frozen=True)
class BurstStats:
    """Arrivals grouped into bursts: a gap longer than ``max_gap_s`` starts a new burst.

    Useful to fit :class:`~traces.spec.CameraTrapArrivals` to a recorded camera-trap trace:
    ``trigger_rate_hz`` is bursts per second of span, ``mean_size`` / ``max_size`` are frames per burst,
    ``mean_intra_gap_s`` the mean gap between frames of one burst.
    """

    n_bursts: int
    mean_size: float
    max_size: int
    mean_intra_gap_s: float
    trigger_rate_hz: float

    def describe(self) -> str:
        """One line: number of bursts, frames per burst, gap within bursts, triggers per hour."""
        return (
            f"{self.n_bursts} bursts, {self.mean_size:.3g} frames each on average (max {self.max_size}), "
            f"{self.mean_intra_gap_s:.3g} s between frames, {3600 * self.trigger_rate_hz:.3g} triggers/h"
        )


def burst_stats(times_s: np.ndarray, max_gap_s: float) -> BurstStats:
    """Group sorted arrival times into bursts separated by gaps over ``max_gap_s`` and summarise them."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0:
        return BurstStats(0, float("nan"), 0, float("nan"), float("nan"))
    gaps = np.diff(t)
    new_burst = gaps > max_gap_s
    sizes = np.diff(np.flatnonzero(np.concatenate([[True], new_burst, [True]])))
    intra = gaps[~new_burst]
    span = float(t[-1] - t[0])
    return BurstStats(
        n_bursts=int(sizes.size),
        mean_size=float(sizes.mean()),
        max_size=int(sizes.max()),
        mean_intra_gap_s=float(intra.mean()) if intra.size else float("nan"),
        trigger_rate_hz=sizes.size / span if span > 0 else float("nan"),
    )
