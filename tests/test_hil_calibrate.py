"""``edgeprune-hil calibrate`` recovers known parameters from simulated runs and predicts a held-out run.

The result schema is the same for the simulator and the cluster, so two simulated runs with known physics
stand in for two cluster runs: run A (camera-trap bursts, a scripted 1.5x slowdown on pi2) is calibrated,
run B (a different scenario: MMPP arrivals, another seed, no slowdown) is the held-out run.  True values:
R = 12 C/W, tau = 90 s, ambient 30 C, alpha = 0.9, hop latency 40 ms (+ 4.8 ms transfer) per hop.
Tolerances: R and tau within 1 % (the fit's only error is the power's placement within a period), ambient
within 0.1 C, alpha within 0.05 (service times are random: its standard error is ~0.015), the overhead per
request within 20 % (the same noise, ~5 % standard error), the interference factor within 5 %.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeprune.cli.sim import main as sim_main
from edgeprune.config import Ctx
from edgeprune.physics import device_physics_from_table
from hil.calibrate import calibrate, calibration_toml, holdout_errors
from hil.cli import main

REPO = Path(__file__).resolve().parents[1]
R, TAU, AMBIENT, ALPHA, LATENCY_S = 12.0, 90.0, 30.0, 0.9, 0.04
LIVE_TAU_REL, LIVE_STEADY_ABS_C = 0.2, 1.0  # the live test's tolerances (see below)
LIVE_TAU_THROTTLED_REL = 0.35  # tau of a node the run throttled (see below)
FREQ_MAX_MHZ = device_physics_from_table({"preset": "rpi4b"}, Ctx("test")).dvfs.freqs_mhz[0]  # the live nodes'
PHYSICS = (
    f'{{ preset = "rpi4b", thermal = {{ resistance_c_per_w = {R}, time_constant_s = {TAU}, ambient_c = {AMBIENT}, '
    f"initial_c = 50.0 }}, dvfs = {{ alpha = {ALPHA} }} }}"
)
CAMERA_TRAP = """[arrivals]
kind = "camera-trap"
trigger_rate_hz = 0.25
burst_size_mean = 5
burst_size_max = 10
frame_interval_s = 0.45
frame_jitter_s = 0.1
[[environment]]
device = "pi2"
start_s = 600.0
end_s = 900.0
slowdown = 1.5
"""
MMPP = """[arrivals]
kind = "mmpp"
rates_hz = [0.6, 2.2]
mean_dwell_s = [60.0, 40.0]
"""


def _scenario(name: str, seed: int, tail: str, physics: bool = True) -> str:
    phys = f"physics = {PHYSICS}" if physics else ""
    devices = "\n".join(
        f'[[device]]\nname = "pi{k + 1}"\nprofile_device = "x86-1thr"\nspeed = 0.5\n{phys}' for k in range(4)
    )
    stages = "\n".join(f'[[stage]]\nname = "slice{k}"\ndevice = "pi{k + 1}"' for k in range(4))
    return f"""name = "{name}"
seed = {seed}
duration_s = 1500
warmup_s = 60
slo_s = 3.0
profile = "{REPO}/models/profiles/vit-b16_x86-2c_digits-proxy.json"
{devices}
{stages}
[network]
bandwidth_mbit_s = 1000
latency_s = {LATENCY_S}
{tail}
[[policy]]
name = "no-pruning"
kind = "static"
levels = [0, 0, 0, 0]
[[policy]]
name = "thermal"
kind = "thermal"
min_accuracy = 0.99
"""


def _simulate(folder: Path, name: str, text: str) -> Path:
    sc = folder / f"{name}.toml"
    sc.write_text(text)
    out = folder / name
    assert sim_main([str(sc), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run A (calibrated) and run B (held out), simulated with the true parameters."""
    folder = tmp_path_factory.mktemp("calib")
    return (
        _simulate(folder, "run-a", _scenario("calib-a", 3, CAMERA_TRAP)),
        _simulate(folder, "run-b", _scenario("calib-b", 8, MMPP)),
    )


def test_recovers_the_true_parameters(runs: tuple[Path, Path]) -> None:
    cal = calibrate(runs[0], power="timeline")  # the simulator's power_w: exact
    assert sorted(cal.thermal) == ["pi1", "pi2", "pi3", "pi4"]
    for device, th in cal.thermal.items():
        assert th["resistance_c_per_w"].value == pytest.approx(R, rel=0.01), device
        assert th["time_constant_s"].value == pytest.approx(TAU, rel=0.01), device
        assert th["ambient_c"].value == pytest.approx(AMBIENT, abs=0.1), device
        assert 0 < th["resistance_c_per_w"].stderr < 0.1 * R
        assert cal.alpha[device].value == pytest.approx(ALPHA, abs=0.05), device
        assert 0 < cal.alpha[device].stderr < 0.05
    transfer_s = 605184 * 8 / 1e9  # the profile's activation bytes at 1000 Mbit/s, per hop
    assert cal.hop is not None and cal.hop_latency_s is not None
    assert cal.hop.value == pytest.approx(3 * (LATENCY_S + transfer_s), rel=0.2)
    assert cal.hop_latency_s == pytest.approx(LATENCY_S, rel=0.3)
    (slowed,) = [i for i in cal.interference if i["stated"] != 1.0]
    assert (slowed["device"], slowed["start_s"], slowed["end_s"]) == ("pi2", 600.0, 900.0)
    assert slowed["factor"] == pytest.approx(1.5, rel=0.05)
    normal = [i for i in cal.interference if i["stated"] == 1.0]
    assert normal and all(i["factor"] == pytest.approx(1.0, rel=0.05) for i in normal)


def test_the_busy_time_power_recovers_them_too(runs: tuple[Path, Path]) -> None:
    """The default power source: the run's power model at each period's measured busy time (a service counted
    in the period it ends in) — no power readings needed; within 1 % and 0.2 C (measured: 0.3 %, 0.12 C)."""
    cal = calibrate(runs[0])
    assert any("measured busy time" in n for n in cal.notes)
    for device, th in cal.thermal.items():
        assert th["resistance_c_per_w"].value == pytest.approx(R, rel=0.01), device
        assert th["time_constant_s"].value == pytest.approx(TAU, rel=0.01), device
        assert th["ambient_c"].value == pytest.approx(AMBIENT, abs=0.2), device


def test_predicts_the_held_out_run_within_the_bounds(runs: tuple[Path, Path]) -> None:
    held = holdout_errors(calibrate(runs[0]), runs[1])
    assert set(held["policies"]) == {"no-pruning", "thermal"}
    for policy, e in held["policies"].items():
        assert abs(e["p50_latency_s"]) <= 5.0, policy
        assert abs(e["p95_latency_s"]) <= 10.0, policy
        assert abs(e["slo_attainment"]) <= 3.0, policy
        assert abs(e["throttled_error_pct"]) <= 10.0, policy
        assert e["temp_rmse_c"] < 0.5, policy
    assert held["policies"]["no-pruning"]["throttled_s"] > 0  # the held-out run did throttle


def test_cli_writes_a_loadable_fragment(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibrated.toml"
    assert main(["calibrate", str(runs[0]), "--out", str(out), "--holdout", str(runs[1])]) == 0
    printed = capsys.readouterr().out
    assert "held-out run" in printed and f"scenario fragment written to {out}" in printed
    doc = tomllib.loads(out.read_text())
    assert [d["name"] for d in doc["device"]] == ["pi1", "pi2", "pi3", "pi4"]
    for d in doc["device"]:
        phys = device_physics_from_table(d["physics"], Ctx(str(out)))  # a valid physics table
        fit = doc["calibration"][d["name"]]
        assert phys.thermal.resistance_c_per_w == fit["resistance_c_per_w"]["value"]
        assert phys.thermal.tau_s == fit["time_constant_s"]["value"]
        assert phys.dvfs.alpha == fit["alpha"]["value"]
        assert fit["time_constant_s"]["stderr"] > 0 and fit["time_constant_s"]["n"] > 100
    assert doc["network"]["latency_s"] == doc["calibration"]["hop"]["latency_per_hop_s"]
    assert doc["calibration"]["source_run"] == str(runs[0].resolve())
    assert doc["calibration"]["holdout"]["run"] == str(runs[1].resolve())
    assert not [p for p in tmp_path.iterdir() if p.name != "calibrated.toml"]  # no temporary left


def test_a_run_without_physics_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _scenario("plain", 1, MMPP, physics=False).replace("duration_s = 1500", "duration_s = 120")
    run = _simulate(tmp_path, "plain", text)
    capsys.readouterr()
    out = tmp_path / "x.toml"
    assert main(["calibrate", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"edgeprune-hil: error: {run}/no-pruning/timeline.parquet: no column 'temp_c'")
    assert not out.exists()


def test_not_a_run_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"edgeprune-hil: error: {tmp_path}: not a run directory (no summary.json)\n"


def _emulator_csv(run: Path, folder: Path, power_scale: float) -> Path:
    """A copy of ``run`` whose policies carry ``thermal_emulator.csv`` records made from the timeline (node =
    the stage's device) and whose timeline power is scaled by ``power_scale`` (as a capped node's CPU-time
    power would be)."""
    import shutil

    import polars as pl

    copy = folder / run.name
    shutil.copytree(run, copy)
    devices = {f"slice{k}": f"pi{k + 1}" for k in range(4)}
    for policy in ("no-pruning", "thermal"):
        path = copy / policy / "timeline.parquet"
        tl = pl.read_parquet(path)
        records = tl.select(
            "time_s", pl.col("stage").cast(pl.String).replace(devices).alias("node"), "power_w", "temp_c"
        )
        records.write_csv(copy / policy / "thermal_emulator.csv")
        tl.with_columns(pl.col("power_w") * power_scale).write_parquet(path)
    return copy


def test_the_power_source_is_chosen(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run = _emulator_csv(runs[0], tmp_path, power_scale=0.1)
    emulated = calibrate(run, power="emulator")
    assert any("thermal_emulator.csv" in n for n in emulated.notes)
    for device, th in emulated.thermal.items():
        assert th["resistance_c_per_w"].value == pytest.approx(R, rel=0.01), device
        assert th["time_constant_s"].value == pytest.approx(TAU, rel=0.01), device
    timeline = calibrate(run, power="timeline")
    assert not any("thermal_emulator.csv" in n for n in timeline.notes)
    assert timeline.thermal["pi1"]["resistance_c_per_w"].value == pytest.approx(10 * R, rel=0.01)


def test_emulator_power_without_records_is_one_line(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", str(runs[0]), "--power", "emulator"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"edgeprune-hil: error: {runs[0]}/no-pruning/thermal_emulator.csv: no emulator records "
        "(a run on hosts with emulate_physics writes them)\n"
    )


def test_service_factors_of_a_simulated_run_are_the_profiles(runs: tuple[Path, Path]) -> None:
    cal = calibrate(runs[0])
    assert sorted(cal.service_factor) == ["pi1", "pi2", "pi3", "pi4"]  # pi2 from outside its 1.5x window
    for device, factor in cal.service_factor.items():
        assert factor == pytest.approx(1.0, abs=0.05), device
    for stage, shapes in cal.level_shapes.items():
        assert shapes == pytest.approx([1.0] * len(shapes), abs=0.08), stage


# -- live: the local cluster with the thermal emulator ---------------------------------------------------------
# Reduced form of bench/bench_hil_calibrate.py.  True physics (assumptions, not the preset: a 30 C room, per
# node R / tau, tau scaled from the Pi's ~120 s to 8-10 s so that a 50 s run shows the heating transient):
LIVE_AMBIENT_C = 30.0
LIVE_TRUE = {"pi1": (9.0, 10.0), "pi2": (13.5, 8.0), "pi3": (9.0, 10.0), "pi4": (8.0, 9.0)}  # R C/W, tau s
LIVE_SCENARIO = """\
name = "{name}"
seed = {seed}
duration_s = 50.0
warmup_s = 2.0
slo_s = 0.6
drain_s = 4.0
profile = "profile.json"
{devices}
{stages}
{arrivals}
[[policy]]
name = "no-pruning"
kind = "static"
levels = [0, 0, 0, 0]
period_s = 0.5
"""


def _live_physics(node: str) -> str:
    r, tau = LIVE_TRUE[node]
    idle_c = LIVE_AMBIENT_C + r * 2.7  # the preset's idle power: every node starts at its idle steady state
    return (
        f'{{ preset = "rpi4b", thermal = {{ resistance_c_per_w = {r}, time_constant_s = {tau}, '
        f"ambient_c = {LIVE_AMBIENT_C}, initial_c = {idle_c:.2f} }} }}"
    )


def _live_marks(fn: Any) -> Any:
    from hil_cluster import capped_cluster_marks

    for mark in capped_cluster_marks():
        fn = mark(fn)
    return fn


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """On the local cluster, every node emulated with its true physics: run A (Poisson 5/s), run B (MMPP)."""
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    from hil_cluster import RUN_VIT, make_tiny_checkpoint, start_local_cluster

    folder = tmp_path_factory.mktemp("live")
    cluster = start_local_cluster(4, cgroups=True)
    try:
        ckpt = make_tiny_checkpoint(cluster.root / "model", RUN_VIT)
        extra = {
            n.name: f'thermal_zone_file = "{n.dir / "temp"}"\ncpu_freq_file = "{n.dir / "freq"}"\n'
            f"emulate_physics = {_live_physics(n.name)}"
            for n in cluster.nodes
        }
        ctoml = cluster.root / "pis.toml"
        ctoml.write_text(cluster.cluster_toml(ckpt, cpu_quota=0.4, slowdown="stress", host_extra=extra))
        prof = folder / "profile.json"
        cmd = ["--cluster", str(ctoml), "profile", "--out", str(prof), "--samples", "8", "--warmup", "2"]
        assert main(cmd) == 0
        devices = "\n".join(f'[[device]]\nname = "pi{k}"\nprofile_device = "local"' for k in range(1, 5))
        stages = "\n".join(f'[[stage]]\nname = "s{k}"\ndevice = "pi{k + 1}"' for k in range(4))
        arrivals = {
            "a": '[arrivals]\nkind = "poisson"\nrate_hz = 5.0\n',
            "b": '[arrivals]\nkind = "mmpp"\nrates_hz = [3.0, 6.0]\nmean_dwell_s = [8.0, 8.0]\n',
        }
        outs = []
        for name, seed in (("a", 41), ("b", 42)):
            sc = folder / f"{name}.toml"
            sc.write_text(
                LIVE_SCENARIO.format(name=name, seed=seed, devices=devices, stages=stages, arrivals=arrivals[name])
            )
            out = folder / f"run-{name}"
            cmd = ["--cluster", str(ctoml), "run", str(sc), "--out", str(out), "--profile", str(prof), "--no-sim"]
            assert main(cmd) == 0
            outs.append(out)
    finally:
        left = cluster.stop()
    assert not left, f"processes left on the nodes: {left}"
    yield outs[0], outs[1]


@_live_marks
def test_live_calibration_recovers_the_emulated_physics(live_runs: tuple[Path, Path]) -> None:
    """From the timeline alone (power from the measured busy time): tau within 20 % and the steady temperature
    at the run's mean power within 1 C.  One 50 s run with tau 8-10 s pins those; R and the ambient apart it
    does not (standard errors ~10 % and ~3 C; in four runs R came out -37..+17 %, the worst on the throttled pi2,
    so R alone is not asserted here: the 60 s two-policy bench gets it within 1.8 % on unthrottled nodes).  On a
    node the run throttled, tau within 35 %: its busy-time power misses the quota steps between control periods
    (pi2's tau came out -9 % and +27 % in two live runs on a slow host, the second a fresh-clone CI failure at
    20 %)."""
    import polars as pl

    cal = calibrate(live_runs[0])
    exact = calibrate(live_runs[0], power="emulator")  # the emulator's own records: the fit itself is exact
    emulated = pl.read_csv(live_runs[0] / "no-pruning" / "thermal_emulator.csv")
    timeline = pl.read_parquet(live_runs[0] / "no-pruning" / "timeline.parquet")
    for k, node in enumerate(LIVE_TRUE):  # the timeline's power is the emulator's (0.1 % apart in a live run)
        reported_w = float(timeline.filter(pl.col("stage") == f"s{k}")["power_w"].mean() or 0.0)
        assert reported_w == pytest.approx(
            float(emulated.filter(pl.col("node") == node)["power_w"].mean() or 0.0), rel=0.02
        )
    for node, (r, tau) in LIVE_TRUE.items():
        th = {k: f.value for k, f in cal.thermal[node].items()}
        print(node, th)
        mean_w = float(emulated.filter(pl.col("node") == node)["power_w"].mean() or 0.0)
        fitted_c = th["ambient_c"] + th["resistance_c_per_w"] * mean_w
        assert fitted_c == pytest.approx(LIVE_AMBIENT_C + r * mean_w, abs=LIVE_STEADY_ABS_C), node
        throttled = bool((emulated.filter(pl.col("node") == node)["freq_mhz"] < FREQ_MAX_MHZ).any())
        tau_rel = LIVE_TAU_THROTTLED_REL if throttled else LIVE_TAU_REL
        assert th["time_constant_s"] == pytest.approx(tau, rel=tau_rel), (node, throttled)
        assert exact.thermal[node]["resistance_c_per_w"].value == pytest.approx(r, rel=0.01), node
        assert exact.thermal[node]["time_constant_s"].value == pytest.approx(tau, rel=0.01), node


@_live_marks
def test_live_calibration_predicts_another_scenarios_temperatures(live_runs: tuple[Path, Path]) -> None:
    """The held-out MMPP run's temperatures from run A's calibration: RMSE < 3 C (measured 0.67, 0.80, 1.12 C,
    and 2.64 C in a fresh-clone CI run on a host whose speed moved between the runs),
    and pi2 throttled on both sides.  Time throttled, p50, p95 and SLO attainment are reported by
    bench/bench_hil_calibrate.py, not asserted: the host's service speed drifts between runs on the shared
    machine (pi2's measured / profiled service time 1.23 in run A, 1.42 in run B of one live run), and with it
    the load and the heat (time throttled measured +0, +33, +20 % against the prediction)."""
    held = holdout_errors(calibrate(live_runs[0]), live_runs[1])
    e = held["policies"]["no-pruning"]
    print(e)
    assert e["throttled_s"] > 0 and e["throttled_s_predicted"] > 0
    assert e["temp_rmse_c"] < 3.0


def test_an_unknown_holdout_error_is_left_out_of_the_fragment(runs: tuple[Path, Path]) -> None:
    """A held-out error with no figure on one side (``None``: e.g. a p95 that is unfinished) is not TOML."""
    held = {"run": "b", "policies": {"no-pruning": {"p50_latency_s": 1.5, "p95_latency_s": None}}}
    doc = tomllib.loads(calibration_toml(calibrate(runs[0]), held))
    assert doc["calibration"]["holdout"]["policies"]["no-pruning"] == {"p50_latency_s": 1.5}
