"""``edgeprune-train`` end to end (one short epoch) and the curves command writing a profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("sklearn")

from simfixtures import profile_dict  # noqa: E402

from edgeprune.profile import load_profile  # noqa: E402
from models.train_cli import main as train_main  # noqa: E402
from models.training.curves import main as curves_main  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["--model", "tiny-vit", "--dataset", "digits", "--strategy", "baseline", "--epochs", "1"]
    code = train_main([*argv, "--vectors", "3", "--threads", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def test_train_cli_writes_checkpoint_and_sidecar(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"model.pt", "train.json", "train_state.pt"}
    side = json.loads((run_dir / "train.json").read_text())
    assert side["spec"]["config_name"] == "baseline-a" and side["spec"]["config"]["epochs"] == 1
    assert len(side["metrics"]["uniform"]) == 7 and len(side["metrics"]["per_stage"]) == 3
    assert side["partition"] == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_train_cli_refuses_to_overwrite_and_resumes_a_finished_run(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = ["--model", "tiny-vit", "--dataset", "digits", "--strategy", "baseline", "--out", str(run_dir)]
    assert train_main(again) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert train_main(["--out", str(run_dir), "--resume", "--strategy", "sandwich"]) == 2
    assert "different settings (config, config_name)" in capsys.readouterr().err
    assert train_main(["--out", str(run_dir), "--resume", "--no-progress", "--threads", "1"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_curves_into_profile(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latency = tmp_path / "lat.json"
    raw = profile_dict(4, accuracy=False)
    latency.write_text(json.dumps(raw))
    out = tmp_path / "with-acc.json"
    argv = ["--checkpoint", str(run_dir), "--dataset", "digits", "--profile", str(latency), "--out", str(out)]
    assert curves_main([*argv, "--vectors", "5", "--proxy", "--note", "test"]) == 0
    prof = load_profile(out)
    assert prof.accuracy is not None and prof.accuracy.proxy and len(prof.accuracy.per_stage) == 5
    assert all(len(v) == 4 for v in prof.accuracy.per_stage)
    assert prof.devices.keys() == load_profile(latency).devices.keys()
    three = tmp_path / "three.json"
    three.write_text(json.dumps(profile_dict(3, accuracy=False)))
    assert curves_main(["--checkpoint", str(run_dir), "--dataset", "digits", "--profile", str(three)]) == 2
    err = capsys.readouterr().err
    assert "3 stages, but the checkpoint has 4" in err and err.count("\n") == 1


def test_curves_standalone_then_merge_equals_direct(run_dir: Path, tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"
    latency.write_text(json.dumps(profile_dict(4, accuracy=False)))
    common = ["--checkpoint", str(run_dir), "--dataset", "digits", "--vectors", "3", "--note", "n"]
    assert curves_main([*common, "--profile", str(latency), "--out", str(tmp_path / "direct.json")]) == 0
    assert curves_main([*common, "--out", str(tmp_path / "acc.json")]) == 0
    assert json.loads((tmp_path / "acc.json").read_text())["schema"] == "edgeprune.accuracy"
    merged = tmp_path / "merged.json"
    assert curves_main(["--merge", str(tmp_path / "acc.json"), "--profile", str(latency), "--out", str(merged)]) == 0
    assert load_profile(merged).accuracy == load_profile(tmp_path / "direct.json").accuracy


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _image_folder(root: Path, classes: tuple[str, ...] = ("impala", "warthog", "zebra"), per_class: int = 5) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(("head", "source"), [("zero-shot", "folder"), ("linear", "csv")])
def test_train_cli_clip_model_on_image_folder_and_csv(head: str, source: str, tmp_path: Path) -> None:
    from models.checkpoint import load_nested

    cfg = tmp_path / "tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    folder = _image_folder(tmp_path / "imgs")
    csv = tmp_path / "labels.csv"
    rows = [f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    common = ["--model-config", str(cfg), "--random-init", "--strategy", "sandwich-distill", "--epochs", "1"]
    common += ["--stages", "2", "--head", head, "--vectors", "2", "--no-progress", "--threads", "1"]
    data, out = (folder if source == "folder" else csv), tmp_path / "run"
    assert train_main([*common, "--data", str(data), "--out", str(out)]) == 0
    pipe = load_nested(out / "model.pt")
    head_module = pipe.stage_list[-1].classifier
    assert head_module is not None and head_module.class_names == ("impala", "warthog", "zebra")
    side = json.loads((out / "train.json").read_text())
    assert side["dataset"].endswith("(12 train / 3 validation images, 3 classes)")
    assert side["spec"]["head"] == head and side["partition"] == [[0, 1], [1, 2]]
    with torch.inference_mode():
        pipe.set_levels([0, 6])
        assert pipe(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
