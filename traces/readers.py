"""Reading the time column of a recorded trace: CSV, JSON Lines, Parquet and Camtrap DP media tables.

Everything is read with polars.  The format is taken from the extension when ``format = "auto"``:

==========================  ==========================================================================
``.csv`` / ``.tsv``         CSV; a header with ``mediaID``, ``deploymentID`` and ``timestamp`` is Camtrap DP
``.jsonl`` / ``.ndjson``    JSON Lines, one object per line
``.parquet`` / ``.pq``      Parquet
``.json``                   a Frictionless ``datapackage.json`` (Camtrap DP): its ``media`` resource is read
a folder                    Camtrap DP: its ``datapackage.json``, else its ``media.csv``
==========================  ==========================================================================

Camtrap DP (https://camtrap-dp.tdwg.org) stores one row per image in ``media.csv`` with an ISO 8601
``timestamp`` (with offset) and a ``deploymentID`` (one camera placement); ``deployment`` keeps one
placement and the others are reported as dropped.  CSV cells are read as text and parsed by
:mod:`traces.timeparse`, so a bad cell is reported by row instead of silently turning the column into text.
Blank lines (polars reads them as rows with every cell empty) are skipped and reported as dropped; in a
one-column CSV an empty cell cannot be told from a blank line and is treated as one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from edgeprune.errors import TraceError, did_you_mean

__all__ = ["FORMATS", "RawColumn", "TraceFormat", "detect_format", "read_time_column"]

TraceFormat = Literal["auto", "csv", "jsonl", "parquet", "camtrap-dp"]
FORMATS: tuple[str, ...] = ("auto", "csv", "jsonl", "parquet", "camtrap-dp")

_CAMTRAP_MEDIA_COLUMNS = frozenset({"mediaID", "deploymentID", "timestamp"})
_CAMTRAP_TIME_COLUMN = "timestamp"
_DEPLOYMENT_COLUMN = "deploymentID"
_DEFAULT_TIME_COLUMNS = ("timestamp", "time", "time_s", "time_ms", "t", "ts", "arrival_time", "arrival_s")
_SUFFIX_FORMAT: dict[str, TraceFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True)
class RawColumn:
    """One time column as read, before parsing, with what was filtered out on the way.

    ``rows`` are 1-based data-row numbers in the file (header not counted), kept through filtering so that
    an error names the row a user can find; ``file`` is the file actually read (the ``media.csv`` of a
    data package); ``dropped`` maps a reason to a row count.
    """

    values: pl.Series
    rows: np.ndarray
    file: str
    column: str
    format: TraceFormat
    n_rows: int
    dropped: dict[str, int] = field(default_factory=dict)
    selection: str = ""


def detect_format(path: Path) -> TraceFormat:
    """The format of ``path`` from its extension (and, for CSV, a Camtrap DP media header)."""
    if path.is_dir():
        if (path / "datapackage.json").is_file() or (path / "media.csv").is_file():
            return "camtrap-dp"
        raise TraceError(f"{path}: a folder without datapackage.json or media.csv; name the trace file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "camtrap-dp"
    fmt = _SUFFIX_FORMAT.get(suffix)
    if fmt is None:
        known = ", ".join([*_SUFFIX_FORMAT, ".json"])
        raise TraceError(
            f"{path}: cannot tell the trace format from {suffix or 'no extension'!r} ({known}); set format"
        )
    if fmt == "csv" and set(_csv_header(path)) >= _CAMTRAP_MEDIA_COLUMNS:
        return "camtrap-dp"
    return fmt


def read_time_column(path: Path, *, format: TraceFormat, column: str | None, deployment: str | None) -> RawColumn:
    """Read the time column of the trace at ``path`` (and keep only ``deployment`` for Camtrap DP)."""
    if not path.exists():
        raise TraceError(f"{path}: trace file not found")
    fmt = detect_format(path) if format == "auto" else format
    if deployment is not None and fmt != "camtrap-dp":
        raise TraceError(f"{path}: deployment = {deployment!r} needs a Camtrap DP trace, this one is {fmt}")
    if fmt == "camtrap-dp":
        return _read_camtrap(path, column, deployment)
    if fmt == "csv":
        name = _pick_column(_csv_header(path), column, path)
        return _from_csv_frame(_read_csv(path), name, path)
    if fmt == "jsonl":
        frame = _guard(path, "JSON Lines", lambda: pl.read_ndjson(path, infer_schema_length=None))
        name = _pick_column(frame.columns, column, path)
    elif fmt == "parquet":
        schema = _guard(path, "Parquet", lambda: pl.read_parquet_schema(path))
        name = _pick_column(list(schema), column, path)
        frame = _guard(path, "Parquet", lambda: pl.read_parquet(path, columns=[name]))
    else:
        raise TraceError(f"{path}: unknown trace format {fmt!r}" + did_you_mean(str(fmt), FORMATS))
    values = frame[name]
    n = values.len()
    return RawColumn(values, np.arange(1, n + 1), str(path), name, fmt, n)


def _guard(path: Path, what: str, read: Any) -> Any:
    """Run a polars read, turning its exceptions into a one-line :class:`TraceError` naming the file."""
    try:
        return read()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: cannot read as {what}: {first}") from None


def _csv_opts(path: Path) -> dict[str, Any]:
    return {"separator": "\t"} if path.suffix.lower() == ".tsv" else {}


def _csv_header(path: Path) -> list[str]:
    frame = _guard(path, "CSV", lambda: pl.read_csv(path, n_rows=0, infer_schema=False, **_csv_opts(path)))
    return list(frame.columns)


def _pick_column(columns: Sequence[str], requested: str | None, path: Path) -> str:
    """The time column: the one asked for, else the only column, else a conventional name (any case)."""
    if requested is not None:
        if requested in columns:
            return requested
        same_case = [c for c in columns if c.lower() == requested.lower()]
        hint = f" (did you mean {same_case[0]!r}?)" if same_case else did_you_mean(requested, columns)
        raise TraceError(f"{path}: no column {requested!r}{hint}")
    if len(columns) == 1:
        return columns[0]
    by_lower = {c.lower(): c for c in columns}
    for name in _DEFAULT_TIME_COLUMNS:
        if name in by_lower:
            return by_lower[name]
    raise TraceError(f"{path}: which column holds the times? set column to one of {', '.join(map(repr, columns))}")


def _read_camtrap(path: Path, column: str | None, deployment: str | None) -> RawColumn:
    media_paths = _camtrap_media_paths(path)
    frames = []
    frames = [_read_csv(media) for media in media_paths]
    frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    file = ", ".join(map(str, media_paths))
    name = _pick_column(frame.columns, column or _CAMTRAP_TIME_COLUMN, media_paths[0])
    if deployment is not None and _DEPLOYMENT_COLUMN not in frame.columns:
        raise TraceError(f"{file}: no {_DEPLOYMENT_COLUMN!r} column to select deployment {deployment!r} from")
    raw = _from_csv_frame(frame, name, Path(file))
    raw = replace(raw, format="camtrap-dp")
    if deployment is None:
        n_deployments = frame[_DEPLOYMENT_COLUMN].n_unique() if _DEPLOYMENT_COLUMN in frame.columns else 1
        return replace(raw, selection=f"all {n_deployments} deployments" if n_deployments > 1 else "")
    kept = frame[_DEPLOYMENT_COLUMN].gather(raw.rows - 1)
    keep = (kept == deployment).fill_null(False).to_numpy()
    if not keep.any():
        ids = frame[_DEPLOYMENT_COLUMN].drop_nulls().unique().sort().to_list()
        raise TraceError(f"{file}: no media for deployment {deployment!r}" + did_you_mean(deployment, ids))
    dropped = {**raw.dropped, "other deployments": int((~keep).sum())}
    values = raw.values.filter(pl.Series(keep))
    return replace(raw, values=values, rows=raw.rows[keep], dropped=dropped, selection=f"deployment {deployment!r}")


def _read_csv(path: Path) -> pl.DataFrame:
    """All columns of a CSV file as text (parsing is ours, so bad cells are reported by row)."""
    frame: pl.DataFrame = _guard(path, "CSV", lambda: pl.read_csv(path, infer_schema=False, **_csv_opts(path)))
    return frame


def _from_csv_frame(frame: pl.DataFrame, name: str, path: Path) -> RawColumn:
    """The time column of a CSV table, without blank lines (polars reads them as all-empty rows)."""
    blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    rows = np.arange(1, frame.height + 1)
    values = frame[name]
    dropped = {}
    if blank.any():
        values = values.filter(pl.Series(~blank))
        rows = rows[~blank]
        dropped["blank lines"] = int(blank.sum())
    return RawColumn(values, rows, str(path), name, "csv", frame.height, dropped)


def _camtrap_media_paths(path: Path) -> list[Path]:
    """The media table(s) of a Camtrap DP package given its folder, its datapackage.json or media.csv."""
    if path.is_dir():
        package = path / "datapackage.json"
        path = package if package.is_file() else path / "media.csv"
    if path.suffix.lower() != ".json":
        return [path]
    try:
        package_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the data package: {exc}") from None
    resources = package_json.get("resources") if isinstance(package_json, dict) else None
    if not isinstance(resources, list):
        raise TraceError(f"{path}: not a data package (no 'resources' list)")
    media = [r for r in resources if isinstance(r, dict) and r.get("name") == "media"]
    if not media:
        names = [str(r.get("name")) for r in resources if isinstance(r, dict)]
        raise TraceError(f"{path}: no 'media' resource in the data package (has {', '.join(names) or 'none'})")
    parts = media[0].get("path")
    parts = [parts] if isinstance(parts, str) else parts
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise TraceError(f"{path}: the 'media' resource has no file path (inline data is not supported)")
    found = [path.parent / p for p in parts]
    for media_path in found:
        if not media_path.is_file():
            raise TraceError(f"{path}: media resource file {str(media_path)!r} not found")
    return found
