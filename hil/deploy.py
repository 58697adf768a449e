"""Deployment: what each node has (Python, edgeprune, torch, clock, artefacts) and what it still needs.

:func:`probe_all` runs one small standalone Python snippet on every node (it must work where edgeprune is
missing, so it is not part of the package) and returns a :class:`NodeFacts` per node.  :func:`problems`
compares them with the coordinator: edgeprune must be importable at the coordinator's version (a mismatch is
fixed by uploading and installing the configured wheel), torch must be importable (and at the coordinator's
version when the coordinator has torch and ``require_same_torch`` is set).  :func:`ensure_deployed` uploads
what is missing (wheel, checkpoint) over SFTP and raises one :class:`HilError` saying exactly what is
missing where when something cannot be fixed from here.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from edgeprune.errors import HilError
from hil.cluster import ClusterSpec
from hil.connect import Node, where

__all__ = ["NodeFacts", "coordinator_versions", "ensure_deployed", "probe_all", "problems", "remote_checkpoint"]

_PROBE = r"""
import hashlib, importlib.metadata as md, importlib.util as iu, json, os, platform, sys, time
out = {"python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count()}
def version(name):
    try:
        spec = iu.find_spec(name)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if spec is None:
        return None, f"No module named {name!r}"
    try:
        return md.version(name), None
    except md.PackageNotFoundError:
        return None, f"module {name!r} found but no installed distribution"
out["edgeprune"], out["edgeprune_error"] = version("edgeprune")
if out["edgeprune"] is not None and iu.find_spec("hil") is None:
    out["edgeprune"], out["edgeprune_error"] = None, "edgeprune installed without its hil package"
out["torch"], out["torch_error"] = version("torch")
path = sys.argv[1]
if os.path.isfile(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    out["checkpoint_sha256"] = h.hexdigest()
out["time"] = time.time()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class NodeFacts:
    """What the probe found on one node."""

    node: str
    python: str
    edgeprune: str | None
    edgeprune_error: str | None
    torch: str | None
    torch_error: str | None
    checkpoint_sha256: str | None
    clock_offset_s: float
    rtt_s: float
    raw: dict[str, Any]


def coordinator_versions() -> tuple[str, str | None]:
    """(edgeprune version, torch version or ``None``) of the coordinator, without importing torch."""
    try:
        torch_v: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_v = None
    return importlib.metadata.version("edgeprune"), torch_v


def remote_checkpoint(cluster: ClusterSpec, node: Node) -> str:
    """Where the checkpoint lives on ``node``."""
    return f"{node.spec.workdir.rstrip('/')}/artefacts/{cluster.checkpoint_path.name}"


async def probe(cluster: ClusterSpec, node: Node) -> NodeFacts:
    """Run the probe snippet on one node."""
    cmd = f"{shlex.quote(node.spec.python)} -c {shlex.quote(_PROBE)} {shlex.quote(remote_checkpoint(cluster, node))}"
    t0 = time.time()
    try:
        result = await asyncio.wait_for(node.conn.run(cmd, check=False), 60)
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise HilError(f"{where(node.spec)}: probe failed: {type(exc).__name__}: {exc}") from None
    t1 = time.time()
    if result.exit_status != 0:
        err = str(result.stderr or "").strip().splitlines()
        why = err[-1] if err else f"exit status {result.exit_status}"
        if result.exit_status == 127:
            why = f"Python interpreter {node.spec.python} not found"
        raise HilError(f"{where(node.spec)}: cannot run {node.spec.python}: {why}")
    raw = json.loads(str(result.stdout).strip().splitlines()[-1])
    return NodeFacts(
        node=node.name,
        python=raw["python"],
        edgeprune=raw["edgeprune"],
        edgeprune_error=raw["edgeprune_error"],
        torch=raw["torch"],
        torch_error=raw["torch_error"],
        checkpoint_sha256=raw.get("checkpoint_sha256"),
        clock_offset_s=raw["time"] - (t0 + t1) / 2,
        rtt_s=t1 - t0,
        raw=raw,
    )


async def probe_all(cluster: ClusterSpec, nodes: Sequence[Node]) -> list[NodeFacts]:
    """Probe every node in parallel."""
    return list(await asyncio.gather(*(probe(cluster, n) for n in nodes)))


def problems(cluster: ClusterSpec, facts: NodeFacts) -> tuple[list[str], bool]:
    """What is wrong on one node (phrases), and whether installing the wheel would fix it."""
    ours, our_torch = coordinator_versions()
    out: list[str] = []
    fixable = False
    if facts.edgeprune is None:
        out.append(f"edgeprune not importable ({facts.edgeprune_error})")
        fixable = True
    elif facts.edgeprune != ours:
        out.append(f"edgeprune {facts.edgeprune} != coordinator's {ours}")
        fixable = True
    if facts.torch is None:
        out.append(f"torch not importable ({facts.torch_error}); install torch{'==' + our_torch if our_torch else ''}")
    elif cluster.deploy.require_same_torch and our_torch is not None and facts.torch != our_torch:
        out.append(f"torch {facts.torch} != coordinator's {our_torch}")
    return out, fixable


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


async def _upload(node: Node, local: Path, remote: str) -> None:
    try:
        await node.conn.run(f"mkdir -p {shlex.quote(str(Path(remote).parent))}", check=True)
        async with node.conn.start_sftp_client() as sftp:
            await sftp.put(str(local), remote + ".part")
            await sftp.posix_rename(remote + ".part", remote)
    except (asyncssh.Error, OSError) as exc:
        raise HilError(f"{where(node.spec)}: upload of {local.name} to {remote} failed: {exc}") from None


async def _install_wheel(cluster: ClusterSpec, node: Node) -> None:
    wheel = Path(cluster.deploy.wheel)
    remote = f"{node.spec.workdir.rstrip('/')}/dist/{wheel.name}"
    await _upload(node, wheel, remote)
    cmd = f"{shlex.quote(node.spec.python)} -m pip install --quiet --no-deps --force-reinstall {shlex.quote(remote)}"
    result = await node.conn.run(cmd, check=False)
    if result.exit_status != 0:
        tail = str(result.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise HilError(f"{where(node.spec)}: installing {wheel.name} failed: {tail[0]}")


async def ensure_deployed(cluster: ClusterSpec, nodes: Sequence[Node], *, upload: bool = True) -> list[NodeFacts]:
    """Check every node; install the wheel and upload the checkpoint where needed (``upload``).

    Raises one :class:`HilError` listing, per node, what is missing and cannot be fixed from here.
    """
    facts = await probe_all(cluster, nodes)
    wheel = Path(cluster.deploy.wheel) if cluster.deploy.wheel else None
    missing: list[str] = []
    for node, f in zip(nodes, facts, strict=True):
        issues, fixable = problems(cluster, f)
        if fixable and upload and wheel is not None and wheel.is_file():
            await _install_wheel(cluster, node)
            issues = [i for i in issues if not i.startswith("edgeprune")]
        elif fixable:
            hint = f"wheel {wheel} not found" if wheel is not None else "no [deploy] wheel configured"
            issues = [f"{i} ({hint})" if i.startswith("edgeprune") else i for i in issues]
        if issues:
            missing.append(f"{where(node.spec)}: {'; '.join(issues)}")
    if missing:
        raise HilError("deploy: " + " | ".join(missing))
    if upload:
        await _upload_checkpoint(cluster, nodes, facts)
    return facts


async def _upload_checkpoint(cluster: ClusterSpec, nodes: Sequence[Node], facts: Sequence[NodeFacts]) -> None:
    local = cluster.checkpoint_path
    if not local.is_file():
        raise HilError(f"{cluster.source}: model.checkpoint = {str(local)!r}: file not found on the coordinator")
    digest = _sha256(local)
    todo = [n for n, f in zip(nodes, facts, strict=True) if f.checkpoint_sha256 != digest]
    await asyncio.gather(*(_upload(n, local, remote_checkpoint(cluster, n)) for n in todo))
