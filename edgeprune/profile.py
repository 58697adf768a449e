"""The profile: what the offline benchmark measured, in a versioned JSON schema.

A profile describes one model cut into ``n_stages`` pipeline stages with a ladder of pruning levels, and
holds, per *device* (a measured platform, e.g. ``"x86-2c-1thr"`` or ``"pi4b"``), per stage and per level,
raw latency samples in seconds, so a simulator can sample service times from the measured distribution,
not only use the mean.  It is written by ``edgeprune-profile`` (``models/``) and read by the simulator, the
controller's curves and the HIL coordinator.  Fields that were not measured are absent, never invented.

JSON layout (``schema = "edgeprune.profile"``, ``version = 1``)::

    {
      "schema": "edgeprune.profile", "version": 1,
      "model": {"id": "ViT-B-16", "weights": "random-init", "input_shape": [3, 224, 224], ...},
      "partition": {"n_stages": 4, "blocks": [[0, 3], [3, 6], [6, 9], [9, 12]]},
      "levels": {"ratios": [0.0, 0.1, ...], "detail": [{"heads": 12, "mlp_hidden": 3072}, ...]},
      "activation_bytes": [605184, 605184, 605184, 2048],   # bytes leaving stage k, per request
      "input_bytes": 602112,                                 # optional
      "devices": {
        "<device>": {
          "latency_s": [[[samples of level 0], [level 1], ...] per stage],
          "switch_s": 2.9e-05,                               # optional: time to change a stage's level
          "memory_bytes": [...],                             # optional: per stage, all levels resident
          "meta": {"threads": 1, "warmup": 5, "cpu": "...", ...}
        }
      },
      "accuracy": {                                          # optional
        "metric": "top1", "dataset": "...", "proxy": false, "note": "...",
        "uniform": [0.99, 0.98, ...],                        # per level, every stage at that level
        "per_stage": [{"levels": [0, 3, 1, 6], "accuracy": 0.95}, ...],  # optional
        "n_evaluated": 450,                                  # optional: images each value was scored on
        "interval": "wilson-95",                             # optional: how the intervals below were made
        "uniform_interval": [[0.97, 0.995], ...]             # optional: per level, [low, high]
      },                                                     # (per_stage entries may hold "interval" too)
      "provenance": {"tool": "...", "date": "...", "host": "...", "notes": "..."}
    }

Accuracy of an arbitrary per-stage level vector: the measured value when the vector was measured,
otherwise the uniform curve linearly interpolated at the vector's mean pruning ratio (the pruning-aware
training issue measured per-stage vectors within 2 points of that estimate).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import ProfileError, did_you_mean

__all__ = [
    "SCHEMA",
    "VERSION",
    "AccuracyCurve",
    "DeviceProfile",
    "Profile",
    "load_profile",
    "profile_from_dict",
]

SCHEMA = "edgeprune.profile"
VERSION = 1


@dataclass(frozen=True)
class DeviceProfile:
    """Latency measurements of every stage at every level on one device kind."""

    name: str
    latency_s: tuple[tuple[tuple[float, ...], ...], ...]  # [stage][level] -> sorted samples
    switch_s: float | None = None
    memory_bytes: tuple[int, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def mean_s(self, stage: int, level: int) -> float:
        """Mean measured latency of ``stage`` at ``level``."""
        samples = self.latency_s[stage][level]
        return math.fsum(samples) / len(samples)

    def quantile_s(self, stage: int, level: int, q: float) -> float:
        """Empirical ``q``-quantile of the measured latency."""
        return float(np.quantile(np.asarray(self.latency_s[stage][level]), q))


@dataclass(frozen=True)
class AccuracyCurve:
    """Estimated accuracy of the pipeline as a function of each stage's level."""

    ratios: tuple[float, ...]
    uniform: tuple[float, ...]
    per_stage: Mapping[tuple[int, ...], float] = field(default_factory=dict)
    metric: str = "top1"
    dataset: str = ""
    proxy: bool = False
    note: str = ""
    #: Optional uncertainty: images scored, the interval's method (e.g. ``"wilson-95"``), per-level bounds.
    n_evaluated: int | None = None
    interval: str = ""
    uniform_interval: tuple[tuple[float, float], ...] | None = None
    per_stage_interval: Mapping[tuple[int, ...], tuple[float, float]] = field(default_factory=dict)

    def of(self, levels: Sequence[int]) -> float:
        """Accuracy of a per-stage level vector (measured if known, else the mean-ratio interpolation)."""
        key = tuple(int(v) for v in levels)
        hit = self.per_stage.get(key)
        if hit is not None:
            return hit
        mean_ratio = math.fsum(self.ratios[v] for v in key) / len(key)
        return float(np.interp(mean_ratio, self.ratios, self.uniform))


@dataclass(frozen=True)
class Profile:
    """A validated profile (see the module docstring for the JSON layout)."""

    model: Mapping[str, Any]
    n_stages: int
    blocks: tuple[tuple[int, int], ...] | None
    ratios: tuple[float, ...]
    level_detail: tuple[Mapping[str, Any], ...] | None
    activation_bytes: tuple[int, ...]
    devices: Mapping[str, DeviceProfile]
    accuracy: AccuracyCurve | None
    provenance: Mapping[str, Any]
    input_bytes: int | None = None
    source: str = "<memory>"

    @property
    def n_levels(self) -> int:
        """Number of rungs on the pruning ladder (level 0 = unpruned)."""
        return len(self.ratios)

    def device(self, name: str) -> DeviceProfile:
        """The named device's measurements; unknown names suggest the closest."""
        try:
            return self.devices[name]
        except KeyError:
            raise ProfileError(
                f"{self.source}: devices.{name}: no such device in the profile" + did_you_mean(name, self.devices)
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dictionary (inverse of :func:`profile_from_dict`)."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "version": VERSION,
            "model": dict(self.model),
            "partition": {"n_stages": self.n_stages},
            "levels": {"ratios": list(self.ratios)},
            "activation_bytes": list(self.activation_bytes),
            "devices": {},
            "provenance": dict(self.provenance),
        }
        if self.blocks is not None:
            out["partition"]["blocks"] = [list(b) for b in self.blocks]
        if self.level_detail is not None:
            out["levels"]["detail"] = [dict(d) for d in self.level_detail]
        if self.input_bytes is not None:
            out["input_bytes"] = self.input_bytes
        for name, dev in self.devices.items():
            d: dict[str, Any] = {"latency_s": [[list(s) for s in st] for st in dev.latency_s]}
            if dev.switch_s is not None:
                d["switch_s"] = dev.switch_s
            if dev.memory_bytes is not None:
                d["memory_bytes"] = list(dev.memory_bytes)
            d["meta"] = dict(dev.meta)
            out["devices"][name] = d
        if self.accuracy is not None:
            acc = self.accuracy
            a: dict[str, Any] = {"metric": acc.metric, "dataset": acc.dataset, "proxy": acc.proxy}
            if acc.note:
                a["note"] = acc.note
            a["uniform"] = list(acc.uniform)
            if acc.per_stage:
                a["per_stage"] = [
                    {"levels": list(k), "accuracy": v}
                    | ({"interval": list(acc.per_stage_interval[k])} if k in acc.per_stage_interval else {})
                    for k, v in acc.per_stage.items()
                ]
            if acc.n_evaluated is not None:
                a["n_evaluated"] = acc.n_evaluated
            if acc.interval:
                a["interval"] = acc.interval
            if acc.uniform_interval is not None:
                a["uniform_interval"] = [list(b) for b in acc.uniform_interval]
            out["accuracy"] = a
        return out

    def save(self, path: str | Path) -> None:
        """Write the profile atomically as JSON."""
        from edgeprune.results import atomic_write_text  # local: results imports profile

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile JSON file; any problem is a one-line :class:`ProfileError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{p}: profile file not found") from None
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read profile: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{p}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    return profile_from_dict(raw, source=str(p))


def _need(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], src: str, where: str) -> Any:
    if key not in raw:
        raise ProfileError(f"{src}: {where}{key}: required field is missing")
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProfileError(f"{src}: {where}{key} = {str(value)[:40]}: wrong type")
    return value


_TOP_KEYS = {
    "schema",
    "version",
    "model",
    "partition",
    "levels",
    "activation_bytes",
    "input_bytes",
    "devices",
    "accuracy",
    "provenance",
}


def _bounds(value: Any, where: str) -> tuple[float, float]:
    """An accuracy interval ``[low, high]`` with 0 <= low <= high <= 1."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ProfileError(f"{where} = {value!r}: need [low, high]")
    lo, hi = float(value[0]), float(value[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ProfileError(f"{where} = {[lo, hi]}: need 0 <= low <= high <= 1")
    return lo, hi


def profile_from_dict(raw: Any, source: str = "<memory>") -> Profile:
    """Validate a decoded profile dictionary and build a :class:`Profile`."""
    src = source
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{src}: expected a JSON object at top level")
    if raw.get("schema") != SCHEMA:
        raise ProfileError(f"{src}: schema = {raw.get('schema')!r}: not an EdgePrune profile (expected {SCHEMA!r})")
    version = raw.get("version")
    if version != VERSION:
        raise ProfileError(f"{src}: version = {version!r}: unsupported profile version (this build reads {VERSION})")
    for key in raw:
        if key not in _TOP_KEYS:
            raise ProfileError(f"{src}: {key}: unknown field" + did_you_mean(key, _TOP_KEYS))
    model = _need(raw, "model", dict, src, "")
    part = _need(raw, "partition", dict, src, "")
    n_stages = _need(part, "n_stages", int, src, "partition.")
    if n_stages < 1:
        raise ProfileError(f"{src}: partition.n_stages = {n_stages}: must be >= 1")
    blocks = None
    if "blocks" in part:
        blocks = tuple((int(a), int(b)) for a, b in part["blocks"])
        if len(blocks) != n_stages:
            raise ProfileError(f"{src}: partition.blocks: {len(blocks)} ranges for {n_stages} stages")
    levels = _need(raw, "levels", dict, src, "")
    ratios = tuple(float(r) for r in _need(levels, "ratios", list, src, "levels."))
    if not ratios or ratios[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(ratios)):
        raise ProfileError(f"{src}: levels.ratios = {list(ratios)}: must start at 0 and increase")
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise ProfileError(f"{src}: levels.ratios = {list(ratios)}: ratios must lie in [0, 1)")
    detail = levels.get("detail")
    if detail is not None and len(detail) != len(ratios):
        raise ProfileError(f"{src}: levels.detail: {len(detail)} entries for {len(ratios)} levels")
    act = tuple(int(b) for b in _need(raw, "activation_bytes", list, src, ""))
    if len(act) != n_stages or any(b < 0 for b in act):
        raise ProfileError(f"{src}: activation_bytes = {list(act)}: need {n_stages} non-negative sizes")
    devices_raw = _need(raw, "devices", dict, src, "")
    if not devices_raw:
        raise ProfileError(f"{src}: devices: no device measured")
    devices: dict[str, DeviceProfile] = {}
    for name, d in devices_raw.items():
        where = f"devices.{name}."
        lat = _need(d, "latency_s", list, src, where)
        if len(lat) != n_stages:
            raise ProfileError(f"{src}: {where}latency_s: {len(lat)} stages, expected {n_stages}")
        stages = []
        for k, per_level in enumerate(lat):
            if not isinstance(per_level, list) or len(per_level) != len(ratios):
                raise ProfileError(f"{src}: {where}latency_s[{k}]: expected {len(ratios)} levels")
            lv = []
            for lvl, samples in enumerate(per_level):
                arr = np.asarray(samples, dtype=float)
                if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                    raise ProfileError(
                        f"{src}: {where}latency_s[{k}][{lvl}]: need a non-empty list of positive seconds"
                    )
                lv.append(tuple(sorted(float(x) for x in arr)))
            stages.append(tuple(lv))
        switch = d.get("switch_s")
        mem = d.get("memory_bytes")
        devices[name] = DeviceProfile(
            name=name,
            latency_s=tuple(stages),
            switch_s=float(switch) if switch is not None else None,
            memory_bytes=tuple(int(m) for m in mem) if mem is not None else None,
            meta=dict(d.get("meta", {})),
        )
    accuracy = None
    if raw.get("accuracy") is not None:
        a = raw["accuracy"]
        uniform = tuple(float(x) for x in _need(a, "uniform", list, src, "accuracy."))
        if len(uniform) != len(ratios):
            raise ProfileError(f"{src}: accuracy.uniform: {len(uniform)} values for {len(ratios)} levels")
        per_stage: dict[tuple[int, ...], float] = {}
        per_stage_interval: dict[tuple[int, ...], tuple[float, float]] = {}
        for i, entry in enumerate(a.get("per_stage", [])):
            key = tuple(int(v) for v in entry["levels"])
            if len(key) != n_stages or any(not 0 <= v < len(ratios) for v in key):
                raise ProfileError(f"{src}: accuracy.per_stage[{i}].levels = {list(key)}: outside the ladder")
            per_stage[key] = float(entry["accuracy"])
            if entry.get("interval") is not None:
                per_stage_interval[key] = _bounds(entry["interval"], f"{src}: accuracy.per_stage[{i}].interval")
        uniform_interval = None
        if a.get("uniform_interval") is not None:
            raw_iv = a["uniform_interval"]
            if not isinstance(raw_iv, list) or len(raw_iv) != len(ratios):
                raise ProfileError(f"{src}: accuracy.uniform_interval: need one [low, high] per level ({len(ratios)})")
            uniform_interval = tuple(_bounds(b, f"{src}: accuracy.uniform_interval[{i}]") for i, b in enumerate(raw_iv))
        accuracy = AccuracyCurve(
            ratios=ratios,
            uniform=uniform,
            per_stage=per_stage,
            metric=str(a.get("metric", "top1")),
            dataset=str(a.get("dataset", "")),
            proxy=bool(a.get("proxy", False)),
            note=str(a.get("note", "")),
            n_evaluated=int(a["n_evaluated"]) if a.get("n_evaluated") is not None else None,
            interval=str(a.get("interval", "")),
            uniform_interval=uniform_interval,
            per_stage_interval=per_stage_interval,
        )
    return Profile(
        model=dict(model),
        n_stages=n_stages,
        blocks=blocks,
        ratios=ratios,
        level_detail=tuple(dict(x) for x in detail) if detail is not None else None,
        activation_bytes=act,
        devices=devices,
        accuracy=accuracy,
        provenance=dict(raw.get("provenance", {})),
        input_bytes=int(raw["input_bytes"]) if raw.get("input_bytes") is not None else None,
        source=src,
    )
