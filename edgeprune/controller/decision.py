"""The one rule for a policy's answer, used by every backend (simulator, hardware coordinator) and the checker.

A decision is one ladder level per stage: a ``tuple`` or ``list`` of exactly ``n_stages`` integers (Python
``int`` or a NumPy integer, never ``bool``), each in ``0 .. n_levels - 1``.  Anything else — ``1.9``,
``True``, ``"2"``, a wrong length — is a :class:`~edgeprune.errors.PolicyError`, never silently converted:
a policy that returns a float has a bug that ``int()`` would hide.
"""

from __future__ import annotations

import numpy as np

from edgeprune.errors import PolicyError

__all__ = ["validate_levels"]


def validate_levels(decided: object, n_stages: int, n_levels: int, *, policy: str, time_s: float) -> tuple[int, ...]:
    """``decided`` as a tuple of ``int``, or :class:`PolicyError` naming the policy, the time and the answer."""
    if type(decided) is tuple and len(decided) == n_stages:  # the common answer, checked cheaply
        for v in decided:
            if type(v) is not int or not 0 <= v < n_levels:
                break
        else:
            return decided
    if isinstance(decided, (tuple, list)) and len(decided) == n_stages and all(_is_level(v, n_levels) for v in decided):
        return tuple(int(v) for v in decided)
    want = f"expected {n_stages} integer levels in 0..{n_levels - 1}"
    raise PolicyError(f"policy {policy} returned {decided!r} at t={time_s:g}s: {want}")


def _is_level(v: object, n_levels: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= int(v) < n_levels
