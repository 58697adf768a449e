"""What a new user hit in `edgeprune-profile accuracy` and the training bench: a level mismatch reported
before anything is loaded, accuracy of another model recorded as a proxy, no bar in a redirected log, and
the bench figure kept out of the tracked docs/."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from test_models_support import write_image_folder, write_tiny_config  # noqa: E402

from edgeprune.profile import load_profile  # noqa: E402
from models.cli import main  # noqa: E402

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parent.parent
FAST = ["--samples", "3", "--warmup", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny config, two nested checkpoints (levels 0,0.5 and 0,0.3) and a profile measured from the first."""
    root = tmp_path_factory.mktemp("newuser")
    cfg = write_tiny_config(root / "cfg")
    paths = {"cfg": cfg, "data": write_image_folder(root / "imgs")}
    for name, levels in (("ckpt", "0,0.5"), ("other", "0,0.3")):
        paths[name] = root / f"{name}.pt"
        argv = ["nest", "--model-config", str(cfg), "--random-init", "--stages", "2", "--levels", levels]
        assert main([*argv, "--out", str(paths[name])]) == 0
    paths["profile"] = root / "p.json"
    argv = ["latency", "--checkpoint", str(paths["ckpt"]), "--device-name", "c", "--out", str(paths["profile"])]
    assert main([*argv, *FAST]) == 0
    return paths


def _refuse_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.accuracy
    import models.checkpoint
    import models.loading

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loaded something before checking the levels")

    for mod, name in (
        (models.checkpoint, "load_nested"),
        (models.loading, "load_model"),
        (models.accuracy, "load_labelled"),
    ):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.parametrize("source", ["--data", "--dataset"])
def test_level_mismatch_is_refused_before_loading_anything(
    made: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    _refuse_loading(monkeypatch)
    data = ["--data", str(made["data"])] if source == "--data" else ["--dataset", "digits"]
    argv = ["accuracy", "--profile", str(made["profile"]), "--checkpoint", str(made["other"]), *data]
    assert main([*argv, "--model-config", str(made["cfg"]), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its levels [0.0, 0.3] differ from" in err, err


@pytest.mark.parametrize("model_id", ["tiny-vit", "ViT-B-16"])
def test_accuracy_of_another_model_is_recorded_as_a_proxy(made: dict[str, Path], tmp_path: Path, model_id: str) -> None:
    raw = json.loads(made["profile"].read_text())
    raw["model"]["id"] = model_id  # the model scored is a tiny-vit: a ViT-B-16 profile only gets a proxy
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(raw))
    out = tmp_path / "acc.json"
    argv = ["accuracy", "--profile", str(profile), "--model-config", str(made["cfg"]), "--data", str(made["data"])]
    assert main([*argv, "--model", "tiny-vit", "--random-init", "--no-progress", "--out", str(out)]) == 0
    acc = load_profile(out).accuracy
    assert acc is not None
    assert acc.proxy is (model_id != "tiny-vit")
    assert ("PROXY: measured on model tiny-vit, not the profile's ViT-B-16" in acc.note) is acc.proxy


def test_profile_writes_no_bar_into_a_pipe(made: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "models.cli", "latency", "--checkpoint", str(made["ckpt"]), "--device-name", "c"]
    cmd += ["--samples", "3", "--warmup", "1", "--out", str(tmp_path / "p.json")]  # bars are on by default
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    assert done.stderr == "", done.stderr
    assert "wrote" in done.stdout


def test_bench_training_figure_goes_under_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench" / "bench_training.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    drawn: list[Path] = []
    monkeypatch.setattr(bench, "summarise", lambda results: [])
    monkeypatch.setattr(bench, "print_table", lambda rows: None)
    monkeypatch.setattr(bench, "checks", lambda rows: [])
    monkeypatch.setattr(bench, "chart", lambda rows, path: drawn.append(path))
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"runs": []}))
    assert bench.main(["--from-json", str(raw), "--out-dir", str(tmp_path / "o")]) == 0
    assert bench.main(["--from-json", str(raw)]) == 0
    assert drawn == [tmp_path / "o" / "fig4-accuracy.png", Path("runs/bench-training/fig4-accuracy.png")]
