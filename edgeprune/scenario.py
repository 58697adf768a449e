"""The scenario: one TOML file saying what to simulate (or run on hardware), validated in one place.

:func:`load_scenario` reads the file and :func:`scenario_from_table` (which also serves a document already in
memory, such as a sweep cell) checks every key against the frozen dataclasses below (unknown keys
get the closest valid name), loads the profile it names, cross-checks stages, devices, levels and
policies against that profile, and returns a :class:`Scenario`.  Every problem is one
:class:`~edgeprune.errors.ConfigError` line naming the file, the dotted key and the value.

Top-level keys (see ``ARCHITECTURE.md`` for the full schema with examples)::

    name, description        free text
    seed                     int, the root of every random stream of the run
    duration_s | n_requests  arrivals are generated over [0, duration_s) or for n_requests requests
    warmup_s                 requests arriving earlier are simulated but excluded from the summary
    slo_s                    end-to-end latency objective (arrival to leaving the last stage)
    drain_s                  after the last arrival, keep running this long; then unfinished = missed
    profile                  path to the profile JSON, relative to this file
    [[device]]               name, profile_device, speed, physics (see ``edgeprune.physics``)
    [[stage]]                name, device          (stage k runs profile stage k)
    [network]                bandwidth_mbit_s, latency_s      default for every hop between stages
    [[link]]                 after, bandwidth_mbit_s, latency_s   override for the hop after a stage
    [arrivals]               kind + the kind's keys (see ``traces``)
    [[environment]]          device + (start_s, end_s, slowdown) or (times_s, slowdowns)
    [queue]                  capacity, drop
    [[policy]]               name, kind + the kind's keys (see ``edgeprune.controller``)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeprune.config import Ctx, build, load_toml, spec_field
from edgeprune.controller.registry import PolicySpec, policy_from_table
from edgeprune.errors import ConfigError, ProfileError, did_you_mean
from edgeprune.limits import check_run_size
from edgeprune.physics import DevicePhysics
from edgeprune.profile import Profile, load_profile
from traces import arrivals_from_table  # traces sits below the scenario: it imports only errors and config

__all__ = [
    "DeviceSpec",
    "EnvironmentEvent",
    "LinkSpec",
    "NetworkSpec",
    "QueueSpec",
    "Scenario",
    "StageSpec",
    "arrivals_end_s",
    "load_scenario",
    "scenario_from_table",
    "scenario_to_dict",
]


@dataclass(frozen=True)
class DeviceSpec:
    """A node of the pipeline and where its latencies come from."""

    name: str = spec_field(doc="node name used by stages and environment events")
    profile_device: str = spec_field(doc="device entry of the profile whose latencies this node has")
    speed: float = spec_field(
        default=1.0, gt=0, doc="relative speed vs. the profiled device (latency / speed); an assumption"
    )
    physics: DevicePhysics | None = spec_field(
        default=None, doc="temperature, DVFS, power, tenants (preset + overrides; unset = no physics)"
    )


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: stage k of the scenario runs stage k of the profile's partition."""

    name: str = spec_field(doc="stage name")
    device: str = spec_field(doc="a [[device]] name, or a device of the profile")


@dataclass(frozen=True)
class NetworkSpec:
    """Default hop between consecutive stages (none: zero transfer time)."""

    bandwidth_mbit_s: float | None = spec_field(default=None, gt=0, doc="link rate; unset = infinite")
    latency_s: float = spec_field(default=0.0, ge=0, doc="one-way propagation and stack latency")


@dataclass(frozen=True)
class LinkSpec:
    """Override of the hop leaving stage ``after``."""

    after: str = spec_field(doc="the stage the hop leaves from")
    bandwidth_mbit_s: float | None = spec_field(default=None, gt=0, doc="link rate; unset = infinite")
    latency_s: float = spec_field(default=0.0, ge=0, doc="one-way latency")


@dataclass(frozen=True)
class EnvironmentEvent:
    """A device's service times multiplied by a factor over a window, or by a piecewise schedule."""

    device: str = spec_field(doc="the node affected")
    slowdown: float | None = spec_field(default=None, gt=0, doc="factor on service times in [start_s, end_s)")
    start_s: float = spec_field(default=0.0, ge=0, doc="window start")
    end_s: float | None = spec_field(default=None, gt=0, doc="window end (unset: to the end of the run)")
    times_s: tuple[float, ...] | None = spec_field(default=None, ge=0, min_length=1, doc="schedule change points")
    slowdowns: tuple[float, ...] | None = spec_field(
        default=None, gt=0, min_length=1, doc="factor from each change point on"
    )

    def check(self) -> list[tuple[str, object, str]]:
        """Exactly one of the window or schedule forms, consistent."""
        window = self.slowdown is not None
        schedule = self.times_s is not None or self.slowdowns is not None
        if window == schedule:
            return [("slowdown", self.slowdown, "give either slowdown (+ start_s, end_s) or times_s + slowdowns")]
        if schedule:
            if self.times_s is None or self.slowdowns is None or len(self.times_s) != len(self.slowdowns):
                return [("slowdowns", self.slowdowns, "need one slowdown per entry of times_s")]
            if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
                return [("times_s", list(self.times_s), "change points must increase")]
        if self.end_s is not None and self.end_s <= self.start_s:
            return [("end_s", self.end_s, f"must be > start_s ({self.start_s})")]
        return []

    def change_points(self) -> list[tuple[float, float]]:
        """``(time_s, factor)`` pairs; the factor holds from that time until the next pair."""
        if self.times_s is not None and self.slowdowns is not None:
            pts = list(zip(self.times_s, self.slowdowns, strict=True))
            if pts[0][0] > 0:
                pts.insert(0, (0.0, 1.0))
            return pts
        assert self.slowdown is not None
        pts = [(self.start_s, self.slowdown)]
        if self.start_s > 0:
            pts.insert(0, (0.0, 1.0))
        if self.end_s is not None:
            pts.append((self.end_s, 1.0))
        return pts


@dataclass(frozen=True)
class QueueSpec:
    """Per-stage waiting room."""

    capacity: int | None = spec_field(default=None, ge=0, doc="waiting requests per stage; unset = unbounded")
    drop: Literal["tail", "head"] = field(
        default="tail", metadata={"doc": "full queue: drop the arriving (tail) or the oldest waiting (head)"}
    )


@dataclass(frozen=True)
class _RawScenario:
    """The TOML file as written (before cross-checks against the profile)."""

    slo_s: float = spec_field(gt=0, doc="end-to-end latency objective")
    profile: str = spec_field(doc="profile JSON path, relative to the scenario file")
    stage: tuple[StageSpec, ...] = spec_field(doc="the stages in pipeline order")
    arrivals: dict[str, Any] = spec_field(doc="arrival process (kind + parameters)")
    policy: tuple[dict[str, Any], ...] = spec_field(doc="policies to compare")
    name: str = spec_field(default="", doc="scenario name")
    description: str = spec_field(default="", doc="free text")
    seed: int = spec_field(default=0, ge=0, doc="root seed")
    duration_s: float | None = spec_field(default=None, gt=0, doc="arrivals over [0, duration_s)")
    n_requests: int | None = spec_field(default=None, gt=0, doc="or: this many requests")
    warmup_s: float = spec_field(default=0.0, ge=0, doc="excluded from the summary")
    drain_s: float | None = spec_field(default=None, ge=0, doc="run on after the last arrival (default 10 x SLO)")
    device: tuple[DeviceSpec, ...] = spec_field(default=(), doc="nodes")
    network: NetworkSpec = spec_field(default_factory=NetworkSpec, doc="default hop")
    link: tuple[LinkSpec, ...] = spec_field(default=(), doc="per-hop overrides")
    environment: tuple[EnvironmentEvent, ...] = spec_field(default=(), doc="slowdowns")
    queue: QueueSpec = spec_field(default_factory=QueueSpec, doc="queue capacity and drop policy")

    def check(self) -> list[tuple[str, object, str]]:
        """Exactly one of duration_s / n_requests; at least one stage and one policy."""
        if (self.duration_s is None) == (self.n_requests is None):
            return [("duration_s", self.duration_s, "give exactly one of duration_s or n_requests")]
        if not self.stage:
            return [("stage", [], "need at least one [[stage]]")]
        if not self.policy:
            return [("policy", [], "need at least one [[policy]]")]
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            return [("warmup_s", self.warmup_s, f"must be < duration_s ({self.duration_s})")]
        return []


@dataclass(frozen=True)
class Scenario:
    """A validated scenario with its profile loaded.  ``source`` is the file it came from."""

    source: Path
    name: str
    description: str
    seed: int
    duration_s: float | None
    n_requests: int | None
    warmup_s: float
    drain_s: float
    slo_s: float
    profile_path: Path
    profile: Profile
    devices: tuple[DeviceSpec, ...]
    stages: tuple[StageSpec, ...]
    network: NetworkSpec
    links: tuple[LinkSpec, ...]
    arrivals: Any  # traces.ArrivalSpec
    environment: tuple[EnvironmentEvent, ...]
    queue: QueueSpec
    policies: tuple[PolicySpec, ...]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def device_of(self, stage: int) -> DeviceSpec:
        """The node stage ``stage`` runs on."""
        name = self.stages[stage].device
        for d in self.devices:
            if d.name == name:
                return d
        return DeviceSpec(name=name, profile_device=name, speed=1.0)

    def with_seed(self, seed: int) -> Scenario:
        """The same scenario with another root seed."""
        raw = dict(self.raw)
        raw["seed"] = seed
        return replace(self, seed=seed, raw=raw)

    def with_policies(self, names: list[str]) -> Scenario:
        """Only the named policies (unknown names are a ConfigError with the closest name)."""
        known = {p.name: p for p in self.policies}
        chosen = []
        for n in names:
            if n not in known:
                raise ConfigError(f"{self.source}: policy {n!r}: not in the scenario" + did_you_mean(n, known))
            chosen.append(known[n])
        return replace(self, policies=tuple(chosen))


def load_scenario(path: str | Path, *, seed: int | None = None, policies: Sequence[str] | None = None) -> Scenario:
    """Read, validate and resolve a scenario file (see the module docstring); ``seed`` replaces its root
    seed and ``policies`` keeps only the named ones (what every CLI's ``--seed`` and ``--policy`` mean)."""
    src = Path(path)
    sc = scenario_from_table(load_toml(src), src, src.parent)
    if seed is not None:
        sc = sc.with_seed(seed)
    return sc.with_policies(list(policies)) if policies else sc


def scenario_from_table(table: Mapping[str, Any], source: str | Path, base_dir: Path) -> Scenario:
    """Validate and resolve a scenario document already in memory (a file's table, a sweep cell's).

    ``source`` names the document in every error (``SOURCE: key = value: problem``) and becomes
    :attr:`Scenario.source` (its stem is the default name); relative paths resolve against ``base_dir``.
    The table is kept as :attr:`Scenario.raw`, not copied."""
    src = Path(source)
    ctx = Ctx(str(source))
    raw = build(_RawScenario, table, ctx)
    profile_path = (base_dir / raw.profile).resolve() if not Path(raw.profile).is_absolute() else Path(raw.profile)
    try:
        profile = load_profile(profile_path)
    except ProfileError as exc:
        raise ConfigError(f"{source}: profile = {raw.profile!r}: {exc}") from None
    _check_placement(raw, profile, ctx)
    arrivals = arrivals_from_table(raw.arrivals, ctx.child("arrivals"), base_dir)
    has_acc = profile.accuracy is not None
    policies = tuple(
        policy_from_table(
            t, ctx.child("policy").child(i), n_stages=profile.n_stages, n_levels=profile.n_levels, has_accuracy=has_acc
        )
        for i, t in enumerate(raw.policy)
    )
    names = [p.name for p in policies]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ctx.child("policy").error(dup, "two policies share this name")
    drain_s = raw.drain_s if raw.drain_s is not None else 10.0 * raw.slo_s
    check_run_size(
        ctx,
        arrivals=arrivals,
        duration_s=raw.duration_s,
        n_requests=raw.n_requests,
        drain_s=drain_s,
        n_stages=profile.n_stages,
        periods_s=[p.period_s for p in policies],
    )
    return Scenario(
        source=src,
        name=raw.name or src.stem,
        description=raw.description,
        seed=raw.seed,
        duration_s=raw.duration_s,
        n_requests=raw.n_requests,
        warmup_s=raw.warmup_s,
        drain_s=drain_s,
        slo_s=raw.slo_s,
        profile_path=profile_path,
        profile=profile,
        devices=raw.device,
        stages=raw.stage,
        network=raw.network,
        links=raw.link,
        arrivals=arrivals,
        environment=raw.environment,
        queue=raw.queue,
        policies=policies,
        raw=table,
    )


def _check_placement(raw: _RawScenario, profile: Profile, ctx: Ctx) -> None:
    """Stages match the profile's partition; every device, link and event names something real."""
    if len(raw.stage) != profile.n_stages:
        raise ctx.child("stage").error(
            len(raw.stage), f"the profile {profile.source} describes {profile.n_stages} stages"
        )
    stage_names = [s.name for s in raw.stage]
    dup = next((n for n in stage_names if stage_names.count(n) > 1), None)
    if dup is not None:
        raise ctx.child("stage").error(dup, "two stages share this name")
    node_names = [d.name for d in raw.device]
    for i, d in enumerate(raw.device):
        if d.profile_device not in profile.devices:
            raise (
                ctx.child("device")
                .child(i)
                .child("profile_device")
                .error(
                    d.profile_device, "not a device of the profile" + did_you_mean(d.profile_device, profile.devices)
                )
            )
    valid_nodes = set(node_names) | set(profile.devices)
    for i, s in enumerate(raw.stage):
        if s.device not in valid_nodes:
            raise (
                ctx.child("stage")
                .child(i)
                .child("device")
                .error(s.device, "unknown device" + did_you_mean(s.device, valid_nodes))
            )
    for i, d in enumerate(raw.device):  # one node's heat comes from one stage's busy time
        hosted = [s.name for s in raw.stage if s.device == d.name]
        if d.physics is not None and len(hosted) > 1:
            raise (
                ctx.child("device")
                .child(i)
                .child("physics")
                .error(d.name, f"device physics models one stage per node, but stages {hosted} run on it")
            )
    for i, link in enumerate(raw.link):
        if link.after not in stage_names[:-1]:
            raise (
                ctx.child("link")
                .child(i)
                .child("after")
                .error(link.after, "not a stage followed by another" + did_you_mean(link.after, stage_names[:-1]))
            )
    used = {s.device for s in raw.stage}
    for i, ev in enumerate(raw.environment):
        if ev.device not in valid_nodes:
            raise (
                ctx.child("environment")
                .child(i)
                .child("device")
                .error(ev.device, "unknown device" + did_you_mean(ev.device, used or valid_nodes))
            )


def scenario_to_dict(sc: Scenario) -> dict[str, Any]:
    """The resolved scenario as a TOML-ready dictionary (absolute profile path, seed, drain filled in)."""
    out = {k: v for k, v in sc.raw.items() if v is not None}
    out["seed"] = sc.seed
    out["profile"] = str(sc.profile_path)
    out["drain_s"] = sc.drain_s
    out["name"] = sc.name
    arr = dict(out.get("arrivals", {}))
    path = getattr(sc.arrivals, "path", None)
    if path is not None:
        arr["path"] = str(path)
    out["arrivals"] = arr
    out["policy"] = [p for p in out.get("policy", []) if p.get("name", p.get("kind")) in {q.name for q in sc.policies}]
    return out


def hop_spec(sc: Scenario, after: int) -> NetworkSpec | LinkSpec:
    """The link leaving stage ``after``: its ``[[link]]`` override (the last one), else ``[network]``."""
    name = sc.stages[after].name
    spec: NetworkSpec | LinkSpec = sc.network
    for link in sc.links:
        if link.after == name:
            spec = link
    return spec


def hop_time_s(sc: Scenario, after: int) -> tuple[float, float]:
    """(transmission_s, latency_s) of the hop leaving stage ``after`` (activation bytes from the profile)."""
    spec = hop_spec(sc, after)
    bw = spec.bandwidth_mbit_s
    tx = 0.0 if bw is None or math.isinf(bw) else sc.profile.activation_bytes[after] * 8.0 / (bw * 1e6)
    return tx, spec.latency_s


def arrivals_end_s(sc: Scenario, arrivals_s: np.ndarray) -> float:
    """The end of the arrival window (``duration_s``, or the last arrival): the summary counts departures
    in ``[warmup_s, arrivals_end_s)`` and every backend runs on for ``drain_s`` after it."""
    if sc.duration_s is not None:
        return sc.duration_s
    return float(arrivals_s[-1]) if arrivals_s.size else 0.0
