"""Pruning-aware training: a shortened digits run, checkpoints, resume, config files and the CLI.

The whole file stays well under two minutes on two cores: the margin test trains the tiny ViT twice for a
few epochs (baseline, sandwich-distill); the resume test uses 192 images.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("sklearn")

from edgeprune.errors import ConfigError  # noqa: E402
from models.checkpoint import load_nested  # noqa: E402
from models.train_cli import main as train_main  # noqa: E402
from models.training.config import available_configs, config_path, load_config  # noqa: E402
from models.training.data import TrainData, digits  # noqa: E402
from models.training.loop import MODEL_FILE, STATE_FILE, RunSpec, TrainResult, train  # noqa: E402
from models.training.network import TINY_VIT, TINY_VIT_CFG  # noqa: E402

pytestmark = pytest.mark.torch

SHORT_EPOCHS = 6  # baseline reaches ~0.95 at full width; the margin at the smallest level is already wide
# Measured here (1 thread, seed 0): baseline 0.956 full / 0.829 at ratio 0.6; sandwich-distill (k = 0, i.e.
# full + smallest only, to halve the time) 0.958 / 0.947.


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread, so two test processes can share the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> TrainData:
    size = int(TINY_VIT_CFG["vision_cfg"]["image_size"])
    return digits((size, size))


def _short(strategy: str, **changes: Any) -> RunSpec:
    cfg = load_config(config_path(strategy, "a"))
    cfg = dataclasses.replace(cfg, **{"epochs": SHORT_EPOCHS, "k_random": 0, **changes})
    return RunSpec(TINY_VIT, cfg, f"{strategy}-short", eval_vectors=4, seed=0)


@pytest.fixture(scope="module")
def short_runs(data: TrainData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainResult]:
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for strategy in ("baseline", "sandwich-distill"):
        result = train(_short(strategy), data=data, out=out / strategy)
        assert result is not None
        runs[strategy] = result
    return runs


def test_sandwich_distill_beats_baseline_at_largest_level(short_runs: dict[str, TrainResult]) -> None:
    base, robust = short_runs["baseline"].curve, short_runs["sandwich-distill"].curve
    assert base.uniform[0] > 0.85, "the baseline itself must have learned digits"
    assert robust.uniform[-1] - base.uniform[-1] >= 0.08, (base.uniform, robust.uniform)
    assert robust.uniform[0] >= base.uniform[0] - 0.05


def test_checkpoint_round_trip_same_outputs_at_every_level(short_runs: dict[str, TrainResult], data: TrainData) -> None:
    for result in short_runs.values():
        assert result.out is not None
        loaded = load_nested(result.out / MODEL_FILE)
        assert loaded.partition == result.pipe.partition and loaded.ratios == result.pipe.ratios
        assert loaded.channel_order == result.pipe.channel_order
        images = data.val.images(torch.arange(16))
        n_stages = len(loaded.stage_list)
        vectors = [[lvl] * n_stages for lvl in range(len(loaded.ratios))] + [[0, 6, 3, 1], [5, 0, 2, 6]]
        saved, back = result.pipe.state_dict(), loaded.state_dict()
        body = [k for k in saved if not k.endswith("class_embeddings")]
        assert set(body) == {k for k in back if not k.endswith("class_embeddings")}
        assert all(torch.equal(saved[k], back[k]) for k in body)
        with torch.inference_mode():
            for vec in vectors:
                result.pipe.set_levels(vec)
                loaded.set_levels(vec)
                a, b = result.pipe(images), loaded(images)
                # load_nested re-normalises the saved (normalised) head: ~3e-8 in the head, nothing else
                assert torch.allclose(a, b, rtol=0, atol=1e-5), vec
                assert torch.equal(a.argmax(-1), b.argmax(-1)), vec
        sidecar = json.loads((result.out / "train.json").read_text())
        assert sidecar["metrics"]["uniform"] == list(result.curve.uniform)
        assert sidecar["spec"]["config"]["strategy"] == result.spec.config.strategy


def test_pruning_aware_order_is_kept_and_baseline_is_importance_ordered(short_runs: dict[str, TrainResult]) -> None:
    assert short_runs["sandwich-distill"].pipe.channel_order.source == "identity"
    assert "Importance" in short_runs["baseline"].pipe.channel_order.source


def test_resume_equals_uninterrupted(data: TrainData, tmp_path: Path) -> None:
    small = TrainData(data.train.take(torch.arange(192)), data.val.take(torch.arange(64)), data.class_names, "subset")  # type: ignore[attr-defined]
    cfg = dataclasses.replace(load_config(config_path("sandwich-distill", "a")), epochs=3, augment_shift_px=2)
    spec = RunSpec(TINY_VIT, cfg, "tiny", seed=3, eval_vectors=3)
    whole = train(spec, data=small, out=tmp_path / "whole")
    assert train(spec, data=small, out=tmp_path / "cut", stop_after_epochs=1) is None
    assert (tmp_path / "cut" / STATE_FILE).exists() and not (tmp_path / "cut" / MODEL_FILE).exists()
    resumed = train(spec, data=small, out=tmp_path / "cut", resume=True)
    assert whole is not None and resumed is not None
    a, b = whole.pipe.state_dict(), resumed.pipe.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.curve == resumed.curve
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


def test_shipped_configs_load_and_differ() -> None:
    for strategy, hp in available_configs():
        cfg = load_config(config_path(strategy, hp))
        assert cfg.strategy == strategy
    a, b = (load_config(config_path("sandwich-distill", s)) for s in ("a", "b"))
    assert a != b and a.distill_weight > 0 and a.k_random >= 1


def test_config_unknown_key_names_closest(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('strategy = "sandwich"\nk_randm = 2\n')
    with pytest.raises(ConfigError, match=r"bad.toml: k_randm = 2: unknown key \(did you mean 'k_random'\?\)"):
        load_config(p)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('strategy = "sandwhich"', "did you mean 'sandwich'"),
        ('strategy = "baseline"\nk_random = 2', "k_random = 2: baseline trains the full width only"),
        ('strategy = "sandwich-distill"', "distill_weight = 0.0: sandwich-distill needs a weight > 0"),
        ('strategy = "sandwich"\nepochs = 0', "epochs = 0: must be >= 1"),
        ('strategy = "sandwich"\n[pretrained]\nlr = -1', r"pretrained.lr = -1.0: must be > 0"),
    ],
)
def test_config_validation_errors(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(body + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny-vit", "--dataset", "digits"], "--strategy: required"),
        (["--model", "tiny-vit", "--dataset", "digits", "--strategy", "sandwitch"], "did you mean 'sandwich'"),
        (["--model", "tiny-vit", "--dataset", "digits", "--strategy", "sandwich", "--hparams", "c"], "--hparams"),
        (["--model", "tiny-vit", "--data", "/no/such/dir", "--strategy", "sandwich"], "no such folder"),
        (["--model", "tiny-vit", "--dataset", "digits", "--strategy", "sandwich", "--epochs", "0"], "must be >= 1"),
        (["--model", "tiny-vit", "--dataset", "digits", "--strategy", "baseline", "--k", "2"], "k_random = 2"),
        (["--resume"], "--resume needs --out"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_errors_exit_2_one_line_nothing_written(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = train_main([*argv, "--out", str(out)] if "--resume" not in argv and "--bogus" not in argv else argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert err.startswith("edgeprune-train: error: ") and "Traceback" not in err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("usage: "))  # a usage error's one-line hint
    assert message in lines[0]
    assert not out.exists()


def test_cli_resume_of_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_profile_accuracy_command_scores_a_trained_checkpoint(
    short_runs: dict[str, TrainResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgeprune-profile accuracy --checkpoint RUN --dataset digits` writes the curve into a profile."""
    import json

    from edgeprune.profile import load_profile
    from models.cli import main as profile_main
    from tests.simfixtures import profile_dict

    run = short_runs["sandwich-distill"]
    assert run.out is not None
    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(profile_dict(n_stages=len(run.pipe.stages), accuracy=False)))
    out = tmp_path / "with-acc.json"
    argv = ["accuracy", "--checkpoint", str(run.out), "--dataset", "digits", "--profile", str(lat), "--out", str(out)]
    assert profile_main([*argv, "--random-vectors", "3"]) == 0
    acc = load_profile(out).accuracy
    assert acc is not None and len(acc.per_stage) == 3
    assert acc.uniform == pytest.approx(run.curve.uniform, abs=0.02)
    assert "wrote" in capsys.readouterr().out
