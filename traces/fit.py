"""Fitting the project's synthetic arrival models to a recorded trace, so it can be regenerated at will.

* :func:`fit_mmpp`: a K-state (2 or 3) Markov-modulated Poisson process by **maximum likelihood** on the
  exact continuous-time likelihood of the inter-arrival gaps,

  ``L = π₀ · Π_i [exp((Q − Λ) g_i) Λ] · 1``,

  with ``Q`` the generator of the hidden chain, ``Λ = diag(rates)`` and ``π₀`` the state law seen by an
  arrival.  ``exp((Q − Λ) g)`` is computed for every gap at once from one eigendecomposition, and the
  product of the n matrices by pairwise (tree) reduction with rescaling, so one evaluation of a 30,000-event
  likelihood is a few milliseconds of numpy; :func:`scipy.optimize.minimize` (L-BFGS-B on log-parameters,
  several starts) does the rest.  The states are returned by increasing rate.
* :func:`fit_camera_trap`: motion-triggered bursts (the generator lets bursts overlap; a trigger that
  falls inside another burst, or within ``burst_gap_s`` of its end, is merged into it, so the fit is
  meant for traces where that is rare: triggers minutes apart, bursts seconds long, as camera traps are).
  Frames are grouped into bursts by their sequence id
  when the trace has one (Camtrap DP ``sequenceID``, COCO ``seq_id``), else by gaps over ``burst_gap_s``
  (default: 10x the median positive gap, an order of magnitude over the typical gap, which lies inside
  bursts when bursts average two frames or more); the trigger rate is bursts per second of span, the frame
  interval the median gap inside bursts, and the burst-size law the better (by likelihood) of ``fixed``,
  1 + geometric and 1 + Poisson.  The triggers are Poisson, or (``triggers = "mmpp"``, or ``"auto"`` when
  the Bayesian information criterion prefers it) a 2-state MMPP fitted to the bursts' starts, written as
  ``trigger_modulation`` relative to the mean rate.  Clustered triggers are what make the shipped
  recordings bursty (``bench/bench_traces_fit.py``): the months between the MICA deployments, the idle
  minutes between the Azure trace's sessions of requests.
* :func:`compare_generated`: the recording's inter-arrival CV and peak per minute beside those of traces
  generated from a fitted spec over the recorded span, one per seed.

Both return the scenario's :class:`~traces.spec.MmppArrivals` / :class:`~traces.spec.CameraTrapArrivals`,
which :func:`arrivals_toml` writes as an ``[arrivals]`` TOML block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tomli_w
from scipy import optimize, special

from edgeprune.errors import TraceError
from traces.generators import generate
from traces.spec import ArrivalSpec, CameraTrapArrivals, MmppArrivals, _as_table
from traces.stats import cv_of_gaps, peak_per_minute

BurstLaw = Literal["geometric", "poisson", "fixed"]
TriggerLaw = Literal["auto", "poisson", "mmpp"]

MIN_TRIGGERS = 20  # bursts needed to fit modulated triggers (4 parameters); fewer stay Poisson under "auto"

__all__ = [
    "MmppFit",
    "Reproduction",
    "arrivals_toml",
    "compare_generated",
    "fit_camera_trap",
    "fit_mmpp",
    "mmpp_log_likelihood",
]


@dataclass(frozen=True)
class MmppFit:
    """A fitted MMPP and how well it fits: log-likelihood per event and the number of events used."""

    spec: MmppArrivals
    log_likelihood: float
    n_events: int


def mmpp_log_likelihood(gaps_s: np.ndarray, rates_hz: np.ndarray, generator: np.ndarray) -> float:
    """Log-likelihood of inter-arrival ``gaps_s`` under an MMPP (rates, K x K generator), from an arrival."""
    lam = np.asarray(rates_hz, dtype=np.float64)
    q = np.asarray(generator, dtype=np.float64)
    m = q - np.diag(lam)
    eigval, eigvec = np.linalg.eig(m)
    weights = np.linalg.inv(eigvec) * lam[None, :]
    if np.abs(eigval.imag).max() < 1e-12 * max(1.0, np.abs(eigval.real).max()):
        eigval, eigvec, weights = eigval.real, eigvec.real, weights.real
    g = np.asarray(gaps_s, dtype=np.float64)
    # exp(M g) Λ for every gap, laid out (K, K, n): sum_k V[:, k] exp(d_k g) (V⁻¹ Λ)[k, :]
    mats = sum(
        np.outer(eigvec[:, k], weights[k, :])[:, :, None] * np.exp(eigval[k] * g)[None, None, :]
        for k in range(lam.size)
    )
    mats = np.asarray(mats).real if np.iscomplexobj(mats) else np.asarray(mats)
    log_scale = 0.0
    while mats.shape[2] > 1:
        if mats.shape[2] % 2:
            mats = np.concatenate([mats, np.eye(lam.size)[:, :, None]], axis=2)
        mats = np.einsum("ikn,kjn->ijn", mats[:, :, 0::2], mats[:, :, 1::2])
        scale = np.abs(mats).max(axis=(0, 1))
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            return -math.inf
        mats /= scale[None, None, :]
        log_scale += float(np.log(scale).sum())
    start = _arrival_law(q, lam)
    total = float(start @ mats[:, :, 0] @ np.ones(lam.size))
    return math.log(total) + log_scale if total > 0 else -math.inf


def _arrival_law(q: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """The hidden state seen by an arrival: the stationary law weighted by the rates."""
    k = lam.size
    a = np.vstack([q.T, np.ones(k)])
    pi = np.linalg.lstsq(a, np.concatenate([np.zeros(k), [1.0]]), rcond=None)[0].clip(min=0)
    w = pi * lam
    return w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)


def _unpack(theta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rates and generator from log-parameters (clipped so that no step of the optimiser overflows)."""
    theta = np.clip(theta, -40.0, 40.0)
    rates = np.exp(theta[:k])
    q = np.zeros((k, k))
    q[~np.eye(k, dtype=bool)] = np.exp(theta[k:])
    q[np.diag_indices(k)] = -q.sum(axis=1)
    return rates, q


def fit_mmpp(times_s: np.ndarray, n_states: int = 2, *, n_starts: int = 4, min_events: int = 50) -> MmppFit:
    """Maximum-likelihood K-state MMPP for sorted arrival ``times_s`` (states by increasing rate)."""
    if n_states not in (2, 3):
        raise TraceError(f"fit: n_states = {n_states}: an MMPP fit supports 2 or 3 states")
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < min_events:
        raise TraceError(f"fit: {t.size} events are too few to fit an MMPP (need {min_events} or more)")
    gaps = np.diff(t)
    span = float(t[-1] - t[0])
    if span <= 0:
        raise TraceError("fit: every event is at the same time; nothing to fit")

    def nll(theta: np.ndarray) -> float:
        rates, q = _unpack(theta, n_states)
        with np.errstate(all="ignore"):
            try:
                value = -mmpp_log_likelihood(gaps, rates, q)
            except np.linalg.LinAlgError:
                return 1e300
        return value if math.isfinite(value) else 1e300

    best: optimize.OptimizeResult | None = None
    for theta0 in _starts(t, n_states, n_starts):
        res = optimize.minimize(nll, theta0, method="L-BFGS-B", options={"maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    rates, q = _unpack(best.x, n_states)
    return MmppFit(_as_spec(rates, q), -float(best.fun), int(t.size))


def _starts(t: np.ndarray, k: int, n: int) -> list[np.ndarray]:
    """Starting points: rates at spread quantiles of windowed counts, dwell times a fraction of the span."""
    span = float(t[-1] - t[0])
    window = max(span / 200.0, 10.0 * span / t.size)
    counts = np.histogram(t, bins=max(2, int(span / window)))[0] / window
    mean_rate = t.size / span
    starts = []
    for i in range(n):
        spread = (0.05, 0.95) if i % 2 == 0 else (0.2, 0.8)
        qs = np.quantile(counts, np.linspace(spread[0], spread[1], k))
        rates = np.maximum(qs, mean_rate * 0.01 * (1 + np.arange(k)))
        dwell = window * (2.0 ** (i // 2 + 1))
        off = np.full(k * (k - 1), 1.0 / (dwell * (k - 1)))
        starts.append(np.log(np.concatenate([rates, off])))
    return starts


def _as_spec(rates: np.ndarray, q: np.ndarray) -> MmppArrivals:
    """The MMPP spec: states sorted by rate, dwell = -1 / q_ii, jump matrix from the generator (K = 3)."""
    order = np.argsort(rates)
    rates, q = rates[order], q[np.ix_(order, order)]
    exit_rate = -np.diag(q)
    dwell = 1.0 / exit_rate
    k = rates.size
    transition = None
    if k > 2:
        jump = q / exit_rate[:, None]
        np.fill_diagonal(jump, 0.0)
        jump /= jump.sum(axis=1, keepdims=True)
        transition = tuple(tuple(round(float(v), 6) for v in row) for row in jump)
    return MmppArrivals(
        rates_hz=tuple(_sig(v) for v in rates),
        mean_dwell_s=tuple(_sig(v) for v in dwell),
        transition=transition,
    )


def _sig(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (a readable TOML block, no false precision)."""
    return float(f"{float(value):.{digits}g}")


def fit_camera_trap(
    times_s: np.ndarray,
    *,
    sequences: Sequence[str] | np.ndarray | None = None,
    burst_gap_s: float | None = None,
    triggers: TriggerLaw = "auto",
) -> CameraTrapArrivals:
    """Camera-trap model (trigger rate and law, burst-size law, frame interval) for sorted ``times_s``."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < 2 or t[-1] <= t[0]:
        raise TraceError(f"fit: {t.size} events over {float(t[-1] - t[0]) if t.size else 0:g} s: nothing to fit")
    if triggers not in ("auto", "poisson", "mmpp"):
        raise TraceError(f"fit: triggers = {triggers!r}: not one of 'auto', 'poisson', 'mmpp'")
    sizes, intra, starts = _bursts(t, sequences, burst_gap_s)
    span = float(t[-1] - t[0])
    dist, mean = _burst_law(sizes)
    interval, jitter = _frame_interval(intra)
    cap = int(mean) if dist == "fixed" else int(sizes.max())
    n_triggers = t.size / mean if dist == "fixed" else sizes.size  # merged fixed bursts count as several
    modulation = _trigger_modulation(starts, triggers)
    return CameraTrapArrivals(
        trigger_rate_hz=_sig(n_triggers / span),
        burst_size_mean=float(round(mean)) if dist == "fixed" else _sig(_unclipped_mean(dist, mean, cap)),
        burst_size_max=cap,
        frame_interval_s=_sig(interval),
        burst_size_dist=dist,
        frame_jitter_s=_sig(jitter),
        trigger_modulation=modulation.rates_hz if modulation else (),
        trigger_mean_dwell_s=modulation.mean_dwell_s if modulation else (),
    )


def _trigger_modulation(starts: np.ndarray, triggers: TriggerLaw) -> MmppArrivals | None:
    """A 2-state MMPP of the burst starts (rates relative to their mean), or None for Poisson triggers.

    ``auto`` keeps the MMPP when the Bayesian information criterion prefers it to a Poisson process
    (``2 Δ log-likelihood > 3 ln n``: three more parameters), i.e. when triggers come in clusters.
    """
    if triggers == "poisson" or (triggers == "auto" and starts.size < MIN_TRIGGERS):
        return None
    if starts.size < MIN_TRIGGERS:
        raise TraceError(
            f"fit: {starts.size} bursts are too few to fit modulated triggers (need {MIN_TRIGGERS} or more); "
            "use triggers = 'poisson'"
        )
    fitted = fit_mmpp(starts, 2, min_events=MIN_TRIGGERS)
    gaps = np.diff(starts)
    rate = gaps.size / float(gaps.sum())
    poisson_ll = gaps.size * math.log(rate) - rate * float(gaps.sum())
    if triggers == "auto" and 2.0 * (fitted.log_likelihood - poisson_ll) <= 3.0 * math.log(gaps.size):
        return None
    spec = fitted.spec
    mean = spec.mean_rate_hz()
    return MmppArrivals(tuple(_sig(r / mean) for r in spec.rates_hz), spec.mean_dwell_s)


def _unclipped_mean(dist: BurstLaw, observed: float, cap: int) -> float:
    """The ``burst_size_mean`` whose law, clipped at ``cap``, has the observed mean (clipping lowers it)."""

    def realised(m: float) -> float:
        law = CameraTrapArrivals(1.0, m, cap, 0.0, burst_size_dist=dist)
        return law.mean_burst_size() - observed

    if observed >= cap or realised(observed) >= 0:
        return observed
    high = float(cap)
    if realised(high) < 0:
        return high
    return float(optimize.brentq(realised, observed, high, xtol=1e-9))


def default_burst_gap_s(times_s: np.ndarray) -> float:
    """10x the median positive gap: a gap an order of magnitude over the typical one separates bursts."""
    gaps = np.diff(np.asarray(times_s, dtype=np.float64))
    positive = gaps[gaps > 0]
    return 10.0 * float(np.median(positive)) if positive.size else 1.0


def _bursts(
    t: np.ndarray, sequences: Sequence[str] | np.ndarray | None, burst_gap_s: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames per burst, the gaps inside bursts and the burst starts, from sequence ids or a gap threshold."""
    gaps = np.diff(t)
    if sequences is not None and burst_gap_s is None:
        seq = np.asarray(sequences)
        new = np.concatenate([[True], seq[1:] != seq[:-1]])
    else:
        threshold = default_burst_gap_s(t) if burst_gap_s is None else burst_gap_s
        new = np.concatenate([[True], gaps > threshold])
    sizes = np.diff(np.flatnonzero(np.concatenate([new, [True]])))
    return sizes.astype(np.int64), gaps[~new[1:]], t[new]


def _burst_law(sizes: np.ndarray) -> tuple[BurstLaw, float]:
    """The burst-size law (``fixed``, ``geometric``, ``poisson``) with the higher likelihood, and its mean."""
    mean = float(sizes.mean())
    values, counts = np.unique(sizes, return_counts=True)
    if counts.max() >= 0.9 * sizes.size:  # a camera set to N pictures per trigger (a few merged bursts aside)
        return "fixed", float(values[np.argmax(counts)])
    extra = sizes - 1
    p = 1.0 / mean
    ll_geometric = float(np.sum(np.log(p) + extra * np.log1p(-p)))
    mu = mean - 1.0
    ll_poisson = float(np.sum(extra * np.log(mu) - mu - special.gammaln(extra + 1))) if mu > 0 else -math.inf
    law: BurstLaw = "geometric" if ll_geometric >= ll_poisson else "poisson"
    return law, mean


def _frame_interval(intra: np.ndarray) -> tuple[float, float]:
    """The gap between frames of a burst and its uniform jitter (0 when the gaps are all alike)."""
    if intra.size == 0:
        return 0.0, 0.0
    low, mid, high = (float(v) for v in np.percentile(intra, [1, 50, 99]))
    if high - low <= 0.01 * max(mid, 1e-9):
        return mid, 0.0
    q1, q3 = (float(v) for v in np.percentile(intra, [25, 75]))
    iqr = q3 - q1  # uniform jitter U(0, J) on top of I: median I + J/2, IQR J/2 (robust to merged bursts)
    return max(mid - iqr, 0.0), 2.0 * iqr


@dataclass(frozen=True)
class Reproduction:
    """A recorded trace's burstiness beside that of traces generated from a model over the recorded span.

    CV of the inter-arrival gaps and peak arrivals per minute (:func:`~traces.stats.peak_per_minute`, the
    same sliding 60 s window for both), one generated trace per seed.
    """

    recorded_cv: float
    recorded_peak_per_min: int
    generated_cv: tuple[float, ...]
    generated_peak_per_min: tuple[int, ...]

    @property
    def median_cv(self) -> float:
        """Median CV of the generated traces."""
        return float(np.median(self.generated_cv))

    @property
    def median_peak_per_min(self) -> float:
        """Median peak per minute of the generated traces."""
        return float(np.median(self.generated_peak_per_min))

    def relative_errors(self) -> tuple[float, float]:
        """(median generated / recorded - 1) for the CV and for the peak per minute."""
        return (self.median_cv / self.recorded_cv - 1.0, self.median_peak_per_min / self.recorded_peak_per_min - 1.0)

    def describe(self) -> str:
        """One line: recorded vs median generated CV and peak per minute, with the relative differences."""
        cv_err, peak_err = self.relative_errors()
        return (
            f"recorded CV {self.recorded_cv:.3g}, peak {self.recorded_peak_per_min}/min; generated (median of "
            f"{len(self.generated_cv)} seeds over the recorded span) CV {self.median_cv:.3g} ({cv_err:+.0%}), "
            f"peak {self.median_peak_per_min:.0f}/min ({peak_err:+.0%})"
        )


def compare_generated(spec: ArrivalSpec, recorded_s: np.ndarray, seeds: Sequence[int]) -> Reproduction:
    """Generate ``spec`` over the span of sorted ``recorded_s`` once per seed and compare burstiness."""
    t = np.asarray(recorded_s, dtype=np.float64)
    span = float(t[-1] - t[0])
    runs = [generate(spec, np.random.default_rng(seed), duration_s=span) for seed in seeds]
    return Reproduction(
        recorded_cv=cv_of_gaps(t),
        recorded_peak_per_min=peak_per_minute(t),
        generated_cv=tuple(cv_of_gaps(run) for run in runs),
        generated_peak_per_min=tuple(peak_per_minute(run) for run in runs),
    )


def arrivals_toml(spec: ArrivalSpec, comment: str = "") -> str:
    """The ``[arrivals]`` TOML block of ``spec`` (keys left at their defaults are omitted)."""
    defaults = type(spec).__dataclass_fields__
    table = {}
    for key, value in _as_table(spec):
        field = defaults[key]
        if value is None or (key != "kind" and field.default is not None and value == _plain(field.default)):
            continue
        table[key] = value
    table = {"kind": table.pop("kind"), **table}
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + tomli_w.dumps({"arrivals": table})


def _plain(value: object) -> object:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
