"""The pipeline simulator: a SimPy model driven by a profile's measured latency curves.

Public API: :func:`run_scenario` (every policy of a scenario), :func:`run_policy`, :func:`draw_streams`,
:func:`curves_for`, and the engine seam :func:`simulate` with :class:`SimSetup` for tests and research.
Imports no torch.
"""

from sim.engine import EngineOutput, SimSetup, simulate
from sim.runner import Streams, compile_setup, curves_for, draw_streams, run_policy, run_scenario

__all__ = [
    "EngineOutput",
    "SimSetup",
    "Streams",
    "compile_setup",
    "curves_for",
    "draw_streams",
    "run_policy",
    "run_scenario",
    "simulate",
]
