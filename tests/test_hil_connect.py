"""Connecting to a local cluster of real OpenSSH servers: ``check`` and every connection failure kind.

Each failure must be one ``edgeprune-hil: error:`` line naming the node, its address and the cause, with
exit status 2, and must leave no process behind on any node (the fixture fails the test otherwise).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hil_cluster import LocalCluster, no_torch_python, skip_reason, start_local_cluster
from simfixtures import profile_dict

from hil.cli import main

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two "Pis" (shared by the tests of this module)."""
    c = start_local_cluster(2)
    yield c
    left = c.stop()
    assert not left, f"processes left on the nodes: {left}"


@pytest.fixture(autouse=True)
def no_leftovers(cluster: LocalCluster) -> Iterator[None]:
    """Fail the test when any process of the nodes' user outlives it."""
    yield
    left = cluster.leftovers()
    if left:
        pytest.fail(f"processes left on the nodes: {left}")


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
