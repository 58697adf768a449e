"""The engine against queueing theory: the tandem recursion (exact) and M/M/1 (statistical)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.controller.static import StaticPolicy
from sim.engine import DONE, SimSetup, simulate


def _setup(
    samples: list[list[float]], tx: list[float], lat: list[float], end_s: float, period_s: float = 1.0
) -> SimSetup:
    """One level; stage k's sorted samples; hops k -> k+1 with transmission tx[k] and latency lat[k]."""
    k_n = len(samples)
    return SimSetup(
        stage_names=tuple(f"s{k}" for k in range(k_n)),
        samples_s=tuple((tuple(sorted(s)),) for s in samples),
        mean_s=tuple((sum(s) / len(s),) for s in samples),
        switch_s=0.0,
        hop_tx_s=tuple(tx),
        hop_latency_s=tuple(lat),
        env_changes=(),
        initial_factor=(1.0,) * k_n,
        queue_capacity=None,
        drop_head=False,
        period_s=period_s,
        end_s=end_s,
    )


def tandem_recursion(arrivals: np.ndarray, service: np.ndarray, tx: list[float], lat: list[float]) -> np.ndarray:
    """D[k][i] = max(D[k][i-1], A[k][i]) + S[k][i]; a link is a FIFO stage (tx) followed by a pure delay."""
    a = arrivals.astype(float).copy()
    for k in range(service.shape[0]):
        d = np.empty_like(a)
        prev = -math.inf
        for i in range(a.size):
            prev = max(prev, a[i]) + service[k, i]
            d[i] = prev
        if k < service.shape[0] - 1:
            link = np.empty_like(d)
            prev = -math.inf
            for i in range(d.size):
                prev = max(prev, d[i]) + tx[k]
                link[i] = prev
            a = link + lat[k]
        else:
            a = d
    return a


@settings(max_examples=60, deadline=None)
@given(
    n_stages=st.integers(1, 5),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    link_kind=st.sampled_from(["none", "tx", "latency", "both"]),
)
def test_departures_equal_tandem_recursion(n_stages: int, n: int, seed: int, link_kind: str) -> None:
    rng = np.random.default_rng(seed)
    # Arrival sequences with ties, bursts and gaps; service tables with distinct values per stage.
    gaps = rng.choice([0.0, 0.01, 0.3, 2.0], size=n) * rng.random(n)
    arrivals = np.cumsum(gaps)
    n_samples = 8
    samples = [sorted(rng.uniform(0.01, 0.5, n_samples).tolist()) for _ in range(n_stages)]
    idx = rng.integers(0, n_samples, size=(n_stages, n))
    quantiles = (idx + 0.5) / n_samples  # picks sample idx exactly
    service = np.array([[samples[k][idx[k, i]] for i in range(n)] for k in range(n_stages)])
    tx = [0.0 if link_kind in ("none", "latency") else float(rng.uniform(0.0, 0.2)) for _ in range(n_stages - 1)]
    lat = [0.0 if link_kind in ("none", "tx") else float(rng.uniform(0.0, 0.3)) for _ in range(n_stages - 1)]
    expected = tandem_recursion(arrivals, service, tx, lat)
    end_s = float(expected.max()) + 10.0
    out = simulate(_setup(samples, tx, lat, end_s), StaticPolicy((0,) * n_stages), arrivals, quantiles)
    assert np.all(out.status == DONE)
    np.testing.assert_allclose(out.departure_s, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.service_s.T, service, rtol=0, atol=0)


def test_unfinished_at_end_and_levels_recorded() -> None:
    arrivals = np.array([0.0, 0.0, 0.0])
    out = simulate(_setup([[1.0]], [], [], end_s=2.5), StaticPolicy((0,)), arrivals, np.zeros((1, 3)))
    assert out.status.tolist() == [DONE, DONE, 2]
    assert out.departure_s[:2].tolist() == [1.0, 2.0]
    assert out.levels[:2, 0].tolist() == [0, 0]


def test_mm1_mean_sojourn_matches_theory() -> None:
    """One stage, Poisson(λ) arrivals, exponential(μ) service: mean sojourn 1/(μ−λ)."""
    lam, mu = 0.7, 1.0
    rng = np.random.default_rng(20261126)
    n_rep, n = 20, 20_000
    # exponential service through the empirical-quantile seam: a fine grid of exponential quantiles
    grid = 4096
    samples = (-np.log1p(-(np.arange(grid) + 0.5) / grid) / mu).tolist()
    means = []
    for _ in range(n_rep):
        arrivals = np.cumsum(rng.exponential(1 / lam, n))
        q = rng.random((1, n))
        out = simulate(_setup([samples], [], [], end_s=float(arrivals[-1]) + 1e4), StaticPolicy((0,)), arrivals, q)
        sojourn = out.departure_s - arrivals
        means.append(float(sojourn[n // 10 :].mean()))  # drop the first 10% (empty-system start)
    m = float(np.mean(means))
    half = 2.09 * float(np.std(means, ddof=1)) / math.sqrt(n_rep)  # t(0.975, 19)
    theory = 1 / (mu - lam)
    assert abs(m - theory) <= max(half, 0.02 * theory), (m, half, theory)


@settings(max_examples=25, deadline=None)
@given(n_stages=st.integers(1, 4), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_eager_path_equals_recursion(n_stages: int, n: int, seed: int) -> None:
    """The bounded-queue (eager) path with a capacity never reached gives the same departures."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.2, n))
    samples = [sorted(rng.uniform(0.01, 0.5, 4).tolist()) for _ in range(n_stages)]
    idx = rng.integers(0, 4, size=(n_stages, n))
    service = np.array([[samples[k][idx[k, i]] for i in range(n)] for k in range(n_stages)])
    tx = rng.uniform(0, 0.1, n_stages - 1).tolist()
    lat = rng.uniform(0, 0.1, n_stages - 1).tolist()
    expected = tandem_recursion(arrivals, service, tx, lat)
    setup = dataclasses.replace(_setup(samples, tx, lat, float(expected.max()) + 5), queue_capacity=10**6)
    out = simulate(setup, StaticPolicy((0,) * n_stages), arrivals, (idx + 0.5) / 4)
    np.testing.assert_allclose(out.departure_s, expected, rtol=0, atol=1e-9)


def loss_recursion(arrivals: np.ndarray, service: np.ndarray, capacity: int, drop_head: bool) -> np.ndarray:
    """One FIFO server with ``capacity`` waiting places, written independently of the engine: departures
    (NaN = dropped), processing arrivals in order and serving the waiting room in order."""
    dep = np.full(arrivals.size, np.nan)
    waiting: list[int] = []  # accepted, not yet started
    free_s = -math.inf  # when the server finishes its current request
    for i, a in enumerate(arrivals):
        while waiting and max(free_s, arrivals[waiting[0]]) < a:  # starts strictly before this arrival
            j = waiting.pop(0)
            free_s = max(free_s, arrivals[j]) + service[j]
            dep[j] = free_s
        busy = free_s > a or bool(waiting)
        if busy and len(waiting) >= capacity:
            if drop_head and waiting:
                waiting.pop(0)
                waiting.append(i)
            continue
        waiting.append(i)
    for j in waiting:
        free_s = max(free_s, arrivals[j]) + service[j]
        dep[j] = free_s
    return dep


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    capacity=st.integers(0, 4),
    drop_head=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_bounded_queue_equals_the_loss_recursion(n: int, capacity: int, drop_head: bool, seed: int) -> None:
    """Tail and head drop on the reference model (the path that serves bounded queues) against an
    independent in-order loss recursion; arrival gaps are continuous, so no event ties."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.2, n))
    samples = sorted(rng.uniform(0.05, 0.5, 8).tolist())
    idx = rng.integers(0, 8, size=n)
    service = np.array([samples[j] for j in idx])
    expected = loss_recursion(arrivals, service, capacity, drop_head)
    setup = dataclasses.replace(
        _setup([samples], [], [], end_s=float(arrivals[-1]) + 100.0), queue_capacity=capacity, drop_head=drop_head
    )
    out = simulate(setup, StaticPolicy((0,)), arrivals, ((idx + 0.5) / 8)[None, :])
    np.testing.assert_array_equal(out.departure_s, expected)
    assert ((out.status == DONE) == np.isfinite(expected)).all()
