"""Cost of the device physics per node per governor period, side by side with a policy's per-tick cost.

    python bench/bench_physics.py            # a simulated day (86,400 governor periods) per figure

What a simulator adds per node when physics is on: one ``NodeRun.advance`` per change instant (governor
period 1 s here, plus tenant changes) with that period's service intervals, and a read of ``factor``.
Baseline on the same machine, same process: the ``bottleneck`` policy's ``decide`` per tick of a 4-stage
pipeline (the per-tick Python work the simulator already does), so the ratio says roughly how much a
physics-on run adds per node relative to the controller alone.  Best of 3 (neighbours only slow a run).
Busy intervals: two services per second (0.4 s busy), the rpi4b preset with a hot-afternoon ambient
schedule and one tenant, so the governor throttles part of the day.
"""

from __future__ import annotations

import time

import numpy as np

from edgeprune.config import Ctx
from edgeprune.controller import Observation, StageObs, make_policy, policy_from_table
from edgeprune.physics import NodeRun, device_physics_from_table
from tests.test_controller_policies import make_curves

DAY_S = 86400.0
PHYSICS = {
    "preset": "rpi4b",
    "thermal": {"resistance_c_per_w": 12.0, "schedule_times_s": [36000.0, 64800.0], "schedule_ambient_c": [33.0, 20.0]},
    "tenant": [{"cpu_share": 0.25, "mean_on_s": 600.0, "mean_off_s": 1800.0}],
}


def physics_day() -> tuple[float, int]:
    """Seconds for one node through a day, and the number of advance calls."""
    run = NodeRun(device_physics_from_table(PHYSICS, Ctx("bench")), DAY_S, np.random.default_rng(0))
    calls = 0
    start = time.perf_counter()
    while run.t_s < DAY_S:
        t = run.next_s
        base = float(int(t))
        run.advance(t, ((base - 0.6, base - 0.4), (base - 0.3, base - 0.1)))
        _ = run.factor
        calls += 1
    return time.perf_counter() - start, calls


def policy_day() -> float:
    """Seconds for the bottleneck policy deciding once per simulated second of a day (4 stages)."""
    spec = policy_from_table({"kind": "bottleneck"}, Ctx("bench"), n_stages=4, n_levels=7, has_accuracy=True)
    pol = make_policy(spec, make_curves())
    stages = tuple(StageObs(0, 1, True, 2, 2, 0.8, 0.78, 0) for _ in range(4))
    start = time.perf_counter()
    for i in range(int(DAY_S)):
        pol.decide(Observation(float(i + 1), 1.0, 2, stages))
    return time.perf_counter() - start


def main() -> None:
    """Print per-call costs and the ratio."""
    phys = min(physics_day() for _ in range(3))
    pol_s = min(policy_day() for _ in range(3))
    per_node_us = phys[0] / phys[1] * 1e6
    per_tick_us = pol_s / DAY_S * 1e6
    print(f"physics: {phys[1]} advance calls per node-day, {per_node_us:.1f} us each ({phys[0]:.2f} s per node-day)")
    print(f"baseline: bottleneck.decide, 4 stages, {per_tick_us:.1f} us per tick ({pol_s:.2f} s per day)")
    ratio = per_node_us / per_tick_us
    print(f"one node's physics costs {ratio:.2f}x a policy tick; 4 nodes {4 * ratio:.2f}x")


if __name__ == "__main__":
    main()
