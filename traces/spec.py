"""What a scenario's ``[arrivals]`` table can say: one frozen dataclass per ``kind``.

Each class is validated by :func:`edgeprune.config.build` (bounds in ``spec_field``, cross-field rules in
``check``), so a scenario file gets one-line errors naming the key and the closest valid name.  The classes
only *describe* a workload; :func:`traces.generators.generate` draws arrival times from them.

Design choices (documented here because the simulator's results depend on them):

* ``mmpp``: each visit to state *i* lasts an exponential time with mean ``mean_dwell_s[i]``; the next
  state is the following one, cyclically (``next_state = "cyclic"``: 0 → 1 → … → K-1 → 0, the classic
  on/off or low/medium/high cycle), or uniformly one of the *other* states (``"uniform"``), or drawn from
  row *i* of an explicit ``transition`` matrix (zero diagonal, irreducible), which then replaces
  ``next_state``.
* ``camera-trap``: motion triggers form a Poisson process; each trigger yields a burst of frames
  ``frame_interval_s`` apart (plus optional uniform jitter per gap).  The burst size is ``1 + Geometric``
  (``"geometric"``: P(S = k) = p (1 - p)^(k-1), mean ``burst_size_mean``), ``1 + Poisson(mean - 1)``
  (``"poisson"``) or exactly ``burst_size_mean`` (``"fixed"``, like a camera set to N pictures per
  trigger: the MICA Camtrap DP sequences are mostly 10 frames); any draw above ``burst_size_max`` is
  clipped to it, so the realised mean is :meth:`CameraTrapArrivals.mean_burst_size`.  Bursts of close
  triggers may overlap (no dead time).  With ``trigger_modulation`` the triggers are themselves an MMPP
  (hidden states with relative rates ``trigger_modulation``, exponential visits of ``trigger_mean_dwell_s``,
  cyclic or ``trigger_transition`` jumps), scaled so that the long-run trigger rate is still
  ``trigger_rate_hz`` (change it alone to get the same clustering at another rate), starting in the busiest
  state (a recording starts with a trigger): triggers in clusters, as in deployments separated by months or
  user sessions separated by idle minutes.
* ``schedule``: a piecewise-constant rate (change points ``times_s`` / ``rates_hz``, optionally repeating
  every ``repeat_s``) and/or a diurnal cosine ``1 + amplitude·cos(2π (t - peak_s) / period_s)`` multiplying
  it (or multiplying ``mean_rate_hz``); drawn exactly (Poisson per piece, then thinning for the cosine).
* ``replay``: a recorded trace, windowed to ``[start_s, end_s)`` (trace seconds after its first event),
  shifted so the window starts at 0, divided by ``speedup`` (2 = twice as fast, half the gaps) and
  optionally looped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
from scipy import special

from edgeprune.config import Ctx, build, spec_field
from edgeprune.errors import TraceError
from traces.timeparse import check_timezone

__all__ = [
    "KINDS",
    "ArrivalSpec",
    "CameraTrapArrivals",
    "MmppArrivals",
    "PoissonArrivals",
    "RateScheduleArrivals",
    "ReplayArrivals",
    "validate",
]

Problems = list[tuple[str, object, str]]


@dataclass(frozen=True)
class PoissonArrivals:
    """Homogeneous Poisson arrivals: independent exponential gaps with mean ``1 / rate_hz``."""

    rate_hz: float = spec_field(gt=0, doc="mean arrival rate, requests per second")
    kind: Literal["poisson"] = spec_field(default="poisson", doc="'poisson'")

    def mean_rate_hz(self) -> float:
        """The long-run arrival rate (requests per second)."""
        return self.rate_hz


@dataclass(frozen=True)
class MmppArrivals:
    """A Markov-modulated Poisson process: Poisson at ``rates_hz[i]`` while a hidden state is ``i``."""

    rates_hz: tuple[float, ...] = spec_field(ge=0, doc="arrival rate in each state, requests per second (2+ states)")
    mean_dwell_s: tuple[float, ...] = spec_field(gt=0, doc="mean time per visit to each state (exponential), s")
    start_state: int = spec_field(default=0, ge=0, doc="state at time 0 (index into rates_hz)")
    next_state: Literal["cyclic", "uniform"] = spec_field(
        default="cyclic", doc="'cyclic': i -> i+1 mod K; 'uniform': any other state with equal probability"
    )
    transition: tuple[tuple[float, ...], ...] | None = spec_field(
        default=None, doc="optional K x K jump matrix (rows sum to 1, zero diagonal, irreducible); replaces next_state"
    )
    kind: Literal["mmpp"] = spec_field(default="mmpp", doc="'mmpp'")

    def check(self) -> Problems:
        """Cross-field rules: matching lengths, 2+ states, a valid start state and jump matrix."""
        k = len(self.rates_hz)
        if k < 2:
            return [("rates_hz", list(self.rates_hz), "an MMPP needs 2 or more states")]
        if len(self.mean_dwell_s) != k:
            return [("mean_dwell_s", list(self.mean_dwell_s), f"needs one value per state ({k})")]
        if self.start_state >= k:
            return [("start_state", self.start_state, f"must be < the number of states ({k})")]
        if not any(r > 0 for r in self.rates_hz):
            return [("rates_hz", list(self.rates_hz), "at least one state needs a positive rate")]
        if self.transition is not None:
            return _check_transition(self.transition, k)
        return []

    def jump_matrix(self) -> np.ndarray:
        """The K x K probabilities of the next state given the current one."""
        k = len(self.rates_hz)
        if self.transition is not None:
            return np.asarray(self.transition, dtype=np.float64)
        if self.next_state == "cyclic":
            return np.roll(np.eye(k), 1, axis=1)
        return (np.ones((k, k)) - np.eye(k)) / (k - 1)

    def stationary(self) -> np.ndarray:
        """Long-run fraction of *time* spent in each state: jump-chain stationary law x mean dwell, normalised."""
        p = self.jump_matrix()
        k = p.shape[0]
        a = np.vstack([p.T - np.eye(k), np.ones(k)])
        b = np.concatenate([np.zeros(k), [1.0]])
        visits = np.linalg.lstsq(a, b, rcond=None)[0]
        time = visits * np.asarray(self.mean_dwell_s)
        return time / time.sum()

    def mean_rate_hz(self) -> float:
        """The long-run arrival rate: the time-stationary average of ``rates_hz``."""
        return float(self.stationary() @ np.asarray(self.rates_hz))


def _check_transition(matrix: tuple[tuple[float, ...], ...], k: int) -> Problems:
    p = np.asarray([list(row) for row in matrix], dtype=object)
    if p.shape != (k, k):
        return [("transition", [list(r) for r in matrix], f"must be {k} rows of {k} numbers")]
    m = p.astype(np.float64)
    if (m < 0).any() or not np.allclose(m.sum(axis=1), 1.0, atol=1e-9):
        return [("transition", [list(r) for r in matrix], "rows must be non-negative and sum to 1")]
    if np.diag(m).any():
        return [("transition", [list(r) for r in matrix], "the diagonal must be 0 (a dwell already is a stay)")]
    reach = np.linalg.matrix_power(np.eye(k) + (m > 0), k) > 0
    if not reach.all():
        return [("transition", [list(r) for r in matrix], "every state must be reachable from every other")]
    return []


@dataclass(frozen=True)
class CameraTrapArrivals:
    """Motion-triggered bursts: Poisson triggers, each a burst of frames ``frame_interval_s`` apart."""

    trigger_rate_hz: float = spec_field(gt=0, doc="long-run mean rate of motion triggers (bursts), per second")
    burst_size_mean: float = spec_field(ge=1, doc="mean frames per trigger before clipping at burst_size_max")
    burst_size_max: int = spec_field(ge=1, doc="most frames per trigger (larger draws are clipped)")
    frame_interval_s: float = spec_field(ge=0, doc="time between frames of one burst, s")
    burst_size_dist: Literal["geometric", "poisson", "fixed"] = spec_field(
        default="geometric", doc="burst size law: 1 + geometric, 1 + Poisson(mean - 1), or fixed = mean"
    )
    frame_jitter_s: float = spec_field(default=0.0, ge=0, doc="each frame gap gets + uniform(0, jitter) s")
    trigger_modulation: tuple[float, ...] = spec_field(
        default=(),
        ge=0,
        doc="relative trigger rate in each hidden state (mean scaled to trigger_rate_hz); [] = Poisson",
    )
    trigger_mean_dwell_s: tuple[float, ...] = spec_field(
        default=(), gt=0, doc="mean time per visit to each trigger state (exponential), s; one per trigger_modulation"
    )
    trigger_transition: tuple[tuple[float, ...], ...] | None = spec_field(
        default=None, doc="optional K x K jump matrix of the trigger states (default cyclic: 0 -> 1 -> ... -> 0)"
    )
    kind: Literal["camera-trap"] = spec_field(default="camera-trap", doc="'camera-trap'")

    def check(self) -> Problems:
        """The cap must allow the mean; a fixed burst size must be a whole number; a valid trigger modulation."""
        if self.burst_size_max < self.burst_size_mean:
            return [("burst_size_max", self.burst_size_max, f"must be >= burst_size_mean ({self.burst_size_mean})")]
        if self.burst_size_dist == "fixed" and not float(self.burst_size_mean).is_integer():
            return [("burst_size_mean", self.burst_size_mean, "must be a whole number with burst_size_dist = 'fixed'")]
        if not self.trigger_modulation:
            if self.trigger_mean_dwell_s or self.trigger_transition is not None:
                return [("trigger_modulation", [], "trigger_mean_dwell_s / trigger_transition need trigger_modulation")]
            return []
        names = {"rates_hz": "trigger_modulation", "mean_dwell_s": "trigger_mean_dwell_s"}
        names["transition"] = "trigger_transition"
        problems = self._trigger_mmpp(1.0).check()
        return [(names.get(key, key), value, why) for key, value, why in problems]

    def _trigger_mmpp(self, scale: float) -> MmppArrivals:
        """The trigger states as an MMPP with rates ``scale`` x ``trigger_modulation``, starting in the busiest."""
        weights = self.trigger_modulation
        return MmppArrivals(
            rates_hz=tuple(scale * w for w in weights),
            mean_dwell_s=self.trigger_mean_dwell_s,
            start_state=int(np.argmax(weights)),
            transition=self.trigger_transition,
        )

    def trigger_process(self) -> MmppArrivals | None:
        """The MMPP of the triggers (long-run mean ``trigger_rate_hz``), or None for Poisson triggers."""
        if not self.trigger_modulation:
            return None
        relative = self._trigger_mmpp(1.0).mean_rate_hz()
        return self._trigger_mmpp(self.trigger_rate_hz / relative)

    def mean_burst_size(self) -> float:
        """The expected frames per trigger after clipping: sum over k < max of P(size > k)."""
        m, cap = self.burst_size_mean, self.burst_size_max
        if self.burst_size_dist == "fixed":
            return float(m)
        if self.burst_size_dist == "geometric":
            q = 1.0 - 1.0 / m
            return float(sum(q**k for k in range(cap)))
        if m == 1:
            return 1.0
        # Poisson(m - 1) survival P(X > k) via scipy.special (scipy.stats costs ~1 s to import)
        return 1.0 + float(np.sum(special.pdtrc(np.arange(cap - 1), m - 1.0)))

    def mean_rate_hz(self) -> float:
        """The long-run frame rate: triggers per second x mean frames per trigger."""
        return self.trigger_rate_hz * self.mean_burst_size()


@dataclass(frozen=True)
class RateScheduleArrivals:
    """A time-varying Poisson process: piecewise-constant change points and/or a diurnal cosine."""

    times_s: tuple[float, ...] = spec_field(
        default=(), ge=0, doc="change points, s: rates_hz[i] holds from times_s[i]; starts at 0, increasing"
    )
    rates_hz: tuple[float, ...] = spec_field(default=(), ge=0, doc="rate after each change point, per second")
    repeat_s: float | None = spec_field(default=None, gt=0, doc="repeat the change-point schedule every repeat_s")
    mean_rate_hz: float | None = spec_field(default=None, gt=0, doc="base rate when no change points are given")
    amplitude: float = spec_field(default=0.0, ge=0, le=1, doc="relative swing of the diurnal cosine (0 = none)")
    period_s: float = spec_field(default=86400.0, gt=0, doc="period of the cosine, s (a day by default)")
    peak_s: float = spec_field(default=0.0, doc="time at which the cosine peaks, s (mod period_s)")
    kind: Literal["schedule"] = spec_field(default="schedule", doc="'schedule'")

    def check(self) -> Problems:
        """Exactly one base (change points or mean rate), well-formed change points."""
        if (self.mean_rate_hz is None) == (not self.rates_hz):
            return [("rates_hz", list(self.rates_hz), "give either change points (times_s, rates_hz) or mean_rate_hz")]
        if self.mean_rate_hz is not None:
            return [("times_s", list(self.times_s), "change points need rates_hz")] if self.times_s else []
        if len(self.times_s) != len(self.rates_hz):
            return [("times_s", list(self.times_s), f"needs one time per rate ({len(self.rates_hz)})")]
        if self.times_s[0] != 0:
            return [("times_s", list(self.times_s), "the first change point must be 0")]
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            return [("times_s", list(self.times_s), "must be strictly increasing")]
        if self.repeat_s is not None and self.repeat_s <= self.times_s[-1]:
            return [("repeat_s", self.repeat_s, f"must be > the last change point ({self.times_s[-1]})")]
        if not any(r > 0 for r in self.rates_hz):
            return [("rates_hz", list(self.rates_hz), "at least one rate must be positive")]
        return []

    def base_rate_hz(self, t_s: np.ndarray) -> np.ndarray:
        """The piecewise-constant (or constant) part of the rate at times ``t_s``."""
        t = np.asarray(t_s, dtype=np.float64)
        if self.mean_rate_hz is not None:
            return np.full(t.shape, self.mean_rate_hz)
        local = np.mod(t, self.repeat_s) if self.repeat_s is not None else t
        idx = np.searchsorted(np.asarray(self.times_s), local, side="right") - 1
        return np.asarray(self.rates_hz)[np.clip(idx, 0, None)]

    def modulation(self, t_s: np.ndarray) -> np.ndarray:
        """The diurnal factor ``1 + amplitude cos(2π (t - peak_s) / period_s)`` at times ``t_s`` (mean 1)."""
        t = np.asarray(t_s, dtype=np.float64)
        return 1.0 + self.amplitude * np.cos(2.0 * math.pi * (t - self.peak_s) / self.period_s)

    def rate_hz_at(self, t_s: np.ndarray) -> np.ndarray:
        """The instantaneous arrival rate at times ``t_s``, requests per second."""
        return self.base_rate_hz(t_s) * self.modulation(t_s)


@dataclass(frozen=True)
class ReplayArrivals:
    """Arrivals replayed from a recorded trace file (see :func:`traces.replay.load_trace`)."""

    path: str = spec_field(doc="trace file (or Camtrap DP folder / datapackage.json), relative to the scenario file")
    format: Literal["auto", "csv", "jsonl", "parquet", "camtrap-dp", "coco-camera-traps", "wildlife-insights"] = (
        spec_field(
            default="auto",
            doc="file format; 'auto' from the extension and the header (Camtrap DP, Wildlife Insights, COCO)",
        )
    )
    column: str | tuple[str, ...] | None = spec_field(
        default=None, doc="timestamp column, or [date, time] columns joined (default: the format's, else detected)"
    )
    unit: Literal["auto", "iso8601", "s", "ms"] = spec_field(
        default="auto", doc="time unit; 'auto': ISO 8601 for text, ms for *_ms names or epoch-ms values, else s"
    )
    timezone: str | None = spec_field(
        default=None, doc="zone of times written without an offset: '+02:00' or an IANA name (default UTC)"
    )
    deployment: str | None = spec_field(default=None, doc="keep only this deployment (deploymentID / deployment_id)")
    location: str | None = spec_field(
        default=None, doc="keep only this location (locationID / locationName / location)"
    )
    camera: str | None = spec_field(default=None, doc="keep only this camera (cameraID / camera_id)")
    outliers: Literal["keep", "drop"] = spec_field(
        default="keep", doc="clock-reset outliers (isolated far-away clusters) are always reported; 'drop' drops them"
    )
    min_kept_fraction: float = spec_field(
        default=0.01, ge=0, le=1, doc="refuse a window keeping fewer of the rows than this (0 = allow any)"
    )
    start_s: float = spec_field(default=0.0, ge=0, doc="window start, trace seconds after its first event")
    end_s: float | None = spec_field(default=None, gt=0, doc="window end (exclusive), trace seconds after first event")
    speedup: float = spec_field(default=1.0, gt=0, doc="replay speed: 2 = twice as fast (gaps divided by 2)")
    loop: bool = spec_field(default=False, doc="repeat the (windowed) trace to fill duration_s / n_requests")
    kind: Literal["replay"] = spec_field(default="replay", doc="'replay'")

    def check(self) -> Problems:
        """The window must not be empty; the time zone must be a UTC offset or a known zone name."""
        if self.end_s is not None and self.end_s <= self.start_s:
            return [("end_s", self.end_s, f"must be > start_s ({self.start_s})")]
        if self.column is not None and not isinstance(self.column, str) and not self.column:
            return [("column", [], "name one column or a [date, time] pair")]
        if self.timezone is not None:
            try:
                check_timezone(self.timezone)
            except TraceError:
                return [
                    ("timezone", self.timezone, "not a UTC offset ('+02:00') or IANA zone name ('Europe/Brussels')")
                ]
        return []


ArrivalSpec: TypeAlias = PoissonArrivals | MmppArrivals | CameraTrapArrivals | RateScheduleArrivals | ReplayArrivals

KINDS: dict[str, type[Any]] = {
    "poisson": PoissonArrivals,
    "mmpp": MmppArrivals,
    "camera-trap": CameraTrapArrivals,
    "schedule": RateScheduleArrivals,
    "replay": ReplayArrivals,
}


def validate(spec: ArrivalSpec) -> None:
    """Re-check a spec built in Python (not from TOML) with the same rules, raising ``ConfigError``."""
    table = {k: v for k, v in _as_table(spec) if v is not None}
    build(type(spec), table, Ctx(f"<{type(spec).__name__}>", "arrivals"))


def _as_table(spec: ArrivalSpec) -> Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(spec):
        yield f.name, _to_toml(getattr(spec, f.name))


def _to_toml(value: Any) -> Any:
    return [_to_toml(v) for v in value] if isinstance(value, tuple) else value
