"""Recorded-trace importers and replay, on small fixtures written to tmp dirs in every supported format."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.errors import TraceError
from traces import ReplayArrivals, arrival_stats, generate, load_replay, load_trace, window_trace


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# --- CSV -----------------------------------------------------------------------------------------------


def test_csv_seconds_unsorted_with_ties_is_sorted_and_keeps_ties(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "id,time\na,105.5\nb,100\nc,103\nd,103\ne,100.25\n")
    info = load_trace(f)
    assert info.times_s.tolist() == [0.0, 0.25, 3.0, 3.0, 5.5]
    assert info.origin == 100.0 and info.unit == "s" and info.column == "time"
    assert not info.was_sorted and "out of order" in info.describe()
    assert info.n_rows == 5 and info.n_dropped == 0


def test_csv_milliseconds_by_column_name_or_explicit_unit(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "t_ms,x\n1000,1\n1500,2\n4000,3\n")
    assert load_trace(f, column="t_ms").times_s.tolist() == [0.0, 0.5, 3.0]
    g = write(tmp_path / "u.csv", "t\n1000\n1500\n")
    assert load_trace(g, unit="ms").times_s.tolist() == [0.0, 0.5]
    assert load_trace(g).times_s.tolist() == [0.0, 500.0]  # 'auto' on a plain name is seconds


def test_csv_epoch_milliseconds_are_recognised(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "timestamp\n1700000000000\n1700000000250\n1700000002000\n")
    info = load_trace(f)
    assert info.unit == "ms"
    assert info.times_s == pytest.approx([0.0, 0.25, 2.0])


def test_iso_times_with_z_and_offsets_are_put_on_one_clock(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.csv",
        "ts\n2024-03-01T12:00:10Z\n2024-03-01T14:00:00+02:00\n2024-03-01T11:30:05.5-00:30\n2024-03-01T12:00:00.25Z\n",
    )
    info = load_trace(f, column="ts")
    assert info.times_s == pytest.approx([0.0, 0.25, 5.5, 10.0])
    assert info.origin == "2024-03-01T12:00:00Z"
    assert info.unit == "iso8601"


def test_azure_style_datetimes_with_seven_fractional_digits(tmp_path: Path) -> None:
    f = write(
        tmp_path / "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n2023-11-16 18:17:05.0000001,1,1\n",
    )
    info = load_trace(f)  # 'TIMESTAMP' found without naming it
    assert info.column == "TIMESTAMP"
    assert info.times_s == pytest.approx([0.0, 0.052, 1.0200401], abs=1e-9)
    assert info.origin == "2023-11-16T18:17:03.979960"


def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    f = write(tmp_path / "t.tsv", "time\tx\n1\ta\n3\tb\n")
    assert load_trace(f).times_s.tolist() == [0.0, 2.0]


# --- JSON Lines and Parquet ----------------------------------------------------------------------------


def test_jsonl_numbers_and_iso_strings(tmp_path: Path) -> None:
    f = write(tmp_path / "t.jsonl", '{"t": 5.0, "m": "a"}\n{"t": 2.0, "m": "b"}\n{"t": 2.5, "m": "c"}\n')
    assert load_trace(f, column="t").times_s.tolist() == [0.0, 0.5, 3.0]
    g = write(tmp_path / "t.ndjson", '{"when": "2024-01-01T00:00:01Z"}\n{"when": "2024-01-01T00:00:00Z"}\n')
    info = load_trace(g)
    assert info.times_s.tolist() == [0.0, 1.0] and info.format == "jsonl"


def test_parquet_numeric_and_datetime_columns(tmp_path: Path) -> None:
    f = tmp_path / "t.parquet"
    pl.DataFrame({"arrival_ms": [30, 10, 20], "x": [1, 2, 3]}).write_parquet(f)
    assert load_trace(f, column="arrival_ms").times_s == pytest.approx([0.0, 0.01, 0.02])
    g = tmp_path / "d.parquet"
    stamps = pl.Series(["2024-01-01T00:00:02.5", "2024-01-01T00:00:00"]).str.to_datetime(time_unit="us")
    pl.DataFrame({"time": stamps}).write_parquet(g)
    info = load_trace(g)
    assert info.times_s.tolist() == [0.0, 2.5]
    assert info.origin == "2024-01-01T00:00:00"


# --- Camtrap DP ----------------------------------------------------------------------------------------

MEDIA = """mediaID,deploymentID,sequenceID,captureMethod,timestamp,filePath,fileName,fileMediatype
m3,depB,s3,activityDetection,2020-05-30T05:00:00+02:00,x,c.jpg,image/jpeg
m1,depA,s1,activityDetection,2020-05-30T02:57:37Z,x,a.jpg,image/jpeg
m2,depA,s1,activityDetection,2020-05-30T02:57:37Z,x,b.jpg,image/jpeg
m4,depA,s2,activityDetection,2020-05-30T02:58:07Z,x,d.jpg,image/jpeg
m5,depB,s3,activityDetection,2020-05-30T05:00:02+02:00,x,e.jpg,image/jpeg
"""


@pytest.fixture
def camtrap(tmp_path: Path) -> Path:
    package = {
        "name": "test-package",
        "resources": [
            {"name": "deployments", "path": "deployments.csv"},
            {"name": "media", "path": "media.csv", "format": "csv"},
        ],
    }
    write(tmp_path / "datapackage.json", json.dumps(package))
    write(tmp_path / "media.csv", MEDIA)
    return tmp_path


def test_camtrap_media_csv_is_detected_and_merges_deployments(camtrap: Path) -> None:
    info = load_trace(camtrap / "media.csv")
    assert info.format == "camtrap-dp" and info.column == "timestamp"
    assert info.times_s.tolist() == [0.0, 0.0, 30.0, 143.0, 145.0]
    assert "all 2 deployments" in info.source


def test_camtrap_one_deployment_reports_the_others_as_dropped(camtrap: Path) -> None:
    info = load_trace(camtrap / "media.csv", deployment="depB")
    assert info.times_s.tolist() == [0.0, 2.0]
    assert info.origin == "2020-05-30T03:00:00Z"
    assert dict(info.dropped) == {"other deployments": 3} and info.n_dropped == 3
    assert "3 other deployments" in info.describe()


@pytest.mark.parametrize("where", ["datapackage.json", "."])
def test_camtrap_datapackage_or_folder_finds_the_media_resource(camtrap: Path, where: str) -> None:
    info = load_trace(camtrap / where, deployment="depA")
    assert info.times_s.tolist() == [0.0, 0.0, 30.0]
    assert info.source.endswith("media.csv [deployment 'depA']")


def test_camtrap_unknown_deployment_names_the_closest(camtrap: Path) -> None:
    with pytest.raises(TraceError, match=r"media.csv: no rows for deployment 'depC' \(did you mean 'dep[AB]'\?\)"):
        load_trace(camtrap / "media.csv", deployment="depC")


def test_datapackage_with_a_missing_media_file_names_it(tmp_path: Path) -> None:
    write(tmp_path / "datapackage.json", json.dumps({"resources": [{"name": "media", "path": "media.csv"}]}))
    with pytest.raises(TraceError, match=r"datapackage.json: media resource file '.*media.csv' not found"):
        load_trace(tmp_path / "datapackage.json")


def test_deployment_filter_needs_a_deployment_column(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "time\n1\n")
    with pytest.raises(TraceError, match=r"t.csv: no deployment column \(deploymentID, deployment_id, deployment\)"):
        load_trace(f, deployment="x")


# --- bad input: one line naming file, row and column --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("t\n1\n2\nNaN\n4\n", r"bad.csv: row 3, column 't': time is NaN: nan$"),
        ("t\n1\n-2\n3\n-4\n", r"bad.csv: row 2, column 't': negative time: -2.0 \(and 1 more rows\)$"),
        ("t,x\n1,a\n,b\n", r"bad.csv: row 2, column 't': missing time \(empty\)$"),
        ("t\n2024-01-01T00:00:00Z\nyesterday\n", r"bad.csv: row 2, column 't': unparseable time \(expected ISO 8601"),
        ("t\n2024-02-30T00:00:00Z\n", r"bad.csv: row 1, column 't': invalid date or time: '2024-02-30T00:00:00Z'$"),
        ("t\n2024-01-01T00:00:00Z\n2024-01-01T00:00:01\n", r"row 2, column 't': time has no UTC offset"),
        ("t\n1\ntwo\n3\n", r"bad.csv: row 2, column 't': unparseable number: 'two'$"),
    ],
)
def test_bad_times_are_one_line_errors_naming_file_row_and_column(
    tmp_path: Path, body: str, message: str | None
) -> None:
    f = write(tmp_path / "bad.csv", body)
    with pytest.raises(TraceError, match=message) as err:
        load_trace(f, column="t")
    assert "\n" not in str(err.value)


def test_unparseable_number_with_an_explicit_unit(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.csv", "t\n1\n2x\n")
    with pytest.raises(TraceError, match=r"bad.csv: row 2, column 't': unparseable number: '2x'"):
        load_trace(f, unit="s")


def test_iso_unit_on_numbers_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "n.csv", "t\n1\n2\n")
    with pytest.raises(TraceError, match=r"column 't' holds numbers, not ISO 8601"):
        load_trace(f, unit="iso8601")


def test_bad_row_is_counted_in_the_file_even_after_a_deployment_filter(camtrap: Path) -> None:
    write(camtrap / "media.csv", MEDIA.replace("2020-05-30T02:58:07Z", "not a time"))
    with pytest.raises(TraceError, match=r"media.csv: row 4, column 'timestamp': unparseable time"):
        load_trace(camtrap / "media.csv", deployment="depA")
    assert load_trace(camtrap / "media.csv", deployment="depB").n_events == 2  # the bad row is filtered out


def test_missing_column_suggests_the_closest_name(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "arrival_time,size\n1,2\n")
    with pytest.raises(TraceError, match=r"t.csv: no column 'arival_time' \(did you mean 'arrival_time'\?\)"):
        load_trace(f, column="arival_time")
    g = write(tmp_path / "u.csv", "TIMESTAMP,x\n1,2\n")
    with pytest.raises(TraceError, match=r"no column 'timestamp' \(did you mean 'TIMESTAMP'\?\)"):
        load_trace(g, column="timestamp")


def test_ambiguous_columns_ask_which_one(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(TraceError, match=r"which column holds the times\? set column to one of 'a', 'b'"):
        load_trace(f)


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nope.csv: trace file not found"):
        load_trace(tmp_path / "nope.csv")
    f = write(tmp_path / "t.xlsx", "x")
    with pytest.raises(TraceError, match=r"t.xlsx: cannot tell the trace format from '.xlsx'"):
        load_trace(f)


def test_empty_csv_has_no_rows(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "time\n")
    with pytest.raises(TraceError, match=r"t.csv: column 'time' has no rows"):
        load_trace(f)


# --- windowing, speed-up, looping and the generate contract --------------------------------------------


@pytest.fixture
def ten(tmp_path: Path) -> Path:
    return write(tmp_path / "ten.csv", "time\n" + "".join(f"{100 + i}\n" for i in (9, 0, 1, 2, 3, 4, 5, 6, 7, 8)))


def test_window_keeps_the_interval_and_says_what_it_dropped(ten: Path) -> None:
    info = window_trace(load_trace(ten), start_s=2.5, end_s=6.0, speedup=2.0)
    assert info.times_s.tolist() == [0.25, 0.75, 1.25]  # events 3, 4, 5 s after the first, from 2.5 s, halved
    assert dict(info.dropped) == {"before start_s": 3, "at or after end_s": 4}
    assert "window [2.5, 6) s, speedup 2" in info.source


def test_empty_window_is_an_error(ten: Path) -> None:
    with pytest.raises(TraceError, match=r"ten.csv: no events in the window \[20 s, the end\) of a 9 s trace"):
        window_trace(load_trace(ten), start_s=20.0)


def test_replay_generate_respects_duration_and_n_requests(ten: Path) -> None:
    spec = ReplayArrivals(str(ten), start_s=1.0)
    assert generate(ReplayArrivals(str(ten), start_s=1.0, end_s=4.0), rng(), duration_s=3.0).tolist() == [0, 1, 2]
    with pytest.raises(TraceError, match=r"duration_s = 3 s replays only 3 of 9 rows .*set end_s = 4 to replay"):
        generate(spec, rng(), duration_s=3.0)  # a silent cut of 6 of 9 rows is refused
    assert generate(spec, rng(), n_requests=4).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert generate(spec, rng()).size == 9
    with pytest.raises(TraceError, match=r"only 9 arrivals in the trace, n_requests = 10; set loop = true"):
        generate(spec, rng(), n_requests=10)


def test_looped_replay_keeps_the_rate_across_the_seam(ten: Path) -> None:
    spec = ReplayArrivals(str(ten), loop=True)
    a = generate(spec, rng(), n_requests=25)
    assert a.tolist() == [float(i) for i in range(25)]
    b = generate(spec, rng(), duration_s=31.5)
    assert b.size == 32 and np.all(np.diff(b) == 1.0)


def test_looped_window_repeats_every_window_length(ten: Path) -> None:
    spec = ReplayArrivals(str(ten), start_s=0.5, end_s=3.0, speedup=0.5, loop=True)  # 0.5 = half speed
    a = generate(spec, rng(), duration_s=10.0)
    assert a.tolist() == [1.0, 3.0, 6.0, 8.0]


def test_load_replay_is_cached_but_sees_a_changed_file(ten: Path) -> None:
    spec = ReplayArrivals(str(ten))
    first = load_replay(spec)
    assert load_replay(spec).times_s is first.times_s
    assert not first.times_s.flags.writeable
    write(ten, "time\n1\n2\n3\n4\n5\n6\n7\n")
    assert load_replay(spec).n_events == 7


def test_replay_of_a_bursty_csv_measures_burstiness(tmp_path: Path) -> None:
    times = np.concatenate([np.arange(10) * 0.01 + k * 100.0 for k in range(5)])
    f = write(tmp_path / "b.csv", "t_ms\n" + "\n".join(str(round(x * 1000)) for x in times) + "\n")
    summary = arrival_stats(load_trace(f).times_s)
    assert summary.n == 50 and summary.cv_gap > 3.0
    assert summary.peak_rate_1s_hz == 10.0


def test_blank_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "t,x\n1,a\n\n3,b\n\n")
    info = load_trace(f)
    assert info.times_s.tolist() == [0.0, 2.0]
    assert dict(info.dropped) == {"blank lines": 2}


@settings(max_examples=30, deadline=None)
@given(
    millis=st.lists(st.integers(0, 4_000_000_000_000), min_size=1, max_size=40),
    offsets_min=st.lists(st.sampled_from([0, 60, -90, 330, -600]), min_size=40, max_size=40),
)
def test_iso_round_trip_recovers_sorted_relative_times(millis: list[int], offsets_min: list[int]) -> None:
    stamps = []
    for ms, off in zip(millis, offsets_min, strict=False):
        zone = dt.timezone(dt.timedelta(minutes=off))
        local = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(zone)
        stamps.append(local.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    with tempfile.TemporaryDirectory() as tmp:
        f = write(Path(tmp) / "t.csv", "timestamp\n" + "\n".join(stamps) + "\n")
        info = load_trace(f)
    expected = (np.sort(np.array(millis)) - min(millis)) / 1000
    assert np.allclose(info.times_s, expected, rtol=0, atol=1e-6)
    assert info.was_sorted == bool(np.all(np.diff(millis) >= 0))
