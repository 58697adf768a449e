"""The contract checker: every built-in policy passes, and each kind of violation is caught by name."""

from __future__ import annotations

import random
import sys
import time
import types
from typing import Any, ClassVar

import pytest

from edgeprune.checker import CheckReport, check_policy, synthetic_observations
from edgeprune.config import Ctx
from edgeprune.controller import Observation, PipelineCurves, make_policy, policy_from_table
from edgeprune.errors import PolicyError
from tests.test_controller_policies import make_curves

BUILTIN = [
    {"kind": "static", "levels": [0, 0, 0, 0]},
    {"kind": "static", "levels": [6, 6, 6, 6]},
    {"kind": "threshold", "min_accuracy": 0.9},
    {"kind": "bottleneck", "min_accuracy": 0.9},
    {"kind": "predictive", "min_accuracy": 0.9},
    {"kind": "oracle", "min_accuracy": 0.9},
]


@pytest.fixture(scope="module")
def curves() -> PipelineCurves:
    return make_curves()


@pytest.mark.parametrize("table", BUILTIN, ids=lambda t: str(t["kind"]) + str(t.get("levels", "")))
def test_every_builtin_policy_passes(table: dict[str, Any], curves: PipelineCurves) -> None:
    spec = policy_from_table(table, Ctx("t"), n_stages=4, n_levels=7, has_accuracy=True)
    report = check_policy(spec, curves, timing_passes=1)
    assert isinstance(report, CheckReport)
    assert report.n_observations == 241
    assert 0 < report.median_us <= report.p99_us <= report.max_us
    assert (report.distinct_vectors == 1) == (table["kind"] == "static")
    assert "observations OK" in str(report)


def test_accepts_a_factory_and_a_custom_sequence(curves: PipelineCurves) -> None:
    spec = policy_from_table({"kind": "bottleneck"}, Ctx("t"), n_stages=4, n_levels=7, has_accuracy=True)
    obs = synthetic_observations(curves, n=30, seed=4)
    report = check_policy(lambda c: make_policy(spec, c), curves, obs)
    assert report.n_observations == 31


class _Const:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def decide(self, obs: Observation) -> Any:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ((0, 0, 0), r"returned \(0, 0, 0\) at t=0s: expected 4 integer levels in 0..6 \(observation 0\)"),
        ((0, 0, 0, 7), r"returned \(0, 0, 0, 7\)"),
        ((0, 0, True, 0), r"returned \(0, 0, True, 0\)"),
        ((0, 0, 0.0, 0), r"returned \(0, 0, 0.0, 0\)"),
        (None, r"returned None"),
    ],
)
def test_bad_answers(answer: object, match: str, curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=match):
        check_policy(lambda c: _Const(answer), curves)


class _Crashes:
    def decide(self, obs: Observation) -> tuple[int, ...]:
        if obs.period_s == 0:
            raise KeyError("no start handling")
        return (0, 0, 0, 0)


def test_an_exception_names_the_observation(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"_Crashes: decide\(\) raised KeyError: 'no start handling' \(observation 0"):
        check_policy(lambda c: _Crashes(), curves)


class _Shared:
    calls: ClassVar[list[int]] = [0]  # a class attribute shared by every instance

    def decide(self, obs: Observation) -> tuple[int, ...]:
        self.calls[0] += 1
        return (self.calls[0] % 7, 0, 0, 0)


def test_shared_state_is_caught(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"_Shared: not deterministic: a second fresh instance"):
        check_policy(lambda c: _Shared(), curves)


class _CountsOthers:
    """Deterministic alone (it resets at the start observation), but instances share one running total."""

    total: ClassVar[list[int]] = [0]

    def decide(self, obs: Observation) -> tuple[int, ...]:
        if obs.period_s == 0:
            self.total[0] = 0
        self.total[0] += obs.arrivals
        return (self.total[0] % 7, 0, 0, 0)


def test_interleaved_instances_are_caught(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"an instance interleaved with another instance"):
        check_policy(lambda c: _CountsOthers(), curves)


class _Clock:
    def decide(self, obs: Observation) -> tuple[int, ...]:
        return (0 if time.monotonic() >= 0 else 1, 0, 0, 0)  # same answer, but it reads the clock


def test_clock_reading_is_caught(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"_Clock: decide\(\) read the clock \(time.monotonic\)"):
        check_policy(lambda c: _Clock(), curves)


def test_clock_imported_by_name_is_caught(curves: PipelineCurves) -> None:
    mod = types.ModuleType("user_policy_with_clock")
    code = (
        "from time import perf_counter\n"
        "class P:\n"
        "    def decide(self, obs):\n"
        "        return (0, 0, 0, 0) if perf_counter() >= 0 else (1, 0, 0, 0)\n"
    )
    exec(code, mod.__dict__)
    sys.modules[mod.__name__] = mod
    try:
        with pytest.raises(PolicyError, match=r"imports the clock function 'perf_counter'"):
            check_policy(lambda c: mod.P(), curves)
    finally:
        del sys.modules[mod.__name__]


class _GlobalRandom:
    def __init__(self) -> None:
        random.seed(1)  # reseeding per instance makes it look deterministic, but it touches the global state

    def decide(self, obs: Observation) -> tuple[int, ...]:
        return (random.randrange(2), 0, 0, 0)


def test_global_random_is_caught(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"not deterministic|global random generator"):
        check_policy(lambda c: _GlobalRandom(), curves)


class _Mutates:
    """Observations are tuples and the oracle's array is read-only, but a frozen dataclass can be forced."""

    wants_oracle = True

    def decide(self, obs: Observation) -> tuple[int, ...]:
        assert obs.oracle is not None
        object.__setattr__(obs.oracle, "env_factor", (9.0,) * len(obs.stages))
        return (0, 0, 0, 0)


def test_mutating_the_observation_is_caught(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"_Mutates: decide\(\) mutated its observation \(observation 0"):
        check_policy(lambda c: _Mutates(), curves)


def test_observation_fields_cannot_be_assigned(curves: PipelineCurves) -> None:
    ob = synthetic_observations(curves, n=2)[1]
    with pytest.raises(AttributeError):
        ob.arrivals = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ob.stages[0].queue_len = 3  # type: ignore[misc]


def test_sequence_must_start_with_the_start_observation(curves: PipelineCurves) -> None:
    obs = synthetic_observations(curves, n=10)[1:]
    with pytest.raises(PolicyError, match=r"must begin with the start observation"):
        check_policy(lambda c: _Const((0, 0, 0, 0)), curves, obs)


def test_oracle_needs_oracle_views(curves: PipelineCurves) -> None:
    spec = policy_from_table({"kind": "oracle"}, Ctx("t"), n_stages=4, n_levels=7, has_accuracy=True)
    with pytest.raises(PolicyError, match=r"wants_oracle = True but the observations carry no OracleView"):
        check_policy(spec, curves, synthetic_observations(curves, n=5))


def test_not_a_factory_is_a_clear_error(curves: PipelineCurves) -> None:
    with pytest.raises(PolicyError, match=r"expected a factory"):
        check_policy(42, curves)  # type: ignore[arg-type]


def test_wants_oracle_must_be_a_bool(curves: PipelineCurves) -> None:
    class _Truthy(_Const):
        wants_oracle = "yes"

    with pytest.raises(PolicyError, match=r"_Truthy.wants_oracle = 'yes': must be True or False"):
        check_policy(lambda c: _Truthy((0,) * c.n_stages), curves)
