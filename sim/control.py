"""The controller and the environment as one SimPy process, shared by both request paths.

Every *control instant* — a controller tick at ``n * period_s``, a change of a stage's environment factor or
a node's physics change (governor step, tenant) — is handled here, in this order, by :func:`control`:

1. wait until the instant (``yield env.timeout(...)``);
2. let the pipeline *settle*: everything at or before the instant happens (arrivals, completions, hand-overs)
   except service starts at the instant, which wait for steps 3–4; then the nodes' physics is stepped to the
   instant over the services that ran (``Pipeline.settle``; the fast path does both in one kernel call);
3. apply the environment factor changes and the physics' factor changes due at the instant;
4. at a tick, the one tick (:meth:`Controller.tick`): build the :class:`~edgeprune.controller.Observation`,
   call ``policy.decide``, validate the answer (:func:`~edgeprune.controller.decision.validate_levels`), record
   the tick's time and decision (the read-out itself stays in the log the pipeline wrote it to,
   ``Pipeline.readouts``), and hand the levels to the pipeline (they apply at each stage's next service start);
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
from collections.abc import Callable, Generator, Sequence
from itertools import chain
from typing import Any, Protocol

import numpy as np
import simpy

from edgeprune.controller.contract import Levels, Observation, OracleView, Policy, StageObs, wants_oracle
from edgeprune.controller.decision import validate_levels
from edgeprune.physics.flat import DUE_ONLY
from edgeprune.records import PHYSICS_TIMELINE, RAW_TIMELINE
from sim.core import SimSetup
from sim.physics import Heat

nan = math.nan

__all__ = ["Clock", "Controller", "Pipeline", "ReadOut", "Waits", "control", "drive"]

_INT_FIELDS = ("level", "queue_len", "busy", "arrivals", "served", "dropped")  # a read-out's int row
_FLOAT_FIELDS = ("busy_s", "nominal_s")  # and its float row, then the node's readings (PHYSICS_TIMELINE)

ReadOut = tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]]  # per stage: ints, floats + readings


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

    def settle(self, time_s: float, row: int) -> Generator[simpy.Event, Any, None] | None:
        """Let everything at or before ``time_s`` happen except service starts at ``time_s``, then step the
        nodes' physics to ``time_s`` (:attr:`heat`, :meth:`~sim.physics.Heat.at`; ``row``: the tick's
        number, ``DUE_ONLY`` between ticks).  A generator of SimPy events to wait for, or ``None`` when it is
        done at once."""

    def read(self, time_s: float) -> ReadOut:
        """Each stage's counters since the last tick, its state now and, with physics, its node's readings
        (``sim.kernels.float_log``: without physics the float rows stop after the counters); resets the
        counters.  The pipeline keeps every tick's read-out in its log (:meth:`readouts`): one copy, written
        where it is measured (the readings by the physics step, into the float rows' last columns)."""

    def readouts(self, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """The read-out log: ``[ticks, stage, field]`` int64 and float64 arrays (``sim.kernels.float_log``),
        row 0 the deployment's (counters zero, the readings at time 0), row ``n`` the ``n``-th tick's."""

    def set_target(self, levels: Levels) -> None:
        """Levels for each stage's next service start."""

    def release(self) -> None:
        """The instant is handled: services waiting for it may start."""

    def services(self) -> tuple[Any, Any, Any]:
        """Every stage's service starts and times so far (``sim.physics.Services``)."""

    next_instant_s: float  # the control instant being waited for (services starting then wait for it)
    heat: Heat | None  # the physics of the nodes that run the stages (None without physics)


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
        self.decided: list[Levels] = []
        self.k_n = setup.n_stages
        self.n_levels = setup.n_levels
        self.period_s = setup.period_s
        self.ticks = 0
        self._valid: object = object()  # the policy's last answer as it returned it, once validated (none yet)

    def start(self, readouts: tuple[np.ndarray, np.ndarray], factor: Sequence[float]) -> Levels:
        """The deployment decision at time 0 on the log's row 0 (every counter zero, every stage at level 0,
        the nodes' readings at time 0)."""
        return self.tick(0.0, (readouts[0][0].tolist(), readouts[1][0].tolist()), factor)

    def tick(self, now: float, read: ReadOut, factor: Sequence[float]) -> Levels:
        """Observe, decide, validate, record; the validated levels.  Written for speed (it runs every tick):
        records built with ``tuple.__new__`` (a third of ``_make``'s cost), rows zipped without ``strict``
        (every row has one entry per stage by construction), and an answer that is the very tuple validated
        last tick (a policy holding its levels) not validated again."""
        n = self.ticks
        ints, floats = read
        new = tuple.__new__
        if self.heat is None:  # no physics: the float row is the counters; temperature unknown, not throttled
            stages = tuple(
                [
                    new(StageObs, (lv, q, b == 1, a, sv, bs, ns, dr, nan, nan, False))
                    for (lv, q, b, a, sv, dr), (bs, ns) in zip(ints, floats, strict=False)
                ]
            )
        else:  # the float row ends with the node's readings: temperature, frequency, power, throttled
            stages = tuple(
                [
                    new(StageObs, (lv, q, b == 1, a, sv, bs, ns, dr, tc, fq, th > 0.0))
                    for (lv, q, b, a, sv, dr), (bs, ns, tc, fq, _, th) in zip(ints, floats, strict=False)
                ]
            )
        oracle = (
            OracleView(tuple(float(f) * v for f, v in zip(factor, self.speed, strict=True)), self.arrivals_s)
            if self.wants_oracle
            else None
        )
        obs = new(Observation, (now, self.period_s if n else 0.0, ints[0][3], stages, oracle))  # [3]: arrivals
        decided = self.policy.decide(obs)
        if decided is not self._valid:  # the same tuple object as last tick passed already (tuples are immutable)
            levels = validate_levels(decided, self.k_n, self.n_levels, policy=self.name, time_s=now)
            self._valid = decided if levels is decided else self._valid
        else:
            levels = decided
        self.decided.append(levels)
        self.ticks = n + 1
        return levels

    def timeline(self, readouts: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw per-period timeline (``edgeprune.records.RAW_TIMELINE``, plus ``PHYSICS_TIMELINE`` with
        physics), one row per tick and stage, as numpy columns (no Python object per value): the tick times, the
        decisions recorded here, the read-outs from the pipeline's log (``Pipeline.readouts``), whose float
        rows end with the physics readings."""
        k_n, ticks = self.setup.n_stages, self.ticks
        ints = readouts[0][:ticks].reshape(-1, len(_INT_FIELDS))
        floats = readouts[1][:ticks].reshape(ticks * k_n, -1)
        cols: dict[str, np.ndarray] = {
            "time_s": np.repeat(np.arange(ticks) * self.period_s, k_n),  # tick n at n x period_s, as control
            "stage": np.tile(np.arange(k_n, dtype=np.int64), ticks),
            "decided": np.fromiter(chain.from_iterable(self.decided), dtype=np.int64, count=ticks * k_n),
        }
        for j, name in enumerate(_INT_FIELDS):
            cols[name] = ints[:, j] == 1 if name == "busy" else ints[:, j].copy()
        for j, name in enumerate(_FLOAT_FIELDS):
            cols[name] = floats[:, j].copy()
        out = {c: cols[c] for c in RAW_TIMELINE}
        if self.heat is not None:  # the readings follow the read-out in the float row
            out.update({name: floats[:, len(_FLOAT_FIELDS) + j].copy() for j, name in enumerate(PHYSICS_TIMELINE)})
        return out


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
        heat.at(0.0, 0, 0.0, pipe)
    pipe.deploy(ctl.start(pipe.readouts(1), pipe.factor))
    changes, period_s, end_s = s.env_changes, s.period_s, s.end_s
    settle, read, set_target, tick, factor = pipe.settle, pipe.read, pipe.set_target, ctl.tick, pipe.factor
    j, n = 0, 1
    t_env = changes[0][0] if changes else math.inf  # the next environment change
    while True:
        t_tick = n * period_s
        t = t_tick if t_tick <= t_env else t_env
        if heat is not None and heat.next_s < t:
            t = heat.next_s
        if t >= end_s:
            return
        pipe.next_instant_s = t
        yield env.timeout(t - env.now)  # lands exactly on t (t - now, added back to now, rounds to t)
        is_tick = t == t_tick
        waits = settle(t, n if is_tick else DUE_ONLY)  # the nodes' physics stepped too
        if waits is not None:  # the reference model lets the instant's other events happen first
            yield from waits
        while t == t_env:
            k = changes[j][1]
            env_f[k] = changes[j][2]
            factor[k] = env_f[k] * phys_f[k]
            j += 1
            t_env = changes[j][0] if j < len(changes) else math.inf
        if heat is not None and heat.n_changed:
            for k, f in heat.changes():
                phys_f[k] = f
                factor[k] = env_f[k] * f
        if is_tick:
            set_target(tick(t, read(t), factor))
            n += 1
            if progress is not None and n % 256 == 0:
                progress(t)
        if waits is not None:  # a path that waited on nothing holds nothing
            pipe.release()
