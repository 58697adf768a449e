"""Run one policy over one arrival sequence: the engine seam (:func:`simulate`).

Two implementations of one model (``ARCHITECTURE.md``, "The simulator model"):

* ``reference`` (``sim.reference``): the pipeline as SimPy processes — source, stages, links — on SimPy's
  public API.  It serves every scenario, bounded queues included, and is the model to read and extend.
* ``fast`` (``sim.window`` + ``sim.kernels``): unbounded queues only; the same model as array recursions
  between control instants, numba-compiled for long runs.  Proven equal to the reference bit for bit under
  any policy, environment schedule, links, switch costs and seeds (tests/test_sim_engine.py).

Both are driven by the same control process (``sim.control``), so the controller's tick — observation,
decision, validation, timeline — is written once.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Literal

import numpy as np
import simpy

from edgeprune.controller.contract import Policy
from sim.control import Clock, Controller, control, drive
from sim.core import DONE, DROPPED, NO_LEVEL, UNFINISHED, EngineOutput, SimSetup
from sim.reference import ReferenceModel
from sim.window import FastPipeline

__all__ = ["DONE", "DROPPED", "NO_LEVEL", "UNFINISHED", "EngineOutput", "Path", "SimSetup", "simulate"]

Path = Literal["auto", "fast", "reference"]


def simulate(
    setup: SimSetup,
    policy: Policy,
    arrivals_s: np.ndarray,
    quantiles: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
    path: Path = "auto",
    compiled: bool | None = None,
) -> EngineOutput:
    """Run one policy over one arrival sequence.

    ``arrivals_s`` are sorted arrival times; ``quantiles`` is a ``[n_stages, n]`` array in [0, 1): request
    ``i``'s latency quantile at stage ``k`` (the seam through which tests inject exact service times).
    ``path``: ``"auto"`` takes the fast path for unbounded queues and the reference model otherwise.
    ``compiled`` chooses the fast path's kernels: numba-compiled (``True``), plain Python (``False``) or by
    run length (``None``); the results are identical.
    """
    arrivals_s = np.asarray(arrivals_s, dtype=np.float64)
    if arrivals_s.ndim != 1 or (arrivals_s.size and np.any(np.diff(arrivals_s) < 0)):
        raise ValueError("arrivals_s must be a sorted 1-D array")
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape != (setup.n_stages, arrivals_s.size):
        raise ValueError(f"quantiles shape {quantiles.shape} != {(setup.n_stages, arrivals_s.size)}")
    if path not in ("auto", "fast", "reference"):
        raise ValueError(f"path = {path!r}: expected 'auto', 'fast' or 'reference'")
    fast = path == "fast" or (path == "auto" and setup.queue_capacity is None)
    # The engine creates no reference cycles per event, so the cyclic collector only costs time here
    # (it rescans the growing record lists); it is restored on exit.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        pipe: FastPipeline | ReferenceModel
        if fast:  # nothing but the control process is scheduled: stepped on a bare clock
            pipe = FastPipeline(setup, arrivals_s, quantiles, compiled)
            ctl = Controller(policy, setup, arrivals_s, pipe.heat)
            drive(control(Clock(), pipe, ctl, progress))
        else:
            env = simpy.Environment()
            pipe = ReferenceModel(env, setup, arrivals_s, quantiles)
            ctl = Controller(policy, setup, arrivals_s, pipe.heat)
            env.process(control(env, pipe, ctl, progress))  # first: the deployment precedes every request
            pipe.start()
            env.run(until=setup.end_s)
        out = pipe.output(ctl.timeline(pipe.readouts(ctl.ticks)))
        if ctl.heat is not None:
            out.heat = ctl.heat.finish(setup.end_s, pipe)
            out.start_s = np.stack([np.asarray(row, dtype=np.float64) for row in pipe.services()[0]], 1)
        return out
    finally:
        if was_enabled:
            gc.enable()
