"""The scenario's environment events, applied to real nodes and reverted at the end.

A scenario's ``[[environment]]`` event multiplies a device's service times by ``slowdown`` over a window (or
a schedule).  Here the device is a node (the scenario device of the stage it hosts, or a host name), and the
factor is realised by the host's ``slowdown`` method:

``cgroup``   CPU quota (cgroup v1 ``cpu.cfs_quota_us`` in the host's ``cpu_cgroup``): ``base / factor`` CPUs,
             where ``base`` is the host's ``cpu_quota`` (or 1 CPU: the worker is single-threaded), then, with
             the coordinator's ``track_slowdowns``, retuned every control period by a :class:`QuotaTracker`
             until the node's measured service time is ``factor`` times its profiled one.  A quota caps a CPU
             *share*, it does not scale speed: a busy node has no idle gaps that refill its budget and spends
             it on sockets and (de)serialisation too, so ``base / 4`` alone gave 4.6-6x on the test cluster.
             Needs a cgroup the login user may write.
``stress``   ``stress-ng --cpu N`` on the node, ``N = round(factor - 1)`` (:func:`stress_cpus`): N CPU hogs
             sharing the worker's CPU(s) give about ``N + 1`` times longer services when the worker and the
             hogs share one core or one quota.  Open-loop, on purpose: co-located load on a real node is not
             tuned by anyone, so nothing retunes it (no :class:`QuotaTracker`), and the comparison replays
             the factor the run measured (``hil.compare``: as realised), reporting it beside the stated one.
             On the local cluster (hogs in the node's 0.4-CPU cgroup) it realised more than ``N + 1``: the
             hogs are always runnable, the worker sleeps between requests and pays for the per-request work
             outside the timed span too.  Needs ``stress-ng`` on the node.
``cpufreq``  cap ``scaling_max_freq`` of every core (``cpufreq_dir/cpu*/cpufreq``) at
             ``cpuinfo_max_freq / factor``: written directly when the user may (a udev rule or group), else
             via ``sudo -n tee`` (needs passwordless sudo for that file).  The caps found before the first
             change are restored at the end.  Frequency scales compute-bound service times ~linearly.

A host's ``cpu_quota`` (its base share during runs and profiles) is applied by :meth:`Environment.setup`.
:meth:`Environment.revert` restores every quota and frequency it changed and ends every load it started.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from edgeprune.environment import factor_changes, merged_schedule
from edgeprune.errors import HilError
from edgeprune.scenario import Scenario
from hil.cluster import ClusterSpec, CoordinatorSpec, HostSpec
from hil.connect import Node, connect_node, where
from hil.remote import kill_groups, start_remote
from hil.thermal_emulator import NodeEmulator, RunClock, emulate, emulation_csv

__all__ = [
    "MIN_QUOTA_US",
    "Environment",
    "NodeChange",
    "QuotaTracker",
    "hosts_of_device",
    "node_schedule",
    "stress_cpus",
]

MIN_QUOTA_US = 1000  # the kernel refuses smaller cpu.cfs_quota_us values
# write $v to $d/scaling_max_freq: directly when the user may, else through passwordless sudo
_WRITE_FREQ = (
    'if [ -w "$d/scaling_max_freq" ]; then echo $v > "$d/scaling_max_freq"; '
    'else echo $v | sudo -n tee "$d/scaling_max_freq" >/dev/null; fi'
)


@dataclass(frozen=True)
class NodeChange:
    """From ``time_s`` on, node ``node`` runs ``factor`` times slower than normal."""

    time_s: float
    node: str
    factor: float


def hosts_of_device(sc: Scenario, cluster: ClusterSpec, device: str) -> set[str]:
    """The hosts a scenario device stands for: those its stages are placed on, and a host of that name."""
    hosts = {cluster.stages[k].host for k in range(len(sc.stages)) if sc.stages[k].device == device}
    if device in {h.name for h in cluster.hosts}:
        hosts.add(device)
    return hosts


def node_schedule(sc: Scenario, cluster: ClusterSpec) -> list[NodeChange]:
    """Every node's factor changes over the run (factor products where events overlap), time-sorted."""
    per_host: dict[str, list[Any]] = {}
    for ev in sc.environment:
        hosts = hosts_of_device(sc, cluster, ev.device)
        if not hosts:
            raise HilError(f"{sc.source}: environment device {ev.device!r} is on no node of {cluster.source}")
        for h in hosts:
            per_host.setdefault(h, []).append(ev)
    out = [
        NodeChange(t, host, f) for host, events in per_host.items() for t, f in factor_changes(merged_schedule(events))
    ]
    return sorted(out, key=lambda c: (c.time_s, c.node))


def stress_cpus(factor: float) -> int:
    """The ``stress-ng --cpu`` workers a ``stress`` slowdown of ``factor`` starts: ``round(factor - 1)`` (N hogs
    and the worker sharing a CPU or a quota give about ``N + 1`` times longer services; measured, it is
    more: see the module docstring)."""
    return round(factor - 1.0)


@dataclass
class QuotaTracker:
    """Closes the loop on one node's cgroup slowdown: the quota that makes its services ``target`` times as
    long as profiled.  Pure (no I/O): fed each period's served count and measured / profiled busy time of
    the node's stages, it answers a new quota or ``None``.

    The update is multiplicative, ``cpus *= (realised / target) ** gain``: service time under a saturating
    quota is about CPU work / quota, so the error in the factor is the error in the quota.  Measurements
    accumulate until ``min_services`` services were seen, and the gain is below 1, because one service's time
    varies by ~10% (a service lasts several periods when slowed); the
    first period after each change is skipped, because a service that started under the old quota ends in it.
    """

    target: float
    cpus: float
    min_cpus: float
    max_cpus: float
    gain: float = 0.5
    min_services: int = 5
    skip_periods: int = 1
    busy_s: float = 0.0
    nominal_s: float = 0.0
    served: int = 0

    def observe(self, served: int, busy_s: float, nominal_s: float) -> float | None:
        """Fold one period in; the new quota in CPUs when it should change, else ``None``."""
        if self.skip_periods > 0:
            self.skip_periods -= 1
            return None
        self.served += served
        self.busy_s += busy_s
        self.nominal_s += nominal_s
        if self.served < self.min_services or self.nominal_s <= 0:
            return None
        realised = self.busy_s / self.nominal_s
        self.served, self.busy_s, self.nominal_s = 0, 0.0, 0.0
        if abs(realised / self.target - 1.0) < 0.03:  # within 3%: measurement noise, not worth a disturbance
            return None
        cpus = min(max(self.cpus * (realised / self.target) ** self.gain, self.min_cpus), self.max_cpus)
        if cpus == self.cpus:  # pinned at a bound
            return None
        self.cpus = cpus
        self.skip_periods = 1
        return cpus


@dataclass
class _HostState:
    node: Node
    original_quota_us: int | None = None
    period_us: int | None = None
    stress_tags: list[str] = field(default_factory=list)
    original_freq: list[tuple[str, int]] | None = None  # (cpufreq folder, scaling_max_freq) before any cap


class Environment:
    """Applies node slowdowns for real and reverts them (see the module docstring)."""

    def __init__(self, nodes: Sequence[Node], opts: CoordinatorSpec, tag: str) -> None:
        self.opts = opts
        self.tag = tag
        self.hosts = {n.name: _HostState(n) for n in nodes}
        self.log: list[dict[str, Any]] = []
        self.trackers: dict[str, QuotaTracker] = {}  # node -> its active cgroup slowdown's tracker
        self.emulators: list[NodeEmulator] = emulate(nodes, MIN_QUOTA_US)  # hosts with emulate_physics

    async def _sh(self, node: Node, cmd: str, what: str) -> str:
        try:
            result = await self._run_on(node, cmd)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise HilError(f"{where(node.spec)}: {what}: {type(exc).__name__}: {exc}") from None
        if result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise HilError(f"{where(node.spec)}: {what}: {err[-1] if err else f'exit status {result.exit_status}'}")
        return str(result.stdout or "")

    async def _run_on(self, node: Node, cmd: str) -> asyncssh.SSHCompletedProcess:
        """Run ``cmd`` over the node's connection, or over a fresh one when that link is gone (a revert after
        a lost link must still reach the node)."""
        try:
            return await asyncio.wait_for(node.conn.run(cmd, check=False), 15)
        except (asyncssh.Error, OSError):
            fresh = await connect_node(node.spec, self.opts)
            try:
                return await asyncio.wait_for(fresh.conn.run(cmd, check=False), 15)
            finally:
                fresh.conn.close()

    async def setup(self) -> None:
        """Apply every host's base ``cpu_quota`` (remembering the original values)."""
        await asyncio.gather(
            *(self._set_cpus(s, s.node.spec.cpu_quota) for s in self.hosts.values() if s.node.spec.cpu_quota > 0)
        )

    async def _read_quota(self, st: _HostState) -> None:
        if st.original_quota_us is not None:
            return
        cg = shlex.quote(st.node.spec.cpu_cgroup)
        out = await self._sh(st.node, f"cat {cg}/cpu.cfs_quota_us {cg}/cpu.cfs_period_us", "cannot read the CPU quota")
        quota, period = (int(v) for v in out.split())
        st.original_quota_us, st.period_us = quota, period

    async def _set_cpus(self, st: _HostState, cpus: float | None) -> None:
        await self._read_quota(st)
        assert st.period_us is not None
        value = -1 if cpus is None else round(cpus * st.period_us)
        if value != -1 and value < MIN_QUOTA_US:
            raise HilError(
                f"{where(st.node.spec)}: a quota of {cpus:.3f} CPU is {value} us per {st.period_us} us period, below "
                f'the kernel\'s minimum of {MIN_QUOTA_US} us; lengthen cpu.cfs_period_us or use slowdown = "stress"'
            )
        path = shlex.quote(f"{st.node.spec.cpu_cgroup}/cpu.cfs_quota_us")
        await self._sh(st.node, f"echo {value} > {path}", f"cannot set the CPU quota in {st.node.spec.cpu_cgroup}")

    async def apply(self, change: NodeChange) -> None:
        """Realise one change on its node."""
        st = self.hosts[change.node]
        spec: HostSpec = st.node.spec
        method = spec.slowdown_method
        if method == "cgroup":
            base = spec.cpu_quota if spec.cpu_quota > 0 else 1.0
            await self._set_cpus(st, base / change.factor)
            detail = f"cpu quota {base / change.factor:.3f} CPU"
            self.trackers.pop(change.node, None)
            if self.opts.track_slowdowns and change.factor != 1.0:
                assert st.period_us is not None
                self.trackers[change.node] = QuotaTracker(
                    target=change.factor,
                    cpus=base / change.factor,
                    min_cpus=MIN_QUOTA_US / st.period_us,
                    max_cpus=base,
                )
        elif method == "stress":
            detail = await self._stress(st, change.factor)
        else:
            detail = await self._cpufreq(st, change.factor)
        self.log.append({"time_s": change.time_s, "node": change.node, "factor": change.factor, "how": detail})

    async def track(self, node: str, time_s: float, served: int, busy_s: float, nominal_s: float) -> None:
        """One control period's measurements of ``node``'s stages; retunes its quota when its tracker says so
        (the log entry of the slowdown keeps every retune as ``(time_s, cpus)``)."""
        tracker = self.trackers.get(node)
        if tracker is None:
            return
        cpus = tracker.observe(served, busy_s, nominal_s)
        if cpus is None:
            return
        await self._set_cpus(self.hosts[node], cpus)
        entry = next(e for e in reversed(self.log) if e["node"] == node)
        entry.setdefault("retuned", []).append([round(time_s, 3), round(cpus, 4)])

    async def _stress(self, st: _HostState, factor: float) -> str:
        """Open-loop: ``stress_cpus(factor)`` hogs from now on, never retuned (what they do to the node's
        service times is measured by the run, and only that is replayed: ``hil.compare.realised_factors``)."""
        return await self.stress(st.node.name, stress_cpus(factor))

    async def stress(self, node: str, cpus: int) -> str:
        """Replace ``node``'s co-located load by ``stress-ng --cpu cpus`` (none for ``cpus < 1``); its
        description.  Also how ``edgeprune-hil profile --under stress:N`` loads a node (``hil.profiling``)."""
        st = self.hosts[node]
        await kill_groups(st.node, st.stress_tags, self.opts, grace_s=0.1)
        st.stress_tags.clear()
        if cpus < 1:
            return "stress-ng stopped"
        tag = f"{self.tag}-stress-{len(self.log)}"
        rp = await start_remote(st.node, tag, ["stress-ng", "--cpu", str(cpus), "--quiet", "--timeout", "3600"])
        st.stress_tags.append(tag)
        await asyncio.sleep(0.2)
        if rp.proc.exit_status is not None:
            why = rp.stderr_tail[-1] if rp.stderr_tail else f"exit status {rp.proc.exit_status}"
            raise HilError(f"{where(st.node.spec)}: stress-ng failed to start ({why}; is stress-ng installed?)")
        return f"stress-ng --cpu {cpus} (open-loop)"

    async def _cpufreq(self, st: _HostState, factor: float) -> str:
        if st.original_freq is None:
            st.original_freq = await self._read_freq(st)
        script = (
            f"for d in {shlex.quote(st.node.spec.cpufreq_dir)}/cpu[0-9]*/cpufreq; do "
            f"m=$(cat $d/cpuinfo_max_freq) || exit 1; v=$(( m * 1000 / {round(factor * 1000)} )); "
            f"{_WRITE_FREQ} || exit 1; done"
        )
        await self._sh(st.node, script, "cannot cap the CPU frequency (needs cpufreq, and write access or sudo)")
        return f"cpufreq max / {factor:g}"

    async def _read_freq(self, st: _HostState) -> list[tuple[str, int]]:
        """Each core's cpufreq folder and its current ``scaling_max_freq`` (what the revert restores)."""
        script = (
            f"for d in {shlex.quote(st.node.spec.cpufreq_dir)}/cpu[0-9]*/cpufreq; do "
            '[ -r "$d/scaling_max_freq" ] || { echo "no $d/scaling_max_freq" >&2; exit 1; }; '
            'echo "$(cat $d/scaling_max_freq) $d"; done'
        )
        out = await self._sh(st.node, script, "cannot read the CPU frequency caps")
        pairs = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
        try:
            return [(d, int(v)) for v, d in pairs]
        except ValueError:
            raise HilError(f"{where(st.node.spec)}: unreadable scaling_max_freq: {out.strip()[:120]}") from None

    async def _restore_freq(self, st: _HostState) -> None:
        assert st.original_freq is not None
        script = "; ".join(f"d={shlex.quote(d)}; v={v}; {{ {_WRITE_FREQ}; }} || exit 1" for d, v in st.original_freq)
        await self._sh(st.node, script, "cannot restore the CPU frequency caps")
        st.original_freq = None

    async def emulate(self, clock: RunClock) -> None:
        """Run every emulated node's thermal emulator on the run's clock (``hil.thermal_emulator``) until
        cancelled; each node's figures go into the log when it ends."""
        tasks = [asyncio.create_task(e.run(clock)) for e in self.emulators]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # the first node's failure, one HilError
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for e in self.emulators:
                self.log.append({"time_s": e.state.t_s, "node": e.name, "how": "thermal emulator", **e.summary()})

    def add_serving(self, node: str, busy_s: float, stage_cpu_s: float | None, through_s: float) -> None:
        """Hand an emulated node's emulator a control period's report (ending at the tick ``through_s``):
        serving time and the stage's CPU time."""
        for e in self.emulators:
            if e.name == node:
                e.add_serving(busy_s, stage_cpu_s, through_s)

    async def emulated_readings(self, t_s: float, timeout_s: float) -> dict[str, tuple[float, float]]:
        """Per emulated node, its temperature and frequency once its physics is stepped to ``t_s`` (waiting
        at most ``timeout_s``; a node that did not get there is left out, and its worker's own reading stands).
        What its sensor files hold once the step is published: the coordinator observes an emulated node after
        its physics step, in the simulator's order, instead of whatever the worker read while the step raced
        it."""
        done = await asyncio.gather(*(e.stepped_to(t_s, timeout_s) for e in self.emulators))
        return {e.name: (e.state.temp_c, e.state.freq_mhz) for e, ok in zip(self.emulators, done, strict=True) if ok}

    def emulation_csv(self) -> str:
        """The emulators' per-period records as CSV (empty without emulated nodes)."""
        return emulation_csv(self.emulators)

    async def revert(self) -> list[str]:
        """Undo everything; returns problems (empty when all was restored)."""
        self.trackers.clear()
        results = await asyncio.gather(*(self._revert_host(s) for s in self.hosts.values()), return_exceptions=True)
        return [str(r) for r in results if isinstance(r, BaseException)]

    async def _revert_host(self, st: _HostState) -> None:
        if st.stress_tags:
            await kill_groups(st.node, st.stress_tags, self.opts, grace_s=0.1)
            st.stress_tags.clear()
        if st.original_quota_us is not None:
            path = shlex.quote(f"{st.node.spec.cpu_cgroup}/cpu.cfs_quota_us")
            await self._sh(st.node, f"echo {st.original_quota_us} > {path}", "cannot restore the CPU quota")
            st.original_quota_us = None
        if st.original_freq is not None:
            await self._restore_freq(st)
