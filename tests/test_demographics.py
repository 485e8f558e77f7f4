"""`input.demographics`: a customer table beside the transactions, joined onto the RFM features and usable as
model features; its rows are validated and reconciled, customers without one are excluded with a reason."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from segmentation.config import DEFAULTS, validate_config
from segmentation.errors import ConfigError
from segmentation.pipeline import run_segmentation

AGE = "Age (years)"


def _inputs(tmp_path):
    lines = ["InvoiceNo,InvoiceDate,Quantity,UnitPrice,CustomerID"]
    for i in range(20):
        price = 1000 + 10 * i if i < 10 else 20 + i  # c00-c09 spend a lot, c10-c19 little
        lines.append(f"A{i},2011-03-0{1 + i % 9} 10:00:00,1,{price},c{i:02d}")
    lines.append("A99,2011-03-05 10:00:00,1,500,c20")  # no demographics row
    (tmp_path / "tx.csv").write_text("\n".join(lines) + "\n")
    demo = [f'CustomerID,"{AGE}",Genre']
    for i in range(18):
        demo.append(f"c{i:02d},{20 + i % 5 if i < 10 else 60 + i % 5},{'Female' if i % 2 else 'Male'}")
    demo += ["c18,abc,Male", "c19,61,Male", "c21,33,Female"]  # not a number; fine; no transactions
    (tmp_path / "demo.csv").write_text("\n".join(demo) + "\n")


def _cfg(tmp_path, **demo):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["input"].update({"path": str(tmp_path / "tx.csv"), "format": "csv"})
    cfg["input"]["demographics"].update(
        {"path": str(tmp_path / "demo.csv"), "features": [AGE], "categorical": ["Genre"], **demo}
    )
    cfg["prepare"]["features"] = ["monetary", AGE]
    # a Gaussian mixture, compared with KMeans: the soft method's extra column and compare mode end to end
    cfg["model"].update({"k": 2, "stability_fits": 0, "method": "gaussian_mixture", "compare": ["kmeans"]})
    cfg["output"]["path"] = str(tmp_path / "out")
    return validate_config(cfg)


def test_demographics_join_reconciles_and_feeds_the_model(spark, tmp_path):
    _inputs(tmp_path)
    m = run_segmentation(spark, _cfg(tmp_path))
    assert m["demographics"] == {
        "path": str(tmp_path / "demo.csv"),
        "input_rows": 21,
        "accepted_rows": 20,
        "rejected_rows": {"invalid_number": 1},
        "matched_customers": 19,  # c00-c17, c19 (c21 has no transactions, c18's row was rejected)
    }
    assert m["customers"] == 21 and m["excluded_customers"] == {"no_demographics": 2}
    assert m["clustered_customers"] == 19 and m["chosen_k"] == 2
    segments = pd.read_parquet(tmp_path / "out" / "segments").set_index("customer_id")
    # after the documented columns
    assert list(segments.columns[-5:-1]) == ["run_id", "membership_probability", AGE, "Genre"]
    clustered = segments[segments.segment_id.notna()]
    assert clustered.membership_probability.min() > 0.99 and len(clustered) == 19
    assert segments.loc[["c18", "c20"], "membership_probability"].isna().all()
    assert segments.loc[["c18", "c20"], "excluded_reason"].tolist() == ["no_demographics"] * 2
    assert segments.loc[["c18", "c20"], "segment_id"].isna().all()
    assert segments.loc["c03", AGE] == 23.0 and segments.loc["c03", "Genre"] == "Female"
    # the two planted groups (young big spenders, older small spenders) are the two segments
    young = set(segments.loc[[f"c{i:02d}" for i in range(10)], "segment_id"])
    old = set(segments.loc[[f"c{i:02d}" for i in (10, 11, 12, 13, 14, 15, 16, 17, 19)], "segment_id"])
    assert young == {1} and old == {2}
    profiles = {p["segment_id"]: p for p in m["profiles"]}
    assert profiles[1][f"mean_{AGE}"] == pytest.approx(22.0)  # 20..24 twice
    assert profiles[2][f"mean_{AGE}"] == pytest.approx((60 + 61 + 62 + 63 + 64 + 60 + 61 + 62 + 61) / 9)
    assert profiles[1]["share_Genre=Female"] == pytest.approx(0.5)
    assert profiles[1][f"center_{AGE}"] == pytest.approx(22.0, abs=0.5)
    assert m["method"] == "gaussian_mixture"
    assert {k: v["chosen_k"] for k, v in m["comparison"]["methods"].items()} == {
        "gaussian_mixture": 2,
        "kmeans": 2,
    }
    rows = {(r["method"], r["k"]): r for r in m["comparison"]["rows"]}
    assert sorted(rows) == [("gaussian_mixture", 2), ("kmeans", 2)]
    assert sorted(rows[("kmeans", 2)]["cluster_sizes"]) == [9, 10]
    elbow = pd.read_parquet(tmp_path / "out" / "elbow")
    assert elbow[["method", "k", "chosen"]].values.tolist() == [["gaussian_mixture", 2, True]]
    assert elbow.log_likelihood.notna().all()
    report = next((tmp_path / "out" / "reports").glob("snapshot_date=*/report.html")).read_text()
    assert '<h2 id="compare">Methods compared</h2>' in report


def test_demographics_config_errors(tmp_path):
    _inputs(tmp_path)
    with pytest.raises(ConfigError, match=r"input.demographics columns \['monetary'\] clash"):
        _cfg(tmp_path, features=["monetary"])
    cfg = copy.deepcopy(DEFAULTS)
    cfg["prepare"]["features"] = ["monetary", AGE]
    with pytest.raises(ConfigError, match=r"unknown feature 'Age \(years\)'; choose from recency_days"):
        validate_config(cfg)
