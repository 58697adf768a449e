"""The findings that open a report: built from a results table with a known winner and known sustainable loads."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from edgeprune.report.findings import run_findings, sustainable_frame, sweep_findings
from edgeprune.report.stats import mean_ci
from edgeprune.report.tables import findings_table, slo_pivot, sweep_table

RATES = [1.0, 2.0, 3.0, 4.0]
SEEDS = [0, 1, 2]
#: Per policy and seed: the first rate whose SLO attainment falls below 90% (None: never).
FIRST_MISS = {
    "no-pruning": {0: 2.0, 1: 2.0, 2: 3.0},  # sustains 1, 1, 2  -> mean 4/3
    "adaptive": {0: 4.0, 1: None, 2: 4.0},  # sustains 3, 4, 3  -> mean 10/3
    "always-max": {0: None, 1: None, 2: None},  # every rate, every seed: at least 4 (censored)
}
ACCURACY = {"no-pruning": 0.95, "adaptive": 0.93, "always-max": 0.80}
ENERGY_J = {"no-pruning": 2.0, "adaptive": 1.5, "always-max": 1.0}


def _results(energy: bool) -> pl.DataFrame:
    rows = []
    for policy, misses in FIRST_MISS.items():
        for seed in SEEDS:
            for rate in RATES:
                miss = misses[seed]
                ok = miss is None or rate < miss
                # accuracy falls with load for the adaptive policy: the finding must take it at the sustained load
                acc = ACCURACY[policy] - (0.01 * rate if policy == "adaptive" else 0.0)
                row = {
                    "seed": seed,
                    "rate_hz": rate,
                    "policy": policy,
                    "slo_attainment": 0.95 if ok else 0.5,
                    "mean_accuracy": acc,
                }
                if energy:
                    row["energy_per_inference_j"] = ENERGY_J[policy] + 0.1 * seed
                rows.append(row)
    return pl.DataFrame(rows)


def _t_half(values: list[float]) -> float:
    x = np.asarray(values)
    return float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def test_sustainable_load_per_seed_then_interval() -> None:
    table = sustainable_frame(_results(False), "rate_hz", [], 0.9)
    row = {r["policy"]: r for r in table.iter_rows(named=True)}
    assert row["no-pruning"]["sustainable_x"] == pytest.approx(4 / 3)
    assert row["no-pruning"]["sustainable_x_hi"] - 4 / 3 == pytest.approx(_t_half([1, 1, 2]))
    assert row["no-pruning"]["sustainable_x_lo"] == 0.0  # clipped: no load below zero
    assert row["adaptive"]["sustainable_x"] == pytest.approx(10 / 3)
    assert row["adaptive"]["sustainable_x_hi"] == 4.0  # clipped to the highest tested load
    assert (row["always-max"]["sustainable_x"], row["always-max"]["censored"]) == (4.0, True)
    assert not row["adaptive"]["censored"]
    # accuracy at each seed's sustained load (3, 4, 3) -> mean 0.93 - 0.01 * 10/3
    assert row["adaptive"]["mean_accuracy"] == pytest.approx(0.93 - 0.01 * 10 / 3)


def test_sentences_name_the_winner_and_carry_the_numbers() -> None:
    (found,) = sweep_findings(_results(False), "rate_hz", [], target=0.9, baseline="no-pruning", unit="req/s")
    meets, winner, others = found.sentences
    assert meets.startswith("all 3 policies meet the 90% SLO-attainment target up to 1 req/s")
    assert "none does" not in meets  # always-max meets it everywhere
    assert winner.startswith("always-max sustains the most load with ≥ 90% SLO attainment: at least 4.00 ± 0.00 req/s")
    assert "3.0× no-pruning (1.33 (0.00–" in winner  # 4 / (4/3), and the baseline's clipped interval
    assert "mean accuracy 0.800 (-0.150 vs no-pruning)" in winner
    assert "J per inference" not in winner  # no energy column, no energy figure
    half = _t_half([3, 4, 3])
    assert f"adaptive {10 / 3:.2f} ({10 / 3 - half:.2f}–4.00) req/s" in others
    assert f"mean accuracy {0.93 - 0.01 * 10 / 3:.3f}" in others


def test_energy_is_included_when_the_results_have_it() -> None:
    (found,) = sweep_findings(_results(True), "rate_hz", [], target=0.9, baseline="no-pruning", unit="req/s")
    winner = found.sentences[1]
    # always-max at its sustained load: 1.0 + 0.1 * seed -> 1.1 J; no-pruning over the regime: 2.1 J -> -48%
    assert "1.1 J per inference (-48% vs no-pruning)" in winner
    table = findings_table(found.table, [], "req/s", "no-pruning")
    assert "J/inf" in table.headers
    assert "J/inf" not in findings_table(sweep_findings(_results(False), "rate_hz", [])[0].table, [], "", "x").headers
    # the long table carries the energy column too, only when the results have it
    for energy in (True, False):
        full = _results(energy).with_columns(
            pl.lit(1.0).alias(c) for c in ("p95_latency_s", "p99_latency_s", "throughput_hz", "goodput_hz")
        )
        headers = sweep_table(full.with_columns(pl.col("rate_hz").alias("offered_rate_hz")), ["rate_hz"]).headers
        assert ("J/inf" in headers) == energy


def test_regimes_are_found_per_setting_of_the_other_axes() -> None:
    fast = _results(False).with_columns(pl.lit(1.0).alias("slowdown"))
    slow = _results(False).with_columns(
        pl.lit(2.0).alias("slowdown"), (pl.col("slo_attainment") * 0 + 0.5).alias("slo_attainment")
    )
    found = sweep_findings(pl.concat([fast, slow]), "rate_hz", ["slowdown"], unit="req/s")
    assert [f.regime for f in found] == ["slowdown=1", "slowdown=2"]
    assert found[1].sentences[0].startswith("slowdown=2: no policy meets the 90% SLO-attainment target at any")
    assert "sustains the most load" in found[1].sentences[1] and "no tested load" in found[1].sentences[1]


def test_higher_target_lowers_the_sustainable_load() -> None:
    results = _results(False).with_columns(
        pl.when(pl.col("rate_hz") >= 3).then(0.92).otherwise(pl.col("slo_attainment")).alias("slo_attainment")
    )
    at_90 = sustainable_frame(results, "rate_hz", [], 0.90).filter(pl.col("policy") == "always-max")
    at_95 = sustainable_frame(results, "rate_hz", [], 0.95).filter(pl.col("policy") == "always-max")
    assert (at_90["sustainable_x"][0], at_95["sustainable_x"][0]) == (4.0, 2.0)


def test_run_findings_and_pivot() -> None:
    frame = pl.DataFrame(
        {
            "scenario": ["s"] * 3,
            "backend": ["sim"] * 3,
            "seed": [0] * 3,
            "policy": ["no-pruning", "adaptive", "always-max"],
            "slo_attainment": [0.4, 0.97, 0.99],
            "mean_accuracy": [0.95, 0.93, 0.80],
            "p95_latency_s": [9.0, 2.0, 1.0],
        }
    )
    (sentence,) = run_findings(frame, target=0.9)
    assert sentence.startswith("s (sim): adaptive and always-max meet the 90% SLO-attainment target. Best: always-max")
    assert "99.0% (p95 1 s), mean accuracy 0.800 (-0.150 vs no-pruning)" in sentence
    table = mean_ci(_results(False), ["rate_hz", "policy"], ["slo_attainment"])
    pivot = slo_pivot(table, ["rate_hz"], 0.9, "t")
    assert pivot.headers == ("rate_hz", "no-pruning", "adaptive", "always-max")
    assert pivot.rows[0][1].endswith("✓") and not pivot.rows[3][1].endswith("✓")
    assert pivot.shades[3][1] == pytest.approx(0.5) and pivot.shades[0][0] is None
