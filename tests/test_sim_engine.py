"""Engine behaviour: drops, level switching, environment factors, and the reference model and the fast path
agreeing bit for bit."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.controller.bottleneck import BottleneckParams, BottleneckPolicy
from edgeprune.controller.contract import Observation, PipelineCurves
from edgeprune.controller.oracle import OracleParams, OraclePolicy
from edgeprune.controller.static import StaticPolicy
from edgeprune.errors import PolicyError
from sim.engine import DONE, DROPPED, EngineOutput, SimSetup, simulate


def ladder_setup(k_n: int = 1, *, base_s: float = 1.0, n_levels: int = 3, **kw: object) -> SimSetup:
    """Deterministic stages: level l takes base_s / (l + 1)."""
    samples = tuple(tuple((base_s / (lv + 1),) for lv in range(n_levels)) for _ in range(k_n))
    setup = SimSetup(
        stage_names=tuple(f"s{k}" for k in range(k_n)),
        samples_s=samples,
        mean_s=tuple(tuple(lv[0] for lv in st) for st in samples),
        switch_s=0.0,
        hop_tx_s=(0.0,) * (k_n - 1),
        hop_latency_s=(0.0,) * (k_n - 1),
        env_changes=(),
        initial_factor=(1.0,) * k_n,
        queue_capacity=None,
        drop_head=False,
        period_s=1.0,
        end_s=100.0,
    )
    return dataclasses.replace(setup, **kw)  # type: ignore[arg-type]


def run(setup: SimSetup, arrivals: list[float], policy: object = None):
    a = np.asarray(arrivals, dtype=float)
    pol = policy if policy is not None else StaticPolicy((0,) * setup.n_stages)
    return simulate(setup, pol, a, np.full((setup.n_stages, a.size), 0.5))  # type: ignore[arg-type]


def test_tail_drop_drops_the_arriving_request() -> None:
    out = run(ladder_setup(queue_capacity=1), [0.0, 0.1, 0.2, 0.3])
    assert out.status.tolist() == [DONE, DONE, DROPPED, DROPPED]
    assert out.departure_s[:2].tolist() == [1.0, 2.0]
    assert out.dropped_at.tolist() == [-1, -1, 0, 0]


def test_head_drop_drops_the_oldest_waiting_request() -> None:
    out = run(ladder_setup(queue_capacity=1, drop_head=True), [0.0, 0.1, 0.2, 0.3])
    assert out.status.tolist() == [DONE, DROPPED, DROPPED, DONE]
    assert out.departure_s[3] == 2.0


def test_zero_capacity_is_a_loss_system() -> None:
    out = run(ladder_setup(queue_capacity=0), [0.0, 0.5, 1.0, 1.5])
    assert out.status.tolist() == [DONE, DROPPED, DONE, DROPPED]


class _StepPolicy:
    """Level 0 until t >= 3 s, then level 2 (to test when a decision takes effect)."""

    def decide(self, obs: Observation) -> tuple[int, ...]:
        return (2,) if obs.time_s >= 3.0 else (0,)


def test_level_change_applies_at_next_service_start_with_switch_cost() -> None:
    setup = ladder_setup(switch_s=0.25)
    out = run(setup, [0.0, 2.5, 3.2], _StepPolicy())
    # request 1 starts at 2.5 at level 0 (decided at 3.0 only), request 2 at 3.5 at level 2 + switch cost
    assert out.levels[:, 0].tolist() == [0, 0, 2]
    assert out.departure_s.tolist() == pytest.approx([1.0, 3.5, 3.5 + 1 / 3 + 0.25], abs=1e-12)
    assert out.switches == 1


def test_start_decision_is_free_and_not_a_switch() -> None:
    out = run(ladder_setup(switch_s=0.25), [0.0], StaticPolicy((2,)))
    assert out.departure_s.tolist() == [pytest.approx(1 / 3)]
    assert out.switches == 0


def test_environment_factor_scales_services_started_in_the_window() -> None:
    setup = ladder_setup(env_changes=((5.0, 0, 2.0), (8.0, 0, 1.0)))
    out = run(setup, [0.0, 5.0, 10.0])
    assert out.service_s[:, 0].tolist() == [1.0, 2.0, 1.0]


def test_invalid_decision_is_a_policy_error() -> None:
    class Bad:
        def decide(self, obs: Observation) -> tuple[int, ...]:
            return (7,)

    with pytest.raises(PolicyError, match=r"returned \(7,\).*0\.\.2"):
        run(ladder_setup(), [0.0], Bad())


def test_a_repeated_answer_skips_validation_but_a_new_bad_one_is_caught() -> None:
    """The tick validates an answer object once (a policy holding its levels returns the same tuple); a
    different answer after many good ones is still checked, on both paths."""
    held = (1,)

    class HoldsThenErrs:
        def decide(self, obs: Observation) -> object:
            return held if obs.time_s < 3.0 else [1.5]

    for path in ("fast", "reference"):
        with pytest.raises(PolicyError, match=r"returned \[1\.5\] at t=3s"):
            simulate(ladder_setup(), HoldsThenErrs(), np.arange(8.0), np.full((1, 8), 0.5), path=path)  # type: ignore[arg-type]


def test_bottleneck_returns_its_previous_answer_while_the_levels_hold() -> None:
    """What lets the tick skip validating a held decision: the same tuple object, not an equal copy."""
    setup = ladder_setup(2)
    policy = BottleneckPolicy(BottleneckParams(), curves_of(setup, slo_s=10.0))
    answers = []

    class Spy:
        def decide(self, obs: Observation) -> tuple[int, ...]:
            answers.append(policy.decide(obs))
            return answers[-1]

    run(setup, [0.0, 0.5, 1.0], Spy())  # type: ignore[arg-type]
    held = [(a, b) for a, b in itertools.pairwise(answers) if a == b]
    assert len(held) > 10
    assert all(b is a for a, b in held)


@pytest.mark.parametrize("answer", [(1.9,), (True,), ("1",), [0, 0], None])
def test_the_simulator_takes_only_integer_levels(answer: object) -> None:
    """The one decision rule: 1.9 and True are not levels (the hardware coordinator and checker agree)."""

    class Answers:
        def decide(self, obs: Observation) -> object:
            return answer

    for path in ("fast", "reference"):
        with pytest.raises(PolicyError, match="expected 1 integer levels"):
            simulate(ladder_setup(), Answers(), np.array([0.0]), np.full((1, 1), 0.5), path=path)  # type: ignore[arg-type]


def curves_of(setup: SimSetup, slo_s: float) -> PipelineCurves:
    """The policies' view of a test setup: its nominal times, hops and physics (no accuracy curve)."""
    return PipelineCurves(
        ratios=tuple(0.1 * i for i in range(setup.n_levels)),
        latency_s=setup.mean_s,
        latency_p95_s=setup.mean_s,
        hop_s=tuple(a + b for a, b in zip(setup.hop_tx_s, setup.hop_latency_s, strict=True)),
        switch_s=setup.switch_s,
        slo_s=slo_s,
        accuracy=None,
        physics=setup.physics,
    )


class _RandomLevels:
    """A policy that jumps to seeded random levels every tick: the most switching any policy can do."""

    def __init__(self, seed: int, n_stages: int, n_levels: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape = (n_stages, n_levels)

    def decide(self, obs: Observation) -> tuple[int, ...]:
        return tuple(int(v) for v in self.rng.integers(0, self.shape[1], self.shape[0]))


def _assert_same(a: EngineOutput, b: EngineOutput) -> None:
    np.testing.assert_array_equal(a.departure_s, b.departure_s)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.dropped_at, b.dropped_at)
    np.testing.assert_array_equal(a.levels, b.levels)
    np.testing.assert_array_equal(a.service_s, b.service_s)
    assert a.timeline.keys() == b.timeline.keys()
    for name, col in a.timeline.items():  # bit for bit, NaN included
        assert col.dtype == b.timeline[name].dtype and col.tobytes() == b.timeline[name].tobytes(), name
    assert a.switches == b.switches


def test_reference_and_fast_paths_agree_under_a_dynamic_policy() -> None:
    """Bit-identical results from the reference SimPy model (unbounded, and bounded but never full) and the
    fast path (plain and numba-compiled kernels), under a policy that switches levels and a slowdown."""
    rng = np.random.default_rng(5)
    k_n, n_levels = 3, 5
    samples = tuple(
        tuple(tuple(sorted((0.2 / (1 + 0.3 * lv) * rng.lognormal(0, 0.1, 9)).tolist())) for lv in range(n_levels))
        for _ in range(k_n)
    )
    base = SimSetup(
        stage_names=("a", "b", "c"),
        samples_s=samples,
        mean_s=tuple(tuple(sum(x) / len(x) for x in st) for st in samples),
        switch_s=0.001,
        hop_tx_s=(0.01, 0.02),
        hop_latency_s=(0.003, 0.0),
        env_changes=((100.0, 1, 2.5), (250.0, 1, 1.0)),
        initial_factor=(1.0,) * k_n,
        queue_capacity=None,
        drop_head=False,
        period_s=1.0,
        end_s=420.0,
    )
    arrivals = np.cumsum(rng.exponential(1 / 4.0, 1500))
    q = rng.random((k_n, arrivals.size))
    outs = []
    for cap, path, compiled in (
        (None, "fast", False),
        (None, "fast", True),
        (None, "reference", None),
        (10**6, "auto", None),
    ):
        setup = dataclasses.replace(base, queue_capacity=cap)
        policy = BottleneckPolicy(BottleneckParams(cooldown_s=5.0), curves_of(setup, slo_s=2.0))
        outs.append(simulate(setup, policy, arrivals, q, path=path, compiled=compiled))  # type: ignore[arg-type]
    plain = outs[0]
    assert plain.switches > 0
    assert len(set(plain.levels[:, 1].tolist())) > 2  # the slowed stage moved along the ladder
    for other in outs[1:]:
        _assert_same(plain, other)


def test_fast_path_refuses_bounded_queues() -> None:
    with pytest.raises(ValueError, match="unbounded queues only"):
        run_path(ladder_setup(queue_capacity=3), [0.0], "fast")


def run_path(setup: SimSetup, arrivals: list[float], path: str) -> EngineOutput:
    a = np.asarray(arrivals, dtype=float)
    return simulate(setup, StaticPolicy((0,) * setup.n_stages), a, np.full((setup.n_stages, a.size), 0.5), path=path)  # type: ignore[arg-type]


def test_services_starting_at_an_instant_use_its_decision_on_both_paths() -> None:
    """Ties: arrivals exactly at ticks and at an environment change (a replayed trace with whole-second
    timestamps has them): the service starting at the instant waits for the instant's decision and factor."""
    setup = ladder_setup(switch_s=0.25, env_changes=((3.0, 0, 2.0),))
    arrivals = [0.0, 1.0, 2.0, 3.0, 3.0, 5.0]
    outs = []
    for path in ("fast", "reference"):
        a = np.asarray(arrivals)
        outs.append(simulate(setup, _StepPolicy(), a, np.full((1, a.size), 0.5), path=path))  # type: ignore[arg-type]
    fast, ref = outs
    _assert_same(fast, ref)
    assert fast.levels[:, 0].tolist() == [0, 0, 0, 2, 2, 2]  # the request arriving at 3.0 starts at 3.0 on level 2
    assert fast.service_s[3, 0] == pytest.approx(2 / 3 + 0.25)  # factor 2 from 3.0 on, plus the switch


def _random_setup(rng: np.random.Generator, k_n: int, n_levels: int, zero_hops: bool) -> SimSetup:
    base = 0.1 * rng.uniform(0.5, 1.5, k_n)
    samples = tuple(
        tuple(tuple(sorted((base[k] / (1 + 0.4 * lv) * rng.lognormal(0, 0.2, 7)).tolist())) for lv in range(n_levels))
        for k in range(k_n)
    )
    # links up to 1.5x the fastest stage: some are bottlenecks, so their FIFO serialisation matters
    hops = (0.0,) * (k_n - 1) if zero_hops else tuple(rng.uniform(0, 1.5 * base.min(), k_n - 1).tolist())
    t1, t2 = sorted(rng.uniform(5, 60, 2).tolist())
    return SimSetup(
        stage_names=tuple(f"s{k}" for k in range(k_n)),
        samples_s=samples,
        mean_s=tuple(tuple(sum(x) / len(x) for x in stage) for stage in samples),
        switch_s=float(rng.uniform(0, 0.01)),
        hop_tx_s=hops,
        hop_latency_s=tuple(0.1 * h for h in hops[::-1]),
        env_changes=((t1, int(rng.integers(k_n)), float(rng.uniform(1.2, 3.0))), (t2, 0, 1.0)),
        initial_factor=tuple(rng.uniform(0.8, 1.5, k_n).tolist()),
        queue_capacity=None,
        drop_head=False,
        period_s=float(rng.choice([0.5, 1.0, 2.0])),
        end_s=70.0,
        speed=tuple(rng.uniform(0.7, 1.3, k_n).tolist()),
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k_n=st.integers(1, 4),
    n_levels=st.integers(1, 5),
    zero_hops=st.booleans(),
    load=st.floats(0.3, 1.6),
    policy_kind=st.sampled_from(["bottleneck", "random", "oracle"]),
    whole_seconds=st.booleans(),
)
def test_fast_path_equals_reference_property(
    seed: int, k_n: int, n_levels: int, zero_hops: bool, load: float, policy_kind: str, whole_seconds: bool
) -> None:
    """Random pipelines, speeds, loads (some overloaded, so requests are left unfinished), slowdown windows,
    switching policies (an oracle too) and arrivals with ties at control instants: the reference model and
    the fast path (plain and compiled kernels) agree bit for bit."""
    rng = np.random.default_rng(seed)
    setup = _random_setup(rng, k_n, n_levels, zero_hops)
    arrivals = np.cumsum(rng.exponential(float(max(m[0] for m in setup.mean_s)) / load, 400))
    if whole_seconds:  # a trace recorded to the second: many arrivals exactly at ticks
        arrivals = np.floor(arrivals)
    q = rng.random((k_n, arrivals.size))
    outs = []
    for path, compiled in (("reference", None), ("fast", False), ("fast", True)):
        curves = curves_of(setup, slo_s=1.0)
        policy: object = (
            BottleneckPolicy(BottleneckParams(cooldown_s=3.0), curves)
            if policy_kind == "bottleneck"
            else OraclePolicy(OracleParams(), curves)
            if policy_kind == "oracle"
            else _RandomLevels(seed, k_n, n_levels)
        )
        outs.append(simulate(setup, policy, arrivals, q, path=path, compiled=compiled))  # type: ignore[arg-type]
    for other in outs[1:]:
        _assert_same(outs[0], other)
