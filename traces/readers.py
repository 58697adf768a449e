"""Reading the time column(s) of a recorded trace, in the layouts exports actually have.

Everything is read with polars.  The format is taken from the file when ``format = "auto"``:

==========================  ==========================================================================
``.csv`` / ``.tsv``         CSV; a header with ``mediaID``, ``deploymentID``, ``timestamp`` is Camtrap DP
                            ``media.csv``, one with ``image_id``, ``deployment_id``, ``timestamp`` is a
                            Wildlife Insights ``images.csv``
``.jsonl`` / ``.ndjson``    JSON Lines, one object per line
``.parquet`` / ``.pq``      Parquet
``.json``                   a Frictionless ``datapackage.json`` (Camtrap DP; its ``media`` resource), or a
                            COCO Camera Traps file (LILA datasets: ``images[]`` with ``datetime``,
                            ``seq_id``, ``frame_num``, ``location``)
a folder                    Camtrap DP: its ``datapackage.json``, else its ``media.csv``
==========================  ==========================================================================

**The time** is one column, or several joined with a space (``column = ["eventDate", "eventTime"]``: a date
column and a time-of-day column).  Without ``column`` the format's own column is used (``timestamp``,
``datetime``), else the only column, else a conventional name (``timestamp``, ``datetime``, ``time``, ...)
whose values are full times; a column of times of day only (``08:19:46``) is never taken alone: it is
joined to the date column beside it, or the choice is refused with the names to set.

**Filters** ``deployment``, ``location`` and ``camera`` keep the rows whose value in the matching column
(``deploymentID`` / ``deployment_id``; ``locationID`` / ``locationName`` / ``location`` / ``placename``;
``cameraID`` / ``camera_id``) equals the value given; a Camtrap DP ``media.csv`` gets the location and
camera of each deployment from the ``deployments`` table beside it.  Rows filtered out are counted as
dropped, with the reason.  CSV cells are read as text and parsed by :mod:`traces.timeparse`, so a bad cell
is reported by row.  Blank lines (polars reads them as rows with every cell empty) are skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from edgeprune.errors import TraceError, did_you_mean

__all__ = ["FILTERS", "FORMATS", "RawColumn", "TraceFormat", "detect_format", "read_time_column"]

TraceFormat = Literal["auto", "csv", "jsonl", "parquet", "camtrap-dp", "coco-camera-traps", "wildlife-insights"]
FORMATS: tuple[str, ...] = (
    "auto",
    "csv",
    "jsonl",
    "parquet",
    "camtrap-dp",
    "coco-camera-traps",
    "wildlife-insights",
)

_CAMTRAP_MEDIA_COLUMNS = frozenset({"mediaID", "deploymentID", "timestamp"})
_WI_IMAGE_COLUMNS = frozenset({"image_id", "deployment_id", "timestamp"})
_FORMAT_TIME_COLUMN = {"camtrap-dp": "timestamp", "wildlife-insights": "timestamp", "coco-camera-traps": "datetime"}
_DEFAULT_TIME_COLUMNS = (
    "timestamp",
    "datetime",
    "date_time",
    "datetimeoriginal",
    "time",
    "time_s",
    "time_ms",
    "t",
    "ts",
    "arrival_time",
    "arrival_s",
    "eventtime",
)
_DATE_COLUMNS = ("date", "eventdate", "day")
#: filter name -> the columns it matches (first found wins for the error text; any may match)
FILTERS: dict[str, tuple[str, ...]] = {
    "deployment": ("deploymentID", "deployment_id", "deployment"),
    "location": ("locationID", "locationName", "location", "location_id", "placename"),
    "camera": ("cameraID", "camera_id", "camera"),
}
_SEQUENCE_COLUMNS = ("sequenceID", "seq_id", "sequence_id")
_COCO_KEYS = ("id", "file_name", "datetime", "seq_id", "seq_num_frames", "frame_num", "location")
_SUFFIX_FORMAT: dict[str, TraceFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FULL_RE = r"^\s*\d{4}[-:/]\d{2}[-:/]\d{2}[T ]\d{1,2}:\d{2}"
_DATE_RE = r"^\s*\d{4}[-:/]\d{2}[-:/]\d{2}\s*$"
_TOD_RE = r"^\s*\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?\s*$"
ColumnKind = Literal["full", "date", "time-of-day", "number", "other"]


@dataclass(frozen=True)
class RawColumn:
    """The time values as read, before parsing, with what was filtered out on the way.

    ``rows`` are 1-based data-row numbers in the file (header not counted; the image index for COCO),
    kept through filtering so that an error names the row a user can find; ``file`` is the file actually
    read; ``column`` the column name (``"eventDate + eventTime"`` for a joined timestamp); ``dropped`` maps
    a reason to a row count; ``groups`` is the location (or deployment) of each row when the table has one,
    ``sequences`` the sequence (burst) id of each row when it has one.
    """

    values: pl.Series
    rows: np.ndarray
    file: str
    column: str
    format: TraceFormat
    n_rows: int
    dropped: dict[str, int] = field(default_factory=dict)
    selection: str = ""
    groups: pl.Series | None = None
    group_column: str = ""
    sequences: pl.Series | None = None


@dataclass(frozen=True)
class _Table:
    """A whole table as read: every column, the file row of each, and what was already dropped."""

    frame: pl.DataFrame
    rows: np.ndarray
    file: str
    format: TraceFormat
    n_rows: int
    dropped: dict[str, int]


def detect_format(path: Path) -> TraceFormat:
    """The format of ``path`` from its extension (and, for CSV, a Camtrap DP or Wildlife Insights header)."""
    if path.is_dir():
        if (path / "datapackage.json").is_file() or (path / "media.csv").is_file():
            return "camtrap-dp"
        raise TraceError(f"{path}: a folder without datapackage.json or media.csv; name the trace file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco-camera-traps" if _json_head_has_images(path) else "camtrap-dp"
    fmt = _SUFFIX_FORMAT.get(suffix)
    if fmt is None:
        known = ", ".join([*_SUFFIX_FORMAT, ".json"])
        raise TraceError(
            f"{path}: cannot tell the trace format from {suffix or 'no extension'!r} ({known}); set format"
        )
    if fmt == "csv":
        header = set(_csv_header(path))
        if header >= _CAMTRAP_MEDIA_COLUMNS:
            return "camtrap-dp"
        if header >= _WI_IMAGE_COLUMNS:
            return "wildlife-insights"
    return fmt


def read_time_column(
    path: Path,
    *,
    format: TraceFormat,
    column: str | Sequence[str] | None,
    filters: dict[str, str] | None = None,
) -> RawColumn:
    """Read the time column(s) of the trace at ``path``, keeping only the rows that match ``filters``."""
    if not path.exists():
        raise TraceError(f"{path}: trace file not found")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise TraceError(f"{path}: unknown trace format {fmt!r}" + did_you_mean(str(fmt), FORMATS))
    table = _read_table(path, fmt)
    table, selection = _apply_filters(table, filters or {})
    names = _pick_columns(table.frame, column, fmt, table.file)
    values = _joined(table.frame, names)
    group_col = _first_present(table.frame.columns, FILTERS["location"] + FILTERS["deployment"])
    seq_col = _first_present(table.frame.columns, _SEQUENCE_COLUMNS)
    if not selection and group_col:
        n_groups = table.frame[group_col].n_unique()
        kind = "location" if group_col in FILTERS["location"] else "deployment"
        selection = f"all {n_groups} {kind}s" if n_groups > 1 else ""
    return RawColumn(
        values=values,
        rows=table.rows,
        file=table.file,
        column=" + ".join(names),
        format=fmt,
        n_rows=table.n_rows,
        dropped=table.dropped,
        selection=selection,
        groups=table.frame[group_col].cast(pl.String) if group_col else None,
        group_column=group_col or "",
        sequences=table.frame[seq_col].cast(pl.String) if seq_col else None,
    )


def _read_table(path: Path, fmt: TraceFormat) -> _Table:
    if fmt == "camtrap-dp":
        return _read_camtrap(path)
    if fmt == "coco-camera-traps":
        return _read_coco(path)
    if fmt in ("csv", "wildlife-insights"):
        return _without_blank_lines(_read_csv(path), str(path), fmt)
    if fmt == "jsonl":
        frame = _guard(path, "JSON Lines", lambda: pl.read_ndjson(path, infer_schema_length=None))
    else:
        frame = _guard(path, "Parquet", lambda: pl.read_parquet(path))
    return _Table(frame, np.arange(1, frame.height + 1), str(path), fmt, frame.height, {})


def _guard(path: Path, what: str, read: Callable[[], Any]) -> Any:
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


def _read_csv(path: Path) -> pl.DataFrame:
    """All columns of a CSV file as text (parsing is ours, so bad cells are reported by row)."""
    frame: pl.DataFrame = _guard(path, "CSV", lambda: pl.read_csv(path, infer_schema=False, **_csv_opts(path)))
    return frame


def _without_blank_lines(frame: pl.DataFrame, file: str, fmt: TraceFormat) -> _Table:
    """A CSV table without blank lines (polars reads them as all-empty rows), which are counted as dropped."""
    blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    rows = np.arange(1, frame.height + 1)
    if not blank.any():
        return _Table(frame, rows, file, fmt, frame.height, {})
    kept = frame.filter(pl.Series(~blank))
    return _Table(kept, rows[~blank], file, fmt, frame.height, {"blank lines": int(blank.sum())})


def _first_present(columns: Sequence[str], names: Sequence[str]) -> str | None:
    present = set(columns)
    return next((n for n in names if n in present), None)


def _apply_filters(table: _Table, filters: dict[str, str]) -> tuple[_Table, str]:
    """Keep the rows whose deployment / location / camera equals the value asked for, counting the others."""
    notes = []
    for name, wanted in filters.items():
        columns = [c for c in FILTERS[name] if c in table.frame.columns]
        if not columns:
            raise TraceError(
                f"{table.file}: no {name} column ({', '.join(FILTERS[name])}) to select {name} {wanted!r} from"
            )
        frame = table.frame.with_columns([pl.col(c).cast(pl.String) for c in columns])
        keep = frame.select(pl.any_horizontal([pl.col(c) == wanted for c in columns]).fill_null(False)).to_series()
        if not keep.any():
            known = sorted({str(v) for c in columns for v in frame[c].drop_nulls().unique().to_list()})
            raise TraceError(f"{table.file}: no rows for {name} {wanted!r}" + did_you_mean(wanted, known))
        mask = keep.to_numpy()
        dropped = {**table.dropped, f"other {name}s": int((~mask).sum())}
        table = _Table(table.frame.filter(keep), table.rows[mask], table.file, table.format, table.n_rows, dropped)
        notes.append(f"{name} {wanted!r}")
    return table, ", ".join(notes)


def column_kind(values: pl.Series) -> ColumnKind:
    """What a column holds, judged on up to 200 non-empty values: full times, dates, times of day, numbers."""
    if values.dtype == pl.Datetime:
        return "full"
    if values.dtype == pl.Date:
        return "date"
    if values.dtype == pl.Time:
        return "time-of-day"
    if values.dtype.is_numeric():
        return "number"
    sample = values.drop_nulls().head(200).cast(pl.String)
    if sample.len() == 0:
        return "other"
    if sample.str.strip_chars().cast(pl.Float64, strict=False).null_count() == 0:
        return "number"
    for kind, pattern in (("full", _FULL_RE), ("date", _DATE_RE), ("time-of-day", _TOD_RE)):
        if sample.str.contains(pattern).all():
            return kind  # type: ignore[return-value]
    return "other"


def _pick_columns(frame: pl.DataFrame, requested: str | Sequence[str] | None, fmt: TraceFormat, file: str) -> list[str]:
    """The time column(s): those asked for, the format's own, or a conventional name holding full times."""
    columns = frame.columns
    if requested is not None:
        names = [requested] if isinstance(requested, str) else list(requested)
        for name in names:
            _check_present(name, columns, file)
        if len(names) == 1 and column_kind(frame[names[0]]) == "time-of-day":
            date = _date_partner(frame)
            hint = f"set column = [{date!r}, {names[0]!r}]" if date else "name the date column too"
            raise TraceError(f"{file}: column {names[0]!r} holds only times of day (no date); {hint}")
        return names
    own = _FORMAT_TIME_COLUMN.get(fmt)
    if own is not None and own in columns:
        return [own]
    if len(columns) == 1:
        return [columns[0]]
    by_lower = {c.lower(): c for c in columns}
    for name in _DEFAULT_TIME_COLUMNS:
        if name in by_lower:
            picked = _usable(frame, by_lower[name])
            if picked:
                return picked
    full = [c for c in columns if column_kind(frame[c]) == "full"]
    if len(full) == 1:
        return full
    choices = ", ".join(map(repr, columns))
    raise TraceError(f"{file}: which column holds the times? set column to one of {choices} (or a [date, time] pair)")


def _check_present(name: str, columns: Sequence[str], file: str) -> None:
    if name in columns:
        return
    same_case = [c for c in columns if c.lower() == name.lower()]
    hint = f" (did you mean {same_case[0]!r}?)" if same_case else did_you_mean(name, columns)
    raise TraceError(f"{file}: no column {name!r}{hint}")


def _usable(frame: pl.DataFrame, name: str) -> list[str]:
    """``[name]`` if it holds full times or numbers, ``[date, name]`` for a time of day with a date beside it."""
    kind = column_kind(frame[name])
    if kind in ("full", "number", "other"):
        return [name]  # "other": let the parser name the bad row
    if kind == "time-of-day":
        date = _date_partner(frame)
        return [date, name] if date else []
    time_of_day = [c for c in frame.columns if c != name and column_kind(frame[c]) == "time-of-day"]
    return [name, time_of_day[0]] if len(time_of_day) == 1 else []


def _date_partner(frame: pl.DataFrame) -> str | None:
    """The column holding dates only, preferring a conventional name, when there is exactly one candidate."""
    dates = [c for c in frame.columns if column_kind(frame[c]) == "date"]
    named = [c for c in dates if c.lower() in _DATE_COLUMNS]
    pick = named or dates
    return pick[0] if len(pick) == 1 else None


def _joined(frame: pl.DataFrame, names: Sequence[str]) -> pl.Series:
    """One column as is, several joined into text with a space (``2020-05-30`` + ``08:19:46``)."""
    if len(names) == 1:
        return frame[names[0]]
    text = [pl.col(n).cast(pl.String).str.strip_chars() for n in names]
    return frame.select(pl.concat_str(text, separator=" ").alias(" + ".join(names))).to_series()


def _json_head_has_images(path: Path) -> bool:
    """Whether a ``.json`` file looks like COCO Camera Traps (a top-level ``images`` list) in its first 64 KB."""
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return b'"images"' in head and b'"resources"' not in head


def _read_coco(path: Path) -> _Table:
    """The ``images`` of a COCO Camera Traps JSON file as a text table (one row per image, in file order)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: cannot read as COCO Camera Traps JSON: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
        raise TraceError(f"{path}: not COCO Camera Traps JSON (no 'images' list of objects)")
    keys = [k for k in _COCO_KEYS if any(k in i for i in images)]
    if "datetime" not in keys:
        raise TraceError(f"{path}: the images have no 'datetime' field to replay")
    data = {k: [None if i.get(k) is None else str(i[k]) for i in images] for k in keys}
    frame = pl.DataFrame(data, schema={k: pl.String for k in keys})
    return _Table(frame, np.arange(1, frame.height + 1), str(path), "coco-camera-traps", frame.height, {})


def _read_camtrap(path: Path) -> _Table:
    """Camtrap DP media table(s), with each deployment's location and camera joined in when known."""
    media_paths = _camtrap_paths(path, "media")
    frames = [_read_csv(media) for media in media_paths]
    frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    table = _without_blank_lines(frame, ", ".join(map(str, media_paths)), "camtrap-dp")
    deployments = _camtrap_deployments(path, media_paths[0])
    if deployments is None or "deploymentID" not in table.frame.columns:
        return table
    extra = [c for c in (*FILTERS["location"], *FILTERS["camera"]) if c in deployments.columns]
    extra = [c for c in extra if c not in table.frame.columns]
    if not extra:
        return table
    lookup = deployments.select("deploymentID", *extra).unique("deploymentID", keep="first")
    joined = table.frame.join(lookup, on="deploymentID", how="left", maintain_order="left")
    return _Table(joined, table.rows, table.file, table.format, table.n_rows, table.dropped)


def _camtrap_deployments(path: Path, media: Path) -> pl.DataFrame | None:
    """The deployments table of a data package (resource or ``deployments.csv`` beside the media), if any."""
    try:
        found = _camtrap_paths(path, "deployments")
    except TraceError:
        found = []
    candidates = [*found, media.parent / "deployments.csv", media.with_name(media.name.replace("media", "deployments"))]
    for candidate in candidates:
        if candidate.is_file() and candidate != media:
            return _read_csv(candidate)
    return None


def _camtrap_paths(path: Path, resource: str) -> list[Path]:
    """The file(s) of one resource of a Camtrap DP package given its folder, datapackage.json or media.csv."""
    if path.is_dir():
        package = path / "datapackage.json"
        path = package if package.is_file() else path / f"{resource}.csv"
    if path.suffix.lower() != ".json":
        return [path] if resource == "media" else []
    try:
        package_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the data package: {exc}") from None
    resources = package_json.get("resources") if isinstance(package_json, dict) else None
    if not isinstance(resources, list):
        raise TraceError(f"{path}: not a data package (no 'resources' list)")
    match = [r for r in resources if isinstance(r, dict) and r.get("name") == resource]
    if not match:
        names = [str(r.get("name")) for r in resources if isinstance(r, dict)]
        raise TraceError(f"{path}: no {resource!r} resource in the data package (has {', '.join(names) or 'none'})")
    parts = match[0].get("path")
    parts = [parts] if isinstance(parts, str) else parts
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise TraceError(f"{path}: the {resource!r} resource has no file path (inline data is not supported)")
    found = [path.parent / p for p in parts]
    for file_path in found:
        if not file_path.is_file():
            raise TraceError(f"{path}: {resource} resource file {str(file_path)!r} not found")
    return found
