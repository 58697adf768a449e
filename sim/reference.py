"""The reference model: the pipeline as plain SimPy processes, on SimPy's public API only.

Read this file to know what the simulator simulates; extend it to simulate more.

* The **source** process waits until each arrival time and hands the request to stage 0.
* Each **stage** is a single FIFO server: a ``simpy.Store`` holds the waiting requests (unbounded, or at
  most ``capacity`` with tail or head drop) and a ``serve`` process takes them one at a time.  A request's
  service time is the profile's latency sample at the stage's level, drawn by the request's quantile
  ``u[k][i]`` (common random numbers: the same request gets the same quantile whatever the policy), times
  the stage's environment factor (device speed and slowdowns, taken at service start), plus the switch cost
  when the level changed.
* Each **link** k → k+1 is a FIFO: ``transmit`` serialises one request at a time (activation bytes /
  bandwidth), then a ``propagate`` process delays it by the constant latency.
* The **controller and the environment** are one process, ``sim.control.control``, shared with the fast
  path: at each control instant it lets the model settle, applies factor changes, and at a tick observes,
  decides and sets each stage's target level.  A service that would start exactly at an instant waits for
  it (``yield self.model.released``), so it uses that instant's decision and factor.

To add a process (a battery, a failure, a thermal model), write a generator over ``self.env`` and start it
in :meth:`ReferenceModel.start`, as the others are; the fast path (``sim.window``) need not change unless
the new process alters service times between control instants.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from edgeprune.controller.contract import Levels
from sim.control import ReadOut
from sim.core import DONE, DROPPED, NO_LEVEL, UNFINISHED, EngineOutput, SimSetup
from sim.kernels import READ_FLOATS, READ_INTS, float_log
from sim.physics import Heat

__all__ = ["ReferenceModel"]

Proc = Generator[simpy.Event, Any, None]


class ReferenceModel:
    """The whole pipeline: source, stages, links and the per-request records."""

    def __init__(self, env: simpy.Environment, s: SimSetup, arrivals_s: np.ndarray, quantiles: np.ndarray) -> None:
        self.env = env
        self.setup = s
        self.arrivals_s = arrivals_s.tolist()
        n, k_n = len(self.arrivals_s), s.n_stages
        self.factor = list(s.initial_factor)
        self.next_instant_s = 0.0
        self.released = env.event()
        self.switches = 0
        self.departure_s = np.full(n, np.nan)
        self.status = np.full(n, UNFINISHED, dtype=np.uint8)
        self.dropped_at = np.full(n, -1, dtype=np.int8)
        self.levels = np.full((n, k_n), NO_LEVEL, dtype=np.uint8)
        nan_row = array("d", [math.nan]) * n
        self.service_rows = [array("d", nan_row) for _ in range(k_n)]  # [k][i] (rows: what sim.physics reads)
        self.start_rows = [array("d", nan_row) for _ in range(k_n)]
        self.stages = [Stage(self, k, quantiles[k].tolist()) for k in range(k_n)]
        self.log_i = np.zeros((s.n_ticks, k_n, READ_INTS), dtype=np.int64)  # every tick's read-out (readouts)
        self.log_f = float_log(s.n_ticks, k_n, s.has_physics)  # readings columns: the heat's log
        self.row = 0
        self.links = [Link(self, k) for k in range(k_n - 1)]
        self.heat = Heat.of(s, False, self.log_f[:, :, READ_FLOATS:])  # the nodes' physics, stepped in settle

    def start(self) -> None:
        """Start the source, servers and links (after the control process, so its deployment comes first)."""
        self.env.process(self.source())
        for stage in self.stages:
            self.env.process(stage.serve())
        for link in self.links:
            self.env.process(link.transmit())

    def source(self) -> Proc:
        """Hand each request to stage 0 at its arrival time."""
        for i, a in enumerate(self.arrivals_s):
            yield self.env.timeout(a - self.env.now)  # lands exactly on a (see sim.control)
            self.stages[0].arrive(i)

    def wait_for_instant(self) -> bool:
        """Whether a control instant is due now and not yet handled (a service starting now waits for it)."""
        return self.env.now == self.next_instant_s

    # -- the sim.control.Pipeline side ------------------------------------------------------------------------

    def deploy(self, levels: Levels) -> None:
        """The start decision: applied as the current level, no switch."""
        for stage, lv in zip(self.stages, levels, strict=True):
            stage.level = stage.target = lv

    def settle(self, time_s: float, row: int) -> Proc:
        """Let every other event at this instant happen first (servers starting now wait in ``released``);
        then, with physics, step the nodes over the services so far (``sim.physics.Heat.at``)."""
        while self.env.peek() == self.env.now:
            yield self.env.timeout(0)
        if self.heat is not None:
            self.heat.at(time_s, row, self.setup.period_s, self)

    def read(self, time_s: float) -> ReadOut:
        """Each stage's counters since the last tick and its state now (logged); resets the counters."""
        reads = [stage.read() for stage in self.stages]
        ints, floats = [r[0] for r in reads], [r[1] for r in reads]
        self.row += 1
        self.log_i[self.row] = ints
        self.log_f[self.row, :, :READ_FLOATS] = floats
        return ints, self.log_f[self.row].tolist()  # with the readings the physics step logged, if any

    def readouts(self, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """The read-out log (row 0: the deployment's zeros)."""
        return self.log_i[:ticks], self.log_f[:ticks]

    def set_target(self, levels: Levels) -> None:
        """Levels for each stage's next service start."""
        for stage, lv in zip(self.stages, levels, strict=True):
            stage.target = lv

    def release(self) -> None:
        """The instant is handled: services waiting for it start now."""
        self.released.succeed()
        self.released = self.env.event()

    def services(self) -> tuple[Any, Any, Any]:
        """Every stage's service starts and times, and how many requests started there (``sim.physics``)."""
        return self.start_rows, self.service_rows, [stage.started for stage in self.stages]

    def output(self, timeline: dict[str, np.ndarray]) -> EngineOutput:
        """The raw records of the run."""
        return EngineOutput(
            departure_s=self.departure_s,
            status=self.status,
            dropped_at=self.dropped_at,
            levels=self.levels,
            service_s=np.stack([np.frombuffer(r, dtype=np.float64) for r in self.service_rows], axis=1),
            timeline=timeline,
            switches=self.switches,
        )


class Stage:
    """One FIFO server with its waiting room and its counters for the controller."""

    def __init__(self, model: ReferenceModel, k: int, quantiles: list[float]) -> None:
        s = model.setup
        self.model, self.env, self.k = model, model.env, k
        self.u = quantiles
        self.samples = [list(lv) for lv in s.samples_s[k]]
        self.mean = list(s.mean_s[k])
        self.capacity = s.queue_capacity if s.queue_capacity is not None else math.inf
        self.waiting = simpy.Store(model.env)
        self.occupied = False  # the server has a request (in service, or waiting for an instant)
        self.held = False  # ... waiting for an instant: still counted as queued
        self.in_service = False
        self.level = self.target = 0
        self.arrivals = self.served = self.dropped = 0
        self.busy_s = self.nominal_s = 0.0
        self.started = 0  # 1 + the last request that started here (served in index order; dropped: NaN rows)

    def arrive(self, i: int) -> None:
        """Request ``i`` reaches the stage: to the server, to the waiting room, or dropped when it is full."""
        self.arrivals += 1
        if self.occupied and len(self.waiting.items) >= self.capacity:
            self.dropped += 1
            if self.model.setup.drop_head and self.waiting.items:
                victim = self.waiting.items.pop(0)  # the oldest waiting request makes room for the new one
                self.waiting.put(i)
                i = victim
            self.model.status[i] = DROPPED
            self.model.dropped_at[i] = self.k
            return
        self.occupied = True
        self.waiting.put(i)

    def serve(self) -> Proc:
        """Serve one request at a time, in arrival order."""
        while True:
            i = yield self.waiting.get()
            if self.model.wait_for_instant():
                self.held = True
                yield self.model.released
                self.held = False
            service_s, nominal_s = self.start_service(i)
            self.in_service = True
            yield self.env.timeout(service_s)
            self.in_service = False
            self.served += 1
            self.busy_s += service_s
            self.nominal_s += nominal_s
            self.hand_on(i)
            self.occupied = bool(self.waiting.items)

    def start_service(self, i: int) -> tuple[float, float]:
        """The service time of request ``i`` now (switch cost on a level change) and its nominal time."""
        m = self.model
        extra = 0.0
        if self.target != self.level:
            self.level = self.target
            m.switches += 1
            extra = m.setup.switch_s
        row = self.samples[self.level]
        service_s = row[int(self.u[i] * len(row))] * m.factor[self.k] + extra
        m.levels[i, self.k] = self.level
        m.service_rows[self.k][i] = service_s
        m.start_rows[self.k][i] = self.env.now
        self.started = i + 1
        return service_s, self.mean[self.level]

    def hand_on(self, i: int) -> None:
        """A finished request leaves the pipeline (last stage) or enters the link to the next stage."""
        m = self.model
        if self.k == len(m.stages) - 1:
            m.departure_s[i] = self.env.now
            m.status[i] = DONE
        else:
            m.links[self.k].queue.put(i)

    def read(self) -> tuple[list[int], list[float]]:
        """This period's counters and the state now (``sim.control`` read-out rows); resets the counters."""
        queue_len = len(self.waiting.items) + self.held
        ints = [self.level, queue_len, int(self.in_service), self.arrivals, self.served, self.dropped]
        floats = [self.busy_s, self.nominal_s]
        self.arrivals = self.served = self.dropped = 0
        self.busy_s = self.nominal_s = 0.0
        return ints, floats


class Link:
    """The FIFO hop from stage ``k`` to ``k + 1``: serialisation one request at a time, then propagation."""

    def __init__(self, model: ReferenceModel, k: int) -> None:
        self.model, self.env, self.k = model, model.env, k
        self.tx_s = model.setup.hop_tx_s[k]
        self.latency_s = model.setup.hop_latency_s[k]
        self.queue = simpy.Store(model.env)

    def transmit(self) -> Proc:
        """Serialise the requests in order."""
        while True:
            i = yield self.queue.get()
            yield self.env.timeout(self.tx_s)
            self.env.process(self.propagate(i))

    def propagate(self, i: int) -> Proc:
        """Deliver request ``i`` to the next stage after the link's latency."""
        yield self.env.timeout(self.latency_s)
        self.model.stages[self.k + 1].arrive(i)
