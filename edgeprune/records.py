"""Raw per-request and per-period records → the result tables: one builder for every backend.

The simulator (``sim.runner``) and the hardware coordinator (``hil.records``) both reduce a run to the same
raw facts — per request its arrival, departure, fate and levels; per control period and stage the
:class:`~edgeprune.controller.StageObs` counters and the decision — and this module turns those into the
``requests`` and ``timeline`` tables of the result schema (``edgeprune.results``), so the two backends'
files have the same columns, types and derived values by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from edgeprune.profile import AccuracyCurve

__all__ = [
    "CPU_TIMELINE",
    "DONE",
    "DROPPED",
    "PHYSICS_TIMELINE",
    "RAW_TIMELINE",
    "UNFINISHED",
    "request_accuracy",
    "requests_table",
    "timeline_table",
]

DONE, DROPPED, UNFINISHED = 0, 1, 2  # request status codes in raw records
_STATUS_NAMES = np.array(["done", "dropped", "unfinished"])
_RAW_SCHEMA = {
    "time_s": pl.Float64,
    "stage": pl.Int64,  # stage index
    "level": pl.Int64,
    "decided": pl.Int64,
    "queue_len": pl.Int64,
    "busy": pl.Boolean,
    "arrivals": pl.Int64,
    "served": pl.Int64,
    "busy_s": pl.Float64,
    "nominal_s": pl.Float64,
    "dropped": pl.Int64,
}
RAW_TIMELINE = tuple(_RAW_SCHEMA)  # the raw timeline columns every backend records, in this order
# where a backend has device physics (raw: floats, NaN = unknown; ``throttled`` 1.0 / 0.0 / NaN → Boolean)
PHYSICS_TIMELINE = ("temp_c", "freq_mhz", "power_w", "throttled")
# where a backend measures CPU time on the nodes (hardware): the stage's process, and everything else on its node
CPU_TIMELINE = ("cpu_stage_s", "cpu_other_s")


def request_accuracy(levels: np.ndarray, done: np.ndarray, accuracy: AccuracyCurve | None, n_levels: int) -> np.ndarray:
    """Estimated accuracy of every finished request from the levels it was served at (NaN elsewhere).

    ``levels`` is ``[n, n_stages]``; each distinct level vector is looked up once (one integer code per
    vector), because a run has millions of requests but few distinct vectors.
    """
    acc = np.full(done.size, np.nan)
    if accuracy is None or not done.any():
        return acc
    n_stages = levels.shape[1]
    codes = np.zeros(int(done.sum()), dtype=np.int64)
    for k in range(n_stages):
        codes = codes * n_levels + levels[done, k].astype(np.int64)
    uniq, inverse = np.unique(codes, return_inverse=True)
    values = np.array([accuracy.of(_decode(int(c), n_levels, n_stages)) for c in uniq])
    acc[done] = values[inverse]
    return acc


def _decode(code: int, n_levels: int, n_stages: int) -> tuple[int, ...]:
    digits = []
    for _ in range(n_stages):
        code, d = divmod(code, n_levels)
        digits.append(d)
    return tuple(reversed(digits))


def requests_table(
    stage_names: Sequence[str],
    arrivals_s: np.ndarray,
    departure_s: np.ndarray,
    status: np.ndarray,
    dropped_at: np.ndarray,
    levels: np.ndarray,
    *,
    warmup_s: float,
    accuracy: np.ndarray,
) -> pl.DataFrame:
    """The ``requests`` table: ``status`` codes (:data:`DONE`, ...), ``dropped_at`` a stage index (-1: none),
    ``levels`` ``[n, n_stages]`` with -1 where not served, ``accuracy`` from :func:`request_accuracy`."""
    done = status == DONE
    cols: dict[str, pl.Series] = {
        "request_id": pl.Series(np.arange(departure_s.size, dtype=np.uint32)),
        "arrival_s": pl.Series(np.asarray(arrivals_s, dtype=np.float64)),
        "departure_s": pl.Series(np.where(done, departure_s, np.nan), nan_to_null=True),
        "latency_s": pl.Series(np.where(done, departure_s - arrivals_s, np.nan), nan_to_null=True),
        "status": pl.Series(_STATUS_NAMES[status]),
        "dropped_at": pl.Series(np.where(status == DROPPED, dropped_at, -1).astype(np.int16)).replace_strict(
            dict(enumerate(stage_names)), default=None, return_dtype=pl.String
        ),
        "in_warmup": pl.Series(arrivals_s < warmup_s),
        "accuracy": pl.Series(accuracy, nan_to_null=True),
    }
    for k, name in enumerate(stage_names):
        cols[f"level_{name}"] = pl.Series(levels[:, k].astype(np.int8)).replace(-1, None)
    return pl.DataFrame(cols)


def timeline_table(
    raw: Mapping[str, Sequence[Any] | np.ndarray], stage_names: Sequence[str], period_s: float
) -> pl.DataFrame:
    """The ``timeline`` table from raw columns :data:`RAW_TIMELINE` (one row per tick and stage; lists or
    numpy arrays), plus
    :data:`PHYSICS_TIMELINE` and :data:`CPU_TIMELINE` where ``raw`` has them (NaN: not known on the stage's
    node → null)."""
    tl = pl.DataFrame({c: raw[c] for c in RAW_TIMELINE}, schema=_RAW_SCHEMA)
    physics = [c for c in (*PHYSICS_TIMELINE, *CPU_TIMELINE) if c in raw]
    if physics:
        # through numpy: polars' nan_to_null does not apply to a Python list
        tl = tl.with_columns(pl.Series(c, np.asarray(raw[c], dtype=np.float64), nan_to_null=True) for c in physics)
    return tl.select(
        pl.col("time_s").cast(pl.Float64),
        pl.col("stage").replace_strict(dict(enumerate(stage_names)), return_dtype=pl.String),
        pl.col("level").cast(pl.Int8),
        pl.col("decided").cast(pl.Int8),
        pl.col("queue_len").cast(pl.Int32),
        pl.col("busy"),
        pl.col("arrivals").cast(pl.Int32),
        pl.when(pl.col("time_s") > 0).then(pl.col("arrivals") / period_s).alias("arrival_rate_hz"),
        pl.col("served").cast(pl.Int32),
        pl.when(pl.col("served") > 0).then(pl.col("busy_s") / pl.col("served")).alias("service_time_s"),
        pl.when(pl.col("nominal_s") > 0).then(pl.col("busy_s") / pl.col("nominal_s")).alias("env_factor"),
        pl.col("dropped").cast(pl.Int32),
        *(pl.col(c).cast(pl.Boolean) if c == "throttled" else pl.col(c) for c in physics),
    )
