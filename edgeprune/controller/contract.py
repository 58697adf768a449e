"""The controller contract: what a policy sees, what it returns, and what it may know in advance.

A policy is a plain Python object with one method, ``decide(observation) -> levels``.  It holds no SimPy,
asyncio, torch or clock: time reaches it only as data (``Observation.time_s``), so the identical object runs
inside the simulator and against a real cluster (``hil/``).  Everything a policy knows about the pipeline
before the run comes from :class:`PipelineCurves`, derived from the profile and the placement.

Call protocol (the same in every backend):

1. the backend builds the policy with ``make_policy(spec, curves)``;
2. it calls ``decide`` once at time 0 with the *start observation* (``period_s == 0``, all counts zero) and
   applies the answer before the first request is served;
3. then every ``period_s`` it calls ``decide`` with the counters of the period that just ended;
4. a returned level takes effect at that stage's next service start (between two requests), paying the
   profile's switch cost once.

A policy that needs ground truth (an upper bound such as ``oracle``) declares the class attribute
``wants_oracle = True``; a backend reads it with :func:`wants_oracle` and then adds an :class:`OracleView`
to every observation, or refuses the policy up front if it cannot supply one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from edgeprune.errors import PolicyError
from edgeprune.physics import DevicePhysics
from edgeprune.profile import AccuracyCurve

__all__ = ["Levels", "Observation", "OracleView", "PipelineCurves", "Policy", "StageObs", "wants_oracle"]

Levels = tuple[int, ...]


class StageObs(NamedTuple):
    """What the monitor saw at one stage during the last period (counters reset every period).

    Observations are immutable ``NamedTuple`` records rather than frozen dataclasses because a backend builds
    one per stage every period: a million-request simulation builds about a million of them, and a frozen
    dataclass costs ~5x more to construct.  The field order is also the timeline's column order.
    """

    level: int  # level in effect at the end of the period (the last one applied)
    queue_len: int  # requests waiting (not in service) at the observation time
    busy: bool  # a request in service at the observation time
    arrivals: int  # requests that entered this stage's queue during the period (dropped ones included)
    served: int  # services completed during the period
    busy_s: float  # total measured service time of those services (switch cost included)
    nominal_s: float  # total of PipelineCurves.latency_s[k][level] over those services (what was expected)
    dropped: int  # requests dropped at this stage's queue during the period
    # What a node exposes about its physics (NaN / False where the backend has no physics for the node):
    temp_c: float = math.nan  # SoC temperature at the observation time (/sys/class/thermal/thermal_zone0/temp)
    freq_mhz: float = math.nan  # CPU frequency in effect (cpufreq scaling_cur_freq, vcgencmd measure_clock arm)
    throttled: bool = False  # running below the top frequency (vcgencmd get_throttled bit 2)

    @property
    def service_time_s(self) -> float | None:
        """Mean measured service time over the period, or ``None`` if nothing completed."""
        return self.busy_s / self.served if self.served else None

    @property
    def env_factor(self) -> float | None:
        """Observed / profiled service time over the period (1.0 = as profiled), ``None`` if unknown."""
        return self.busy_s / self.nominal_s if self.served and self.nominal_s > 0 else None


@dataclass(frozen=True, slots=True)
class OracleView:
    """Ground truth, given only to policies that declare ``wants_oracle = True`` (an upper bound)."""

    env_factor: tuple[float, ...]  # true current multiplier of PipelineCurves.latency_s per stage
    arrivals_s: np.ndarray  # every arrival time of the run, sorted (the policy looks ahead by time_s)


class Observation(NamedTuple):
    """The controller's input every period (immutable; see :class:`StageObs` for why a ``NamedTuple``)."""

    time_s: float  # time since the start of the run
    period_s: float  # length of the period the counters cover (0 for the start observation)
    arrivals: int  # requests that arrived at the pipeline during the period
    stages: tuple[StageObs, ...]
    oracle: OracleView | None = None

    @property
    def levels(self) -> Levels:
        """The levels in effect."""
        return tuple(s.level for s in self.stages)

    @property
    def arrival_rate_hz(self) -> float | None:
        """Pipeline arrival rate over the period, ``None`` for the start observation."""
        return self.arrivals / self.period_s if self.period_s > 0 else None


@dataclass(frozen=True)
class PipelineCurves:
    """What a policy may know before the run: the profile's curves for this placement.

    ``latency_s[k][l]`` is the mean service time of stage ``k`` at level ``l`` on the device it is placed
    on (device speed applied, no environment slowdown); ``latency_p95_s`` likewise the 95th percentile.
    ``hop_s[k]`` is the fixed transfer time from stage ``k`` to ``k + 1`` (transmission + propagation).
    ``physics[k]`` is the device physics of stage ``k``'s node (``None``: no physics; an empty tuple: no
    stage has any); ``latency_s`` is then the service time at the node's top frequency, no tenant.
    """

    ratios: tuple[float, ...]
    latency_s: tuple[tuple[float, ...], ...]
    latency_p95_s: tuple[tuple[float, ...], ...]
    hop_s: tuple[float, ...]
    switch_s: float
    slo_s: float
    accuracy: AccuracyCurve | None
    stage_names: tuple[str, ...] = ()
    physics: tuple[DevicePhysics | None, ...] = ()  # per stage: its node's physics (empty: none known)

    @property
    def n_stages(self) -> int:
        """Number of pipeline stages."""
        return len(self.latency_s)

    @property
    def n_levels(self) -> int:
        """Number of rungs on the ladder."""
        return len(self.ratios)

    def physics_of(self, stage: int) -> DevicePhysics | None:
        """The physics of stage ``stage``'s node, ``None`` when unknown."""
        return self.physics[stage] if stage < len(self.physics) else None

    def accuracy_of(self, levels: Sequence[int]) -> float | None:
        """Estimated accuracy of a level vector, ``None`` when the profile has no accuracy curve."""
        return self.accuracy.of(levels) if self.accuracy is not None else None


@runtime_checkable
class Policy(Protocol):
    """A controller policy.  See the module docstring for the call protocol."""

    def decide(self, observation: Observation) -> Levels:
        """Return the level (index into the ladder) for every stage."""
        ...


def wants_oracle(policy: object) -> bool:
    """Whether ``policy`` declares ``wants_oracle = True`` (absent means ``False``; anything but a bool is an
    error, because a truthy string or array would silently change what the backend hands it)."""
    value = getattr(policy, "wants_oracle", False)
    if not isinstance(value, bool):
        raise PolicyError(f"{type(policy).__name__}.wants_oracle = {value!r}: must be True or False")
    return value
