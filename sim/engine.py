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
  calls ``policy.decide`` and sets each stage's *target* level, applied at that stage's next service start.

Implementation
--------------
The model runs on SimPy's scheduler (``simpy.Environment``) with callback events instead of a generator
process per request: per request it schedules one arrival, one completion per stage and one arrival per
non-zero hop, and the reusable per-stage completion events allocate nothing.  Event times are absolute
(``_Env.at``), so ticks fall exactly on ``n * period_s``.  With deterministic service times and unbounded
queues the departures equal the tandem-queue recursion ``D[k][i] = max(D[k][i-1], A[k][i]) + S[k][i]``
(see tests/test_sim_theory.py).
"""

from __future__ import annotations

import gc
import math
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from heapq import heappush
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL

from edgeprune.controller.contract import Observation, OracleView, Policy, StageObs
from edgeprune.errors import PolicyError

__all__ = ["DONE", "DROPPED", "UNFINISHED", "EngineOutput", "SimSetup", "simulate"]

DONE, DROPPED, UNFINISHED = 0, 1, 2
NO_LEVEL = 255


@dataclass(frozen=True)
class SimSetup:
    """Everything numeric the engine needs, compiled from a scenario and its profile."""

    stage_names: tuple[str, ...]
    samples_s: tuple[tuple[tuple[float, ...], ...], ...]  # [stage][level] sorted latency samples
    mean_s: tuple[tuple[float, ...], ...]  # [stage][level] nominal time: PipelineCurves.latency_s units
    switch_s: float
    hop_tx_s: tuple[float, ...]  # len n_stages - 1
    hop_latency_s: tuple[float, ...]
    env_changes: tuple[tuple[float, int, float], ...]  # (time_s, stage, factor from then on), time-sorted
    initial_factor: tuple[float, ...]  # per stage, at time 0 (1 / speed x slowdowns active at 0)
    queue_capacity: int | None
    drop_head: bool
    period_s: float
    end_s: float  # the simulation stops here; requests still inside are unfinished
    speed: tuple[float, ...] | None = None  # per stage; the oracle's factors exclude it (default all 1)

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.stage_names)

    @property
    def n_levels(self) -> int:
        """Rungs on the ladder."""
        return len(self.mean_s[0])


@dataclass
class EngineOutput:
    """Raw per-request and per-period records of one run (converted to tables by ``sim.runner``)."""

    departure_s: np.ndarray
    status: np.ndarray  # DONE / DROPPED / UNFINISHED
    dropped_at: np.ndarray  # stage index, -1 if not dropped
    levels: np.ndarray  # [n, n_stages] uint8, NO_LEVEL where not served
    service_s: np.ndarray  # [n, n_stages] service time incl. switch cost, NaN where not served
    timeline: dict[str, list[Any]]
    switches: int
    events: int


class _Ev:
    """The smallest object SimPy's scheduler accepts as an event (``callbacks`` and ``_ok``)."""

    __slots__ = ("_ok", "_value", "callbacks", "job", "stage")

    def __init__(self, stage: int = -1, job: int = -1) -> None:
        self._ok = True
        self._value = None
        self.callbacks: Any = None  # list of callables while scheduled, None once processed (SimPy)
        self.stage = stage
        self.job = job


class _Env(simpy.Environment):
    """SimPy's environment plus scheduling at an absolute time (exact tick and arrival times)."""

    def at(self, event: Any, time_s: float) -> None:
        """Schedule ``event`` at absolute time ``time_s`` (never before now)."""
        heappush(self._queue, (max(time_s, self._now), NORMAL, next(self._eid), event))


class _Pipeline:
    """State and event handlers of one run (closures over local state, for speed).  Use :func:`simulate`.

    Two equivalent request paths:

    * **eager** (bounded queues): one SimPy event per arrival at every stage, so drop decisions see the
      queue exactly at the arrival instant;
    * **lazy** (unbounded queues, the default): stage 0 takes requests straight from the sorted arrival
      array and a stage's inbound queue holds ``(request, ready time)``, so an event is scheduled only to
      wake an *idle* stage.  Same departures as the eager path (both are tested against the recursion),
      about half the events.
    """

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
        env = _Env()
        heap: list[Any] = env._queue
        eid = env._eid
        k_n = s.n_stages
        last = k_n - 1
        arr = array("d", self.arrivals_s.tobytes())  # compact: 8 bytes per request, floats on access
        n = len(arr)
        lazy = s.queue_capacity is None
        cap = s.queue_capacity if s.queue_capacity is not None else 0
        drop_head = s.drop_head
        u = [array("d", np.ascontiguousarray(self.quantiles[k]).tobytes()) for k in range(k_n)]
        samples = [[list(lv) for lv in st] for st in s.samples_s]
        mean = [list(st) for st in s.mean_s]
        switch_s = s.switch_s
        tx = list(s.hop_tx_s)
        lat = list(s.hop_latency_s)
        hop_zero = [a == 0.0 and b == 0.0 for a, b in zip(tx, lat, strict=True)]
        factor = list(s.initial_factor)
        speed = list(s.speed) if s.speed is not None else [1.0] * k_n
        level = [0] * k_n
        target = [0] * k_n
        busy = [False] * k_n
        cur_s = [0.0] * k_n
        cur_nom = [0.0] * k_n
        hop_free = [0.0] * k_n
        waiting: list[deque[int]] = [deque() for _ in range(k_n)]
        ready: list[deque[float]] = [deque() for _ in range(k_n)]  # lazy: ready time of each waiting request
        wake_pending = [False] * k_n
        entered = [0] * k_n  # lazy: requests handed to stage k so far (in transit included)
        src = [0]  # next arrival index not yet handed to stage 0
        # per-period counters
        c_arr = [0]
        c_stage_arr = [0] * k_n
        c_served = [0] * k_n
        c_busy = [0.0] * k_n
        c_nom = [0.0] * k_n
        c_drop = [0] * k_n
        prev_entered = [0] * k_n
        # records
        departure = array("d", [math.nan]) * n
        status = bytearray([UNFINISHED]) * n
        dropped_at = array("b", [-1]) * n
        lev_rec = [bytearray([NO_LEVEL]) * n for _ in range(k_n)]
        svc_rec = [array("d", [math.nan]) * n for _ in range(k_n)]
        switches = [0]
        done_ev = [_Ev(stage=k) for k in range(k_n)]
        wake_ev = [_Ev(stage=k) for k in range(k_n)]
        src_ev = _Ev(stage=0)

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

        def arrive_eager(k: int, i: int) -> None:
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

        def on_source(ev: _Ev) -> None:
            i = src[0]
            src[0] = i + 1
            if lazy:
                start(0, i, env._now)  # stage 0 was idle, or this event would not exist
                return
            c_arr[0] += 1
            arrive_eager(0, i)
            if i + 1 < n:
                ev.callbacks = on_source_cbs
                heappush(heap, (arr[i + 1], 1, next(eid), ev))

        def on_hop(ev: _Ev) -> None:
            arrive_eager(ev.stage, ev.job)

        def deliver(k: int, i: int, now: float) -> None:
            """Request ``i`` leaves stage ``k`` at ``now`` towards stage ``k + 1``."""
            nk = k + 1
            if hop_zero[k]:
                t_arr = now
            else:
                t_free = (hop_free[k] if hop_free[k] > now else now) + tx[k]
                hop_free[k] = t_free
                t_arr = t_free + lat[k]
            if not lazy:
                if t_arr <= now:
                    arrive_eager(nk, i)
                else:
                    hop = _Ev(stage=nk, job=i)
                    hop.callbacks = on_hop_cbs
                    heappush(heap, (t_arr, 1, next(eid), hop))
                return
            entered[nk] += 1
            if not busy[nk] and not waiting[nk]:
                if t_arr <= now:
                    start(nk, i, now)
                    return
                if t_arr < horizon[0]:  # nothing can change the stage's level or speed before t_arr
                    start(nk, i, t_arr)
                    return
                if not wake_pending[nk]:
                    wake_pending[nk] = True
                    w = wake_ev[nk]
                    w.callbacks = on_wake_cbs
                    heappush(heap, (t_arr, 1, next(eid), w))
            waiting[nk].append(i)
            ready[nk].append(t_arr)

        def next_job(k: int, now: float) -> None:
            """Stage ``k`` just finished: start the next request or go idle (arming a wake-up)."""
            if not lazy:
                q = waiting[k]
                if q:
                    start(k, q.popleft(), now)
                else:
                    busy[k] = False
                return
            if k == 0:
                j = src[0]
                if j < n and arr[j] <= now:
                    src[0] = j + 1
                    start(0, j, now)
                    return
                if j < n and arr[j] < horizon[0]:
                    src[0] = j + 1
                    start(0, j, arr[j])
                    return
                busy[0] = False
                if j < n:
                    src_ev.callbacks = on_source_cbs
                    heappush(heap, (arr[j], 1, next(eid), src_ev))
                return
            r = ready[k]
            if r and r[0] < horizon[0]:
                t_ready = r.popleft()
                start(k, waiting[k].popleft(), t_ready if t_ready > now else now)
                return
            busy[k] = False
            if r and not wake_pending[k]:
                wake_pending[k] = True
                w = wake_ev[k]
                w.callbacks = on_wake_cbs
                heappush(heap, (r[0], 1, next(eid), w))

        def on_wake(ev: _Ev) -> None:
            k = ev.stage
            wake_pending[k] = False
            if not busy[k]:
                next_job(k, env._now)

        def on_done(ev: _Ev) -> None:
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
                deliver(k, i, now)
            next_job(k, now)

        changes = s.env_changes
        # Until the next tick or environment change no stage's level or speed can change, so a request
        # reaching an idle stage before then can have its service started (scheduled) right away.
        horizon = [0.0]
        next_change = [changes[0][0] if changes else math.inf]
        next_tick = [0.0]

        def on_env(ev: _Ev) -> None:
            j = ev.job
            t = changes[j][0]
            while j < len(changes) and changes[j][0] == t:
                factor[changes[j][1]] = changes[j][2]
                j += 1
            if j < len(changes):
                ev.job = j
                ev.callbacks = on_env_cbs
                heappush(heap, (changes[j][0], 1, next(eid), ev))
            next_change[0] = changes[j][0] if j < len(changes) else math.inf
            horizon[0] = min(next_tick[0], next_change[0])

        wants_oracle = bool(getattr(policy, "wants_oracle", False))
        timeline: dict[str, list[Any]] = {c: [] for c in _TIMELINE_COLUMNS}
        tick_n = [0]

        def queue_len(k: int, now: float) -> int:
            if not lazy:
                return len(waiting[k])
            if k == 0:
                return bisect_right(arr, now) - src[0]
            r = ready[k]
            in_transit = 0
            for t in reversed(r):
                if t <= now:
                    break
                in_transit += 1
            return len(r) - in_transit

        def observe(now: float) -> Observation:
            if lazy:
                arrived = bisect_right(arr, now)
                c_arr[0] = arrived - prev_entered[0]
                for k in range(k_n):
                    total = arrived if k == 0 else entered[k] - (len(ready[k]) - queue_len(k, now))
                    c_stage_arr[k] = total - prev_entered[k]
                    prev_entered[k] = total
            stages = tuple(
                StageObs(
                    level=level[k],
                    queue_len=queue_len(k, now),
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

        def record(obs: Observation, decided: Sequence[int]) -> None:
            tl = timeline
            for k, st in enumerate(obs.stages):
                tl["time_s"].append(obs.time_s)
                tl["stage"].append(k)
                tl["level"].append(st.level)
                tl["decided"].append(int(decided[k]))
                tl["queue_len"].append(st.queue_len)
                tl["busy"].append(st.busy)
                tl["arrivals"].append(st.arrivals)
                tl["served"].append(st.served)
                tl["busy_s"].append(st.busy_s)
                tl["nominal_s"].append(st.nominal_s)
                tl["dropped"].append(st.dropped)
                c_stage_arr[k] = c_served[k] = c_drop[k] = 0
                c_busy[k] = c_nom[k] = 0.0
            c_arr[0] = 0

        def on_tick(ev: _Ev) -> None:
            now = env._now
            obs = observe(now)
            decided = policy.decide(obs)
            _check_decision(policy, decided, now, k_n, s.n_levels)
            record(obs, decided)
            for k in range(k_n):
                target[k] = int(decided[k])
                if tick_n[0] == 0:  # the start decision is the deployment itself: no switch, no cost
                    level[k] = target[k]
            tick_n[0] += 1
            t_next = tick_n[0] * s.period_s
            if t_next < s.end_s:
                ev.callbacks = on_tick_cbs
                heappush(heap, (t_next, 1, next(eid), ev))
            next_tick[0] = t_next if t_next < s.end_s else s.end_s
            horizon[0] = min(next_tick[0], next_change[0])
            if self.progress is not None and tick_n[0] % 256 == 0:
                self.progress(now)

        on_done_cbs = [on_done]
        on_source_cbs = [on_source]
        on_hop_cbs = [on_hop]
        on_wake_cbs = [on_wake]
        on_env_cbs = [on_env]
        on_tick_cbs = [on_tick]

        tick = _Ev()
        tick.callbacks = on_tick_cbs
        env.at(tick, 0.0)  # scheduled first: the start decision precedes any arrival at t = 0
        if changes:
            e = _Ev(job=0)
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
            timeline=timeline,
            switches=switches[0],
            events=int(next(eid)),
        )


_TIMELINE_COLUMNS = (
    "time_s",
    "stage",
    "level",
    "decided",
    "queue_len",
    "busy",
    "arrivals",
    "served",
    "busy_s",
    "nominal_s",
    "dropped",
)


def _check_decision(policy: Policy, decided: object, now: float, k_n: int, n_levels: int) -> None:
    """A policy's answer must be one ladder level per stage; anything else is a PolicyError."""
    ok = isinstance(decided, (tuple, list)) and len(decided) == k_n
    if ok:
        assert isinstance(decided, (tuple, list))
        for v in decided:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < n_levels:
                ok = False
                break
    if not ok:
        raise PolicyError(
            f"policy {type(policy).__name__} returned {decided!r} at t={now:g}s: "
            f"expected {k_n} levels in 0..{n_levels - 1}"
        )


def simulate(
    setup: SimSetup,
    policy: Policy,
    arrivals_s: np.ndarray,
    quantiles: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
) -> EngineOutput:
    """Run one policy over one arrival sequence.

    ``arrivals_s`` are sorted arrival times; ``quantiles`` is a ``[n_stages, n]`` array in [0, 1): request
    ``i``'s latency quantile at stage ``k`` (the seam through which tests inject exact service times).
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
        return _Pipeline(setup, policy, arrivals_s, quantiles, progress).run()
    finally:
        if was_enabled:
            gc.enable()
