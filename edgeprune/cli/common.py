"""What every EdgePrune command shares: one-line errors with exit status 2, and progress bars."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from edgeprune.atomic import Terminated
from edgeprune.errors import EdgePruneError
from edgeprune.progress import progress_bar, show_progress

__all__ = ["EXIT_USAGE", "guarded"]

EXIT_USAGE = 2


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command body; user errors become ``prog: error: message`` on stderr and exit status 2."""
    try:
        return body()
    except EdgePruneError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated as exc:  # SIGTERM / SIGHUP during an atomic write or a sweep
        print(f"{prog}: interrupted ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


class Progress:
    """A tqdm bar over simulated seconds, per policy; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = show_progress(enabled)
        self._bars: dict[str, Any] = {}

    def __call__(self, name: str, now_s: float, end_s: float) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = progress_bar(total=round(end_s), desc=name, unit="sim-s", leave=False)
        bar.update(round(now_s) - bar.n)

    def close(self) -> None:
        """Remove the bars."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
