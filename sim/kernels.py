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
from typing import Any

import numpy as np

__all__ = ["FS_ROWS", "IST_ROWS", "Kernel", "bind", "compiled", "step"]

# float state rows
FREE, HOP_FREE, FACTOR, C_BUSY, C_NOM, C_BUSY_BEFORE, C_NOM_BEFORE = range(7)
FS_ROWS = 7
# int state rows
STARTED, C_STARTED, LEVEL, TARGET, PREV_TOTAL, SWITCHES = range(6)
IST_ROWS = 6
DONE = 0


def step(
    h: float,
    end_s: float,
    switch_s: float,
    rdy: np.ndarray,
    u: np.ndarray,
    samples: np.ndarray,
    slen: np.ndarray,
    mean: np.ndarray,
    tx: np.ndarray,
    lat: np.ndarray,
    lev: np.ndarray,
    svc: np.ndarray,
    dep: np.ndarray,
    status: np.ndarray,
    fs: np.ndarray,
    ist: np.ndarray,
    iout: np.ndarray,
    fout: np.ndarray,
    tick: int,
    tl_i: np.ndarray,
    tl_f: np.ndarray,
) -> None:
    """Start (and finish, and hand on) every service that starts before ``h``; then, for ``tick >= 0``, read
    each stage's observation at ``h`` and reset this period's counters.

    The read-out: ``iout[k]`` = (level, queue length, busy 0/1, arrivals, served) and ``fout[k]`` = (busy_s,
    nominal_s), also kept as row ``tick * k_n + k`` of the flat timeline buffers ``tl_i`` (5 ints per row)
    and ``tl_f`` (2 floats per row), so a long run's timeline costs no Python objects.  A single server has
    at most one service in progress, the last one started: if it is still running it is left out of this
    period and carried into the next (``0.0 + t`` is exactly what the event path sums).  One function (not
    two) because each call from Python costs a dispatch.
    """
    k_n = len(rdy)
    n = len(dep)
    last = k_n - 1
    started = ist[STARTED]
    for k in range(k_n):
        i = started[k]
        lim = started[k - 1] if k > 0 else n
        if i >= lim:
            continue
        rk = rdy[k]
        f = fs[FREE][k]
        a = rk[i]
        b = f if f > a else a
        if b >= h:
            continue
        lvl = ist[TARGET][k]
        extra = 0.0
        if lvl != ist[LEVEL][k]:
            ist[LEVEL][k] = lvl
            ist[SWITCHES][0] += 1
            extra = switch_s
        row = samples[k][lvl]
        m = slen[k][lvl]
        fac = fs[FACTOR][k]
        nom = mean[k][lvl]
        uk = u[k]
        lk = lev[k]
        sk = svc[k]
        busy_s = fs[C_BUSY][k]
        nom_s = fs[C_NOM][k]
        b_before = 0.0
        n_before = 0.0
        first = i
        to_next = k < last
        rn = rdy[k + 1] if to_next else rk
        txk = tx[k]
        latk = lat[k]
        zero = to_next and txk == 0.0 and latk == 0.0
        hf = fs[HOP_FREE][k]
        while True:
            t = row[int(uk[i] * m)] * fac + extra
            extra = 0.0
            d = b + t
            lk[i] = lvl
            sk[i] = t
            b_before = busy_s
            busy_s += t
            n_before = nom_s
            nom_s += nom
            if to_next:
                if zero:
                    rn[i] = d
                else:
                    hf = (hf if hf > d else d) + txk
                    rn[i] = hf + latk
            elif d < end_s:
                dep[i] = d
                status[i] = DONE
            f = d
            i += 1
            if i >= lim:
                break
            a = rk[i]
            b = f if f > a else a
            if b >= h:
                break
        fs[HOP_FREE][k] = hf
        fs[FREE][k] = f
        started[k] = i
        ist[C_STARTED][k] += i - first
        fs[C_BUSY][k] = busy_s
        fs[C_NOM][k] = nom_s
        fs[C_BUSY_BEFORE][k] = b_before
        fs[C_NOM_BEFORE][k] = n_before
    if tick < 0:
        return
    for k in range(k_n):
        lo = started[k]
        hi = started[k - 1] if k > 0 else n
        rk = rdy[k]
        left, right = lo, hi  # bisect_right(rdy[k], h, lo, hi)
        while left < right:
            mid = (left + right) // 2
            if h < rk[mid]:
                right = mid
            else:
                left = mid + 1
        q = left - lo
        total = lo + q  # requests that have reached stage k by h
        out = iout[k]
        out[0] = ist[LEVEL][k]
        out[1] = q
        out[3] = total - ist[PREV_TOTAL][k]
        ist[PREV_TOTAL][k] = total
        if fs[FREE][k] > h:
            out[2] = 1
            out[4] = ist[C_STARTED][k] - 1
            fout[k][0] = fs[C_BUSY_BEFORE][k]
            fout[k][1] = fs[C_NOM_BEFORE][k]
            i = lo - 1
            ist[C_STARTED][k] = 1
            fs[C_BUSY][k] = svc[k][i]
            fs[C_NOM][k] = mean[k][lev[k][i]]
        else:
            out[2] = 0
            out[4] = ist[C_STARTED][k]
            fout[k][0] = fs[C_BUSY][k]
            fout[k][1] = fs[C_NOM][k]
            ist[C_STARTED][k] = 0
            fs[C_BUSY][k] = 0.0
            fs[C_NOM][k] = 0.0
        fs[C_BUSY_BEFORE][k] = 0.0
        fs[C_NOM_BEFORE][k] = 0.0
        row = tick * k_n + k
        for j in range(5):
            tl_i[row * 5 + j] = out[j]
        tl_f[row * 2] = fout[k][0]
        tl_f[row * 2 + 1] = fout[k][1]


Kernel = Any  # step, plain or compiled


@functools.cache
def compiled() -> Kernel | None:
    """:func:`step` compiled by numba (cached on disk by numba), or ``None`` when numba is missing.

    Importing numba and loading the cached machine code costs ~1.5 s per process on a small machine, so
    ``sim.window`` uses the compiled kernels only for runs long enough to repay it.
    """
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba is a dependency; an interpreter it lacks still works
        return None
    return njit(cache=True, nogil=True)(step)


def bind(kernel: Any, example_args: tuple[Any, ...]) -> Kernel:
    """``kernel`` specialised to the types of ``example_args``: numba's machine-code entry point for them.

    A numba dispatcher works out the argument types on every call (~1.5 us for :func:`step`'s 21 arguments,
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
