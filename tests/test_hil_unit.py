"""HIL pieces that need neither sshd nor torch: the cluster file, frames, schedules, records, imports."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from edgeprune.controller import PipelineCurves
from edgeprune.errors import ConfigError
from edgeprune.records import CPU_TIMELINE, PHYSICS_TIMELINE
from hil.cluster import load_cluster
from hil.protocol import decode_line, encode_frame, encode_line, read_frame_async, read_frame_sock
from hil.records import RunRecorder

CLUSTER = """\
name = "lab"
[coordinator]
listen_address = "10.0.0.1"
[model]
checkpoint = "tiny.pt"
[[host]]
name = "pi1"
address = "10.0.0.11"
python = "/usr/bin/python3"
workdir = "/home/pi/ep"
identity_file = "keys/id"
known_hosts = "keys/known_hosts"
[[host]]
name = "pi2"
address = "10.0.0.12"
python = "/usr/bin/python3"
workdir = "/home/pi/ep"
[[stage]]
name = "s0"
host = "pi1"
[[stage]]
name = "s1"
host = "pi2"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pis.toml"
    p.write_text(text)
    return p


def test_cluster_file_resolves_paths_and_placement(tmp_path: Path) -> None:
    c = load_cluster(_write(tmp_path, CLUSTER))
    assert c.name == "lab"
    assert [h.name for h in c.stage_hosts()] == ["pi1", "pi2"]
    assert c.hosts[0].identity_file == str(tmp_path / "keys" / "id")
    assert c.hosts[0].known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert c.hosts[1].known_hosts.endswith(".ssh/known_hosts")
    assert c.checkpoint_path == tmp_path / "tiny.pt"
    assert c.coordinator.transport == "direct"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('address = "10.0.0.12"', 'adress = "10.0.0.12"', "unknown key (did you mean 'address'?)"),
        ('host = "pi2"', 'host = "pi3"', "stage[1].host = 'pi3': unknown host"),
        ('host = "pi2"', 'host = "pi1"', "one stage worker per node"),
        ('listen_address = "10.0.0.1"', 'transport = "telnet"', "not one of the valid choices"),
        (
            'workdir = "/home/pi/ep"\n[[stage]]',
            'workdir = "/home/pi/ep"\nslowdown = "cgroup"\n[[stage]]',
            "needs cpu_cgroup",
        ),
    ],
)
def test_cluster_file_errors_are_one_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_cluster(_write(tmp_path, CLUSTER.replace(old, new, 1)))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_coordinator_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import hil.cli, hil.coordinator, hil.session, hil.connect, hil.deploy, hil.environment\n"
        "import hil.profiling, hil.compare, hil.records, hil.remote\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_frames_round_trip_without_copy_or_pickle() -> None:
    payload = np.arange(197 * 768, dtype=np.float32).tobytes()
    header = {"id": 7, "kind": "tensor", "shape": [1, 197, 768], "dtype": "float32", "levels": [0, 2]}
    a, b = socket.socketpair()

    def send() -> None:
        for buf in encode_frame(header, payload):
            a.sendall(buf)
        a.shutdown(socket.SHUT_WR)

    with a, b:
        sender = threading.Thread(target=send)
        sender.start()
        got = read_frame_sock(b)
        assert got is not None
        assert got[0] == header
        assert bytes(got[1]) == payload
        assert read_frame_sock(b) is None
        sender.join()

    async def via_asyncio() -> None:
        reader = asyncio.StreamReader()
        for buf in encode_frame(header, payload):
            reader.feed_data(bytes(buf))
        reader.feed_eof()
        frame = await read_frame_async(reader)
        assert frame is not None and frame[0] == header and frame[1] == payload
        assert await read_frame_async(reader) is None

    asyncio.run(via_asyncio())
    assert decode_line(encode_line({"cmd": "level", "level": 3})) == {"cmd": "level", "level": 3}


def test_recorder_builds_the_simulators_schema(case: Path) -> None:
    from edgeprune.scenario import load_scenario
    from sim.runner import curves_for, draw_streams, run_policy

    sc = load_scenario(case)
    streams = draw_streams(sc)
    sim = run_policy(sc, sc.policies[0], streams)
    curves: PipelineCurves = curves_for(sc)
    rec = RunRecorder("p", curves.stage_names, streams.arrivals_s, sc.warmup_s, curves)
    rec.result_arrived(0, float(streams.arrivals_s[0]) + 0.5, [0, 1, 2, 3])
    rec.dropped(1, 2)
    hw = rec.result(slo_s=sc.slo_s, window_end_s=600.0)
    assert hw.requests.schema == sim.requests.schema
    # the simulator's columns, then the physics ones (null: these reports carry no readings) and the CPU times
    assert hw.timeline.columns == [*sim.timeline.columns, *PHYSICS_TIMELINE, *CPU_TIMELINE]
    assert hw.timeline.select(sim.timeline.columns).schema == sim.timeline.schema
    statuses = hw.requests["status"].to_list()
    assert statuses[:3] == ["done", "dropped", "unfinished"]
    assert hw.requests["dropped_at"][1] == "s2"
    assert set(hw.summary) == set(sim.summary)


def test_node_schedule_maps_scenario_devices_to_hosts(case: Path, tmp_path: Path) -> None:
    from edgeprune.scenario import load_scenario
    from hil.environment import node_schedule

    sc = load_scenario(case)  # stages s0..s3 on devices pi1, pi2, pi1, pi2; pi2 slowed 1.6x in [200, 400)
    text = CLUSTER.replace('[[stage]]\nname = "s0"', '[[stage]]\nname = "s0"')
    for i in (3, 4):
        text += f'[[host]]\nname = "n{i}"\naddress = "x"\npython = "p"\nworkdir = "w"\n'
    text += '[[stage]]\nname = "s2"\nhost = "n3"\n[[stage]]\nname = "s3"\nhost = "n4"\n'
    cluster = load_cluster(_write(tmp_path, text))
    changes = [(c.time_s, c.node, c.factor) for c in node_schedule(sc, cluster)]
    assert changes == [(200.0, "n4", 1.6), (200.0, "pi2", 1.6), (400.0, "n4", 1.0), (400.0, "pi2", 1.0)]


@pytest.mark.parametrize("policy", ["no-pruning", "dynamic"])
def test_as_realised_prediction_recovers_the_slowdown_the_hardware_showed(case: Path, policy: str) -> None:
    """Stand-in hardware: the simulator itself with pi2 slowed 2.4x where the scenario states 1.6x.  The
    as-stated prediction misses; the factor is recovered from the run's own timeline, and the as-realised
    prediction matches the run."""
    from dataclasses import replace

    from edgeprune.scenario import load_scenario
    from hil.compare import as_realised, compare, format_compare, realised_factors
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(case)
    streams = draw_streams(sc)
    spec = next(p for p in sc.policies if p.name == policy)
    truth = replace(sc, environment=tuple(replace(ev, slowdown=2.4) for ev in sc.environment))
    hw = run_policy(truth, spec, streams)

    factors = realised_factors(sc, hw)
    assert list(factors) == ["pi1", "pi2"]
    ((t, f),) = factors["pi1"]  # never slowed: one window, service times as profiled (sampling noise only)
    assert t == 0.0 and f == pytest.approx(1.0, rel=0.03)
    (t0, f0), (t1, f1), (t2, f2) = factors["pi2"]
    assert (t0, t1, t2) == (0.0, 200.0, 400.0)
    assert f0 == pytest.approx(1.0, rel=0.05) and f1 == pytest.approx(2.4, rel=0.05)
    assert f2 == pytest.approx(1.0, rel=0.05)

    stated = run_policy(sc, spec, streams)
    realised = run_policy(as_realised(sc, factors), spec, streams)
    doc = compare({policy: hw}, {policy: stated}, sc.slo_s, {policy: realised}, {policy: factors})
    assert not all(doc["policies"][policy]["within_bounds"].values())
    rows = doc["as_realised"]["policies"][policy]
    assert rows["within_bounds"] == {"p50": True, "p95": True, "slo": True}
    assert abs(rows["slo_attainment"]["error"]) < 1.0
    text = format_compare(doc)
    assert f"service-time factors realised under {policy}: pi1 x" in text and "; pi2 x" in text


def test_latency_percentiles_count_unfinished_requests_as_infinitely_late(case: Path) -> None:
    from edgeprune.scenario import load_scenario
    from hil.compare import population_metrics
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(case)
    res = run_policy(sc, sc.policies[0], draw_streams(sc))
    req = res.requests.filter(~pl.col("in_warmup"))
    n = req.height
    # mark the 60% slowest as unfinished: the median is then an unfinished request
    cut = req["latency_s"].sort()[int(0.4 * n)]
    hidden = res.requests.with_columns(
        pl.when(pl.col("latency_s") > cut).then(None).otherwise(pl.col("latency_s")).alias("latency_s")
    )
    m = population_metrics(replace(res, requests=hidden), sc.slo_s)
    assert m["p50_latency_s"] == math.inf
    assert population_metrics(res, sc.slo_s)["p50_latency_s"] == pytest.approx(
        float(req["latency_s"].median()), rel=0.05
    )


@pytest.mark.parametrize("policy", ["no-pruning", "dynamic"])
def test_as_realised_prediction_recovers_a_fixed_overhead_per_request(case: Path, policy: str) -> None:
    """Stand-in hardware: the simulator with pi2 slowed 2.4x (stated 1.6x) and 20 ms more on each of the 3
    hops, time no profile shows.  The overhead is recovered (~60 ms per request, from the requests that
    found the pipeline empty), and the replay that adds it tracks the run request by request."""
    from edgeprune.scenario import LinkSpec, load_scenario
    from hil.compare import as_realised, overhead_per_request_s, realised_factors, with_hop_overhead
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(case)
    streams = draw_streams(sc)
    spec = next(p for p in sc.policies if p.name == policy)
    links = tuple(LinkSpec(after=s.name, bandwidth_mbit_s=1000.0, latency_s=0.0205) for s in sc.stages[:-1])
    truth = replace(sc, environment=tuple(replace(ev, slowdown=2.4) for ev in sc.environment), links=links)
    hw = run_policy(truth, spec, streams)

    replayed_sc = as_realised(sc, realised_factors(sc, hw))
    replayed = run_policy(replayed_sc, spec, streams)
    overhead = overhead_per_request_s(sc, [hw])
    assert overhead is not None and overhead.policies == [policy] and overhead.n >= 20
    overhead_s = overhead.beyond_hops_s  # the scenario's own hops taken out: what the replay must add
    assert overhead_s == pytest.approx(0.060, abs=max(0.006, 3 * overhead.stderr_s))
    assert with_hop_overhead(replayed_sc, 0.0) is replayed_sc
    calibrated = run_policy(with_hop_overhead(replayed_sc, overhead_s), spec, streams)
    both = (
        hw.requests.select("request_id", "arrival_s", "latency_s")
        .join(calibrated.requests.select("request_id", pl.col("latency_s").alias("calibrated")), on="request_id")
        .join(replayed.requests.select("request_id", pl.col("latency_s").alias("replayed")), on="request_id")
        .drop_nulls()
    )
    before = both.filter(pl.col("arrival_s") < 200.0)  # before the slowdown: only the overhead differs
    assert (before["latency_s"] - before["replayed"]).abs().median() == pytest.approx(0.060, abs=0.006)
    assert (before["latency_s"] - before["calibrated"]).abs().median() < 0.003
    relative = ((both["latency_s"] - both["calibrated"]) / both["latency_s"]).abs()
    assert relative.median() < 0.01  # over the whole run, request by request


def test_quota_tracker_reaches_the_stated_factor_on_a_quota_plant() -> None:
    """A saturated node whose services cost 35 ms of CPU plus 10 ms of socket work on the same quota,
    profiled at 90 ms: quota 0.4 / 4 stretches a service to 450 ms, 5x instead of 4x.  The tracker retunes
    the quota to within 4% of 4x in a few updates, never outside its bounds, and stays put once there."""
    from hil.environment import QuotaTracker

    work_cpu_s, profiled_s = 0.045, 0.090

    def service_s(cpus: float) -> float:  # saturated: the node's whole quota goes to its work
        return work_cpu_s / cpus

    assert service_s(0.1) / profiled_s == pytest.approx(5.0)
    tracker = QuotaTracker(target=4.0, cpus=0.1, min_cpus=0.025, max_cpus=0.4)
    cpus, updates = 0.1, 0
    for _ in range(60):  # 30 s of 0.5 s periods, one service per period
        new = tracker.observe(1, service_s(cpus), profiled_s)
        if new is not None:
            assert 0.025 <= new <= 0.4
            cpus, updates = new, updates + 1
    assert service_s(cpus) / profiled_s == pytest.approx(4.0, rel=0.04)
    assert 1 <= updates <= 8
    assert tracker.observe(5, 5 * service_s(cpus), 5 * profiled_s) is None  # on target: no write


def test_idle_overhead_is_the_time_outside_the_services_of_an_idle_chain(case: Path) -> None:
    """Stand-in probe: the simulator with requests far apart (each finds the chain idle) and 15 ms on each of
    the 3 hops beyond the profile's: the probe's overhead is those 45 ms (plus the scenario's own hops)."""
    from edgeprune.scenario import LinkSpec, load_scenario
    from hil.compare import idle_overhead_s
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(case)
    spec = sc.policies[0]  # static, level 0
    links = tuple(LinkSpec(after=s.name, bandwidth_mbit_s=1000.0, latency_s=0.0155) for s in sc.stages[:-1])
    probe_sc = replace(sc, environment=(), links=links)
    from sim.runner import Streams

    quantiles = draw_streams(probe_sc).quantiles[:, :40]
    probe = run_policy(probe_sc, spec, Streams(np.arange(40, dtype=np.float64) * 5.0, quantiles))
    hop_tx_s = sum(sc.profile.activation_bytes[k] * 8 / 1e9 for k in range(3))  # 1 Gbit/s serialisation
    assert idle_overhead_s(probe) == pytest.approx(3 * 0.0155 + hop_tx_s, abs=0.004)


def test_run_refuses_an_oracle_policy_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hardware has no ground truth: a policy that wants an oracle view is refused with one line, exit 2,
    before any connection (the cluster's addresses are never contacted) and with nothing written."""
    from simfixtures import BASE_SCENARIO, write_case

    from hil.cli import main

    sc = write_case(tmp_path / "case", BASE_SCENARIO + '\n[[policy]]\nname = "truth"\nkind = "oracle"\n')
    hosts = "".join(f'[[host]]\nname = "pi{k}"\naddress = "10.0.0.{k}"\npython = "p"\nworkdir = "w"\n' for k in (3, 4))
    stages = "".join(f'[[stage]]\nname = "s{k}"\nhost = "pi{k + 1}"\n' for k in range(4))
    cluster = _write(tmp_path, CLUSTER.split("[[stage]]")[0] + hosts + stages)
    rc = main(["--cluster", str(cluster), "run", str(sc), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "policy[2] = 'truth'" in err[0] and "wants_oracle" in err[0]
    assert not (tmp_path / "out").exists()
