"""Simulator vs hardware: the simulator's prediction of the same scenario next to what the cluster did.

The prediction is :func:`sim.runner.run_policy` on the same scenario, the same arrival times
(:func:`sim.runner.draw_streams`) and the profile measured on the same nodes (``edgeprune-hil profile``).
Errors: latency percentiles and throughput as relative errors ``(hw - sim) / sim`` in percent, SLO
attainment as the difference in percentage points.  The acceptance bounds of the project (p50 within 10 %,
SLO attainment within 5 points) are flagged per policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from edgeprune.errors import HilError
from edgeprune.profile import Profile
from edgeprune.results import RunResult
from edgeprune.scenario import DeviceSpec, Scenario

__all__ = ["P50_BOUND", "SLO_BOUND_POINTS", "compare", "format_compare", "predict", "with_profile"]

P50_BOUND = 0.10
SLO_BOUND_POINTS = 5.0
_METRICS = ("p50_latency_s", "p95_latency_s", "p99_latency_s", "slo_attainment", "throughput_hz")


def with_profile(sc: Scenario, profile: Profile, device: str | None = None) -> Scenario:
    """``sc`` using ``profile``; with ``device``, every stage's node maps to that profile device."""
    if device is None:
        for k in range(len(sc.stages)):
            profile.device(sc.device_of(k).profile_device)  # raises with the closest name
        return replace(sc, profile=profile, profile_path=profile.source)  # type: ignore[arg-type]
    if profile.n_stages != len(sc.stages) or profile.n_levels != sc.profile.n_levels:
        raise HilError(
            f"{profile.source}: {profile.n_stages} stages x {profile.n_levels} levels, the scenario "
            f"{sc.source} has {len(sc.stages)} x {sc.profile.n_levels}"
        )
    names = {s.device for s in sc.stages} | {d.name for d in sc.devices} | {e.device for e in sc.environment}
    devices = tuple(DeviceSpec(name=n, profile_device=device, speed=1.0) for n in sorted(names))
    return replace(sc, profile=profile, profile_path=profile.source, devices=devices)  # type: ignore[arg-type]


def predict(sc: Scenario, policies: Sequence[str]) -> dict[str, RunResult]:
    """The simulator's results for the named policies of ``sc``."""
    from sim.runner import draw_streams, run_policy

    streams = draw_streams(sc)
    return {p.name: run_policy(sc, p, streams) for p in sc.policies if p.name in policies}


def _err(metric: str, sim: float | None, hw: float | None) -> float | None:
    if sim is None or hw is None:
        return None
    if metric == "slo_attainment":
        return (hw - sim) * 100.0
    return (hw - sim) / sim * 100.0 if sim else None


def compare(hw: Mapping[str, RunResult], sim: Mapping[str, RunResult]) -> dict[str, Any]:
    """Per policy: sim and hw figures, the errors, and whether the bounds hold."""
    out: dict[str, Any] = {
        "errors": "latency and throughput: (hw - sim) / sim in %; slo_attainment: hw - sim in points",
        "bounds": {"p50_latency_pct": P50_BOUND * 100, "slo_attainment_points": SLO_BOUND_POINTS},
        "policies": {},
    }
    for name, h in hw.items():
        s = sim.get(name)
        if s is None:
            continue
        rows = {
            m: {"sim": s.summary.get(m), "hw": h.summary.get(m), "error": _err(m, s.summary.get(m), h.summary.get(m))}
            for m in _METRICS
        }
        p50 = rows["p50_latency_s"]["error"]
        slo = rows["slo_attainment"]["error"]
        rows_out: dict[str, Any] = dict(rows)
        rows_out["within_bounds"] = {
            "p50": p50 is not None and abs(p50) <= P50_BOUND * 100,
            "slo": slo is not None and abs(slo) <= SLO_BOUND_POINTS,
        }
        out["policies"][name] = rows_out
    return out


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "slo_attainment":
        return f"{v * 100:.1f}%"
    if metric == "throughput_hz":
        return f"{v:.2f}/s"
    return f"{v * 1000:.1f}ms"


def format_compare(doc: Mapping[str, Any]) -> str:
    """The sim-vs-hardware table as text."""
    lines = [f"{'policy':<14}{'metric':<16}{'sim':>10}{'hw':>10}{'error':>10}"]
    for name, rows in doc["policies"].items():
        for m in _METRICS:
            r = rows[m]
            e = r["error"]
            unit = " pt" if m == "slo_attainment" else " %"
            err = "-" if e is None else f"{e:+.1f}{unit}"
            lines.append(f"{name:<14}{m:<16}{_fmt(m, r['sim']):>10}{_fmt(m, r['hw']):>10}{err:>10}")
        ok = rows["within_bounds"]
        lines.append(f"{name:<14}{'within bounds':<16}  p50 ±10%: {ok['p50']}  SLO ±5 pt: {ok['slo']}")
    return "\n".join(lines)


def to_json(doc: Mapping[str, Any]) -> str:
    """Stable JSON text."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
