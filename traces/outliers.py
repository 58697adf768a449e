"""Clock-reset outliers: small clusters of timestamps far away from the rest of a recording.

A camera whose clock is reset (battery change, factory default date) stamps its images years away from
the real recording; a replay that starts there spends its whole window in silence.  Such rows form an
*isolated far-away cluster*: cut the sorted times at every gap much longer than the recording's ordinary
long gaps, and the segments that hold only a small share of the rows are the suspects.

Rule (all three must hold for a segment to be an outlier):

* it is separated from its neighbours by gaps over ``max(min_gap_s, gap_factor x p99 gap)``; the 99th
  percentile of the gaps is the recording's own "long quiet period" (for a camera trap: the time between
  triggers on a quiet day), so only a gap a hundred times longer than that counts as a jump of the clock;
* it holds at most ``max_share`` (1 %) of the rows;
* it is not the largest segment (the bulk of the recording is never an outlier).

A clean trace (Poisson, MMPP, camera-trap bursts, the shipped Azure and MICA traces) has no such gap and
is left alone; see ``tests/test_traces_outliers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OutlierCluster", "find_clock_resets"]

GAP_FACTOR = 100.0
MIN_GAP_S = 86400.0
MAX_SHARE = 0.01


@dataclass(frozen=True)
class OutlierCluster:
    """One suspect segment: its first and last time (s, on the trace's clock), rows, and the gap to the bulk."""

    start_s: float
    end_s: float
    n_rows: int
    gap_s: float


def find_clock_resets(
    times_s: np.ndarray,
    *,
    gap_factor: float = GAP_FACTOR,
    min_gap_s: float = MIN_GAP_S,
    max_share: float = MAX_SHARE,
) -> tuple[np.ndarray, tuple[OutlierCluster, ...]]:
    """A boolean mask over sorted ``times_s`` marking clock-reset outliers, and the clusters found."""
    t = np.asarray(times_s, dtype=np.float64)
    mask = np.zeros(t.size, dtype=bool)
    if t.size < 3:
        return mask, ()
    gaps = np.diff(t)
    threshold = max(min_gap_s, gap_factor * float(np.percentile(gaps, 99)))
    cuts = np.flatnonzero(gaps > threshold)
    if cuts.size == 0:
        return mask, ()
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts + 1, [t.size]])
    sizes = ends - starts
    bulk = int(np.argmax(sizes))
    limit = max(1, int(max_share * t.size))
    clusters = []
    for i, (lo, hi, size) in enumerate(zip(starts, ends, sizes, strict=True)):
        if i == bulk or size > limit:
            continue
        mask[lo:hi] = True
        gap_before = t[lo] - t[lo - 1] if lo > 0 else np.inf
        gap_after = t[hi] - t[hi - 1] if hi < t.size else np.inf
        clusters.append(OutlierCluster(float(t[lo]), float(t[hi - 1]), int(size), float(min(gap_before, gap_after))))
    return mask, tuple(clusters)
