"""The SimPy model of a pipeline of FIFO stages, links and a periodic controller.

Model
-----
* Stage ``k`` is a single FIFO server with a waiting room (unbounded, or ``capacity`` waiting requests with
  tail or head drop).  A request's service time at stage ``k`` is the profile's latency sample at the
  stage's level, drawn by a per-request quantile ``u[k][i]`` (common random numbers: the same request gets
  the same quantile whatever the level or policy), times the stage's current environment factor (device
  speed and slowdown events, taken at service start), plus the switch cost when the level changed.
* The hop from stage ``k`` to ``k + 1`` is a FIFO link: transmission ``tx_s`` (activation bytes /
  bandwidth) serialised on the link, then a constant propagation ``latency_s``.
* A controller tick every ``period_s`` builds an :class:`~edgeprune.controller.Observation` from counters,
  calls ``policy.decide`` and sets each stage's *target* level, applied at that stage's next service start
  (a service starting exactly at a tick uses the tick's decision).

Implementation
--------------
Both request paths run on SimPy's scheduler (``simpy.Environment``) with callback events instead of a
generator process per request, and event times are absolute (``Env.at``), so ticks fall exactly on
``n * period_s``:

* **events** (this module; bounded queues): one SimPy event per arrival at every stage and one completion
  per stage, so drop decisions see the queue exactly at the arrival instant;
* **windowed** (``sim.window``; unbounded queues, the default): SimPy schedules only the ticks and the
  environment events, and between two of them the stages are advanced by the tandem-queue recursion,
  because nothing can change a level or a speed there.

With a never-full bounded queue the two paths give bit-identical results under any policy, and with
deterministic service times both equal the recursion ``D[k][i] = max(D[k][i-1], A[k][i]) + S[k][i]``
(tests/test_sim_engine.py, tests/test_sim_theory.py).
"""

from __future__ import annotations

import gc
import math
from array import array
from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import Any

import numpy as np

from edgeprune.controller.contract import Observation, OracleView, Policy, StageObs
from sim.core import (
    DONE,
    DROPPED,
    NO_LEVEL,
    UNFINISHED,
    EngineOutput,
    Env,
    Ev,
    SimSetup,
    check_decision,
    timeline_columns,
)
from sim.window import run_windowed

__all__ = ["DONE", "DROPPED", "NO_LEVEL", "UNFINISHED", "EngineOutput", "SimSetup", "simulate"]


class _Pipeline:
    """State and event handlers of one event-path run (closures over local state, for speed)."""

    def __init__(
        self,
        setup: SimSetup,
        policy: Policy,
        arrivals_s: np.ndarray,
        quantiles: np.ndarray,
        progress: Callable[[float], None] | None,
    ) -> None:
        self.setup = setup
        self.policy = policy
        self.arrivals_s = arrivals_s
        self.quantiles = quantiles
        self.progress = progress

    def run(self) -> EngineOutput:
        s = self.setup
        policy = self.policy
        env = Env()
        heap: list[Any] = env._queue
        eid = env._eid
        k_n = s.n_stages
        last = k_n - 1
        arr = array("d", self.arrivals_s.tobytes())  # compact: 8 bytes per request, floats on access
        n = len(arr)
        cap = s.queue_capacity if s.queue_capacity is not None else n
        drop_head = s.drop_head
        u = [array("d", np.ascontiguousarray(self.quantiles[k]).tobytes()) for k in range(k_n)]
        samples = [[list(lv) for lv in st] for st in s.samples_s]
        mean = [list(st) for st in s.mean_s]
        switch_s = s.switch_s
        tx = list(s.hop_tx_s)
        lat = list(s.hop_latency_s)
        factor = list(s.initial_factor)
        speed = list(s.speed) if s.speed is not None else [1.0] * k_n
        level = [0] * k_n
        target = [0] * k_n
        busy = [False] * k_n
        cur_s = [0.0] * k_n
        cur_nom = [0.0] * k_n
        hop_free = [0.0] * k_n
        waiting: list[deque[int]] = [deque() for _ in range(k_n)]
        src = [0]  # next arrival index
        # per-period counters
        c_arr = [0]
        c_stage_arr = [0] * k_n
        c_served = [0] * k_n
        c_busy = [0.0] * k_n
        c_nom = [0.0] * k_n
        c_drop = [0] * k_n
        # records
        departure = array("d", [math.nan]) * n
        status = bytearray([UNFINISHED]) * n
        dropped_at = array("b", [-1]) * n
        lev_rec = [bytearray([NO_LEVEL]) * n for _ in range(k_n)]
        svc_rec = [array("d", [math.nan]) * n for _ in range(k_n)]
        switches = [0]
        done_ev = [Ev(stage=k) for k in range(k_n)]
        src_ev = Ev(stage=0)

        def start(k: int, i: int, now: float) -> None:
            lvl = target[k]
            extra = 0.0
            if lvl != level[k]:
                level[k] = lvl
                switches[0] += 1
                extra = switch_s
            row = samples[k][lvl]
            t = row[int(u[k][i] * len(row))] * factor[k] + extra
            busy[k] = True
            cur_s[k] = t
            cur_nom[k] = mean[k][lvl]
            lev_rec[k][i] = lvl
            svc_rec[k][i] = t
            ev = done_ev[k]
            ev.job = i
            ev.callbacks = on_done_cbs
            heappush(heap, (now + t, 1, next(eid), ev))

        def arrive(k: int, i: int) -> None:
            c_stage_arr[k] += 1
            if not busy[k]:
                start(k, i, env._now)
                return
            q = waiting[k]
            if len(q) >= cap:
                c_drop[k] += 1
                if drop_head and q:
                    victim = q.popleft()
                    q.append(i)
                    i = victim
                status[i] = DROPPED
                dropped_at[i] = k
                return
            q.append(i)

        def on_source(ev: Ev) -> None:
            i = src[0]
            src[0] = i + 1
            c_arr[0] += 1
            arrive(0, i)
            if i + 1 < n:
                ev.callbacks = on_source_cbs
                heappush(heap, (arr[i + 1], 1, next(eid), ev))

        def on_hop(ev: Ev) -> None:
            arrive(ev.stage, ev.job)

        def on_done(ev: Ev) -> None:
            k = ev.stage
            i = ev.job
            now = env._now
            c_served[k] += 1
            c_busy[k] += cur_s[k]
            c_nom[k] += cur_nom[k]
            if k == last:
                departure[i] = now
                status[i] = DONE
            else:
                t_free = (hop_free[k] if hop_free[k] > now else now) + tx[k]
                hop_free[k] = t_free
                t_arr = t_free + lat[k]
                if t_arr <= now:
                    arrive(k + 1, i)
                else:
                    hop = Ev(stage=k + 1, job=i)
                    hop.callbacks = on_hop_cbs
                    heappush(heap, (t_arr, 1, next(eid), hop))
            q = waiting[k]
            if q:
                start(k, q.popleft(), now)
            else:
                busy[k] = False

        changes = s.env_changes

        def on_env(ev: Ev) -> None:
            j = ev.job
            t = changes[j][0]
            while j < len(changes) and changes[j][0] == t:
                factor[changes[j][1]] = changes[j][2]
                j += 1
            if j < len(changes):
                ev.job = j
                ev.callbacks = on_env_cbs
                heappush(heap, (changes[j][0], 1, next(eid), ev))

        wants_oracle = bool(getattr(policy, "wants_oracle", False))
        log: list[tuple[float, tuple[int, ...], tuple[StageObs, ...]]] = []  # (time, decision, observation)
        tick_n = [0]

        def observe(now: float) -> Observation:
            stages = tuple(
                StageObs(
                    level=level[k],
                    queue_len=len(waiting[k]),
                    busy=busy[k],
                    arrivals=c_stage_arr[k],
                    served=c_served[k],
                    busy_s=c_busy[k],
                    nominal_s=c_nom[k],
                    dropped=c_drop[k],
                )
                for k in range(k_n)
            )
            oracle = (
                OracleView(tuple(f * v for f, v in zip(factor, speed, strict=True)), self.arrivals_s)
                if wants_oracle
                else None
            )
            period = s.period_s if tick_n[0] > 0 else 0.0
            return Observation(time_s=now, period_s=period, arrivals=c_arr[0], stages=stages, oracle=oracle)

        def record(obs: Observation, decided: tuple[int, ...]) -> None:
            log.append((obs.time_s, decided, obs.stages))
            for k in range(k_n):
                c_stage_arr[k] = c_served[k] = c_drop[k] = 0
                c_busy[k] = c_nom[k] = 0.0
            c_arr[0] = 0

        def on_tick(ev: Ev) -> None:
            now = env._now
            obs = observe(now)
            decided = policy.decide(obs)
            levels_now = check_decision(policy, decided, now, k_n, s.n_levels)
            record(obs, levels_now)
            for k in range(k_n):
                target[k] = levels_now[k]
                if tick_n[0] == 0:  # the start decision is the deployment itself: no switch, no cost
                    level[k] = target[k]
            tick_n[0] += 1
            t_next = tick_n[0] * s.period_s
            if t_next < s.end_s:
                ev.callbacks = on_tick_cbs
                heappush(heap, (t_next, 1, next(eid), ev))
            if self.progress is not None and tick_n[0] % 256 == 0:
                self.progress(now)

        on_done_cbs = [on_done]
        on_source_cbs = [on_source]
        on_hop_cbs = [on_hop]
        on_env_cbs = [on_env]
        on_tick_cbs = [on_tick]

        tick = Ev()
        tick.callbacks = on_tick_cbs
        env.at(tick, 0.0)  # scheduled first: the start decision precedes any arrival at t = 0
        if changes:
            e = Ev(job=0)
            e.callbacks = on_env_cbs
            env.at(e, changes[0][0])
        if n:
            src_ev.callbacks = on_source_cbs
            env.at(src_ev, arr[0])
        env.run(until=s.end_s)
        return EngineOutput(
            departure_s=np.frombuffer(departure, dtype=np.float64).copy(),
            status=np.frombuffer(status, dtype=np.uint8).copy(),
            dropped_at=np.frombuffer(dropped_at, dtype=np.int8).copy(),
            levels=np.stack([np.frombuffer(lv, dtype=np.uint8) for lv in lev_rec], axis=1)
            if n
            else np.zeros((0, k_n), np.uint8),
            service_s=np.stack([np.frombuffer(sv, dtype=np.float64) for sv in svc_rec], axis=1)
            if n
            else np.zeros((0, k_n)),
            timeline=timeline_columns(log, k_n),
            switches=switches[0],
            events=int(next(eid)),
        )


def simulate(
    setup: SimSetup,
    policy: Policy,
    arrivals_s: np.ndarray,
    quantiles: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
    compiled: bool | None = None,
) -> EngineOutput:
    """Run one policy over one arrival sequence.

    ``arrivals_s`` are sorted arrival times; ``quantiles`` is a ``[n_stages, n]`` array in [0, 1): request
    ``i``'s latency quantile at stage ``k`` (the seam through which tests inject exact service times).
    ``compiled`` chooses the windowed path's kernels (unbounded queues): numba-compiled (``True``), plain
    Python (``False``) or by run length (``None``); the results are identical.
    """
    arrivals_s = np.asarray(arrivals_s, dtype=np.float64)
    if arrivals_s.ndim != 1 or (arrivals_s.size and np.any(np.diff(arrivals_s) < 0)):
        raise ValueError("arrivals_s must be a sorted 1-D array")
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape != (setup.n_stages, arrivals_s.size):
        raise ValueError(f"quantiles shape {quantiles.shape} != {(setup.n_stages, arrivals_s.size)}")
    # The engine creates no reference cycles per event, so the cyclic collector only costs time here
    # (it rescans the growing record lists); it is restored on exit.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if setup.queue_capacity is None:
            return run_windowed(setup, policy, arrivals_s, quantiles, progress, compiled)
        return _Pipeline(setup, policy, arrivals_s, quantiles, progress).run()
    finally:
        if was_enabled:
            gc.enable()
