"""Connecting to a local cluster of real OpenSSH servers: ``check`` and every connection failure kind.

Each failure must be one ``edgeprune-hil: error:`` line naming the node, its address and the cause, with
exit status 2, and must leave no process behind on any node (the fixture fails the test otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hil_cluster import LocalCluster, cluster_fixtures, no_torch_python, skip_reason
from simfixtures import profile_dict

from edgeprune.errors import HilError
from hil.cli import main

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))]


cluster, no_leftovers = cluster_fixtures(2)  # two "Pis" shared by the tests of this module


def _cluster_file(tmp_path: Path, cluster: LocalCluster, **kw: object) -> Path:
    ckpt = tmp_path / "missing.pt"
    p = tmp_path / "pis.toml"
    p.write_text(cluster.cluster_toml(ckpt, **kw))  # type: ignore[arg-type]
    return p


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_reports_versions_of_every_node(
    tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run(["--cluster", str(_cluster_file(tmp_path, cluster)), "check"], capsys)
    assert rc == 0, err
    assert "host keys verified" in out
    for n in cluster.nodes:
        assert f"{n.name} " in out and "torch" in out
    assert out.count(" ok") >= 2


def test_changed_host_key_is_refused(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    n0, n1 = cluster.nodes
    wrong.write_text(f"[127.0.0.1]:{n0.port} {other}\n[127.0.0.1]:{n1.port} {n1.host_key_pub}\n")
    rc, _, err = _run(["--cluster", str(_cluster_file(tmp_path, cluster, known_hosts=wrong)), "check"], capsys)
    assert rc == 2
    assert err.startswith("edgeprune-hil: error: pi1 (pi@127.0.0.1:")
    assert "host key not verified" in err and "unknown or changed host key" in err
    assert "pi2" not in err  # pi2's key is right
    assert err.count("\n") == 1


def test_unknown_host_key_is_refused(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    rc, _, err = _run(["--cluster", str(_cluster_file(tmp_path, cluster, known_hosts=empty)), "check"], capsys)
    assert rc == 2
    assert "pi1 (" in err and "pi2 (" in err and "host key not verified" in err


def test_unreachable_node(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    path = _cluster_file(tmp_path, cluster, ports={"pi2": closed})
    rc, _, err = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2
    assert f"pi2 (pi@127.0.0.1:{closed}): connection refused" in err


def test_silent_node_times_out(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts TCP, never speaks SSH
        port = silent.getsockname()[1]
        path = _cluster_file(tmp_path, cluster, ports={"pi1": port}, coordinator="connect_timeout_s = 1.0")
        path.write_text(path.read_text().replace("connect_timeout_s = 5.0\n", ""))
        rc, _, err = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2
    assert f"pi1 (pi@127.0.0.1:{port}): timed out after 1 s" in err


def test_refused_key_and_bad_name(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    text = _cluster_file(tmp_path, cluster).read_text().replace(str(cluster.client_key), str(stranger), 1)
    path = tmp_path / "refused.toml"
    path.write_text(text)
    rc, _, err = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2 and "pi1 (pi@127.0.0.1:" in err and "authentication refused for user 'pi'" in err
    path.write_text(text.replace('\naddress = "127.0.0.1"', '\naddress = "no-such-pi.invalid"', 1))
    rc, _, err = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2 and "does not resolve" in err


def test_node_without_torch(tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster_file(tmp_path, cluster, python={"pi2": no_torch_python(cluster)})
    rc, out, err = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2
    assert "pi2" in out and "torch not importable" in out and "No module named 'torch'" in out
    assert "1 node(s) not ready" in err
    # `run` stops at the deploy check, naming the node, its address and what is missing; nothing started
    (tmp_path / "profile.json").write_text(json.dumps(profile_dict(n_stages=2)))
    scenario = tmp_path / "two.toml"
    scenario.write_text(TWO_STAGES)
    rc, _, err = _run(["--cluster", str(path), "run", str(scenario), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2
    assert err.startswith("edgeprune-hil: error: deploy: pi2 (pi@127.0.0.1:")
    assert "torch not importable" in err and "pi1" not in err
    assert not (tmp_path / "r").exists()


TWO_STAGES = """\
duration_s = 5.0
slo_s = 1.0
profile = "profile.json"
[[stage]]
name = "s0"
device = "cpu"
[[stage]]
name = "s1"
device = "cpu"
[arrivals]
kind = "poisson"
rate_hz = 5.0
[[policy]]
name = "none"
kind = "static"
levels = [0, 0]
"""


def _fake_cpufreq(root: Path, uid: int, caps_khz: list[int]) -> Path:
    """A ``cpu*/cpufreq`` tree like a Pi's sysfs (1.8 GHz cores, the given current caps), writable by pi."""
    top = root / "fake-sys-cpu"
    for k, cap in enumerate(caps_khz):
        d = top / f"cpu{k}" / "cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpuinfo_max_freq").write_text("1800000\n")
        (d / "scaling_max_freq").write_text(f"{cap}\n")
        os.chown(d / "scaling_max_freq", uid, -1)
    return top


def test_cpufreq_slowdown_caps_every_core_and_restores_the_original_caps(tmp_path: Path, cluster: LocalCluster) -> None:
    from hil.cluster import load_cluster
    from hil.connect import close_all, connect_all
    from hil.environment import Environment, NodeChange

    fake = _fake_cpufreq(cluster.root / "pi2-sys", cluster.uid, [1_500_000, 1_800_000])
    path = _cluster_file(tmp_path, cluster, slowdown="cpufreq", host_extra=f'cpufreq_dir = "{fake}"')
    spec = load_cluster(path)
    caps = [fake / f"cpu{k}" / "cpufreq" / "scaling_max_freq" for k in range(2)]

    async def scenario() -> tuple[list[int], list[int], list[str]]:
        nodes = await connect_all(spec.hosts, spec.coordinator)
        try:
            env = Environment(nodes, spec.coordinator, "t-cpufreq")
            await env.apply(NodeChange(0.0, "pi2", 2.0))
            halved = [int(c.read_text()) for c in caps]
            await env.apply(NodeChange(1.0, "pi2", 1.5))
            third = [int(c.read_text()) for c in caps]
            problems = await env.revert()
            assert [e["how"] for e in env.log] == ["cpufreq max / 2", "cpufreq max / 1.5"]
            return halved, third, problems
        finally:
            await close_all(nodes)

    halved, third, problems = asyncio.run(scenario())
    assert halved == [900_000, 900_000]
    assert third == [1_200_000, 1_200_000]
    assert problems == []
    assert [int(c.read_text()) for c in caps] == [1_500_000, 1_800_000]  # the caps found before, not the max


def test_cpufreq_slowdown_without_cpufreq_is_a_clear_error(tmp_path: Path, cluster: LocalCluster) -> None:
    from hil.cluster import load_cluster
    from hil.connect import close_all, connect_all
    from hil.environment import Environment, NodeChange

    empty = cluster.root / "no-cpufreq"
    empty.mkdir(exist_ok=True)
    spec = load_cluster(_cluster_file(tmp_path, cluster, slowdown="cpufreq", host_extra=f'cpufreq_dir = "{empty}"'))

    async def scenario() -> str:
        nodes = await connect_all(spec.hosts, spec.coordinator)
        try:
            env = Environment(nodes, spec.coordinator, "t-cpufreq")
            with pytest.raises(HilError) as err:
                await env.apply(NodeChange(0.0, "pi1", 2.0))
            assert await env.revert() == []
            return str(err.value)
        finally:
            await close_all(nodes)

    msg = asyncio.run(scenario())
    assert msg.startswith("pi1 (pi@127.0.0.1:") and "cannot read the CPU frequency caps" in msg


def test_check_upload_installs_the_wheel_where_edgeprune_is_missing(
    tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """pi1's interpreter is a fresh venv (no edgeprune, no torch): `check` says so, `check --upload` uploads
    the project's wheel over SFTP and installs it, and what is left (torch) is named."""
    dist = cluster.root / "dist"
    root = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    subprocess.run([*pip, str(root)], check=True, capture_output=True)
    wheel = next(dist.glob("edgeprune-*.whl"))
    venv = cluster.root / "pi1-venv"
    subprocess.run([cluster.python, "-m", "venv", str(venv)], check=True, capture_output=True)
    subprocess.run(["chown", "-R", str(cluster.uid), str(venv)], check=True)
    venv_python = str(venv / "bin" / "python")
    path = _cluster_file(tmp_path, cluster, python={"pi1": venv_python}, extra=f'[deploy]\nwheel = "{wheel}"')

    rc, out, _ = _run(["--cluster", str(path), "check"], capsys)
    assert rc == 2
    assert "edgeprune not importable" in next(line for line in out.splitlines() if line.startswith("pi1"))

    rc, _, err = _run(["--cluster", str(path), "check", "--upload"], capsys)
    assert rc == 2
    assert err.startswith("edgeprune-hil: error: deploy: pi1 (pi@127.0.0.1:") and "torch not importable" in err
    assert "edgeprune not importable" not in err and "pi2" not in err
    version = subprocess.run(
        [venv_python, "-c", "import importlib.metadata as m, hil; print(m.version('edgeprune'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    from hil.deploy import coordinator_versions

    assert version == coordinator_versions()[0]
    assert (cluster.nodes[0].workdir / "dist" / wheel.name).is_file()  # uploaded over SFTP
