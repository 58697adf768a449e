"""Accuracy with its uncertainty: Wilson intervals in the profile, whiskers in the chart, proxies labelled."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from simfixtures import write_case

from edgeprune.errors import ProfileError
from edgeprune.profile import load_profile, profile_from_dict

wilson_interval = pytest.importorskip("models.accuracy").wilson_interval  # models needs torch


def _wilson_by_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (430, 450), (225, 450)])
def test_wilson_interval_matches_the_formula(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    want = _wilson_by_formula(k, n)
    assert (lo, hi) == (pytest.approx(max(0.0, want[0]), abs=1e-12), pytest.approx(min(1.0, want[1]), abs=1e-12))
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def _profile_doc(tmp_path: Path) -> dict[str, Any]:
    case = write_case(tmp_path / "case")
    doc: dict[str, Any] = json.loads((case.parent / "profile.json").read_text())
    assert doc.get("accuracy") is not None
    return doc


def test_profile_keeps_accuracy_intervals_and_old_profiles_still_load(tmp_path: Path) -> None:
    doc = _profile_doc(tmp_path)
    acc = doc["accuracy"]
    plain = profile_from_dict(doc)
    assert plain.accuracy is not None and plain.accuracy.uniform_interval is None  # backwards compatible
    n_levels = len(acc["uniform"])
    acc |= {
        "n_evaluated": 450,
        "interval": "wilson-95",
        "uniform_interval": [[max(0.0, a - 0.02), min(1.0, a + 0.01)] for a in acc["uniform"]],
    }
    loaded = profile_from_dict(doc)
    assert loaded.accuracy is not None and loaded.accuracy.n_evaluated == 450
    assert loaded.accuracy.uniform_interval is not None and len(loaded.accuracy.uniform_interval) == n_levels
    again = profile_from_dict(json.loads(json.dumps(loaded.to_dict())))  # round trip
    assert again.accuracy == loaded.accuracy
    acc["uniform_interval"] = [[0.5, 0.4]] * n_levels
    with pytest.raises(ProfileError, match=r"uniform_interval\[0\] = \[0.5, 0.4\]: need 0 <= low <= high <= 1"):
        profile_from_dict(doc)


def test_accuracy_chart_draws_the_interval_and_labels_a_proxy(tmp_path: Path) -> None:
    from edgeprune.report.charts import accuracy_chart, accuracy_frame

    doc = _profile_doc(tmp_path)
    acc = doc["accuracy"]
    acc |= {"proxy": True, "n_evaluated": 450, "interval": "wilson-95"}
    acc["uniform_interval"] = [[max(0.0, a - 0.02), min(1.0, a + 0.01)] for a in acc["uniform"]]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    profiles = [("p", load_profile(path))]
    frame = accuracy_frame(profiles)
    assert frame["lo"].null_count() == 0 and (frame["hi"] >= frame["accuracy"]).all()
    assert set(frame["strategy"]) <= {"uniform (proxy)", "per-stage (measured) (proxy)"}
    chart = accuracy_chart(profiles)
    assert chart is not None
    text = json.dumps(chart.spec)
    assert chart.title.startswith("Proxy accuracy") and '"y2": {"field": "hi"' in text
    assert "PROXY" in chart.caption and "wilson-95 on 450 images" in chart.caption
