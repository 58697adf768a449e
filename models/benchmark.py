"""Offline benchmark: per-stage, per-level latency samples of a nested pipeline → an EdgePrune profile.

For each device (here: a name and a torch thread count), every stage is timed at every level on a random
input of its real shape (batch 1, fp32, ``torch.inference_mode``).  Levels are interleaved within each
round so that slow drifts of the machine (thermal, other load) spread evenly over the levels rather than
biasing one; each (stage, level) first gets ``warmup`` untimed runs.  Alongside, the profile records per
device: the time to switch a stage's level (``switch_s``), the bytes each stage keeps resident
(``memory_bytes``: parameters + buffers, shared by all levels), and in ``meta`` the per-block latencies
used by :mod:`models.partition` (``block_latency_s[level][block]``, ``embed_latency_s``,
``pool_latency_s``), thread count, warm-up, sample count, CPU model and load average at the start.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgeprune.errors import ModelError
from edgeprune.profile import DeviceProfile, Profile, profile_from_dict
from edgeprune.progress import progress_bar
from models.export import parameter_bytes
from models.nested import StagedVision

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "block_latency_s",
    "cpu_model",
    "measure_device",
    "merge_profiles",
    "profile_for",
    "provenance",
    "switch_latency_s",
    "timed_runs_s",
    "write_profile",
]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_runs_s(fn: Callable[[], object], samples: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``samples`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class _Threads:
    """Context manager setting torch's intra-op thread count and restoring it afterwards."""

    def __init__(self, n: int) -> None:
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def _stage_samples_s(
    pipe: StagedVision, inputs: Sequence[torch.Tensor], samples: int, warmup: int, bar: tqdm[Any]
) -> list[list[list[float]]]:
    """latency[stage][level] -> samples, levels interleaved within each round."""
    stages, n_levels = pipe.stage_list, len(pipe.levels)
    out: list[list[list[float]]] = [[[] for _ in range(n_levels)] for _ in stages]
    for k, (stage, x) in enumerate(zip(stages, inputs, strict=True)):
        for level in range(n_levels):
            stage.set_level(level)
            for _ in range(warmup):
                stage(x)
        for _ in range(samples):
            for level in range(n_levels):
                stage.set_level(level)
                t0 = time.perf_counter()
                stage(x)
                out[k][level].append(time.perf_counter() - t0)
            bar.update(1)
        stage.set_level(0)
    return out


def block_latency_s(
    pipe: StagedVision, generator: torch.Generator, samples: int = 5, warmup: int = 2
) -> tuple[float, list[list[float]], float]:
    """Median latency of the patch embedding, of every block at every level, and of the pooling/projection."""
    stages = pipe.stage_list
    image = torch.randn(stages[0].input_shape(pipe.image_size), generator=generator)
    tokens = torch.randn(1, stages[0].n_tokens, stages[0].width, generator=generator)
    embed, pool = stages[0].embed, stages[-1].pool
    assert embed is not None and pool is not None
    embed_s = statistics.median(timed_runs_s(lambda: embed(image), samples, warmup))
    pool_s = statistics.median(timed_runs_s(lambda: pool(tokens), samples, warmup))
    per_level: list[list[float]] = []
    for spec in pipe.levels:
        row = []
        for stage in stages:
            for blk in stage.blocks:
                blk.set_width(spec.heads, spec.mlp_hidden)  # type: ignore[operator]
                row.append(statistics.median(timed_runs_s(functools.partial(blk, tokens), samples, warmup)))
        per_level.append(row)
    pipe.set_levels(0)
    return embed_s, per_level, pool_s


def switch_latency_s(pipe: StagedVision, repeats: int = 2000) -> tuple[float, float]:
    """Median seconds to change one stage's level, and to change every stage's level (cycling the ladder)."""
    stages, n = pipe.stage_list, len(pipe.levels)
    one, everything = [], []
    for i in range(repeats):
        level = (i % (n - 1)) + 1 if n > 1 else 0
        t0 = time.perf_counter()
        stages[0].set_level(level)
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in stages:
            s.set_level(level)
        everything.append(time.perf_counter() - t0)
    pipe.set_levels(0)
    return statistics.median(one), statistics.median(everything)


def measure_device(
    pipe: StagedVision,
    name: str,
    threads: int,
    *,
    samples: int = 25,
    warmup: int = 5,
    generator: torch.Generator,
    progress: bool = True,
) -> DeviceProfile:
    """Measure every stage × level on this machine with ``threads`` torch threads."""
    if samples < 1 or warmup < 0 or threads < 1:
        raise ModelError(f"--samples = {samples}, --warmup = {warmup}, --threads = {threads}: need >= 1, >= 0, >= 1")
    load_start = os.getloadavg()
    inputs = pipe.stage_inputs(generator)
    bar = progress_bar(
        enabled=progress, total=len(inputs) * samples, desc=f"{name} ({threads} thr)", unit="round", leave=False
    )
    with _Threads(threads), torch.inference_mode():
        t_start = time.time()
        latency = _stage_samples_s(pipe, inputs, samples, warmup, bar)
        embed_s, blocks_s, pool_s = block_latency_s(pipe, generator, samples=max(3, samples // 5))
        one_s, all_s = switch_latency_s(pipe)
        wall_s = time.time() - t_start
    bar.close()
    meta = {
        "threads": threads,
        "warmup": warmup,
        "samples": samples,
        "batch": 1,
        "dtype": "float32",
        "order": "levels interleaved within each round, stages one after another",
        "cpu": cpu_model(),
        "host": platform.node(),
        "torch": torch.__version__,
        "load_avg_start": [round(v, 2) for v in load_start],
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": round(wall_s, 1),
        "switch_all_stages_s": all_s,
        "memory": "parameter + buffer bytes per stage; all levels share them",
        "embed_latency_s": embed_s,
        "pool_latency_s": pool_s,
        "block_latency_s": blocks_s,
    }
    return DeviceProfile(
        name=name,
        latency_s=tuple(tuple(tuple(sorted(s)) for s in st) for st in latency),
        switch_s=one_s,
        memory_bytes=tuple(parameter_bytes(s) for s in pipe.stage_list),
        meta=meta,
    )


def activation_bytes(pipe: StagedVision, generator: torch.Generator) -> list[int]:
    """Bytes each stage sends downstream per request (batch 1)."""
    out = []
    with torch.inference_mode():
        x = pipe.stage_inputs(generator)[0]
        for stage in pipe.stage_list:
            x = stage(x)
            out.append(x.numel() * x.element_size())
    return out


def provenance(argv: Sequence[str] | None, notes: str) -> dict[str, Any]:
    """Who measured what, where and when."""
    import open_clip
    import torch_pruning

    return {
        "tool": "edgeprune-profile (models.benchmark)",
        "command": " ".join(["edgeprune-profile", *(argv if argv is not None else sys.argv[1:])]),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "torch_pruning": getattr(torch_pruning, "__version__", "?"),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "notes": notes,
    }


def profile_for(
    pipe: StagedVision, devices: Sequence[DeviceProfile], prov: Mapping[str, Any], generator: torch.Generator
) -> Profile:
    """Assemble the profile of ``pipe`` with the measured ``devices`` (no accuracy: that is another command)."""
    first = pipe.stage_list[0]
    blk = first.blocks[0]
    cfg = pipe.info.get("model_cfg", {})
    model = {
        "id": pipe.info.get("model_id", ""),
        "weights": pipe.info.get("weights", ""),
        "input_shape": [3, *pipe.image_size],
        "blocks": pipe.partition[-1][1],
        "width": first.width,
        "heads": blk.n_heads_full,
        "mlp_hidden": blk.mlp_full,
        "output_dim": cfg.get("embed_dim"),
        "tokens": first.n_tokens,
        "pruning": "nested attention heads + MLP channels per block, residual width kept",
        "channel_order": pipe.channel_order.source,
    }
    act = activation_bytes(pipe, generator)
    image = first.input_shape(pipe.image_size)
    return Profile(
        model=model,
        n_stages=len(pipe.stage_list),
        blocks=pipe.partition,
        ratios=pipe.ratios,
        level_detail=tuple({"heads": s.heads, "mlp_hidden": s.mlp_hidden} for s in pipe.levels),
        activation_bytes=tuple(act),
        devices={d.name: d for d in devices},
        accuracy=None,
        provenance=dict(prov),
        input_bytes=int(torch.Size(image).numel()) * 4,
    )


def merge_profiles(old: Profile, new: Profile) -> Profile:
    """``old`` with ``new``'s devices added (same model, partition and ladder required)."""
    for what, a, b in (
        ("model id", old.model.get("id"), new.model.get("id")),
        ("partition", old.blocks, new.blocks),
        ("levels", old.ratios, new.ratios),
    ):
        if a != b:
            raise ModelError(f"--append: {old.source} has a different {what} ({a} vs {b})")
    return dataclasses.replace(old, devices={**old.devices, **new.devices})


def write_profile(profile: Profile, path: str | Path) -> None:
    """Validate (round trip through the schema) and write atomically."""
    profile_from_dict(json.loads(json.dumps(profile.to_dict())), source=str(path))
    profile.save(path)
