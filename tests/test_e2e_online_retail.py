"""End to end on the real Online Retail data: reconciliation to the row, features, layout, reruns, failures.

The job runs on the bundled Parquet copy; an independent pandas implementation of the documented rules
(tests/reference_pandas.py) derives the expected numbers from the raw data by hand.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from segmentation.config import apply_overrides, load_config, validate_config
from segmentation.errors import ModelError
from segmentation.pipeline import run_segmentation
from segmentation.schema import BUNDLED_DATA

from .reference_pandas import reference_from_frame

pytestmark = pytest.mark.slow

SNAPSHOT = "2011-12-10"
FEATURES = ["recency_days", "frequency", "tenure_days", "gross", "returns", "monetary", "avg_order_value"]


def _cfg(out, **overrides):
    """The default config (bundled data); a shorter k range than 2..10 and no stability fits keep the suite quick."""
    overrides = {"k_min": 2, "k_max": 6, **overrides} if "k" not in overrides else overrides
    cfg = apply_overrides(load_config(None), output=str(out), **overrides)
    # seed stability is measured in test_diagnostics / test_customers; here it would only add fits
    cfg["model"]["stability_fits"] = 0
    return validate_config(cfg)


@pytest.fixture(scope="module")
def raw_frame():
    """The bundled data as pandas strings, as the CSVs had them (null -> empty field)."""
    return pd.concat(
        [pd.read_parquet(p) for p in sorted(BUNDLED_DATA.glob("part-*.parquet"))], ignore_index=True
    )


@pytest.fixture(scope="module")
def reference(raw_frame):
    return reference_from_frame(raw_frame)


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "out"
    manifest = run_segmentation(spark, _cfg(out))
    segments = pd.read_parquet(out / "segments").set_index("customer_id")
    return out, manifest, segments


def test_bundled_data_is_the_whole_data_set(raw_frame):
    assert len(raw_frame) == 541_909
    assert raw_frame["CustomerID"].isna().sum() == 135_080
    assert raw_frame.loc[0, ["InvoiceNo", "CustomerID", "InvoiceDate"]].tolist() == [
        "536365",
        "17850.0",
        "2010-12-01 08:26:00",
    ]


def test_reconciles_to_the_row(first_run, reference):
    _, manifest, _ = first_run
    assert manifest["snapshot_date"] == reference.snapshot_date == SNAPSHOT
    assert manifest["input_rows"] == reference.input_rows == 541_909
    assert manifest["rejected_rows"] == reference.rejects
    assert manifest["accepted_rows"] == reference.accepted_rows
    assert manifest["input_rows"] == manifest["accepted_rows"] + sum(manifest["rejected_rows"].values())
    # the published figures of the data set follow from the rules
    assert manifest["rejected_rows"]["missing_customer_id"] == 135_080
    customers = reference.customers
    assert manifest["customers"] == len(customers)
    excluded = customers["excluded_reason"].value_counts().to_dict()
    assert manifest["excluded_customers"] == excluded
    assert manifest["clustered_customers"] == int(customers["excluded_reason"].isna().sum())


def test_every_customer_matches_the_hand_computed_features(first_run, reference):
    _, _, segments = first_run
    expected = reference.customers
    assert sorted(segments.index) == sorted(expected.index)
    joined = segments.join(expected, rsuffix="_expected")
    for f in FEATURES:
        got, want = joined[f].astype("float64"), joined[f"{f}_expected"].astype("float64")
        assert (
            ((got - want).abs() <= 1e-6 * want.abs().clip(lower=1)).where(want.notna(), got.isna()).all()
        ), f
    assert (joined["excluded_reason"].fillna("") == joined["excluded_reason_expected"].fillna("")).all()
    # a few customers spelled out: 12346 bought 74,215 units once and returned them all
    assert segments.loc["12346", ["frequency", "gross", "returns", "monetary"]].tolist() == [
        1,
        77183.6,
        77183.6,
        0.0,
    ]
    assert segments.loc["12346", "excluded_reason"] == "non_positive_monetary"
    # 17850 (the data set's first customer): 34 orders, last on 2011-02-02, 87.73 returned
    assert segments.loc["17850", ["recency_days", "frequency", "tenure_days"]].tolist() == [373, 34, 374]
    assert segments.loc["17850", ["gross", "returns"]].tolist() == pytest.approx([5391.21, 87.73])


def test_output_layout_and_types(first_run):
    out, manifest, segments = first_run
    for table in (
        "segments",
        "profiles",
        "rfm_profiles",
        "elbow",
        "rejects",
        "models",
        "reports",
        "manifests",
    ):
        assert (out / table / f"snapshot_date={SNAPSHOT}").is_dir(), table
    assert not (out / "_staging").exists()
    schema = pq.read_schema(next((out / "segments" / f"snapshot_date={SNAPSHOT}").glob("*.parquet")))
    types = {name: str(schema.field(name).type) for name in schema.names}
    assert {
        k: types[k] for k in ("customer_id", "recency_days", "frequency", "tenure_days", "segment_id")
    } == {
        "customer_id": "string",
        "recency_days": "int32",
        "frequency": "int32",
        "tenure_days": "int32",
        "segment_id": "int32",
    }
    for f in ("gross", "returns", "monetary", "avg_order_value", "distance_to_center"):
        assert types[f] == "double"
    rejects = pd.read_parquet(out / "rejects")
    assert rejects["reject_reason"].value_counts().to_dict() == manifest["rejected_rows"]
    assert {"InvoiceNo", "StockCode", "Description", "CustomerID", "raw_line"} <= set(rejects.columns)
    on_disk = json.loads((out / "manifests" / f"snapshot_date={SNAPSHOT}" / "manifest.json").read_text())
    assert (out / "manifests" / f"snapshot_date={SNAPSHOT}" / "_SUCCESS").exists()
    assert on_disk["run_id"] == manifest["run_id"] and on_disk["chosen_k"] == manifest["chosen_k"]
    assert set(on_disk["timings_s"]) >= {
        "read",
        "validate",
        "features",
        "prepare",
        "model",
        "profile",
        "write",
    }
    assert (out / "models" / f"snapshot_date={SNAPSHOT}" / "pipeline" / "metadata").is_dir()
    assert set(segments["run_id"]) == {manifest["run_id"]}


def test_recommendations_on_the_bundled_data(first_run, raw_frame):
    """The four recommend tables on the real data: ALS beats global-popular on precision@10 (the report says
    by how much), nothing recommended was bought, non-products never appear, the report has the section."""
    out, manifest, segments = first_run
    tables = {
        t: pd.read_parquet(out / t)
        for t in ("segment_products", "basket_rules", "recommendations", "recommendation_eval")
    }
    evaluation = tables["recommendation_eval"]
    overall = evaluation[evaluation.segment_id.isna()].set_index("method")
    als, base = overall.loc["als", "precision_at_k"], overall.loc["global_popular", "precision_at_k"]
    assert als > 1.5 * base
    assert set(evaluation.method) == {"als", "segment_popular", "global_popular"}
    assert set(evaluation.segment_name) == {"All customers", *segments.segment_name.dropna()}
    recs = tables["recommendations"]
    assert recs.groupby("customer_id").size().eq(10).all() and set(recs.customer_id) == set(segments.index)
    # the purchase lines: a product a customer only returned was not bought
    quantity = pd.to_numeric(raw_frame.Quantity, errors="coerce")
    price = pd.to_numeric(raw_frame.UnitPrice, errors="coerce")
    purchase = (
        raw_frame.CustomerID.notna() & (quantity > 0) & (price > 0) & ~raw_frame.InvoiceNo.str.startswith("C")
    )
    bought = raw_frame[purchase]
    bought = set(zip(bought.CustomerID.str.replace(".0", "", regex=False), bought.StockCode.str.strip()))
    assert not any((c, p) in bought for c, p in zip(recs.customer_id, recs.product_id))
    non_products = {"POST", "DOT", "M", "C2", "BANK CHARGES", "AMAZONFEE", "PADS", "CRUK"}
    for table in ("segment_products", "recommendations"):
        assert not set(tables[table].product_id) & non_products, table
    rules = tables["basket_rules"]
    assert (rules.confidence >= 0.2).all() and (rules.lift > 1).all()
    assert rules.groupby("segment_name").size().max() <= 50
    entry = manifest["recommend"]
    assert entry["evaluation"]["als_vs_global_popular_precision"] == pytest.approx(als / base, abs=1e-4)
    assert entry["recommendations"] == recs.reason.value_counts().to_dict()
    html = (out / "reports" / f"snapshot_date={SNAPSHOT}" / "report.html").read_text(encoding="utf-8")
    assert 'id="offers"' in html and f"{als / base:.1f}x</b> as many hits" in html
    assert "REGENCY TEACUP AND SAUCER" in html  # the strongest rules over everyone: the teacups together


def test_segments_profiles_and_elbow_agree(first_run):
    out, manifest, segments = first_run
    clustered = segments[segments["excluded_reason"].isna()]
    assert (
        clustered["segment_id"].notna().all()
        and segments.loc[segments["excluded_reason"].notna(), "segment_id"].isna().all()
    )
    k = manifest["chosen_k"]
    assert sorted(clustered["segment_id"].astype(int).unique()) == list(range(1, k + 1))
    profiles = pd.read_parquet(out / "profiles").set_index("segment_id")
    sizes = clustered.groupby(clustered["segment_id"].astype(int)).size()
    assert profiles["customers"].to_dict() == sizes.to_dict()
    revenue = clustered.groupby(clustered["segment_id"].astype(int))["monetary"].sum()
    assert profiles["revenue"].to_numpy() == pytest.approx(revenue.to_numpy(), rel=1e-9)
    # ids ordered by mean monetary, highest first; names unique and from the profile, not the index
    means = clustered.groupby(clustered["segment_id"].astype(int))["monetary"].mean()
    assert list(means.sort_values(ascending=False).index) == list(range(1, k + 1))
    assert profiles["segment_name"].is_unique and profiles.loc[1, "segment_name"] == "Champions"
    assert profiles["action"].str.len().min() > 20
    elbow = pd.read_parquet(out / "elbow").sort_values("k")
    assert elbow["k"].tolist() == list(range(2, 7))
    assert elbow.loc[elbow["chosen"], "k"].tolist() == [k]
    assert elbow["wcss"].is_monotonic_decreasing
    assert elbow["silhouette"].between(-1, 1).all()
    # RFM scores for every customer with a purchase
    bought = segments[segments["frequency"] > 0]
    assert bought[["r_score", "f_score", "m_score"]].isin([1, 2, 3, 4, 5]).all().all()
    assert (
        bought["rfm_score"]
        == bought["r_score"].astype(int).astype(str)
        + bought["f_score"].astype(int).astype(str)
        + bought["m_score"].astype(int).astype(str)
    ).all()
    rfm = pd.read_parquet(out / "rfm_profiles")
    assert rfm["customers"].sum() == len(bought)


def test_past_snapshot_and_failed_run(spark, first_run, raw_frame):
    """A past snapshot beside the first, then a failing run. (A rerun with the same seed giving the same
    segments is shown on this data by test_cluster, local against cluster run, and byte for byte by
    test_publish; a third full run here would only add a minute to the suite.)"""
    out, manifest, segments = first_run
    # a past snapshot from the same full log: later lines are set aside, nothing lost
    past = run_segmentation(spark, _cfg(out, snapshot_date="2011-06-01", k=3))
    expected = reference_from_frame(raw_frame, snapshot_date="2011-06-01")
    assert past["rejected_rows"] == expected.rejects
    assert past["customers"] == len(expected.customers)
    assert past["rejected_rows"]["after_snapshot"] > 200_000
    past_manifest = json.loads((out / "manifests" / "snapshot_date=2011-06-01" / "manifest.json").read_text())
    assert past_manifest["run_id"] == past["run_id"]
    # publishing the past snapshot left the first one as it was
    current = pd.read_parquet(out / "segments" / f"snapshot_date={SNAPSHOT}").set_index("customer_id")
    pd.testing.assert_series_equal(current["segment_id"].sort_index(), segments["segment_id"].sort_index())

    # a failing run publishes nothing and leaves both snapshots as they were
    with pytest.raises(ModelError, match=r"cannot fit k=5000: only 4317 customer\(s\) can be clustered"):
        run_segmentation(spark, _cfg(out, k=5000))
    current = json.loads((out / "manifests" / f"snapshot_date={SNAPSHOT}" / "manifest.json").read_text())
    assert current["run_id"] == manifest["run_id"]
    assert sorted(p.name for p in (out / "segments").iterdir()) == [
        "snapshot_date=2011-06-01",
        f"snapshot_date={SNAPSHOT}",
    ]
    assert not (out / "_staging").exists() and not (out / "_trash").exists()
