"""Contiguous pipeline partition of transformer blocks over devices of given relative speeds.

The vision tower is cut into ``K`` contiguous stages, stage ``k`` running on device ``k``.  With per-block
latencies ``c_0 … c_{B-1}`` measured on a reference device, extra fixed costs for the first stage (patch
embedding) and the last (pooling, projection) and device speeds ``s_k`` (relative to the reference; 2.0 =
twice as fast), the pipeline's throughput is set by its slowest stage, so we minimise the bottleneck::

    min over cuts  max_k  (sum of c_i in stage k [+ extras]) / s_k

This is the classic min-max ("balanced bottleneck") contiguous partition, solved exactly by dynamic
programming in O(K · B²).  :func:`best_device_order` also searches the order of the devices along the
pipeline (K! orders, fine for the handful of devices of an edge cluster).

This module does not import torch.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from edgeprune.errors import ModelError

__all__ = [
    "Partition",
    "best_device_order",
    "even_partition",
    "min_max_partition",
    "parse_devices",
    "pool_identical_blocks",
]


@dataclass(frozen=True)
class Partition:
    """A contiguous cut: ``blocks[k] = (start, stop)`` and the predicted stage latencies on their devices."""

    blocks: tuple[tuple[int, int], ...]
    stage_latency_s: tuple[float, ...]
    devices: tuple[str, ...]
    speeds: tuple[float, ...]

    @property
    def bottleneck_s(self) -> float:
        """Latency of the slowest stage (its inverse is the pipeline's throughput)."""
        return max(self.stage_latency_s)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (used by ``edgeprune-profile partition --out``)."""
        return {
            "blocks": [list(b) for b in self.blocks],
            "devices": list(self.devices),
            "speeds": list(self.speeds),
            "stage_latency_s": list(self.stage_latency_s),
            "bottleneck_s": self.bottleneck_s,
        }


def even_partition(n_blocks: int, n_stages: int) -> tuple[tuple[int, int], ...]:
    """Equal block counts per stage (the earlier stages take the remainder)."""
    _check_counts(n_blocks, n_stages)
    base, extra = divmod(n_blocks, n_stages)
    cuts, start = [], 0
    for k in range(n_stages):
        stop = start + base + (1 if k < extra else 0)
        cuts.append((start, stop))
        start = stop
    return tuple(cuts)


def _check_counts(n_blocks: int, n_stages: int) -> None:
    if n_stages < 1:
        raise ModelError(f"--stages = {n_stages}: need at least one stage")
    if n_stages > n_blocks:
        raise ModelError(f"--stages = {n_stages}: the model has only {n_blocks} blocks")


def min_max_partition(
    block_latency_s: Sequence[float],
    speeds: Sequence[float],
    first_extra_s: float = 0.0,
    last_extra_s: float = 0.0,
    devices: Sequence[str] | None = None,
) -> Partition:
    """Exact min-max contiguous partition of the blocks over ``len(speeds)`` stages, in the given device order.

    Every stage holds at least one block.  Ties between optimal cuts are broken towards earlier cuts, so the
    answer is deterministic.
    """
    costs = [float(c) for c in block_latency_s]
    n_blocks, n_stages = len(costs), len(speeds)
    _check_counts(n_blocks, n_stages)
    if any(not math.isfinite(s) or s <= 0 for s in speeds):
        raise ModelError(f"--devices: speeds must be positive numbers, got {list(speeds)}")
    prefix = [0.0, *itertools.accumulate(costs)]

    def stage_cost(k: int, i: int, j: int) -> float:
        work = prefix[j] - prefix[i] + (first_extra_s if i == 0 else 0.0) + (last_extra_s if j == n_blocks else 0.0)
        return work / speeds[k]

    inf = math.inf
    # best[k][j]: smallest bottleneck of stages 0..k covering blocks [0, j); cut[k][j]: start of stage k.
    best = [[inf] * (n_blocks + 1) for _ in range(n_stages)]
    cut = [[0] * (n_blocks + 1) for _ in range(n_stages)]
    for j in range(1, n_blocks + 1):
        best[0][j] = stage_cost(0, 0, j)
    for k in range(1, n_stages):
        for j in range(k + 1, n_blocks + 1):
            for i in range(k, j):
                value = max(best[k - 1][i], stage_cost(k, i, j))
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    bounds, j = [], n_blocks
    for k in range(n_stages - 1, -1, -1):
        i = cut[k][j] if k > 0 else 0
        bounds.append((i, j))
        j = i
    bounds.reverse()
    names = tuple(devices) if devices is not None else tuple(f"device{k}" for k in range(n_stages))
    return Partition(
        blocks=tuple(bounds),
        stage_latency_s=tuple(stage_cost(k, a, b) for k, (a, b) in enumerate(bounds)),
        devices=names,
        speeds=tuple(float(s) for s in speeds),
    )


def best_device_order(
    block_latency_s: Sequence[float],
    devices: Sequence[tuple[str, float]],
    first_extra_s: float = 0.0,
    last_extra_s: float = 0.0,
) -> Partition:
    """The min-max partition over every order of the devices along the pipeline (first best order wins)."""
    best: Partition | None = None
    for order in itertools.permutations(devices):
        p = min_max_partition(
            block_latency_s, [s for _, s in order], first_extra_s, last_extra_s, devices=[n for n, _ in order]
        )
        if best is None or p.bottleneck_s < best.bottleneck_s:
            best = p
    assert best is not None
    return best


def pool_identical_blocks(block_latency_s: Sequence[float], shape_keys: Sequence[Hashable]) -> list[float]:
    """Replace each block's latency by the median over blocks of the same shape.

    Blocks of one shape do the same arithmetic, so their measured differences are noise (other processes,
    caches); on a shared machine that noise can be large enough to move a cut.  Pooling keeps the partition
    driven by real cost differences (patch embedding, pooling, differently sized blocks).
    """
    if len(block_latency_s) != len(shape_keys):
        raise ModelError(f"{len(block_latency_s)} block latencies for {len(shape_keys)} blocks")
    groups: dict[Hashable, list[float]] = {}
    for cost, key in zip(block_latency_s, shape_keys, strict=True):
        groups.setdefault(key, []).append(float(cost))
    medians = {key: statistics.median(values) for key, values in groups.items()}
    return [medians[key] for key in shape_keys]


def parse_devices(text: str) -> list[tuple[str, float]]:
    """Parse ``"pi1=1.0,pi2=1.0,jetson=2.5"`` (name = speed relative to the profiled device)."""
    out: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            speed = float(value) if sep else math.nan
        except ValueError:
            speed = math.nan
        if not name or not math.isfinite(speed) or speed <= 0:
            raise ModelError(f"--devices = {text!r}: expected name=speed pairs with positive speeds, e.g. pi1=1.0")
        out.append((name.strip(), speed))
    if not out:
        raise ModelError(f"--devices = {text!r}: no device given")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ModelError(f"--devices = {text!r}: device names must be unique")
    return out
