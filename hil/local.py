"""A local "Pi" cluster on one Linux machine: real OpenSSH servers on 127.0.0.1 (``edgeprune-hil local``, tests).

Each node is one ``sshd`` (its own port, ed25519 host key, config and pid file) started inside a private mount
namespace in which a non-root user ``pi`` exists (bind-mounted copies of ``/etc/passwd`` and ``/etc/group``)
with its own home and work directory.  Why non-root: root logins refuse SSH signal requests, and a
non-root uid lets the teardown find every process left behind (``pgrep -u UID``).  The client gets a
fresh ed25519 key and a *strict* known_hosts file listing every node's host key.

Optionally every node's sshd runs in its own cgroup v1 ``cpu`` group (and ``cpuacct`` group where that
hierarchy is mounted apart: the workers read the node's CPU time there, :mod:`hil.readings`): every
process started over SSH on that node inherits them.  The quota file is writable by ``pi``, so the
coordinator applies the cluster file's ``cpu_quota`` (e.g. 0.4 CPU: quotas summing below the core count
give every "Pi" a guaranteed, repeatable share of this machine) and slows a node down as a scenario's
environment event.  The CFS period is short (10 ms, ``CFS_PERIOD_US``) so a capped node's share is
near-fluid for services of many periods (``RUN_VIT``: ~90 ms at 0.4 CPU); with the default 100 ms, or with
services of a few ms, a request after an idle gap runs on a full quota budget, much faster than one in a
busy stretch, so no single profiled service time holds.  The kernel's minimum quota is 1 ms per period, so
10 ms allows ``cgroup`` slowdowns down to 0.1 CPU (0.4 CPU / 4).

The nodes' interpreter is this one, behind a wrapper that puts this package's source tree first on
``PYTHONPATH``, so the workers run the coordinator's code.  Folders under ``/root`` (mode 0700) that the
nodes need (the interpreter's, the source tree's) are bind-mounted back into each node's namespace after
an empty 0755 tmpfs replaces ``/root`` there.

The sshd processes are daemons (own session, output to a log file): they outlive the command that started
them.  Everything needed to end them is written to ``STATE_FILE`` in the cluster's folder, so
:func:`load_local_cluster` + :meth:`LocalCluster.stop` (``edgeprune-hil local down DIR``) end every sshd
and every ``pi`` process, remove the cgroups and the runtime files, from any process.

Needs root, ``/usr/sbin/sshd``, ``ssh-keygen`` and ``unshare``; :func:`missing` says what is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeprune.atomic import atomic_write_text
from edgeprune.errors import HilError

__all__ = [
    "CFS_PERIOD_US",
    "RUN_VIT",
    "STATE_FILE",
    "TINY_VIT",
    "LocalCluster",
    "LocalNode",
    "cgroup_missing",
    "load_local_cluster",
    "local_scenario",
    "make_tiny_checkpoint",
    "missing",
    "start_local_cluster",
]

SSHD = "/usr/sbin/sshd"
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # a separate cpuacct hierarchy (where cpu,cpuacct are not joint)
CFS_PERIOD_US = 10_000  # short CFS period: a capped node is throttled in 10 ms slices (quota >= 1 ms: >= 0.1 CPU)
STATE_FILE = "local-cluster.json"  # what `local down` needs: pids, uid, cgroups, runtime paths
SOURCE_TREE = Path(__file__).resolve().parents[1]  # holds edgeprune/, hil/, models/ ...: first on the nodes' path


def missing() -> str | None:
    """Why the local cluster cannot run here (``None`` when it can)."""
    if os.geteuid() != 0:
        return "the local SSH cluster needs root (private mount namespaces, a non-root login user)"
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        return "OpenSSH server not installed (apt-get install --no-install-recommends openssh-server)"
    if shutil.which("unshare") is None:
        return "unshare not found (util-linux): needed for each node's private mount namespace"
    return None


def cgroup_missing() -> str | None:
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
    cgroup: Path | None = None  # cgroup v1 cpu folder (quota)
    acct_cgroup: Path | None = None  # cgroup v1 cpuacct folder, where that hierarchy is separate
    pid: int = 0  # the sshd's pid
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key_pub(self) -> str:
        """The node's public host key line (``ssh-ed25519 AAAA...``)."""
        return " ".join((self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    @property
    def config(self) -> Path:
        """The node's sshd_config (its path is on the sshd's command line: how a pid is recognised)."""
        return self.dir / "sshd_config"


@dataclass
class LocalCluster:
    """A running local cluster (see the module docstring)."""

    root: Path
    uid: int
    nodes: list[LocalNode]
    client_key: Path
    known_hosts: Path
    python: str  # the interpreter as seen by ``pi`` on every node (a wrapper: the source tree on PYTHONPATH)
    owns_root: bool = True  # stop() removes the whole folder (else only the runtime files it made)

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
        host_extra: str | Mapping[str, str] = "",
    ) -> str:
        """A cluster file for this cluster: stage k on node k, the given checkpoint; ``host_extra`` is added
        to every host (a string) or per host name (a mapping)."""
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
                host_extra.get(n.name, "") if isinstance(host_extra, Mapping) else host_extra,
            ]
            if n.cgroup is not None:
                lines.append(f'cpu_cgroup = "{n.cgroup}"')
                lines.append(f"cpu_quota = {cpu_quota}")
        for k, n in enumerate(self.nodes):
            lines += ["[[stage]]", f'name = "s{k}"', f'host = "{n.name}"']
        return "\n".join(lines) + "\n"

    def pi_processes(self) -> list[str]:
        """Command lines of every live (not zombie) process running as the cluster's ``pi`` user."""
        out = subprocess.run(["pgrep", "-a", "-u", str(self.uid)], capture_output=True, text=True, check=False)
        return [line for line in out.stdout.splitlines() if line.strip() and _alive(int(line.split()[0]))]

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

    def sshd_pids(self) -> list[int]:
        """The pids of the nodes' sshd daemons still running."""
        return [n.pid for n in self.nodes if n.pid and _is_sshd(n.pid, n.config)]

    def save(self) -> None:
        """Write ``STATE_FILE`` (atomically): what :func:`load_local_cluster` needs to stop this cluster."""
        keys = [f.name for f in fields(LocalNode) if f.name != "proc"]
        nodes = [{k: _plain(getattr(n, k)) for k in keys} for n in self.nodes]
        doc = {
            "schema": "edgeprune.local-cluster",
            "version": 1,
            "root": str(self.root),
            "uid": self.uid,
            "client_key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "python": self.python,
            "nodes": nodes,
        }
        atomic_write_text(self.root / STATE_FILE, json.dumps(doc, indent=1) + "\n")

    def stop(self) -> list[str]:
        """End every ``pi`` process and every sshd, remove the cgroups and the runtime files (the whole folder
        when the cluster made it); returns the ``pi`` processes that were still running (killed)."""
        left = self.leftovers()
        for pid_line in self.pi_processes():
            _kill(int(pid_line.split()[0]), signal.SIGKILL)
        for n in self.nodes:
            _end_sshd(n)
        deadline = time.monotonic() + 5.0
        while self.pi_processes() and time.monotonic() < deadline:  # killed sessions' children, if any
            for pid_line in self.pi_processes():
                _kill(int(pid_line.split()[0]), signal.SIGKILL)
            time.sleep(0.05)
        for n in self.nodes:
            for cg in (n.cgroup, n.acct_cgroup):
                if cg is not None:
                    _remove_cgroup(cg)
        if self.sshd_pids() or self.pi_processes():
            return left  # something survived: the state file stays, so `local down` can be run again
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            self._remove_runtime()
        return left

    def _remove_runtime(self) -> None:
        """Remove what the cluster made in a folder it does not own (results and the model stay)."""
        for n in self.nodes:
            shutil.rmtree(n.dir, ignore_errors=True)
        for name in ("bin", "python", "nodes"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for path in (self.client_key, Path(f"{self.client_key}.pub"), self.known_hosts, self.root / "authorized_keys"):
            path.unlink(missing_ok=True)
        (self.root / STATE_FILE).unlink(missing_ok=True)


def _plain(value: object) -> object:
    """A state-file value: paths as text."""
    return str(value) if isinstance(value, Path) else value


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _is_sshd(pid: int, config: Path) -> bool:
    """``pid`` is alive and is the sshd of this config (never a recycled pid of another program).  A running
    sshd rewrites its command line into one title (``sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ...``),
    so the config's path is looked for as a word of it."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return False
    return _alive(pid) and str(config).encode() in words


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _end_sshd(node: LocalNode) -> None:
    """TERM, then KILL after 3 s, the node's sshd (reaped when this process started it)."""
    if node.pid and _is_sshd(node.pid, node.config):
        _kill(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while _is_sshd(node.pid, node.config) and time.monotonic() < deadline:
            if node.proc is not None:
                node.proc.poll()
            time.sleep(0.02)
        if _is_sshd(node.pid, node.config):
            _kill(node.pid, signal.SIGKILL)
    if node.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=3)


def _remove_cgroup(path: Path) -> None:
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-hil-local", "-f", str(path)],
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


def _user_files(node: LocalNode, uid: int) -> tuple[Path, Path]:
    passwd = node.dir / "passwd"
    group = node.dir / "group"
    passwd.write_text(Path("/etc/passwd").read_text() + f"pi:x:{uid}:{uid}:EdgePrune local Pi:{node.home}:/bin/sh\n")
    group.write_text(Path("/etc/group").read_text() + f"pi:x:{uid}:\n")
    return passwd, group


def _make_cgroups(node: LocalNode, name: str, uid: int, period_us: int) -> None:
    cg = CGROUP_CPU / name
    cg.mkdir()
    node.cgroup = cg
    (cg / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    os.chown(cg / "cpu.cfs_quota_us", uid, uid)  # the coordinator, logged in as pi, changes the quota
    if (CGROUP_CPUACCT / "cpuacct.usage").exists() and not (cg / "cpuacct.usage").exists():
        node.acct_cgroup = CGROUP_CPUACCT / name
        node.acct_cgroup.mkdir()


def _root_tops(paths: list[Path]) -> list[Path]:
    """The distinct top folders under ``/root`` (``/root/X``) that hold ``paths``."""
    tops: list[Path] = []
    for p in paths:
        if p.parts[:2] == ("/", "root") and len(p.parts) >= 3:
            top = Path("/root") / p.parts[2]
            if top not in tops:
                tops.append(top)
    return tops


def _expose_root(root: Path) -> str:
    """Mount commands making the interpreter and the source tree reachable for ``pi`` at their own paths.

    ``/root`` is mode 0700; inside the node's namespace each needed top folder under it is stashed, ``/root``
    is replaced by an empty 0755 tmpfs and the folders are bind-mounted back in place.
    """
    tops = _root_tops([Path(sys.base_prefix), Path(sys.executable).resolve(), SOURCE_TREE])
    if not tops:
        return ""
    stash = root / "python"
    cmds = []
    for i, top in enumerate(tops):
        (stash / str(i)).mkdir(parents=True, exist_ok=True)
        cmds.append(f"mount --bind {top} {stash / str(i)}")
    cmds.append("mount -t tmpfs -o mode=0755 tmpfs /root")
    for i, top in enumerate(tops):
        cmds.append(f"mkdir -p {top} && mount --bind {stash / str(i)} {top}")
    return " && ".join(cmds) + " && "


def _repo_python(root: Path) -> str:
    """A wrapper around this interpreter with the source tree first on ``PYTHONPATH`` (module docstring)."""
    (root / "bin").mkdir(mode=0o755)
    wrapper = root / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={SOURCE_TREE}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _launch(node: LocalNode, root: Path, passwd: Path, group: Path) -> None:
    """Start the node's sshd as a daemon (own session, output to ``sshd.log``) in its cgroups and namespace."""
    mounts = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
        f"{_expose_root(root)}"
        f"exec {SSHD} -D -e -f {node.config}"
    )
    enter = "".join(f"echo $$ > {cg / 'cgroup.procs'} && " for cg in (node.cgroup, node.acct_cgroup) if cg is not None)
    script = f"{enter}exec unshare --mount --propagation private sh -c '{mounts}'"
    with (node.dir / "sshd.log").open("wb") as log:
        node.proc = subprocess.Popen(
            ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    node.pid = node.proc.pid  # every step execs: this pid becomes the sshd


def _wait_listening(node: LocalNode, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            err = (node.dir / "sshd.log").read_text(errors="replace").strip()
            raise HilError(f"the sshd of local node {node.name} exited: {err[-300:]}")
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=0.2) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise HilError(f"the sshd of local node {node.name} not listening on port {node.port} after {timeout_s} s")


def _free_uid() -> int:
    """A uid no local account has (the nodes' ``pi`` exists only inside their namespaces)."""
    used = {int(line.split(":")[2]) for line in Path("/etc/passwd").read_text().splitlines() if line.count(":") >= 3}
    uid = 40000 + (os.getpid() % 20000)
    while uid in used:
        uid += 1
    return uid


def _check_reachable(folder: Path) -> None:
    """``pi`` must be able to traverse to ``folder`` (sshd reads ``authorized_keys`` as the login user)."""
    for p in [folder, *folder.parents]:
        if p.exists() and not p.stat().st_mode & stat.S_IXOTH:
            raise HilError(
                f"{folder}: {p} is not searchable by other users (mode {stat.S_IMODE(p.stat().st_mode):o}); "
                "the nodes' pi user must reach this folder: choose one under /tmp"
            )


def _prepare_root(out: Path | None, prefix: str) -> tuple[Path, bool]:
    if out is None:
        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        root.chmod(0o755)
        return root, True
    root = out.resolve()
    if (root / STATE_FILE).exists():
        raise HilError(f"{root}: a local cluster is already running here (`edgeprune-hil local down {out}` first)")
    _check_reachable(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    return root, False


def start_local_cluster(
    n_nodes: int,
    *,
    cgroups: bool = False,
    cfs_period_us: int = CFS_PERIOD_US,
    prefix: str = "edgeprune-hil-",
    out: Path | None = None,
) -> LocalCluster:
    """Start ``n_nodes`` sshd "Pis" (see the module docstring) in ``out`` (default: a new folder under
    ``/tmp``); ``cgroups``: each in its own cpu cgroup (no quota yet: the coordinator applies the cluster
    file's ``cpu_quota`` around runs and profiles).  The state is saved in ``STATE_FILE`` before any sshd
    starts; on failure everything started is stopped again."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root, owns = _prepare_root(out, prefix)
    uid = _free_uid()
    (root / "python").mkdir(exist_ok=True)
    python = _repo_python(root)
    client_key = root / "client_ed25519"
    _keygen(client_key)
    auth_keys = root / "authorized_keys"
    shutil.copy(f"{client_key}.pub", auth_keys)
    auth_keys.chmod(0o644)
    nodes: list[LocalNode] = []
    for i, port in enumerate(_free_ports(n_nodes)):
        name = f"pi{i + 1}"
        d = root / "nodes" / name
        node = LocalNode(name=name, port=port, dir=d, home=d / "home", workdir=d / "home" / "edgeprune")
        node.workdir.mkdir(parents=True)
        for p in (root / "nodes", d):
            p.chmod(0o755)
        for p in (node.home, node.workdir):
            os.chown(p, uid, uid)
        _keygen(d / "ssh_host_ed25519_key")
        node.config.write_text(_sshd_config(node, auth_keys))
        nodes.append(node)
    cluster = LocalCluster(root, uid, nodes, client_key, root / "known_hosts", python, owns_root=owns)
    cluster.known_hosts.write_text("".join(f"[127.0.0.1]:{n.port} {n.host_key_pub}\n" for n in nodes))
    try:
        for node in nodes:
            if cgroups:
                _make_cgroups(node, f"{root.name}-{node.name}-{uid}", uid, cfs_period_us)
            cluster.save()  # before the sshd starts: `down` finds the cgroup even if the start fails
            passwd, group = _user_files(node, uid)
            _launch(node, root, passwd, group)
            cluster.save()
        for node in nodes:
            _wait_listening(node)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def load_local_cluster(folder: Path) -> LocalCluster:
    """The cluster ``start_local_cluster(out=folder)`` saved (``HilError`` when there is none)."""
    path = folder / STATE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise HilError(f"{folder}: no local cluster here ({STATE_FILE} missing; started by `local up`?)") from None
    except (OSError, ValueError) as exc:
        raise HilError(f"{path}: unreadable local-cluster state: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "edgeprune.local-cluster":
        raise HilError(f"{path}: not a local-cluster state file")
    try:
        nodes = [_node(n) for n in doc["nodes"]]
        return LocalCluster(
            Path(doc["root"]),
            int(doc["uid"]),
            nodes,
            Path(doc["client_key"]),
            Path(doc["known_hosts"]),
            str(doc["python"]),
            owns_root=False,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HilError(f"{path}: malformed local-cluster state ({type(exc).__name__}: {exc})") from None


def _node(d: dict[str, Any]) -> LocalNode:
    def opt(key: str) -> Path | None:
        return Path(d[key]) if d.get(key) else None

    return LocalNode(
        name=str(d["name"]),
        port=int(d["port"]),
        dir=Path(d["dir"]),
        home=Path(d["home"]),
        workdir=Path(d["workdir"]),
        cgroup=opt("cgroup"),
        acct_cgroup=opt("acct_cgroup"),
        pid=int(d["pid"]),
    )


TINY_VIT: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "head_width": 32, "mlp_ratio": 4.0, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}
TINY_RATIOS = (0.0, 0.25, 0.5, 0.75)
# For runs compared with the simulator: two blocks per stage and 196 tokens, ~35 ms of CPU per stage on a
# 2-core x86 VM, i.e. many CFS periods, so a node capped at 0.4 CPU serves at a steady CPU time / 0.4 whether
# it was idle or busy before (with the tiny model's ~3 ms services a request after an idle gap ran on a full
# quota budget, ~2.5x faster than the back-to-back profile measured), and a ``cgroup`` slowdown to 0.4 / f CPU
# slows it by f, the factor the scenario states (stress-ng hogs sharing the quota gave ~4.4-6x for a stated 4x).
RUN_VIT: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 112, "layers": 8, "width": 384, "head_width": 32, "mlp_ratio": 4.0, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}


def make_tiny_checkpoint(folder: Path, vit: dict[str, Any] | None = None, n_stages: int = 4) -> Path:
    """A nested ViT (``TINY_VIT`` by default: one block per stage) cut into ``n_stages`` contiguous stages
    (blocks split as evenly as possible), 4 levels, random weights, saved with save_nested (no download)."""
    from models import build_nested, load_model, register_model_config, save_nested

    folder.mkdir(parents=True, exist_ok=True)
    vit = vit or TINY_VIT
    layers = int(vit["vision_cfg"]["layers"])
    if not 1 <= n_stages <= layers:
        raise HilError(f"--nodes {n_stages}: the model has {layers} blocks, so 1 to {layers} stages")
    cfg = folder / ("edgeprune_tiny_vit.json" if vit is TINY_VIT else "edgeprune_run_vit.json")
    cfg.write_text(json.dumps(vit))
    name = register_model_config(cfg)
    m = load_model(name, random_init=True)
    info = {"model_id": name, "weights": "random-init", "model_cfg": m.model_cfg}
    bounds = [round(k * layers / n_stages) for k in range(n_stages + 1)]
    cuts = list(itertools.pairwise(bounds))
    pipe = build_nested(m.visual, cuts, TINY_RATIOS, order="keep", info=info)
    out = folder / "tiny.pt"
    save_nested(pipe, out)
    out.chmod(0o644)
    return out


def local_scenario(n_nodes: int, duration_s: float) -> str:
    """A short scenario for the cluster ``edgeprune-hil local up`` starts: stage ``k`` on node ``pi{k+1}``,
    Poisson arrivals at ~27% of a 0.4-CPU node's capacity for ``RUN_VIT`` (~90 ms per 2-block stage), the
    second node slowed 2x halfway, no pruning against the bottleneck policy; the profile is the one
    ``edgeprune-hil profile`` measures on the same nodes (``profile.json`` beside it)."""
    rate_hz = round(3.0 * n_nodes / 4, 3)
    slowed = f"pi{min(2, n_nodes)}"
    lines = [
        f"# Written by `edgeprune-hil local up --nodes {n_nodes}`: a short run for that local cluster.",
        'name = "local-quick"',
        f'description = "Poisson {rate_hz:g} req/s through {n_nodes} local nodes; {slowed} slowed 2x halfway"',
        "seed = 7",
        f"duration_s = {float(duration_s)!r}",
        "warmup_s = 2.0",
        "slo_s = 1.0",
        "drain_s = 3.0",
        'profile = "profile.json"',
    ]
    for k in range(n_nodes):
        lines += ["[[device]]", f'name = "pi{k + 1}"', 'profile_device = "local"']
    for k in range(n_nodes):
        lines += ["[[stage]]", f'name = "s{k}"', f'device = "pi{k + 1}"']
    lines += ["[arrivals]", 'kind = "poisson"', f"rate_hz = {rate_hz!r}"]
    lines += ["[[environment]]", f'device = "{slowed}"', f"start_s = {duration_s / 2!r}", "slowdown = 2.0"]
    lines += ["[[policy]]", 'name = "no-pruning"', 'kind = "static"', f"levels = {[0] * n_nodes}", "period_s = 0.5"]
    lines += ["[[policy]]", 'name = "dynamic"', 'kind = "bottleneck"', "period_s = 0.5", "cooldown_s = 3.0"]
    return "\n".join(lines) + "\n"
