"""Exports as users have them: split date/time columns, time zones, COCO Camera Traps, Wildlife Insights,
Camtrap DP with its deployments table, EXIF-style dates, and the refusals that keep a replay from silently
dropping most of a trace.  Every fixture is built here in the real layout of its format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from edgeprune.errors import ConfigError, TraceError
from traces import ReplayArrivals, generate, load_trace, replay_report
from traces.spec import validate


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- several columns make one timestamp ----------------------------------------------------------------

DWC = """occurrenceID,eventDate,eventTime,scientificName
o1,2021-06-01,08:19:46,Vulpes vulpes
o2,2021-06-01,08:20:00,Vulpes vulpes
o3,2021-06-02,00:00:01,Meles meles
"""


def test_split_date_and_time_columns_are_joined_exactly(tmp_path: Path) -> None:
    f = write(tmp_path / "occ.csv", DWC)
    info = load_trace(f, column=["eventDate", "eventTime"])
    assert info.column == "eventDate + eventTime"
    assert info.times_s.tolist() == [0.0, 14.0, 15 * 3600 + 40 * 60 + 15.0]
    assert info.origin == "2021-06-01T08:19:46"


def test_split_date_and_time_are_found_without_being_named(tmp_path: Path) -> None:
    info = load_trace(write(tmp_path / "occ.csv", DWC))
    assert info.column == "eventDate + eventTime" and info.times_s[1] == 14.0


def test_a_time_of_day_column_alone_is_refused_with_the_pair_to_set(tmp_path: Path) -> None:
    f = write(tmp_path / "occ.csv", DWC)
    with pytest.raises(TraceError, match=r"column 'eventTime' holds only times of day .*\['eventDate', 'eventTime'\]"):
        load_trace(f, column="eventTime")


def test_default_choice_prefers_the_full_timestamp_over_a_time_of_day(tmp_path: Path) -> None:
    body = "time,captured_at,species\n08:19:46,2021-06-01T08:19:46,fox\n08:19:50,2021-06-01T08:19:50,fox\n"
    info = load_trace(write(tmp_path / "c.csv", body))
    assert info.column == "captured_at" and info.times_s.tolist() == [0.0, 4.0]


# --- time zones -------------------------------------------------------------------------------------------


def test_a_fixed_offset_puts_local_times_on_utc_exactly(tmp_path: Path) -> None:
    info = load_trace(write(tmp_path / "occ.csv", DWC), column=["eventDate", "eventTime"], timezone="+02:00")
    assert info.origin == "2021-06-01T06:19:46Z" and info.times_s[1] == 14.0


def test_an_iana_zone_follows_the_daylight_saving_change_to_the_second(tmp_path: Path) -> None:
    # Brussels springs forward at 02:00 local on 2020-03-29: 01:59:50 -> 03:00:10 is 20 s, not an hour
    body = "timestamp\n2020-03-29 01:59:50\n2020-03-29 03:00:10\n"
    f = write(tmp_path / "t.csv", body)
    assert load_trace(f).times_s.tolist() == [0.0, 3620.0]  # as UTC wall clock
    info = load_trace(f, timezone="Europe/Brussels")
    assert info.times_s.tolist() == [0.0, 20.0] and info.origin == "2020-03-29T00:59:50Z"


def test_times_with_offsets_keep_them_when_a_zone_is_given(tmp_path: Path) -> None:
    body = "timestamp\n2020-05-30T04:57:40+02:00\n2020-05-30 03:00:00\n"
    info = load_trace(write(tmp_path / "t.csv", body), timezone="UTC")
    assert info.times_s.tolist() == [0.0, 140.0]  # 02:57:40Z to 03:00:00 read as UTC


def test_an_unknown_zone_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"timezone = 'Europe/Brusels': not a UTC offset"):
        validate(ReplayArrivals("x.csv", timezone="Europe/Brusels"))


# --- COCO Camera Traps (LILA) --------------------------------------------------------------------------


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    images = [
        {
            "id": "a1",
            "file_name": "a1.jpg",
            "datetime": "2013-03-29 14:02:18",
            "seq_id": "s1",
            "frame_num": 0,
            "location": 12,
        },
        {
            "id": "a2",
            "file_name": "a2.jpg",
            "datetime": "2013-03-29 14:02:19",
            "seq_id": "s1",
            "frame_num": 1,
            "location": 12,
        },
        {
            "id": "b1",
            "file_name": "b1.jpg",
            "datetime": "2013-03-29 09:00:00",
            "seq_id": "s2",
            "frame_num": 0,
            "location": 7,
        },
        {
            "id": "a3",
            "file_name": "a3.jpg",
            "datetime": "2013-03-29 15:00:00",
            "seq_id": "s3",
            "frame_num": 0,
            "location": 12,
        },
    ]
    doc = {"info": {"version": "1.0"}, "images": images, "annotations": [], "categories": [{"id": 0, "name": "empty"}]}
    return write(tmp_path / "lila.json", json.dumps(doc))


def test_coco_camera_traps_json_replays_its_image_datetimes(coco: Path) -> None:
    info = load_trace(coco)
    assert info.format == "coco-camera-traps" and info.column == "datetime"
    assert info.times_s.tolist() == [0.0, 18138.0, 18139.0, 21600.0]
    assert info.sequences is not None and info.sequences.tolist() == ["s2", "s1", "s1", "s3"]


def test_coco_location_filter_counts_the_other_locations(coco: Path) -> None:
    info = load_trace(coco, location="12")
    assert info.times_s.tolist() == [0.0, 1.0, 3462.0]
    assert dict(info.dropped) == {"other locations": 1}
    with pytest.raises(TraceError, match=r"no rows for location '13' \(did you mean '12'\?\)"):
        load_trace(coco, location="13")


def test_exif_style_dates_of_camera_metadata_are_read(tmp_path: Path) -> None:
    f = write(tmp_path / "exif.csv", "DateTimeOriginal\n2013:03:29 14:02:18\n2013:03:29 14:02:20\n")
    assert load_trace(f).times_s.tolist() == [0.0, 2.0]


# --- Wildlife Insights images.csv and Camtrap DP with deployments ----------------------------------------

WI = """project_id,deployment_id,image_id,filename,location,is_blank,common_name,timestamp,number_of_objects
p1,dep-1,i1,a.jpg,gs://x/a.jpg,0,Red Fox,2020-03-29 01:59:50,1
p1,dep-1,i2,b.jpg,gs://x/b.jpg,0,Red Fox,2020-03-29 03:00:10,1
p1,dep-2,i3,c.jpg,gs://x/c.jpg,1,Blank,2020-03-30 12:00:00,0
"""


def test_wildlife_insights_images_csv_with_deployment_and_zone(tmp_path: Path) -> None:
    f = write(tmp_path / "images.csv", WI)
    info = load_trace(f, deployment="dep-1", timezone="Europe/Brussels")
    assert info.format == "wildlife-insights" and info.column == "timestamp"
    assert info.times_s.tolist() == [0.0, 20.0]
    assert dict(info.dropped) == {"other deployments": 1}


def test_camtrap_dp_location_filter_uses_the_deployments_table(tmp_path: Path) -> None:
    write(
        tmp_path / "deployments.csv",
        "deploymentID,locationID,locationName,cameraID\ndA,L1,pond,cam-7\ndB,L2,oak,cam-9\n",
    )
    write(
        tmp_path / "media.csv",
        "mediaID,deploymentID,sequenceID,timestamp\nm1,dA,s1,2020-05-30T02:57:37Z\n"
        "m2,dB,s2,2020-05-30T03:00:00Z\nm3,dA,s1,2020-05-30T02:57:38Z\n",
    )
    info = load_trace(tmp_path / "media.csv", location="pond")
    assert info.times_s.tolist() == [0.0, 1.0] and info.source.endswith("[location 'pond']")
    assert load_trace(tmp_path / "media.csv", camera="cam-9").n_events == 1
    assert load_trace(tmp_path / "media.csv").group_column == "locationID"


# --- nothing silent: refusals and the report ----------------------------------------------------------


@pytest.fixture
def millis(tmp_path: Path) -> Path:
    """Relative millisecond timestamps over an hour, as a request log writes them (12,031 rows)."""
    t_ms = np.sort(np.random.default_rng(5).integers(0, 3_600_000, size=12_031))
    lines = "".join(json.dumps({"timestamp": int(v), "tokens": 7}) + "\n" for v in t_ms)
    return write(tmp_path / "requests.jsonl", lines)


def test_relative_milliseconds_read_by_default_are_refused_naming_unit(millis: Path) -> None:
    with pytest.raises(
        TraceError, match=r"as seconds the trace spans 41.\d days, as milliseconds 60 min; set unit = 'ms'"
    ):
        load_trace(millis)
    info = load_trace(millis, unit="ms")
    assert info.n_events == 12_031 and info.span_s < 3600


def test_a_duration_that_cuts_most_of_the_trace_is_refused(millis: Path) -> None:
    spec = ReplayArrivals(str(millis), unit="s")  # the wrong unit, said explicitly
    with pytest.raises(TraceError, match=r"replays only \d+ of 12031 rows .*set end_s = 3600 .*set unit = 'ms'"):
        generate(spec, np.random.default_rng(0), duration_s=3600.0)
    good = ReplayArrivals(str(millis), unit="ms")
    assert generate(good, np.random.default_rng(0), duration_s=3600.0).size == 12_031


def test_a_window_keeping_under_one_percent_is_refused_unless_allowed(millis: Path) -> None:
    spec = ReplayArrivals(str(millis), unit="ms", end_s=10.0)
    with pytest.raises(TraceError, match=r"the window \[0, 10\) s keeps \d+ of 12031 rows .*min_kept_fraction = 0"):
        generate(spec, np.random.default_rng(0), duration_s=10.0)
    allowed = ReplayArrivals(str(millis), unit="ms", end_s=10.0, min_kept_fraction=0.0)
    assert 0 < generate(allowed, np.random.default_rng(0), duration_s=10.0).size < 120


def test_the_report_accounts_for_every_row(tmp_path: Path) -> None:
    f = write(tmp_path / "images.csv", WI + "\n")
    spec = ReplayArrivals(str(f), deployment="dep-1", end_s=10.0, min_kept_fraction=0.0)
    report = replay_report(spec, duration_s=5.0, n_requests=None)
    assert report.rows_read == 4 and report.kept == 1
    assert dict(report.dropped) == {"blank lines": 1, "other deployments": 1, "at or after end_s": 1}
    assert report.rows_read == report.kept + sum(report.dropped.values())
    assert "read 4 rows, kept 1; dropped: 1 blank lines, 1 other deployments, 1 at or after end_s" in report.line()
    assert json.loads(json.dumps(report.to_json()))["kept"] == 1


def test_parquet_split_columns_with_typed_dates_and_times(tmp_path: Path) -> None:
    frame = pl.DataFrame({"date": ["2021-06-01", "2021-06-01"], "time": ["08:19:46", "08:19:47"]}).with_columns(
        pl.col("date").str.to_date(), pl.col("time").str.to_time()
    )
    frame.write_parquet(tmp_path / "t.parquet")
    info = load_trace(tmp_path / "t.parquet")
    assert info.column == "date + time" and info.times_s.tolist() == [0.0, 1.0]
