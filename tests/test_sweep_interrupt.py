"""Ctrl-C on a sweep running on a local Dask cluster: one line, exit 130, no worker left; a rerun resumes.

Ctrl-C in a terminal signals the whole foreground process group, so the test starts the sweep in its own
session and sends SIGINT to that group (coordinator and workers alike).  How long the stop takes is
printed by ``bench/bench_interrupts.py``, not asserted here (the timeout below only guards against a hang).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
from simfixtures import short_scenario, write_sweep

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
SHORT = short_scenario(120)
SPEC = """\
base = "case/scenario.toml"
seeds = [{seeds}]
[[axis]]
key = "environment[0].slowdown"
name = "slowdown"
values = [1.0, 2.0]
"""


def _sweep(spec: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgeprune.cli.sim", "sweep", str(spec), "--out", str(out), *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def _wait_for_cells(out: Path, proc: subprocess.Popen[str], timeout_s: float = 180.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        n = len(list((out / "cells").glob("*.parquet"))) if (out / "cells").is_dir() else 0
        if n:
            return n
        time.sleep(0.1)
    raise AssertionError(f"no cell finished (exit status {proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_local_sweep_stops_cleanly_and_resumes(tmp_path: Path, sig: int) -> None:
    spec = write_sweep(tmp_path, SPEC.format(seeds=", ".join(str(s) for s in range(12))), SHORT)
    out = tmp_path / "out"
    proc = _sweep(spec, out, "--workers", "2")
    _wait_for_cells(out, proc)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 2  # the two workers (and multiprocessing's resource tracker)
    os.killpg(proc.pid, sig)  # what a terminal does on Ctrl-C (SIGINT), or `kill -TERM -PGID`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    expected = "interrupted" if sig == signal.SIGINT else "interrupted (SIGTERM)"
    assert err == f"edgeprune-sim sweep: {expected}\n"  # one line: no worker traceback
    _, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []
    finished = len(list((out / "cells").glob("*.parquet")))
    assert finished < 24 and not (out / "results.parquet").exists()
    assert [p.name for p in out.rglob(".*")] == []  # no temporary left by the coordinator
    again = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.sim", "sweep", str(spec), "--out", str(out), "--scheduler", "none"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert f"ran {24 - finished}, skipped {finished} (finished earlier)" in again.stdout
    assert pl.read_parquet(out / "results.parquet")["cell_id"].n_unique() == 24
