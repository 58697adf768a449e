"""Device physics parameters: thermal RC, DVFS governor, power, co-located tenants (frozen, validated).

Every table is read with :func:`edgeprune.config.build`, so a bad value is one line naming the file, the
dotted key and the value (``FILE: device[1].physics.thermal.resistance_c_per_w = -1: must be > 0``).
:func:`device_physics_from_table` also accepts ``preset = "rpi4b"`` (a TOML file shipped in
``edgeprune/physics/presets/``) with per-key overrides on top.  Every preset number is an *assumption*
until a cluster run calibrates it; the preset files name each number's source.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from edgeprune.config import Ctx, build, spec_field
from edgeprune.errors import did_you_mean

__all__ = [
    "DevicePhysics",
    "DvfsParams",
    "PowerParams",
    "TenantParams",
    "ThermalParams",
    "device_physics_from_table",
    "load_preset",
    "preset_names",
]

Problems = list[tuple[str, object, str]]
_TAU_KEYS = ("time_constant_s", "capacitance_j_per_c")


def _increasing(values: tuple[float, ...]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


@dataclass(frozen=True)
class ThermalParams:
    """Lumped RC model ``C dT/dt = P - (T - T_amb) / R``; steady state ``T_amb + R P``, time constant ``R C``."""

    resistance_c_per_w: float = spec_field(gt=0, doc="thermal resistance node -> ambient")
    ambient_c: float = spec_field(default=25.0, ge=-60, le=150, doc="ambient temperature (before any schedule)")
    time_constant_s: float | None = spec_field(default=None, gt=0, doc="tau = R C (or give capacitance_j_per_c)")
    capacitance_j_per_c: float | None = spec_field(default=None, gt=0, doc="heat capacity C (or time_constant_s)")
    initial_c: float | None = spec_field(default=None, ge=-60, le=150, doc="temperature at t = 0 (default ambient)")
    schedule_times_s: tuple[float, ...] = spec_field(default=(), ge=0, doc="ambient change points")
    schedule_ambient_c: tuple[float, ...] = spec_field(default=(), ge=-60, le=150, doc="ambient from each point on")

    def check(self) -> Problems:
        """Exactly one of time constant / capacitance; a consistent ambient schedule."""
        if (self.time_constant_s is None) == (self.capacitance_j_per_c is None):
            return [
                ("time_constant_s", self.time_constant_s, "give exactly one of time_constant_s or capacitance_j_per_c")
            ]
        if len(self.schedule_times_s) != len(self.schedule_ambient_c):
            return [("schedule_ambient_c", list(self.schedule_ambient_c), "need one temperature per schedule_times_s")]
        if not _increasing(self.schedule_times_s):
            return [("schedule_times_s", list(self.schedule_times_s), "change points must increase")]
        return []

    @property
    def tau_s(self) -> float:
        """Time constant ``R C`` in seconds."""
        if self.time_constant_s is not None:
            return self.time_constant_s
        assert self.capacitance_j_per_c is not None
        return self.resistance_c_per_w * self.capacitance_j_per_c

    @property
    def start_c(self) -> float:
        """Temperature at t = 0."""
        return self.initial_c if self.initial_c is not None else self.ambient_at(0.0)

    def ambient_at(self, t_s: float) -> float:
        """Ambient temperature at time ``t_s``: ``ambient_c`` before the first change point."""
        j = bisect_right(self.schedule_times_s, t_s)
        return self.ambient_c if j == 0 else self.schedule_ambient_c[j - 1]


@dataclass(frozen=True)
class DvfsParams:
    """Frequency ladder and the governor that walks it (a step down per threshold crossed, hysteresis up)."""

    freqs_mhz: tuple[float, ...] = spec_field(gt=0, doc="frequency steps, strictly descending (index 0 = max)")
    thresholds_c: tuple[float, ...] = spec_field(ge=-60, le=150, doc="at T >= thresholds_c[i]: step i+1 or lower")
    hard_limit_c: float = spec_field(ge=-60, le=150, doc="at T >= this, the lowest step at once")
    hysteresis_c: float = spec_field(default=2.0, ge=0, doc="step back up only below threshold - hysteresis")
    period_s: float = spec_field(default=1.0, gt=0, doc="governor decision period")
    alpha: float = spec_field(default=1.0, ge=0, le=1, doc="service time s(f) = s(f_max) (f_max / f)^alpha")

    def check(self) -> Problems:
        """Ladder strictly descending; one threshold per step below the top, ascending, not above the limit."""
        f = self.freqs_mhz
        if not f:
            return [("freqs_mhz", [], "need at least one frequency")]
        if any(b >= a for a, b in itertools.pairwise(f)):
            return [("freqs_mhz", list(f), "the ladder must be strictly descending (highest frequency first)")]
        if len(self.thresholds_c) != len(f) - 1:
            return [("thresholds_c", list(self.thresholds_c), f"need {len(f) - 1} thresholds (one per lower step)")]
        if any(b < a for a, b in zip(self.thresholds_c, self.thresholds_c[1:], strict=False)):
            return [("thresholds_c", list(self.thresholds_c), "thresholds must not decrease")]
        above = [t for t in self.thresholds_c if t > self.hard_limit_c]
        if above:
            return [
                (
                    "thresholds_c",
                    list(self.thresholds_c),
                    f"threshold {above[0]} above hard_limit_c ({self.hard_limit_c})",
                )
            ]
        return []

    @property
    def soft_limit_c(self) -> float:
        """The first throttling threshold (the hard limit for a one-step ladder)."""
        return self.thresholds_c[0] if self.thresholds_c else self.hard_limit_c


@dataclass(frozen=True)
class PowerParams:
    """``P = idle_w + busy_core_w[f] * busy cores + tenant extra``; per-core power per frequency step."""

    idle_w: float = spec_field(ge=0, doc="node power with no core busy")
    busy_core_w: tuple[float, ...] = spec_field(ge=0, doc="power added per busy core, per frequency step")
    cores: int = spec_field(default=4, gt=0, doc="cores of the node")


@dataclass(frozen=True)
class TenantParams:
    """A co-located load switching on and off: it takes a CPU share while on and adds its heat."""

    cpu_share: float = spec_field(gt=0, le=1, doc="share of the node's cores it keeps busy while on")
    mean_on_s: float = spec_field(gt=0, doc="mean on duration")
    mean_off_s: float = spec_field(gt=0, doc="mean off duration")
    distribution: Literal["exponential", "fixed", "uniform"] = spec_field(
        default="exponential", doc="durations: exponential, fixed (= mean) or uniform on [0, 2 mean]"
    )
    extra_w: float = spec_field(default=0.0, ge=0, doc="power it draws beyond its CPU share while on")
    start_on: bool = spec_field(default=False, doc="on at t = 0")


@dataclass(frozen=True)
class DevicePhysics:
    """All the physics of one node (see ``ARCHITECTURE.md``, "Device physics")."""

    thermal: ThermalParams = spec_field(doc="thermal RC")
    dvfs: DvfsParams = spec_field(doc="frequency ladder and governor")
    power: PowerParams = spec_field(doc="idle and per-core power")
    tenant: tuple[TenantParams, ...] = spec_field(default=(), doc="co-located loads")
    stage_cores: float | None = spec_field(default=None, gt=0, doc="cores a service keeps busy (default: all)")
    preset: str | None = spec_field(default=None, doc="the preset these values started from")

    def check(self) -> Problems:
        """One power figure per frequency step; a stage cannot use more cores than the node has."""
        n = len(self.dvfs.freqs_mhz)
        if len(self.power.busy_core_w) != n:
            return [("power.busy_core_w", list(self.power.busy_core_w), f"need {n} values, one per dvfs.freqs_mhz")]
        if self.stage_cores is not None and self.stage_cores > self.power.cores:
            return [("stage_cores", self.stage_cores, f"more than power.cores ({self.power.cores})")]
        return []

    @property
    def service_cores(self) -> float:
        """Cores one service keeps busy."""
        return float(self.power.cores) if self.stage_cores is None else self.stage_cores

    @classmethod
    def from_table(cls, table: object, ctx: Ctx) -> DevicePhysics:
        """Build from a TOML table (``preset`` + overrides); used by :func:`edgeprune.config.build`."""
        return device_physics_from_table(table, ctx)


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("edgeprune.physics") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw table of a shipped preset (``KeyError`` if there is none of that name)."""
    import tomllib

    if name not in preset_names():
        raise KeyError(name)
    text = (resources.files("edgeprune.physics") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; sub-tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def device_physics_from_table(table: object, ctx: Ctx) -> DevicePhysics:
    """Validate a ``physics`` table: optional ``preset = NAME`` whose values the other keys override."""
    if not isinstance(table, Mapping):
        raise ctx.error(table, "expected a table")
    merged: dict[str, Any] = dict(table)
    name = merged.get("preset")
    if name is not None:
        names = preset_names()
        if not isinstance(name, str) or name not in names:
            raise ctx.child("preset").error(name, "unknown preset" + did_you_mean(str(name), names))
        preset = load_preset(name)
        thermal = table.get("thermal")
        if isinstance(thermal, Mapping) and set(_TAU_KEYS) & set(thermal):
            # the user's choice of tau or C replaces the preset's, whichever form the preset used
            preset["thermal"] = {k: v for k, v in preset["thermal"].items() if k not in _TAU_KEYS}
        merged = _merge(preset, merged)
    return build(DevicePhysics, merged, ctx)
