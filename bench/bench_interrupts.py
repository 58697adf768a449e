"""How fast Ctrl-C stops a sweep: seconds from SIGINT (to the whole process group, as a terminal sends it)
to the coordinator's exit, on a local Dask cluster, beside the in-process scheduler as the baseline.

    python bench/bench_interrupts.py                 # 3 tries each, 2 workers, Ctrl-C 3 s after the first cell
    python bench/bench_interrupts.py --tries 5 --workers 4

Prints per try: exit status, seconds to stop, stderr lines, processes of the sweep still alive 5 s later.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _spec(folder: Path) -> Path:
    """The shipped example sweep with 20 seeds (120 cells): long enough to be interrupted mid-run."""
    text = (ROOT / "scenarios" / "sweep-example.toml").read_text(encoding="utf-8")
    text = text.replace('base = "bursty.toml"', f'base = "{ROOT / "scenarios" / "bursty.toml"}"')
    text = text.replace("seeds = [0, 1, 2]", f"seeds = {list(range(20))}")
    path = folder / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _one(spec: Path, out: Path, scheduler: str, workers: int, after_s: float) -> tuple[int, float, int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgeprune.cli.sim", "sweep", str(spec), "--out", str(out)]
    cmd += ["--scheduler", scheduler, "--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    while proc.poll() is None and not ((out / "cells").is_dir() and any((out / "cells").glob("*.parquet"))):
        time.sleep(0.05)
    time.sleep(after_s)
    family = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    stop_s = time.perf_counter() - t0
    _, alive = psutil.wait_procs(family, timeout=5)
    return proc.returncode, stop_s, len(err.splitlines()), len(alive)


def main() -> int:
    """Run the tries and print them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--after", type=float, default=3.0, help="seconds after the first finished cell")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-interrupts-") as tmp:
        spec = _spec(Path(tmp))
        for scheduler in ("none", "local"):
            stops = []
            for i in range(args.tries):
                rc, stop_s, lines, alive = _one(
                    spec, Path(tmp) / f"{scheduler}-{i}", scheduler, args.workers, args.after
                )
                stops.append(stop_s)
                what = f"exit {rc}, stopped in {stop_s:.2f} s, {lines} stderr line(s), {alive} left"
                print(f"{scheduler:5s} try {i}: {what}")
            print(f"{scheduler:5s}: median {statistics.median(stops):.2f} s, max {max(stops):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
