"""What every EdgePrune command shares: one-line errors with exit status 2, argument parsing, progress bars."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from edgeprune.atomic import Terminated
from edgeprune.errors import EdgePruneError
from edgeprune.progress import progress_bar, show_progress

__all__ = ["EXIT_USAGE", "ArgumentParser", "UsageError", "guarded", "report_error", "seed_arg"]

EXIT_USAGE = 2
_USAGE_WIDTH = 120


class UsageError(EdgePruneError):
    """A command line argparse refused; ``hint`` is one line of usage shown after the error."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors look like every other error: ``prog: error: message`` and exit 2.

    Plain argparse prints the usage wrapped over several lines before the error.  Here a usage error is a
    :class:`UsageError`, which :func:`guarded` prints as the error line and at most one line of hint: the
    usage on one line when it is short, else where to find it.  Sub-commands get the same class (argparse
    passes the parser class on to ``add_subparsers``).  Parse inside :func:`guarded`.
    """

    def error(self, message: str) -> NoReturn:
        """Raise the one-line :class:`UsageError` (with its one-line hint)."""
        usage = " ".join(self.format_usage().split())
        hint = usage if len(usage) <= _USAGE_WIDTH else f"usage: see '{self.prog} --help'"
        raise UsageError(message, hint)


def report_error(prog: str, exc: EdgePruneError) -> int:
    """Print a user error as ``prog: error: message`` (plus a usage hint line for a usage error); return 2."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    if isinstance(exc, UsageError) and exc.hint:
        print(exc.hint, file=sys.stderr)
    return EXIT_USAGE


def seed_arg(text: str) -> int:
    """``--seed``: a non-negative integer (the root of a numpy ``SeedSequence``), like ``seed`` in a TOML."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {value})")
    return value


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command body; user errors become ``prog: error: message`` on stderr and exit status 2."""
    try:
        return body()
    except EdgePruneError as exc:
        return report_error(prog, exc)
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
