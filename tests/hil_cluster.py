"""A local "Pi" cluster for hardware-in-the-loop tests: real OpenSSH servers on 127.0.0.1.

Each node is one ``sshd`` (its own port, ed25519 host key, config and pid file) started inside a private mount
namespace in which a non-root user ``pi`` exists (bind-mounted copies of ``/etc/passwd`` and ``/etc/group``)
with its own home and work directory.  Why non-root: root logins refuse SSH signal requests, and a
non-root uid lets the teardown find every process a test left behind (``pgrep -u UID``).  The client gets a
fresh ed25519 key and a *strict* known_hosts file listing every node's host key.

Optionally every node's sshd runs in its own cgroup v1 ``cpu`` group: every process started over SSH on that
node inherits it.  The quota file is writable by ``pi``, so the coordinator applies the cluster file's
``cpu_quota`` (e.g. 0.4 CPU: quotas summing below the core count give every "Pi" a guaranteed, repeatable
share of this machine) and slows a node down as a scenario's environment event.  The CFS period is short (10 ms,
``CFS_PERIOD_US``) so a capped node's share is near-fluid for services of many periods (``RUN_VIT``: ~90 ms at
0.4 CPU); with the default 100 ms, or with services of a few ms, a request after an idle gap runs on a full
quota budget, much faster than one in a busy stretch, so no single profiled service time holds.  The kernel's
minimum quota is 1 ms per period, so 10 ms allows ``cgroup`` slowdowns down to 0.1 CPU (0.4 CPU / 4).

The nodes' interpreter is this one, behind a wrapper that puts this repository first on ``PYTHONPATH``, so the
workers run the code under test (not whatever copy of the package is installed).

The cluster lives in a directory under ``/tmp`` with mode 0755 (not pytest's ``tmp_path``: its parent is
0700 and sshd reads ``authorized_keys`` as the login user).  The interpreter of this process is made
visible to ``pi`` by a bind mount inside each node's namespace (``/root`` is 0700 here).

:func:`start_local_cluster` returns a :class:`LocalCluster`; :meth:`LocalCluster.stop` ends every sshd,
removes the cgroups and the directory, and returns the command lines of processes that were still running as
``pi`` (leftover workers) — the pytest fixture fails the test when that list is not empty.

Needs root, ``/usr/sbin/sshd``, ``ssh-keygen`` and ``unshare``; :func:`skip_reason` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD = "/usr/sbin/sshd"
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # a folder of the same name counts the node's CPU time (emulator)
CFS_PERIOD_US = 10_000  # short CFS period: a capped node is throttled in 10 ms slices (quota >= 1 ms: >= 0.1 CPU)


def skip_reason() -> str | None:
    """Why the local cluster cannot run here (``None`` when it can)."""
    if os.geteuid() != 0:
        return "the local SSH cluster needs root (private mount namespaces, a non-root login user)"
    for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("unshare")):
        if tool is None or not Path(tool).exists():
            return "OpenSSH server not installed (apt-get install --no-install-recommends openssh-server)"
    return None


def cgroup_skip_reason() -> str | None:
    """Why per-node CPU quotas are unavailable (``None`` when cgroup v1 cpu quotas work)."""
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        return "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu (CPU quotas unavailable)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class LocalNode:
    """One "Pi": an sshd on 127.0.0.1:port with its own home and work directory."""

    name: str
    port: int
    dir: Path
    home: Path
    workdir: Path
    cgroup: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key_pub(self) -> str:
        """The node's public host key line (``ssh-ed25519 AAAA...``)."""
        return " ".join((self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])


@dataclass
class LocalCluster:
    """A running local cluster (see the module docstring)."""

    root: Path
    uid: int
    nodes: list[LocalNode]
    client_key: Path
    known_hosts: Path
    python: str  # the interpreter as seen by ``pi`` on every node (a wrapper: this repository on PYTHONPATH)

    def cluster_toml(
        self,
        checkpoint: Path,
        *,
        python: dict[str, str] | None = None,
        known_hosts: Path | None = None,
        ports: dict[str, int] | None = None,
        extra: str = "",
        coordinator: str = "",
        cpu_quota: float = 0.0,
        slowdown: str = "auto",
        host_extra: str = "",
    ) -> str:
        """A cluster file for this cluster: stage k on node k, the tiny model's checkpoint."""
        lines = [
            'name = "local"',
            "[coordinator]",
            'listen_address = "127.0.0.1"',
            "connect_timeout_s = 5.0",
            coordinator,
            "[model]",
            f'checkpoint = "{checkpoint}"',
            "threads = 1",
            extra,
        ]
        for n in self.nodes:
            py = (python or {}).get(n.name, self.python)
            port = (ports or {}).get(n.name, n.port)
            lines += [
                "[[host]]",
                f'name = "{n.name}"',
                'address = "127.0.0.1"',
                f"port = {port}",
                'user = "pi"',
                f'identity_file = "{self.client_key}"',
                f'known_hosts = "{known_hosts or self.known_hosts}"',
                f'python = "{py}"',
                f'workdir = "{n.workdir}"',
                f'slowdown = "{slowdown}"',
                host_extra,
            ]
            if n.cgroup is not None:
                lines.append(f'cpu_cgroup = "{n.cgroup}"')
                lines.append(f"cpu_quota = {cpu_quota}")
        for k, n in enumerate(self.nodes):
            lines += ["[[stage]]", f'name = "s{k}"', f'host = "{n.name}"']
        return "\n".join(lines) + "\n"

    def pi_processes(self) -> list[str]:
        """Command lines of every process running as the cluster's ``pi`` user."""
        out = subprocess.run(["pgrep", "-a", "-u", str(self.uid)], capture_output=True, text=True, check=False)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def leftovers(self, grace_s: float = 3.0) -> list[str]:
        """Processes of ``pi`` other than sshd sessions still running after ``grace_s`` (none expected)."""
        deadline = time.monotonic() + grace_s
        while True:
            left = [p for p in self.pi_processes() if "sshd" not in p]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def set_quota(self, node: str, cpus: float | None) -> None:
        """Set (or with ``None`` lift) a node's CPU quota directly (test set-up, not the coordinator's path)."""
        n = next(x for x in self.nodes if x.name == node)
        assert n.cgroup is not None
        period_us = int((n.cgroup / "cpu.cfs_period_us").read_text())
        value = -1 if cpus is None else round(cpus * period_us)
        (n.cgroup / "cpu.cfs_quota_us").write_text(f"{value}\n")

    def stop(self) -> list[str]:
        """End every sshd and remove the cluster; returns leftover ``pi`` processes (killed) as a list."""
        left = self.leftovers()
        for pid_line in self.pi_processes():
            _kill(int(pid_line.split()[0]))
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
                try:
                    n.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
        for n in self.nodes:
            if n.cgroup is not None:
                _remove_cgroup(n.cgroup)
                _remove_cgroup(CGROUP_CPUACCT / n.cgroup.name)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-hil-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _sshd_config(node: LocalNode, auth_keys: Path) -> str:
    return "\n".join(
        [
            f"Port {node.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {node.dir / 'ssh_host_ed25519_key'}",
            f"PidFile {node.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {auth_keys}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "ClientAliveInterval 1",
            "ClientAliveCountMax 3",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _user_files(root: Path, node: LocalNode, uid: int) -> tuple[Path, Path]:
    passwd = node.dir / "passwd"
    group = node.dir / "group"
    passwd.write_text(Path("/etc/passwd").read_text() + f"pi:x:{uid}:{uid}:EdgePrune test Pi:{node.home}:/bin/sh\n")
    group.write_text(Path("/etc/group").read_text() + f"pi:x:{uid}:\n")
    return passwd, group


def _make_cgroup(name: str, uid: int, period_us: int) -> Path:
    cg = CGROUP_CPU / name
    cg.mkdir()
    if CGROUP_CPUACCT.is_dir():
        (CGROUP_CPUACCT / name).mkdir()
    (cg / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    os.chown(cg / "cpu.cfs_quota_us", uid, uid)  # the coordinator, logged in as pi, changes the quota
    return cg


def _expose_python(root: Path) -> str:
    """Mount commands making this interpreter reachable for ``pi`` at its own path.

    ``/root`` is mode 0700 here; inside the node's namespace the interpreter's top folder under ``/root`` is
    stashed, ``/root`` is replaced by an empty 0755 tmpfs and the folder is bind-mounted back in place.
    """
    prefix = Path(sys.base_prefix)
    if prefix.parts[:2] != ("/", "root") or len(prefix.parts) < 3:
        return ""
    top = Path("/root") / prefix.parts[2]
    stash = root / "python"
    return (
        f"mount --bind {top} {stash} && mount -t tmpfs -o mode=0755 tmpfs /root && "
        f"mkdir {top} && mount --bind {stash} {top} && "
    )


def _repo_python(root: Path) -> str:
    """A wrapper around this interpreter with this repository first on ``PYTHONPATH`` (see the module docstring)."""
    repo = Path(__file__).resolve().parents[1]
    (root / "bin").mkdir(mode=0o755)
    wrapper = root / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _launch(node: LocalNode, root: Path, passwd: Path, group: Path) -> None:
    mounts = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
        f"{_expose_python(root)}"
        f"exec {SSHD} -D -e -f {node.dir / 'sshd_config'}"
    )
    enter_cg = f"echo $$ > {node.cgroup / 'cgroup.procs'} && " if node.cgroup is not None else ""
    if node.cgroup is not None and (CGROUP_CPUACCT / node.cgroup.name).is_dir():
        enter_cg += f"echo $$ > {CGROUP_CPUACCT / node.cgroup.name / 'cgroup.procs'} && "
    script = f"{enter_cg}exec unshare --mount --propagation private sh -c '{mounts}'"
    node.proc = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_listening(node: LocalNode, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            err = node.proc.stderr.read().decode() if node.proc.stderr else ""
            raise RuntimeError(f"sshd of {node.name} exited: {err.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=0.2) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"sshd of {node.name} not listening on port {node.port} after {timeout_s} s")


def start_local_cluster(
    n_nodes: int, *, cgroups: bool = False, cfs_period_us: int = CFS_PERIOD_US, prefix: str = "edgeprune-hil-"
) -> LocalCluster:
    """Start ``n_nodes`` sshd "Pis" (see the module docstring); ``cgroups``: each in its own cpu cgroup (no quota
    yet: the coordinator applies the cluster file's ``cpu_quota`` around runs and profiles)."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    uid = 40000 + (os.getpid() % 20000)
    (root / "python").mkdir()
    python = _repo_python(root)
    client_key = root / "client_ed25519"
    _keygen(client_key)
    auth_keys = root / "authorized_keys"
    shutil.copy(f"{client_key}.pub", auth_keys)
    auth_keys.chmod(0o644)
    nodes: list[LocalNode] = []
    for i, port in enumerate(_free_ports(n_nodes)):
        name = f"pi{i + 1}"
        d = root / name
        node = LocalNode(name=name, port=port, dir=d, home=d / "home", workdir=d / "home" / "edgeprune")
        d.mkdir()
        node.workdir.mkdir(parents=True)
        for p in (node.home, node.workdir):
            os.chown(p, uid, uid)
        _keygen(d / "ssh_host_ed25519_key")
        (d / "sshd_config").write_text(_sshd_config(node, auth_keys))
        nodes.append(node)
    cluster = LocalCluster(root, uid, nodes, client_key, root / "known_hosts", python)
    cluster.known_hosts.write_text("".join(f"[127.0.0.1]:{n.port} {n.host_key_pub}\n" for n in nodes))
    try:
        for node in nodes:
            if cgroups:
                node.cgroup = _make_cgroup(f"{root.name}-{node.name}", uid, cfs_period_us)
            passwd, group = _user_files(root, node, uid)
            _launch(node, root, passwd, group)
        for node in nodes:
            _wait_listening(node)
    except BaseException:
        cluster.stop()
        raise
    return cluster


TINY_VIT: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "head_width": 32, "mlp_ratio": 4.0, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}
TINY_RATIOS = (0.0, 0.25, 0.5, 0.75)
# For runs compared with the simulator: two blocks per stage and 196 tokens, ~35 ms of CPU per stage on this
# machine, i.e. many CFS periods, so a node capped at 0.4 CPU serves at a steady CPU time / 0.4 whether it was
# idle or busy before (with the tiny model's ~3 ms services a request after an idle gap ran on a full quota
# budget, ~2.5x faster than the back-to-back profile measured), and a ``cgroup`` slowdown to 0.4 / f CPU slows
# it by f, the factor the scenario states (stress-ng hogs sharing the quota gave ~4.4-6x for a stated 4x).
RUN_VIT: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 112, "layers": 8, "width": 384, "head_width": 32, "mlp_ratio": 4.0, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}


def make_tiny_checkpoint(folder: Path, vit: dict[str, Any] | None = None) -> Path:
    """A 4-stage nested ViT (``TINY_VIT`` by default: one block per stage), 4 levels, random weights, saved
    with save_nested."""
    import json

    from models import build_nested, load_model, register_model_config, save_nested

    folder.mkdir(parents=True, exist_ok=True)
    vit = vit or TINY_VIT
    cfg = folder / ("edgeprune_tiny_vit.json" if vit is TINY_VIT else "edgeprune_run_vit.json")
    cfg.write_text(json.dumps(vit))
    name = register_model_config(cfg)
    m = load_model(name, random_init=True)
    info = {"model_id": name, "weights": "random-init", "model_cfg": m.model_cfg}
    per = int(vit["vision_cfg"]["layers"]) // 4
    cuts = [(k * per, (k + 1) * per) for k in range(4)]
    pipe = build_nested(m.visual, cuts, TINY_RATIOS, order="keep", info=info)
    out = folder / "tiny.pt"
    save_nested(pipe, out)
    out.chmod(0o644)
    return out


def no_torch_python(cluster: LocalCluster) -> str:
    """A Python for ``pi`` on which ``import torch`` fails (a meta-path blocker via ``sitecustomize``)."""
    d = cluster.root / "notorch"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
    )
    wrapper = d / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={d} exec {cluster.python} "$@"\n')
    wrapper.chmod(0o755)
    d.chmod(0o755)
    return str(wrapper)


def cluster_fixtures(n_nodes: int, *, cgroups: bool = False) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A test module's two fixtures: ``cluster`` (``n_nodes`` "Pis" shared by the module, see
    :func:`start_local_cluster`; stopping it must find no process left) and the autouse ``no_leftovers`` (fails
    a test when any process of the nodes' user outlives it).  Use: ``cluster, no_leftovers = cluster_fixtures(2)``."""

    @pytest.fixture(scope="module", name="cluster")
    def cluster() -> Iterator[LocalCluster]:
        c = start_local_cluster(n_nodes, cgroups=cgroups)
        yield c
        left = c.stop()
        assert not left, f"processes left on the nodes: {left}"

    @pytest.fixture(autouse=True, name="no_leftovers")
    def no_leftovers(cluster: LocalCluster) -> Iterator[None]:
        yield
        left = cluster.leftovers()
        if left:
            pytest.fail(f"processes left on the nodes: {left}")

    return cluster, no_leftovers
