"""What a run looks like to a person and on disk besides its tables: the terminal comparison table, the
scenario-level header of ``summary.json`` and the resolved scenario text — a library below the faces
(``edgeprune-sim``, ``edgeprune-hil``, sweeps), so none of them imports another's command module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w

from edgeprune.results import RunResult
from edgeprune.scenario import Scenario, scenario_to_dict

__all__ = ["format_table", "header", "replay_report", "scenario_toml"]


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value * scale:.{digits}f}"


def format_table(results: Sequence[RunResult]) -> str:
    """The comparison table ``edgeprune-sim`` (and ``edgeprune-hil run``) print; with device physics it adds
    energy per inference and node-hours throttled."""
    physics = any("energy_per_inference_j" in r.summary for r in results)
    head: tuple[str, ...] = ("policy", "thr/s", "p50 s", "p95 s", "p99 s", "SLO %", "accuracy", "switches", "done")
    head += ("dropped", "J/inf", "throttled h") if physics else ("dropped",)
    rows = [head]
    for r in results:
        s = r.summary
        heat = (_fmt(s.get("energy_per_inference_j"), digits=2), _fmt(s.get("throttled_s"), 1 / 3600, 2))
        rows.append(
            (
                r.policy,
                _fmt(s["throughput_hz"], digits=2),
                _fmt(s["p50_latency_s"]),
                _fmt(s["p95_latency_s"]),
                _fmt(s["p99_latency_s"]),
                _fmt(s["slo_attainment"], 100.0, 1),
                _fmt(s["mean_accuracy"]),
                _fmt(s["switches"]),
                f"{s['completed']}/{s['arrived']}",
                _fmt(s["dropped"]),
                *(heat if physics else ()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header(sc: Scenario) -> dict[str, Any]:
    """The scenario-level fields of ``summary.json``."""
    acc = sc.profile.accuracy
    doc: dict[str, Any] = {
        "scenario": sc.name,
        "seed": sc.seed,
        "slo_s": sc.slo_s,
        "stages": [s.name for s in sc.stages],
        "profile": {
            "model": sc.profile.model.get("id"),
            "accuracy_proxy": acc.proxy if acc is not None else None,
            "accuracy_note": acc.note if acc is not None else "no accuracy curve in the profile",
        },
    }
    report = replay_report(sc)
    if report is not None:  # only replays: other scenarios' summary.json stays as it was
        doc["arrivals"] = report.to_json()
    return doc


def replay_report(sc: Scenario) -> Any:
    """What a replay scenario's trace read, kept and dropped (``traces.ReplayReport``), else None."""
    from traces import ReplayArrivals, replay_report

    if not isinstance(sc.arrivals, ReplayArrivals):
        return None
    return replay_report(sc.arrivals, duration_s=sc.duration_s, n_requests=sc.n_requests)


def scenario_toml(sc: Scenario) -> str:
    """The resolved scenario as TOML text."""
    return tomli_w.dumps(_drop_none(scenario_to_dict(sc)))


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
