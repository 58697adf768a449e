"""The contract checker: does a policy keep the controller contract?  (In the spirit of Gymnasium's env checker.)

It lives outside ``edgeprune.controller`` because it reads the clock (decision times) and patches it: the
policy package itself imports no clock (tests/test_import_rules.py).

:func:`check_policy` builds fresh policy objects and drives them with an observation sequence (a synthetic
one covering a start, a burst, a slowed stage, a lull and an idle pipeline, or yours), and raises
:class:`~edgeprune.errors.PolicyError` with a one-line message on the first violation:

* **answers**: the start observation (``period_s == 0``) is handled; every answer passes the one decision
  rule of every backend (``edgeprune.controller.decision.validate_levels``: one ``int`` per stage on the
  ladder ``0..n_levels-1``);
* **oracle**: ``wants_oracle``, when a policy has it, is a ``bool`` (the contract's
  :func:`~edgeprune.controller.contract.wants_oracle`), and such a policy is given oracle views;
* **determinism**: two fresh instances fed the same sequence answer the same levels;
* **no shared state**: an instance interleaved call by call with another one fed a *different* sequence
  answers exactly as when it ran alone (no globals, no class attributes mutated);
* **no clock**: with ``time.time`` / ``perf_counter`` / ``monotonic`` / ``process_time`` (and their ``_ns``
  forms) patched to raise, the answers are unchanged, and the policy's module does not import a clock
  function by name;
* **no global randomness**: Python's and NumPy's global random states are unchanged by the calls;
* **no mutation**: every observation (and an oracle view's arrival array) is unchanged after ``decide``.

It returns a :class:`CheckReport` with the decision time per call (median, p99, max, in µs, measured over
``timing_passes`` fresh runs of the sequence).  Usable from tests and for users' own policies::

    from edgeprune.checker import check_policy
    report = check_policy(lambda curves: MyPolicy(curves), curves)
    print(report)   # MyPolicy: 240 observations OK; decide median 12.3 µs, p99 30.1 µs, max 41.0 µs
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from edgeprune.controller.contract import (
    Levels,
    Observation,
    OracleView,
    PipelineCurves,
    Policy,
    StageObs,
    wants_oracle,
)
from edgeprune.controller.decision import validate_levels
from edgeprune.controller.registry import PolicySpec, make_policy
from edgeprune.errors import PolicyError

__all__ = ["CheckReport", "PolicyFactory", "check_policy", "synthetic_observations"]

PolicyFactory = Callable[[PipelineCurves], Policy]

_CLOCKS = (
    "time",
    "time_ns",
    "perf_counter",
    "perf_counter_ns",
    "monotonic",
    "monotonic_ns",
    "process_time",
    "process_time_ns",
)


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_policy` measured on a policy that passed."""

    policy: str
    n_observations: int
    distinct_vectors: int  # how many different level vectors it answered (1 for a static policy)
    median_us: float
    p99_us: float
    max_us: float

    def __str__(self) -> str:
        return (
            f"{self.policy}: {self.n_observations} observations OK, {self.distinct_vectors} distinct level vectors; "
            f"decide median {self.median_us:.1f} µs, p99 {self.p99_us:.1f} µs, max {self.max_us:.1f} µs"
        )


def check_policy(
    policy: PolicyFactory | PolicySpec,
    curves: PipelineCurves,
    observations: Sequence[Observation] | None = None,
    *,
    timing_passes: int = 3,
) -> CheckReport:
    """Check the contract on fresh instances (see the module docstring); raise PolicyError on a violation."""
    factory = _factory(policy)
    probe = factory(curves)
    name = type(probe).__name__
    wants = wants_oracle(probe)
    obs = list(observations) if observations is not None else synthetic_observations(curves, oracle=wants)
    if not obs or obs[0].period_s != 0:
        raise PolicyError(f"{name}: the observation sequence must begin with the start observation (period_s == 0)")
    if wants and any(o.oracle is None for o in obs):
        raise PolicyError(f"{name}: wants_oracle = True but the observations carry no OracleView")
    _check_imports(probe, name)
    rng_before = _global_rng_state()
    alone = _run(factory(curves), obs, curves, name)
    _compare(name, "a second fresh instance fed the same observations", alone, _run(factory(curves), obs, curves, name))
    other = synthetic_observations(curves, oracle=wants, seed=1, n=len(obs))
    _compare(
        name, "an instance interleaved with another instance", alone, _interleaved(factory, curves, obs, other, name)
    )
    with _clocks_forbidden():
        try:
            clockless = _run(factory(curves), obs, curves, name)
        except _ClockRead as exc:
            raise PolicyError(
                f"{name}: decide() read the clock (time.{exc.args[0]}); time reaches a policy as Observation.time_s"
            ) from None
    _compare(name, "a run with the clock unavailable", alone, clockless)
    if _global_rng_state() != rng_before:
        raise PolicyError(f"{name}: decide() used the global random generator; hold a seeded numpy Generator instead")
    times = [t for _ in range(timing_passes) for t in _timed(factory(curves), obs)]
    q = np.percentile(np.asarray(times), [50, 99])
    return CheckReport(
        policy=name,
        n_observations=len(obs),
        distinct_vectors=len(set(alone)),
        median_us=float(q[0]),
        p99_us=float(q[1]),
        max_us=max(times),
    )


def _factory(policy: PolicyFactory | PolicySpec) -> PolicyFactory:
    if isinstance(policy, PolicySpec):
        spec = policy
        return lambda curves: make_policy(spec, curves)
    if not callable(policy):
        raise PolicyError(f"check_policy: expected a factory (curves -> policy) or a PolicySpec, got {policy!r}")
    return policy


def _decide(pol: Policy, ob: Observation, step: int, curves: PipelineCurves, name: str) -> Levels:
    """One call, validated: the answer's shape and range, and the observation left untouched."""
    before = _fingerprint(ob)
    try:
        out = pol.decide(ob)
    except PolicyError:
        raise
    except _ClockRead:
        raise
    except Exception as exc:
        raise PolicyError(
            f"{name}: decide() raised {type(exc).__name__}: {exc} (observation {step}, t={ob.time_s:g}s)"
        ) from exc
    if _fingerprint(ob) != before:
        raise PolicyError(f"{name}: decide() mutated its observation (observation {step}, t={ob.time_s:g}s)")
    try:
        return validate_levels(out, curves.n_stages, curves.n_levels, policy=name, time_s=ob.time_s)
    except PolicyError as exc:
        raise PolicyError(f"{exc} (observation {step})") from None


def _run(pol: Policy, obs: Sequence[Observation], curves: PipelineCurves, name: str) -> list[Levels]:
    return [_decide(pol, ob, i, curves, name) for i, ob in enumerate(obs)]


def _interleaved(
    factory: PolicyFactory, curves: PipelineCurves, obs: Sequence[Observation], other: Sequence[Observation], name: str
) -> list[Levels]:
    a, b = factory(curves), factory(curves)
    out = []
    for i, ob in enumerate(obs):
        out.append(_decide(a, ob, i, curves, name))
        if i < len(other):
            _decide(b, other[i], i, curves, name)
    return out


def _compare(name: str, what: str, expected: list[Levels], got: list[Levels]) -> None:
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e != g:
            raise PolicyError(
                f"{name}: not deterministic: {what} answered {g} instead of {e} at observation {i} "
                "(hidden state: a global, a class attribute, the clock or an unseeded random source?)"
            )


def _timed(pol: Policy, obs: Sequence[Observation]) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for ob in obs:
        t0 = clock()
        pol.decide(ob)
        out.append((clock() - t0) / 1e3)
    return out


def _global_rng_state() -> tuple[object, ...]:
    legacy = np.random.get_state()
    return (random.getstate(), legacy[1].tobytes(), legacy[2])  # type: ignore[union-attr,index]


def _fingerprint(ob: Observation) -> tuple[object, ...]:
    view = ob.oracle
    oracle = None if view is None else (view.env_factor, view.arrivals_s.tobytes())
    return (ob.time_s, ob.period_s, ob.arrivals, ob.stages, oracle)


class _ClockRead(Exception):
    """Raised by the patched clock functions."""


@contextmanager
def _clocks_forbidden() -> Iterator[None]:
    saved = {n: getattr(time, n) for n in _CLOCKS}

    def forbid(fn_name: str) -> Callable[..., float]:
        def raiser(*_: object) -> float:
            raise _ClockRead(fn_name)

        return raiser

    try:
        for n in _CLOCKS:
            setattr(time, n, forbid(n))
        yield
    finally:
        for n, fn in saved.items():
            setattr(time, n, fn)


def _check_imports(pol: Policy, name: str) -> None:
    """A clock function imported by name (``from time import perf_counter``) escapes the patch: refuse it."""
    module = sys.modules.get(type(pol).__module__)
    if not isinstance(module, ModuleType):
        return
    clocks = {getattr(time, n) for n in _CLOCKS}
    for attr, value in vars(module).items():
        if any(value is c for c in clocks):
            raise PolicyError(f"{name}: its module imports the clock function {attr!r}; a policy must not read a clock")


def synthetic_observations(
    curves: PipelineCurves, *, n: int = 240, period_s: float = 1.0, seed: int = 0, oracle: bool = False
) -> list[Observation]:
    """A deterministic observation sequence exercising a policy: start, steady load, a burst, stage 1 slowed
    down then recovered, a lull and an idle stretch (queues and counters consistent with a FIFO tandem)."""
    rng = np.random.default_rng(seed)
    k_n = curves.n_stages
    cap_hz = 1.0 / max(max(row[0] for row in curves.latency_s), 1e-9)
    level = [0] * k_n
    queue = [0] * k_n
    arrivals_all: list[float] = []
    out = [_start(k_n)]
    for i in range(1, n + 1):
        t = i * period_s
        phase = i / n
        load = 0.6 if phase < 0.25 else 1.5 if phase < 0.35 else 0.8 if phase < 0.75 else 0.2 if phase < 0.9 else 0.0
        count = int(rng.poisson(load * cap_hz * period_s))
        arrivals_all.extend(np.sort(rng.uniform(t - period_s, t, count)).tolist())
        slow = 2.0 if 0.4 <= phase < 0.6 else 1.0
        stages = []
        inflow = count
        for k in range(k_n):
            f = (slow if k == min(1, k_n - 1) else 1.0) * float(rng.lognormal(0.0, 0.03))
            s_k = curves.latency_s[k][level[k]]
            served = min(queue[k] + inflow, int(period_s / (s_k * f)))
            queue[k] = queue[k] + inflow - served
            stages.append(
                StageObs(
                    level=level[k],
                    queue_len=max(queue[k] - 1, 0),
                    busy=queue[k] > 0,
                    arrivals=inflow,
                    served=served,
                    busy_s=served * s_k * f,
                    nominal_s=served * s_k,
                    dropped=0,
                )
            )
            inflow = served
        view = None
        if oracle:
            view = OracleView(env_factor=tuple(1.0 for _ in range(k_n)), arrivals_s=_frozen(arrivals_all))
        out.append(Observation(time_s=t, period_s=period_s, arrivals=count, stages=tuple(stages), oracle=view))
        level = [min(lv + (1 if q > 2 else 0), curves.n_levels - 1) for lv, q in zip(level, queue, strict=True)]
    if oracle:
        final = _frozen(arrivals_all)
        out = [_with_oracle(o, final, k_n) for o in out]
    return out


def _start(k_n: int) -> Observation:
    zero = StageObs(level=0, queue_len=0, busy=False, arrivals=0, served=0, busy_s=0.0, nominal_s=0.0, dropped=0)
    return Observation(time_s=0.0, period_s=0.0, arrivals=0, stages=(zero,) * k_n)


def _with_oracle(ob: Observation, arrivals_s: np.ndarray, k_n: int) -> Observation:
    view = OracleView(env_factor=tuple(1.0 for _ in range(k_n)), arrivals_s=arrivals_s)
    return Observation(time_s=ob.time_s, period_s=ob.period_s, arrivals=ob.arrivals, stages=ob.stages, oracle=view)


def _frozen(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr
