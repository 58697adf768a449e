"""Confidence intervals across seeds: the mean and a Student-t interval per group.

Seeds are independent replications of a cell, so the figures of one (setting, policy) across seeds are
i.i.d. draws; the interval is ``mean ± t_{(1+level)/2, n-1} · s / √n`` with the sample standard deviation
``s``.  With one seed there is no interval (``lo`` = ``hi`` = null), never a made-up zero width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

__all__ = ["LEVEL", "mean_ci", "t_halfwidth"]

#: Confidence level of every interval in the report.
LEVEL = 0.95


def t_halfwidth(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> float | None:
    """Half-width of the t-interval of the mean of ``values`` (None for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    sd = float(np.std(x, ddof=1))
    return float(stats.t.ppf((1.0 + level) / 2.0, x.size - 1) * sd / np.sqrt(x.size))


def mean_ci(df: pl.DataFrame, by: Sequence[str], metrics: Sequence[str], level: float = LEVEL) -> pl.DataFrame:
    """Per group of ``by``: ``n`` (rows), and per metric ``m``: ``m`` (mean), ``m_lo``, ``m_hi``.

    Nulls (e.g. no finished request, so no p95) are left out of that metric's mean and interval.  Groups
    keep their first-appearance order.
    """
    aggs: list[pl.Expr] = [pl.len().alias("n")]
    for m in metrics:
        aggs += [
            pl.col(m).mean().alias(m),
            pl.col(m).std(ddof=1).alias(f"_{m}_sd"),
            pl.col(m).is_not_null().sum().alias(f"_{m}_n"),
        ]
    g = df.group_by(list(by), maintain_order=True).agg(aggs) if by else df.select(aggs)
    out = []
    for m in metrics:
        n = g[f"_{m}_n"].to_numpy().astype(float)
        sd = g[f"_{m}_sd"].to_numpy(allow_copy=True).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            tq = np.where(n >= 2, stats.t.ppf((1.0 + level) / 2.0, np.maximum(n - 1, 1)), np.nan)
            half = tq * sd / np.sqrt(n)
        mean = g[m].to_numpy(allow_copy=True).astype(float)
        out += [
            pl.Series(f"{m}_lo", mean - half, nan_to_null=True),
            pl.Series(f"{m}_hi", mean + half, nan_to_null=True),
        ]
    g = g.with_columns(out)
    cols = [*by, "n"]
    for m in metrics:
        cols += [m, f"{m}_lo", f"{m}_hi"]
    return g.select(cols)
