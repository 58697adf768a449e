"""Interrupt-safe writing (edgeprune.atomic): an interrupt at any instant leaves nothing or the whole result,
stale temporaries of killed runs are removed, modes follow the umask; --out checked before simulating;
portable scenario.toml; progress bars only on a terminal."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from simfixtures import short_scenario, write_case

import edgeprune.atomic as atomic
from edgeprune.atomic import atomic_dir, remove_stale
from edgeprune.cli.sim import main as sim_main
from edgeprune.errors import ResultError
from edgeprune.results import RunResult, read_run_dir, write_run_dir

ROOT = Path(__file__).resolve().parent.parent
TEMP = re.compile(r"^\..+\.(tmp|old)-\d+-[0-9a-f]{8}$")


def _results(n_rows: int = 50, tag: float = 0.0) -> list[RunResult]:
    out = []
    for name in ("static", "dynamic"):
        req = pl.DataFrame({"request_id": list(range(n_rows)), "latency_s": [tag + i * 1e-3 for i in range(n_rows)]})
        tl = pl.DataFrame({"time_s": [0.0, 1.0], "level": [0, 1]})
        out.append(RunResult(name, req, tl, {"arrived": n_rows, "tag": tag}))
    return out


def _write(out: Path, tag: float = 0.0, force: bool = False) -> None:
    write_run_dir(out, scenario_toml="seed = 1\n", header={"scenario": "t"}, results=_results(tag=tag), force=force)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Boom:
    """Raise KeyboardInterrupt at the ``at``-th call of any wrapped writing step (counting from 0)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def wrap(self, fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls - 1 == self.at:
                raise KeyboardInterrupt
            return fn(*args, **kwargs)

        return inner


def _patch_writes(monkeypatch: pytest.MonkeyPatch, boom: Boom) -> None:
    """Every step of a run-folder write: files, folders, renames and removals."""
    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom.wrap(pl.DataFrame.write_parquet))
    monkeypatch.setattr(Path, "write_text", boom.wrap(Path.write_text))
    monkeypatch.setattr(Path, "mkdir", boom.wrap(Path.mkdir))
    monkeypatch.setattr(atomic.os, "mkdir", boom.wrap(os.mkdir))
    monkeypatch.setattr(atomic.os, "rename", boom.wrap(os.rename))
    monkeypatch.setattr(atomic.shutil, "rmtree", boom.wrap(shutil.rmtree))


def test_an_interrupt_at_every_step_leaves_nothing_or_the_whole_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "ref")
    whole = _snapshot(tmp_path / "ref")
    outcomes = set()
    for at in range(40):
        parent = tmp_path / f"p{at}"
        parent.mkdir()
        boom = Boom(at)
        with monkeypatch.context() as m:
            _patch_writes(m, boom)
            try:
                _write(parent / "out")
                outcomes.add("done")
            except KeyboardInterrupt:
                outcomes.add("interrupted")
        names = sorted(p.name for p in parent.iterdir())
        assert names in ([], ["out"]), (at, names)
        if names:
            assert _snapshot(parent / "out") == whole
        if boom.calls <= at:  # the write finished before step `at`: every step was tried
            break
    assert outcomes == {"done", "interrupted"}


def test_an_interrupt_while_replacing_keeps_the_old_result_or_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tag, name in ((1.0, "old"), (2.0, "new")):
        _write(tmp_path / name, tag=tag)
    old, new = _snapshot(tmp_path / "old"), _snapshot(tmp_path / "new")
    for at in range(40):
        parent = tmp_path / f"p{at}"
        _write(parent / "out", tag=1.0)
        boom = Boom(at)
        with monkeypatch.context() as m:
            _patch_writes(m, boom)
            with contextlib.suppress(KeyboardInterrupt):
                _write(parent / "out", tag=2.0, force=True)
        assert [p.name for p in parent.iterdir()] == ["out"], at
        assert _snapshot(parent / "out") in (old, new), at
        if boom.calls <= at:
            break


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    stale_dir = tmp_path / f".out.tmp-{_dead_pid()}-0123abcd"
    stale_dir.mkdir()
    (stale_dir / "summary.json").write_text("{")  # half written
    stale_old = tmp_path / f".other.old-{_dead_pid()}-89abcdef"
    stale_old.mkdir()
    stale_file = tmp_path / f".p.json.tmp-{_dead_pid()}-00000000"
    stale_file.write_text("partial")
    live = tmp_path / f".x.tmp-{os.getppid()}-11111111"  # a writer that still runs
    live.mkdir()
    orphan = tmp_path / f".y.tmp-{os.getpid()}-22222222"  # this process's, but no write in progress
    orphan.mkdir()
    unrelated = tmp_path / ".hidden.tmp"
    unrelated.write_text("not ours")
    _write(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, unrelated.name])
    assert remove_stale(tmp_path) == []


def test_a_write_in_progress_is_never_taken_for_stale(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "a") as tmp:
        (tmp / "f").write_text("x")
        assert remove_stale(tmp_path) == [] and tmp.is_dir()
    assert (tmp_path / "a" / "f").read_text() == "x"


def test_existing_output_refused_unless_force(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    _write(tmp_path / "out", tag=0.5)  # an empty folder is no result: filled without --force
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(ResultError, match="not empty"), atomic_dir(tmp_path / "raced") as tmp:
        (tmp / "ours").write_text("x")
        (tmp_path / "raced").mkdir()  # a folder filled by someone else during the write is not overwritten
        (tmp_path / "raced" / "theirs").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["raced"]
    assert [p.name for p in (tmp_path / "raced").iterdir()] == ["theirs"]
    shutil.rmtree(tmp_path / "raced")
    _write(tmp_path / "out", tag=1.0)
    with pytest.raises(ResultError, match="not empty"):
        _write(tmp_path / "out", tag=2.0)
    _write(tmp_path / "out", tag=2.0, force=True)
    _, runs = read_run_dir(tmp_path / "out")
    assert runs["static"].requests["latency_s"][0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the replaced folder is gone


@pytest.mark.parametrize("umask", ["022", "027", "002"])
def test_modes_follow_the_umask_like_any_file(tmp_path: Path, umask: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        from test_interrupts import _write
        from edgeprune.atomic import atomic_write_text
        base = Path({str(tmp_path)!r})
        _write(base / "run")
        atomic_write_text(base / "p.json", "{{}}")
        (base / "plain.txt").write_text("x")
        (base / "plain-dir").mkdir()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(["sh", "-c", f'umask {umask} && exec "$0" -c "$1"', sys.executable, code], check=True, env=env)
    mode = int(umask, 8)
    file_mode, dir_mode = 0o666 & ~mode, 0o777 & ~mode
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == file_mode  # the reference: an ordinary file
    assert (tmp_path / "plain-dir").stat().st_mode & 0o777 == dir_mode
    for p in [tmp_path / "p.json", *(q for q in (tmp_path / "run").rglob("*") if q.is_file())]:
        assert p.stat().st_mode & 0o777 == file_mode, p
    for d in [tmp_path / "run", *(q for q in (tmp_path / "run").rglob("*") if q.is_dir())]:
        assert d.stat().st_mode & 0o777 == dir_mode, d


def test_no_code_changes_the_process_umask() -> None:
    hits = [
        str(p.relative_to(ROOT))
        for pkg in ("edgeprune", "sim", "traces", "models", "hil", "bench")
        for p in (ROOT / pkg).rglob("*.py")
        if "os.umask(" in p.read_text(encoding="utf-8")
    ]
    assert hits == []


# ------------------------------------------------------------------------------------------ real signals

_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from edgeprune.cli.common import guarded
from test_interrupts import _results
from edgeprune.results import write_run_dir
base = Path({base!r})
results = _results(n_rows=20000)

def body() -> int:
    print("ready", flush=True)
    for i in range(100000):
        write_run_dir(base / f"out{{i}}", scenario_toml="seed = 1\\n", header={{}}, results=results)
    return 0

sys.exit(guarded("writer", body))
"""


def _writer(base: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = _WRITER.format(tests=str(ROOT / "tests"), base=str(base))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_real_signals_during_writes_leave_whole_results_and_no_debris(tmp_path: Path, sig: int) -> None:
    _write(tmp_path / "ref-parent" / "ref")
    ref = tmp_path / "ref-parent" / "ref"
    for attempt, delay_s in enumerate((0.2, 0.7)):
        base = tmp_path / f"{sig}-{attempt}"
        base.mkdir()
        proc = _writer(base)
        time.sleep(delay_s)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        elif sig == signal.SIGTERM and proc.returncode == -sig:
            assert err == ""  # it fell between two writes, where SIGTERM keeps its default action: nothing begun
        else:
            assert proc.returncode == 128 + sig and err.strip().startswith("writer: interrupted"), err
            assert len(err.strip().splitlines()) == 1
        names = [p.name for p in base.iterdir()]
        debris = [n for n in names if TEMP.match(n)]
        if sig != signal.SIGKILL:
            assert debris == [], debris
        for name in (n for n in names if not TEMP.match(n)):
            assert {p.name for p in (base / name).rglob("*")} == {p.name for p in ref.rglob("*")}
            _, runs = read_run_dir(base / name)  # every published folder reads back whole
            assert runs["dynamic"].requests.height == 20000
        _write(base / "next")  # the next run into the folder cleans what a SIGKILL left
        assert not [p for p in base.iterdir() if TEMP.match(p.name)]


# ------------------------------------------------------------------------------------------ edgeprune-sim

SHORT = short_scenario(30, warmup_s=2)


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    return write_case(tmp_path / "case", SHORT)


def _no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    import sim

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("simulated although --out is unusable")

    monkeypatch.setattr(sim, "run_scenario", refuse)


@pytest.mark.parametrize("case", ["file", "parent-file", "not-empty"])
def test_bad_out_is_refused_before_simulating(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    _no_simulation(monkeypatch)
    target = tmp_path / "target"
    if case == "file":
        target.write_text("x")
        out, why = target, "exists and is not a folder"
    elif case == "parent-file":
        target.write_text("x")
        out, why = target / "sub" / "out", "is not a folder"
    else:
        target.mkdir()
        (target / "keep").write_text("x")
        out, why = target, "not empty (pass --force"
    assert sim_main([str(scenario), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and why in captured.err, captured.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_parent_is_refused_before_simulating(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_simulation(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert sim_main([str(scenario), "--out", str(locked / "a" / "out"), "--no-progress"]) == 2
    assert "no permission" in capsys.readouterr().err


def test_same_run_in_two_clones_gives_identical_bytes(tmp_path: Path) -> None:
    folders = []
    for clone in ("a/deep/clone", "b"):
        root = tmp_path / clone
        sc = write_case(root / "scenarios", SHORT)
        out = root / "runs" / "r1"
        assert sim_main([str(sc), "--out", str(out), "--no-progress"]) == 0
        folders.append(out)
    one, two = (_snapshot(f) for f in folders)
    assert one == two
    text = (folders[0] / "scenario.toml").read_text()
    assert 'profile = "../../scenarios/profile.json"' in text and str(tmp_path) not in text
    # the copy still loads from the result folder
    assert sim_main([str(folders[0] / "scenario.toml"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    assert _snapshot(tmp_path / "again")["summary.json"] == one["summary.json"]


def test_sim_help_mentions_the_sweep_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        sim_main(["--help"])
    assert "edgeprune-sim sweep" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ progress bars


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    from edgeprune.progress import progress_bar

    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(total=3, desc="x")
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert ("3/3" in stream.text) is tty
    before = stream.text
    off = progress_bar(enabled=False, total=3)  # --no-progress wins on a terminal too
    off.update(3)
    off.close()
    assert stream.text == before


def test_every_bar_is_built_by_the_one_helper() -> None:
    hits = [
        str(p.relative_to(ROOT))
        for pkg in ("edgeprune", "sim", "models", "hil")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "progress.py" and re.search(r"\btqdm\(", p.read_text(encoding="utf-8"))
    ]
    assert hits == []


def test_sim_writes_no_bar_into_a_pipe(scenario: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.sim", str(scenario)], capture_output=True, text=True, env=env, check=True
    )
    assert done.stderr == "" and "scenario" in done.stdout
