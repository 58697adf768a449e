"""``edgeprune-hil profile``: the offline benchmark, run on the nodes themselves → an EdgePrune profile.

Every node times *its own* stage at every level (``python -m hil.worker profile``: levels interleaved,
warm-up first, along the exact decode → compute → encode path a worker serves requests on), all nodes in
parallel, each under its configured ``cpu_quota`` (applied once every node has loaded its stage).  The
samples become one profile device named after the cluster (stage ``k``'s latencies measured on the node
that runs stage ``k``), so a scenario whose devices map to that profile device simulates exactly this
placement on this hardware — the condition for comparing the simulator's prediction with a run.

Under interference (``profile --under stress:N [--node NAME]``): the same measurement while ``stress-ng --cpu
N`` runs on each named node (every stage node by default), as a co-located process would on a real node.  The
result is a profile like the clean one (so it can stand in for it in a simulation of a node under that load
the whole time) whose device ``meta["under"]`` says what loaded which node.  Against a clean profile
(:func:`interference_factors`: ``--baseline`` at profiling, or ``run --under-profile`` against the run's
profile) each level's factor is its mean service time under the load over the clean one — level-dependent,
because a pruned level's shorter compute leaves a larger share of fixed per-service work and its own CPU
demand meets the hogs differently.  ``hil.compare`` uses them for the *as profiled* prediction of a run whose
``stress`` slowdown starts that many hogs.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeprune.errors import ConfigError, HilError, ProfileError
from edgeprune.profile import DeviceProfile, Profile, profile_from_dict
from edgeprune.scenario import Scenario
from hil.cluster import ClusterSpec
from hil.connect import Node, where
from hil.deploy import remote_checkpoint
from hil.environment import Environment, hosts_of_device, stress_cpus
from hil.remote import RemoteProc, kill_groups, start_remote
from hil.session import new_tag

__all__ = [
    "STRESS_SETTLE_S",
    "Interference",
    "assemble_profile",
    "interference_factors",
    "measure_nodes",
    "parse_under",
    "profiled_interference",
    "replace_meta",
    "with_interference",
]

STRESS_SETTLE_S = 1.0  # stress-ng forks its workers and reaches full load within this (then the timed runs start)


@dataclass(frozen=True)
class Interference:
    """A co-located load to profile under: ``stress-ng --cpu stress_cpus`` on each of ``nodes``."""

    stress_cpus: int
    nodes: tuple[str, ...]

    @property
    def text(self) -> str:
        """As given on the command line (``stress:N``)."""
        return f"stress:{self.stress_cpus}"

    def meta(self) -> dict[str, Any]:
        """What the profile device records about it (``meta["under"]``)."""
        return {
            "load": f"stress-ng --cpu {self.stress_cpus}",
            "stress_cpus": self.stress_cpus,
            "nodes": list(self.nodes),
        }


def parse_under(text: str, cluster: ClusterSpec, nodes: Sequence[str] | None) -> Interference:
    """``--under stress:N`` (N >= 1 CPU hogs) on ``nodes`` (every stage node when none); one-line errors."""
    kind, _, count = text.partition(":")
    if kind != "stress" or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"profile --under {text!r}: expected stress:N with N >= 1 (stress-ng --cpu N on the node)")
    stage_hosts = [h.name for h in cluster.stage_hosts()]
    for n in nodes or ():
        if n not in stage_hosts:
            raise ConfigError(f"profile --node {n!r}: not a stage host of {cluster.source} ({', '.join(stage_hosts)})")
    return Interference(int(count), tuple(dict.fromkeys(nodes)) if nodes else tuple(stage_hosts))


async def _start(cluster: ClusterSpec, node: Node, stage: int, tag: str, samples: int, warmup: int) -> RemoteProc:
    argv = [
        node.spec.python,
        "-m",
        "hil.worker",
        "profile",
        "--checkpoint",
        remote_checkpoint(cluster, node),
        "--stage",
        str(stage),
        "--threads",
        str(cluster.model.threads),
        "--samples",
        str(samples),
        "--warmup",
        str(warmup),
        "--tag",
        tag,
    ]
    rp = await start_remote(node, f"{tag}-s{stage}", argv)
    line = await rp.proc.stdout.readline()
    if not line:
        await rp.proc.wait_closed()
        await asyncio.sleep(0.05)
        why = rp.stderr_tail[-1] if rp.stderr_tail else f"exit status {rp.proc.exit_status}"
        raise HilError(f"{where(node.spec)}: the profiling worker of stage {stage} failed to start: {why}")
    return rp


async def _finish(rp: RemoteProc, stage: int) -> dict[str, Any]:
    node = rp.node
    rp.proc.stdin.write("go\n")
    rp.proc.stdin.write_eof()
    lines = [ln async for ln in rp.proc.stdout if ln.strip()]
    await rp.proc.wait_closed()
    await asyncio.sleep(0.05)
    if rp.proc.exit_status != 0 or not lines:
        why = rp.stderr_tail[-1] if rp.stderr_tail else f"exit status {rp.proc.exit_status}"
        raise HilError(f"{where(node.spec)}: profiling stage {stage} failed: {why}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["node"] = node.name
    return result


async def measure_nodes(
    cluster: ClusterSpec, nodes: Sequence[Node], samples: int, warmup: int, under: Interference | None = None
) -> list[dict[str, Any]]:
    """Every node's stage measurements, in stage order (nodes ordered as the cluster's stages); with ``under``,
    while its co-located load runs on its nodes (started once every stage is loaded, ``STRESS_SETTLE_S``
    before the first timed run)."""
    tag = new_tag("profile")
    env = Environment(nodes, cluster.coordinator, tag)
    try:
        procs = await asyncio.gather(*(_start(cluster, n, k, tag, samples, warmup) for k, n in enumerate(nodes)))
        await env.setup()
        if under is not None:
            await asyncio.gather(*(env.stress(n, under.stress_cpus) for n in under.nodes))
            await asyncio.sleep(STRESS_SETTLE_S)
        return list(await asyncio.gather(*(_finish(rp, k) for k, rp in enumerate(procs))))
    finally:
        await asyncio.shield(
            asyncio.gather(
                env.revert(),
                *(kill_groups(n, [f"{tag}-s{k}"], cluster.coordinator, grace_s=0.1) for k, n in enumerate(nodes)),
            )
        )


def assemble_profile(
    cluster: ClusterSpec, parts: Sequence[dict[str, Any]], argv: Sequence[str], under: Interference | None = None
) -> Profile:
    """One profile device named after the cluster; stage ``k`` measured on stage ``k``'s node (``under``: the
    co-located load it was measured under, in the device's ``meta["under"]``)."""
    info = parts[0]["info"]
    n_stages = len(info["partition"])
    if len(parts) != n_stages:
        raise HilError(f"{cluster.source}: {len(parts)} stages placed, the checkpoint has {n_stages}")
    model = {
        "id": info["model_id"],
        "weights": f"checkpoint:{cluster.checkpoint_path.name}",
        "input_shape": [3, *info["image_size"]],
        "blocks": info["partition"][-1][1],
    }
    switch = max(float(p["switch_s"]) for p in parts)
    device = DeviceProfile(
        name=cluster.name,
        latency_s=tuple(tuple(tuple(sorted(s)) for s in p["latency_s"]) for p in parts),
        switch_s=switch,
        meta={
            "nodes": [p["node"] for p in parts],
            "per_node": {p["node"]: p["meta"] for p in parts},
            "cpu_quota": {h.name: h.cpu_quota for h in cluster.stage_hosts()},
            "note": "stage k measured on the node that runs stage k, all nodes in parallel",
            **({"under": under.meta()} if under is not None else {}),
        },
    )
    profile = Profile(
        model=model,
        n_stages=n_stages,
        blocks=tuple((int(a), int(b)) for a, b in info["partition"]),
        ratios=tuple(float(r) for r in info["ratios"]),
        level_detail=tuple(info["detail"]),
        activation_bytes=tuple(int(p["activation_bytes"]) for p in parts),
        devices={cluster.name: device},
        accuracy=None,
        provenance={
            "tool": "edgeprune-hil profile (hil.profiling)",
            "command": " ".join(["edgeprune-hil", *argv]),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "coordinator": platform.node(),
            "cluster": str(cluster.source),
        },
        input_bytes=int(parts[0]["input_bytes"]),
    )
    profile_from_dict(json.loads(json.dumps(profile.to_dict())), source="<hil profile>")
    return profile


def write(profile: Profile, out: Path) -> None:
    """Write the profile atomically."""
    profile.save(out)


def profiled_interference(under: Profile) -> tuple[str, Interference]:
    """The device of a profile measured ``--under`` a load, and that load (a one-line error otherwise)."""
    if len(under.devices) != 1:
        raise ProfileError(f"{under.source}: {len(under.devices)} devices; a profile --under has one")
    name, dev = next(iter(under.devices.items()))
    meta = dev.meta.get("under")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("stress_cpus"), int) or not meta.get("nodes"):
        raise ProfileError(f"{under.source}: devices.{name}.meta.under: missing (not measured by profile --under)")
    return name, Interference(int(meta["stress_cpus"]), tuple(str(n) for n in meta["nodes"]))


def interference_factors(clean: Profile, under: Profile) -> dict[str, list[float]]:
    """Per node of the profile (stage ``k`` on the ``k``-th node), per level: mean service time under the load
    over the clean mean.  Every node is listed, loaded or not (an unloaded node's factors show the noise)."""
    name, _ = profiled_interference(under)
    loaded, base = under.devices[name], clean.device(name)
    if (under.n_stages, under.n_levels) != (clean.n_stages, clean.n_levels):
        raise ProfileError(
            f"{under.source}: {under.n_stages} stages x {under.n_levels} levels, the clean profile {clean.source} "
            f"has {clean.n_stages} x {clean.n_levels}"
        )
    nodes = [str(n) for n in loaded.meta.get("nodes", [f"stage{k}" for k in range(under.n_stages)])]
    return {
        node: [loaded.mean_s(k, lv) / base.mean_s(k, lv) for lv in range(under.n_levels)]
        for k, node in enumerate(nodes)
    }


def with_interference(sc: Scenario, cluster: ClusterSpec, under: Profile) -> dict[str, dict[str, list[float]]]:
    """What the *as profiled* prediction replaces: per scenario device whose every slowdown is realised as
    the load ``under`` was measured with (its hosts ``slowdown = "stress"``, loaded in ``under``, and each of
    its stated factors other than 1 starting that many hogs: :func:`hil.environment.stress_cpus`), per stage on
    it, the per-level factors against ``sc``'s profile (:func:`interference_factors`).  Devices that do not
    qualify are left out (they keep their stated factors)."""
    _, load = profiled_interference(under)
    factors = interference_factors(sc.profile, under)
    hosts = {h.name: h for h in cluster.hosts}
    out: dict[str, dict[str, list[float]]] = {}
    for device in sorted({ev.device for ev in sc.environment}):
        stated = {f for ev in sc.environment if ev.device == device for _, f in ev.change_points() if f != 1.0}
        on = hosts_of_device(sc, cluster, device)
        if not stated or any(hosts[h].slowdown_method != "stress" or h not in load.nodes for h in on):
            continue
        if any(stress_cpus(f) != load.stress_cpus for f in stated):
            continue
        stages = {cluster.stages[k].host: st.name for k, st in enumerate(sc.stages) if cluster.stages[k].host in on}
        out[device] = {stages[h]: factors[h] for h in sorted(stages) if h in factors}
    return {d: v for d, v in out.items() if v}


def replace_meta(profile: Profile, name: str, **meta: Any) -> Profile:
    """``profile`` with ``meta`` added to device ``name``'s meta (e.g. the interference factors found)."""
    dev = profile.devices[name]
    return replace(profile, devices={**profile.devices, name: replace(dev, meta={**dev.meta, **meta})})
