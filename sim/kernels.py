"""The windowed path's request flow, compiled with numba: the tandem recursion between two SimPy events.

One function over flat state, :func:`step`, called from ``sim.window`` (which holds the SimPy environment,
the policy and the observation objects): it starts, finishes and hands on every service that starts before
``h`` (see ``sim.window`` for why that is exact), and at a tick reads each stage's state (queue, busy, this
period's counters) and resets the counters, carrying a service still running into the next period.

The arithmetic is written in the same order as the event path (``sim.engine``), and numba compiles IEEE
double operations without fast-math, so compiled, plain and event paths give bit-identical results (tested).
Plain Python runs the very same function (no second implementation): short runs use it, because importing
numba and loading its cached code costs more than they do; long runs use :func:`compiled`.

State layout: ``fs[row, k]`` (floats) and ``ist[row, k]`` (ints), rows named below; ``rdy[k, i]`` is request
``i``'s arrival time at stage ``k`` (row 0: the arrivals).  FIFO stages and FIFO links never reorder
requests, so stage ``k``'s queue is the index range ``[ist[STARTED, k], ist[STARTED, k - 1])``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from edgeprune.physics import flat
from edgeprune.physics.flat import heat_step

__all__ = [
    "FS_ROWS",
    "IST_ROWS",
    "LOG_FLOATS",
    "READ_FLOATS",
    "READ_INTS",
    "KState",
    "Kernel",
    "advance",
    "bind",
    "compiled",
    "compiled_heat",
    "compiled_step_heat",
    "float_log",
    "publish",
    "read_out",
    "step",
    "step_heat",
]

# float state rows
FREE, HOP_FREE, FACTOR, C_BUSY, C_NOM, C_BUSY_BEFORE, C_NOM_BEFORE = range(7)
FS_ROWS = 7
# int state rows
STARTED, C_STARTED, LEVEL, TARGET, PREV_TOTAL, SWITCHES = range(6)
IST_ROWS = 6
DONE = 0


class KState(NamedTuple):
    """The kernel's state: numpy arrays for numba, or Python lists / ``array`` rows for plain Python (where
    indexing a list is ~4x cheaper than indexing a numpy array).  Same layout, same code."""

    end_s: float  # services ending at or after this are not departures
    switch_s: float  # added to the first service after a level change
    rdy: Any  # [k][i] arrival time of request i at stage k (row 0: the arrivals)
    u: Any  # [k][i] latency quantile
    samples: Any  # [k][level][j] sorted latency samples (padded when compiled)
    slen: Any  # [k][level] number of samples
    mean: Any  # [k][level] nominal time
    tx: Any  # [k] hop transmission, 0 after the last stage
    lat: Any  # [k] hop propagation
    lev: Any  # [k][i] level served at, NO_LEVEL if not served
    svc: Any  # [k][i] service time incl. switch cost, NaN if not served
    start: Any  # [k][i] service start time, NaN if not served
    dep: Any  # [i] departure time, NaN unless done
    status: Any  # [i] DONE / UNFINISHED
    fs: Any  # [row][k] float state (FREE, ...)
    ist: Any  # [row][k] int state (STARTED, ...)
    iout: Any  # [tick][k][READ_INTS] read-outs: level, queue length, busy 0/1, arrivals, served, dropped (0)
    fout: Any  # [tick][k][:] read-outs: busy_s, nominal_s (row 0: the deployment, zero), readings (float_log)


READ_INTS, READ_FLOATS = 6, 2
# With physics, the float log row is the read-out's READ_FLOATS, then the stage's node readings
# (``edgeprune.records.PHYSICS_TIMELINE``: temperature, frequency, power, throttled), written by the physics step.
LOG_FLOATS = READ_FLOATS + flat.READ_COLS


def float_log(ticks: int, k_n: int, physics: bool) -> np.ndarray:
    """An empty float read-out log, ``[tick][stage][READ_FLOATS]``, or ``LOG_FLOATS`` wide with physics:
    counters zero, readings unknown (NaN) until the physics step writes them."""
    log = np.zeros((ticks, k_n, LOG_FLOATS if physics else READ_FLOATS))
    log[:, :, READ_FLOATS:] = np.nan
    return log


def step(h: float, row: int, st: KState) -> None:
    """Start (and finish, and hand on) every service that starts before ``h``; then, if ``row >= 0`` (a
    tick), write each stage's observation at ``h`` into read-out row ``row`` of ``st.iout`` / ``st.fout``
    and reset this period's counters.  The rows are the run's read-out log (the timeline's raw columns)."""
    advance(h, st)
    if row >= 0:
        read_out(h, row, st)
        publish(row, st)


def publish(row: int, st: KState) -> None:
    """Copy read-out row ``row`` (the readings included) to the log's last row, the *latest* row that
    ``sim.window`` reads through views made once: indexing the log in Python every tick costs ~0.3 us, this
    copy a few nanoseconds compiled.  The fast path's logs have one row more than ticks for it."""
    st.iout[-1, :, :] = st.iout[row, :, :]
    st.fout[-1, :, :] = st.fout[row, :, :]


def advance(h: float, st: KState) -> None:
    """The tandem recursion for every service that starts before ``h``, stage by stage (see ``sim.window``):
    a request reaches stage ``k + 1`` before ``h`` only if it started at ``k`` before ``h``."""
    started = st.ist[STARTED]
    n = len(st.dep)
    for k in range(len(st.rdy)):
        lim = started[k - 1] if k > 0 else n
        if started[k] < lim:
            advance_stage(h, k, lim, st)


def advance_stage(h: float, k: int, lim: int, st: KState) -> None:
    """Stage ``k``: serve requests ``started[k] .. lim - 1`` in order while they start before ``h``."""
    fs, ist = st.fs, st.ist
    i = first = ist[STARTED][k]
    rk = st.rdy[k]
    f = fs[FREE][k]
    b = f if f > rk[i] else rk[i]
    if b >= h:
        return
    lvl = ist[TARGET][k]
    extra = 0.0
    if lvl != ist[LEVEL][k]:  # the first service after a decision pays the switch
        ist[LEVEL][k] = lvl
        ist[SWITCHES][0] += 1
        extra = st.switch_s
    row, m, fac, nom, uk = st.samples[k][lvl], st.slen[k][lvl], fs[FACTOR][k], st.mean[k][lvl], st.u[k]
    lev_k, svc_k, start_k, dep, status = st.lev[k], st.svc[k], st.start[k], st.dep, st.status
    busy_s, nom_s, b_before, n_before = fs[C_BUSY][k], fs[C_NOM][k], 0.0, 0.0
    to_next = k < len(st.rdy) - 1
    rn = st.rdy[k + 1] if to_next else rk
    txk, latk, hf = st.tx[k], st.lat[k], fs[HOP_FREE][k]
    zero = to_next and txk == 0.0 and latk == 0.0
    while True:
        t = row[int(uk[i] * m)] * fac + extra
        extra = 0.0
        d = b + t
        lev_k[i] = lvl
        svc_k[i] = t
        start_k[i] = b
        b_before, n_before = busy_s, nom_s
        busy_s += t
        nom_s += nom
        if to_next:
            if zero:
                rn[i] = d
            else:
                hf = (hf if hf > d else d) + txk  # FIFO link: serialisation, then propagation
                rn[i] = hf + latk
        elif d < st.end_s:
            dep[i] = d
            status[i] = DONE
        f = d
        i += 1
        if i >= lim:
            break
        b = f if f > rk[i] else rk[i]
        if b >= h:
            break
    fs[HOP_FREE][k], fs[FREE][k] = hf, f
    ist[STARTED][k] = i
    ist[C_STARTED][k] += i - first
    fs[C_BUSY][k], fs[C_NOM][k] = busy_s, nom_s
    fs[C_BUSY_BEFORE][k], fs[C_NOM_BEFORE][k] = b_before, n_before


def read_out(h: float, row: int, st: KState) -> None:
    """Each stage's observation at ``h`` (after :func:`advance` to ``h``), and this period's counters reset.

    A single server has at most one service in progress, the last one started: if it is still running it
    is left out of this period and carried into the next (``0.0 + t`` is what a completion-time sum adds).
    """
    rdy, fs, ist = st.rdy, st.fs, st.ist
    k_n = len(rdy)
    n = len(st.dep)
    started = ist[STARTED]
    iout, fout_row = st.iout[row], st.fout[row]
    for k in range(k_n):
        lo = started[k]
        hi = started[k - 1] if k > 0 else n
        rk = rdy[k]
        left, right = lo, hi  # bisect_right(rdy[k], h, lo, hi): arrived by h, not started
        while left < right:
            mid = (left + right) // 2
            if h < rk[mid]:
                right = mid
            else:
                left = mid + 1
        q = left - lo
        total = lo + q  # requests that have reached stage k by h
        out = iout[k]
        fout = fout_row[k]
        out[0] = ist[LEVEL][k]
        out[1] = q
        out[3] = total - ist[PREV_TOTAL][k]
        out[5] = 0
        ist[PREV_TOTAL][k] = total
        if fs[FREE][k] > h:
            out[2] = 1
            out[4] = ist[C_STARTED][k] - 1
            fout[0] = fs[C_BUSY_BEFORE][k]
            fout[1] = fs[C_NOM_BEFORE][k]
            i = lo - 1
            ist[C_STARTED][k] = 1
            fs[C_BUSY][k] = st.svc[k][i]
            fs[C_NOM][k] = st.mean[k][st.lev[k][i]]
        else:
            out[2] = 0
            out[4] = ist[C_STARTED][k]
            fout[0] = fs[C_BUSY][k]
            fout[1] = fs[C_NOM][k]
            ist[C_STARTED][k] = 0
            fs[C_BUSY][k] = 0.0
            fs[C_NOM][k] = 0.0
        fs[C_BUSY_BEFORE][k] = 0.0
        fs[C_NOM_BEFORE][k] = 0.0


Kernel = Any  # step, plain or compiled


def compiled() -> Kernel | None:
    """:func:`step` compiled by numba (cached on disk by numba), or ``None`` when numba is missing.

    Importing numba and loading the cached machine code costs ~1.5 s per process on a small machine, so
    ``sim.window`` uses the compiled kernels only for runs long enough to repay it.
    """
    return _compile(step)


@functools.cache
def _compile(function: Any) -> Any:
    """``function`` compiled by numba, cached on disk (``None`` without numba)."""
    if not _register():
        return None
    from numba import njit

    return njit(cache=True, nogil=True)(function)


@functools.cache
def _register() -> bool:
    """Make the helpers the kernels call callable from compiled code (they stay plain Python functions);
    once per process.  ``False`` without numba."""
    try:
        from numba.extending import register_jitable
    except ImportError:  # pragma: no cover - numba is a dependency; an interpreter it lacks still works
        return False
    helpers: list[Any] = [advance, advance_stage, read_out, publish, step, heat_step, flat.integrate_stage]
    helpers += [flat.govern_step, flat.base_power_w, flat.dyn_power_w, flat.rc_pieces, flat.rc_temp]
    helpers += [flat.ambient_part, flat.conditions, flat.schedule_next, flat.advance_node, flat.change]
    for helper in helpers:
        register_jitable(helper)
    return True


def step_heat(h: float, row: int, st: KState, nd: Any, period_s: float) -> tuple[int, float]:
    """:func:`step`, then every node's physics at ``h`` over the services the step left (``row >= 0``: a
    tick, every node integrated and its readings logged in ``row``; ``-1``: only the nodes whose change is
    due), in one call: ``edgeprune.physics.flat.heat_step``'s ``(nodes changed, next change instant)``.

    One call instead of two because every call into compiled code unboxes its arrays again (~1 us here)."""
    advance(h, st)
    if row >= 0:
        read_out(h, row, st)
    changed = heat_step(nd, h, row, period_s, st.start, st.svc, st.ist[STARTED])
    if row >= 0:
        publish(row, st)
    return changed


def compiled_heat(nodes: Any) -> Any:
    """``edgeprune.physics.flat.heat_step`` compiled by numba and bound to the numpy state ``nodes`` (the
    other arguments typed as ``sim.window``'s numpy state has them): every node's physics at an instant in
    one call (the instants outside the request flow: the start and the end).  The plain function when numba
    is missing."""
    kernel = _compile(heat_step)
    if kernel is None:  # pragma: no cover - numba is a dependency
        return heat_step
    two_d, one_d_int = np.zeros((1, 1)), np.zeros(1, dtype=np.int64)
    return bind(kernel, (nodes, 0.0, 0, 0.0, two_d, two_d, one_d_int))


def compiled_step_heat(st: KState, nodes: Any) -> Any:
    """:func:`step_heat` compiled and bound to the numpy states ``st`` and ``nodes`` (``None`` without numba)."""
    kernel = _compile(step_heat)
    return None if kernel is None else bind(kernel, (0.0, 0, st, nodes, 0.0))


def bind(kernel: Any, example_args: tuple[Any, ...]) -> Kernel:
    """``kernel`` specialised to the types of ``example_args``: numba's machine-code entry point for them.

    A numba dispatcher works out the argument types on every call (~1.5 us for :func:`step`'s state tuple,
    about a tenth of a tick's whole cost); the entry point of the one compiled specialisation only unboxes.
    Safe because a run passes the same arrays (same dtypes and ranks) on every call; the dispatcher itself is
    returned for plain Python or when numba's internals differ from what this expects.
    """
    compile_for = getattr(kernel, "compile", None)
    if compile_for is None:
        return kernel
    try:
        sig = tuple(kernel.typeof_pyval(a) for a in example_args)
        compile_for(sig)  # loads the disk-cached code; compiles only the first time
        entry = kernel.overloads[sig].entry_point
    except (AttributeError, KeyError, TypeError):  # pragma: no cover - another numba's internals
        return kernel
    return entry if callable(entry) else kernel
