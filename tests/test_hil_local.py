"""``edgeprune-hil local up/down``: the README's local-cluster commands, verbatim, and their refusals."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hil.cli import main
from hil.local import STATE_FILE, cgroup_missing, load_local_cluster, missing

ROOT = Path(__file__).resolve().parents[1]
README_DIR = "/tmp/edgeprune-local"


def _readme_commands() -> list[str]:
    """The bash block after the README's local-cluster marker."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- local-cluster sequence.*?-->\n```bash\n(.*?)```", text, re.S)
    assert block is not None, "README: local-cluster sequence not found"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _argv(line: str, folder: Path) -> list[str]:
    """A README line with ``folder`` for the README's, run as this tree's ``hil.cli`` (not an installed copy)."""
    words = shlex.split(line.replace(README_DIR, str(folder)))
    assert words[0] == "edgeprune-hil"
    return [sys.executable, "-m", "hil.cli", *words[1:]]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)


def test_local_up_refuses_without_root_or_tools(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["local", "up", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "edgeprune-hil: error: local up: the local SSH cluster needs root "
        "(private mount namespaces, a non-root login user)"
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("hil.local.SSHD", "/nonexistent/sshd")
    assert main(["local", "up", "--out", str(tmp_path / "c")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("OpenSSH server not installed (apt-get install --no-install-recommends openssh-server)")
    )
    monkeypatch.setattr("hil.local.SSHD", "/usr/bin/env")  # present: the next missing tool is named
    monkeypatch.setattr("shutil.which", lambda name: None if name == "unshare" else f"/usr/bin/{name}")
    assert main(["local", "up", "--out", str(tmp_path / "c")]) == 2
    assert "unshare not found" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing written


def test_local_down_needs_a_cluster_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("local down checks root first")
    assert main(["local", "down", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"edgeprune-hil: error: {tmp_path}: no local cluster here ({STATE_FILE} missing; started by `local up`?)"
    ]
    assert main(["local"]) == 2 and "local: no command given: up or down" in capsys.readouterr().err
    assert main(["check"]) == 2 and "required: --cluster" in capsys.readouterr().err


@pytest.mark.ssh
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_readme_local_sequence_runs_verbatim_and_leaves_nothing() -> None:
    """up → check → profile → run → down as the README prints them (another folder): every command exits 0,
    the sshd daemons outlive `up`, the run writes results, and after `down` no process of the nodes' user,
    no sshd and no cgroup is left."""
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    lines = _readme_commands()
    assert [shlex.split(ln)[1:3] for ln in lines] == [
        ["local", "up"],
        ["--cluster", f"{README_DIR}/cluster.toml"],
        ["--cluster", f"{README_DIR}/cluster.toml"],
        ["--cluster", f"{README_DIR}/cluster.toml"],
        ["local", "down"],
    ]
    folder = Path(tempfile.mkdtemp(prefix="edgeprune-readme-", dir="/tmp"))
    folder.chmod(0o755)
    up = _run(_argv(lines[0], folder))
    state = load_local_cluster(folder) if (folder / STATE_FILE).exists() else None
    try:
        assert up.returncode == 0, up.stderr
        printed = [ln.strip() for ln in up.stdout.splitlines() if ln.startswith("  edgeprune-hil ")]
        assert printed == [ln.replace(README_DIR, str(folder)) for ln in lines[1:]]  # what it prints = the README
        assert state is not None and len(state.sshd_pids()) == 4  # daemons: alive after `up` exited
        for line in lines[1:4]:
            done = _run(_argv(line, folder))
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        doc = json.loads((folder / "runs" / "run1" / "summary.json").read_text())
        assert doc["backend"] == "hil" and set(doc["policies"]) == {"no-pruning", "dynamic"} and "aborted" not in doc
        assert all(p["completed"] > 0 for p in doc["policies"].values())
        down = _run(_argv(lines[4], folder))
        assert down.returncode == 0, down.stderr
    finally:
        if state is not None and (folder / STATE_FILE).exists():
            state.stop()  # the test failed before `down`: clean up all the same
    assert state is not None
    assert state.pi_processes() == [] and state.sshd_pids() == []
    cgroups = [cg for n in state.nodes for cg in (n.cgroup, n.acct_cgroup) if cg is not None]
    assert cgroups or cgroup_missing() is not None
    assert not any(cg.exists() for cg in cgroups)
    assert not (folder / STATE_FILE).exists() and not (folder / "nodes").exists()
    assert (folder / "runs" / "run1" / "summary.json").exists()  # results stay
    shutil.rmtree(folder)
