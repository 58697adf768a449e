"""Device-physics input: presets + overrides, and one-line errors naming file, key and value (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.cli.sim import main
from edgeprune.config import Ctx
from edgeprune.errors import ConfigError
from edgeprune.physics import DevicePhysics, device_physics_from_table, load_preset, preset_names
from edgeprune.scenario import load_scenario
from tests.simfixtures import BASE_SCENARIO, write_case

PHYSICS = """name = "pi2"
profile_device = "cpu"

[device.physics]
preset = "rpi4b"

[device.physics.thermal]
resistance_c_per_w = 9.0
"""


@pytest.fixture
def case(tmp_path: Path) -> Path:
    text = BASE_SCENARIO.replace('name = "pi2"\nprofile_device = "cpu"\n', PHYSICS, 1)
    text = text.replace('name = "s3"\ndevice = "pi2"', 'name = "s3"\ndevice = "pi1"')  # a node with physics: one stage
    assert text != BASE_SCENARIO
    return write_case(tmp_path / "case", text)


def test_presets_ship_and_validate() -> None:
    assert {"rpi4b", "rpi5", "generic"} <= set(preset_names())
    for name in preset_names():
        ph = device_physics_from_table({"preset": name}, Ctx("t"))
        assert ph.preset == name
        assert ph.dvfs.freqs_mhz == tuple(float(f) for f in load_preset(name)["dvfs"]["freqs_mhz"])


def test_scenario_with_physics_on_one_device_and_off_on_the_other(case: Path) -> None:
    sc = load_scenario(case)
    pi1, pi2 = sc.devices
    assert pi1.physics is None
    assert isinstance(pi2.physics, DevicePhysics)
    assert pi2.physics.thermal.resistance_c_per_w == 9.0  # the override
    assert pi2.physics.thermal.tau_s == 120.0  # the preset
    assert sc.raw["device"][1]["physics"]["preset"] == "rpi4b"  # written back as given


def test_overriding_capacitance_replaces_the_presets_time_constant() -> None:
    ph = device_physics_from_table({"preset": "rpi4b", "thermal": {"capacitance_j_per_c": 5.0}}, Ctx("t"))
    assert ph.thermal.tau_s == 10.0 * 5.0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "resistance_c_per_w = 9.0",
            "resistance_c_per_w = -1",
            "device[1].physics.thermal.resistance_c_per_w = -1.0: must be > 0",
        ),
        ("resistance_c_per_w = 9.0", "resistance_c_per_w = nan", "thermal.resistance_c_per_w = nan: expected a finite"),
        ("resistance_c_per_w = 9.0", "time_constant_s = -5.0", "thermal.time_constant_s = -5.0: must be > 0"),
        ("resistance_c_per_w = 9.0", "ambient_c = nan", "device[1].physics.thermal.ambient_c = nan"),
        (
            'preset = "rpi4b"',
            'preset = "rpi4"',
            "device[1].physics.preset = 'rpi4': unknown preset (did you mean 'rpi4b'?)",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[device.physics.power]\nidle_w = -2.7',
            "power.idle_w = -2.7: must be >= 0",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[device.physics.power]\nbusy_core_w = [0.9, nan, 0.2, 0.1]',
            "physics.power.busy_core_w[1] = nan: expected a finite number",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[device.physics.dvfs]\nfreqs_mhz = [1500, 750, 1000, 600]',
            "dvfs.freqs_mhz = [1500.0, 750.0, 1000.0, 600.0]: the ladder must be strictly descending",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[device.physics.dvfs]\nthresholds_c = [80, 82, 86]',
            "dvfs.thresholds_c = [80.0, 82.0, 86.0]: threshold 86.0 above hard_limit_c (85.0)",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[[device.physics.tenant]]\ncpu_share = 1.5\nmean_on_s = 5\nmean_off_s = 5',
            "device[1].physics.tenant[0].cpu_share = 1.5: must be <= 1",
        ),
        (
            'preset = "rpi4b"',
            'preset = "rpi4b"\n[[device.physics.tenant]]\ncpu_share = 0.5\nmean_on_s = -5\nmean_off_s = 5',
            "tenant[0].mean_on_s = -5.0: must be > 0",
        ),
        ("resistance_c_per_w = 9.0", "resistence_c_per_w = 9.0", "unknown key (did you mean 'resistance_c_per_w'?)"),
    ],
)
def test_bad_physics_is_one_line_exit_2_no_output(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    text = case.read_text()
    assert old in text
    case.write_text(text.replace(old, new, 1))
    out = tmp_path / "never"
    assert main([str(case), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"edgeprune-sim: error: {case}: device[1].physics."), err
    assert expected in err
    assert not out.exists()


def test_a_physics_table_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^f.toml: device\[0\].physics = 3: expected a table$"):
        device_physics_from_table(3, Ctx("f.toml", "device[0].physics"))
