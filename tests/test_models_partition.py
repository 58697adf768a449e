"""models.partition: the min-max contiguous partition against brute force (no torch needed)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.errors import ModelError
from models.partition import (
    best_device_order,
    even_partition,
    min_max_partition,
    parse_devices,
    pool_identical_blocks,
)


def _brute(costs: list[float], speeds: list[float], first: float, last: float) -> float:
    n, k = len(costs), len(speeds)
    best = math.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        worst = 0.0
        for s in range(k):
            a, b = bounds[s], bounds[s + 1]
            work = sum(costs[a:b]) + (first if a == 0 else 0.0) + (last if b == n else 0.0)
            worst = max(worst, work / speeds[s])
        best = min(best, worst)
    return best


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=9),
    speeds=st.lists(st.floats(0.2, 4.0), min_size=1, max_size=4),
    first=st.floats(0.0, 0.5),
    last=st.floats(0.0, 0.5),
)
def test_min_max_partition_matches_brute_force(
    costs: list[float], speeds: list[float], first: float, last: float
) -> None:
    if len(speeds) > len(costs):
        speeds = speeds[: len(costs)]
    part = min_max_partition(costs, speeds, first, last)
    assert part.bottleneck_s == pytest.approx(_brute(costs, speeds, first, last), rel=1e-12)
    assert part.blocks[0][0] == 0 and part.blocks[-1][1] == len(costs)
    assert all(a < b for a, b in part.blocks)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(part.blocks))


def test_best_device_order_matches_brute_force_over_orders() -> None:
    costs = [0.03] * 12
    devices = [("pi1", 1.0), ("pi2", 1.0), ("jetson", 2.5)]
    part = best_device_order(costs, devices, first_extra_s=0.01, last_extra_s=0.001)
    brute = min(_brute(costs, [s for _, s in order], 0.01, 0.001) for order in itertools.permutations(devices))
    assert part.bottleneck_s == pytest.approx(brute)
    jetson = part.devices.index("jetson")
    a, b = part.blocks[jetson]
    assert b - a == max(b2 - a2 for a2, b2 in part.blocks)  # the fast device takes the most blocks


def test_vit_b16_on_four_equal_devices_is_three_blocks_each() -> None:
    part = min_max_partition([0.03] * 12, [1.0] * 4, first_extra_s=0.002, last_extra_s=0.0005)
    assert part.blocks == ((0, 3), (3, 6), (6, 9), (9, 12))
    assert even_partition(12, 4) == part.blocks
    assert even_partition(10, 4) == ((0, 3), (3, 6), (6, 8), (8, 10))


def test_bad_inputs_raise_model_errors_naming_the_option() -> None:
    with pytest.raises(ModelError, match="--stages"):
        min_max_partition([1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ModelError, match="--devices"):
        parse_devices("pi1=fast")
    with pytest.raises(ModelError, match="--devices"):
        parse_devices("pi1=1,pi1=2")
    with pytest.raises(ModelError, match="--devices"):
        min_max_partition([1.0, 1.0], [1.0, -2.0])
    assert parse_devices("pi1=1.0, jetson=2.5") == [("pi1", 1.0), ("jetson", 2.5)]


def test_noise_between_identical_blocks_does_not_move_the_cut() -> None:
    noisy = [0.06, 0.06, 0.06, 0.06, 0.06, 0.06, 0.03, 0.03, 0.03, 0.03, 0.06, 0.06]  # a burst of load
    assert min_max_partition(noisy, [1.0] * 4).blocks != ((0, 3), (3, 6), (6, 9), (9, 12))
    pooled = pool_identical_blocks(noisy, [0] * 12)
    assert len(set(pooled)) == 1
    assert min_max_partition(pooled, [1.0] * 4, 0.009, 0.001).blocks == ((0, 3), (3, 6), (6, 9), (9, 12))
    assert pool_identical_blocks([1.0, 5.0, 3.0, 7.0], ["a", "b", "a", "b"]) == [2.0, 6.0, 2.0, 6.0]


def test_mlp_round_to_rounds_widths_to_the_nearest_multiple() -> None:
    from models.levels import ladder, mlp_kept

    assert [mlp_kept(3072, r, 64) for r in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)] == [
        3072,
        2752,
        2432,
        2176,
        1856,
        1536,
        1216,
    ]
    assert mlp_kept(3072, 0.3) == 2150  # default: torch-pruning's floor, no rounding
    assert mlp_kept(96, 0.9, 64) == 64  # never below one multiple
    assert [s.mlp_hidden for s in ladder((0.0, 0.3), 12, 3072, 64)] == [3072, 2176]
