"""Building an :data:`~traces.spec.ArrivalSpec` from a scenario's ``[arrivals]`` TOML table.

The ``kind`` key picks the dataclass; everything else is validated by :func:`edgeprune.config.build`.
A replay's ``path`` is resolved against the scenario file's folder and the trace is loaded once here, so
a missing file, column or bad timestamp is reported when the scenario is read, not minutes into a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from edgeprune.config import Ctx, build
from edgeprune.errors import ConfigError, TraceError, did_you_mean
from traces.replay import load_replay
from traces.spec import KINDS, ArrivalSpec, ReplayArrivals

__all__ = ["arrivals_from_table"]


def arrivals_from_table(table: Mapping[str, Any], ctx: Ctx, base_dir: Path) -> ArrivalSpec:
    """The arrival spec described by ``table`` (found at ``ctx``, e.g. ``Ctx("s.toml", "arrivals")``).

    Raises :class:`ConfigError` for a missing or unknown ``kind`` (with the closest valid kind), bad keys
    or values, or a replay file that does not exist; :class:`TraceError` (prefixed with the scenario
    file and key) when the trace exists but cannot be read.
    """
    if not isinstance(table, Mapping):
        raise ctx.error(table, "expected a table")
    kind_ctx = ctx.child("kind")
    if "kind" not in table:
        valid = ", ".join(repr(k) for k in KINDS)
        raise ConfigError(f"{ctx.file}: {kind_ctx.key}: required key is missing (valid: {valid})")
    kind = table["kind"]
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise kind_ctx.error(kind, "unknown arrival kind" + did_you_mean(str(kind), KINDS))
    spec = cast(ArrivalSpec, build(cls, table, ctx))
    if isinstance(spec, ReplayArrivals):
        spec = _resolve_replay(spec, ctx, base_dir)
    return spec


def _resolve_replay(spec: ReplayArrivals, ctx: Ctx, base_dir: Path) -> ReplayArrivals:
    """Make the trace path absolute (relative to ``base_dir``) and check the trace loads."""
    path = Path(spec.path).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise ctx.child("path").error(spec.path, f"trace file not found (looked for {path})")
    resolved = replace(spec, path=str(path.resolve()))
    try:
        load_replay(resolved)
    except TraceError as exc:
        raise TraceError(f"{ctx.file}: {ctx.key}: {exc}") from None
    return resolved
