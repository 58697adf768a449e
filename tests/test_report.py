"""`edgeprune-report`: tables with t-intervals, every chart exported, an offline page that a browser draws."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats
from simfixtures import BASE_SCENARIO, short_scenario, write_case, write_sweep

from edgeprune.cli.report import main as report_main
from edgeprune.cli.sim import main as sim_main
from edgeprune.report.stats import mean_ci, t_halfwidth
from edgeprune.report.tables import headline_table
from edgeprune.sweep import load_sweep, run_sweep

SHORT = short_scenario(40, slowed_s=(15, 30))
SPEC = """\
name = "fig5"
base = "case/scenario.toml"
seeds = [0, 1, 2]
[[axis]]
key = "arrivals"
values = [{kind = "poisson", rate_hz = 2.0}, {kind = "poisson", rate_hz = 4.0}, {kind = "poisson", rate_hz = 6.0}]
"""
P95_FACTOR = 1.1  # the fabricated hardware run's p95 is the simulator's times this


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sweep, a simulator run, its fabricated hardware twin (relabelled, p95 scaled) and the profile."""
    root = tmp_path_factory.mktemp("report")
    spec = write_sweep(root, SPEC, SHORT)
    case = root / "case" / "scenario.toml"
    run_sweep(load_sweep(spec), root / "sweep", scheduler="none")
    for name in ("sim", "hw"):
        assert sim_main([str(case), "--out", str(root / name), "--no-progress"]) == 0
    doc = json.loads((root / "hw" / "summary.json").read_text())
    doc["backend"] = "hil"
    for summ in doc["policies"].values():
        summ["p95_latency_s"] *= P95_FACTOR
    (root / "hw" / "summary.json").write_text(json.dumps(doc))
    return {
        "root": root,
        "sweep": root / "sweep",
        "sim": root / "sim",
        "hw": root / "hw",
        "profile": case.parent / "profile.json",
    }


@pytest.fixture(scope="module")
def report(inputs: dict[str, Path]) -> Path:
    out = inputs["root"] / "site" / "report.html"
    args = [str(inputs[k]) for k in ("sweep", "sim", "hw")] + ["--profile", str(inputs["profile"]), "-o", str(out)]
    assert report_main(args) == 0
    return out


@pytest.fixture(scope="module")
def single_run_report(inputs: dict[str, Path]) -> Path:
    """A report of one simulator run folder alone (its timeline has an environment event to shade)."""
    out = inputs["root"] / "single" / "report.html"
    assert report_main([str(inputs["sim"]), "-o", str(out)]) == 0
    return out


def _specs(html_text: str) -> dict[str, dict[str, object]]:
    m = re.search(r'<script type="application/json" id="edgeprune-specs">(.*?)</script>', html_text, re.S)
    assert m is not None
    return json.loads(m.group(1))


# --- statistics -----------------------------------------------------------------------------------------


def test_t_interval_matches_scipy() -> None:
    x = np.array([0.91, 0.87, 0.95, 0.90])
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert t_halfwidth(x) == pytest.approx((hi - lo) / 2)
    df = pl.DataFrame({"g": ["a"] * 4 + ["b"], "v": [*x.tolist(), 1.0]})
    out = mean_ci(df, ["g"], ["v"])
    a, b = out.row(0, named=True), out.row(1, named=True)
    assert (a["n"], a["v"], a["v_lo"], a["v_hi"]) == (4, pytest.approx(x.mean()), pytest.approx(lo), pytest.approx(hi))
    assert (b["n"], b["v"], b["v_lo"], b["v_hi"]) == (1, 1.0, None, None)  # one seed: no interval


def test_headline_table_has_an_interval_on_every_figure(inputs: dict[str, Path]) -> None:
    results = pl.read_parquet(inputs["sweep"] / "results.parquet")
    table = headline_table(results, ["arrivals"])
    assert table.height == 3 * 2 and set(table["n"].to_list()) == {3}
    row = table.row(0, named=True)
    seeds = results.filter((pl.col("cell_index") < 3) & (pl.col("policy") == row["policy"]))["p95_latency_s"]
    assert row["p95_latency_s_hi"] - row["p95_latency_s"] == pytest.approx(t_halfwidth(seeds.to_numpy()))
    for field in ("slo_attainment", "p95_latency_s", "p99_latency_s", "throughput_hz", "mean_accuracy"):
        assert table[f"{field}_lo"].null_count() == 0


def test_fig5_x_axis_choice() -> None:
    from edgeprune.errors import ConfigError
    from edgeprune.report.build import choose_x
    from edgeprune.report.sources import SweepSource

    def source(*axes: tuple[str, str, str]) -> SweepSource:
        manifest = {"axes": [{"key": k, "column": c, "kind": kind} for k, c, kind in axes]}
        return SweepSource(Path("s"), "s", manifest, pl.DataFrame(), tuple(c for _, c, _ in axes), ())

    scalar = source(("environment[0].slowdown", "slowdown", "float"), ("arrivals.rate_hz", "rate", "float"))
    assert choose_x(scalar, None)[0] == "rate" and choose_x(scalar, None)[2] == ["slowdown"]
    tables = source(("arrivals", "arrivals", "json"), ("environment[0].slowdown", "slowdown", "float"))
    assert choose_x(tables, None)[0] == "offered_rate_hz" and choose_x(tables, None)[2] == ["slowdown"]
    assert choose_x(tables, "slowdown")[0] == "slowdown"
    with pytest.raises(ConfigError, match="did you mean 'slowdown'"):
        choose_x(tables, "slowdwn")


# --- the files ------------------------------------------------------------------------------------------


def test_report_files_charts_and_no_network_reference(report: Path) -> None:
    text = report.read_text()
    specs = _specs(text)
    expected = {
        "fig5-slo-attainment-vs-rate",
        "fig5-p95-latency-s-vs-rate",
        "fig5-latency-cdf",
        "fig5-sustainable-load",
        "fig5-pareto",
        "fig5-timeline-level",
        "fig5-timeline-queue-len",
        "runs-latency-cdf",
        "sim-vs-hw-error",
        "sim-vs-hw-cdf",
        "profile-speedup",
        "profile-accuracy",
    }
    assert expected <= set(specs)
    for name in specs:
        assert f'data-chart="{name}"' in text
        png = report.parent / "report_files" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report.parent / "report_files" / f"{name}.svg").read_text().lstrip().startswith("<svg")
    # offline: no script, stylesheet or image is fetched from anywhere
    assert not re.search(r"""<(script|link|img|iframe)[^>]*(src|href)=["']?(https?:)?//""", text, re.I)
    assert "cdn" not in text.lower().replace("cdnjs", "")
    assert "window.vegaEmbed" in text


def test_markdown_summary_links_the_pngs_and_has_ci_tables(report: Path) -> None:
    md = (report.parent / "report.md").read_text()
    assert "![SLO attainment vs arrival rate (fig5)](report_files/fig5-slo-attainment-vs-rate.png)" in md
    assert "| arrivals | policy | seeds | SLO % |" in md
    assert "±" in md and "Simulator vs hardware" in md
    assert next(line for line in md.splitlines() if line.startswith("## ")) == "## Findings"
    assert "sustains the most load with ≥ 90% SLO attainment" in md


def test_no_absolute_path_in_the_report(inputs: dict[str, Path], report: Path) -> None:
    """Inputs given by absolute path are named relative to the report's folder."""
    for text in (report.read_text(), (report.parent / "report.md").read_text()):
        assert str(inputs["root"]) not in text
    assert "<code>../sweep</code>" in report.read_text()


def test_sim_vs_hardware_error_and_proxy_label(report: Path) -> None:
    md = (report.parent / "report.md").read_text()
    expected = f"{(P95_FACTOR - 1) * 100:.1f} %"  # (hw - sim) / sim, hw = 1.1 sim
    rows = [line for line in md.splitlines() if "| p95 s | 1 |" in line]  # figure, seeds
    assert len(rows) == 2 and all(line.rstrip(" |").endswith(expected) for line in rows), rows
    slo_rows = [line for line in md.splitlines() if "| SLO % | 1 |" in line]
    assert all(line.rstrip(" |").endswith("0.0 pt") for line in slo_rows), slo_rows
    specs = _specs(report.read_text())
    assert "Proxy accuracy" in json.dumps(specs["profile-accuracy"])


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    inner = spec.get("spec", spec)
    return list(inner.get("layer", [inner]))


def test_charts_clip_intervals_use_log_latency_and_style_each_policy(report: Path) -> None:
    specs = _specs(report.read_text())
    slo = specs["fig5-slo-attainment-vs-rate"]
    rows = slo["datasets"]["table"]
    assert all(0.0 <= r["lo"] <= r["mean"] <= r["hi"] <= 100.0 for r in rows if r["lo"] is not None)
    line = next(la for la in _layers(slo) if la["mark"]["type"] == "line")
    assert {"color", "shape", "strokeDash"} <= set(line["encoding"])
    assert line["encoding"]["color"]["scale"]["range"][0] == "#0072B2"  # Okabe-Ito, not Vega's default
    p95 = specs["fig5-p95-latency-s-vs-rate"]
    fields = [la["encoding"]["y"] for la in _layers(p95) if "field" in la["encoding"].get("y", {})]
    assert fields and all(y["scale"]["type"] == "log" for y in fields)
    assert all(r["lo"] > 0 for r in p95["datasets"]["table"] if r["lo"] is not None)
    queue = specs["fig5-timeline-queue-len"]
    assert queue["resolve"]["scale"]["y"] == "independent"
    assert {"fig5-pareto", "fig5-sustainable-load"} <= set(specs)


def test_single_run_timeline_shades_the_environment_event(single_run_report: Path) -> None:
    specs = _specs(single_run_report.read_text())
    level = next(v for k, v in specs.items() if k.endswith("timeline-level"))
    events = [r for r in level["datasets"]["table"] if r.get("layer") == "event"]
    assert events and {(r["start_s"], r["end_s"], r["event"]) for r in events} == {(15.0, 30.0, "pi2 ×1.6 slower")}
    md = (single_run_report.parent / "report.md").read_text()
    assert md.index("## Findings") < md.index("## Runs") and "meet the 90% SLO-attainment target" in md


def test_same_inputs_same_report(inputs: dict[str, Path], report: Path) -> None:
    from edgeprune.report import build_report
    from edgeprune.report.html import render_html, render_markdown

    paths = [inputs[k] for k in ("sweep", "sim", "hw")]
    first, second = (build_report(paths, profiles=[inputs["profile"]]) for _ in range(2))
    assert render_html(first, "f") == render_html(second, "f")
    assert render_markdown(first, "f") == render_markdown(second, "f")
    # and the page on disk is that rendering (inputs named as given on the command line)
    built = build_report([str(p) for p in paths], profiles=[str(inputs["profile"])], out_dir=report.parent)
    page = render_html(built, "report_files")
    assert page == report.read_text()


def test_hardware_run_alone_uses_its_own_prediction(inputs: dict[str, Path], tmp_path: Path) -> None:
    """A hil run folder with edgeprune-hil's sim_vs_hw.json needs no simulator twin among the inputs."""
    hw = tmp_path / "hw"
    shutil.copytree(inputs["hw"], hw)
    doc = json.loads((hw / "summary.json").read_text())
    prediction = {
        "policies": {
            name: {"p50_latency_s": {"sim": summ["p50_latency_s"] / 1.25, "hw": summ["p50_latency_s"]}}
            for name, summ in doc["policies"].items()
        }
    }
    (hw / "sim_vs_hw.json").write_text(json.dumps(prediction))
    out = tmp_path / "r.html"
    assert report_main([str(hw), "-o", str(out)]) == 0
    md = (tmp_path / "r.md").read_text()
    rows = [line for line in md.splitlines() if "| p50 s | 1 |" in line]
    assert len(rows) == 2 and all(line.rstrip(" |").endswith("25.0 %") for line in rows), rows
    assert "sim-vs-hw-error" in _specs(out.read_text())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{root}/nowhere"], "not a folder"),
        (["{root}/case"], "neither a sweep folder"),
        (["{root}/sweep", "--x", "rate"], "--x = 'rate'"),
        ([], "nothing to report"),
        (["{root}/sweep", "--slo-target", "150"], "--slo-target = 150"),
        (["{root}/sweep", "--baseline", "no-prunin"], "did you mean 'no-pruning'"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "r" / "report.html"
    argv = [a.format(root=inputs["root"]) for a in args] + ["-o", str(out)]
    assert report_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not out.exists() and not (tmp_path / "r" / "report_files").exists()


# --- the page in a browser ----------------------------------------------------------------------------------


class _Charts(HTMLParser):
    """Per ``data-chart`` div: its ``data-rendered`` state and how many data marks (not axes) it draws.

    Vega's SVG renderer puts data marks in ``<g class="mark-<type> role-mark ...">``; axes, legends and
    titles have other roles.  A mark counts when it is a shape with geometry.
    """

    _VOID = ("meta", "br", "img", "input", "link")

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, object]] = {}
        self._stack: list[tuple[str | None, bool]] = []  # (chart, inside a data-mark group)
        self.body_state: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body_state = a.get("data-charts")
        chart, in_mark = self._stack[-1] if self._stack else (None, False)
        name = a.get("data-chart")
        if name is not None:
            self.charts[name] = {"state": a.get("data-rendered"), "marks": 0}
            chart, in_mark = name, False
        if tag == "g" and "role-mark" in (a.get("class") or "").split():
            in_mark = True
        if in_mark and chart is not None and tag in ("path", "line", "rect", "circle"):
            geometry = a.get("d") or a.get("x2") or a.get("y2") or a.get("width") or a.get("r")
            if geometry and geometry not in ("0", "M0,0Z"):
                self.charts[chart]["marks"] = int(self.charts[chart]["marks"]) + 1  # type: ignore[call-overload]
        if tag not in self._VOID:
            self._stack.append((chart, in_mark))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._VOID and self._stack:
            self._stack.pop()


class _Order(HTMLParser):
    """The body's top-level elements in order, as ``tag`` or ``tag#id``."""

    def __init__(self) -> None:
        super().__init__()
        self.top: list[str] = []
        self._depth = 0
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._in_body = True
            return
        if self._in_body and tag not in _Charts._VOID:
            if self._depth == 0:
                ident = dict(attrs).get("id")
                self.top.append(f"{tag}#{ident}" if ident else tag)
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in_body and tag not in _Charts._VOID and tag != "body" and self._depth > 0:
            self._depth -= 1


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _browser(page: Path, profile: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` with the network cut off and the page's console logged to stderr."""
    browser = _chromium()
    assert browser is not None
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",  # any network request would fail
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


def _artefact_dir(fallback: Path) -> Path:
    """Where screenshots are kept: ``$ARTIFACTS_DIR`` when set (CI uploads it), else the test's folder."""
    folder = Path(os.environ.get("ARTIFACTS_DIR") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (CI: apt-get install chromium)")
@pytest.mark.parametrize("which", ["report", "single_run_report"])
def test_page_renders_every_chart_offline_in_headless_chromium(
    which: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No console message, every chart drawn with data marks, findings first; the screenshot is kept."""
    page: Path = request.getfixturevalue(which)
    with tempfile.TemporaryDirectory() as profile:
        done = _browser(page, profile, "--dump-dom")
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # Vega logs its warnings and errors to the console
    parser = _Charts()
    parser.feed(done.stdout)
    expected = set(_specs(page.read_text()))
    assert parser.body_state == "done"
    assert set(parser.charts) == expected
    for name, chart in parser.charts.items():
        assert chart["state"] == "ok", name
        assert int(chart["marks"]) > 0, f"{name}: no drawn marks"  # type: ignore[call-overload]
    order = _Order()
    order.feed(done.stdout)
    assert order.top[:2] == ["h1", "section#findings"], order.top[:4]
    shot = _artefact_dir(tmp_path_factory.mktemp("screens")) / f"{which}.png"
    with tempfile.TemporaryDirectory() as profile:
        _browser(page, profile, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_a_run_with_device_physics_gets_temperature_frequency_and_energy_charts(tmp_path: Path) -> None:
    """Device physics in a run folder: per-policy temperature and frequency timelines and the energy per
    inference vs SLO attainment chart, with one point per policy at the run's own figures."""
    from edgeprune.cli.sim import main as sim_main

    hot = '[[device]]\nname = "hot"\nprofile_device = "cpu"\n'
    hot += 'physics = { preset = "rpi4b", thermal = { initial_c = 79.0, time_constant_s = 20.0 } }\n\n[[stage]]'
    text = BASE_SCENARIO.replace("[[stage]]", hot, 1).replace(
        'name = "s0"\ndevice = "pi1"', 'name = "s0"\ndevice = "hot"'
    )
    case = write_case(tmp_path / "case", text)
    run = tmp_path / "run"
    assert sim_main([str(case), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "report" / "report.html"
    assert report_main([str(run), "-o", str(out)]) == 0
    specs = _specs(out.read_text())
    temp = next(v for k, v in specs.items() if k.endswith("timeline-temp-c"))
    freq = next(v for k, v in specs.items() if k.endswith("timeline-freq-mhz"))
    assert any(r.get("temp_c") is not None and r["temp_c"] > 70 for r in temp["datasets"]["table"])
    assert {r["freq_mhz"] for r in freq["datasets"]["table"] if r.get("freq_mhz") is not None} <= {1500, 1000, 750, 600}
    energy = next(v for k, v in specs.items() if k.endswith("-energy"))
    summary = json.loads((run / "summary.json").read_text())["policies"]
    points = {r["policy"]: r["energy_per_inference_j"] for r in energy["datasets"]["table"]}
    assert points == pytest.approx({p: s["energy_per_inference_j"] for p, s in summary.items()})
