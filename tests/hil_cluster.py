"""The local "Pi" cluster for hardware-in-the-loop tests: :mod:`hil.local` (one implementation, also behind
``edgeprune-hil local up/down``), plus what only tests need (a node without torch).

:func:`start_local_cluster` returns a :class:`LocalCluster`; :meth:`LocalCluster.stop` ends every sshd,
removes the cgroups and the directory, and returns the command lines of processes that were still running as
``pi`` (leftover workers) — the pytest fixtures fail the test when that list is not empty.  Don't put the
cluster under pytest's ``tmp_path``: its parent is 0700 and sshd reads ``authorized_keys`` as the login user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hil.local import (
    RUN_VIT,
    TINY_VIT,
    LocalCluster,
    LocalNode,
    make_tiny_checkpoint,
    start_local_cluster,
)
from hil.local import cgroup_missing as cgroup_skip_reason
from hil.local import missing as skip_reason

__all__ = [
    "RUN_VIT",
    "TINY_VIT",
    "LocalCluster",
    "LocalNode",
    "capped_cluster_marks",
    "cgroup_skip_reason",
    "cluster_fixtures",
    "make_tiny_checkpoint",
    "no_torch_python",
    "skip_reason",
    "start_local_cluster",
]


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


def capped_cluster_marks() -> list[pytest.MarkDecorator]:
    """The ``pytestmark`` of a module whose tests run model workers on the local cluster with per-node CPU
    quotas: skipped, with the reason, where SSH servers or cgroup v1 quotas are missing."""
    return [
        pytest.mark.ssh,
        pytest.mark.torch,
        pytest.mark.slow,
        pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
        pytest.mark.skipif(cgroup_skip_reason() is not None, reason=str(cgroup_skip_reason())),
    ]
