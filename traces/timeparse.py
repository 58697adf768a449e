"""Turning a column of recorded timestamps into seconds, vectorised, with one-line errors.

Two kinds of column are understood:

* **numbers** in seconds (``unit = "s"``) or milliseconds (``unit = "ms"``), e.g. epoch times or offsets
  from the start of a recording.  NaN, infinite and negative values are errors.
* **ISO 8601 strings**: ``2020-05-30T04:57:40+02:00``, ``2020-07-29T05:29:41Z``, ``2024-01-01``, the
  Azure-style ``2023-11-16 18:17:03.9799600`` (space instead of ``T``, any number of fractional digits,
  no offset) and the EXIF-style ``2013:03:29 14:02:18`` of camera-trap metadata (``:`` or ``/`` between
  the date fields).  Times without an offset are taken in ``timezone`` (a fixed offset such as
  ``+02:00``, or an IANA name such as ``Europe/Brussels``, which follows daylight-saving changes), or as
  UTC when none is given; only *differences* matter to a replay, so UTC is exact unless the recording
  crosses a daylight-saving change.  A column that mixes times with and without an offset is ambiguous
  and an error unless ``timezone`` says what the ones without mean.

``auto`` refuses a numeric column whose unit cannot be told: no unit in its name, not epoch-like, and a
span of more than a day if read as seconds (12,031 requests in "41.7 days" are far more likely an hour of
milliseconds).  The error names both spans and the ``unit`` option to set.

Parsing is done with one regular expression over the whole column (polars) and civil-date arithmetic in
numpy, so a million rows take a fraction of a second and the first bad row can be named exactly.
Precision: whole seconds are kept as int64 and the fraction separately, so times *relative to the first
event* keep sub-microsecond resolution even for epoch-scale timestamps.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from edgeprune.errors import TraceError

__all__ = ["ParsedTimes", "TimeUnit", "check_timezone", "parse_times", "resolve_numeric_unit"]

TimeUnit = Literal["auto", "iso8601", "s", "ms"]

_ISO_RE = (
    r"^\s*(\d{4})[-:/](\d{2})[-:/](\d{2})"  # 1-3: date (ISO, EXIF "2013:03:29" or "2013/03/29")
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"  # 4-7: hh:mm[:ss[.frac]]
    r"\s*(?:(Z|z)|([+-])(\d{2}):?(\d{2})?)?\s*$"  # 8: Z, 9-11: sign, offset hours, offset minutes
)
_ISO_EXAMPLE = "expected ISO 8601 such as 2024-05-01T12:00:00Z or a number"
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_MS_NAME_SUFFIXES = ("_ms", "ms", "millis", "milliseconds")
_EPOCH_MS_THRESHOLD = 1e11  # a median above this is an epoch in ms (1e11 s would be year 5138)
_EPOCH_S_THRESHOLD = 1e8  # every value above this (1973-03-03 as seconds) looks like an epoch, not an offset
_AMBIGUOUS_SPAN_S = 86400.0  # a relative numeric trace longer than a day as seconds: ask for the unit
_OFFSET_RE = re.compile(r"^(?:UTC|GMT|Z)?\s*([+-])(\d{1,2}):?(\d{2})?$|^(?:UTC|GMT|Z)$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedTimes:
    """A parsed time column, in input order.

    ``rel_s`` are seconds after the earliest value (so ``rel_s.min() == 0``); ``origin`` is that earliest
    value as an ISO 8601 string (ISO input) or as the raw number in the column's unit (numeric input);
    ``unit`` is the unit actually used (``"auto"`` resolved).
    """

    rel_s: np.ndarray
    origin: str | float
    unit: Literal["iso8601", "s", "ms"]


def parse_times(
    values: pl.Series, rows: np.ndarray, *, unit: TimeUnit, file: str, column: str, timezone: str | None = None
) -> ParsedTimes:
    """Parse ``values`` (one column) into seconds; ``rows`` are the 1-based data-row numbers for errors.

    Numeric dtypes, numeric or ISO 8601 strings, datetimes and dates are accepted; ``unit`` forces the
    interpretation.  With ``"auto"`` a text column that is mostly numbers is numeric (its other cells are
    reported as unparseable numbers), otherwise ISO 8601; numbers get :func:`resolve_numeric_unit`.
    ``timezone`` is the zone of times written without an offset (see the module docstring).
    """
    where = _Where(file, column, rows, timezone)
    if values.len() == 0:
        raise TraceError(f"{file}: column {column!r} has no rows to replay")
    _reject_nulls(values, where)
    dtype = values.dtype
    if dtype == pl.Datetime or dtype == pl.Date:
        return _from_temporal(values, where)
    if dtype.is_numeric():
        return _from_numbers(values.cast(pl.Float64).to_numpy(), column, unit, where)
    if dtype != pl.String:
        raise TraceError(f"{file}: column {column!r} has type {dtype}, expected times (numbers or ISO 8601 strings)")
    as_numbers = values.str.strip_chars().cast(pl.Float64, strict=False)
    mostly_numbers = 2 * as_numbers.null_count() < values.len()
    if unit in ("s", "ms") or (unit == "auto" and mostly_numbers):
        if as_numbers.null_count():
            raise where.error(as_numbers.is_null().to_numpy(), values, "unparseable number")
        return _from_numbers(as_numbers.to_numpy(), column, unit, where)
    if as_numbers.null_count() == 0:  # unit == "iso8601"
        raise TraceError(f"{file}: column {column!r} holds numbers, not ISO 8601 times (set unit = 's' or 'ms')")
    return _from_iso(values, where)


def resolve_numeric_unit(column: str, values_s_or_ms: np.ndarray) -> Literal["s", "ms"]:
    """The unit ``"auto"`` means for a numeric column: ``ms`` if the name says so or the values are epoch ms.

    A name ending in ``_ms`` / ``ms`` / ``millis`` gives ``ms``; otherwise a median above 1e11 (epoch
    milliseconds; as seconds it would be the year 5138) gives ``ms``; anything else is seconds.
    """
    name = column.lower()
    if name.endswith(_MS_NAME_SUFFIXES):
        return "ms"
    finite = values_s_or_ms[np.isfinite(values_s_or_ms)]
    if finite.size and float(np.median(finite)) > _EPOCH_MS_THRESHOLD:
        return "ms"
    return "s"


@dataclass(frozen=True)
class _Where:
    """Where a column came from, to name the file, row and column in an error."""

    file: str
    column: str
    rows: np.ndarray
    timezone: str | None = None

    def error(self, bad: np.ndarray, values: pl.Series | np.ndarray, problem: str) -> TraceError:
        """A one-line error naming the first bad row (``bad`` is a boolean mask) and how many more there are."""
        idx = np.flatnonzero(bad)
        first = int(idx[0])
        more = f" (and {idx.size - 1} more rows)" if idx.size > 1 else ""
        shown = values[first]
        if isinstance(shown, np.generic):
            shown = shown.item()
        text = f"{problem}: {shown!r}" if shown is not None else f"{problem} (empty)"
        return TraceError(f"{self.file}: row {int(self.rows[first])}, column {self.column!r}: {text}{more}")


def _reject_nulls(values: pl.Series, where: _Where) -> None:
    if values.null_count():
        mask = values.is_null().to_numpy()
        raise where.error(mask, values, "missing time")


def _from_numbers(raw: np.ndarray, column: str, unit: TimeUnit, where: _Where) -> ParsedTimes:
    raw = np.asarray(raw, dtype=np.float64)
    if unit == "iso8601":
        raise TraceError(f"{where.file}: column {column!r} holds numbers, not ISO 8601 times (set unit = 's' or 'ms')")
    if np.isnan(raw).any():
        raise where.error(np.isnan(raw), raw, "time is NaN")
    if np.isinf(raw).any():
        raise where.error(np.isinf(raw), raw, "time is infinite")
    if (raw < 0).any():
        raise where.error(raw < 0, raw, "negative time")
    resolved = resolve_numeric_unit(column, raw) if unit == "auto" else unit
    if unit == "auto":
        _refuse_ambiguous_unit(raw, column, resolved, where)
    scale = 1e-3 if resolved == "ms" else 1.0
    lowest = float(raw.min())
    return ParsedTimes(rel_s=(raw - lowest) * scale, origin=lowest, unit=resolved)


def _refuse_ambiguous_unit(raw: np.ndarray, column: str, resolved: str, where: _Where) -> None:
    """``auto`` on a relative numeric column spanning more than a day as seconds: the unit must be said."""
    if resolved != "s" or float(raw.min()) >= _EPOCH_S_THRESHOLD:
        return
    span = float(raw.max() - raw.min())
    if span <= _AMBIGUOUS_SPAN_S:
        return
    raise TraceError(
        f"{where.file}: column {column!r} holds numbers from {raw.min():g} to {raw.max():g} with no unit in its "
        f"name: as seconds the trace spans {_human_s(span)}, as milliseconds {_human_s(span / 1000)}; "
        "set unit = 'ms' (or unit = 's')"
    )


def _human_s(span_s: float) -> str:
    """A duration in the largest fitting unit (s, min, h, days)."""
    for name, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if span_s >= size:
            return f"{span_s / size:.3g} {name}"
    return f"{span_s:.3g} s"


def _from_temporal(values: pl.Series, where: _Where) -> ParsedTimes:
    """Datetime / Date columns (Parquet, typed JSON): exact integer microseconds since the epoch."""
    aware = _is_aware(values.dtype)
    zone = values.dtype.time_zone if isinstance(values.dtype, pl.Datetime) else None
    stamps = values.cast(pl.Datetime("us", zone))
    if not aware and where.timezone is not None:
        stamps = _localised(stamps, where.timezone)
        aware = True
    micros = stamps.dt.epoch("us").to_numpy().astype(np.int64)
    lowest = int(micros.min())
    origin = _iso_origin(lowest // 1_000_000, (lowest % 1_000_000) / 1e6, aware=aware)
    return ParsedTimes(rel_s=(micros - lowest) / 1e6, origin=origin, unit="iso8601")


def check_timezone(timezone: str) -> str:
    """``timezone`` if it is a UTC offset (``+02:00``, ``-0500``, ``UTC``) or a known IANA zone name, else an error."""
    if _OFFSET_RE.match(timezone.strip()):
        return timezone
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise TraceError(
            f"timezone = {timezone!r}: not a UTC offset (e.g. '+02:00') or an IANA zone name (e.g. 'Europe/Brussels')"
        ) from None
    return timezone


def _offset_s(timezone: str) -> int | None:
    """The fixed offset of ``timezone`` in seconds, or None for an IANA zone name."""
    m = _OFFSET_RE.match(timezone.strip())
    if m is None:
        return None
    if m.group(1) is None:
        return 0
    sign = -1 if m.group(1) == "-" else 1
    return sign * (int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60)


def _localised(naive: pl.Series, timezone: str) -> pl.Series:
    """Naive wall-clock datetimes read in ``timezone``, as UTC instants (DST-aware for IANA names)."""
    fixed = _offset_s(check_timezone(timezone))
    if fixed is not None:
        shifted = naive.to_frame("t").select(pl.col("t") - pl.duration(seconds=fixed)).to_series()
        return shifted.dt.replace_time_zone("UTC")
    return naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def _zone_offsets_s(whole_s: np.ndarray, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row UTC offsets (s) of naive wall-clock epoch seconds read in ``timezone``; -1 marks a skipped time.

    A wall-clock time inside a daylight-saving gap does not exist and gives the sentinel; a repeated one
    (the hour after the clocks go back) takes the earlier instant.
    """
    fixed = _offset_s(check_timezone(timezone))
    if fixed is not None:
        return np.full(whole_s.shape, fixed, dtype=np.int64), np.zeros(whole_s.shape, dtype=bool)
    naive = pl.from_epoch(pl.Series(whole_s), time_unit="s")
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    utc = local.dt.epoch("s").to_numpy()
    missing = local.is_null().to_numpy()
    utc_s = np.where(missing, 0, np.nan_to_num(np.asarray(utc, dtype=np.float64))).astype(np.int64)
    return np.where(missing, -1, whole_s - utc_s).astype(np.int64), missing


def _is_aware(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Datetime) and dtype.time_zone is not None


def _from_iso(values: pl.Series, where: _Where) -> ParsedTimes:
    parts = values.str.extract_groups(_ISO_RE).struct.unnest()
    year = parts["1"]
    if year.null_count():
        raise where.error(year.is_null().to_numpy(), values, f"unparseable time ({_ISO_EXAMPLE})")
    whole_s, frac_s, aware = _iso_parts_to_epoch(parts, values, where)
    if where.timezone is not None and not aware.all():
        offsets, skipped = _zone_offsets_s(whole_s[~aware], where.timezone)
        if skipped.any():
            bad = np.zeros(aware.shape, dtype=bool)
            bad[np.flatnonzero(~aware)[skipped]] = True
            raise where.error(bad, values, f"time does not exist in {where.timezone} (a daylight-saving gap)")
        whole_s = whole_s.copy()
        whole_s[~aware] -= offsets
        aware = np.ones(aware.shape, dtype=bool)
    if aware.any() and not aware.all():
        raise where.error(~aware, values, "time has no UTC offset while other rows have one")
    base = int(whole_s.min())
    rel = (whole_s - base).astype(np.float64) + frac_s
    first = int(np.argmin(rel))
    lowest = float(rel[first])
    origin = _iso_origin(int(whole_s[first]), float(frac_s[first]), aware=bool(aware[0]))
    return ParsedTimes(rel_s=rel - lowest, origin=origin, unit="iso8601")


def _ints(parts: pl.DataFrame, name: str, default: int = 0) -> np.ndarray:
    return parts[name].cast(pl.Int64).fill_null(default).to_numpy().astype(np.int64)


def _iso_parts_to_epoch(
    parts: pl.DataFrame, values: pl.Series, where: _Where
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole epoch seconds (int64), fraction of a second (float) and offset-awareness (bool), per row."""
    year, month, day = _ints(parts, "1"), _ints(parts, "2"), _ints(parts, "3")
    hour, minute, second = _ints(parts, "4"), _ints(parts, "5"), _ints(parts, "6")
    off_h, off_m = _ints(parts, "10"), _ints(parts, "11")
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    bad = ~month_ok | (day < 1) | (day > dim) | (hour > 23) | (minute > 59) | (second > 60)
    bad |= (off_h > 23) | (off_m > 59)
    if bad.any():
        raise where.error(bad, values, "invalid date or time")
    sign = np.where(parts["9"].fill_null("+").to_numpy() == "-", -1, 1)
    offset_s = sign * (off_h * 3600 + off_m * 60)
    whole = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s
    digits = parts.select((pl.lit("0.") + pl.col("7").fill_null("0")).cast(pl.Float64)).to_series()
    frac_s = digits.to_numpy()
    aware = (parts["8"].is_not_null() | parts["9"].is_not_null()).to_numpy()
    return whole, np.asarray(frac_s, dtype=np.float64), aware


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), vectorised."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(month > 2, month - 3, month + 9)
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _iso_origin(whole_s: int, frac_s: float, *, aware: bool) -> str:
    """The absolute time of the first event as ISO 8601 (``Z`` when the input had offsets)."""
    stamp = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=whole_s, microseconds=round(frac_s * 1e6))
    return stamp.isoformat() + ("Z" if aware else "")
