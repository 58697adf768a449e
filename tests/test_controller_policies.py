"""Behaviour of the built-in policies, driven by a closed-loop fluid pipeline and by short simulations.

The fluid driver answers each decision the way a pipeline would: per period, stage ``k`` serves at most
``period / (latency[k][level] * slowdown)`` requests, the rest waits.  It reports counters exactly as the
engine does (``nominal_s`` in curve units), and an oracle view for policies that want one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.config import Ctx
from edgeprune.controller import (
    Observation,
    OracleView,
    PipelineCurves,
    Policy,
    StageObs,
    make_policy,
    policy_from_table,
)
from edgeprune.errors import ConfigError
from edgeprune.profile import AccuracyCurve
from edgeprune.scenario import load_scenario
from sim.runner import run_scenario
from tests.simfixtures import write_case

RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
SPEEDUP = (1.0, 1.14, 1.28, 1.45, 1.69, 1.99, 2.64)  # measured ViT-B/16 heads+MLP speedups (models-facts.md)
STAGE_S = 0.39  # ~ one ViT-B/16 slice of 3 blocks on a Pi 4B-class node
FLOOR = 0.93
ADAPTIVE = ("bottleneck", "threshold", "predictive", "oracle")


def make_curves(slo_s: float = 3.0) -> PipelineCurves:
    """4 stages x 7 levels, latency from the measured speedups, a falling accuracy curve."""
    lat = tuple(tuple(STAGE_S / sp for sp in SPEEDUP) for _ in range(4))
    acc = AccuracyCurve(ratios=RATIOS, uniform=(0.95, 0.945, 0.94, 0.93, 0.91, 0.88, 0.84))
    return PipelineCurves(
        ratios=RATIOS,
        latency_s=lat,
        latency_p95_s=tuple(tuple(v * 1.07 for v in row) for row in lat),
        hop_s=(0.005, 0.005, 0.005),
        switch_s=3e-5,
        slo_s=slo_s,
        accuracy=acc,
    )


def policy(kind: str, curves: PipelineCurves | None = None, **params: Any) -> Policy:
    """A built-in policy from a scenario-style table (validated like a scenario's)."""
    table = {"kind": kind, **{k: v for k, v in params.items() if v is not None}}
    if kind in ADAPTIVE and "min_accuracy" not in params:
        table["min_accuracy"] = FLOOR  # min_accuracy=None: no floor
    spec = policy_from_table(table, Ctx("test"), n_stages=4, n_levels=7, has_accuracy=True)
    return make_policy(spec, curves or make_curves())


class FluidPipeline:
    """A deterministic fluid tandem queue that feeds a policy observations and applies its answers."""

    def __init__(self, curves: PipelineCurves, pol: Policy) -> None:
        self.c = curves
        self.pol = pol
        self.queue = [0.0] * curves.n_stages
        self.levels: tuple[int, ...] = (0,) * curves.n_stages
        self.arrivals: list[float] = []
        self.t = 0.0
        self.history: list[tuple[int, ...]] = []
        self.slowdown_at: Callable[[float], list[float]] = lambda t: [1.0] * curves.n_stages
        self.future_rate_hz = 0.0
        self.levels = self._decide(Observation(0.0, 0.0, 0, tuple(self._stage(k, 0, 0, 0.0) for k in range(4))))

    def _stage(self, k: int, arrived: int, served: int, slow: float) -> StageObs:
        s = self.c.latency_s[k][self.levels[k]]
        q = round(self.queue[k])
        return StageObs(
            level=self.levels[k],
            queue_len=max(q - 1, 0),
            busy=q > 0,
            arrivals=arrived,
            served=served,
            busy_s=served * s * slow,
            nominal_s=served * s,
            dropped=0,
        )

    def _decide(self, ob: Observation) -> tuple[int, ...]:
        if getattr(self.pol, "wants_oracle", False):
            ahead = [self.t + (i + 1) / self.future_rate_hz for i in range(200)] if self.future_rate_hz else []
            view = OracleView(tuple(self.slowdown_at(self.t)), np.asarray(self.arrivals + ahead, dtype=float))
            ob = Observation(ob.time_s, ob.period_s, ob.arrivals, ob.stages, view)
        out = tuple(int(v) for v in self.pol.decide(ob))
        assert len(out) == self.c.n_stages and all(0 <= v < self.c.n_levels for v in out)
        self.history.append(out)
        return out

    def run(self, seconds: int, rate_hz: float) -> None:
        """``seconds`` periods of 1 s at ``rate_hz`` (evenly spaced arrivals)."""
        for _ in range(seconds):
            self.future_rate_hz = rate_hz
            n = round(rate_hz * (self.t + 1.0)) - round(rate_hz * self.t)
            self.arrivals.extend(self.t + (i + 0.5) / max(n, 1) for i in range(n))
            slow = self.slowdown_at(self.t)
            inflow, stages = n, []
            for k in range(self.c.n_stages):
                cap = 1.0 / (self.c.latency_s[k][self.levels[k]] * slow[k])
                served = min(self.queue[k] + inflow, cap)
                self.queue[k] += inflow - served
                stages.append(self._stage(k, int(inflow), int(served), slow[k]))
                inflow = int(served)
            self.t += 1.0
            self.future_rate_hz = rate_hz
            self.levels = self._decide(Observation(self.t, 1.0, n, tuple(stages)))


def slowed(stage: int, factor: float, start_s: float, end_s: float) -> Callable[[float], list[float]]:
    """Stage ``stage`` runs ``factor`` times slower in [start_s, end_s)."""

    def at(t: float) -> list[float]:
        return [factor if k == stage and start_s <= t < end_s else 1.0 for k in range(4)]

    return at


# Stage capacity unpruned: 1 / 0.39 s = 2.56/s.  1.8/s fits unpruned; slowed 2x a stage needs > 1.4x speedup.
RATE_HZ = 1.8


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_slowing_one_stage_raises_its_level_and_recovery_lowers_it(kind: str) -> None:
    pipe = FluidPipeline(make_curves(), policy(kind, cooldown_s=10.0) if kind != "oracle" else policy(kind))
    pipe.slowdown_at = slowed(2, 2.0, 40.0, 100.0)
    pipe.run(39, RATE_HZ)
    before = pipe.levels
    pipe.run(60, RATE_HZ)  # to t = 99 s, the last period of the slowdown
    during = pipe.levels
    assert during[2] > before[2], f"{kind}: {before} -> {during}"
    assert during[2] == max(during), f"{kind}: the slowed stage is pruned most: {during}"
    pipe.run(61, RATE_HZ)
    assert pipe.levels[2] < during[2], f"{kind}: no relaxation after the slowdown: {pipe.levels}"


@pytest.mark.parametrize("kind", ["bottleneck", "threshold", "predictive"])
def test_relaxing_waits_for_the_cooldown(kind: str) -> None:
    """Every decrease of a stage's level comes at least ``cooldown_s`` after that stage's previous change."""
    cooldown = 20.0
    pipe = FluidPipeline(make_curves(), policy(kind, cooldown_s=cooldown, min_accuracy=None))
    pipe.slowdown_at = slowed(1, 2.0, 30.0, 90.0)
    pipe.run(90, RATE_HZ)
    pruned = pipe.levels[1]
    assert pruned > 0
    pipe.run(120, RATE_HZ)
    assert pipe.levels[1] < pruned
    decreases = 0
    for k in range(4):
        last_change = 0.0
        for t, (a, b) in enumerate(itertools.pairwise(pipe.history), start=1):
            if b[k] < a[k]:
                assert t - last_change >= cooldown, f"{kind}: stage {k} relaxed at t={t}, changed at {last_change}"
                decreases += 1
            if b[k] != a[k]:
                last_change = t
    assert decreases > 0


@pytest.mark.parametrize("kind", ["bottleneck", "threshold", "predictive"])
@pytest.mark.parametrize("rate_hz", [1.0, 2.2, 3.0, 3.5])
def test_no_flapping_under_stationary_load(kind: str, rate_hz: float) -> None:
    """No stage reverses direction within a cool-down; the model-based policies settle completely.

    (Not the oracle: between two rungs it time-shares them on purpose, knowing the exact queue.  The
    threshold baseline sees one queue at a time, so under loads between rungs the queue moves from stage to
    stage and it hunts, slowly: its backed-off cool-down bounds that to one change per ~7 periods.)"""
    cooldown = 10.0
    pipe = FluidPipeline(make_curves(), policy(kind, cooldown_s=cooldown))
    pipe.run(300, rate_hz)
    tail = pipe.history[100:]
    changes = sum(a != b for a, b in itertools.pairwise(tail))
    assert changes <= (30 if kind == "threshold" else 2), f"{kind} at {rate_hz}/s: {changes} changes in 200 periods"
    if kind == "threshold":
        return
    for k in range(4):
        moves = [(t, b[k] - a[k]) for t, (a, b) in enumerate(itertools.pairwise(tail)) if b[k] != a[k]]
        for (t0, d0), (t1, d1) in itertools.pairwise(moves):
            assert d0 * d1 > 0 or t1 - t0 >= cooldown, f"{kind}: stage {k} reversed within {t1 - t0} periods"


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_never_below_the_floor_when_a_feasible_vector_exists(kind: str) -> None:
    curves = make_curves()
    pipe = FluidPipeline(curves, policy(kind))
    pipe.slowdown_at = slowed(0, 3.0, 20.0, 60.0)
    for rate in (1.0, 4.0, 8.0, 2.0, 6.0):  # overloads that no feasible vector can serve
        pipe.run(25, rate)
    assert curves.accuracy is not None
    worst = min(curves.accuracy.of(v) for v in pipe.history)
    assert worst >= FLOOR
    assert max(max(v) for v in pipe.history) > 0  # it did prune


@pytest.mark.parametrize("kind", ["bottleneck", "threshold", "predictive"])
def test_a_floor_above_every_pruned_vector_keeps_no_pruning(kind: str) -> None:
    pipe = FluidPipeline(make_curves(), policy(kind, min_accuracy=0.95))  # only level 0 everywhere reaches .95
    pipe.run(60, 5.0)
    assert set(pipe.history) == {(0, 0, 0, 0)}


def test_static_answers_its_levels_whatever_happens() -> None:
    pipe = FluidPipeline(make_curves(), policy("static", levels=[1, 2, 3, 4]))
    pipe.run(20, 6.0)
    assert set(pipe.history) == {(1, 2, 3, 4)}


def test_predictive_is_no_less_accurate_than_bottleneck_at_equal_load() -> None:
    """Both meet a moderate stationary load; predictive's forecast needs less pruning than the 80 % cap."""
    curves = make_curves()
    acc = curves.accuracy
    assert acc is not None
    result = {}
    for kind in ("bottleneck", "predictive"):
        pipe = FluidPipeline(curves, policy(kind))
        pipe.run(120, 2.2)
        result[kind] = acc.of(pipe.levels)
        assert max(pipe.queue) < 3
    assert result["predictive"] >= result["bottleneck"]


def test_predictive_forecast_falls_with_load_and_rises_with_pruning() -> None:
    from edgeprune.controller.predictive import PredictivePolicy, _State

    pol = policy("predictive")
    assert isinstance(pol, PredictivePolicy)
    idle = _State(factor=[1.0] * 4, rate_hz=0.5, ca2=1.0, ahead=[0.0] * 4)
    busy = _State(factor=[1.0] * 4, rate_hz=2.4, ca2=1.0, ahead=[2.0, 3.0, 3.0, 4.0])
    assert pol.forecast(idle, [0, 0, 0, 0])[0] > 0.99
    assert pol.forecast(busy, [0, 0, 0, 0])[0] < pol.forecast(busy, [3, 3, 3, 3])[0]
    assert pol.forecast(busy, [3, 3, 3, 3])[1] < pol.forecast(busy, [0, 0, 0, 0])[1]


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"kind": "threshold", "low_queue": 5, "high_queue": 3}, r"low_queue = 5: must be < high_queue \(3\)"),
        ({"kind": "threshold", "high_queue": 0}, r"high_queue = 0"),
        ({"kind": "predictive", "target_attainment": 1.5}, r"target_attainment = 1.5"),
        ({"kind": "predictive", "target_attainment": 0.95, "relax_attainment": 0.9}, r"relax_attainment = 0.9: must"),
        ({"kind": "predictive", "max_level": 9}, r"max_level = 9: outside the ladder 0..6"),
        ({"kind": "predictive", "horizn_s": 3}, r"did you mean 'horizon_s'"),
        ({"kind": "bottleneck", "cooldown_s": -1}, r"cooldown_s = -1"),
        ({"kind": "oracle", "safety": 0.5}, r"safety = 0.5"),
        ({"kind": "oracle", "min_accuracy": 0.9}, r"no accuracy curve"),
        ({"kind": "predictve"}, r"did you mean 'predictive'"),
    ],
)
def test_bad_parameters_are_one_line_errors(table: dict[str, Any], match: str) -> None:
    has_acc = "min_accuracy" not in table
    with pytest.raises(ConfigError, match=match) as info:
        policy_from_table(table, Ctx("s.toml", "policy[0]"), n_stages=4, n_levels=7, has_accuracy=has_acc)
    assert "\n" not in str(info.value) and str(info.value).startswith("s.toml: ")


SIM_SCENARIO = """\
seed = 3
duration_s = 300
warmup_s = 20
slo_s = 1.0
profile = "profile.json"

[[stage]]
name = "s0"
device = "cpu"
[[stage]]
name = "s1"
device = "cpu"
[[stage]]
name = "s2"
device = "cpu"
[[stage]]
name = "s3"
device = "cpu"

[arrivals]
kind = "poisson"
rate_hz = 6.0

[[environment]]
device = "cpu"
start_s = 100
end_s = 200
slowdown = 1.8

[[policy]]
name = "no-pruning"
kind = "static"
levels = [0, 0, 0, 0]
{policies}
"""


@pytest.fixture(scope="module")
def sim_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    policies = "".join(f'\n[[policy]]\nname = "{k}"\nkind = "{k}"\nmin_accuracy = 0.88\n' for k in ADAPTIVE)
    case = write_case(tmp_path_factory.mktemp("sim"), SIM_SCENARIO.format(policies=policies))
    return {r.policy: r for r in run_scenario(load_scenario(case))}


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_in_simulation_a_slowdown_is_met_by_pruning_and_released_after(kind: str, sim_results: dict[str, Any]) -> None:
    import polars as pl

    tl = sim_results[kind].timeline
    phases = tl.filter(pl.col("time_s") > 0).group_by(((pl.col("time_s") - 1) // 100).alias("phase"))
    mean_level = phases.agg(pl.col("level").mean()).sort("phase")
    before, during, after = mean_level["level"].to_list()[:3]
    assert during > before and during > after
    base = sim_results["no-pruning"].summary
    s = sim_results[kind].summary
    assert s["slo_attainment"] > base["slo_attainment"] + 0.1
    assert s["mean_accuracy"] >= 0.88 - 1e-9
    assert not math.isnan(s["p95_latency_s"])


def test_in_simulation_predictive_at_least_as_good_as_bottleneck(sim_results: dict[str, Any]) -> None:
    p, b, o = (sim_results[k].summary for k in ("predictive", "bottleneck", "oracle"))
    assert p["slo_attainment"] >= b["slo_attainment"] - 0.01
    assert p["mean_accuracy"] >= b["mean_accuracy"] - 0.005
    assert o["slo_attainment"] >= p["slo_attainment"] - 0.05


def test_paper_scenarios_parse(tmp_path: Path) -> None:
    """Every shipped paper scenario validates (on a stand-in profile when the measured one is absent)."""
    import json
    import tomllib

    import tomli_w

    from tests.simfixtures import profile_dict

    folder = Path(__file__).resolve().parent.parent / "scenarios" / "paper"
    prof = profile_dict(devices=("x86-1thr", "x86-2thr"))
    (tmp_path / "p.json").write_text(json.dumps(prof))
    files = sorted(f for f in folder.glob("*.toml") if f.name != "sweep.toml")  # sweep.toml: a sweep spec
    assert {f.stem for f in files} >= {"camtrap", "slowdown", "fig5-base", "replay-mica", "replay-azure"}
    for f in files:
        table = tomllib.loads(f.read_text())
        table["profile"] = str(tmp_path / "p.json")
        replay = table["arrivals"]["kind"] == "replay"
        if replay:  # the shipped trace, named relative to the scenario's own folder, not the copy's
            table["arrivals"]["path"] = str((folder / table["arrivals"]["path"]).resolve())
        (tmp_path / f.name).write_text(tomli_w.dumps(table))
        sc = load_scenario(tmp_path / f.name)
        assert (sc.arrivals.kind == "replay") == replay
        assert {p.kind for p in sc.policies} >= {"static", "threshold", "bottleneck", "predictive", "oracle"}
        assert all(d.speed == 0.4 for d in sc.devices)
