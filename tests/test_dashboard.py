"""The dashboard over the `published` fixture (two snapshots of the synthetic log): every page's numbers against
the tables (Streamlit's AppTest), then the served app in Debian's chromium driven by Playwright: each page
renders the tables' numbers, a filter changes the campaign, the CSV export downloads its rows; a screenshot per
page is kept under test-artifacts/dashboard/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from pyspark.sql import functions as F
from streamlit.testing.v1 import AppTest

from segmentation.dashboard.data import Campaign, Output, flow_sentences

from .conftest import REPO

APP = REPO / "segmentation" / "dashboard" / "app.py"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def _page(out, page, **params) -> AppTest:
    os.environ["SEGMENT_DASHBOARD_OUTPUT"] = str(out)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["page"] = page
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_shows_the_snapshot_profiles_and_manifest(published):
    out, manifests, _ = published
    latest = manifests[-1]
    at = _page(out, "overview")
    assert at.header[0].value == f"Segments of snapshot {latest['snapshot_date']}"  # the latest by default
    assert {m.label: m.value for m in at.metric} == {
        "Customers": f"{latest['customers']:,}",
        "Clustered": f"{latest['clustered_customers']:,}",
        "Rejected rows": f"{sum(latest['rejected_rows'].values()):,}",
    }
    shown = at.dataframe[0].value
    assert list(shown["segment_name"]) == [p["segment_name"] for p in latest["profiles"]]
    assert list(shown["customers"]) == [p["customers"] for p in latest["profiles"]]
    first = _page(out, "overview", snapshot=manifests[0]["snapshot_date"])
    assert list(first.dataframe[0].value["customers"]) == [p["customers"] for p in manifests[0]["profiles"]]


def test_trends_and_movement_equal_the_tables(published, spark):
    out, manifests, _ = published
    trends = _page(out, "trends").dataframe[0].value
    assert len(trends) == sum(len(m["profiles"]) for m in manifests)
    assert trends.groupby("snapshot_date")["customers"].sum().to_dict() == {
        m["snapshot_date"]: m["clustered_customers"] for m in manifests
    }
    latest = manifests[-1]["snapshot_date"]
    at = _page(out, "movement")
    shown = at.dataframe[0].value
    table = spark.read.parquet(str(out / "transitions" / f"snapshot_date={latest}")).toPandas()
    assert sorted(zip(shown["from_segment"], shown["to_segment"], shown["customers"])) == sorted(
        zip(table["from_segment"], table["to_segment"], table["customers"])
    )
    assert at.header[0].value == f"Who moved since {manifests[0]['snapshot_date']}"
    sentences = [m.value for m in at.markdown if m.value.startswith("- ")]
    assert sentences == [f"- {s}" for s in flow_sentences(shown)]
    assert len(sentences) >= 1


def test_segment_detail_and_customer_lookup(published, spark):
    out, manifests, _ = published
    latest = manifests[-1]["snapshot_date"]
    segments = spark.read.parquet(str(out / "segments")).withColumn(
        "snapshot_date", F.col("snapshot_date").cast("string")
    )
    at = _page(out, "segment", segment="2")
    assert at.header[0].value == f"Segment 2: {manifests[-1]['segments']['2']}"
    expected = {
        r["rfm_segment"] or "(none)": r["count"]
        for r in segments.filter((F.col("snapshot_date") == latest) & (F.col("segment_id") == 2))
        .groupBy("rfm_segment")
        .count()
        .collect()
    }
    crosstab = at.dataframe[1].value
    assert dict(zip(crosstab["rfm_segment"], crosstab["customers"])) == expected
    # the segment's top products and rules of the snapshot, as published
    products = spark.read.parquet(str(out / "segment_products")).filter(
        (F.col("snapshot_date").cast("string") == latest) & (F.col("segment_id") == 2)
    )
    shown = at.dataframe[2].value
    assert list(shown["product_id"]) == [
        r["product_id"] for r in products.orderBy("rank").limit(20).collect()
    ]
    assert len(shown) == min(20, products.count()) and len(shown) > 0
    rules = spark.read.parquet(str(out / "basket_rules")).filter(
        (F.col("snapshot_date").cast("string") == latest) & (F.col("segment_id") == 2)
    )
    if rules.count():
        assert at.dataframe[3].value["lift"].max() == rules.agg(F.max("lift")).first()[0]
    else:
        assert f"None for segment 2 in snapshot {latest}." in [i.value for i in at.info]
    someone = segments.filter(F.col("segment_id").isNotNull()).orderBy("customer_id").first()["customer_id"]
    history = _page(out, "customer", customer=someone).dataframe[0].value
    rows = segments.filter(F.col("customer_id") == someone).orderBy("snapshot_date").collect()
    assert list(history["snapshot_date"]) == [r["snapshot_date"] for r in rows]
    assert list(history["segment_id"]) == [r["segment_id"] for r in rows]
    unknown = _page(out, "customer", customer="nobody-42")
    assert unknown.warning[0].value == "No customer 'nobody-42' in the published snapshots."


def test_campaign_filters_come_from_the_url_and_match_a_count(published, spark):
    out, manifests, _ = published
    latest = manifests[-1]["snapshot_date"]
    segments = spark.read.parquet(str(out / "segments" / f"snapshot_date={latest}"))
    everyone = _page(out, "campaign")
    # no segment chosen: every customer within the clustered customers' recency and monetary ranges
    clustered = segments.filter(F.col("segment_id").isNotNull())
    bounds = clustered.agg(
        F.min("recency_days"), F.max("recency_days"), F.min("monetary"), F.max("monetary")
    ).first()
    within = segments.filter(
        F.col("recency_days").between(bounds[0], bounds[1]) & F.col("monetary").between(bounds[2], bounds[3])
    )
    assert everyone.metric[0].value == f"{within.count():,}"
    chosen = _page(out, "campaign", segments="1,3")
    expected = segments.filter(F.col("segment_id").isin(1, 3)).count()
    assert chosen.metric[0].value == f"{expected:,}"
    assert set(chosen.dataframe[0].value["segment_id"]) == {1, 3}
    rows = Output(out).campaign(latest, Campaign([1, 3], [], None, None))
    assert len(rows) == expected and rows["monetary"].is_monotonic_decreasing


def test_live_and_an_empty_output_say_which_job_produces_them(published, tmp_path):
    out, _, _ = published
    live = _page(out, "live")
    assert "stream-segments" in live.info[0].value
    (tmp_path / "empty").mkdir()
    empty = _page(tmp_path / "empty", "overview")
    assert empty.warning[0].value.startswith(f"No published snapshot under {tmp_path / 'empty'}")


def test_only_published_snapshots_are_read(published, tmp_path):
    out, manifests, _ = published
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "manifests" / f"snapshot_date={manifests[-1]['snapshot_date']}" / "_SUCCESS").unlink()
    output = Output(copy)
    assert output.snapshots() == [manifests[0]["snapshot_date"]]
    assert set(output.trends()["snapshot_date"]) == {manifests[0]["snapshot_date"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(published):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must `apt-get install -y chromium`")
        pytest.skip(
            "chromium is not installed (apt-get install chromium); with CI set this test fails instead"
        )
    out = published[0]
    port = _free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.segment_dashboard", "--output", str(out), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read()
                break
            except OSError:
                if job.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not start: {job.stdout.read()}") from None
                time.sleep(0.5)
        yield url, chromium, published
    finally:
        job.terminate()
        try:
            job.wait(timeout=20)
        except subprocess.TimeoutExpired:
            job.kill()


def test_every_page_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    url, chromium, (out, manifests, _) = served
    latest = manifests[-1]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        expectations = {
            "overview": f"Segments of snapshot {latest['snapshot_date']}",
            "trends": "Segments over time",
            "movement": f"Who moved since {manifests[0]['snapshot_date']}",
            "segment": f"Segment 1: {latest['segments']['1']}",
            "customer": "Customer lookup",
            "campaign": f"Campaign export, snapshot {latest['snapshot_date']}",
            "live": "Live segment changes",
        }
        for name, heading in expectations.items():
            page.goto(f"{url}/?page={name}")
            page.get_by_text(heading).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1_500)  # charts and tables draw after the heading
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            if name == "overview":
                assert page.get_by_text(f"{latest['customers']:,}").first.is_visible()
        # a filter in the URL changes the campaign; the export downloads exactly its rows
        page.goto(f"{url}/?page=campaign&segments=1")
        expected = Output(out).campaign(latest["snapshot_date"], Campaign([1], [], None, None))
        page.get_by_text(f"{len(expected):,}", exact=True).first.wait_for(timeout=60_000)
        with page.expect_download(timeout=60_000) as download:
            page.get_by_text("Download the customer list (CSV)").click()
        exported = pd.read_csv(download.value.path(), dtype={"customer_id": str})
        assert list(exported["customer_id"]) == list(expected["customer_id"])
        assert set(exported["segment_id"]) == {1}
        browser.close()
