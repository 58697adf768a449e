"""The greedy pruning path and its search, shared by ``predictive`` and ``oracle``.

Both policies look for the most accurate level vector that meets an SLO target without trying all
``n_levels^n_stages`` vectors: from no pruning, each step prunes one stage one rung, the stage whose
latency gain per accuracy lost is largest, never below the accuracy floor nor above the top level.  Every
step shortens a service time, so a policy's forecast attainment can only rise along the path, and the
first vector that meets the target is found by galloping then bisecting.  The policies differ only in
how they score a rung's latency gain (:data:`GainOf`); the path, its floor and top, the accuracy cost and
the search are written here once.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeprune.controller.estimate import AccuracyTable

__all__ = ["GainOf", "GreedyPath"]

#: For the levels before a step, the latency gain of pruning stage ``k`` from its level ``lv`` one rung
#: (``gain(k, lv)``); larger is better.  Asked once per step, so it may precompute what the step shares.
GainOf = Callable[[list[int]], Callable[[int, int], float]]

_MIN_ACCURACY_COST = 1e-6  # a rung that costs no accuracy is scored as costing this much (no division by 0)


class GreedyPath:
    """The greedy pruning path for one decision, built lazily (only as far as the search needs).

    ``gain_of`` scores the candidate rungs of a step (:data:`GainOf`); ``accuracy`` prices a vector;
    ``floor`` (or ``None``) is the accuracy no vector may fall below; ``top`` the highest level.
    """

    def __init__(self, n_stages: int, top: int, floor: float | None, accuracy: AccuracyTable, gain_of: GainOf) -> None:
        self._top = top
        self._floor = floor
        self._accuracy = accuracy
        self._gain_of = gain_of
        self._levels = [0] * n_stages
        self._max_length = n_stages * top  # every step adds one rung, at most ``top`` per stage
        self._acc = accuracy.of(self._levels)
        self._vectors = [self._levels.copy()]
        self._done = False

    def at(self, i: int) -> list[int]:
        """The ``i``-th vector of the path (the last one if the path is shorter)."""
        return self._vectors[min(self.extend_to(i), i)]

    def ended_at(self, i: int) -> bool:
        """Whether ``i`` is (at or past) the path's last vector."""
        return self.extend_to(i + 1) <= i

    def extend_to(self, i: int) -> int:
        """Build the path up to index ``i`` if it goes that far; return its last index built."""
        while len(self._vectors) <= i and not self._done:
            self._step()
        return len(self._vectors) - 1

    def first_meeting(self, meets: Callable[[list[int]], bool]) -> list[int]:
        """The first vector on the path for which ``meets`` holds (the last vector if none does).

        For a ``meets`` monotone along the path (false, then true).  Gallops along the path (indices 0, 1,
        3, 7, ...) and then bisects: an easy target costs one evaluation, a hard one ~2 log2(path length),
        and the path is only built as far as the answer (``predictive``: building is the costly part)."""
        lo, hi = 0, 0
        while not meets(self.at(hi)):
            if self.ended_at(hi):
                return self.at(hi)  # the floor or the top is reached and the target still missed
            lo, hi = hi + 1, min(2 * hi + 1, self.extend_to(2 * hi + 1))
        return self._bisect(meets, lo, hi)

    def first_meeting_whole(self, meets: Callable[[list[int]], bool]) -> list[int]:
        """:meth:`first_meeting` by building the whole path and bisecting it (``oracle``: its evaluations
        are the costly part, ~log2(path length) of them).  The same answer when ``meets`` is monotone."""
        last = self.extend_to(self._max_length)
        if not meets(self.at(last)):
            return self.at(last)
        return self._bisect(meets, 0, last)

    def _bisect(self, meets: Callable[[list[int]], bool], lo: int, hi: int) -> list[int]:
        """The first vector in ``[lo, hi]`` for which ``meets`` holds, given that it holds at ``hi``."""
        while lo < hi:
            mid = (lo + hi) // 2
            if meets(self.at(mid)):
                hi = mid
            else:
                lo = mid + 1
        return self.at(hi)

    def _step(self) -> None:
        """Prune the rung with the largest gain per accuracy lost; the path ends when no rung is allowed."""
        levels, acc, floor = self._levels, self._acc, self._floor
        gain = self._gain_of(levels)
        best_k, best_val, best_acc = -1, -1.0, acc
        for k, lv in enumerate(levels):
            if lv >= self._top:
                continue
            levels[k] = lv + 1
            cand_acc = self._accuracy.of(levels)
            levels[k] = lv
            if floor is not None and cand_acc < floor:
                continue
            val = gain(k, lv) / max(acc - cand_acc, _MIN_ACCURACY_COST)
            if val > best_val:
                best_k, best_val, best_acc = k, val, cand_acc
        if best_k < 0:
            self._done = True
            return
        levels[best_k] += 1
        self._acc = best_acc
        self._vectors.append(levels.copy())
