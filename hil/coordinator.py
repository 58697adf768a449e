"""The experiment: the simulator's controller object driving the real pipeline, on the scenario's clock.

For every policy of the scenario (one :class:`~hil.session.Session` serves them all, one after another):

1. the policy object is built with :func:`edgeprune.controller.make_policy` and the same
   :class:`PipelineCurves` the simulator gives it (:func:`sim.runner.curves_for`);
2. ``decide`` is called with the start observation and the levels are sent before the first request;
3. the *feeder* sends request ``i`` at ``t0 + arrivals_s[i]`` on the coordinator's monotonic clock (the
   arrival times of :func:`sim.runner.draw_streams`, unscaled), recording send times; results are
   timestamped on the same clock when they come back from the last stage;
4. the *controller* asks every worker for its counters every ``period_s``, builds the identical
   :class:`~edgeprune.controller.Observation`, calls ``decide`` and sends the answer (workers apply it between
   two requests);
5. the *environment* applies the scenario's slowdowns on the nodes at their times (:mod:`hil.environment`);
6. the run ends when every request is done or dropped, or ``drain_s`` after the last arrival.

Any worker failure, lost link or Ctrl-C stops the run at once; what was collected is returned as a partial
:class:`~edgeprune.results.RunResult` (unanswered requests ``unfinished``) with the error, so the caller can
write it and then report the node and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.controller import Observation, PipelineCurves, PolicySpec, make_policy
from edgeprune.controller.decision import validate_levels
from edgeprune.controller.static import StaticParams
from edgeprune.errors import HilError, PolicyError
from edgeprune.results import RunResult
from edgeprune.scenario import Scenario
from hil.environment import Environment, NodeChange
from hil.records import RunRecorder, stage_obs
from hil.session import Session
from hil.thermal_emulator import RunClock

__all__ = ["PolicyRun", "RequestSource", "run_policy"]

START_DELAY_S = 0.3  # first arrival this long after the start observation (levels reach the workers first)


class RequestSource:
    """Request payloads: one synthetic tensor of the first stage's input shape, or images from a folder."""

    def __init__(self, input_shape: Sequence[int], images: str = "", seed: int = 0) -> None:
        self.images: list[Path] = []
        if images:
            folder = Path(images)
            exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
            self.images = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts) if folder.is_dir() else []
            if not self.images:
                raise HilError(f"model.images = {images!r}: no image files (jpg, png, bmp, webp) in that folder")
        rng = np.random.default_rng(seed)
        self.shape = [int(v) for v in input_shape]
        self.tensor = rng.standard_normal(self.shape, dtype=np.float32).tobytes()

    def frame(self, rid: int, run: int) -> tuple[dict[str, Any], bytes]:
        """Header and payload of request ``rid``."""
        if self.images:
            data = self.images[rid % len(self.images)].read_bytes()
            return {"id": rid, "run": run, "kind": "image", "levels": []}, data
        return {
            "id": rid,
            "run": run,
            "kind": "tensor",
            "shape": self.shape,
            "dtype": "float32",
            "levels": [],
        }, self.tensor


@dataclass
class PolicyRun:
    """The outcome of one policy's run: the result (possibly partial) and the error that cut it short."""

    result: RunResult
    error: BaseException | None
    environment_log: list[dict[str, Any]]
    emulation_csv: str = ""  # the thermal emulator's per-period records (hil.thermal_emulator), if any node had one


def _start_observation(n_stages: int, levels: Sequence[int]) -> Observation:
    from edgeprune.controller import StageObs

    zero = [
        StageObs(level=int(lv), queue_len=0, busy=False, arrivals=0, served=0, busy_s=0.0, nominal_s=0.0, dropped=0)
        for lv in levels
    ]
    del n_stages
    return Observation(time_s=0.0, period_s=0.0, arrivals=0, stages=tuple(zero))


class _Run:
    """The tasks of one policy's run (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        sc: Scenario,
        spec: PolicySpec,
        curves: PipelineCurves,
        arrivals_s: np.ndarray,
        source: RequestSource,
        run_index: int,
    ) -> None:
        self.session = session
        self.sc = sc
        self.spec = spec
        self.curves = curves
        self.arrivals_s = arrivals_s
        self.source = source
        self.run_index = run_index
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        hosts = session.cluster.stage_hosts()
        physics = tuple(h.power_model for h in hosts)
        emulated = tuple(h.cpu_quota if h.emulate_physics is not None and h.physics is None else None for h in hosts)
        self.rec = RunRecorder(spec.name, curves.stage_names, arrivals_s, sc.warmup_s, curves, physics, emulated)
        self.all_accounted = asyncio.Event()
        self.levels: list[int] = [0] * curves.n_stages
        self.env: Environment | None = None

    def now_s(self) -> float:
        """Seconds on the run clock (0 = the first possible arrival)."""
        return self.loop.time() - self.t0

    def on_result(self, header: dict[str, Any], at: float) -> None:
        """A result frame from the last stage."""
        if header.get("run") != self.run_index:
            self.rec.late_results += 1
            return
        self.rec.result_arrived(int(header["id"]), at - self.t0, header.get("levels", []))
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.rec.accounted >= self.arrivals_s.size:
            self.all_accounted.set()

    async def _sleep_until(self, t_s: float) -> None:
        delay = self.t0 + t_s - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def feeder(self) -> None:
        """Send every request at its arrival time."""
        for rid, a in enumerate(self.arrivals_s.tolist()):
            await self._sleep_until(a)
            header, payload = self.source.frame(rid, self.run_index)
            self.session.send(header, payload)
            self.rec.sent(rid, self.now_s())
            await self.session.drain()

    def _validate(self, decided: object, time_s: float) -> tuple[int, ...]:
        """The one decision rule (``edgeprune.controller.decision``), as in the simulator and the checker."""
        return validate_levels(
            decided, self.curves.n_stages, self.curves.n_levels, policy=self.spec.name, time_s=time_s
        )

    def _apply(self, levels: Sequence[int]) -> None:
        for k, lv in enumerate(levels):
            if lv != self.levels[k]:
                self.session.set_level(k, lv)
        self.levels = list(levels)

    async def controller(self, policy: Any, period_s: float) -> None:
        """Every period: reports → Observation → decide → levels."""
        n = 1
        prev_t = 0.0
        while True:
            t = n * period_s
            await self._sleep_until(t)
            await self._control_step(policy, prev_t, t)
            prev_t = t
            n += 1

    async def _control_step(self, policy: Any, prev_t: float, t: float) -> None:
        reports = await self.session.report_all()
        if self.env is not None and self.env.emulators:
            reports = await self._emulated_physics(reports, t, t - prev_t)
        lo, hi = np.searchsorted(self.arrivals_s, [prev_t, t], side="left")
        obs = Observation(
            time_s=t,
            period_s=t - prev_t,
            arrivals=int(hi - lo),
            stages=tuple(stage_obs(r, node) for r, node in zip(reports, self.rec.nodes, strict=True)),
        )
        decided = self._validate(policy.decide(obs), t)
        self.rec.period(obs, decided, reports)
        self._apply(decided)
        self._maybe_done()
        if self.env is not None and self.env.trackers:
            await self._track(self.env, obs)

    async def _emulated_physics(self, reports: list[dict[str, Any]], t: float, period_s: float) -> list[dict[str, Any]]:
        """Hand the emulators the period's serving, then take each emulated node's temperature and frequency
        from its emulator once its physics is stepped to ``t`` (the simulator's order: physics
        to the instant, then the tick's observation); the reports with those readings."""
        assert self.env is not None
        hosts = [self.session.cluster.stages[k].host for k in range(len(reports))]
        for host, report in zip(hosts, reports, strict=True):
            stage_cpu = report.get("cpu_stage_s")
            busy_s = float(report["busy_s"])
            self.env.add_serving(host, busy_s, None if stage_cpu is None else float(stage_cpu), t)
        fresh = await self.env.emulated_readings(t, period_s)
        out = []
        for host, report in zip(hosts, reports, strict=True):
            if host in fresh:
                temp_c, freq_mhz = fresh[host]
                report = {**report, "temp_c": temp_c, "freq_mhz": freq_mhz}
            out.append(report)
        return out

    async def _track(self, env: Environment, obs: Observation) -> None:
        """Hand each tracked node its stages' service measurements of the period (``hil.environment``)."""
        hosts = [self.session.cluster.stages[k].host for k in range(len(obs.stages))]
        for node in list(env.trackers):
            mine = [st for st, h in zip(obs.stages, hosts, strict=True) if h == node]
            served = sum(st.served for st in mine)
            await env.track(node, obs.time_s, served, sum(st.busy_s for st in mine), sum(st.nominal_s for st in mine))

    async def environment(self, env: Environment, changes: Sequence[NodeChange]) -> None:
        """Apply the node slowdowns at their times."""
        for ch in changes:
            await self._sleep_until(ch.time_s)
            await env.apply(ch)

    async def run(self, env: Environment, changes: Sequence[NodeChange]) -> None:
        """The whole run; returns when done or drained, raises on failure."""
        self.env = env
        policy = make_policy(self.spec, self.curves)
        first = self._validate(policy.decide(_start_observation(self.curves.n_stages, self.levels)), 0.0)
        self._apply(first)
        self.session.on_result = self.on_result
        self.t0 = self.loop.time() + START_DELAY_S
        last_s = float(self.arrivals_s[-1]) if self.arrivals_s.size else 0.0
        end_s = (self.sc.duration_s if self.sc.duration_s is not None else last_s) + self.sc.drain_s
        tasks = [
            asyncio.create_task(self.feeder()),
            asyncio.create_task(self.controller(policy, self.spec.period_s)),
            asyncio.create_task(self.environment(env, changes)),
        ]
        emulation = (
            asyncio.create_task(env.emulate(RunClock(self.now_s, self._sleep_until, self.spec.period_s)))
            if env.emulators
            else None
        )
        tasks += [emulation] if emulation is not None else []
        try:
            await self.session._race(self._until_end(end_s, tasks[0], emulation))
            await self._final_report()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.session.on_result = None

    async def _until_end(self, end_s: float, feeder: asyncio.Task[None], guard: asyncio.Task[None] | None) -> None:
        """Wait for the feeder, then for every request to be accounted for or the drain deadline; a failure of
        ``guard`` (the thermal emulation) ends the wait with its error."""
        await _unless_failed(feeder, guard)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(_unless_failed(self.all_accounted.wait(), guard), max(end_s - self.now_s(), 0.0))

    async def _final_report(self) -> None:
        """Collect drops reported after the last control period."""
        reports = await self.session.report_all()
        for k, rep in enumerate(reports):
            for rid in rep.get("dropped_ids", []):
                self.rec.dropped(int(rid), k)
            self.rec.switches += int(rep.get("switches", 0))

    def result(self) -> RunResult:
        """The (possibly partial) result."""
        last_s = float(self.arrivals_s[-1]) if self.arrivals_s.size else 0.0
        window_end = self.sc.duration_s if self.sc.duration_s is not None else last_s
        return self.rec.result(slo_s=self.sc.slo_s, window_end_s=window_end)


async def _unless_failed(aw: Any, guard: asyncio.Task[None] | None) -> None:
    """Await ``aw``; if ``guard`` fails first, cancel ``aw`` and raise ``guard``'s error."""
    if guard is None:
        await aw
        return
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task, guard}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done and guard.exception() is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise guard.exception()  # type: ignore[misc]
    await task


async def run_policy(
    session: Session,
    sc: Scenario,
    spec: PolicySpec,
    curves: PipelineCurves,
    arrivals_s: np.ndarray,
    source: RequestSource,
    env: Environment,
    changes: Sequence[NodeChange],
    run_index: int,
) -> PolicyRun:
    """One policy on the running session; never raises for run failures (they come back in ``error``)."""
    run = _Run(session, sc, spec, curves, arrivals_s, source, run_index)
    error: BaseException | None = None
    try:
        await session.reset_all()
        await env.setup()
        await run.run(env, changes)
    except (HilError, PolicyError) as exc:
        error = exc
    except asyncio.CancelledError as exc:
        error = exc
    finally:
        problems = await asyncio.shield(env.revert())
    if problems:  # reported after the run's own failure, which stays the first thing the user reads
        restore = "environment not restored: " + "; ".join(problems)
        if error is None:
            error = HilError(restore)
        elif isinstance(error, HilError):
            error = HilError(f"{error}; {restore}")
    return PolicyRun(run.result(), error, list(env.log), env.emulation_csv())


PROBE_REQUESTS = 8
PROBE_RUN_INDEX = 1_000_000  # result frames of the probe carry this run index, never a policy's


async def probe_hops(
    session: Session, sc: Scenario, curves: PipelineCurves, source: RequestSource, env: Environment
) -> PolicyRun:
    """Send ``PROBE_REQUESTS`` requests through the idle chain at level 0, one at a time, before the policies.

    Each finds every stage idle, so its latency is its service times plus the time no profile holds (sockets,
    (de)serialisation outside the timed span, the coordinator, a capped node's CFS wait): what the
    simulator's hops must carry for its prediction to describe this cluster (``hil.compare.idle_overhead_s``).
    """
    gap_s = 1.5 * sum(row[0] for row in curves.latency_s) + 0.1  # the previous request has surely left
    arrivals_s = np.arange(PROBE_REQUESTS, dtype=np.float64) * gap_s
    k_n = curves.n_stages
    spec = PolicySpec(name="hop-probe", kind="static", params=StaticParams(levels=(0,) * k_n, period_s=gap_s))
    probe_sc = replace(sc, duration_s=float(arrivals_s[-1] + gap_s), warmup_s=0.0, environment=(), drain_s=5.0)
    return await run_policy(session, probe_sc, spec, curves, arrivals_s, source, env, (), PROBE_RUN_INDEX)
