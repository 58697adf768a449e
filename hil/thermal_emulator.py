"""A Pi you can heat on one machine: the device-physics model run from a node's *measured* CPU use.

For every host with ``emulate_physics`` in the cluster file, the coordinator runs one emulator task per
policy run.  At every instant on the run's clock — each governor instant ``n x dvfs.period_s`` and each control
tick ``m x period_s`` of the policy — it

1. reads the CPU time the node's cgroup used since the last instant (cgroup v1 ``cpuacct.usage``, in
   nanoseconds: the cpuacct folder of the same name as ``cpu_cgroup``, or ``cpu_cgroup`` itself where the two
   controllers are mounted together) — the stage worker, its sockets, a co-located ``stress-ng``, all of it;
2. turns it into the busy fraction of the emulated node: ``u = serving_s / elapsed_s + (cpu_s - stage_cpu_s)
   / (elapsed_s x quota_cpus)`` (capped at 1), where ``serving_s`` is the time the node's stage spent serving
   and ``stage_cpu_s`` the CPU time of the stage's process, both from the workers' reports
   (:meth:`NodeEmulator.add_serving`): on a Pi a service keeps its cores busy from start to end, which is
   what the simulator assumes, but a capped node on a shared machine is also kept waiting for a host CPU,
   so its CPU time alone would say it idled through part of each service; everything else on the node (a
   co-located load) counts by its CPU time.  Without reports in the period (none arrived yet), ``u = cpu_s /
   (elapsed_s x quota_cpus)``.  Then the node's mean power over the period, ``P = P(idle) + u x (P(busy) -
   P(idle))`` at the current frequency step (``edgeprune.physics.node_power_w`` / ``dynamic_power_w``);
3. integrates the temperature over the step at that constant power (``edgeprune.physics.model.rc_period``,
   the one RC implementation; the ambient schedule is followed) and, at a governor instant, asks the governor
   for the next frequency step (``edgeprune.physics.govern``);
4. applies the step as DVFS would slow the CPU: the node's CPU quota becomes ``cpu_quota x (f / f_max)^alpha``
   (a service of fixed CPU work then takes ``(f_max / f)^alpha`` times as long, the simulator's
   ``freq_factor``), and writes the emulated temperature (millidegrees C) and frequency (kHz) as integer text
   to the host's ``thermal_zone_file`` / ``cpu_freq_file`` (renamed into place, so a reader never sees a
   partial value), where the stage worker reads them as it would read ``/sys/class/thermal``.

At a control tick the step waits for that tick's reports (at most one control period), and the coordinator
reads the node after the step (:meth:`NodeEmulator.stepped_to`): the simulator's order, physics to the
instant and then the tick's observation, whichever task the event loop wakes first.  The temperature a tick
reads is therefore the one at the tick, as a Pi's sensor gives it and as the simulator integrates it (until
2026-12-03 the emulator stepped at governor instants only, and a tick between two read a temperature one
governor period old).

So throttling follows from the load the run itself puts on the node — the arrivals, the policy's pruning, a
co-located load — not from a script.  The model is the simulator's, with one approximation: the emulator
sees CPU time per step, not the service intervals inside it, so the power is the step's mean (exact for
the temperature at step ends to first order in ``step / tau``).

Where the node is this machine (a loopback address whose cgroup folder exists here: the local test cluster)
the files are read and written directly; elsewhere over the node's SSH connection (two short commands per
period; their CPU time is then counted in the node's use).  Each period's figures are kept
(:attr:`NodeEmulator.records`) and written into the run folder as ``<policy>/thermal_emulator.csv``.

*Assumption*: emulated thermal constants are usually scaled (e.g. ``time_constant_s = 20`` instead of the
Pi's ~120 s) so that a run of a few minutes heats up; say so in the cluster file that does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import polars as pl

from edgeprune.atomic import atomic_write_text
from edgeprune.errors import HilError
from edgeprune.physics import DevicePhysics, dynamic_power_w, freq_factor, govern, initial_state, node_power_w
from edgeprune.physics.model import rc_period
from hil.cluster import HostSpec
from hil.connect import Node, where

__all__ = [
    "EmulatorState",
    "NodeEmulator",
    "NodeIO",
    "PeriodRecord",
    "RunClock",
    "emulate",
    "emulated_quota_cpus",
    "emulated_util",
    "emulation_csv",
    "io_for",
    "usage_files",
]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class PeriodRecord(NamedTuple):
    """One step of one emulated node (a row of ``thermal_emulator.csv``): from the last instant to ``time_s``."""

    time_s: float  # end of the step on the run clock (a control tick and / or a governor decision instant)
    node: str
    cpu_s: float  # CPU time the node's cgroup used in the step
    serving_s: float  # time the node's stage spent serving in the step (the workers' reports; NaN: none)
    stage_cpu_s: float  # CPU time of the stage's process in the step (the workers' reports)
    util: float  # busy fraction: serving_s / elapsed + (cpu_s - stage_cpu_s) / (elapsed x quota), capped at 1
    power_w: float  # the emulated node's mean power over the step
    temp_c: float  # temperature at time_s
    freq_mhz: float  # the frequency in force after time_s (the governor decides at its own instants)
    quota_cpus: float  # the CPU quota applied after time_s


def emulated_quota_cpus(phys: DevicePhysics, base_cpus: float, freq_index: int) -> float:
    """The CPU quota that slows the node as frequency step ``freq_index`` would: ``base x (f / f_max)^alpha``."""
    return base_cpus / freq_factor(phys, freq_index)


def emulated_util(
    serving_s: float | None, cpu_s: float, stage_cpu_s: float, elapsed_s: float, quota_cpus: float
) -> float:
    """The emulated node's busy fraction over ``elapsed_s`` (module docstring, step 2), in ``[0, 1]``.

    ``serving_s`` the time its stage spent serving (``None``: not reported, then ``cpu_s`` alone counts),
    ``cpu_s`` the CPU time of the whole node, ``stage_cpu_s`` the stage process's share of it, ``quota_cpus``
    the quota in effect.  The rule of both the emulator's heat and the run's timeline power."""
    capacity_s = elapsed_s * quota_cpus
    if capacity_s <= 0:
        return 0.0
    if serving_s is None:
        return min(1.0, max(0.0, cpu_s / capacity_s))
    # the other use not clipped on its own: the reports' periods are not the governor's, so the difference is
    # noisy around the true other use, and clipping its negative side would add heat nobody made
    return min(1.0, max(0.0, serving_s / elapsed_s + (cpu_s - stage_cpu_s) / capacity_s))


@dataclass
class EmulatorState:
    """One emulated node's physics between governor instants (pure: no clock, no I/O)."""

    phys: DevicePhysics
    base_cpus: float  # the node's quota at the top frequency (the host's cpu_quota)
    temp_c: float = field(init=False)
    step: int = field(init=False)
    t_s: float = 0.0
    throttled_s: float = 0.0
    energy_j: float = 0.0
    peak_temp_c: float = field(init=False)

    def __post_init__(self) -> None:
        start = initial_state(self.phys)
        self.temp_c, self.step = start.temp_c, start.freq_index
        self.peak_temp_c = self.temp_c

    @property
    def freq_mhz(self) -> float:
        """The frequency now."""
        return self.phys.dvfs.freqs_mhz[self.step]

    @property
    def quota_cpus(self) -> float:
        """The CPU quota for the current step."""
        return emulated_quota_cpus(self.phys, self.base_cpus, self.step)

    def advance(
        self,
        t_s: float,
        cpu_s: float,
        elapsed_s: float,
        serving_s: float | None = None,
        stage_cpu_s: float = 0.0,
        govern_now: bool = True,
    ) -> tuple[float, float]:
        """Integrate to instant ``t_s`` given ``cpu_s`` of CPU the node used over ``elapsed_s`` (wall) and,
        where reported, ``serving_s`` its stage spent serving and ``stage_cpu_s`` of CPU its stage's process
        used (module docstring, step 2), then, at a governor instant (``govern_now``), take the governor's
        decision; returns ``(util, mean power_w)``."""
        h_s = t_s - self.t_s
        util = emulated_util(serving_s, cpu_s, stage_cpu_s, elapsed_s, self.quota_cpus)
        power_w = node_power_w(self.phys, self.step, False) + util * dynamic_power_w(self.phys, self.step)
        self.temp_c, _ = rc_period(self.phys.thermal, self.temp_c, self.t_s, t_s, [], power_w, 0.0)
        self.energy_j += power_w * h_s
        if self.step > 0:
            self.throttled_s += h_s
        self.peak_temp_c = max(self.peak_temp_c, self.temp_c)
        self.t_s = t_s
        if govern_now:
            self.step = govern(self.phys.dvfs, self.step, self.temp_c)
        return util, power_w


class NodeIO(Protocol):
    """Where an emulator reads the node's CPU use and writes its quota and readings."""

    async def period_us(self) -> int:
        """The cgroup's CFS period (``cpu.cfs_period_us``)."""
        ...

    async def usage_s(self) -> float:
        """CPU seconds the node's cgroup used so far (a counter)."""
        ...

    async def publish(self, quota_us: int, temp_c: float, freq_mhz: float) -> None:
        """Apply the quota and expose the readings."""
        ...


def usage_files(cpu_cgroup: str) -> tuple[str, ...]:
    """Where the cgroup's ``cpuacct.usage`` may be: in ``cpu_cgroup`` itself (controllers mounted together),
    or in the cpuacct hierarchy's folder of the same name (``/sys/fs/cgroup/cpu/X`` -> ``.../cpuacct/X``)."""
    here = f"{cpu_cgroup.rstrip('/')}/cpuacct.usage"
    parts = Path(cpu_cgroup).parts
    for i, part in enumerate(parts):
        if "cpu" in part.split(",") and "cpuacct" not in part.split(","):
            return (here, str(Path(*parts[:i], "cpuacct", *parts[i + 1 :], "cpuacct.usage")))
    return (here,)


def _readings_text(temp_c: float, freq_mhz: float) -> tuple[str, str]:
    """The files' contents: millidegrees C and kHz as integer text (as ``/sys`` shows them)."""
    return f"{round(temp_c * 1000)}\n", f"{round(freq_mhz * 1000)}\n"


@dataclass
class LocalIO:
    """The node's cgroup and reading files on this machine (the local test cluster)."""

    host: HostSpec

    def _usage_path(self) -> Path:
        for p in usage_files(self.host.cpu_cgroup):
            if Path(p).exists():
                return Path(p)
        raise HilError(
            f"{where(self.host)}: thermal emulator: no cgroup v1 cpuacct.usage at "
            + " or ".join(usage_files(self.host.cpu_cgroup))
        )

    def _failed(self, exc: OSError | ValueError, what: str) -> HilError:
        return HilError(f"{where(self.host)}: thermal emulator: {what}: {type(exc).__name__}: {exc}")

    async def period_us(self) -> int:
        """``cpu.cfs_period_us`` of the node's cgroup."""
        try:
            return int((Path(self.host.cpu_cgroup) / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError) as exc:
            raise self._failed(exc, "cannot read the CFS period") from None

    async def usage_s(self) -> float:
        """``cpuacct.usage`` in seconds."""
        path = self._usage_path()
        try:
            return int(path.read_text()) / 1e9
        except (OSError, ValueError) as exc:
            raise self._failed(exc, f"cannot read {path}") from None

    async def publish(self, quota_us: int, temp_c: float, freq_mhz: float) -> None:
        """Write the quota; rename the readings into place."""
        temp, freq = _readings_text(temp_c, freq_mhz)
        try:
            (Path(self.host.cpu_cgroup) / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
            for path, text in ((self.host.thermal_zone_file, temp), (self.host.cpu_freq_file, freq)):
                if path:
                    atomic_write_text(path, text, clean_stale=False)
        except OSError as exc:
            raise self._failed(exc, "cannot apply the emulated frequency") from None


@dataclass
class SshIO:
    """The same over the node's SSH connection (a remote node)."""

    node: Node

    async def _sh(self, cmd: str, what: str) -> str:
        try:
            result = await asyncio.wait_for(self.node.conn.run(cmd, check=False), 15)
        except (OSError, TimeoutError) as exc:
            raise HilError(f"{where(self.node.spec)}: thermal emulator: {what}: {type(exc).__name__}: {exc}") from None
        if result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise HilError(
                f"{where(self.node.spec)}: thermal emulator: {what}: {err[-1] if err else result.exit_status}"
            )
        return str(result.stdout or "")

    async def period_us(self) -> int:
        """``cpu.cfs_period_us`` of the node's cgroup."""
        cg = shlex.quote(self.node.spec.cpu_cgroup)
        return int(await self._sh(f"cat {cg}/cpu.cfs_period_us", "cannot read the CFS period"))

    async def usage_s(self) -> float:
        """``cpuacct.usage`` in seconds (the first of :func:`usage_files` that exists)."""
        cmd = " || ".join(f"cat {shlex.quote(p)} 2>/dev/null" for p in usage_files(self.node.spec.cpu_cgroup))
        return int(await self._sh(cmd, "cannot read cpuacct.usage (cgroup v1 cpuacct)")) / 1e9

    async def publish(self, quota_us: int, temp_c: float, freq_mhz: float) -> None:
        """Write the quota and the readings (each written to a temporary and renamed into place)."""
        spec = self.node.spec
        cmds = [f"echo {quota_us} > {shlex.quote(spec.cpu_cgroup + '/cpu.cfs_quota_us')}"]
        for path, text in zip(
            (spec.thermal_zone_file, spec.cpu_freq_file), _readings_text(temp_c, freq_mhz), strict=True
        ):
            if path:
                tmp = shlex.quote(path + ".tmp")
                cmds.append(f"printf %s {text.strip()} > {tmp} && mv -f {tmp} {shlex.quote(path)}")
        await self._sh(" && ".join(cmds), "cannot apply the emulated frequency")


def io_for(node: Node) -> NodeIO:
    """Direct file access where the node is this machine (loopback, cgroup folder here), else SSH."""
    spec = node.spec
    if spec.address in LOOPBACK and Path(spec.cpu_cgroup).is_dir():
        return LocalIO(spec)
    return SshIO(node)


class RunClock(NamedTuple):
    """A policy run's clock as its emulators see it (the coordinator's): the time on it, a wait until a time
    on it, and the control period (``None``: the emulators do not wait for the ticks' reports)."""

    now_s: Callable[[], float]
    sleep_until: Callable[[float], Awaitable[None]]
    tick_s: float | None = None


@dataclass
class NodeEmulator:
    """One node's emulator over one policy run: its state, its I/O and its records."""

    name: str
    state: EmulatorState
    io: NodeIO
    min_quota_us: int = 1000  # the kernel refuses smaller cpu.cfs_quota_us values
    records: list[PeriodRecord] = field(default_factory=list)
    _period_us: int = field(default=0, init=False)
    _serving_s: float | None = field(default=None, init=False)  # reported since the last step
    _stage_cpu_s: float = field(default=0.0, init=False)
    _reported_s: float = field(default=-math.inf, init=False)  # the control tick the reports reach
    _tick_s: float | None = field(default=None, init=False)  # the run's control period (RunClock.tick_s)
    _progress: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # set: reports in / instant stepped

    def add_serving(self, busy_s: float, stage_cpu_s: float | None, through_s: float = -math.inf) -> None:
        """Add a control period's report: the time the node's stage spent serving and its process's CPU time
        (``None``: not measured on the node), the period ending at the control tick ``through_s``."""
        self._serving_s = (self._serving_s or 0.0) + max(0.0, busy_s)
        self._stage_cpu_s += max(0.0, stage_cpu_s or 0.0)
        self._reported_s = max(self._reported_s, through_s)
        self._notify()

    def _notify(self) -> None:
        """Wake every waiter of :meth:`_wait_for` (each re-checks its own condition)."""
        woken, self._progress = self._progress, asyncio.Event()
        woken.set()

    async def _wait_for(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``done()`` (re-checked whenever reports arrive or an instant is stepped) or ``timeout_s``;
        whether it is done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # lands in the same loop turn as the wake-up, and the run's clean-up then waits on this forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
        return True

    def _reported_through(self, t_s: float) -> bool:
        return self._reported_s >= t_s - 1e-9

    async def stepped_to(self, t_s: float, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every instant at or before ``t_s`` (governor instants and, with a
        control period, control ticks) has been stepped and published; whether it was.  The coordinator's
        control tick at ``t_s`` then observes the node as the simulator's tick does: the physics stepped to the
        instant first."""
        last_s = _last_on_grid(t_s, self.state.phys.dvfs.period_s)
        if self._tick_s is not None:
            last_s = max(last_s, _last_on_grid(t_s, self._tick_s))
        return await self._wait_for(lambda: self.state.t_s >= last_s - 1e-9, timeout_s)

    async def _publish(self) -> float:
        cpus = self.state.quota_cpus
        await self.io.publish(
            max(self.min_quota_us, round(cpus * self._period_us)), self.state.temp_c, self.state.freq_mhz
        )
        return cpus

    async def run(self, clock: RunClock) -> None:
        """Publish the start state, then one :meth:`EmulatorState.advance` per instant on the run clock (until
        cancelled): every governor instant ``n x period_s``, where the governor decides, and every control
        tick ``m x clock.tick_s``, where the temperature is integrated and published only — so a tick reads
        the node's temperature at the tick, as a Pi's sensor and the simulator give it, not one governor
        period old.  At an instant that is a control tick the step waits (at most one control period) for that
        tick's reports, so that each step heats from exactly its own serving time, as in the simulator,
        whichever of the two tasks the event loop wakes first."""
        self._period_us = await self.io.period_us()
        self._tick_s = clock.tick_s
        await self._publish()
        period_s = self.state.phys.dvfs.period_s
        used_s, wall_s = await self.io.usage_s(), clock.now_s()
        n = m = 1
        while True:
            t_gov = n * period_s
            t_tick = m * clock.tick_s if clock.tick_s is not None else math.inf
            t_s = min(t_gov, t_tick)
            is_gov, is_tick = _same(t_gov, t_s), _same(t_tick, t_s)
            await clock.sleep_until(t_s)
            if is_tick:
                await self._wait_for(partial(self._reported_through, t_s), clock.tick_s or 0.0)
            used, wall = await self.io.usage_s(), clock.now_s()
            cpu_s, serving_s, stage_cpu_s = used - used_s, self._serving_s, self._stage_cpu_s
            self._serving_s, self._stage_cpu_s = None, 0.0
            util, power_w = self.state.advance(t_s, cpu_s, wall - wall_s, serving_s, stage_cpu_s, govern_now=is_gov)
            used_s, wall_s = used, wall
            cpus = await self._publish()
            st = self.state
            served = math.nan if serving_s is None else serving_s
            self.records.append(
                PeriodRecord(t_s, self.name, cpu_s, served, stage_cpu_s, util, power_w, st.temp_c, st.freq_mhz, cpus)
            )
            self._notify()
            n += is_gov
            m += is_tick

    def summary(self) -> dict[str, Any]:
        """The node's figures over the run (for ``summary.json``)."""
        st = self.state
        return {
            "throttled_s": st.throttled_s,
            "peak_temp_c": st.peak_temp_c,
            "energy_j": st.energy_j,
            "emulated_s": st.t_s,
            "preset": st.phys.preset,
        }


def _same(a_s: float, b_s: float) -> bool:
    """Whether two instants on the run clock are the same one (to rounding: ``n x period`` and ``m x tick``)."""
    return abs(a_s - b_s) <= 1e-9 * max(1.0, abs(b_s))


def _last_on_grid(t_s: float, step_s: float) -> float:
    """The last whole multiple of ``step_s`` at or before ``t_s`` (to rounding)."""
    return math.floor(t_s / step_s + 1e-9) * step_s


def emulate(nodes: Sequence[Node], min_quota_us: int) -> list[NodeEmulator]:
    """An emulator for every node whose host has ``emulate_physics`` (fresh state: each run starts cold)."""
    return [
        NodeEmulator(n.name, EmulatorState(n.spec.emulate_physics, n.spec.cpu_quota), io_for(n), min_quota_us)
        for n in nodes
        if n.spec.emulate_physics is not None
    ]


def emulation_csv(emulators: Sequence[NodeEmulator]) -> str:
    """Every node's period records as CSV text (``thermal_emulator.csv``); empty without emulated nodes."""
    rows = [r for e in emulators for r in e.records]
    if not emulators:
        return ""
    cols = {name: [getattr(r, name) for r in rows] for name in PeriodRecord._fields}
    schema = {name: (pl.String if name == "node" else pl.Float64) for name in PeriodRecord._fields}
    return pl.DataFrame(cols, schema=schema).sort(["time_s", "node"]).write_csv(float_precision=6)
