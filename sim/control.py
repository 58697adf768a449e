"""The controller and the environment as one SimPy process, shared by both request paths.

Every *control instant* — a controller tick at ``n * period_s`` or a change of a stage's environment factor
— is handled here, in this order, by :func:`control`:

1. wait until the instant (``yield env.timeout(...)``);
2. let the pipeline *settle*: everything at or before the instant happens (arrivals, completions, hand-overs)
   except service starts at the instant, which wait for steps 3–4 (``Pipeline.settle``);
3. apply the environment factor changes due at the instant;
4. at a tick, the one tick (:meth:`Controller.tick`): build the :class:`~edgeprune.controller.Observation`,
   call ``policy.decide``, validate the answer (:func:`~edgeprune.controller.decision.validate_levels`), record
   the timeline row, and hand the levels to the pipeline (they apply at each stage's next service start);
5. release the services waiting at the instant (a path whose settle waited on no events holds none).

The start decision (time 0, ``period_s == 0``, all counters zero) is the deployment: it runs before any
request exists and its levels apply without a switch cost.

A *pipeline* is anything with the :class:`Pipeline` methods: ``sim.reference.ReferenceModel`` (requests as
SimPy processes) or ``sim.window.FastPipeline`` (the tandem recursion between instants).  Because both are
driven by this same process, their instants, observations and decisions are the same objects in the same
order, which is what makes their results bit-identical.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

import numpy as np
import simpy

from edgeprune.controller.contract import Levels, Observation, OracleView, Policy, StageObs, wants_oracle
from edgeprune.controller.decision import validate_levels
from edgeprune.records import PHYSICS_TIMELINE, RAW_TIMELINE
from sim.core import SimSetup
from sim.physics import Heat

nan = math.nan

__all__ = ["Clock", "Controller", "Pipeline", "ReadOut", "Rows", "Waits", "control", "drive"]

_INT_FIELDS = ("level", "queue_len", "busy", "arrivals", "served", "dropped")  # a read-out's int row
_FLOAT_FIELDS = ("busy_s", "nominal_s")  # and its float row

ReadOut = tuple[np.ndarray, np.ndarray]  # [stage, _INT_FIELDS] int64 and [stage, _FLOAT_FIELDS] float64


class Waits(Protocol):
    """What :func:`control` waits on: ``simpy.Environment`` (the reference model) or :class:`Clock`."""

    @property
    def now(self) -> float:
        """The simulated time."""

    def timeout(self, delay: float) -> Any:
        """An event (or, for :class:`Clock`, nothing) that passes when ``delay`` seconds have passed."""


class Clock:
    """The fast path's stand-in for ``simpy.Environment``: in that path nothing but the control process is
    scheduled (the kernel advances the requests between instants), so waiting for an instant is moving the
    clock to it, and :func:`drive` steps the process with no event queue.  The arithmetic is SimPy's
    (``now + delay``), so both paths reach the same instants bit for bit."""

    def __init__(self) -> None:
        self.now = 0.0

    def timeout(self, delay: float) -> None:
        """Move the clock by ``delay`` (what the SimPy event's firing would do)."""
        self.now += delay


def drive(process: Generator[Any, Any, None]) -> None:
    """Run a process that only ever waits on a :class:`Clock`."""
    for _ in process:
        pass


class Pipeline(Protocol):
    """What :func:`control` needs from a request path."""

    factor: Any  # per stage, the environment factor in force (1 / speed x slowdowns); read by the oracle

    def deploy(self, levels: Levels) -> None:
        """Apply the start decision at once (no switch, no cost)."""

    def settle(self, time_s: float, tick: bool) -> Generator[simpy.Event, Any, None] | None:
        """Let everything at or before ``time_s`` happen except service starts at ``time_s`` (a generator of
        SimPy events to wait for, or ``None`` when it is done at once)."""

    def read(self, time_s: float) -> ReadOut:
        """Each stage's counters since the last tick, and its state now (arrays the caller copies at once:
        the pipeline may reuse them); resets the counters."""

    def set_target(self, levels: Levels) -> None:
        """Levels for each stage's next service start."""

    def release(self) -> None:
        """The instant is handled: services waiting for it may start."""

    def services(self) -> tuple[Any, Any, Any]:
        """Every stage's service starts and times so far (``sim.physics.Services``)."""

    next_instant_s: float  # the control instant being waited for (services starting then wait for it)


class Controller:
    """The one tick: observation, decision, validation and timeline record, for every request path."""

    def __init__(self, policy: Policy, setup: SimSetup, arrivals_s: np.ndarray, heat: Heat | None = None) -> None:
        self.policy = policy
        self.setup = setup
        self.name = type(policy).__name__
        self.arrivals_s = arrivals_s
        self.heat = heat
        self.wants_oracle = wants_oracle(policy)
        self.speed = list(setup.speed) if setup.speed is not None else [1.0] * setup.n_stages
        self.times = array("d")
        self.decided = array("q")
        ticks = math.ceil(setup.end_s / setup.period_s) + 2  # n * period_s < end_s, n >= 0 (+1: rounding)
        self.k_n = k_n = setup.n_stages
        self.n_levels = setup.n_levels
        self.period_s = setup.period_s
        self.ints = Rows(ticks, k_n, len(_INT_FIELDS), np.int64)  # per tick, the read-out
        self.floats = Rows(ticks, k_n, len(_FLOAT_FIELDS), np.float64)
        self.phys = Rows(ticks if heat is not None else 0, k_n, 4, np.float64)  # Heat.readings() per tick
        self.ticks = 0

    def start(self, factor: Sequence[float]) -> Levels:
        """The deployment decision at time 0: every counter zero, every stage at level 0."""
        k_n = self.setup.n_stages
        zeros = np.zeros((k_n, len(_INT_FIELDS)), dtype=np.int64), np.zeros((k_n, len(_FLOAT_FIELDS)))
        return self.tick(0.0, zeros, factor)

    def tick(self, now: float, read: ReadOut, factor: Sequence[float]) -> Levels:
        """Observe, decide, validate, record; the validated levels."""
        n = self.ticks
        self.ints.buf[n] = read[0]  # recorded: a numpy row copy (Rows); at most one row per tick
        self.floats.buf[n] = read[1]
        ints, floats = read[0].tolist(), read[1].tolist()
        new = tuple.__new__  # a third of StageObs._make's cost, and this runs every tick
        if self.heat is None:  # no physics: temperature and frequency unknown, not throttled
            stages = tuple(
                [
                    new(StageObs, (lv, q, b == 1, a, sv, bs, ns, dr, nan, nan, False))
                    for (lv, q, b, a, sv, dr), (bs, ns) in zip(ints, floats, strict=True)
                ]
            )
        else:  # the nodes' readings at this tick (Heat.at wrote them): temp_c, freq_mhz, power_w, throttled
            now_read = self.heat.readings()
            self.phys.buf[n] = now_read
            readings = now_read.tolist()
            stages = tuple(
                [
                    new(StageObs, (lv, q, b == 1, a, sv, bs, ns, dr, tc, fq, th > 0.0))
                    for (lv, q, b, a, sv, dr), (bs, ns), (tc, fq, _, th) in zip(ints, floats, readings, strict=True)
                ]
            )
        oracle = (
            OracleView(tuple(float(f) * v for f, v in zip(factor, self.speed, strict=True)), self.arrivals_s)
            if self.wants_oracle
            else None
        )
        obs = Observation(now, self.period_s if n else 0.0, stages[0].arrivals, stages, oracle)
        levels = validate_levels(self.policy.decide(obs), self.k_n, self.n_levels, policy=self.name, time_s=now)
        self.times.append(now)
        self.decided.extend(levels)
        self.ticks = self.ints.n = self.floats.n = self.phys.n = n + 1
        return levels

    def timeline(self) -> dict[str, list[Any]]:
        """The raw per-period timeline (``edgeprune.records.RAW_TIMELINE``, plus ``PHYSICS_TIMELINE`` with
        physics), one row per tick and stage."""
        k_n = self.setup.n_stages
        ints, floats = self.ints.rows(), self.floats.rows()
        cols: dict[str, list[Any]] = {
            "time_s": np.repeat(np.frombuffer(self.times, dtype=np.float64), k_n).tolist(),
            "stage": list(range(k_n)) * len(self.times),
            "decided": self.decided.tolist(),
        }
        for j, name in enumerate(_INT_FIELDS):
            cols[name] = (ints[:, j] == 1).tolist() if name == "busy" else ints[:, j].tolist()
        for j, name in enumerate(_FLOAT_FIELDS):
            cols[name] = floats[:, j].tolist()
        out = {c: cols[c] for c in RAW_TIMELINE}
        if self.heat is not None:
            phys = self.phys.rows()  # the readings' columns are PHYSICS_TIMELINE's
            out.update({name: phys[:, j].tolist() for j, name in enumerate(PHYSICS_TIMELINE)})
        return out


class Rows:
    """Per-tick ``[stage, width]`` arrays in one array allocated for the run's ticks: a numpy row copy per
    tick (``buf[n] = rows``, then ``n`` counted) is the cheapest record, ~10x cheaper than building Python
    lists and converting them at the end."""

    def __init__(self, ticks: int, k_n: int, width: int, dtype: type) -> None:
        self.buf: np.ndarray = np.zeros((ticks, k_n, width), dtype=dtype)
        self.n = 0

    def rows(self) -> np.ndarray:
        """Every recorded row, tick-major: ``[ticks * stages, width]``."""
        return self.buf[: self.n].reshape(-1, self.buf.shape[2])


def control(
    env: Waits,
    pipe: Pipeline,
    ctl: Controller,
    progress: Callable[[float], None] | None = None,
) -> Generator[simpy.Event, Any, None]:
    """The control process: the deployment, then every tick, environment change and physics instant until
    ``end_s``.  A stage's factor is its scripted factor times its node's physics factor (1 without)."""
    s, heat = ctl.setup, ctl.heat
    env_f = list(pipe.factor)
    phys_f = [1.0] * s.n_stages
    for k, f in heat.factors() if heat is not None else ():
        phys_f[k] = f
        pipe.factor[k] = env_f[k] * f
    if heat is not None:  # the readings at time 0 for the deployment decision
        heat.at(0.0, True, 0.0, pipe)
    pipe.deploy(ctl.start(pipe.factor))
    changes = s.env_changes
    j, n = 0, 1
    while True:
        t_tick = n * s.period_s
        t_env = changes[j][0] if j < len(changes) else math.inf
        t = t_tick if t_tick <= t_env else t_env
        if heat is not None and heat.next_s < t:
            t = heat.next_s
        if t >= s.end_s:
            return
        pipe.next_instant_s = t
        yield env.timeout(t - env.now)  # lands exactly on t (t - now, added back to now, rounds to t)
        is_tick = t == t_tick
        waits = pipe.settle(t, is_tick)
        if waits is not None:  # the reference model lets the instant's other events happen first
            yield from waits
        while j < len(changes) and changes[j][0] == t:
            k = changes[j][1]
            env_f[k] = changes[j][2]
            pipe.factor[k] = env_f[k] * phys_f[k]
            j += 1
        for k, f in heat.at(t, is_tick, s.period_s, pipe) if heat is not None else ():
            phys_f[k] = f
            pipe.factor[k] = env_f[k] * f
        if is_tick:
            pipe.set_target(ctl.tick(t, pipe.read(t), pipe.factor))
            n += 1
            if progress is not None and n % 256 == 0:
                progress(t)
        if waits is not None:  # a path that waited on nothing holds nothing
            pipe.release()
