"""Nodes' physics as flat state and scalar functions: the one implementation of a node's run.

Why flat: the simulator advances every node at every governor instant and controller tick, which in plain
Python costs tens of microseconds per node and instant; its fast path compiles these very functions with
numba (``sim.kernels.compiled_heat``), which needs numbers and arrays, not objects.  Written once over a
layout that works with Python lists (plain runs, :class:`~edgeprune.physics.run.NodeRun`, the reference
model) and numpy arrays (compiled), like ``sim.kernels``; numba compiles IEEE double arithmetic without
fast-math, so plain and compiled runs give bit-identical results (tests/test_sim_physics.py).

Layout of :class:`Nodes` (node ``j`` of ``n``, rows padded to the longest node when numpy):

* ``par[j][P_*]`` float parameters, ``npar[j][N_*]`` sizes and the node's stage;
* ``thr[j]`` governor thresholds, ``freq[j]``, ``fac[j]`` (service-time factor ``(f_max/f)^alpha``) and
  ``core_w[j]`` per frequency step; ``amb_t[j]``/``amb_v[j]`` the ambient schedule; ``ten_t[j]``,
  ``ten_share[j]``, ``ten_w[j]`` the tenants' schedule drawn up front;
* ``fst[j][F_*]`` and ``ist[j][I_*]`` the state; ``at_step[j]`` time per step; ``edge_t[j]``,
  ``edge_step[j]``, ``edge_share[j]`` the conditions from each change instant on (``ist[j][N_EDGES]`` used);
* ``read[n][k]`` at tick ``n``, per *stage*: temperature, frequency, mean power since the tick before and
  throttled (0/1), NaN for a stage without physics, written by :func:`heat_step`: the run's physics log.

The physics (see ``edgeprune.physics.model`` for the equations): power is constant between the edges of
the stage's busy intervals and the node's change instants, so the RC equation is integrated exactly in
closed form; the governor picks a step from the temperature at its instants ``n x period_s``; the
service-time factor holds between change instants, so a backend applies it at service start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edgeprune.physics.params import DevicePhysics

__all__ = [
    "F_ROWS",
    "I_ROWS",
    "N_ROWS",
    "P_ROWS",
    "READ_COLS",
    "Nodes",
    "advance_node",
    "ambient_part",
    "base_power_w",
    "build_nodes",
    "dyn_power_w",
    "govern_step",
    "heat_step",
    "integrate_stage",
    "rc_pieces",
    "rc_temp",
]

# float parameters par[j][...]
P_TAU, P_R, P_AMB0, P_PERIOD, P_SOFT, P_HARD, P_HYST, P_CORES, P_SVC_CORES, P_IDLE_W = range(10)
P_ROWS = 10
# sizes npar[j][...]
N_THR, N_STEPS, N_AMB, N_TEN, N_EDGE_CAP, N_STAGE = range(6)
N_ROWS = 6
# float state fst[j][...]
T_S, TEMP, SHARE, WATT, NEXT_S, BASE_W, DYN_W, FACTOR, TOTAL_J, BASE_J, BUSY_J, PEAK, TICK_J = range(13)
F_ROWS = 13
# int state ist[j][...]
STEP, N_GOV, NEXT_TEN, FIRST, N_EDGES, CHANGED = range(6)
I_ROWS = 6
# read[k][...]
R_TEMP, R_FREQ, R_POWER, R_THROTTLED = range(4)  # edgeprune.records.PHYSICS_TIMELINE's order
READ_COLS = 4
# heat_step's row at an instant that is not a tick: only the nodes due, or every node (the run's end)
DUE_ONLY, ALL_NODES = -1, -2
# rows of Nodes.small, .ints, .ten, .edges
PAR, THR, FREQ, FAC, CORE_W, AMB_T, AMB_V, FST, AT_STEP = range(9)
NPAR, IST = range(2)
TEN_T, TEN_SHARE, TEN_W = range(3)
EDGE_T, EDGE_STEP, EDGE_SHARE = range(3)


class Nodes(NamedTuple):
    """Every node's parameters and state in five arrays (few arrays: a compiled call unboxes each one)."""

    small: Any  # [j][PAR .. AT_STEP][...] floats: parameters, per-step tables, ambient schedule, state
    ints: Any  # [j][NPAR | IST][...] sizes and the node's stage; integer state
    ten: Any  # [j][TEN_T | TEN_SHARE | TEN_W][...] the tenants' schedule
    edges: Any  # [j][EDGE_T | EDGE_STEP | EDGE_SHARE][...] conditions from each change instant on
    read: Any  # [tick][stage][R_*] the readings at each tick (numpy: the run's physics log)


# -- the equations, on numbers ---------------------------------------------------------------------------------


def govern_step(thr: Any, n_thr: int, hard_c: float, hyst_c: float, n_steps: int, step: int, temp_c: float) -> int:
    """The governor's next step: down at once, up only ``hyst_c`` below a threshold; the lowest at ``hard_c``.

    The step is at least the number of thresholds reached by ``temp_c`` and at most the number reached by
    ``temp_c + hyst_c`` (thresholds ascending)."""
    if temp_c >= hard_c:
        return n_steps - 1
    down = up = 0
    for i in range(n_thr):
        if thr[i] <= temp_c:
            down = i + 1
        if thr[i] <= temp_c + hyst_c:
            up = i + 1
    return max(down, min(step, up))


def base_power_w(idle_w: float, core_w: float, cores: float, share: float, watt: float) -> float:
    """Node power with the stage idle: idle + per-core power x the tenants' cores (capped) + tenant extra."""
    busy_cores = min(cores, 0.0 + share * cores)
    return idle_w + core_w * busy_cores + watt


def dyn_power_w(core_w: float, cores: float, service_cores: float, share: float) -> float:
    """What a service adds to the node's power, ``P(busy) - P(idle)``, at this step and tenant share."""
    base = min(cores, share * cores)
    busy = min(cores, service_cores + share * cores)
    return core_w * (busy - base)


def rc_pieces(tau_s: float, t0_s: float, t1_s: float, start: Any, end: Any, lo: int, hi: int, add: bool) -> Any:
    """Busy time in ``[t0_s, t1_s)`` and the RC weight ``Σ exp(-(t1 - e)/tau) - exp(-(t1 - s)/tau)`` of the
    intervals ``i in [lo, hi)``: ``(start[i], end[i])``, or ``(start[i], start[i] + end[i])`` when ``add``
    (``end`` then holds service times).  Parts outside ``[t0_s, t1_s)`` are clipped; NaN rows skipped."""
    busy_s = weight = 0.0
    prev_b, prev_exp = math.nan, 0.0  # back to back (a queue): an interval starts where the last ended
    for i in range(lo, hi):
        s = start[i]
        e = s + end[i] if add else end[i]
        a = t0_s if s < t0_s else s
        b = t1_s if e > t1_s else e
        if b > a:
            busy_s += b - a
            exp_b = math.exp((b - t1_s) / tau_s)
            weight += exp_b - (prev_exp if a == prev_b else math.exp((a - t1_s) / tau_s))
            prev_b, prev_exp = b, exp_b
    return busy_s, weight


def rc_temp(temp_c: float, decay: float, r: float, base_w: float, dyn_w: float, weight: float, amb: float) -> float:
    """Temperature at the end of a period from ``temp_c`` at its start (``decay = exp(-h / tau)``): decay,
    plus the heat of ``base_w`` throughout and ``dyn_w`` over the busy intervals (their :func:`rc_pieces`
    ``weight``), plus the ambient's part ``amb`` (:func:`ambient_part`)."""
    heat = r * base_w * (1.0 - decay) + r * dyn_w * weight
    return temp_c * decay + heat + amb


def ambient_part(
    amb0_c: float, amb_t: Any, amb_v: Any, n_amb: int, tau_s: float, t0_s: float, t1_s: float, decay: float
) -> float:
    """The ambient's contribution over ``[t0_s, t1_s)`` to the temperature at ``t1_s`` (schedule followed);
    ``decay = exp((t0_s - t1_s) / tau_s)``, which the caller has computed already."""
    j = 0
    while j < n_amb and amb_t[j] <= t0_s:  # schedule entries at or before t0_s
        j += 1
    amb = amb0_c if j == 0 else amb_v[j - 1]
    if j == n_amb or amb_t[j] >= t1_s:  # the common case: no change inside
        return amb * (1.0 - decay)
    total, a = 0.0, t0_s
    while j < n_amb and amb_t[j] < t1_s:
        total += amb * (math.exp((amb_t[j] - t1_s) / tau_s) - math.exp((a - t1_s) / tau_s))
        a, amb = amb_t[j], amb_v[j]
        j += 1
    return total + amb * (1.0 - math.exp((a - t1_s) / tau_s))


# -- a node through a run ------------------------------------------------------------------------------------


def conditions(nd: Nodes, j: int) -> None:
    """Powers and service-time factor of node ``j``'s current step and tenant load; its next change instant."""
    par, fst, ist = nd.small[j][PAR], nd.small[j][FST], nd.ints[j][IST]
    step, share, cores = ist[STEP], fst[SHARE], par[P_CORES]
    fst[BASE_W] = base_power_w(par[P_IDLE_W], nd.small[j][CORE_W][step], cores, share, fst[WATT])
    fst[DYN_W] = dyn_power_w(nd.small[j][CORE_W][step], cores, par[P_SVC_CORES], share)
    fst[FACTOR] = nd.small[j][FAC][step] * max(1.0, (par[P_SVC_CORES] + share * cores) / cores)
    schedule_next(nd, j)


def schedule_next(nd: Nodes, j: int) -> None:
    """Node ``j``'s next change instant: its next governor decision or tenant change, whichever first."""
    ist = nd.ints[j][IST]
    gov = ist[N_GOV] * nd.small[j][PAR][P_PERIOD]
    k = ist[NEXT_TEN]
    ten = nd.ten[j][TEN_T][k] if k < nd.ints[j][NPAR][N_TEN] else math.inf
    nd.small[j][FST][NEXT_S] = gov if gov <= ten else ten


def start_node(nd: Nodes, j: int, start_c: float) -> None:
    """Node ``j`` at t = 0: ``start_c``, the step the governor picks for it, the first tenant conditions."""
    par, npar, fst, ist = nd.small[j][PAR], nd.ints[j][NPAR], nd.small[j][FST], nd.ints[j][IST]
    step = govern_step(nd.small[j][THR], npar[N_THR], par[P_HARD], par[P_HYST], npar[N_STEPS], 0, start_c)
    fst[T_S] = 0.0
    fst[TEMP] = fst[PEAK] = start_c
    fst[SHARE], fst[WATT] = nd.ten[j][TEN_SHARE][0], nd.ten[j][TEN_W][0]
    fst[TOTAL_J] = fst[BASE_J] = fst[BUSY_J] = fst[TICK_J] = 0.0
    ist[STEP], ist[N_GOV], ist[NEXT_TEN], ist[FIRST], ist[CHANGED] = step, 1, 1, 0, 0
    nd.edges[j][EDGE_T][0], nd.edges[j][EDGE_STEP][0], nd.edges[j][EDGE_SHARE][0] = 0.0, step, fst[SHARE]
    ist[N_EDGES] = 1
    conditions(nd, j)


def advance_node(nd: Nodes, j: int, t_s: float, start: Any, end: Any, lo: int, hi: int, add: bool) -> None:
    """Integrate node ``j`` to ``t_s`` (at most its next change instant) over the busy intervals
    ``[lo, hi)`` (:func:`rc_pieces`); at its change instant apply the governor's and tenants' change."""
    par, fst, ist = nd.small[j][PAR], nd.small[j][FST], nd.ints[j][IST]
    t0_s, tau_s = fst[T_S], par[P_TAU]
    busy_s, weight = rc_pieces(tau_s, t0_s, t_s, start, end, lo, hi, add)
    decay = math.exp((t0_s - t_s) / tau_s)
    small = nd.small[j]
    amb = ambient_part(par[P_AMB0], small[AMB_T], small[AMB_V], nd.ints[j][NPAR][N_AMB], tau_s, t0_s, t_s, decay)
    temp_c = rc_temp(fst[TEMP], decay, par[P_R], fst[BASE_W], fst[DYN_W], weight, amb)
    h_s = t_s - t0_s
    base_j = fst[BASE_W] * h_s
    busy_j = fst[DYN_W] * busy_s
    fst[TOTAL_J] += base_j + busy_j
    fst[BASE_J] += base_j
    fst[BUSY_J] += busy_j
    nd.small[j][AT_STEP][ist[STEP]] += h_s
    fst[T_S] = t_s
    fst[TEMP] = temp_c
    if temp_c > fst[PEAK]:
        fst[PEAK] = temp_c
    if t_s == fst[NEXT_S]:
        change(nd, j, t_s)


def change(nd: Nodes, j: int, t_s: float) -> None:
    """Apply the governor's decision and / or the tenant change due at ``t_s``; log new conditions."""
    par, npar, fst, ist = nd.small[j][PAR], nd.ints[j][NPAR], nd.small[j][FST], nd.ints[j][IST]
    step, share, watt = ist[STEP], fst[SHARE], fst[WATT]
    if ist[N_GOV] * par[P_PERIOD] == t_s:
        if step or fst[TEMP] >= par[P_SOFT]:  # at the top step below the first threshold: stays
            ist[STEP] = govern_step(
                nd.small[j][THR], npar[N_THR], par[P_HARD], par[P_HYST], npar[N_STEPS], step, fst[TEMP]
            )
        ist[N_GOV] += 1
    k = ist[NEXT_TEN]
    if k < npar[N_TEN] and nd.ten[j][TEN_T][k] == t_s:
        fst[SHARE], fst[WATT] = nd.ten[j][TEN_SHARE][k], nd.ten[j][TEN_W][k]
        ist[NEXT_TEN] = k + 1
    if ist[STEP] != step or fst[SHARE] != share or fst[WATT] != watt:
        e = ist[N_EDGES]
        nd.edges[j][EDGE_T][e], nd.edges[j][EDGE_STEP][e], nd.edges[j][EDGE_SHARE][e] = t_s, ist[STEP], fst[SHARE]
        ist[N_EDGES] = e + 1
        before = fst[FACTOR]
        conditions(nd, j)
        if fst[FACTOR] != before:
            ist[CHANGED] = 1
    else:
        schedule_next(nd, j)


# -- every node of a simulated pipeline -----------------------------------------------------------------------


def integrate_stage(nd: Nodes, j: int, t_s: float, start: Any, svc: Any, started: int) -> None:
    """Advance node ``j`` to ``t_s`` over its stage's services so far (``start``/``svc`` rows, the first
    ``started`` requests started), skipping those that ended before the last call."""
    ist = nd.ints[j][IST]
    lo = ist[FIRST]
    advance_node(nd, j, t_s, start, svc, lo, started, True)
    first = lo
    while first < started and not start[first] + svc[first] > t_s:  # ended (or dropped: NaN)
        first += 1
    ist[FIRST] = first


def heat_step(
    nd: Nodes, t_s: float, row: int, period_s: float, start: Any, svc: Any, started: Any
) -> tuple[int, float]:
    """At a control instant: integrate the nodes whose change is due (every node at a tick, ``row >= 0``, or
    with ``row == ALL_NODES``), apply the changes, and at a tick write each stage's reading into
    ``read[row]``.  Returns how many nodes' service-time factor changed (``ist[j][CHANGED]`` marks them)
    and the next change instant of any node."""
    tick = row >= 0
    every = tick or row == ALL_NODES
    n_changed = 0
    nxt = math.inf
    for j in range(len(nd.small)):
        fst, ist = nd.small[j][FST], nd.ints[j][IST]
        ist[CHANGED] = 0
        due = fst[NEXT_S] == t_s
        if every or due:
            k = nd.ints[j][NPAR][N_STAGE]
            integrate_stage(nd, j, t_s, start[k], svc[k], started[k])
            n_changed += ist[CHANGED]  # set only by a change, i.e. when due
        if tick:
            out = nd.read[row][nd.ints[j][NPAR][N_STAGE]]
            out[R_TEMP] = fst[TEMP]
            out[R_FREQ] = nd.small[j][FREQ][ist[STEP]]
            out[R_THROTTLED] = 1.0 if ist[STEP] > 0 else 0.0
            out[R_POWER] = (fst[TOTAL_J] - fst[TICK_J]) / period_s if period_s > 0 else math.nan
            fst[TICK_J] = fst[TOTAL_J]
        if fst[NEXT_S] < nxt:
            nxt = fst[NEXT_S]
    return n_changed, nxt


# -- building the state ----------------------------------------------------------------------------------------


Schedule = tuple[Sequence[float], Sequence[float], Sequence[float]]  # tenants: times_s, shares, extra watts


def build_nodes(
    physics: Sequence[DevicePhysics],
    stages: Sequence[int],
    tenants: Sequence[Schedule],
    end_s: float,
    read: np.ndarray,
    as_numpy: bool,
) -> Nodes:
    """The state of nodes ``physics[j]`` running stage ``stages[j]`` with the tenants' schedules drawn up
    front, at t = 0; room for every change instant up to ``end_s``; each tick's readings go to ``read``
    (``[tick][stage][READ_COLS]``, NaN for a stage without physics).  Python lists, or numpy arrays (rows
    padded) for the compiled kernels."""
    cap = [int(end_s // p.dvfs.period_s) + len(ten[0]) + 3 for p, ten in zip(physics, tenants, strict=True)]
    small = [
        [
            _params(p),
            list(p.dvfs.thresholds_c),
            list(p.dvfs.freqs_mhz),
            [freq_factor(p, i) for i in range(len(p.dvfs.freqs_mhz))],
            list(p.power.busy_core_w),
            list(p.thermal.schedule_times_s),
            list(p.thermal.schedule_ambient_c),
            [0.0] * F_ROWS,
            [0.0] * len(p.dvfs.freqs_mhz),
        ]
        for p in physics
    ]
    sizes = [
        [len(p.dvfs.thresholds_c), len(p.dvfs.freqs_mhz), len(p.thermal.schedule_times_s), len(ten[0]), c, k]
        for p, ten, c, k in zip(physics, tenants, cap, stages, strict=True)
    ]
    ints = [[size, [0] * I_ROWS] for size in sizes]
    ten = [[list(t[0]), list(t[1]), list(t[2])] for t in tenants]
    if as_numpy:
        edges = np.zeros((len(cap), 3, max(cap)))  # rows EDGE_T, EDGE_STEP, EDGE_SHARE, room for every change
        nd = Nodes(_padded(small, np.float64), _padded(ints, np.int64), _padded(ten, np.float64), edges, read)
    else:
        nd = Nodes(small, ints, ten, [[[0.0] * c, [0.0] * c, [0.0] * c] for c in cap], read)
    for j, p in enumerate(physics):
        start_node(nd, j, p.thermal.start_c)
    return nd


def freq_factor(phys: DevicePhysics, freq_index: int) -> float:
    """Service-time multiplier at a frequency step: ``(f_max / f)^alpha`` (1 at the top step)."""
    f = phys.dvfs.freqs_mhz
    return float((f[0] / f[freq_index]) ** phys.dvfs.alpha)


def _params(p: DevicePhysics) -> list[float]:
    th, dv, pw = p.thermal, p.dvfs, p.power
    out = [0.0] * P_ROWS
    out[P_TAU], out[P_R], out[P_AMB0], out[P_PERIOD] = th.tau_s, th.resistance_c_per_w, th.ambient_c, dv.period_s
    out[P_SOFT], out[P_HARD], out[P_HYST] = dv.soft_limit_c, dv.hard_limit_c, dv.hysteresis_c
    out[P_CORES], out[P_SVC_CORES], out[P_IDLE_W] = float(pw.cores), p.service_cores, pw.idle_w
    return out


def _padded(nodes: list[list[list[Any]]], dtype: type) -> np.ndarray:
    """Per node, ragged rows as one 3-D array (at least one column; padding is never read)."""
    width = max([1, *(len(r) for rows in nodes for r in rows)])
    out: np.ndarray = np.zeros((len(nodes), max(len(rows) for rows in nodes), width), dtype=dtype)
    for j, rows in enumerate(nodes):
        for i, r in enumerate(rows):
            out[j, i, : len(r)] = r
    return out
