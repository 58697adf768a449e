"""``edgeprune-hil``: the simulator's controller driving a real cluster over SSH.

edgeprune-hil --cluster pis.toml check
edgeprune-hil --cluster pis.toml profile --out models/profiles/mycluster.json
edgeprune-hil --cluster pis.toml profile --out under.json --under stress:2 --node pi2 --baseline mycluster.json
edgeprune-hil --cluster pis.toml run scenarios/bursty.toml --out runs/hil1 [--profile P] [--policy NAME]
    [--under-profile U]
edgeprune-hil calibrate runs/hil1 [--out calibrated.toml] [--holdout runs/hil2]
edgeprune-hil local up --nodes 4 --out DIR        (root) ... edgeprune-hil local down DIR

``check``   connect to every node (host keys verified), report Python / edgeprune / torch versions, clock
            offset and what is missing; ``--upload`` also installs the wheel / uploads the checkpoint.
``profile`` the offline benchmark on the nodes (:mod:`hil.profiling`), written as an EdgePrune profile;
            ``--under stress:N [--node NAME] [--baseline CLEAN]``: measured while ``stress-ng --cpu N`` runs on the
            named nodes (all by default), with each level's factor against the clean profile (interference).
``run``     every policy of the scenario on the cluster; results in the simulator's run-dir layout (plus
            ``"backend": "hil"`` and the nodes in ``summary.json``), and ``sim_vs_hw.json`` /
            ``sim_vs_hw.txt``: the simulator's prediction with the profile measured on the same nodes (as stated,
            as realised, why they differ per slowed node; ``--under-profile P``: also as profiled under interference).
``calibrate`` fit thermal R / tau / ambient, the frequency exponent, the hop overhead and interference factors
            from a run folder (:mod:`hil.calibrate`); ``--out`` writes them as a scenario fragment, ``--holdout``
            reports the error predicting a second run.
``local``   ``up``: an emulated cluster of real OpenSSH servers on this machine (:mod:`hil.local`), its
            cluster file, a small checkpoint, a profile measured on it and a short scenario, and the
            commands to run; ``down``: every sshd and node process stopped, cgroups and runtime files gone.

Errors are one line, ``edgeprune-hil: error: ...``, exit status 2 (configuration, unreachable node,
node failure — each names the node and the cause); Ctrl-C stops the run, keeps partial results, exit 130.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.cli.common import ArgumentParser, guarded, seed_arg
from edgeprune.errors import ConfigError, HilError
from edgeprune.results import RunResult
from edgeprune.scenario import Scenario
from hil.cluster import ClusterSpec, load_cluster

__all__ = ["main"]

PROG = "edgeprune-hil"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Run EdgePrune pipelines on a real cluster over SSH.")
    p.add_argument("--cluster", type=Path, help="cluster TOML file (check, profile, run)")
    sub = p.add_subparsers(dest="command", metavar="{check,profile,run,calibrate,local}")
    check = sub.add_parser("check", help="reachability, host keys, versions, torch, clocks")
    check.add_argument("--upload", action="store_true", help="also install the wheel / upload the checkpoint")
    prof = sub.add_parser("profile", help="offline benchmark on every node")
    prof.add_argument("--out", type=Path, required=True, help="profile JSON to write")
    prof.add_argument("--samples", type=int, default=30, help="timed runs per stage and level")
    prof.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    prof.add_argument(
        "--under",
        metavar="stress:N",
        help="profile while `stress-ng --cpu N` runs on each --node (every stage node by default): a co-located load",
    )
    prof.add_argument("--node", action="append", default=None, help="with --under: load only this node (repeatable)")
    prof.add_argument(
        "--baseline", type=Path, help="with --under: the clean profile; prints and records the per-level factors"
    )
    run = sub.add_parser("run", help="run a scenario's policies on the cluster")
    run.add_argument("scenario", type=Path)
    run.add_argument("--out", type=Path, required=True, help="run directory to write")
    run.add_argument("--profile", type=Path, help="profile measured by `profile` (replaces the scenario's)")
    run.add_argument("--policy", action="append", default=None, help="run only this policy (repeatable)")
    run.add_argument("--seed", type=seed_arg, help="override the scenario's seed")
    run.add_argument("--force", action="store_true", help="replace an existing --out directory")
    run.add_argument("--no-sim", action="store_true", help="skip the simulator's prediction")
    run.add_argument(
        "--under-profile",
        type=Path,
        help="a `profile --under stress:N` of this cluster: also predict with its per-level interference factors",
    )
    cal = sub.add_parser("calibrate", help="fit the simulator's environment and overhead parameters from a run")
    cal.add_argument("run_dir", type=Path, help="a run folder (edgeprune-hil run or edgeprune-sim --out)")
    cal.add_argument("--out", type=Path, help="scenario fragment (TOML) to write the fitted values to")
    cal.add_argument("--holdout", type=Path, help="a second run folder: report the fit's error predicting it")
    cal.add_argument(
        "--power",
        choices=("auto", "busy", "timeline", "emulator"),
        default="auto",
        help="the thermal fit's power: the power model at the measured busy time (busy), the timeline's power_w, "
        "or the thermal emulator's records (auto: busy where the run's devices have physics)",
    )
    local = sub.add_parser("local", help="an emulated cluster of OpenSSH servers on this machine (root only)")
    lsub = local.add_subparsers(dest="local_command", metavar="{up,down}")
    up = lsub.add_parser("up", help="start it; write its cluster file, a small checkpoint, a profile, a scenario")
    up.add_argument("--nodes", type=int, default=4, help="nodes (one stage each; 1 to 8)")
    up.add_argument("--out", type=Path, required=True, help="folder for the cluster (its state, files and runs)")
    up.add_argument("--duration-s", type=float, default=10.0, help="arrivals per policy in the scenario written")
    down = lsub.add_parser("down", help="stop it: every sshd and worker, its cgroups and runtime files")
    down.add_argument("dir", type=Path, help="the folder given to `local up --out`")
    return p


# -- check -----------------------------------------------------------------------------------------------------
async def _check(cluster: ClusterSpec, upload: bool) -> int:
    from hil.connect import close_all, connect_all
    from hil.deploy import coordinator_versions, ensure_deployed, probe_all, problems

    t0 = time.perf_counter()
    nodes = await connect_all(cluster.hosts, cluster.coordinator)
    try:
        print(f"connected to {len(nodes)} nodes in {time.perf_counter() - t0:.2f} s (host keys verified)")
        facts = await (ensure_deployed(cluster, nodes) if upload else probe_all(cluster, nodes))
        ours, our_torch = coordinator_versions()
        print(f"coordinator: edgeprune {ours}, torch {our_torch or '(none: not needed here)'}")
        bad = 0
        for f in facts:
            issues, _ = problems(cluster, f)
            bad += bool(issues)
            state = "ok" if not issues else "; ".join(issues)
            print(
                f"{f.node:<10} python {f.python:<8} edgeprune {f.edgeprune or '-':<8} torch {f.torch or '-':<16} "
                f"clock {f.clock_offset_s * 1000:+.0f} ms  rtt {f.rtt_s * 1000:.0f} ms  {state}"
            )
        if bad:
            raise HilError(f"{bad} node(s) not ready (see above); `check --upload` installs a configured wheel")
        return 0
    finally:
        await close_all(nodes)


# -- profile ---------------------------------------------------------------------------------------------------
async def _profile(
    cluster: ClusterSpec,
    out: Path,
    samples: int,
    warmup: int,
    argv: Sequence[str],
    under: Any = None,
    baseline: Path | None = None,
) -> int:
    """Profile every stage node (``under``: a :class:`hil.profiling.Interference` loading some of them), write
    ``out``; with ``baseline``, print and record each level's factor against that clean profile."""
    from edgeprune.profile import load_profile
    from hil.connect import close_all, connect_all
    from hil.deploy import ensure_deployed
    from hil.profiling import assemble_profile, interference_factors, measure_nodes, replace_meta

    clean = load_profile(baseline) if baseline is not None else None  # a bad baseline fails before the nodes
    hosts = cluster.stage_hosts()
    nodes = await connect_all(hosts, cluster.coordinator)
    try:
        await ensure_deployed(cluster, nodes)
        t0 = time.perf_counter()
        parts = await measure_nodes(cluster, nodes, samples, warmup, under)
        profile = assemble_profile(cluster, parts, argv, under)
    finally:
        await close_all(nodes)
    factors = interference_factors(clean, profile) if clean is not None else None
    if factors is not None:
        profile = replace_meta(profile, cluster.name, interference_factors=factors, baseline=str(baseline))
    profile.save(out)
    dev = profile.devices[cluster.name]
    loaded = f" under stress-ng --cpu {under.stress_cpus} on {', '.join(under.nodes)}" if under is not None else ""
    print(f"profiled {len(parts)} stages on {len(nodes)} nodes{loaded} in {time.perf_counter() - t0:.1f} s -> {out}")
    for k, node in enumerate(dev.meta["nodes"]):
        means = " ".join(f"{dev.mean_s(k, lv) * 1000:.2f}" for lv in range(profile.n_levels))
        shown = f"; x per level vs {baseline}: " + " ".join(f"{f:.2f}" for f in factors[node]) if factors else ""
        print(f"  stage {k} on {node}: mean ms per level {means}{shown}")
    if under is not None:
        print(f"use: `run ... --under-profile {out}` predicts a stress slowdown of that many hogs with these factors")
    else:
        print(f"profile device: {cluster.name!r} (map the scenario's devices to it, or pass --profile to `run`)")
    return 0


def _profile_cmd(cluster: ClusterSpec, args: argparse.Namespace, argv: Sequence[str]) -> int:
    from hil.profiling import parse_under

    if args.under is None and (args.node or args.baseline is not None):
        raise ConfigError("profile: --node and --baseline go with --under stress:N")
    under = parse_under(args.under, cluster, args.node) if args.under is not None else None
    return asyncio.run(_profile(cluster, args.out, args.samples, args.warmup, argv, under, args.baseline))


# -- run -------------------------------------------------------------------------------------------------------
@dataclass
class _Outcome:
    results: list[RunResult] = field(default_factory=list)
    error: BaseException | None = None
    nodes_info: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    emulation: dict[str, str] = field(default_factory=dict)  # policy -> thermal_emulator.csv text
    cleanup: list[str] = field(default_factory=list)
    inputs: str = ""  # what was fed: synthetic tensors or N images from a folder
    probe: RunResult | None = None  # the idle-chain requests sent before the policies (hil.coordinator)
    refused: list[str] = field(default_factory=list)  # connections refused for want of the run's secret


def _load_run_scenario(cluster: ClusterSpec, args: argparse.Namespace) -> Scenario:
    from edgeprune.profile import load_profile
    from edgeprune.scenario import load_scenario
    from hil.compare import with_cluster_physics, with_profile

    sc = load_scenario(args.scenario, seed=args.seed, policies=args.policy)
    if args.profile is not None:
        prof = load_profile(args.profile)
        sc = with_profile(sc, prof, cluster.name if cluster.name in prof.devices else None)
    names = [s.name for s in sc.stages]
    placed = [s.name for s in cluster.stages]
    if names != placed:
        raise ConfigError(f"{cluster.source}: stages {placed} do not match the scenario's {names} ({sc.source})")
    sc = with_cluster_physics(sc, cluster)  # emulated hosts: the policies and the prediction see their physics
    _refuse_oracles(sc)
    return sc


def _refuse_oracles(sc: Scenario) -> None:
    """Hardware has no ground truth to hand a policy that wants an oracle view: refuse it before connecting."""
    from edgeprune.controller import make_policy, wants_oracle
    from sim.runner import curves_for

    curves = curves_for(sc)
    for i, spec in enumerate(sc.policies):
        if wants_oracle(make_policy(spec, curves)):
            raise ConfigError(
                f"{sc.source}: policy[{i}] = {spec.name!r} (kind {spec.kind!r}) wants the simulator's ground truth "
                "(wants_oracle), which hardware cannot supply: leave it out with --policy"
            )


async def _run(cluster: ClusterSpec, sc: Scenario, probe: bool = True) -> _Outcome:
    """Connect, deploy, start the workers, time the idle chain (``probe``: for the comparison), run every
    policy; never raises for run failures (they come back in ``_Outcome.error``)."""
    from hil.connect import close_all, connect_all
    from hil.coordinator import RequestSource, probe_hops, run_policy
    from hil.deploy import ensure_deployed, remote_checkpoint
    from hil.environment import Environment, node_schedule
    from hil.session import Session, WorkerConfig, new_tag
    from sim.runner import curves_for, draw_streams

    out = _Outcome()
    curves = curves_for(sc)
    streams = draw_streams(sc)
    changes = node_schedule(sc, cluster)
    nodes = await connect_all(cluster.stage_hosts(), cluster.coordinator)
    tag = new_tag("run")
    session = Session(cluster, nodes, [s.name for s in sc.stages], tag)
    try:
        await ensure_deployed(cluster, nodes)
        cfg = WorkerConfig(
            checkpoint={n.name: remote_checkpoint(cluster, n) for n in nodes},
            nominal_s=curves.latency_s,
            queue_capacity=sc.queue.capacity,
            drop_head=sc.queue.drop == "head",
            threads=cluster.model.threads,
        )
        await session.start(cfg)
        out.nodes_info = {
            w.node.name: {"stage": w.stage_name, "load_s": w.ready.get("load_s")} for w in session.workers
        }
        _check_ladder(session, sc)
        source = RequestSource(session.workers[0].ready["input_shape"], cluster.model.images, sc.seed)
        out.inputs = (
            f"{len(source.images)} images from {cluster.model.images}" if source.images else "synthetic tensors"
        )
        if probe:
            print("timing the idle chain (hop probe)...", file=sys.stderr)
            env = Environment(nodes, cluster.coordinator, f"{tag}-probe")
            timed = await probe_hops(session, sc, curves, source, env)
            if timed.error is not None:
                raise timed.error
            out.probe = timed.result
        for i, spec in enumerate(sc.policies):
            print(f"running policy {spec.name} ({streams.arrivals_s.size} requests)...", file=sys.stderr)
            env = Environment(nodes, cluster.coordinator, f"{tag}-env{i}")
            pr = await run_policy(session, sc, spec, curves, streams.arrivals_s, source, env, changes, i)
            out.results.append(pr.result)
            out.environment[spec.name] = pr.environment_log
            if pr.emulation_csv:
                out.emulation[spec.name] = pr.emulation_csv
            if pr.error is not None:
                out.error = pr.error
                break
    except (HilError, asyncio.CancelledError) as exc:
        out.error = exc
    finally:
        out.refused = list(session.refused)
        out.cleanup = await asyncio.shield(session.close())
        await close_all(nodes)
    return out


def _check_ladder(session: Any, sc: Scenario) -> None:
    ready = session.workers[0].ready
    if int(ready["n_stages"]) != len(sc.stages) or int(ready["n_levels"]) != sc.profile.n_levels:
        raise HilError(
            f"the checkpoint has {ready['n_stages']} stages x {ready['n_levels']} levels, the scenario's profile "
            f"{sc.profile_path} has {len(sc.stages)} x {sc.profile.n_levels}"
        )


def _header(cluster: ClusterSpec, sc: Scenario, out: _Outcome) -> dict[str, Any]:
    from edgeprune.runs import header

    doc = header(sc)
    doc["backend"] = "hil"
    doc["cluster"] = cluster.name
    doc["nodes"] = [s.host for s in cluster.stages]
    doc["transport"] = cluster.coordinator.transport
    doc["inputs"] = out.inputs
    doc["workers"] = out.nodes_info
    doc["environment_applied"] = out.environment
    if out.refused:
        doc["refused_connections"] = out.refused
    if out.error is not None:
        doc["aborted"] = _error_text(out.error)
    return doc


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return "interrupted by the user (Ctrl-C)"
    return str(exc)


def _sim_vs_hw(
    cluster: ClusterSpec,
    sc: Scenario,
    results: Sequence[RunResult],
    probe: RunResult | None,
    profiled: dict[str, dict[str, list[float]]] | None = None,
) -> tuple[str, dict[str, str]]:
    """The comparison table and its files (``sim_vs_hw.json``, ``sim_vs_hw.txt``) for the run folder.  ``sc``
    already carries the emulated hosts' physics (``hil.compare.with_cluster_physics``); ``profiled``: the
    interference factors of ``--under-profile`` (``hil.profiling.with_interference``) for the as-profiled table."""
    from hil.compare import (
        as_profiled,
        format_compare,
        format_interference,
        idle_overhead_s,
        sim_vs_hw,
        stated_vs_realised,
        to_json,
    )

    idle_s = idle_overhead_s(probe) if probe is not None else None
    emulated = {h.name: h.emulate_physics.preset for h in cluster.stage_hosts() if h.emulate_physics is not None}
    methods = _slowdown_methods(cluster, sc)
    doc = sim_vs_hw(sc, results, idle_s, emulated)
    doc["hop_probe"] = {"requests": probe.requests.height if probe is not None else 0, "overhead_s": idle_s}
    doc["slowdown_methods"] = methods
    doc["interference"] = stated_vs_realised(sc, results, doc["as_realised"]["drift_factors"], doc["slowdown_methods"])
    if profiled:
        doc["as_profiled"] = as_profiled(sc, results, profiled, idle_s)
    table = "\n".join([format_compare(doc), *format_interference(doc)])
    return table, {"sim_vs_hw.json": to_json(doc), "sim_vs_hw.txt": table + "\n"}


def _slowdown_methods(cluster: ClusterSpec, sc: Scenario) -> dict[str, str]:
    """Per scenario device with environment events: how its hosts realise them (open-loop or retuned)."""
    from hil.environment import hosts_of_device, stress_cpus

    hosts = {h.name: h for h in cluster.hosts}
    out = {}
    for device in sorted({ev.device for ev in sc.environment}):
        stated = sorted({f for ev in sc.environment if ev.device == device for _, f in ev.change_points() if f != 1})
        ways = set()
        for h in sorted(hosts_of_device(sc, cluster, device)):
            method = hosts[h].slowdown_method
            if method == "stress":
                ways.add(f"stress-ng --cpu {'/'.join(str(stress_cpus(f)) for f in stated)}, open-loop")
            elif method == "cgroup":
                tracked = cluster.coordinator.track_slowdowns and hosts[h].emulate_physics is None
                ways.add("CPU quota, retuned to the stated factor" if tracked else "CPU quota, open-loop")
            else:
                ways.add("cpufreq cap, open-loop")
        out[device] = "; ".join(sorted(ways))
    return out


def _under_profile(cluster: ClusterSpec, sc: Scenario, path: Path) -> dict[str, dict[str, list[float]]]:
    """``run --under-profile``: the interference factors it gives the scenario's stress-slowed devices; a
    one-line error, before any node is touched, when it fits none of them."""
    from edgeprune.profile import load_profile
    from hil.profiling import profiled_interference, with_interference

    under = load_profile(path)
    profiled = with_interference(sc, cluster, under)
    if not profiled:
        _, load = profiled_interference(under)
        raise ConfigError(
            f"{path}: measured under stress-ng --cpu {load.stress_cpus} on {', '.join(load.nodes)}; no environment "
            f"event of {sc.source} is a stress slowdown starting that many hogs there (stress-ng --cpu round(f - 1))"
        )
    return profiled


def _run_cmd(cluster: ClusterSpec, args: argparse.Namespace) -> int:
    from edgeprune.results import write_run_dir
    from edgeprune.runs import format_table, scenario_toml

    sc = _load_run_scenario(cluster, args)
    profiled = _under_profile(cluster, sc, args.under_profile) if args.under_profile is not None else None
    t0 = time.perf_counter()
    out = asyncio.run(_run(cluster, sc, probe=not args.no_sim))
    wall_s = time.perf_counter() - t0
    table, cmp_error = "", None
    files: dict[str, str] = {}
    if out.error is None and not args.no_sim:
        try:
            table, files = _sim_vs_hw(cluster, sc, out.results, out.probe, profiled)
        except Exception as exc:  # the hardware results are published all the same, then the error is raised
            cmp_error = exc
    files.update({f"{policy}/thermal_emulator.csv": text for policy, text in out.emulation.items()})
    if out.results:
        header = _header(cluster, sc, out)
        if cmp_error is not None:
            header["sim_vs_hw_error"] = f"{type(cmp_error).__name__}: {cmp_error}"
        write_run_dir(
            args.out,
            scenario_toml=scenario_toml(sc),
            header=header,
            results=out.results,
            force=args.force,
            extra_files=files,
        )
        print(f"scenario {sc.name}  seed {sc.seed}  SLO {sc.slo_s:g} s  on {cluster.name} ({wall_s:.1f} s wall)")
        print(format_table(out.results))
    if cmp_error is not None:
        raise cmp_error
    if table:
        print("\nsimulator vs hardware (same scenario, same arrivals, profile " + str(sc.profile_path) + "):")
        print(table)
    if out.results:
        print(f"results written to {args.out}")
    if out.cleanup:
        print(f"{PROG}: warning: cleanup: {'; '.join(out.cleanup)}", file=sys.stderr)
    if isinstance(out.error, asyncio.CancelledError):
        print(f"{PROG}: interrupted (Ctrl-C); partial results in {args.out}", file=sys.stderr)
        return 130
    if out.error is not None:
        kept = f" (partial results written to {args.out})" if out.results else ""
        raise HilError(f"{_error_text(out.error)}{kept}")
    return 0


def _calibrate_cmd(args: argparse.Namespace) -> int:
    from edgeprune.atomic import atomic_write_text
    from hil.calibrate import calibrate, calibration_toml, format_calibration, holdout_errors

    cal = calibrate(args.run_dir, args.power)
    held = holdout_errors(cal, args.holdout) if args.holdout is not None else None
    print(format_calibration(cal, held))
    if args.out is not None:
        atomic_write_text(args.out, calibration_toml(cal, held))
        print(f"scenario fragment written to {args.out}")
    return 0


# -- local -----------------------------------------------------------------------------------------------------
def _local_up(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Start the local cluster (:mod:`hil.local`), write what the README's commands need, print them."""
    from edgeprune.atomic import atomic_write_text
    from hil.local import RUN_VIT, cgroup_missing, local_scenario, make_tiny_checkpoint, missing, start_local_cluster

    reason = missing()
    if reason is not None:
        raise HilError(f"local up: {reason}")
    if not 1 <= args.nodes <= 8:
        raise ConfigError(f"local up: --nodes = {args.nodes}: must be 1 to 8 (the model has 8 blocks)")
    if not args.duration_s > 0:
        raise ConfigError(f"local up: --duration-s = {args.duration_s}: must be > 0")
    out = args.out.resolve()
    cgroups = cgroup_missing() is None
    cluster = start_local_cluster(args.nodes, cgroups=cgroups, out=out)
    try:
        ckpt = make_tiny_checkpoint(out / "model", RUN_VIT, args.nodes)
        quota = round(min(0.4, 0.8 * (os.cpu_count() or 1) / args.nodes), 2) if cgroups else 0.0
        cluster_file, scenario, profile = out / "cluster.toml", out / "scenario.toml", out / "profile.json"
        atomic_write_text(cluster_file, cluster.cluster_toml(ckpt, cpu_quota=quota))
        atomic_write_text(scenario, local_scenario(args.nodes, args.duration_s))
        asyncio.run(_profile(load_cluster(cluster_file), profile, 5, 2, argv))
    except BaseException:
        cluster.stop()
        raise
    where = f"{args.nodes} nodes on 127.0.0.1 ports {', '.join(str(n.port) for n in cluster.nodes)}"
    quota_text = f"each capped at {quota:g} CPU" if quota else "no CPU quotas (no cgroup v1 cpu controller)"
    print(f"local cluster up: {where}, {quota_text}; state in {out}")
    print("next:")
    c = f"{PROG} --cluster {cluster_file}"
    print(f"  {c} check")
    print(f"  {c} profile --out {profile}")
    print(f"  {c} run {scenario} --out {out / 'runs' / 'run1'} --profile {profile}")
    print(f"  {PROG} local down {out}")
    return 0


def _local_down(args: argparse.Namespace) -> int:
    """Stop the local cluster saved in ``args.dir`` (every ``pi`` process, every sshd, the cgroups)."""
    from hil.local import load_local_cluster

    if os.geteuid() != 0:
        raise HilError("local down: needs root (the nodes' processes and cgroups belong to root)")
    cluster = load_local_cluster(args.dir)
    left = cluster.stop()
    still = cluster.pi_processes() + [str(p) for p in cluster.sshd_pids()]
    if still:
        raise HilError(f"local down: still running after the teardown: {'; '.join(still)}")
    killed = f"; killed {len(left)} leftover process(es) of the nodes" if left else ""
    print(f"local cluster down: {len(cluster.nodes)} sshd stopped, cgroups and runtime files removed{killed}")
    return 0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments; a usage error (one line and the usage) where ``--cluster`` or ``local``'s command is missing."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "local" and args.local_command is None:
        parser.error("local: no command given: up or down (see `edgeprune-hil local --help`)")
    if args.command not in ("local", "calibrate") and args.cluster is None:
        parser.error("the following arguments are required: --cluster (for check, profile and run)")
    return args


def _dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "local":
        return _local_up(args, argv) if args.local_command == "up" else _local_down(args)
    if args.command == "calibrate":
        return _calibrate_cmd(args)
    cluster = load_cluster(args.cluster)  # a missing or bad cluster file is named before a missing command
    if args.command is None:
        raise ConfigError("no command given: check, profile or run (or calibrate; see `edgeprune-hil --help`)")
    if args.command == "check":
        return asyncio.run(_check(cluster, args.upload))
    if args.command == "profile":
        return _profile_cmd(cluster, args, argv)
    return _run_cmd(cluster, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeprune-hil``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: _dispatch(_parse(argv), argv))


if __name__ == "__main__":
    sys.exit(main())
