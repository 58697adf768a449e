"""Fitting recovers the parameters of traces drawn from the project's own generators, the printed
``[arrivals]`` block is a valid scenario table that generates again, and traces generated from the fits to
the shipped recorded traces have their burstiness (inter-arrival CV, peak per minute) within 15%."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.config import Ctx
from edgeprune.errors import TraceError
from traces import CameraTrapArrivals, MmppArrivals, arrivals_from_table, generate
from traces.fit import arrivals_toml, compare_generated, fit_camera_trap, fit_mmpp, mmpp_log_likelihood
from traces.replay import load_replay
from traces.spec import ReplayArrivals

SHIPPED = Path(__file__).resolve().parents[1] / "traces" / "data"


def test_mmpp_fit_recovers_rates_and_dwell_times_within_ten_percent() -> None:
    truth = MmppArrivals(rates_hz=(0.2, 5.0), mean_dwell_s=(10.0, 5.0))
    t = generate(truth, np.random.default_rng(1), n_requests=12_000)
    fitted = fit_mmpp(t, 2, n_starts=2).spec
    assert fitted.rates_hz == pytest.approx(truth.rates_hz, rel=0.10)
    assert fitted.mean_dwell_s == pytest.approx(truth.mean_dwell_s, rel=0.10)


def test_mmpp_likelihood_prefers_the_true_parameters() -> None:
    truth = MmppArrivals(rates_hz=(0.5, 4.0), mean_dwell_s=(8.0, 4.0))
    gaps = np.diff(generate(truth, np.random.default_rng(2), n_requests=5000))
    q_true = np.array([[-1 / 8, 1 / 8], [1 / 4, -1 / 4]])
    q_slow = q_true / 4
    true_ll = mmpp_log_likelihood(gaps, np.array([0.5, 4.0]), q_true)
    assert true_ll > mmpp_log_likelihood(gaps, np.array([0.5, 4.0]), q_slow)
    assert true_ll > mmpp_log_likelihood(gaps, np.array([2.0, 2.0]), q_true)  # a plain Poisson at the mean


@pytest.mark.parametrize(
    "truth",
    [
        CameraTrapArrivals(trigger_rate_hz=1 / 600, burst_size_mean=5, burst_size_max=30, frame_interval_s=0.5),
        CameraTrapArrivals(
            trigger_rate_hz=1 / 300,
            burst_size_mean=4,
            burst_size_max=12,
            frame_interval_s=1.0,
            burst_size_dist="poisson",
            frame_jitter_s=0.2,
        ),
        CameraTrapArrivals(
            trigger_rate_hz=1 / 900,
            burst_size_mean=10,
            burst_size_max=10,
            frame_interval_s=0.5,
            burst_size_dist="fixed",
        ),
    ],
    ids=["geometric", "poisson-jitter", "fixed"],
)
def test_camera_trap_fit_recovers_trigger_rate_burst_size_and_interval(truth: CameraTrapArrivals) -> None:
    t = generate(truth, np.random.default_rng(3), n_requests=10_000)
    fitted = fit_camera_trap(t)
    assert fitted.trigger_modulation == ()  # Poisson triggers: the information criterion keeps them Poisson
    assert fitted.burst_size_dist == truth.burst_size_dist
    assert fitted.mean_burst_size() == pytest.approx(truth.mean_burst_size(), rel=0.05)
    assert fitted.trigger_rate_hz == pytest.approx(truth.trigger_rate_hz, rel=0.10)
    assert fitted.frame_interval_s == pytest.approx(truth.frame_interval_s, rel=0.05)
    assert fitted.frame_jitter_s == pytest.approx(truth.frame_jitter_s, abs=0.05)


def test_sequence_ids_define_the_bursts_when_the_trace_has_them() -> None:
    t = np.array([0.0, 1.0, 2.0, 100.0, 101.0, 500.0])
    by_gap = fit_camera_trap(t, burst_gap_s=10.0)
    by_sequence = fit_camera_trap(t, sequences=np.array(["a", "a", "b", "b", "b", "c"]))
    assert by_gap.burst_size_max == 3 and by_sequence.burst_size_max == 3
    assert by_gap.trigger_rate_hz == pytest.approx(3 / 500) and by_sequence.trigger_rate_hz == pytest.approx(3 / 500)


def test_the_printed_block_is_a_valid_arrivals_table(tmp_path: Path) -> None:
    spec = fit_camera_trap(generate(CameraTrapArrivals(1 / 60, 3, 8, 0.5), np.random.default_rng(4), n_requests=600))
    text = arrivals_toml(spec, "fitted\nfrom a test")
    assert text.startswith('# fitted\n# from a test\n[arrivals]\nkind = "camera-trap"\n')
    rebuilt = arrivals_from_table(tomllib.loads(text)["arrivals"], Ctx("fit.toml", "arrivals"), tmp_path)
    assert rebuilt == spec
    assert generate(rebuilt, np.random.default_rng(5), duration_s=3600.0).size > 0


def test_too_few_events_or_states_are_one_line_errors() -> None:
    with pytest.raises(TraceError, match=r"fit: 10 events are too few to fit an MMPP"):
        fit_mmpp(np.arange(10.0))
    with pytest.raises(TraceError, match=r"fit: n_states = 4: an MMPP fit supports 2 or 3 states"):
        fit_mmpp(np.arange(100.0), 4)
    bursts = np.repeat(np.arange(10) * 600.0, 3) + np.tile([0.0, 0.5, 1.0], 10)
    with pytest.raises(TraceError, match=r"fit: 10 bursts are too few to fit modulated triggers .*'poisson'$"):
        fit_camera_trap(bursts, triggers="mmpp")
    assert fit_camera_trap(bursts).trigger_modulation == ()  # auto: too few to tell, Poisson


ON_OFF = CameraTrapArrivals(
    trigger_rate_hz=1 / 300,
    burst_size_mean=5,
    burst_size_max=30,
    frame_interval_s=0.5,
    trigger_modulation=(0.0, 1.0),
    trigger_mean_dwell_s=(7200.0, 3600.0),
)


def test_modulated_triggers_keep_the_long_run_rate_and_fall_only_in_the_busy_state() -> None:
    process = ON_OFF.trigger_process()
    assert process is not None and process.rates_hz == pytest.approx((0.0, 3 / 300)) and process.start_state == 1
    t = generate(ON_OFF, np.random.default_rng(6), duration_s=3e6)
    assert t.size / 3e6 == pytest.approx(ON_OFF.mean_rate_hz(), rel=0.05)
    # half-hour counts: with Poisson triggers of the same mean rate almost no half hour would be empty
    counts = np.bincount((t // 1800).astype(np.int64), minlength=int(3e6 // 1800))
    assert (counts == 0).mean() > 0.5


def test_camera_trap_fit_recovers_modulated_triggers() -> None:
    t = generate(ON_OFF, np.random.default_rng(7), n_requests=20_000)
    fitted = fit_camera_trap(t)
    process, truth = fitted.trigger_process(), ON_OFF.trigger_process()
    assert process is not None and truth is not None
    assert process.mean_dwell_s == pytest.approx(truth.mean_dwell_s, rel=0.20)
    assert process.rates_hz[1] == pytest.approx(truth.rates_hz[1], rel=0.15)
    assert process.rates_hz[0] < 0.01 * process.rates_hz[1]
    assert fit_camera_trap(t, triggers="poisson").trigger_modulation == ()


def test_a_modulated_block_round_trips(tmp_path: Path) -> None:
    text = arrivals_toml(ON_OFF)
    assert "trigger_modulation = [" in text and "trigger_transition" not in text
    assert arrivals_from_table(tomllib.loads(text)["arrivals"], Ctx("fit.toml", "arrivals"), tmp_path) == ON_OFF


@pytest.mark.parametrize(
    "path",
    [
        SHIPPED / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv",
        SHIPPED / "mica_camtrapdp" / "camtraptor_mica_media.csv",
    ],
    ids=["azure", "mica"],
)
def test_a_fit_to_a_shipped_trace_generates_its_cv_and_peak_per_minute_within_15_percent(path: Path) -> None:
    info = load_replay(ReplayArrivals(path=str(path)))
    spec = fit_camera_trap(info.times_s, sequences=info.sequences)
    check = compare_generated(spec, info.times_s, range(5))
    cv_error, peak_error = check.relative_errors()
    assert abs(cv_error) <= 0.15 and abs(peak_error) <= 0.15, check.describe()
    assert spec.trigger_modulation  # Poisson triggers do not: the recordings' triggers come in clusters
    poisson = compare_generated(
        fit_camera_trap(info.times_s, sequences=info.sequences, triggers="poisson"), info.times_s, range(5)
    )
    assert abs(poisson.relative_errors()[0]) > 0.15, poisson.describe()
