"""Small synthetic profiles and scenarios that tests write into temporary folders.

The latencies here are made up for tests and say so in their provenance; shipped profiles are measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def profile_dict(
    n_stages: int = 4, base_s: float = 0.1, *, accuracy: bool = True, devices: tuple[str, ...] = ("cpu",), seed: int = 0
) -> dict[str, Any]:
    """A profile whose stage latency at ratio r is base_s * (1 - r) with 5% lognormal spread."""
    rng = np.random.default_rng(seed)
    lat = {
        d: {
            "latency_s": [
                [sorted((base_s * (1 - r) * rng.lognormal(0, 0.05, 12)).tolist()) for r in RATIOS]
                for _ in range(n_stages)
            ],
            "switch_s": 3e-5,
            "meta": {"threads": 1},
        }
        for d in devices
    }
    out: dict[str, Any] = {
        "schema": "edgeprune.profile",
        "version": 1,
        "model": {"id": "test-model"},
        "partition": {"n_stages": n_stages},
        "levels": {"ratios": RATIOS},
        "activation_bytes": [600_000] * (n_stages - 1) + [2048],
        "devices": lat,
        "provenance": {"tool": "tests/simfixtures.py", "notes": "synthetic, for tests only"},
    }
    if accuracy:
        out["accuracy"] = {
            "metric": "top1",
            "dataset": "synthetic",
            "proxy": True,
            "uniform": [0.95, 0.945, 0.94, 0.93, 0.91, 0.88, 0.84],
        }
    return out


BASE_SCENARIO = """\
seed = 7
duration_s = 600
warmup_s = 30
slo_s = 1.0
profile = "profile.json"

[[device]]
name = "pi1"
profile_device = "cpu"
[[device]]
name = "pi2"
profile_device = "cpu"

[[stage]]
name = "s0"
device = "pi1"
[[stage]]
name = "s1"
device = "pi2"
[[stage]]
name = "s2"
device = "pi1"
[[stage]]
name = "s3"
device = "pi2"

[network]
bandwidth_mbit_s = 1000
latency_s = 0.0005

[arrivals]
kind = "mmpp"
rates_hz = [3.0, 12.0]
mean_dwell_s = [60.0, 15.0]

[[environment]]
device = "pi2"
start_s = 200
end_s = 400
slowdown = 1.6

[[policy]]
name = "no-pruning"
kind = "static"
levels = [0, 0, 0, 0]

[[policy]]
name = "dynamic"
kind = "bottleneck"
min_accuracy = 0.85
"""


def write_case(folder: Path, scenario: str = BASE_SCENARIO, **profile_kw: Any) -> Path:
    """Write ``profile.json`` and ``scenario.toml`` into ``folder``; return the scenario path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.json").write_text(json.dumps(profile_dict(**profile_kw)))
    path = folder / "scenario.toml"
    path.write_text(scenario)
    return path


def short_scenario(duration_s: int, *, warmup_s: int = 5, slowed_s: tuple[int, int] | None = None) -> str:
    """:data:`BASE_SCENARIO` over ``duration_s`` seconds with ``warmup_s`` of warm-up, node pi2's slowdown
    moved to ``[slowed_s[0], slowed_s[1])`` if given (else it stays at 200-400 s)."""
    text = BASE_SCENARIO.replace("duration_s = 600", f"duration_s = {duration_s}")
    text = text.replace("warmup_s = 30", f"warmup_s = {warmup_s}")
    if slowed_s is not None:
        text = text.replace("start_s = 200", f"start_s = {slowed_s[0]}").replace(
            "end_s = 400", f"end_s = {slowed_s[1]}"
        )
    return text


def write_sweep(folder: Path, spec: str, scenario: str) -> Path:
    """Write the case (profile and ``scenario``) into ``folder/case`` and ``spec`` as ``folder/sweep.toml``
    (a spec for it says ``base = "case/scenario.toml"``); return the spec's path."""
    write_case(folder / "case", scenario)
    path = folder / "sweep.toml"
    path.write_text(spec)
    return path
