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
from typing import Any, Literal

import numpy as np

from edgeprune.config import Ctx, build, spec_field
from edgeprune.errors import ConfigError, ProfileError, did_you_mean

__all__ = [
    "SCHEMA",
    "VERSION",
    "AccuracyCurve",
    "DeviceProfile",
    "Profile",
    "ProfileFile",
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


# ------------------------------------------------------------------------ the JSON layout, declared once
# These dataclasses are the profile file's schema: edgeprune.config.build validates a decoded file against
# them (types, bounds, unknown fields with the closest name) and edgeprune.cli.schemas publishes their JSON
# Schema.  Cross-field rules (lengths against n_stages and the ladder) are their check() methods.


@dataclass(frozen=True)
class PartitionTable:
    """``partition``: how many stages, and which transformer blocks each holds."""

    n_stages: int = spec_field(ge=1, doc="number of pipeline stages")
    blocks: tuple[tuple[int, int], ...] | None = spec_field(
        default=None, ge=0, doc="[first, end) block range of each stage"
    )

    def check(self) -> list[tuple[str, object, str]]:
        """One block range per stage."""
        if self.blocks is not None and len(self.blocks) != self.n_stages:
            return [("blocks", len(self.blocks), f"need one range per stage ({self.n_stages})")]
        return []


@dataclass(frozen=True)
class LevelsTable:
    """``levels``: the pruning ladder."""

    ratios: tuple[float, ...] = spec_field(ge=0, lt=1, min_length=1, doc="pruning ratio per level, from 0, increasing")
    detail: tuple[dict[str, Any], ...] | None = spec_field(default=None, doc="heads / MLP width kept per level")

    def check(self) -> list[tuple[str, object, str]]:
        """The ladder starts unpruned and increases; one detail entry per level."""
        if self.ratios[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(self.ratios)):
            return [("ratios", list(self.ratios), "must start at 0 and increase")]
        if self.detail is not None and len(self.detail) != len(self.ratios):
            return [("detail", len(self.detail), f"need one entry per level ({len(self.ratios)})")]
        return []


@dataclass(frozen=True)
class DeviceTable:
    """``devices.<name>``: what was measured on one device kind."""

    latency_s: tuple[tuple[tuple[float, ...], ...], ...] = spec_field(
        gt=0, doc="raw latency samples, seconds: [stage][level] -> samples"
    )
    switch_s: float | None = spec_field(default=None, ge=0, doc="time to change a stage's level, seconds")
    memory_bytes: tuple[int, ...] | None = spec_field(default=None, ge=0, doc="per stage, all levels resident")
    meta: dict[str, Any] = spec_field(default_factory=dict, doc="threads, warm-up, CPU, load, ...")

    def check(self) -> list[tuple[str, object, str]]:
        """Every stage and level has at least one sample."""
        for k, per_level in enumerate(self.latency_s):
            for lvl, samples in enumerate(per_level):
                if not samples:
                    return [(f"latency_s[{k}][{lvl}]", [], "need a non-empty list of positive seconds")]
        return []


@dataclass(frozen=True)
class PerStageAccuracy:
    """One measured per-stage level vector."""

    levels: tuple[int, ...] = spec_field(ge=0, doc="level of each stage")
    accuracy: float = spec_field(ge=0, le=1, doc="measured accuracy of the vector")
    interval: tuple[float, float] | None = spec_field(default=None, ge=0, le=1, doc="[low, high] of the accuracy")

    def check(self) -> list[tuple[str, object, str]]:
        """An interval's low end is not above its high end."""
        if self.interval is not None and self.interval[0] > self.interval[1]:
            return [("interval", list(self.interval), "need 0 <= low <= high <= 1")]
        return []


@dataclass(frozen=True)
class AccuracyTable:
    """``accuracy``: the measured (or proxy) accuracy curve."""

    uniform: tuple[float, ...] = spec_field(ge=0, le=1, doc="accuracy per level, every stage at that level")
    per_stage: tuple[PerStageAccuracy, ...] = spec_field(default=(), doc="measured per-stage level vectors")
    metric: str = spec_field(default="top1", doc="what the numbers are (top1, ...)")
    dataset: str = spec_field(default="", doc="data set measured on")
    proxy: bool = spec_field(default=False, doc="true: measured on another model or data set than the profile's")
    note: str = spec_field(default="", doc="free text")
    n_evaluated: int | None = spec_field(default=None, ge=0, doc="images each value was scored on")
    interval: str = spec_field(default="", doc="how the intervals were made (e.g. 'wilson-95')")
    uniform_interval: tuple[tuple[float, float], ...] | None = spec_field(
        default=None, ge=0, le=1, doc="per level, [low, high] of the uniform accuracy"
    )

    def check(self) -> list[tuple[str, object, str]]:
        """Every interval's low end is not above its high end."""
        for i, (lo, hi) in enumerate(self.uniform_interval or ()):
            if lo > hi:
                return [(f"uniform_interval[{i}]", [lo, hi], "need 0 <= low <= high <= 1")]
        return []


@dataclass(frozen=True)
class ProfileFile:
    """A profile JSON file as written (``schema = "edgeprune.profile"``, ``version = 1``)."""

    schema: Literal["edgeprune.profile"] = spec_field(doc="always 'edgeprune.profile'")
    version: Literal[1] = spec_field(doc="layout version (this build reads 1)")
    model: dict[str, Any] = spec_field(doc="model id, weights, input shape, ...")
    partition: PartitionTable = spec_field(doc="stages and their blocks")
    levels: LevelsTable = spec_field(doc="the pruning ladder")
    activation_bytes: tuple[int, ...] = spec_field(ge=0, doc="bytes leaving each stage per request")
    devices: dict[str, DeviceTable] = spec_field(doc="measurements per device kind")
    input_bytes: int | None = spec_field(default=None, ge=0, doc="bytes of one request's input")
    accuracy: AccuracyTable | None = spec_field(default=None, doc="accuracy curve (absent: not measured)")
    provenance: dict[str, Any] = spec_field(default_factory=dict, doc="tool, command, date, versions")

    def check(self) -> list[tuple[str, object, str]]:
        """Every per-stage and per-level list matches the partition and the ladder."""
        n, n_levels = self.partition.n_stages, len(self.levels.ratios)
        if len(self.activation_bytes) != n:
            return [("activation_bytes", list(self.activation_bytes), f"need {n} sizes, one per stage")]
        if not self.devices:
            return [("devices", {}, "no device measured")]
        for name, dev in self.devices.items():
            problem = _device_shape(dev, n, n_levels)
            if problem is not None:
                return [(f"devices.{name}.{problem[0]}", problem[1], problem[2])]
        if self.accuracy is not None:
            return _accuracy_shape(self.accuracy, n, n_levels)
        return []


def _device_shape(dev: DeviceTable, n: int, n_levels: int) -> tuple[str, object, str] | None:
    if len(dev.latency_s) != n:
        return ("latency_s", len(dev.latency_s), f"stages measured, expected {n}")
    for k, per_level in enumerate(dev.latency_s):
        if len(per_level) != n_levels:
            return (f"latency_s[{k}]", len(per_level), f"levels measured, expected {n_levels}")
    if dev.memory_bytes is not None and len(dev.memory_bytes) != n:
        return ("memory_bytes", list(dev.memory_bytes), f"need {n} sizes, one per stage")
    return None


def _accuracy_shape(acc: AccuracyTable, n: int, n_levels: int) -> list[tuple[str, object, str]]:
    if len(acc.uniform) != n_levels:
        return [("accuracy.uniform", len(acc.uniform), f"values given, expected one per level ({n_levels})")]
    if acc.uniform_interval is not None and len(acc.uniform_interval) != n_levels:
        n = len(acc.uniform_interval)
        return [("accuracy.uniform_interval", n, f"intervals given, need one [low, high] per level ({n_levels})")]
    for i, entry in enumerate(acc.per_stage):
        if len(entry.levels) != n or any(v >= n_levels for v in entry.levels):
            return [(f"accuracy.per_stage[{i}].levels", list(entry.levels), "outside the ladder")]
    return []


def profile_from_dict(raw: Any, source: str = "<memory>") -> Profile:
    """Validate a decoded profile dictionary against :class:`ProfileFile` and build a :class:`Profile`."""
    src = source
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{src}: expected a JSON object at top level")
    if raw.get("schema") != SCHEMA:
        raise ProfileError(f"{src}: schema = {raw.get('schema')!r}: not an EdgePrune profile (expected {SCHEMA!r})")
    version = raw.get("version")
    if version != VERSION:
        raise ProfileError(f"{src}: version = {version!r}: unsupported profile version (this build reads {VERSION})")
    try:
        pf = build(ProfileFile, raw, Ctx(src))
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    ratios = pf.levels.ratios
    devices = {
        name: DeviceProfile(
            name=name,
            latency_s=tuple(tuple(tuple(sorted(samples)) for samples in st) for st in d.latency_s),
            switch_s=d.switch_s,
            memory_bytes=d.memory_bytes,
            meta=dict(d.meta),
        )
        for name, d in pf.devices.items()
    }
    accuracy = None
    if pf.accuracy is not None:
        a = pf.accuracy
        accuracy = AccuracyCurve(
            ratios=ratios,
            uniform=a.uniform,
            per_stage={e.levels: e.accuracy for e in a.per_stage},
            metric=a.metric,
            dataset=a.dataset,
            proxy=a.proxy,
            note=a.note,
            n_evaluated=a.n_evaluated,
            interval=a.interval,
            uniform_interval=a.uniform_interval,
            per_stage_interval={e.levels: e.interval for e in a.per_stage if e.interval is not None},
        )
    return Profile(
        model=dict(pf.model),
        n_stages=pf.partition.n_stages,
        blocks=pf.partition.blocks,
        ratios=ratios,
        level_detail=tuple(dict(x) for x in pf.levels.detail) if pf.levels.detail is not None else None,
        activation_bytes=pf.activation_bytes,
        devices=devices,
        accuracy=accuracy,
        provenance=dict(pf.provenance),
        input_bytes=pf.input_bytes,
        source=src,
    )
