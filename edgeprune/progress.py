"""The one rule for progress bars: on stderr, and only when stderr is a terminal.

A bar written into a redirected log is noise (tqdm redraws it line by line), so every command builds its
bars here: ``--no-progress`` turns them off, and so does a stderr that is a file or a pipe.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["progress_bar", "show_progress"]


def show_progress(enabled: bool = True) -> bool:
    """Whether to draw progress bars: asked for, and stderr is a terminal."""
    return enabled and sys.stderr.isatty()


def progress_bar(*, enabled: bool = True, **kwargs: Any) -> tqdm[Any]:
    """A tqdm bar on stderr, disabled unless :func:`show_progress` (``kwargs`` go to tqdm)."""
    return tqdm(file=sys.stderr, disable=not show_progress(enabled), **kwargs)
