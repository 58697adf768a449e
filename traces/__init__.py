"""Arrival workloads for the simulator: seeded synthetic generators and replay of recorded traces.

Kinds (the ``kind`` key of a scenario's ``[arrivals]`` table):

``poisson``      homogeneous Poisson (:class:`PoissonArrivals`)
``mmpp``         Markov-modulated Poisson, 2+ states (:class:`MmppArrivals`)
``camera-trap``  motion triggers (Poisson, or an MMPP: clustered) x bursts of frames (:class:`CameraTrapArrivals`)
``schedule``     time-varying rate: change points and/or a diurnal cosine (:class:`RateScheduleArrivals`)
``replay``       a recorded trace: CSV, JSON Lines, Parquet, Camtrap DP, COCO Camera Traps or Wildlife
                 Insights (:class:`ReplayArrivals`); what it kept and dropped is a :class:`ReplayReport`

Entry points: :func:`arrivals_from_table` (TOML table → spec), :func:`generate` (spec + Generator →
sorted arrival times in seconds), :func:`load_trace` (a recorded file → :class:`TraceInfo`),
:func:`arrival_stats` (count, rate, burstiness), :func:`replay_report` (rows read, kept, dropped and why).
The ``edgeprune-trace`` command (:mod:`traces.cli`) inspects and fits recorded traces.
"""

from traces.generators import generate
from traces.replay import ReplayReport, TraceInfo, load_replay, load_trace, replay_report, window_trace
from traces.spec import (
    KINDS,
    ArrivalSpec,
    CameraTrapArrivals,
    MmppArrivals,
    PoissonArrivals,
    RateScheduleArrivals,
    ReplayArrivals,
)
from traces.stats import ArrivalStats, BurstStats, arrival_stats, burst_stats
from traces.table import arrivals_from_table

__all__ = [
    "KINDS",
    "ArrivalSpec",
    "ArrivalStats",
    "BurstStats",
    "CameraTrapArrivals",
    "MmppArrivals",
    "PoissonArrivals",
    "RateScheduleArrivals",
    "ReplayArrivals",
    "ReplayReport",
    "TraceInfo",
    "arrival_stats",
    "arrivals_from_table",
    "burst_stats",
    "generate",
    "load_replay",
    "load_trace",
    "replay_report",
    "window_trace",
]
