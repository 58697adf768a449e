"""Nodes report their physics: the readings' parsers, the probe, the energy estimate and the recorder's
columns and summary (no cluster needed; the local-cluster run is in test_hil_run.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.config import Ctx
from edgeprune.controller import Observation, PipelineCurves
from edgeprune.errors import ConfigError, ProtocolError
from edgeprune.physics import (
    MeasuredNode,
    device_physics_from_table,
    measured_power_w,
    node_power_w,
    physics_summary,
)
from hil.cluster import load_cluster
from hil.protocol import check_event
from hil.readings import (
    NodeProbe,
    cpuacct_usage_file,
    parse_cpuacct_s,
    parse_khz_mhz,
    parse_millidegrees_c,
    parse_proc_stat_busy_s,
    parse_throttled,
    parse_watts,
)
from hil.records import RunRecorder, stage_obs

GENERIC = device_physics_from_table({"preset": "generic"}, Ctx("t"))  # ladder 1000/800/600/400 MHz, 4 cores


def test_parsers_read_what_the_node_exposes_and_none_otherwise() -> None:
    assert parse_millidegrees_c("48312\n") == pytest.approx(48.312)
    assert parse_khz_mhz("1500000\n") == 1500.0
    assert parse_throttled("throttled=0x50005\n") is True  # bit 2 set: currently throttled
    assert parse_throttled("throttled=0x50000") is False  # only "has occurred" bits
    assert parse_cpuacct_s("2500000000\n") == 2.5
    assert parse_watts("reading...\n4.25 W\n") == 4.25
    stat = "cpu  100 20 30 400 50 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8\nintr 1\n"
    assert parse_proc_stat_busy_s(stat, 100.0) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / 100.0)
    for bad in ("", "n/a", "nan", "inf\n"):
        assert parse_millidegrees_c(bad) is None and parse_khz_mhz(bad) is None and parse_cpuacct_s(bad) is None
    assert parse_khz_mhz("0") is None and parse_watts("-1") is None and parse_watts("") is None
    assert parse_throttled("error: VCHI init failed") is None and parse_throttled("throttled=0xZZ") is None
    assert parse_proc_stat_busy_s("intr 1 2 3\n", 100.0) is None


def test_probe_reads_files_the_cluster_names_and_counts_cpu_per_period(tmp_path: Path) -> None:
    thermal, freq, stat = tmp_path / "temp", tmp_path / "freq", tmp_path / "stat"
    thermal.write_text("61500\n")
    freq.write_text("750000\n")
    stat.write_text("cpu  100 0 0 900 0 0 0 0\n")
    own = iter([1.0, 1.5, 1.5])  # the worker's own CPU seconds at start, first and second read
    probe = NodeProbe(
        str(thermal), str(freq), meter_command="echo 3.5", own_cpu_s=lambda: next(own), proc_stat=str(stat)
    )
    stat.write_text("cpu  300 0 0 1000 0 0 0 0\n")  # 2 s of CPU on the node (100 ticks/s assumed below)
    first = probe.read()
    assert first["temp_c"] == 61.5 and first["freq_mhz"] == 750.0 and first["power_w"] == 3.5
    assert first["cpu_stage_s"] == 0.5
    assert first["cpu_other_s"] == pytest.approx(200 / probe.ticks_hz - 0.5)
    assert first["throttled"] is None or sys.platform == "linux"  # vcgencmd only where installed
    thermal.unlink()
    freq.write_text("garbage")
    second = probe.read()  # nothing more used; unreadable files are unknown, never an error
    assert second["temp_c"] is None and second["freq_mhz"] is None
    assert second["cpu_stage_s"] == 0.0 and second["cpu_other_s"] == 0.0
    quiet = NodeProbe("/nonexistent/temp", "", meter_command="exit 3", proc_stat="/nonexistent/stat")
    assert {k: v for k, v in quiet.read().items() if k != "cpu_stage_s"} == {
        "temp_c": None,
        "freq_mhz": None,
        "throttled": quiet.read()["throttled"],
        "cpu_other_s": None,
        "power_w": None,
    }


def test_cpuacct_counter_found_beside_a_separate_cpu_hierarchy(tmp_path: Path) -> None:
    cpu, acct = tmp_path / "cpu" / "node1", tmp_path / "cpuacct" / "node1"
    cpu.mkdir(parents=True)
    assert cpuacct_usage_file(str(cpu)) == "" and cpuacct_usage_file("") == ""
    acct.mkdir(parents=True)
    (acct / "cpuacct.usage").write_text("1000000000\n")
    assert cpuacct_usage_file(str(cpu)) == str(acct / "cpuacct.usage")
    (cpu / "cpuacct.usage").write_text("5\n")  # cpu,cpuacct mounted together: the folder's own counter
    assert cpuacct_usage_file(str(cpu)) == str(cpu / "cpuacct.usage")


def test_measured_power_is_the_models_power_at_the_measured_frequency_and_utilisation() -> None:
    for step, f_mhz in enumerate(GENERIC.dvfs.freqs_mhz):  # every core busy at a ladder step: the model's figure
        assert measured_power_w(GENERIC, f_mhz, 4.0) == pytest.approx(node_power_w(GENERIC, step, True))
    assert measured_power_w(GENERIC, 900.0, 1.0) == pytest.approx(2.0 + 0.9)  # between 1.0 W and 0.8 W per core
    assert measured_power_w(GENERIC, math.nan, 0.5) == pytest.approx(2.0 + 0.5)  # unknown f: the top step
    assert measured_power_w(GENERIC, 1000.0, 9.0) == pytest.approx(2.0 + 4.0)  # capped at the node's cores
    assert measured_power_w(GENERIC, 100.0, 1.0) == pytest.approx(2.0 + 0.4)  # below the ladder: its lowest step


def test_measured_node_energy_from_model_or_meter_and_throttle_state() -> None:
    node = MeasuredNode(GENERIC)
    assert node.add(0.5, 70.0, 1000.0, None, 1.0, math.nan) == (pytest.approx(3.0), 0.0)
    assert node.add(0.5, 80.0, 800.0, None, 2.0, math.nan) == (pytest.approx(3.6), 1.0)  # below the top: throttled
    assert node.add(0.5, 75.0, 800.0, False, 2.0, 5.0) == (5.0, 0.0)  # the meter and the node's own flag win
    fig = node.figures()
    assert fig.energy_j == pytest.approx(0.5 * (3.0 + 3.6 + 5.0))
    assert (fig.peak_temp_c, fig.throttled_s) == (80.0, 0.5)
    assert fig.time_at_freq_s == {1000.0: 0.5, 800.0: 1.0}
    bare = MeasuredNode(None)  # no power model, no meter: power and energy unknown; no flag: throttle unknown
    assert all(math.isnan(v) for v in bare.add(1.0, 50.0, 1200.0, None, 1.0, math.nan))
    summary = physics_summary([bare.figures()], completed=10, end_s=1.0)
    assert summary["energy_j"] is None and summary["energy_per_inference_j"] is None
    assert summary["throttled_s"] is None and summary["peak_temp_c"] == 50.0
    both = physics_summary([fig, bare.figures()], completed=3, end_s=1.5)  # energy over the nodes that know it
    assert both["energy_j"] == pytest.approx(fig.energy_j) and both["mean_power_w"] == pytest.approx(fig.energy_j / 1.5)
    assert both["time_at_freq_s"] == {"1200": 1.0, "1000": 0.5, "800": 1.0}


def _report(level: int, **node: Any) -> dict[str, Any]:
    base = {"level": level, "queue_len": 0, "busy": False, "arrivals": 2, "served": 2, "busy_s": 0.2}
    return {**base, "nominal_s": 0.2, "dropped": 0, "switches": 0, "dropped_ids": [], **node}


def test_recorder_puts_node_readings_in_the_simulators_physics_columns_and_summary() -> None:
    lat = ((0.1, 0.05), (0.1, 0.05))
    curves = PipelineCurves((0.0, 0.5), lat, lat, (0.0,), 0.0, 1.0, None, stage_names=("s0", "s1"))
    rec = RunRecorder("p", ("s0", "s1"), np.array([0.1, 0.2]), 0.0, curves, (GENERIC, None))
    for t_s, temp in ((0.5, 70000), (1.0, 82000)):
        reports = [
            _report(0, temp_c=temp / 1000, freq_mhz=800.0, throttled=None, cpu_stage_s=0.25, cpu_other_s=0.25),
            _report(0, temp_c=None, freq_mhz=None, throttled=True, cpu_stage_s=0.1, cpu_other_s=None, power_w=None),
        ]
        stages = tuple(stage_obs(r, n) for r, n in zip(reports, rec.nodes, strict=True))
        rec.period(Observation(t_s, 0.5, 2, stages), (0, 0), reports)
    assert stages[0].temp_c == 82.0 and stages[0].throttled and stages[1].throttled and math.isnan(stages[1].temp_c)
    result = rec.result(slo_s=1.0, window_end_s=1.0)
    tl = result.timeline
    s0, s1 = tl.filter(tl["stage"] == "s0"), tl.filter(tl["stage"] == "s1")
    assert s0["temp_c"].to_list() == [70.0, 82.0] and s0["freq_mhz"].to_list() == [800.0, 800.0]
    assert s0["power_w"].to_list() == pytest.approx([2.0 + 0.8] * 2)  # one busy core at 800 MHz
    assert s0["throttled"].to_list() == [True, True] and s1["throttled"].to_list() == [True, True]
    assert s1["temp_c"].null_count() == 2 and s1["power_w"].null_count() == 2 and s1["cpu_other_s"].null_count() == 2
    assert s1["cpu_stage_s"].to_list() == [0.1, 0.1]
    summary = result.summary
    assert summary["energy_j"] == pytest.approx(2 * 0.5 * 2.8)  # only s0's node has a power model
    assert summary["peak_temp_c"] == 82.0 and summary["throttled_s"] == pytest.approx(2.0)
    assert summary["time_at_freq_s"] == {"800": 1.0}


def test_an_emulated_nodes_timeline_power_is_the_emulators() -> None:
    """On a node whose physics the coordinator emulates, the timeline's power is the emulator's power for the
    same period (its busy fraction from the serving time, not the capped cgroup's CPU time), at every step."""
    from hil.thermal_emulator import EmulatorState

    lat = ((0.1, 0.05), (0.1, 0.05))
    curves = PipelineCurves((0.0, 0.5), lat, lat, (0.0,), 0.0, 1.0, None, stage_names=("s0", "s1"))
    rec = RunRecorder("p", ("s0", "s1"), np.array([0.1]), 0.0, curves, (GENERIC, GENERIC), (0.4, None))
    expected = []
    for step, busy_s in ((0, 0.4), (1, 0.3), (2, 0.5)):
        reports = [
            {**_report(0, freq_mhz=GENERIC.dvfs.freqs_mhz[step], cpu_stage_s=0.1, cpu_other_s=0.02), "busy_s": busy_s},
            _report(0, freq_mhz=1000.0, cpu_stage_s=0.1, cpu_other_s=0.02),
        ]
        stages = tuple(stage_obs(r, n) for r, n in zip(reports, rec.nodes, strict=True))
        rec.period(Observation(0.5 * (step + 1), 0.5, 1, stages), (0, 0), reports)
        emulator = EmulatorState(GENERIC, 0.4)
        emulator.step = step
        expected.append(emulator.advance(0.5, 0.12, 0.5, busy_s, 0.1)[1])
    tl = rec.result(slo_s=1.0, window_end_s=1.5).timeline
    emulated, plain = tl.filter(tl["stage"] == "s0"), tl.filter(tl["stage"] == "s1")
    assert emulated["power_w"].to_list() == pytest.approx(expected, rel=1e-12)
    assert expected[0] > measured_power_w(GENERIC, 1000.0, 0.12 / 0.5)  # the CPU time alone understates it
    assert plain["power_w"].to_list() == pytest.approx([measured_power_w(GENERIC, 1000.0, 0.12 / 0.5)] * 3)


def test_reports_with_malformed_readings_are_refused() -> None:
    good = {"event": "report", **_report(0, temp_c=50.5, throttled=False, power_w=3)}
    assert check_event(good) is good
    for key, bad in (("temp_c", "hot"), ("freq_mhz", math.nan), ("throttled", 1), ("power_w", True)):
        with pytest.raises(ProtocolError, match=f"report event field {key}"):
            check_event({**good, key: bad})


CLUSTER = """\
[model]
checkpoint = "tiny.pt"
[[host]]
name = "pi1"
address = "10.0.0.11"
python = "/usr/bin/python3"
workdir = "/home/pi/ep"
{extra}
[[stage]]
name = "s0"
host = "pi1"
"""


def test_cluster_file_names_node_files_power_model_and_meter(tmp_path: Path) -> None:
    path = tmp_path / "pis.toml"
    path.write_text(CLUSTER.format(extra='physics = { preset = "rpi4b" }\npower_meter_command = "cat /run/watts"'))
    host = load_cluster(path).hosts[0]
    assert host.thermal_zone_file == "/sys/class/thermal/thermal_zone0/temp"
    assert host.cpu_freq_file == "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"
    assert host.physics is not None and host.physics.preset == "rpi4b" and host.power_meter_command == "cat /run/watts"
    bad = {
        'thermal_zone_file = "temp"': "host[0].thermal_zone_file = 'temp': must be an absolute path on the node",
        'physics = { preset = "rpi3" }': "host[0].physics.preset = 'rpi3': unknown preset (did you mean 'rpi5'",
        'cpu_freq_fil = "/x"': "did you mean 'cpu_freq_file'",
        'power_meter_command = "a\\nb"': "host[0].power_meter_command",
    }
    for extra, message in bad.items():
        path.write_text(CLUSTER.format(extra=extra))
        with pytest.raises(ConfigError) as err:
            load_cluster(path)
        assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
