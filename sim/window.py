"""The fast path: between two control instants the request flow is advanced in one pass per stage.

Why this is exact
-----------------
With unbounded FIFO queues a stage's future depends only on the requests handed to it and on its level and
speed at each service start.  Levels change only at controller ticks and speeds only at environment changes
(``sim.control``'s instants), so between two instants (a *window*) every stage is the tandem recursion::

    B[k][i] = max(D[k][i-1], A[k][i])      start: after the previous service and the request's arrival
    D[k][i] = B[k][i] + S[k][i]            S drawn at the level and factor in force at B
    A[k+1][i] = link(D[k][i])              FIFO link: serialisation then propagation

``kernels.advance(h)`` applies it stage by stage to every service that *starts* before ``h``; a service that
starts at or after ``h`` waits in its queue for the instant (after the tick's decision) — the same rule as
the reference model's servers, which wait for the control process at an instant.  A request can only reach
stage ``k + 1`` before ``h`` if it started at stage ``k`` before ``h``, so one pass in stage order is enough.

The observation at a tick needs the stages' state at that instant, which the recursion gives directly: a
single server has at most one service in progress (the last one started), so the period's completions are
every started service but that one, and the waiting requests are those handed over whose arrival time has
passed.  Counters are summed in completion order, as the reference model sums them, so the two paths agree
bit for bit (tests/test_sim_engine.py).  The recursion and the read-out are ``sim.kernels.step``
(numba-compiled for long runs): per request a few array operations instead of ~12 SimPy events, per tick one
kernel call plus the controller itself.  Bounded queues are served by the reference model.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

from edgeprune.controller.contract import Levels
from sim import kernels
from sim.control import ReadOut
from sim.core import NO_LEVEL, UNFINISHED, EngineOutput, SimSetup
from sim.physics import Heat

__all__ = ["COMPILE_FROM_REQUESTS", "FastPipeline"]

COMPILE_FROM_REQUESTS = 20_000  # below this, plain Python beats numba's one-off import and load (~1.5 s)


def _numpy_state(s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray) -> kernels.KState:
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
    return kernels.KState(
        end_s=s.end_s,
        switch_s=s.switch_s,
        rdy=rdy,
        u=np.ascontiguousarray(quantiles, dtype=np.float64),
        samples=samples,
        slen=slen,
        mean=np.array(s.mean_s, dtype=np.float64),
        tx=np.array([*s.hop_tx_s, 0.0]),
        lat=np.array([*s.hop_latency_s, 0.0]),
        lev=np.full((k_n, n), NO_LEVEL, dtype=np.uint8),
        svc=np.full((k_n, n), np.nan),
        start=np.full((k_n, n), np.nan),
        dep=np.full(n, np.nan),
        status=np.full(n, UNFINISHED, dtype=np.uint8),
        fs=fs,
        ist=np.zeros((kernels.IST_ROWS, k_n), dtype=np.int64),
        iout=np.zeros((s.n_ticks + 1, k_n, kernels.READ_INTS), dtype=np.int64),  # + 1: the latest (publish)
        fout=kernels.float_log(s.n_ticks + 1, k_n, s.has_physics),
    )


def _python_state(s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray) -> kernels.KState:
    k_n, n = s.n_stages, arrivals_s.size
    nan_row = array("d", [math.nan]) * n
    return kernels.KState(
        end_s=s.end_s,
        switch_s=s.switch_s,
        rdy=[array("d", arrivals_s.tobytes())] + [array("d", nan_row) for _ in range(k_n - 1)],
        u=[array("d", np.ascontiguousarray(quantiles[k], dtype=np.float64).tobytes()) for k in range(k_n)],
        samples=[[list(lv) for lv in st] for st in s.samples_s],
        slen=[[len(lv) for lv in st] for st in s.samples_s],
        mean=[list(st) for st in s.mean_s],
        tx=[*s.hop_tx_s, 0.0],
        lat=[*s.hop_latency_s, 0.0],
        lev=[bytearray([NO_LEVEL]) * n for _ in range(k_n)],
        svc=[array("d", nan_row) for _ in range(k_n)],
        start=[array("d", nan_row) for _ in range(k_n)],
        dep=array("d", nan_row),
        status=bytearray([UNFINISHED]) * n,
        fs=[list(s.initial_factor) if r == kernels.FACTOR else [0.0] * k_n for r in range(kernels.FS_ROWS)],
        ist=[[0] * k_n for _ in range(kernels.IST_ROWS)],
        # the read-out log stays numpy (compact for long runs; written a few times per tick)
        iout=np.zeros((s.n_ticks + 1, k_n, kernels.READ_INTS), dtype=np.int64),  # + 1: the latest (publish)
        fout=kernels.float_log(s.n_ticks + 1, k_n, s.has_physics),
    )


def _prepare(
    s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray, compiled: bool | None
) -> tuple[kernels.KState, kernels.Kernel, bool]:
    """Compiled kernels on numpy state for long runs (or when asked), else the same functions as Python."""
    want = arrivals_s.size >= COMPILE_FROM_REQUESTS if compiled is None else compiled
    fast = kernels.compiled() if want else None
    if fast is None and compiled:
        raise RuntimeError("compiled=True but numba is not installed (pip install numba)")
    if fast is not None:
        return _numpy_state(s, arrivals_s, quantiles), fast, True
    return _python_state(s, arrivals_s, quantiles), kernels.step, False


class FastPipeline:
    """The request flow as array recursions between control instants (see the module docstring); driven by
    ``sim.control.control`` exactly as the reference model is."""

    def __init__(
        self, s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray, compiled: bool | None = None
    ) -> None:
        if s.queue_capacity is not None:
            raise ValueError("the fast path serves unbounded queues only; bounded ones run on sim.reference")
        self.setup = s
        self.st, kernel, self.is_numpy = _prepare(s, arrivals_s, quantiles, compiled)
        self.kernel = kernels.bind(kernel, (0.0, 0, self.st)) if self.is_numpy else kernel
        self.period_s = s.period_s
        self.heat = Heat.of(s, self.is_numpy, self.st.fout[:, :, kernels.READ_FLOATS :])  # stepped in settle
        self.heat_kernel: kernels.Kernel = (
            None if self.heat is None else _heat_kernel(self.st, self.heat, self.is_numpy)
        )
        self.latest_i, self.latest_f = self.st.iout[-1], self.st.fout[-1]  # views: the latest read-out
        self._services = (self.st.start, self.st.svc, self.st.ist[kernels.STARTED])  # views: they stay current
        self.factor = self.st.fs[kernels.FACTOR]
        self.next_instant_s = 0.0
        self._last_target: Levels = ()

    def deploy(self, levels: Levels) -> None:
        """The start decision: applied as the current level, no switch."""
        self.st.ist[kernels.LEVEL][:] = levels
        self.set_target(levels)

    def settle(self, time_s: float, row: int) -> None:
        """Every service starting before ``time_s``, at a tick (``row >= 0``) the read-out into log row
        ``row``, and with physics the nodes' step at ``time_s`` (``sim.physics.Heat.at``), in one kernel call."""
        if self.heat is None:
            self.kernel(time_s, row, self.st)
        else:
            heat = self.heat
            heat.n_changed, heat.next_s = self.heat_kernel(time_s, row, self.st, heat.nd, self.period_s)

    def read(self, time_s: float) -> ReadOut:
        """The read-out :meth:`settle` made at this tick (``kernels.publish`` copied it to the latest row)."""
        return self.latest_i.tolist(), self.latest_f.tolist()

    def readouts(self, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``ticks`` read-outs (row 0: the deployment's zeros): ``[ticks, stage, field]`` arrays."""
        return self.st.iout[:ticks], self.st.fout[:ticks]

    def set_target(self, levels: Levels) -> None:
        """Levels for each stage's next service start."""
        if levels != self._last_target:
            self.st.ist[kernels.TARGET][:] = levels
            self._last_target = levels

    def release(self) -> None:
        """Nothing waits in this path: services at the instant start in the next window."""

    def services(self) -> tuple[Any, Any, Any]:
        """Every stage's service starts and times, and how many requests started there (``sim.physics``)."""
        return self._services

    def output(self, timeline: dict[str, np.ndarray]) -> EngineOutput:
        """Finish every service that starts before the end, then the raw records."""
        self.kernel(self.setup.end_s, -1, self.st)
        st, k_n, n = self.st, self.setup.n_stages, len(self.st.dep)
        return EngineOutput(
            departure_s=np.array(np.asarray(st.dep) if self.is_numpy else np.frombuffer(st.dep, dtype=np.float64)),
            status=np.array(np.asarray(st.status) if self.is_numpy else np.frombuffer(st.status, dtype=np.uint8)),
            dropped_at=np.full(n, -1, dtype=np.int8),
            levels=_by_request(st.lev, np.uint8, k_n, n),
            service_s=_by_request(st.svc, np.float64, k_n, n),
            timeline=timeline,
            switches=int(st.ist[kernels.SWITCHES][0]),
        )


def _heat_kernel(st: kernels.KState, heat: Heat, compiled: bool) -> kernels.Kernel:
    """The request flow and the nodes' step in one call (``kernels.step_heat``), compiled when ``compiled``."""
    fast = kernels.compiled_step_heat(st, heat.nd) if compiled else None
    return fast if fast is not None else kernels.step_heat


def _by_request(rows: Any, dtype: type, k_n: int, n: int) -> np.ndarray:
    """``[k][i]`` rows (numpy or buffers) as an ``[n, k_n]`` array."""
    if isinstance(rows, np.ndarray):
        return np.ascontiguousarray(rows.T)
    if not n:
        return np.zeros((0, k_n), dtype=dtype)
    return np.stack([np.frombuffer(r, dtype=dtype) for r in rows], axis=1)
