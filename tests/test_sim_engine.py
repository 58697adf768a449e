"""Engine behaviour: drops, level switching, environment factors, and the two request paths agreeing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.controller.bottleneck import BottleneckParams, BottleneckPolicy
from edgeprune.controller.contract import Observation, PipelineCurves
from edgeprune.controller.static import StaticPolicy
from edgeprune.errors import PolicyError
from sim.engine import DONE, DROPPED, SimSetup, simulate


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


def _curves(setup: SimSetup, slo_s: float) -> PipelineCurves:
    return PipelineCurves(
        ratios=tuple(0.1 * i for i in range(setup.n_levels)),
        latency_s=setup.mean_s,
        latency_p95_s=setup.mean_s,
        hop_s=tuple(a + b for a, b in zip(setup.hop_tx_s, setup.hop_latency_s, strict=True)),
        switch_s=setup.switch_s,
        slo_s=slo_s,
        accuracy=None,
    )


def test_windowed_and_event_paths_agree_under_a_dynamic_policy() -> None:
    """Bit-identical results from the windowed path (unbounded queues; plain and numba-compiled kernels) and
    the event path (a bounded queue that never fills), under a policy that switches levels and a slowdown."""
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
    for cap, compiled in ((None, False), (None, True), (10**6, None)):
        setup = dataclasses.replace(base, queue_capacity=cap)
        policy = BottleneckPolicy(BottleneckParams(cooldown_s=5.0), _curves(setup, slo_s=2.0))
        outs.append(simulate(setup, policy, arrivals, q, compiled=compiled))
    plain, jit, events = outs
    assert plain.switches > 0
    assert len(set(plain.levels[:, 1].tolist())) > 2  # the slowed stage moved along the ladder
    for other in (jit, events):
        np.testing.assert_array_equal(plain.departure_s, other.departure_s)
        np.testing.assert_array_equal(plain.status, other.status)
        np.testing.assert_array_equal(plain.levels, other.levels)
        np.testing.assert_array_equal(plain.service_s, other.service_s)
        assert plain.timeline == other.timeline
        assert plain.switches == other.switches


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k_n=st.integers(1, 4),
    n_levels=st.integers(1, 5),
    zero_hops=st.booleans(),
    load=st.floats(0.3, 1.6),
)
def test_windowed_path_equals_event_path_property(
    seed: int, k_n: int, n_levels: int, zero_hops: bool, load: float
) -> None:
    """Random pipelines, loads (some overloaded, so requests are left unfinished), slowdown windows and a
    switching policy: the windowed path (plain kernels) and the event path agree bit for bit."""
    rng = np.random.default_rng(seed)
    base = 0.1 * rng.uniform(0.5, 1.5, k_n)
    samples = tuple(
        tuple(tuple(sorted((base[k] / (1 + 0.4 * lv) * rng.lognormal(0, 0.2, 7)).tolist())) for lv in range(n_levels))
        for k in range(k_n)
    )
    # links up to 1.5x the fastest stage: some are bottlenecks, so their FIFO serialisation matters
    hops = (0.0,) * (k_n - 1) if zero_hops else tuple(rng.uniform(0, 1.5 * base.min(), k_n - 1).tolist())
    t1, t2 = sorted(rng.uniform(5, 60, 2).tolist())
    setup = SimSetup(
        stage_names=tuple(f"s{k}" for k in range(k_n)),
        samples_s=samples,
        mean_s=tuple(tuple(sum(x) / len(x) for x in stage) for stage in samples),
        switch_s=float(rng.uniform(0, 0.01)),
        hop_tx_s=hops,
        hop_latency_s=tuple(0.1 * h for h in hops[::-1]),
        env_changes=((t1, int(rng.integers(k_n)), float(rng.uniform(1.2, 3.0))), (t2, 0, 1.0)),
        initial_factor=(1.0,) * k_n,
        queue_capacity=None,
        drop_head=False,
        period_s=float(rng.choice([0.5, 1.0, 2.0])),
        end_s=70.0,
    )
    arrivals = np.cumsum(rng.exponential(float(base.max()) / load, 500))
    q = rng.random((k_n, arrivals.size))
    outs = []
    for cap in (None, 10**6):
        s = dataclasses.replace(setup, queue_capacity=cap)
        policy = BottleneckPolicy(BottleneckParams(cooldown_s=3.0), _curves(s, slo_s=1.0))
        outs.append(simulate(s, policy, arrivals, q, compiled=False))
    windowed, events = outs
    np.testing.assert_array_equal(windowed.departure_s, events.departure_s)
    np.testing.assert_array_equal(windowed.status, events.status)
    np.testing.assert_array_equal(windowed.levels, events.levels)
    np.testing.assert_array_equal(windowed.service_s, events.service_s)
    assert windowed.timeline == events.timeline
