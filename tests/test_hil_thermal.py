"""The thermal emulator (``hil.thermal_emulator``) against a fake cgroup, and its cluster-file keys.

The loop test drives :meth:`NodeEmulator.run` with a fake clock: at each governor instant the test advances
the fake ``cpuacct.usage`` counter by the CPU time it chose (a busy fraction of the node's current quota),
then checks the temperature against the RC closed form written out here, and the quota and reading files
against the frequency step the governor must have chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from pathlib import Path

import pytest

from edgeprune.config import Ctx
from edgeprune.errors import ConfigError, HilError
from edgeprune.physics import device_physics_from_table, govern
from hil.cluster import HostSpec, load_cluster
from hil.thermal_emulator import EmulatorState, LocalIO, NodeEmulator, RunClock, emulation_csv, usage_files

PERIOD_US = 10_000
BASE_CPUS = 0.4
R, TAU, AMB, START = 12.0, 20.0, 25.0, 57.4  # the rpi4b preset with a short tau (assumption, as in the docs)


def _phys():
    table = {
        "preset": "rpi4b",
        "thermal": {"resistance_c_per_w": R, "time_constant_s": TAU, "ambient_c": AMB, "initial_c": START},
    }
    return device_physics_from_table(table, Ctx("test"))


def _fake_node(root: Path) -> HostSpec:
    cpu = root / "cpu" / "pi1"
    acct = root / "cpuacct" / "pi1"
    cpu.mkdir(parents=True)
    acct.mkdir(parents=True)
    (cpu / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (acct / "cpuacct.usage").write_text("0\n")
    return HostSpec(
        name="pi1",
        address="127.0.0.1",
        python="python3",
        workdir=str(root),
        cpu_cgroup=str(cpu),
        cpu_quota=BASE_CPUS,
        thermal_zone_file=str(root / "temp"),
        cpu_freq_file=str(root / "freq"),
        emulate_physics=_phys(),
    )


class _Stop(Exception):
    pass


def _drive(host: HostSpec, utils: list[float]) -> tuple[NodeEmulator, list[dict[str, float]]]:
    """Run the emulator over ``len(utils)`` governor periods; per period the files seen at its start."""
    phys = host.emulate_physics
    assert phys is not None
    emu = NodeEmulator("pi1", EmulatorState(phys, BASE_CPUS), LocalIO(host))
    cg = Path(host.cpu_cgroup)
    usage = Path(usage_files(host.cpu_cgroup)[1])
    clock = {"now": 0.0, "n": 0}
    seen: list[dict[str, float]] = []

    async def sleep_until(t_s: float) -> None:
        n = clock["n"]
        if n == len(utils):
            raise _Stop
        seen.append(
            {
                "quota_us": int((cg / "cpu.cfs_quota_us").read_text()),
                "temp_mc": int(Path(host.thermal_zone_file).read_text()),
                "freq_khz": int(Path(host.cpu_freq_file).read_text()),
            }
        )
        # the node is busy a fraction utils[n] of its CPU quota in effect over this period
        cpus = BASE_CPUS * (phys.dvfs.freqs_mhz[emu.state.step] / phys.dvfs.freqs_mhz[0]) ** phys.dvfs.alpha
        used_ns = int(usage.read_text()) + round(utils[n] * (t_s - clock["now"]) * cpus * 1e9)
        usage.write_text(f"{used_ns}\n")
        clock["now"], clock["n"] = t_s, n + 1

    with pytest.raises(_Stop):
        asyncio.run(emu.run(RunClock(lambda: clock["now"], sleep_until)))
    return emu, seen


def test_emulator_follows_the_rc_closed_form_and_sets_the_quota_per_step(tmp_path: Path) -> None:
    host = _fake_node(tmp_path)
    phys = host.emulate_physics
    assert phys is not None
    utils = [0.9] * 60 + [0.05] * 60  # heat past 80 C, then cool below the hysteresis band
    emu, seen = _drive(host, utils)
    assert len(emu.records) == len(utils)
    temp, step = START, 0
    h = phys.dvfs.period_s
    steps = []
    for n, u in enumerate(utils):
        f = phys.dvfs.freqs_mhz[step]
        assert seen[n]["quota_us"] == round(BASE_CPUS * (f / phys.dvfs.freqs_mhz[0]) ** 0.95 * PERIOD_US)
        assert seen[n]["temp_mc"] == round(temp * 1000)
        assert seen[n]["freq_khz"] == round(f * 1000)
        power = 2.7 + u * 4 * phys.power.busy_core_w[step]  # idle + u x 4 busy cores at this step
        t_ss = AMB + R * power
        temp = t_ss + (temp - t_ss) * math.exp(-h / TAU)
        rec = emu.records[n]
        assert rec.util == pytest.approx(u, rel=1e-6)
        assert rec.power_w == pytest.approx(power, rel=1e-6)
        assert rec.temp_c == pytest.approx(temp, abs=1e-6)
        step = govern(phys.dvfs, step, temp)
        assert rec.freq_mhz == phys.dvfs.freqs_mhz[step]
        steps.append(step)
    assert max(steps[:60]) > 0, "the loaded node must throttle"
    assert steps[-1] == 0, "the idle node must recover the top frequency"
    # a period counts as throttled when the step in effect over it (chosen at its start) was below the top
    assert emu.state.throttled_s == pytest.approx(sum(h for s in [0, *steps[:-1]] if s > 0))
    text = emulation_csv([emu])
    assert text.splitlines()[0] == "time_s,node,cpu_s,serving_s,stage_cpu_s,util,power_w,temp_c,freq_mhz,quota_cpus"
    assert len(text.splitlines()) == len(utils) + 1


def test_busy_fraction_is_the_serving_time_plus_the_rest_of_the_nodes_cpu() -> None:
    """A node kept waiting for a host CPU: its stage served 70 % of the period but used only 45 % of the
    quota in CPU time.  The stage counts by its serving time (a Pi's cores run the whole service), the rest of
    the node (here 20 % of the quota: a co-located load) by its CPU time; without reports, the CPU time alone."""
    state = EmulatorState(_phys(), BASE_CPUS)
    util, power = state.advance(1.0, 0.65 * BASE_CPUS, 1.0, serving_s=0.7, stage_cpu_s=0.45 * BASE_CPUS)
    assert util == pytest.approx(0.9) and power == pytest.approx(2.7 + 0.9 * 4 * 0.925)
    assert state.advance(2.0, 0.3 * BASE_CPUS, 1.0)[0] == pytest.approx(0.3)  # no reports in this period
    assert state.advance(3.0, 0.0, 1.0, serving_s=3.0)[0] == 1.0  # capped
    # the stage's reported CPU time may run ahead of the cgroup's in one period: not clipped on its own
    # (that would bias the heat upwards), only the total is
    assert state.advance(4.0, 0.3 * BASE_CPUS, 1.0, serving_s=0.5, stage_cpu_s=0.4 * BASE_CPUS)[0] == pytest.approx(0.4)


def test_emulator_takes_the_reports_since_its_last_period(tmp_path: Path) -> None:
    host = _fake_node(tmp_path)
    phys = host.emulate_physics
    assert phys is not None
    emu = NodeEmulator("pi1", EmulatorState(phys, BASE_CPUS), LocalIO(host))
    clock = {"now": 0.0, "n": 0}

    async def sleep_until(t_s: float) -> None:
        if clock["n"] == 3:
            raise _Stop
        if clock["n"] != 2:  # no report reaches the third period
            emu.add_serving(0.3, None)  # two control periods' reports per governor period
            emu.add_serving(0.3 if clock["n"] == 0 else 0.1, None)
        clock["now"], clock["n"] = t_s, clock["n"] + 1

    with pytest.raises(_Stop):
        asyncio.run(emu.run(RunClock(lambda: clock["now"], sleep_until)))
    assert [r.serving_s for r in emu.records][:2] == pytest.approx([0.6, 0.4])
    assert math.isnan(emu.records[2].serving_s)
    assert [r.util for r in emu.records] == pytest.approx([0.6, 0.4, 0.0])  # no CPU used here


def test_emulator_steps_every_tick_after_its_reports_and_governs_at_its_own_instants(tmp_path: Path) -> None:
    """At every control tick the step waits for the tick's reports, which the coordinator hands over only
    after its report round-trip (stepping without them, about half the instants heated without the last
    control period's serving, whichever task the loop woke first); the coordinator then reads the node once
    the tick is stepped, as the simulator's tick does.  The temperature is integrated to every tick (a tick
    between two governor instants read one governor period old before), while the governor decides only at
    its own instants: the frequency can change only there."""
    host = _fake_node(tmp_path)
    phys = host.emulate_physics
    assert phys is not None
    emu = NodeEmulator("pi1", EmulatorState(phys, BASE_CPUS), LocalIO(host))
    emu.state.temp_c = phys.dvfs.thresholds_c[0] - 0.5  # just under the first threshold: a busy node crosses it
    period_s = phys.dvfs.period_s
    tick_s = period_s / 2
    clock = {"now": 0.0}
    seen: list[tuple[float, float, float]] = []

    async def sleep_until(t_s: float) -> None:  # the emulator's clock is always already there
        clock["now"] = t_s
        await asyncio.sleep(0)

    async def coordinator() -> None:
        for n in range(1, 7):
            t_s = n * tick_s
            await asyncio.sleep(0.01)  # the workers' reports come back after the emulator woke
            emu.add_serving(tick_s, None, t_s)  # busy throughout
            assert await emu.stepped_to(t_s, timeout_s=5.0)
            seen.append((t_s, emu.state.t_s, emu.state.temp_c))

    async def main() -> None:
        task = asyncio.create_task(emu.run(RunClock(lambda: clock["now"], sleep_until, tick_s)))
        await coordinator()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [r.time_s for r in emu.records[:6]] == pytest.approx([n * tick_s for n in range(1, 7)])
    assert [r.serving_s for r in emu.records[:6]] == pytest.approx([tick_s] * 6)  # each step its own tick's
    assert all(t == pytest.approx(stepped) for t, stepped, _ in seen) and len(seen) == 6
    temps = [temp for _, _, temp in seen]
    assert all(abs(b - a) > 1e-6 for a, b in itertools.pairwise(temps))  # a fresh reading every tick
    assert temps[1] > temps[0]  # heating until the governor steps down at its instant
    freqs = [r.freq_mhz for r in emu.records[:6]]
    for k in range(0, 6, 2):  # a tick between governor instants keeps the step the last instant chose
        assert freqs[k] == (freqs[k - 1] if k else phys.dvfs.freqs_mhz[0])
    assert min(freqs) < phys.dvfs.freqs_mhz[0]  # and the node did throttle, at a governor instant


def test_an_emulator_waiting_for_reports_stops_when_cancelled(tmp_path: Path) -> None:
    """Cancelled in the same loop turn as a report wakes it (how a run ends: the coordinator hands over the
    last reports, then cancels its tasks), the emulator stops; ``asyncio.wait_for`` on Python 3.11 can
    swallow such a cancellation, and the run then hung in its clean-up."""
    host = _fake_node(tmp_path)
    phys = host.emulate_physics
    assert phys is not None
    emu = NodeEmulator("pi1", EmulatorState(phys, BASE_CPUS), LocalIO(host))
    tick_s = phys.dvfs.period_s / 2

    async def sleep_until(t_s: float) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        task = asyncio.create_task(emu.run(RunClock(lambda: 0.0, sleep_until, tick_s)))
        await asyncio.sleep(0.05)  # waiting for the first shared instant's reports
        emu.add_serving(0.1, None, tick_s)  # wakes it, not yet through the instant
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)

    asyncio.run(main())


def test_idle_node_never_throttles(tmp_path: Path) -> None:
    emu, seen = _drive(_fake_node(tmp_path), [0.02] * 60)
    assert all(r.freq_mhz == 1500.0 for r in emu.records)
    assert {s["quota_us"] for s in seen} == {round(BASE_CPUS * PERIOD_US)}
    assert emu.state.throttled_s == 0.0


def test_usage_file_candidates() -> None:
    assert usage_files("/sys/fs/cgroup/cpu/x") == (
        "/sys/fs/cgroup/cpu/x/cpuacct.usage",
        "/sys/fs/cgroup/cpuacct/x/cpuacct.usage",
    )
    assert usage_files("/sys/fs/cgroup/cpu,cpuacct/x") == ("/sys/fs/cgroup/cpu,cpuacct/x/cpuacct.usage",)


_CLUSTER = """
[model]
checkpoint = "x.pt"
[[host]]
name = "pi1"
address = "127.0.0.1"
python = "python3"
workdir = "/tmp"
{host}
[[stage]]
name = "s0"
host = "pi1"
"""


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            'emulate_physics = { preset = "rpi4x" }',
            "host[0].emulate_physics.preset = 'rpi4x': unknown preset (did you mean 'rpi4b'?)",
        ),
        ('emulate_physics = { preset = "rpi4b" }', "host[0].emulate_physics = '{...}': needs cpu_cgroup"),
        (
            'cpu_cgroup = "/x"\nemulate_physics = { preset = "rpi4b" }',
            "host[0].cpu_quota = 0.0: must be > 0 with emulate_physics",
        ),
        (
            'cpu_cgroup = "/x"\ncpu_quota = 0.4\nslowdown = "cgroup"\nemulate_physics = { preset = "rpi4b" }',
            "host[0].slowdown = 'cgroup': the thermal emulator owns the CPU quota",
        ),
        (
            'cpu_cgroup = "/x"\ncpu_quota = 0.4\n'
            'emulate_physics = { preset = "rpi4b", tenant = [{ cpu_share = 0.5, mean_on_s = 1, mean_off_s = 1 }] }',
            "host[0].emulate_physics.tenant = '[...]': simulated tenants cannot be emulated",
        ),
        (
            'cpu_cgroup = "/x"\ncpu_quota = 0.4\nemulate_physics = { preset = "rpi4b" }',
            "host[0].thermal_zone_file = '/sys/class/thermal/thermal_zone0/temp': an emulated node needs its own file",
        ),
    ],
)
def test_cluster_file_errors_are_one_line(tmp_path: Path, host: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_CLUSTER.format(host=host))
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert message in text


def test_emulated_host_slows_down_by_stress_not_by_its_quota(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    files = 'thermal_zone_file = "/x/temp"\ncpu_freq_file = "/x/freq"\n'
    path.write_text(
        _CLUSTER.format(host=files + 'cpu_cgroup = "/x"\ncpu_quota = 0.4\nemulate_physics = { preset = "rpi4b" }')
    )
    host = load_cluster(path).hosts[0]
    assert host.emulate_physics is not None and host.emulate_physics.preset == "rpi4b"
    assert host.slowdown_method == "stress"
    assert host.power_model is host.emulate_physics  # its energy is estimated with the emulated physics


class _BrokenIO:
    """A node whose cgroup vanished after the start: the usage read fails at the first governor instant."""

    def __init__(self) -> None:
        self.reads = 0

    async def period_us(self) -> int:
        return PERIOD_US

    async def usage_s(self) -> float:
        self.reads += 1
        if self.reads > 1:
            raise HilError("pi2: thermal emulator: cannot read cpuacct.usage")
        return 0.0

    async def publish(self, quota_us: int, temp_c: float, freq_mhz: float) -> None:
        return None


def test_an_emulator_failure_ends_the_run_and_stops_the_other_emulators(tmp_path: Path) -> None:
    from hil.cluster import CoordinatorSpec
    from hil.coordinator import _unless_failed
    from hil.environment import Environment

    host = _fake_node(tmp_path)
    assert host.emulate_physics is not None
    env = Environment([], CoordinatorSpec(), "t")
    healthy = NodeEmulator("pi1", EmulatorState(host.emulate_physics, BASE_CPUS), LocalIO(host))
    broken = NodeEmulator("pi2", EmulatorState(host.emulate_physics, BASE_CPUS), _BrokenIO())
    env.emulators = [healthy, broken]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def sleep_until(t_s: float) -> None:
            await asyncio.sleep(max(0.0, t0 + t_s * 0.01 - loop.time()))  # governor periods of 10 ms

        guard = asyncio.create_task(env.emulate(RunClock(lambda: loop.time() - t0, sleep_until)))
        never = asyncio.get_running_loop().create_future()  # the feeder of a run that would not end by itself
        with pytest.raises(HilError, match="pi2: thermal emulator"):
            await asyncio.wait_for(_unless_failed(never, guard), 10)
        assert never.cancelled()
        n = len(healthy.records)
        await asyncio.sleep(0.05)
        assert len(healthy.records) == n  # the healthy node's emulator was stopped with it

    asyncio.run(scenario())
    assert {e["node"] for e in env.log if e["how"] == "thermal emulator"} == {"pi1", "pi2"}
