"""The cluster file: which nodes exist, how to reach them, and which stage runs where.

Validated with :func:`edgeprune.config.build` like every other TOML file of the project (unknown keys get
the closest valid name; every error is one line naming the file, key and value).  Paths are relative to the
cluster file; ``~`` is expanded.  No password is ever read from the file: authentication uses the identity
files named here or the SSH agent.

Schema (``examples/pis.toml`` is a documented example)::

    name = "lab-pis"                      # used as the device name of the measured profile
    [coordinator]
    listen_address = "192.168.1.10"       # where the last stage sends its results (direct transport)
    transport = "direct"                  # "direct" TCP between stages, or "ssh": every hop tunnelled
    connect_timeout_s = 10.0              # SSH connect + auth limit per node
    keepalive_interval_s = 1.0            # SSH keepalives: a dead link is detected in ~interval x count
    keepalive_count_max = 3
    ready_timeout_s = 120.0               # a worker must load its stage within this
    report_timeout_s = 5.0                # a worker must answer a period report within this
    track_slowdowns = true                # cgroup slowdowns: retune the quota to the stated service-time factor
    [model]
    checkpoint = "models/vit-b16-4stage.pt"   # a nested checkpoint (models.save_nested), uploaded to nodes
    images = ""                           # folder of images fed as requests; empty: synthetic tensors
    threads = 1                           # torch threads per worker
    [deploy]
    wheel = ""                            # project wheel to install on nodes whose edgeprune differs
    require_same_torch = true             # torch version on nodes must equal the coordinator's (if any)
    [[host]]
    name = "pi1"                          # node name (scenario devices, messages)
    address = "192.168.1.11"
    port = 22
    user = "pi"
    identity_file = "~/.ssh/id_ed25519"   # optional; the agent and default keys otherwise
    known_hosts = "~/.ssh/known_hosts"    # host keys are always verified
    python = "/home/pi/venv/bin/python"
    workdir = "/home/pi/edgeprune"        # artefacts, pid files, logs
    worker_address = ""                   # address other nodes use for this node's worker (default: address)
    cpu_cgroup = ""                       # a cgroup v1 cpu folder the user may write (CPU quota events)
    cpu_quota = 0.0                       # > 0: cap the node at this many CPUs during runs and profiles
    slowdown = "auto"                     # how environment slowdowns are realised: auto | cgroup | stress | cpufreq
    cpufreq_dir = "/sys/devices/system/cpu"   # holds cpu*/cpufreq (cpufreq slowdowns)
    thermal_zone_file = "/sys/class/thermal/thermal_zone0/temp"   # read every period (millidegrees C)
    cpu_freq_file = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"   # read every period (kHz)
    physics = { preset = "rpi4b" }        # optional: the node's power model (energy estimate), as [[device]] physics
    emulate_physics = { preset = "rpi4b" }    # optional: the coordinator's thermal emulator heats this node
    power_meter_command = ""              # optional: a shell command on the node printing watts (replaces the estimate)
    [[stage]]                             # stage k of the checkpoint's partition, in pipeline order
    name = "s0"
    host = "pi1"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from edgeprune.config import Ctx, build, load_toml, spec_field
from edgeprune.errors import ConfigError, did_you_mean
from edgeprune.physics import DevicePhysics

__all__ = ["ClusterSpec", "CoordinatorSpec", "DeploySpec", "HostSpec", "ModelSpec", "StagePlacement", "load_cluster"]


@dataclass(frozen=True)
class CoordinatorSpec:
    """How the coordinator talks to the nodes."""

    listen_address: str = spec_field(default="127.0.0.1", doc="address the last stage sends results to")
    transport: Literal["direct", "ssh"] = field(
        default="direct", metadata={"doc": "'direct' TCP between stages, or 'ssh' (every hop tunnelled via SSH)"}
    )
    connect_timeout_s: float = spec_field(default=10.0, gt=0, doc="SSH connect + authentication limit per node")
    keepalive_interval_s: float = spec_field(default=1.0, gt=0, doc="SSH keepalive interval")
    keepalive_count_max: int = spec_field(default=3, ge=1, doc="unanswered keepalives before a link is lost")
    ready_timeout_s: float = spec_field(default=120.0, gt=0, doc="a worker must load its stage within this")
    report_timeout_s: float = spec_field(default=5.0, gt=0, doc="a worker must answer a report within this")
    track_slowdowns: bool = spec_field(
        default=True, doc="cgroup slowdowns: retune the quota until the measured service-time factor is the stated one"
    )


@dataclass(frozen=True)
class ModelSpec:
    """The model artefact every worker loads (its own stage, all levels)."""

    checkpoint: str = spec_field(doc="nested checkpoint written by models.save_nested")
    images: str = spec_field(default="", doc="folder of images to feed; empty: synthetic tensors")
    threads: int = spec_field(default=1, ge=1, doc="torch threads per worker")


@dataclass(frozen=True)
class DeploySpec:
    """What ``check`` and ``run`` may install."""

    wheel: str = spec_field(default="", doc="project wheel uploaded to nodes whose edgeprune version differs")
    require_same_torch: bool = spec_field(default=True, doc="node torch must equal the coordinator's (if it has one)")


@dataclass(frozen=True)
class HostSpec:
    """One node and how to reach it."""

    name: str = spec_field(doc="node name")
    address: str = spec_field(doc="IP address or DNS name")
    python: str = spec_field(doc="Python interpreter on the node (with edgeprune and torch)")
    workdir: str = spec_field(doc="work directory on the node (created if missing)")
    port: int = spec_field(default=22, gt=0, lt=65536, doc="SSH port")
    user: str = spec_field(default="", doc="login user (default: the local user)")
    identity_file: str = spec_field(default="", doc="private key file; empty: the agent and default keys")
    known_hosts: str = spec_field(default="~/.ssh/known_hosts", doc="known_hosts file the host key is checked against")
    worker_address: str = spec_field(default="", doc="address other nodes reach this node's worker at")
    cpu_cgroup: str = spec_field(default="", doc="cgroup v1 cpu folder writable by the user (quota events)")
    cpu_quota: float = spec_field(default=0.0, ge=0, doc="> 0: CPUs this node is capped at during runs/profiles")
    slowdown: Literal["auto", "cgroup", "stress", "cpufreq"] = field(
        default="auto", metadata={"doc": "how an environment slowdown is realised on this node"}
    )
    cpufreq_dir: str = spec_field(
        default="/sys/devices/system/cpu", doc="folder holding cpu*/cpufreq (cpufreq slowdowns)"
    )
    thermal_zone_file: str = spec_field(
        default="/sys/class/thermal/thermal_zone0/temp",
        doc="file on the node read every period: temperature in millidegrees C (an emulator's file on emulated nodes)",
    )
    cpu_freq_file: str = spec_field(
        default="/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
        doc="file on the node read every period: the current CPU frequency in kHz",
    )
    physics: DevicePhysics | None = spec_field(
        default=None, doc="the node's device physics (preset + overrides, as [[device]] physics): its power model"
    )
    power_meter_command: str = spec_field(
        default="", doc="shell command on the node printing its power in watts (replaces the model's estimate)"
    )
    emulate_physics: DevicePhysics | None = spec_field(
        default=None,
        doc="device physics the coordinator's thermal emulator runs for this node (hil.thermal_emulator): "
        "heat from its measured CPU use, the emulated frequency applied as its CPU quota (and written to the "
        "node's reading files)",
    )

    @property
    def power_model(self) -> DevicePhysics | None:
        """The physics the node's energy is estimated with: ``physics``, else the emulated physics (so the
        estimate is the emulator's own power model)."""
        return self.physics if self.physics is not None else self.emulate_physics

    @property
    def login(self) -> str:
        """The user to log in as."""
        return self.user or os.environ.get("USER", "") or "root"

    @property
    def data_address(self) -> str:
        """Address other nodes connect to for this node's worker."""
        return self.worker_address or self.address

    @property
    def slowdown_method(self) -> str:
        """The concrete realisation: ``auto`` is ``cgroup`` where a cgroup is configured, else ``stress``."""
        if self.slowdown != "auto":
            return self.slowdown
        return "cgroup" if self.cpu_cgroup and self.emulate_physics is None else "stress"

    def check(self) -> list[tuple[str, object, str]]:
        """A cgroup slowdown needs a cgroup; so does a CPU quota; so does the thermal emulator (it owns the quota);
        the node's reading files are absolute paths; the power meter is one command line."""
        for key in ("thermal_zone_file", "cpu_freq_file"):
            value = getattr(self, key)
            if not value.startswith("/"):
                return [(key, value, "must be an absolute path on the node")]
        if "\n" in self.power_meter_command or "\0" in self.power_meter_command:
            return [("power_meter_command", self.power_meter_command, "must be one command line")]
        if self.emulate_physics is not None:
            return self._check_emulated(self.emulate_physics)
        if self.slowdown == "cgroup" and not self.cpu_cgroup:
            return [("slowdown", self.slowdown, "needs cpu_cgroup (a cgroup v1 cpu folder the user may write)")]
        if self.cpu_quota > 0 and not self.cpu_cgroup:
            return [("cpu_quota", self.cpu_quota, "needs cpu_cgroup (a cgroup v1 cpu folder the user may write)")]
        return []

    def _check_emulated(self, phys: DevicePhysics) -> list[tuple[str, object, str]]:
        """The emulator scales the node's base quota and measures the cgroup's CPU use; tenants are sim-only."""
        if not self.cpu_cgroup:
            return [("emulate_physics", "{...}", "needs cpu_cgroup (the emulator applies the frequency as its quota)")]
        if self.cpu_quota <= 0:
            return [("cpu_quota", self.cpu_quota, "must be > 0 with emulate_physics (the quota at the top frequency)")]
        if self.slowdown == "cgroup":
            return [("slowdown", self.slowdown, 'the thermal emulator owns the CPU quota: use slowdown = "stress"')]
        if phys.tenant:
            return [
                ("emulate_physics.tenant", "[...]", 'simulated tenants cannot be emulated: use slowdown = "stress"')
            ]
        for key in ("thermal_zone_file", "cpu_freq_file"):
            value = getattr(self, key)
            if value.startswith("/sys/"):
                return [(key, value, "an emulated node needs its own file (the emulator writes it), not the kernel's")]
        return []


@dataclass(frozen=True)
class StagePlacement:
    """Stage ``k`` (in file order) of the checkpoint runs on ``host``."""

    name: str = spec_field(doc="stage name (must match the scenario's stage names)")
    host: str = spec_field(doc="a [[host]] name")


@dataclass(frozen=True)
class _RawCluster:
    host: tuple[HostSpec, ...] = spec_field(doc="the nodes")
    stage: tuple[StagePlacement, ...] = spec_field(doc="the stages in pipeline order")
    model: ModelSpec = spec_field(doc="the model artefact")
    name: str = spec_field(default="", doc="cluster name (default: the file's stem)")
    coordinator: CoordinatorSpec = spec_field(default_factory=CoordinatorSpec, doc="coordinator options")
    deploy: DeploySpec = spec_field(default_factory=DeploySpec, doc="deployment options")


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster file with paths resolved."""

    source: Path
    name: str
    hosts: tuple[HostSpec, ...]
    stages: tuple[StagePlacement, ...]
    model: ModelSpec
    coordinator: CoordinatorSpec
    deploy: DeploySpec

    def host(self, name: str) -> HostSpec:
        """The named host."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise ConfigError(f"{self.source}: no host {name!r}" + did_you_mean(name, [h.name for h in self.hosts]))

    def stage_hosts(self) -> tuple[HostSpec, ...]:
        """The host of every stage, in pipeline order."""
        return tuple(self.host(s.host) for s in self.stages)

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint on the coordinator."""
        return Path(self.model.checkpoint)


def _resolve(base: Path, value: str) -> str:
    if not value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster file (see the module docstring)."""
    src = Path(path)
    ctx = Ctx(str(src))
    raw = build(_RawCluster, load_toml(src), ctx)
    base = src.parent
    names = [h.name for h in raw.host]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ctx.child("host").error(dup, "two hosts share this name")
    if not raw.stage:
        raise ctx.child("stage").error([], "need at least one [[stage]]")
    used: list[str] = []
    for i, st in enumerate(raw.stage):
        if st.host not in names:
            raise (
                ctx.child("stage").child(i).child("host").error(st.host, "unknown host" + did_you_mean(st.host, names))
            )
        if st.host in used:
            raise ctx.child("stage").child(i).child("host").error(st.host, "one stage worker per node")
        used.append(st.host)
    hosts = tuple(
        replace(
            h,
            identity_file=_resolve(base, h.identity_file),
            known_hosts=_resolve(base, h.known_hosts),
        )
        for h in raw.host
    )
    model = replace(raw.model, checkpoint=_resolve(base, raw.model.checkpoint), images=_resolve(base, raw.model.images))
    deploy = replace(raw.deploy, wheel=_resolve(base, raw.deploy.wheel))
    return ClusterSpec(
        source=src,
        name=raw.name or src.stem,
        hosts=hosts,
        stages=raw.stage,
        model=model,
        coordinator=raw.coordinator,
        deploy=deploy,
    )
