"""`edgeprune-profile` as a user runs it, on a tiny ViT: profiles, partitions, accuracy, and one-line errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("torch_pruning")

from test_models_support import tiny_visual, write_image_folder, write_tiny_config  # noqa: E402

from edgeprune.errors import ModelError  # noqa: E402
from edgeprune.profile import load_profile  # noqa: E402
from models.cli import main  # noqa: E402

pytestmark = pytest.mark.torch
FAST = ["--samples", "3", "--warmup", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: nothing can be found there


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path / "cfg")


def _tiny_latency(tiny_cfg: Path, out: Path, *extra: str) -> list[str]:
    """``edgeprune-profile latency`` of the tiny ViT (random weights, 2 stages, levels 0/0.2/0.5) into ``out``."""
    tiny = ["--model-config", str(tiny_cfg), "--random-init", "--stages", "2", "--levels", "0,0.2,0.5"]
    return ["latency", *tiny, *extra, "--out", str(out), *FAST]


@pytest.fixture
def profile(tmp_path: Path, tiny_cfg: Path) -> Path:
    out = tmp_path / "out" / "tiny.json"
    assert main(_tiny_latency(tiny_cfg, out, "--device-name", "x1,x2", "--threads", "1,1")) == 0
    return out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    # one line of error; a usage error adds at most one line of usage hint
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("usage: ")), lines
    assert lines[0].startswith("edgeprune-profile: error: ")
    return lines[0]


def test_latency_writes_a_profile_the_simulator_loads(profile: Path) -> None:
    p = load_profile(profile)
    assert p.n_stages == 2 and p.blocks == ((0, 2), (2, 4)) and p.ratios == (0.0, 0.2, 0.5)
    assert list(p.devices) == ["x1", "x2"] and p.accuracy is None
    assert p.level_detail == (
        {"heads": 6, "mlp_hidden": 384},
        {"heads": 4, "mlp_hidden": 307},
        {"heads": 3, "mlp_hidden": 192},
    )
    assert p.activation_bytes == (17 * 96 * 4, 32 * 4) and p.input_bytes == 3 * 32 * 32 * 4
    for name, threads in (("x1", 1), ("x2", 1)):
        dev = p.device(name)
        assert dev.meta["threads"] == threads and dev.meta["warmup"] == 1
        assert all(len(dev.latency_s[k][lvl]) == 3 for k in range(2) for lvl in range(3))
        assert dev.switch_s is not None and 0 < dev.switch_s < 0.1  # seconds (µs would read ~3); speed: bench
        assert dev.memory_bytes is not None and all(m > 0 for m in dev.memory_bytes)
        assert len(dev.meta["block_latency_s"]) == 3 and len(dev.meta["block_latency_s"][0]) == 4
    assert p.model["id"] == "tiny-vit" and p.model["weights"] == "random-init"
    assert "accuracy not measured" in p.provenance["notes"]
    assert {"tool", "command", "date", "torch", "cpu", "load_avg_start"} <= set(p.provenance)


def test_append_adds_a_device_to_an_existing_profile(profile: Path, tiny_cfg: Path) -> None:
    assert main(_tiny_latency(tiny_cfg, profile, "--device-name", "pi4b", "--append")) == 0
    assert list(load_profile(profile).devices) == ["x1", "x2", "pi4b"]


def test_partition_from_a_profile(profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "part.json"
    argv = [
        "partition",
        "--profile",
        str(profile),
        "--devices",
        "pi1=1.0,jetson=2.5",
        "--stages",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "bottleneck" in text and "--blocks" in text
    part = json.loads(out.read_text())
    assert part["devices"] == ["pi1", "jetson"] and part["blocks"][0][0] == 0 and part["blocks"][-1][1] == 4
    assert main(["partition", "--profile", str(profile), "--devices", "a=1,b=1,c=1", "--stages", "2"]) == 2
    assert "--stages" in _error_line(capsys)


def test_accuracy_adds_uniform_and_per_stage_curves(profile: Path, tmp_path: Path, tiny_cfg: Path) -> None:
    data = write_image_folder(tmp_path / "imgs")
    out = tmp_path / "with_acc.json"
    argv = [
        "accuracy",
        "--profile",
        str(profile),
        "--data",
        str(data),
        "--model-config",
        str(tiny_cfg),
        "--random-init",
        "--vectors",
        "0,2;2,0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    acc = load_profile(out).accuracy
    assert acc is not None and len(acc.uniform) == 3 and all(0.0 <= a <= 1.0 for a in acc.uniform)
    assert set(acc.per_stage) == {(0, 2), (2, 0)} and "9 images, 3 classes" in acc.dataset
    csv_path = tmp_path / "labels.csv"
    rows = ["path,label"] + [f"imgs/{c}/{i}.png,{c}" for c in ("zebra", "impala") for i in range(3)]
    csv_path.write_text("\n".join(rows) + "\n")
    argv[argv.index("--data") + 1] = str(csv_path)
    assert main(argv) == 0
    acc2 = load_profile(out).accuracy
    assert acc2 is not None and "6 images, 2 classes" in acc2.dataset


def test_zero_shot_accuracy_at_level0_equals_the_unsliced_clip(tmp_path: Path, tiny_cfg: Path) -> None:
    from models.accuracy import accuracy_curve, load_labelled, zero_shot_head
    from models.loading import load_model, register_model_config
    from models.nested import build_nested

    name = register_model_config(tiny_cfg)
    loaded = load_model(name, random_init=True, with_text=True, seed=5)
    data = load_labelled(write_image_folder(tmp_path / "imgs", per_class=4))
    assert loaded.clip is not None and loaded.tokenizer is not None
    head = zero_shot_head(loaded.clip, loaded.tokenizer, data.class_names)
    with torch.inference_mode():
        images = torch.stack(
            [loaded.preprocess(__import__("PIL.Image").Image.open(p).convert("RGB")) for p in data.paths]
        )
        ref_pred = head(loaded.clip.encode_image(images)).argmax(-1)
    expected = float((ref_pred == torch.tensor(data.labels)).float().mean())
    pipe = build_nested(loaded.visual, [(0, 2), (2, 4)], [0.0, 0.5]).eval()
    curve = accuracy_curve(pipe, head, data, loaded.preprocess, progress=False)
    assert curve.uniform[0] == pytest.approx(expected)


def test_nest_then_profile_from_the_checkpoint(tmp_path: Path, tiny_cfg: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    argv = [
        "nest",
        "--model-config",
        str(tiny_cfg),
        "--random-init",
        "--stages",
        "2",
        "--levels",
        "0,0.3",
        "--out",
        str(ckpt),
    ]
    assert main(argv) == 0
    out = tmp_path / "p.json"
    assert main(["latency", "--checkpoint", str(ckpt), "--device-name", "c", "--out", str(out), *FAST]) == 0
    p = load_profile(out)
    assert p.blocks == ((0, 2), (2, 4)) and p.ratios == (0.0, 0.3) and p.model["id"] == "tiny-vit"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--levels", "0.3,0.1"], "--levels"),
        (["--levels", "0,0.99"], "--levels"),
        (["--blocks", "0:2,3:4"], "--blocks"),
        (["--threads", "0"], "--threads"),
        (["--device-name", "a,b,c", "--threads", "1,2"], "--device-name"),
    ],
)
def test_bad_latency_options_exit_2_with_one_line_and_no_file(
    argv: list[str], needle: str, tmp_path: Path, tiny_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never.json"
    base = ["latency", "--model-config", str(tiny_cfg), "--random-init", "--stages", "2", "--out", str(out), *FAST]
    assert main(base + argv) == 2
    assert needle in _error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_hub_id_offline_fails_at_once_with_how_to_provide_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails without trying the network (no name lookup, no connection: nothing to wait for or retry); how
    long it takes beside a plain usage error is printed by ``bench/bench_models.py --hub-offline-only``."""
    tried: list[object] = []

    def no_network(*args: object, **_: object) -> None:
        tried.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    out = tmp_path / "bioclip.json"
    code = main(["latency", "--model", "hf-hub:imageomics/bioclip", "--stages", "4", "--out", str(out), *FAST])
    assert code == 2 and not out.exists() and tried == []
    line = _error_line(capsys)
    assert "hf-hub:imageomics/bioclip" in line and "weights not in" in line
    assert "--weights" in line and "HF_HOME" in line
    assert (
        main(
            [
                "latency",
                "--model",
                "hf-hub:imageomics/bioclip",
                "--random-init",
                "--stages",
                "4",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 2
    )
    assert "model config" in _error_line(capsys)


def test_other_user_errors_are_one_line(tmp_path: Path, profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["latency", "--model", "ViT-B-61", "--random-init", "--stages", "2", "--out", "x.json"], "did you mean"),
        (
            [
                "latency",
                "--model",
                "ViT-B-16",
                "--weights",
                str(tmp_path / "no.pt"),
                "--stages",
                "2",
                "--out",
                "x.json",
            ],
            "--weights",
        ),
        (["latency", "--model", "ViT-B-16", "--stages", "2", "--out", "x.json"], "--random-init"),
        (["latency", "--model", "ViT-B-16", "--random-init"], "--out"),
        (["accuracy", "--profile", str(profile), "--data", str(tmp_path)], "--weights"),
        (["accuracy", "--profile", str(tmp_path / "none.json"), "--data", str(tmp_path)], "not found"),
        (["partition", "--profile", str(profile), "--devices", "pi1=fast"], "--devices"),
        (
            [
                "nest",
                "--model-config",
                str(tmp_path / "missing.json"),
                "--random-init",
                "--stages",
                "2",
                "--out",
                "c.pt",
            ],
            "--model-config",
        ),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert needle in _error_line(capsys), argv
    assert not (Path.cwd() / "x.json").exists()


def test_model_errors_are_edgeprune_errors() -> None:
    from models.loading import load_model

    with pytest.raises(ModelError):
        load_model("ViT-B-16", weights="a.pt", random_init=True)
    assert tiny_visual() is not None
