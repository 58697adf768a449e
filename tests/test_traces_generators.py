"""Synthetic arrival generators: statistics with fixed seeds, properties with hypothesis, speed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edgeprune.errors import ConfigError, TraceError
from traces import (
    ArrivalSpec,
    CameraTrapArrivals,
    MmppArrivals,
    PoissonArrivals,
    RateScheduleArrivals,
    arrival_stats,
    burst_stats,
    generate,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- Poisson -------------------------------------------------------------------------------------------


def test_poisson_count_matches_rate_and_gaps_are_exponential() -> None:
    rate, duration = 50.0, 2000.0
    t = generate(PoissonArrivals(rate), rng(1), duration_s=duration)
    expected = rate * duration
    assert abs(t.size - expected) < 4 * np.sqrt(expected)
    assert stats.kstest(np.diff(t), "expon", args=(0, 1 / rate)).pvalue > 0.01


def test_poisson_first_n_are_exponential_gaps_from_zero() -> None:
    t = generate(PoissonArrivals(4.0), rng(2), n_requests=20_000)
    assert t.size == 20_000
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert stats.kstest(gaps, "expon", args=(0, 0.25)).pvalue > 0.01


def test_poisson_is_not_regular_or_clumped() -> None:
    t = generate(PoissonArrivals(10.0), rng(3), duration_s=5000.0)
    assert arrival_stats(t).cv_gap == pytest.approx(1.0, abs=0.03)


# --- MMPP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        MmppArrivals((1.0, 20.0), (5.0, 1.0)),
        MmppArrivals((2.0, 30.0, 0.0), (4.0, 0.5, 2.0), next_state="uniform"),
        MmppArrivals((2.0, 30.0, 0.0), (4.0, 0.5, 2.0), transition=((0, 0.9, 0.1), (1, 0, 0), (0.5, 0.5, 0))),
    ],
    ids=["cyclic", "uniform", "matrix"],
)
def test_mmpp_long_run_rate_is_stationary_weighted_rate(spec: MmppArrivals) -> None:
    duration = 20_000.0
    t = generate(spec, rng(4), duration_s=duration)
    assert t.size / duration == pytest.approx(spec.mean_rate_hz(), rel=0.05)
    assert arrival_stats(t).cv_gap > 1.5  # modulated: burstier than Poisson


def test_mmpp_stationary_law_of_a_two_state_cycle_is_the_dwell_share() -> None:
    spec = MmppArrivals((1.0, 20.0), (5.0, 1.0))
    assert spec.stationary() == pytest.approx([5 / 6, 1 / 6])
    assert spec.mean_rate_hz() == pytest.approx(5 / 6 + 20 / 6)


def test_mmpp_stationary_law_with_a_jump_matrix() -> None:
    spec = MmppArrivals((1.0, 2.0, 3.0), (1.0, 1.0, 1.0), transition=((0, 1, 0), (0.5, 0, 0.5), (0, 1, 0)))
    assert spec.stationary() == pytest.approx([0.25, 0.5, 0.25])


def test_mmpp_start_state_governs_the_beginning() -> None:
    quiet_first = MmppArrivals((0.0, 100.0), (1000.0, 1.0), start_state=0)
    busy_first = MmppArrivals((0.0, 100.0), (1000.0, 1.0), start_state=1)
    firsts_quiet = [generate(quiet_first, rng(s), n_requests=1)[0] for s in range(20)]
    firsts_busy = [generate(busy_first, rng(s), n_requests=1)[0] for s in range(20)]
    assert np.median(firsts_quiet) > 100.0 > 1.0 > np.median(firsts_busy)


# --- camera trap ---------------------------------------------------------------------------------------


def test_camera_trap_bursts_have_the_configured_structure() -> None:
    spec = CameraTrapArrivals(
        trigger_rate_hz=1e-5, burst_size_mean=4.0, burst_size_max=12, frame_interval_s=0.5, burst_size_dist="geometric"
    )
    t = generate(spec, rng(5), duration_s=300_000_000.0)
    bursts = burst_stats(t, max_gap_s=10.0)
    assert abs(bursts.n_bursts - 3000) < 4 * np.sqrt(3000)
    assert bursts.max_size <= 12
    assert bursts.mean_intra_gap_s == pytest.approx(0.5)
    sd = np.sqrt(12.0 / bursts.n_bursts)  # sd of a geometric(1/4) is about sqrt(12)
    assert abs(bursts.mean_size - spec.mean_burst_size()) < 4 * sd
    assert spec.mean_burst_size() < 4.0  # clipping at 12 lowers the mean a little
    starts = t[np.concatenate([[0], np.flatnonzero(np.diff(t) > 10.0) + 1])]
    assert stats.kstest(np.diff(starts), "expon", args=(0, 1e5)).pvalue > 0.01


def test_camera_trap_fixed_bursts_with_jitter() -> None:
    spec = CameraTrapArrivals(1e-4, 10.0, 10, 1.0, burst_size_dist="fixed", frame_jitter_s=0.2)
    t = generate(spec, rng(6), n_requests=2000)
    gaps = np.diff(t)
    intra = gaps[gaps < 5.0]
    assert intra.min() >= 1.0 and intra.max() <= 1.2
    sizes = np.diff(np.flatnonzero(np.concatenate([[True], gaps > 5.0, [True]])))
    assert np.all(sizes == 10)


def test_camera_trap_poisson_burst_sizes_have_the_right_mean() -> None:
    spec = CameraTrapArrivals(1e-5, 3.0, 50, 0.2, burst_size_dist="poisson")
    t = generate(spec, rng(7), duration_s=400_000_000.0)
    bursts = burst_stats(t, max_gap_s=5.0)
    assert bursts.mean_size == pytest.approx(3.0, abs=0.15)
    assert spec.mean_burst_size() == pytest.approx(3.0)


# --- time-varying rate ---------------------------------------------------------------------------------


def test_schedule_rates_per_window_follow_the_change_points() -> None:
    spec = RateScheduleArrivals(times_s=(0.0, 100.0, 200.0), rates_hz=(5.0, 50.0, 0.0), repeat_s=300.0)
    t = generate(spec, rng(8), duration_s=30_000.0)
    phase = np.mod(t, 300.0)
    for lo, hi, rate in ((0, 100, 5.0), (100, 200, 50.0)):
        count = np.count_nonzero((phase >= lo) & (phase < hi))
        expected = rate * 100 * 100
        assert abs(count - expected) < 4 * np.sqrt(expected)
    assert np.count_nonzero(phase >= 200) == 0


def test_schedule_diurnal_cosine_shapes_the_rate() -> None:
    spec = RateScheduleArrivals(mean_rate_hz=20.0, amplitude=0.5, period_s=100.0, peak_s=25.0)
    t = generate(spec, rng(9), duration_s=20_000.0)
    edges = np.linspace(0, 100, 11)
    observed, _ = np.histogram(np.mod(t, 100.0), bins=edges)
    grid = np.linspace(0, 100, 10_001)
    rate = spec.rate_hz_at(grid)
    expected = (
        np.array(
            [
                np.trapezoid(rate[(grid >= a) & (grid <= b)], grid[(grid >= a) & (grid <= b)])
                for a, b in itertools.pairwise(edges)
            ]
        )
        * 200
    )
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 0.01
    assert observed.argmax() == 2  # the peak at 25 s falls in [20, 30)


def test_schedule_change_points_and_cosine_multiply() -> None:
    spec = RateScheduleArrivals(
        times_s=(0.0, 50.0), rates_hz=(10.0, 0.0), repeat_s=100.0, amplitude=1.0, period_s=100.0
    )
    assert spec.rate_hz_at(np.array([0.0, 25.0, 50.0, 75.0, 100.0])) == pytest.approx([20.0, 10.0, 0.0, 0.0, 20.0])


def test_schedule_that_ends_at_zero_cannot_give_more_requests() -> None:
    spec = RateScheduleArrivals(times_s=(0.0, 10.0), rates_hz=(1.0, 0.0))
    with pytest.raises(TraceError, match=r"rate stays 0 .* of 1000 arrivals"):
        generate(spec, rng(), n_requests=1000)


# --- the generate contract -----------------------------------------------------------------------------

SPECS: list[ArrivalSpec] = [
    PoissonArrivals(3.0),
    MmppArrivals((0.5, 8.0), (4.0, 1.0)),
    MmppArrivals((0.5, 8.0, 2.0), (4.0, 1.0, 2.0), next_state="uniform"),
    CameraTrapArrivals(0.3, 3.0, 8, 0.25, frame_jitter_s=0.05),
    RateScheduleArrivals(times_s=(0.0, 5.0), rates_hz=(1.0, 6.0), repeat_s=12.0),
    RateScheduleArrivals(mean_rate_hz=4.0, amplitude=0.9, period_s=7.0),
]
spec_strategy = st.sampled_from(SPECS)


@settings(max_examples=40, deadline=None)
@given(spec=spec_strategy, seed=st.integers(0, 2**32 - 1), duration=st.floats(0.5, 60.0))
def test_duration_draws_are_sorted_within_the_window_and_deterministic(
    spec: ArrivalSpec, seed: int, duration: float
) -> None:
    a = generate(spec, rng(seed), duration_s=duration)
    assert a.dtype == np.float64
    assert np.all(np.diff(a) >= 0)
    assert np.all((a >= 0) & (a < duration))
    assert np.array_equal(a, generate(spec, rng(seed), duration_s=duration))


@settings(max_examples=40, deadline=None)
@given(spec=spec_strategy, seed=st.integers(0, 2**32 - 2), n=st.integers(0, 300))
def test_n_request_draws_have_exactly_n_and_depend_on_the_seed(spec: ArrivalSpec, seed: int, n: int) -> None:
    a = generate(spec, rng(seed), n_requests=n)
    assert a.size == n
    assert np.all(np.diff(a) >= 0) and np.all(a >= 0)
    assert np.array_equal(a, generate(spec, rng(seed), n_requests=n))
    if n >= 5:
        assert not np.array_equal(a, generate(spec, rng(seed + 1), n_requests=n))


@settings(max_examples=20, deadline=None)
@given(spec=spec_strategy, seed=st.integers(0, 1000), n=st.integers(1, 200), duration=st.floats(1.0, 50.0))
def test_both_limits_give_the_prefix_of_the_duration_draw(
    spec: ArrivalSpec, seed: int, n: int, duration: float
) -> None:
    both = generate(spec, rng(seed), duration_s=duration, n_requests=n)
    assert np.array_equal(both, generate(spec, rng(seed), duration_s=duration)[:n])


def test_generate_asks_for_a_limit_and_sane_values() -> None:
    with pytest.raises(ValueError, match="duration_s, n_requests or both"):
        generate(PoissonArrivals(1.0), rng())
    with pytest.raises(ValueError, match="positive finite"):
        generate(PoissonArrivals(1.0), rng(), duration_s=-1.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        generate(PoissonArrivals(1.0), rng(), n_requests=-3)


def test_specs_built_in_python_are_checked_like_toml() -> None:
    with pytest.raises(ConfigError, match=r"arrivals.rate_hz = -1.0: must be > 0"):
        generate(PoissonArrivals(-1.0), rng(), duration_s=1.0)
    with pytest.raises(ConfigError, match="2 or more states"):
        generate(MmppArrivals((1.0,), (1.0,)), rng(), duration_s=1.0)


@pytest.mark.parametrize(
    "spec", [PoissonArrivals(1000.0), MmppArrivals((200.0, 3000.0), (2.0, 0.5))], ids=["poisson", "mmpp"]
)
def test_a_million_arrivals_by_count_and_by_duration(spec: PoissonArrivals | MmppArrivals) -> None:
    """Sizes and order at scale; how long this takes is printed by ``bench/bench_traces.py``, not asserted."""
    a = generate(spec, rng(), n_requests=1_000_000)
    b = generate(spec, rng(), duration_s=1_000_000 / spec.mean_rate_hz())
    assert a.size == 1_000_000 and b.size > 900_000
    assert bool(np.all(np.diff(a) >= 0)) and bool(np.all(np.diff(b) >= 0)) and b[-1] < 1_000_000 / spec.mean_rate_hz()
