"""Report stage: the HTML report embeds every figure, states the run's numbers, stays bounded on large input and
opens in headless Chromium with no broken image."""

from __future__ import annotations

import base64
import html
import json
import os
import random
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from segmentation.features.scores import RFM_ACTIONS, RFM_SEGMENT_RULES
from segmentation.report.data import (
    collect_report_data,
    histogram_specs,
    rfm_grid,
    sample_customers,
    segment_rfm_crosstab,
)
from segmentation.report.html import write_report

SEGMENTS_SCHEMA = (
    "customer_id string, recency_days int, frequency int, tenure_days int, gross double, returns double, "
    "monetary double, avg_order_value double, segment_id int, segment_name string, excluded_reason string, "
    "distance_to_center double, run_id string, r_score int, f_score int, m_score int, rfm_score string, "
    "rfm_segment string"
)

# written by hand, not imported from the report module: the test states what the report must contain
EXPECTED_FIGURES = [
    "elbow.png",
    "silhouette.png",
    "segment_sizes.png",
    "profile_heatmap.png",
    "scatter_recency_monetary.png",
    "scatter_frequency_monetary.png",
    "pair_plot.png",
    "feature_distributions.png",
    "rfm_grid.png",
    "segment_rfm_crosstab.png",
]

# (name, customers, recency range, frequency range, monetary range, action); one action holds markup to escape
SEGMENTS = [
    (1, "Champions", 300, (0, 20), (8, 40), (3_000.0, 40_000.0), "VIP treatment & early access."),
    (2, "Loyal", 500, (5, 60), (3, 10), (800.0, 4_000.0), "Cross-sell; <b>loyalty</b> rewards."),
    (3, "At risk", 600, (120, 300), (2, 6), (300.0, 2_000.0), "Win-back offers before they churn."),
    (4, "Hibernating", 590, (200, 370), (1, 2), (10.0, 400.0), "Occasional low-cost reactivation only."),
]
RFM_NAME = {(r, f): name for name, rs, fs in RFM_SEGMENT_RULES for r in rs for f in fs}


def _score(value: float, breakpoints: list[float], higher_is_better: bool = True) -> int:
    above = sum(value > b for b in breakpoints)
    return 1 + above if higher_is_better else 5 - above


COLUMNS = [part.split()[0] for part in SEGMENTS_SCHEMA.split(", ")]


def _row(**values) -> tuple:
    """A segments row by column name; unnamed columns are null."""
    unknown = set(values) - set(COLUMNS)
    assert not unknown, unknown
    return tuple(values.get(c) for c in COLUMNS)


def _synthetic_customers(seed: int = 7) -> list[tuple]:
    """About 2,000 customers in 4 well-separated segments, plus the excluded edge rows the job produces."""
    rng = random.Random(seed)
    rows = []
    for sid, name, n, (r0, r1), (f0, f1), (m0, m1), _ in SEGMENTS:
        for i in range(n):
            recency, frequency = rng.randint(r0, r1), rng.randint(f0, f1)
            monetary = round(m0 * (m1 / m0) ** rng.random(), 2)
            returns = round(monetary * rng.choice([0.0, 0.0, 0.05]), 2)
            r = _score(recency, [15, 45, 120, 220], higher_is_better=False)
            f = _score(frequency, [1, 2, 4, 8])
            m = _score(monetary, [150, 500, 1_200, 3_500])
            rows.append(
                _row(
                    customer_id=f"c{sid}-{i:04d}",
                    recency_days=recency,
                    frequency=frequency,
                    tenure_days=recency + rng.randint(0, 365 - min(recency, 365)),
                    gross=monetary + returns,
                    returns=returns,
                    monetary=monetary,
                    avg_order_value=(monetary + returns) / frequency,
                    segment_id=sid,
                    segment_name=name,
                    distance_to_center=rng.random(),
                    run_id="run-1",
                    r_score=r,
                    f_score=f,
                    m_score=m,
                    rfm_score=f"{r}{f}{m}",
                    rfm_segment=RFM_NAME[(r, f)],
                )
            )
    # edge rows: only returns (no scores at all) and a zero net value (scored, but not clustered)
    rows.append(
        _row(
            customer_id="x-returns",
            frequency=0,
            gross=0.0,
            returns=25.0,
            monetary=-25.0,
            excluded_reason="no_purchases",
            run_id="run-1",
        )
    )
    rows.append(
        _row(
            customer_id="x-net-zero",
            recency_days=40,
            frequency=1,
            tenure_days=90,
            gross=30.0,
            returns=30.0,
            monetary=0.0,
            avg_order_value=30.0,
            excluded_reason="non_positive_monetary",
            run_id="run-1",
            r_score=4,
            f_score=1,
            m_score=1,
            rfm_score="411",
            rfm_segment="Promising",
        )
    )
    return rows


def _profiles(rows: list[tuple]) -> list[dict]:
    """Profile rows as the profile stage shapes them, computed independently from the synthetic rows."""
    features = ["recency_days", "frequency", "tenure_days", "gross", "returns", "monetary", "avg_order_value"]
    rows = [dict(zip(COLUMNS, r)) for r in rows]
    clustered = [r for r in rows if r["segment_id"] is not None]
    total_n, total_rev = len(clustered), sum(r["monetary"] for r in clustered)
    profiles = []
    for sid, name, _, _, _, _, action in SEGMENTS:
        members = [r for r in clustered if r["segment_id"] == sid]
        p = {
            "segment_id": sid,
            "segment_name": name,
            "customers": len(members),
            "share_customers": len(members) / total_n,
            "revenue": sum(r["monetary"] for r in members),
            "share_revenue": sum(r["monetary"] for r in members) / total_rev,
            "action": action,
            "description": f"synthetic segment {name}",
        }
        for f in features:
            values = [float(r[f]) for r in members]
            p[f"mean_{f}"] = statistics.fmean(values)
            p[f"median_{f}"] = statistics.median(values)
        for f in ("recency_days", "frequency", "monetary"):
            p[f"center_{f}"] = p[f"median_{f}"]
        profiles.append(p)
    return profiles


ELBOW = [
    {"k": 2, "wcss": 3100.0, "silhouette": 0.52, "chosen": False, "smallest_cluster_share": 0.31},
    {"k": 3, "wcss": 1900.0, "silhouette": 0.47, "chosen": False, "smallest_cluster_share": 0.2},
    {"k": 4, "wcss": 900.0, "silhouette": 0.55, "chosen": True, "smallest_cluster_share": 0.15},
    {"k": 5, "wcss": 780.0, "silhouette": 0.41, "chosen": False, "smallest_cluster_share": 0.08},
    {"k": 6, "wcss": 700.0, "silhouette": None, "chosen": False, "smallest_cluster_share": 0.05},
]

MANIFEST = {
    "run_id": "20261122T210257Z-d61de863",
    "snapshot_date": "2011-12-10",
    "input_rows": 12_345_678,
    "accepted_rows": 12_205_333,
    "rejected_rows": {"missing_customer_id": 135_080, "non_positive_price": 40, "duplicate": 5_225},
    "customers": 1_992,
    "clustered_customers": 1_990,
    "excluded_customers": {"no_purchases": 1, "non_positive_monetary": 1},
    "chosen_k": 4,
    "chosen_k_reason": "knee of the WCSS curve over k=2..6: largest normalised distance below the chord (0.412)",
    "timings_s": {"read": 1.5, "model": 20.25, "total": 42.0},
    "rfm_breakpoints": {
        "recency_days": {"breakpoints": [15.0, 45.0, 120.0, 220.0], "method": "quantiles 0.2/0.4/0.6/0.8"},
        "frequency": {
            "breakpoints": [1.0, 2.0, 3.0, 5.0],
            "method": "fallback (quantiles tie: [1.0, 1.0, 2.0, 4.0])",
        },
        "monetary": [150.0, 500.0, 1_200.0, 3_500.0],
    },
    "rfm_actions": RFM_ACTIONS,
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*data-file="([^"]+)"')


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def small_report(spark, tmp_path_factory):
    rows = _synthetic_customers()
    segments_df = spark.createDataFrame(rows, SEGMENTS_SCHEMA)
    data = collect_report_data(segments_df, ELBOW, _profiles(rows), MANIFEST, max_points=500, seed=42)
    out = tmp_path_factory.mktemp("report")
    written = write_report(data, out)
    return rows, data, out, written


def test_report_embeds_every_figure_as_valid_png(small_report):
    _, _, out, written = small_report
    report = out / "report.html"
    assert report.is_file()
    assert written[-1] == report
    assert sorted(p.name for p in written) == sorted([*EXPECTED_FIGURES, "report.html"])
    text = report.read_text(encoding="utf-8")
    embedded = IMG.findall(text)
    assert len(re.findall(r"<img\b", text)) == len(EXPECTED_FIGURES)
    assert [name for _, name in embedded] == EXPECTED_FIGURES
    for encoded, name in embedded:
        png = base64.b64decode(encoded, validate=True)
        width, height = _png_size(png)
        assert width > 300 and height > 200, name
        beside = out / name
        assert beside.is_file(), name
        assert beside.read_bytes() == png, f"{name} beside the report differs from the embedded one"


def test_report_is_self_contained(small_report):
    text = (small_report[2] / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.IGNORECASE)
    assert "url(" not in text
    assert "@import" not in text


def test_report_states_the_run_and_every_segment(small_report):
    _, _, out, _ = small_report
    text = (out / "report.html").read_text(encoding="utf-8")
    for number in ("12,345,678", "12,205,333", "135,080", "5,225", "140,345", "1,992", "1,990"):
        assert number in text, number
    for reason in (
        "missing_customer_id",
        "non_positive_price",
        "duplicate",
        "no_purchases",
        "non_positive_monetary",
    ):
        assert reason in text, reason
    assert html.escape(MANIFEST["chosen_k_reason"]) in text
    assert "2011-12-10" in text and MANIFEST["run_id"] in text
    for sid, name, *_, action in SEGMENTS:
        assert f"{sid} {html.escape(name)}" in text, name
        assert html.escape(action) in text, action
    # text is escaped, never interpreted as markup
    assert "Cross-sell; &lt;b&gt;loyalty&lt;/b&gt; rewards." in text
    assert "<b>loyalty</b>" not in text
    # RFM segments with their actions, and the documented fallback note of a breakpoint
    assert html.escape("Can't lose them") in text
    assert html.escape(RFM_ACTIONS["Hibernating"]) in text
    assert "fallback (quantiles tie" in text
    # score ranges from the breakpoints: recency is inverted (R5 = most recent), whole days and orders
    assert "<td>5</td><td>&le; 15</td><td>&ge; 6</td><td>&gt; 3,500.00</td>" in text
    assert "<td>4</td><td>16&ndash;45</td><td>4&ndash;5</td>" in text


def test_report_data_aggregates_match_the_input(small_report):
    rows, data, _, _ = small_report
    rows = [dict(zip(COLUMNS, r)) for r in rows]
    clustered = [r for r in rows if r["segment_id"] is not None]
    assert data.customers == len(rows)
    assert data.clustered == len(clustered)
    assert data.excluded == {"no_purchases": 1, "non_positive_monetary": 1}
    # feature statistics pooled from per-cell aggregates equal the direct ones
    for feature in ("recency_days", "monetary", "avg_order_value"):
        values = [float(r[feature]) for r in clustered]
        assert data.feature_stats[feature]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-9)
        assert data.feature_stats[feature]["std"] == pytest.approx(statistics.pstdev(values), rel=1e-9)
        assert data.feature_stats[feature]["min"] == min(values)
        champions = [float(r[feature]) for r in clustered if r["segment_id"] == 1]
        assert data.segment_means[1][feature] == pytest.approx(statistics.fmean(champions), rel=1e-9)
    # the sample is bounded (max_points=500 of 1,990) and holds clustered customers only
    assert len(data.sample) == 500
    assert data.sample["segment_id"].notna().all()
    assert not set(data.sample["customer_id"]) & {"x-returns", "x-net-zero"}
    for feature, hist in data.histograms.items():
        assert hist.total() == len(clustered), feature
        for sid, *_ in SEGMENTS:
            assert sum(hist.counts[sid]) == sum(1 for r in clustered if r["segment_id"] == sid), (
                feature,
                sid,
            )
    # the RFM grid counts every scored customer (the excluded one with a score too), cell by cell
    grid = rfm_grid(data)
    assert grid.sum() == len(rows) - 1
    assert grid[4 - 1, 1 - 1] == sum(1 for r in rows if (r["r_score"], r["f_score"]) == (4, 1))
    table = segment_rfm_crosstab(data)
    assert list(table.index) == [1, 2, 3, 4]
    assert table.loc[1].sum() == 300 and table.to_numpy().sum() == len(clustered)
    assert table.loc[4, "Lost"] == sum(
        1 for r in clustered if (r["segment_id"], r["rfm_segment"]) == (4, "Lost")
    )


def _large_segments_df(spark, n: int):
    """n customers generated in Spark: 5 segments, every 97th customer excluded (null segment)."""
    ids = spark.range(n).withColumn("u", F.rand(11)).withColumn("v", F.rand(12))
    excluded = (F.col("id") % 97) == 0
    segment = (F.col("id") % 5 + 1).cast("int")
    recency = (F.col("u") * 360).cast("int")
    frequency = (F.lit(1) + F.col("v") * F.col("v") * 40).cast("int")
    monetary = F.exp(F.col("u") * 3 + F.col("v") * 5 + segment.cast("double"))
    r = (F.lit(5) - (F.col("u") * 5).cast("int")).cast("int")
    f = (F.lit(1) + (F.col("v") * 5).cast("int")).cast("int")
    return ids.select(
        F.concat(F.lit("c"), F.col("id").cast("string")).alias("customer_id"),
        recency.alias("recency_days"),
        frequency.alias("frequency"),
        (recency + 10).alias("tenure_days"),
        monetary.alias("gross"),
        F.lit(0.0).alias("returns"),
        monetary.alias("monetary"),
        (monetary / frequency).alias("avg_order_value"),
        F.when(~excluded, segment).alias("segment_id"),
        F.when(~excluded, F.concat(F.lit("S"), segment.cast("string"))).alias("segment_name"),
        F.when(excluded, F.lit("non_positive_monetary")).alias("excluded_reason"),
        F.lit(0.5).alias("distance_to_center"),
        F.lit("run-big").alias("run_id"),
        r.alias("r_score"),
        f.alias("f_score"),
        F.lit(3).alias("m_score"),
        F.concat(r.cast("string"), f.cast("string"), F.lit("3")).alias("rfm_score"),
        F.lit("Need attention").alias("rfm_segment"),
    )


def test_large_input_is_sampled_in_spark_bounded_and_deterministic(spark):
    n = 300_000
    segments_df = _large_segments_df(spark, n)
    clustered = n - len(range(0, n, 97))
    profiles = [
        {
            "segment_id": s,
            "segment_name": f"S{s}",
            "customers": 1,
            "share_customers": 0.2,
            "revenue": 1.0,
            "share_revenue": 0.2,
            "action": "act",
        }
        for s in range(1, 6)
    ]
    data = collect_report_data(segments_df, ELBOW, profiles, {"run_id": "big"})  # max_points=50_000, seed=42
    assert len(data.sample) <= 50_000
    assert len(data.sample) > 49_000, "the sample should fill its bound when the population is 6x larger"
    assert data.sample["customer_id"].is_unique
    assert data.sample["segment_id"].notna().all(), "excluded customers must not be sampled"
    # histogram counts cover every clustered customer, so they were computed in Spark, not from the sample
    assert data.clustered == clustered
    assert data.excluded == {"non_positive_monetary": n - clustered}
    for feature, hist in data.histograms.items():
        assert hist.total() == clustered, feature
    # the same seed gives the same customers (a smaller bound gives the first of them); another seed others
    clustered_df = segments_df.filter(F.col("segment_id").isNotNull())
    columns = ["segment_id", "recency_days"]
    again = sample_customers(clustered_df, clustered, 50_000, 42, columns)
    assert list(again["customer_id"]) == list(data.sample["customer_id"])
    smaller = sample_customers(clustered_df, clustered, 1_000, 42, columns)
    assert list(smaller["customer_id"]) == list(data.sample["customer_id"][:1_000])
    other_seed = sample_customers(clustered_df, clustered, 1_000, 7, columns)
    assert len(other_seed) == 1_000
    assert len(set(other_seed["customer_id"]) & set(smaller["customer_id"])) < 100


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

PROBE = """<script>
window.addEventListener('load', function () {
  var sizes = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute('data-file'), i.naturalWidth, i.naturalHeight, i.complete];
  });
  document.title = 'IMAGES=' + JSON.stringify(sizes);
});
</script>"""


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_report_opens_in_headless_chromium_without_broken_images(small_report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must `apt-get install -y chromium`")
        pytest.skip(
            "chromium is not installed (apt-get install chromium); with CI set this test fails instead"
        )
    report = small_report[2] / "report.html"

    # a test-only copy with a probe script: the report itself has no script
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = _run_chromium(
        browser, tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>IMAGES=(.*?)</title>", dom.stdout, re.DOTALL)
    assert title, f"the probe did not run: {dom.stdout[:500]!r} {dom.stderr[-1000:]!r}"
    images = json.loads(html.unescape(title.group(1)))
    assert [name for name, *_ in images] == EXPECTED_FIGURES
    for name, width, height, complete in images:
        assert complete and width > 0 and height > 0, f"broken image in Chromium: {name}"

    screenshot = tmp_path / "report.png"
    shot = _run_chromium(
        browser,
        tmp_path / "profile-shot",
        "--window-size=1280,4000",
        f"--screenshot={screenshot}",
        report.as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.is_file()
    png = screenshot.read_bytes()
    assert _png_size(png) == (1280, 4000)
    assert len(png) > 100_000, "the screenshot is nearly empty"
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(screenshot, Path(keep) / "report_screenshot.png")


def test_a_constant_whole_number_feature_still_gets_two_bins():
    # everyone ordered once: Spark's Bucketizer needs at least three edges
    specs = histogram_specs({"frequency": {"n": 3, "min": 1.0, "max": 1.0}}, integer_features=["frequency"])
    assert specs == {"frequency": (True, [0.5, 1.0, 1.5])}
