"""models/: slicing, nested levels, torch-pruning export, channel order and checkpoints on a tiny ViT."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("torch_pruning")

from test_models_support import RATIOS, tiny_visual  # noqa: E402

from edgeprune.errors import ModelError  # noqa: E402
from models.blocks import NestedBlock  # noqa: E402
from models.checkpoint import load_nested, save_nested  # noqa: E402
from models.export import export_dense_stage, parameter_bytes  # noqa: E402
from models.levels import ladder  # noqa: E402
from models.nested import build_nested, restage  # noqa: E402
from models.ordering import ChannelOrder  # noqa: E402
from models.slicing import slice_vision  # noqa: E402

pytestmark = pytest.mark.torch

CUTS = [(0, 1), (1, 3), (3, 4)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _images(n: int = 3, seed: int = 1, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _chain(stages: list, x: torch.Tensor) -> torch.Tensor:
    for s in stages:
        x = s(x)
    return x


@pytest.mark.parametrize("cuts", [[(0, 4)], [(0, 2), (2, 4)], CUTS, [(0, 1), (1, 2), (2, 3), (3, 4)]])
def test_plain_stages_chain_to_the_unsliced_output_exactly(cuts: list[tuple[int, int]]) -> None:
    visual = tiny_visual()
    x = _images()
    with torch.inference_mode():
        ref = visual(x)
        stages = slice_vision(visual, cuts)
        out = _chain(stages, x)
    assert torch.equal(out, ref)
    assert stages[0].embed is not None and stages[-1].pool is not None
    assert all(s.embed is None for s in stages[1:]) and all(s.pool is None for s in stages[:-1])


@pytest.mark.parametrize("overrides", [{}, {"patch_size": 16, "image_size": 64}, {"pool_type": "avg"}])
def test_nested_level0_equals_unsliced_within_1e6(overrides: dict) -> None:
    visual = tiny_visual(**overrides)
    x = _images(size=visual.image_size[0])
    with torch.inference_mode():
        ref = visual(x)
        pipe = build_nested(visual, CUTS, RATIOS)
        pipe.set_levels(0)
        out = pipe(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-6 * max(1.0, ref.abs().max().item())


def test_every_nested_level_equals_the_torch_pruning_dense_export() -> None:
    pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    x = _images()
    spec_heads = [s.heads for s in pipe.levels]
    assert spec_heads == [6, 5, 4, 4, 3, 3, 2]
    with torch.inference_mode():
        for level, spec in enumerate(pipe.levels):
            pipe.set_levels(level)
            nested_out = pipe(x)
            dense = [export_dense_stage(s, level) for s in pipe.stage_list]
            dense_out = _chain(dense, x)
            torch.testing.assert_close(dense_out, nested_out, rtol=1e-5, atol=1e-6)
            blk = dense[1].blocks[0]
            assert blk.attn.qkv.weight.shape == (3 * spec.heads * 16, 96)
            assert blk.attn.proj.weight.shape == (96, spec.heads * 16)
            assert blk.c_fc.weight.shape == (spec.mlp_hidden, 96)
            assert blk.c_proj.weight.shape == (96, spec.mlp_hidden)
            if level:
                assert parameter_bytes(dense[1]) < parameter_bytes(pipe.stage_list[1])


def test_export_leaves_the_nested_stage_untouched() -> None:
    pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    before = {k: v.clone() for k, v in pipe.state_dict().items()}
    export_dense_stage(pipe.stage_list[1], 6)
    for k, v in pipe.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_set_level_is_allocation_free_and_uses_views() -> None:
    pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    ptrs = {n: p.data_ptr() for n, p in pipe.named_parameters()}
    nbytes = parameter_bytes(pipe)
    pipe.set_levels(0)
    tracemalloc.start()
    for i in range(2000):
        pipe.set_levels(i % len(RATIOS))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096  # Python-level: no objects accumulate while switching
    assert {n: p.data_ptr() for n, p in pipe.named_parameters()} == ptrs
    assert parameter_bytes(pipe) == nbytes
    x = _images(1)
    with torch.inference_mode():
        for level, spec in enumerate(pipe.levels):
            pipe.set_levels(level)
            assert pipe(x).shape == (1, 32)
            blk = pipe.stage_list[1].blocks[0]
            assert isinstance(blk, NestedBlock)
            assert (blk.n_heads, blk.mlp_hidden) == (spec.heads, spec.mlp_hidden)
            rows = 3 * blk.n_heads * blk.head_dim
            assert blk.qkv.weight[:rows].data_ptr() == blk.qkv.weight.data_ptr()  # a leading view, not a copy
        with pytest.raises(ModelError):
            pipe.set_levels(len(RATIOS))
        with pytest.raises(ModelError):
            pipe.set_levels([0, 1])


def test_per_stage_levels_and_per_block_widths() -> None:
    pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    x = _images()
    with torch.inference_mode():
        pipe.set_levels([0, 6, 0])
        mixed = pipe(x)
        stage = pipe.stage_list[1]
        pipe.set_levels(0)
        stage.set_widths([(2, 153), (2, 153)])
        assert stage.level == -1
        torch.testing.assert_close(pipe(x), mixed, rtol=0, atol=0)
        stage.set_widths([(6, 384), (1, 10)])
        assert pipe(x).shape == (3, 32)
        with pytest.raises(ModelError):
            stage.set_widths([(7, 384), (1, 10)])


def test_levels_are_nested_prefixes_of_the_importance_order() -> None:
    visual = tiny_visual()
    with torch.no_grad():  # make head 5 of block 0 dominant: importance must put it first
        hd = 16
        w = visual.transformer.resblocks[0].attn.in_proj_weight
        for part in range(3):
            w[part * 96 + 5 * hd : part * 96 + 6 * hd] *= 20
    x = _images()
    with torch.inference_mode():
        ref = visual(x)
        keep = build_nested(tiny_visual(), CUTS, RATIOS, order="keep").eval()
        pipe = build_nested(visual, CUTS, RATIOS).eval()
        out = pipe(x)
    assert pipe.channel_order.heads[0][0] == 5
    assert keep.channel_order.source == "identity"
    for perm in (*pipe.channel_order.heads, *pipe.channel_order.mlp):
        assert sorted(perm) == list(range(len(perm)))
    assert (out - ref).abs().max().item() < 1e-5  # permuting channels does not change the function


def test_a_given_channel_order_is_applied_and_kept() -> None:
    ref_pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    again = build_nested(tiny_visual(), CUTS, RATIOS, order=ref_pipe.channel_order).eval()
    x = _images()
    assert again.channel_order == ref_pipe.channel_order
    with torch.inference_mode():
        for level in range(len(RATIOS)):
            ref_pipe.set_levels(level)
            again.set_levels(level)
            torch.testing.assert_close(again(x), ref_pipe(x), rtol=0, atol=0)
    bad = ChannelOrder(heads=((0, 1),), mlp=((0,),))
    with pytest.raises(ModelError):
        build_nested(tiny_visual(), CUTS, RATIOS, order=bad)


def test_checkpoint_round_trip_is_plain_data(tmp_path: Path) -> None:
    from models.loading import _build_visual

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 16, "patch_size": 8},
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        visual = _build_visual(cfg).eval()
    info = {"model_id": "tiny-vit", "weights": "random-init", "model_cfg": cfg}
    pipe = build_nested(visual, CUTS, RATIOS, info=info, mlp_round_to=32).eval()
    assert all(spec.mlp_hidden % 32 == 0 for spec in pipe.levels)
    path = tmp_path / "ckpt" / "nested.pt"
    save_nested(pipe, path)
    raw = torch.load(path, weights_only=True)  # no pickled modules
    assert raw["partition"] == [list(c) for c in CUTS] and raw["model_id"] == "tiny-vit"
    loaded = load_nested(path)
    assert loaded.channel_order == pipe.channel_order and loaded.partition == pipe.partition
    assert loaded.levels == pipe.levels  # the rounded ladder survives the round trip
    x = _images()
    with torch.inference_mode():
        for level in range(len(RATIOS)):
            pipe.set_levels(level)
            loaded.set_levels(level)
            torch.testing.assert_close(loaded(x), pipe(x), rtol=0, atol=0)
    assert not list(tmp_path.glob("ckpt/*.tmp"))


def test_restage_regroups_the_same_blocks() -> None:
    pipe = build_nested(tiny_visual(), CUTS, RATIOS).eval()
    other = restage(pipe, [(0, 2), (2, 4)])
    x = _images()
    with torch.inference_mode():
        pipe.set_levels(3)
        other.set_levels(3)
        torch.testing.assert_close(other(x), pipe(x), rtol=0, atol=0)
    assert other.partition == ((0, 2), (2, 4))


def test_bad_partitions_and_ladders_raise_one_line_model_errors() -> None:
    for cuts in ([(0, 2), (3, 4)], [(0, 2)], [(0, 0), (0, 4)]):
        with pytest.raises(ModelError) as err:
            slice_vision(tiny_visual(), cuts)
        assert "--blocks" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="--levels"):
        ladder([0.1, 0.2], 6, 384)
    with pytest.raises(ModelError, match="at least one"):
        ladder([0.0, 0.95], 6, 384)


def test_vit_b16_ladder_matches_torch_pruning_rounding() -> None:
    specs = ladder(RATIOS, 12, 3072)
    assert [s.heads for s in specs] == [12, 10, 9, 8, 7, 6, 4]
    assert [s.mlp_hidden for s in specs] == [3072, 2764, 2457, 2150, 1843, 1536, 1228]
