"""``edgeprune-hil profile``: the offline benchmark, run on the nodes themselves → an EdgePrune profile.

Every node times *its own* stage at every level (``python -m hil.worker profile``: levels interleaved,
warm-up first, along the exact decode → compute → encode path a worker serves requests on), all nodes in
parallel, each under its configured ``cpu_quota`` (applied once every node has loaded its stage).  The
samples become one profile device named after the cluster (stage ``k``'s latencies measured on the node
that runs stage ``k``), so a scenario whose devices map to that profile device simulates exactly this
placement on this hardware — the condition for comparing the simulator's prediction with a run.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.errors import HilError
from edgeprune.profile import DeviceProfile, Profile, profile_from_dict
from hil.cluster import ClusterSpec
from hil.connect import Node, where
from hil.deploy import remote_checkpoint
from hil.environment import Environment
from hil.remote import RemoteProc, kill_groups, start_remote
from hil.session import new_tag

__all__ = ["assemble_profile", "measure_nodes"]


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


async def measure_nodes(cluster: ClusterSpec, nodes: Sequence[Node], samples: int, warmup: int) -> list[dict[str, Any]]:
    """Every node's stage measurements, in stage order (nodes ordered as the cluster's stages)."""
    tag = new_tag("profile")
    env = Environment(nodes, cluster.coordinator, tag)
    try:
        procs = await asyncio.gather(*(_start(cluster, n, k, tag, samples, warmup) for k, n in enumerate(nodes)))
        await env.setup()
        return list(await asyncio.gather(*(_finish(rp, k) for k, rp in enumerate(procs))))
    finally:
        await asyncio.shield(
            asyncio.gather(
                env.revert(),
                *(kill_groups(n, [f"{tag}-s{k}"], cluster.coordinator, grace_s=0.1) for k, n in enumerate(nodes)),
            )
        )


def assemble_profile(cluster: ClusterSpec, parts: Sequence[dict[str, Any]], argv: Sequence[str]) -> Profile:
    """One profile device named after the cluster; stage ``k`` measured on stage ``k``'s node."""
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
