"""The pruning ladder: which attention heads and MLP channels each level keeps.

A level is a pruning *ratio* ``r`` applied to every block of a stage.  It keeps the leading
``heads_kept(H, r)`` attention heads and ``mlp_kept(M, r)`` MLP hidden channels of the importance-ordered
weights, so every level is a leading slice of the level before it (the levels are *nested*).

The rounding follows torch-pruning's own rules, so a level and a torch-pruning run at the same ratio
remove the same number of channels: heads are removed by ``ceil(r * H)`` (torch-pruning's local head
pruning), MLP channels are kept by ``floor(M * (1 - r))`` (its channel pruning).  On ViT-B/16 (12 heads,
3072 MLP channels) the ladder 0, 0.1, …, 0.6 keeps 12/10/9/8/7/6/4 heads and 3072/2764/…/1228 channels.

This module does not import torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgeprune.errors import ModelError

__all__ = ["DEFAULT_RATIOS", "LevelSpec", "heads_kept", "ladder", "mlp_kept", "parse_ratios"]

DEFAULT_RATIOS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)

_EPS = 1e-9  # absorbs float noise such as 0.3 * 12 = 3.5999999999999996


@dataclass(frozen=True)
class LevelSpec:
    """One rung of the ladder: the ratio and the widths every block keeps at it."""

    ratio: float
    heads: int
    mlp_hidden: int

    def to_dict(self) -> dict[str, int | float]:
        """JSON form used in the profile's ``levels.detail``."""
        return {"ratio": self.ratio, "heads": self.heads, "mlp_hidden": self.mlp_hidden}


def heads_kept(n_heads: int, ratio: float) -> int:
    """Attention heads kept at ``ratio`` (torch-pruning removes ``ceil(ratio * n_heads)``)."""
    return n_heads - math.ceil(ratio * n_heads - _EPS)


def mlp_kept(mlp_hidden: int, ratio: float, round_to: int = 1) -> int:
    """MLP hidden channels kept at ``ratio`` (torch-pruning keeps ``floor(mlp_hidden * (1 - ratio))``).

    With ``round_to > 1`` the kept width is rounded to the nearest multiple of ``round_to`` (at least one
    multiple, at most the full width), as torch-pruning's ``round_to`` does: matrix kernels run much faster
    at such widths (measured here at 1 thread: 2176 channels 25 ms vs 2150 channels 34 ms per MLP)."""
    kept = math.floor(mlp_hidden * (1.0 - ratio) + _EPS)
    if round_to > 1:
        kept = min(mlp_hidden, max(round_to, round_to * math.floor(kept / round_to + 0.5)))
    return kept


def ladder(ratios: Sequence[float], n_heads: int, mlp_hidden: int, mlp_round_to: int = 1) -> tuple[LevelSpec, ...]:
    """Validate ``ratios`` and return the widths of every level for blocks of the given full size."""
    rs = tuple(float(r) for r in ratios)
    if not rs or rs[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(rs)):
        raise ModelError(f"--levels = {','.join(map(str, rs))}: ratios must start at 0 and increase")
    if any(not 0.0 <= r < 1.0 for r in rs):
        raise ModelError(f"--levels = {','.join(map(str, rs))}: ratios must lie in [0, 1)")
    if mlp_round_to < 1:
        raise ModelError(f"--mlp-round-to = {mlp_round_to}: must be >= 1")
    specs = tuple(LevelSpec(r, heads_kept(n_heads, r), mlp_kept(mlp_hidden, r, mlp_round_to)) for r in rs)
    for s in specs:
        if s.heads < 1 or s.mlp_hidden < 1:
            raise ModelError(
                f"--levels: ratio {s.ratio} leaves {s.heads} of {n_heads} heads and {s.mlp_hidden} of "
                f"{mlp_hidden} MLP channels; every level must keep at least one of each"
            )
    return specs


def parse_ratios(text: str, option: str = "--levels") -> tuple[float, ...]:
    """Parse ``"0,0.1,0.2"`` into ratios (validated for shape by :func:`ladder`)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ModelError(f"{option} = {text!r}: expected comma-separated ratios such as 0,0.1,0.2") from None
