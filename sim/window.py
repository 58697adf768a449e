"""The unbounded-queue path of the engine: SimPy schedules the ticks and environment events, and the request
flow between two of them is advanced in one pass per stage.

Why this is exact
-----------------
With unbounded FIFO queues a stage's future depends only on the requests handed to it and on its level and
speed at each service start.  Levels change only at controller ticks and speeds only at environment events,
so between two such instants (a *window*) every stage is a plain tandem-queue recursion::

    B[k][i] = max(D[k][i-1], A[k][i])      start: after the previous service and the request's arrival
    D[k][i] = B[k][i] + S[k][i]            S drawn at the level and factor in force at B
    A[k+1][i] = link(D[k][i])              FIFO link: serialisation then propagation

``advance(h)`` applies it stage by stage to every service that *starts* before ``h``; a service that starts at
or after ``h`` waits in its queue for the next window (after the tick's decision).  A request can only reach
stage ``k + 1`` before ``h`` if it started at stage ``k`` before ``h``, so one pass in stage order is enough.

The observation at a tick needs the stages' state at that instant, which the recursion gives directly: a
single server has at most one service in progress (the last one started), so the period's completions are
every started service but that one, and the waiting requests are those handed over whose arrival time has
passed.  Counters are summed in completion order, as the event path does, so the two paths agree bit for bit
(tests/test_sim_engine.py).  The recursion and the read-out are ``sim.kernels.step`` (numba-compiled for long
runs): per request a few array operations instead of ~4 SimPy events, per tick one kernel call plus the
controller itself.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappush
from typing import Any

import numpy as np

from edgeprune.controller.contract import Observation, OracleView, Policy, StageObs
from sim import kernels
from sim.core import (
    NO_LEVEL,
    TIMELINE_COLUMNS,
    UNFINISHED,
    EngineOutput,
    Env,
    Ev,
    SimSetup,
    check_decision,
)

__all__ = ["COMPILE_FROM_REQUESTS", "run_windowed"]

COMPILE_FROM_REQUESTS = 20_000  # below this, plain Python beats numba's one-off import and load (~1.5 s)


@dataclass
class _State:
    """The kernels' arguments: numpy arrays for numba, or Python lists / ``array`` rows for plain Python
    (where indexing a list is ~4x cheaper than indexing a numpy array).  Same layout, same code."""

    rdy: Any  # [k][i] arrival time of request i at stage k (row 0: the arrivals)
    u: Any  # [k][i] latency quantile
    samples: Any  # [k][level][j] sorted latency samples (padded when compiled)
    slen: Any  # [k][level] number of samples
    mean: Any  # [k][level] nominal time
    tx: Any  # [k] hop transmission, 0 after the last stage
    lat: Any  # [k] hop propagation
    lev: Any  # [k][i] level served at, NO_LEVEL if not served
    svc: Any  # [k][i] service time incl. switch cost, NaN if not served
    dep: Any  # [i] departure time, NaN unless done
    status: Any  # [i] DONE / UNFINISHED
    fs: Any  # [row][k] float state (kernels.FREE, ...)
    ist: Any  # [row][k] int state (kernels.STARTED, ...)
    iout: Any  # [k][5] tick read-out, ints
    fout: Any  # [k][2] tick read-out, floats
    tl_i: Any  # flat timeline, 5 ints per (tick, stage) row
    tl_f: Any  # flat timeline, 2 floats per (tick, stage) row


def _n_ticks(s: SimSetup) -> int:
    """Ticks of a run: at ``n * period_s`` for every ``n`` with ``n * period_s < end_s`` (one spare)."""
    return math.ceil(s.end_s / s.period_s) + 1


def _numpy_state(s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray) -> _State:
    k_n, n = s.n_stages, arrivals_s.size
    rdy = np.full((k_n, n), np.nan)
    rdy[0] = arrivals_s
    slen = np.array([[len(lv) for lv in st] for st in s.samples_s], dtype=np.int64)
    samples = np.zeros((k_n, s.n_levels, int(slen.max())))
    for k, st in enumerate(s.samples_s):
        for lvl, row in enumerate(st):
            samples[k, lvl, : len(row)] = row
    fs = np.zeros((kernels.FS_ROWS, k_n))
    fs[kernels.FACTOR] = s.initial_factor
    return _State(
        rdy=rdy,
        u=np.ascontiguousarray(quantiles, dtype=np.float64),
        samples=samples,
        slen=slen,
        mean=np.array(s.mean_s, dtype=np.float64),
        tx=np.array([*s.hop_tx_s, 0.0]),
        lat=np.array([*s.hop_latency_s, 0.0]),
        lev=np.full((k_n, n), NO_LEVEL, dtype=np.uint8),
        svc=np.full((k_n, n), np.nan),
        dep=np.full(n, np.nan),
        status=np.full(n, UNFINISHED, dtype=np.uint8),
        fs=fs,
        ist=np.zeros((kernels.IST_ROWS, k_n), dtype=np.int64),
        iout=np.zeros((k_n, 5), dtype=np.int64),
        fout=np.zeros((k_n, 2)),
        tl_i=np.zeros(_n_ticks(s) * k_n * 5, dtype=np.int64),
        tl_f=np.zeros(_n_ticks(s) * k_n * 2),
    )


def _python_state(s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray) -> _State:
    k_n, n = s.n_stages, arrivals_s.size
    nan_row = array("d", [math.nan]) * n
    return _State(
        rdy=[array("d", arrivals_s.tobytes())] + [array("d", nan_row) for _ in range(k_n - 1)],
        u=[array("d", np.ascontiguousarray(quantiles[k], dtype=np.float64).tobytes()) for k in range(k_n)],
        samples=[[list(lv) for lv in st] for st in s.samples_s],
        slen=[[len(lv) for lv in st] for st in s.samples_s],
        mean=[list(st) for st in s.mean_s],
        tx=[*s.hop_tx_s, 0.0],
        lat=[*s.hop_latency_s, 0.0],
        lev=[bytearray([NO_LEVEL]) * n for _ in range(k_n)],
        svc=[array("d", nan_row) for _ in range(k_n)],
        dep=array("d", nan_row),
        status=bytearray([UNFINISHED]) * n,
        fs=[list(s.initial_factor) if r == kernels.FACTOR else [0.0] * k_n for r in range(kernels.FS_ROWS)],
        ist=[[0] * k_n for _ in range(kernels.IST_ROWS)],
        iout=[[0] * 5 for _ in range(k_n)],
        fout=[[0.0, 0.0] for _ in range(k_n)],
        tl_i=array("q", bytes(8 * _n_ticks(s) * k_n * 5)),
        tl_f=array("d", bytes(8 * _n_ticks(s) * k_n * 2)),
    )


def _prepare(
    s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray, compiled: bool | None
) -> tuple[_State, kernels.Kernel, bool]:
    """Compiled kernels on numpy state for long runs (or when asked), else the same functions as Python."""
    want = arrivals_s.size >= COMPILE_FROM_REQUESTS if compiled is None else compiled
    fast = kernels.compiled() if want else None
    if fast is None and compiled:
        raise RuntimeError("compiled=True but numba is not installed (pip install numba)")
    if fast is not None:
        return _numpy_state(s, arrivals_s, quantiles), fast, True
    return _python_state(s, arrivals_s, quantiles), kernels.step, False


def run_windowed(
    s: SimSetup,
    policy: Policy,
    arrivals_s: np.ndarray,
    quantiles: np.ndarray,
    progress: Callable[[float], None] | None,
    compiled: bool | None = None,
) -> EngineOutput:
    """Run one policy with unbounded queues (see the module docstring)."""
    env = Env()
    heap: list[Any] = env._queue
    eid = env._eid
    k_n = s.n_stages
    n = arrivals_s.size
    end_s = s.end_s
    n_levels = s.n_levels
    period_s = s.period_s
    st, kernel, is_numpy = _prepare(s, arrivals_s, quantiles, compiled)
    rdy, u, samples, slen, mean, tx, lat = st.rdy, st.u, st.samples, st.slen, st.mean, st.tx, st.lat
    lev, svc, dep, status, fs, ist, iout, fout = st.lev, st.svc, st.dep, st.status, st.fs, st.ist, st.iout, st.fout
    factor = fs[kernels.FACTOR]
    target = ist[kernels.TARGET]
    speed = list(s.speed) if s.speed is not None else [1.0] * k_n
    tl_i, tl_f = st.tl_i, st.tl_f
    args = (end_s, s.switch_s, rdy, u, samples, slen, mean, tx, lat, lev, svc, dep, status, fs, ist, iout, fout)
    if is_numpy:
        kernel = kernels.bind(kernel, (0.0, *args, 0, tl_i, tl_f))

    def advance(h: float) -> None:
        """Every service starting before ``h`` (kernels.step without a read-out)."""
        kernel(h, *args, -1, tl_i, tl_f)

    changes = s.env_changes
    wants_oracle = bool(getattr(policy, "wants_oracle", False))
    tick_times: list[float] = []
    decisions: list[tuple[int, ...]] = []
    new_stage = tuple.__new__
    tick_n = 0
    last_decided: tuple[int, ...] = ()

    def on_tick(ev: Ev) -> None:
        """Advance to the tick, read the stages, let the policy decide (the only per-period Python code)."""
        nonlocal tick_n, last_decided
        now = env._now
        kernel(now, *args, tick_n, tl_i, tl_f)  # advance + read-out in one call
        ints, floats = (iout.tolist(), fout.tolist()) if is_numpy else (iout, fout)
        stages = tuple(  # tuple.__new__ on a full row: a third of StageObs._make's cost, and this runs every tick
            [
                new_stage(StageObs, (lv, q, b == 1, a, sv, bs, ns, 0))
                for (lv, q, b, a, sv), (bs, ns) in zip(ints, floats, strict=True)
            ]
        )
        oracle = (
            OracleView(tuple(float(f) * v for f, v in zip(factor, speed, strict=True)), arrivals_s)
            if wants_oracle
            else None
        )
        obs = Observation(now, period_s if tick_n > 0 else 0.0, stages[0].arrivals, stages, oracle)
        decided = policy.decide(obs)
        levels_now = check_decision(policy, decided, now, k_n, n_levels)
        tick_times.append(now)
        decisions.append(levels_now)
        if tick_n == 0:  # the start decision is the deployment itself: no switch, no cost
            ist[kernels.LEVEL][:] = levels_now
        if levels_now != last_decided:
            target[:] = levels_now
            last_decided = levels_now
        tick_n += 1
        t_next = tick_n * period_s
        if t_next < end_s:
            ev.callbacks = on_tick_cbs
            heappush(heap, (t_next, 1, next(eid), ev))
        if progress is not None and tick_n % 256 == 0:
            progress(now)

    def on_env(ev: Ev) -> None:
        advance(env._now)
        j = ev.job
        t = changes[j][0]
        while j < len(changes) and changes[j][0] == t:
            factor[changes[j][1]] = changes[j][2]
            j += 1
        if j < len(changes):
            ev.job = j
            ev.callbacks = on_env_cbs
            heappush(heap, (changes[j][0], 1, next(eid), ev))

    on_tick_cbs = [on_tick]
    on_env_cbs = [on_env]
    tick = Ev()
    tick.callbacks = on_tick_cbs
    env.at(tick, 0.0)  # scheduled first: the start decision precedes any arrival at t = 0
    if changes:
        e = Ev(job=0)
        e.callbacks = on_env_cbs
        env.at(e, changes[0][0])
    env.run(until=end_s)
    advance(end_s)
    return EngineOutput(
        departure_s=np.asarray(dep, dtype=np.float64) if is_numpy else np.frombuffer(dep, dtype=np.float64).copy(),
        status=np.asarray(status) if is_numpy else np.frombuffer(status, dtype=np.uint8).copy(),
        dropped_at=np.full(n, -1, dtype=np.int8),
        levels=_by_request(lev, np.uint8, k_n, n),
        service_s=_by_request(svc, np.float64, k_n, n),
        timeline=_timeline(tick_times, decisions, tl_i, tl_f, k_n),
        switches=int(ist[kernels.SWITCHES][0]),
        events=int(next(eid)),
    )


def _timeline(
    times: list[float], decisions: list[tuple[int, ...]], tl_i: Any, tl_f: Any, k_n: int
) -> dict[str, list[Any]]:
    """The timeline columns (``sim.core.TIMELINE_COLUMNS``) from the kernels' flat buffers."""
    rows = len(times) * k_n
    ints = np.frombuffer(tl_i, dtype=np.int64)[: rows * 5].reshape(rows, 5)
    floats = np.frombuffer(tl_f, dtype=np.float64)[: rows * 2].reshape(rows, 2)
    cols: dict[str, list[Any]] = {
        "time_s": np.repeat(np.asarray(times, dtype=np.float64), k_n).tolist(),
        "stage": list(range(k_n)) * len(times),
        "level": ints[:, 0].tolist(),
        "decided": [v for d in decisions for v in d],
        "queue_len": ints[:, 1].tolist(),
        "busy": (ints[:, 2] == 1).tolist(),
        "arrivals": ints[:, 3].tolist(),
        "served": ints[:, 4].tolist(),
        "busy_s": floats[:, 0].tolist(),
        "nominal_s": floats[:, 1].tolist(),
        "dropped": [0] * rows,
    }
    return {c: cols[c] for c in TIMELINE_COLUMNS}


def _by_request(rows: Any, dtype: type, k_n: int, n: int) -> np.ndarray:
    """``[k][i]`` rows (numpy or buffers) as an ``[n, k_n]`` array."""
    if isinstance(rows, np.ndarray):
        return np.ascontiguousarray(rows.T)
    if not n:
        return np.zeros((0, k_n), dtype=dtype)
    return np.stack([np.frombuffer(r, dtype=dtype) for r in rows], axis=1)
