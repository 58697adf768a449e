"""Sweep throughput and robustness: a 200-cell sweep run sequentially, on 1 and 2 local Dask workers, and
killed midway then rerun.  A benchmark to read, not a test (numbers depend on the machine).

    python bench/bench_sweep.py            # 200 cells: 10 arrival rates x 2 slowdowns x 10 seeds
    python bench/bench_sweep.py --seeds 3  # smaller
    python bench/bench_sweep.py --seeds 5 --example-png /tmp/slo.png   # also the SLO chart of this sweep

Prints cells per second for each way of running (the cells' own time; cluster start-up and the workers'
first imports are reported apart), checks that every ``results.parquet`` is byte-identical to the
sequential one, and that after ``kill -9`` of the whole sweep (client, scheduler and workers) a rerun runs
exactly the cells that had not finished.  The synthetic profile of ``tests/simfixtures.py`` is used so the
benchmark needs no measured profile; each cell simulates 60 s of a 4-stage pipeline for 2 policies.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from simfixtures import short_scenario, write_case  # noqa: E402

from edgeprune.sweep import load_sweep, run_sweep  # noqa: E402

SCENARIO = short_scenario(60, slowed_s=(20, 40))
RATES_HZ = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]


def _spec(folder: Path, n_seeds: int) -> Path:
    write_case(folder / "case", SCENARIO)
    values = ", ".join(f'{{kind = "poisson", rate_hz = {r}}}' for r in RATES_HZ)
    spec = folder / "sweep.toml"
    spec.write_text(
        'name = "synthetic-example"\nbase = "case/scenario.toml"\nkeep_runs = "none"\n'
        f"seeds = {list(range(n_seeds))}\n"
        f'[[axis]]\nkey = "arrivals"\nname = "arrivals"\nvalues = [{values}]\n'
        '[[axis]]\nkey = "environment[0].slowdown"\nname = "slowdown"\nvalues = [1.0, 2.0]\n'
    )
    return spec


def _timed(label: str, spec: Path, out: Path, scheduler: str, workers: int | None) -> tuple[float, bytes]:
    sweep = load_sweep(spec)
    t0 = time.perf_counter()
    res = run_sweep(sweep, out, scheduler=scheduler, workers=workers)
    total_s = time.perf_counter() - t0
    assert res.ran == res.total and not res.failures, res
    rate = res.ran / res.run_wall_s
    overhead = total_s - res.run_wall_s
    print(f"{label:<28} {rate:7.2f} cells/s   ({res.ran} cells in {res.run_wall_s:5.1f} s; start-up {overhead:4.1f} s)")
    return rate, (out / "results.parquet").read_bytes()


def _finished(out: Path) -> int:
    return len(list((out / "cells").glob("*.parquet"))) if (out / "cells").is_dir() else 0


def _interrupted(spec: Path, out: Path, total: int, reference: bytes) -> None:
    cmd = [sys.executable, "-m", "edgeprune.cli.sim", "sweep", str(spec), "--out", str(out), "--workers", "2",
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while _finished(out) < total * 0.4 and proc.poll() is None:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the client, the scheduler and every worker: our own session
        proc.wait()
    done_at_kill = _finished(out)
    leftovers = len([p for p in (out / "cells").iterdir() if p.name.startswith(".")])
    print(f"killed (SIGKILL to the sweep's process group) with {done_at_kill}/{total} cells finished, "
          f"{leftovers} temporary file(s) left")  # fmt: skip
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=False)
    m = re.search(r"ran (\d+), skipped (\d+)", rerun.stdout)
    assert rerun.returncode == 0 and m is not None, rerun.stdout + rerun.stderr
    ran, skipped = int(m.group(1)), int(m.group(2))
    print(f"rerun: ran {ran}, skipped {skipped} (expected ran {total - done_at_kill})")
    assert (ran, skipped) == (total - done_at_kill, done_at_kill)
    assert (out / "results.parquet").read_bytes() == reference, "interrupted + rerun differs from sequential"


def main() -> int:
    """Run the benchmark and print its numbers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds per setting (cells = 20 x seeds)")
    p.add_argument("--example-png", type=Path, help="also write the report's Fig. 5 SLO chart of this sweep here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        spec = _spec(folder, args.seeds)
        t0 = time.perf_counter()
        total = len(load_sweep(spec).cells)
        print(f"{total} cells ({len(RATES_HZ)} rates x 2 slowdowns x {args.seeds} seeds), 2 policies each, "
              f"60 s simulated per cell; spec validated in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} cores")  # fmt: skip
        _, reference = _timed("sequential (in-process)", spec, folder / "seq", "none", None)
        _, one = _timed("Dask LocalCluster, 1 worker", spec, folder / "w1", "local", 1)
        _, two = _timed("Dask LocalCluster, 2 workers", spec, folder / "w2", "local", 2)
        assert one == reference and two == reference
        print("results.parquet byte-identical: sequential = 1 worker = 2 workers")
        _interrupted(spec, folder / "killed", total, reference)
        print("interrupted + rerun results.parquet byte-identical to sequential")
        if args.example_png is not None:
            _example_png(folder / "seq", args.example_png)
    return 0


def _example_png(sweep_dir: Path, dest: Path) -> None:
    """The README's figure: this sweep's SLO-attainment chart, as edgeprune-report draws it."""
    import shutil

    from edgeprune.report import build_report, write_report

    site = sweep_dir.parent / "site" / "report.html"
    write_report(build_report([sweep_dir], title="EdgePrune example report"), site)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(site.parent / "report_files" / "synthetic-example-slo-attainment-vs-rate.png", dest)
    print(f"example chart written to {dest}")


if __name__ == "__main__":
    sys.exit(main())
