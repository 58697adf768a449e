"""Clock-reset outliers: an injected factory-date cluster is found, reported and droppable; clean traces are
left alone (synthetic processes and the shipped recorded traces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from traces import CameraTrapArrivals, MmppArrivals, PoissonArrivals, generate, load_trace, replay_report
from traces.outliers import find_clock_resets
from traces.spec import ReplayArrivals

DATA = Path(__file__).resolve().parent.parent / "traces" / "data"
YEAR_S = 365 * 86400.0
CAMERA = CameraTrapArrivals(trigger_rate_hz=1 / 900, burst_size_mean=5, burst_size_max=20, frame_interval_s=0.5)


def _iso(epoch_s: np.ndarray) -> list[str]:
    return np.datetime_as_string(epoch_s.astype("datetime64[s]"), unit="s").tolist()


@pytest.fixture
def reset_trace(tmp_path: Path) -> Path:
    """Three weeks of a camera trap from 2021-05-01, plus 6 images stamped on 2018-01-01 after a clock reset."""
    real = 1_619_827_200 + generate(CAMERA, np.random.default_rng(11), duration_s=21 * 86400.0)
    reset = 1_514_764_800 + np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3600.0])
    stamps = np.concatenate([real[:100], reset, real[100:]])  # the reset rows sit mid-file, as in an export
    body = "image_id,deployment_id,timestamp\n" + "".join(
        f"i{i},d1,{s.replace('T', ' ')}\n" for i, s in enumerate(_iso(stamps))
    )
    path = tmp_path / "images.csv"
    path.write_text(body, encoding="utf-8")
    return path


def test_an_injected_clock_reset_is_found_and_reported(reset_trace: Path) -> None:
    info = load_trace(reset_trace)
    assert len(info.outliers) == 1 and info.outliers[0].n_rows == 6
    assert info.outliers[0].gap_s > 3 * YEAR_S
    assert info.origin == "2018-01-01T00:00:00"  # kept: the replay would start at the factory date ...
    assert "6 rows look like a clock reset" in info.describe() and "outliers = 'drop'" in info.describe()


def test_dropping_the_outliers_starts_the_trace_at_the_real_recording(reset_trace: Path) -> None:
    info = load_trace(reset_trace, outliers="drop")
    assert info.origin.startswith("2021-05-01") and info.times_s[0] == 0.0
    assert dict(info.dropped) == {"clock-reset outliers": 6}
    report = replay_report(ReplayArrivals(str(reset_trace), outliers="drop"), duration_s=None, n_requests=None)
    assert report.kept == info.n_events and report.rows_read == report.kept + 6
    assert "6 clock-reset outlier rows dropped" in report.line()


@pytest.mark.parametrize(
    "spec",
    [
        PoissonArrivals(rate_hz=0.01),
        MmppArrivals(rates_hz=(0.001, 0.5), mean_dwell_s=(20000.0, 600.0)),
        CAMERA,
    ],
    ids=["poisson", "mmpp", "camera-trap"],
)
def test_clean_synthetic_traces_are_left_alone(spec: object) -> None:
    t = generate(spec, np.random.default_rng(3), n_requests=20_000)  # type: ignore[arg-type]
    mask, clusters = find_clock_resets(t)
    assert not mask.any() and clusters == ()


@pytest.mark.parametrize(
    "path", ["azure_llm_2023/AzureLLMInferenceTrace_code.csv", "mica_camtrapdp/camtraptor_mica_media.csv"]
)
def test_the_shipped_recorded_traces_have_no_outliers(path: str) -> None:
    assert load_trace(DATA / path).outliers == ()
