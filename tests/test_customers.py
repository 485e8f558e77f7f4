"""Customer-level input (`input.kind: customers`): reject reasons, imputation and one-hot encoding on tiny
hand-made tables, outliers end to end, and the Mall Customers data with its well-known five groups."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from segmentation.config import DEFAULTS, load_config, validate_config
from segmentation.errors import ConfigError, SchemaError
from segmentation.pipeline import run_segmentation
from segmentation.prepare import fit_preparation
from segmentation.sources.customers import classify_customer_rows, read_customer_table

from .conftest import REPO, SHARED_DATA

MALL_CSV = SHARED_DATA / "mall_customers" / "Mall_Customers.csv"
INCOME, SPEND = "Annual Income (k$)", "Spending Score (1-100)"


def _cfg(path: Path, output: Path, **model) -> dict:
    cfg = json.loads(json.dumps(DEFAULTS))
    cfg["input"].update(
        {
            "kind": "customers",
            "path": str(path),
            "format": "csv",
            "columns": {**cfg["input"]["columns"], "customer_id": "Customer ID"},
            "features": ["Age", INCOME],
            "categorical": ["Genre"],
        }
    )
    cfg["prepare"]["cap_quantiles"] = None
    cfg["model"].update({"k_min": 2, "k_max": 5, "max_iter": 20, "stability_fits": 1, **model})
    cfg["output"]["path"] = str(output)
    return validate_config(cfg)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\r\n".join(lines)).encode("utf-8"))  # CRLF and no final newline, like the Mall file
    return path


TINY = [
    'Customer ID,Genre,Age,"Annual Income (k$)"',
    "c1,Male,30,50",
    "c2,Female,41,70",
    "c3,Female,,60",
    "c4,Male,abc,60",
    ",Male,22,40",
    "c5,Male,22",
    "c6,Female,35,55",
    "c6,Female,36,56",
    "c7,,50,90",
    " c8 ,Male,NaN,20",
]


def test_reject_reasons_and_reconciliation(spark, tmp_path):
    cfg = _cfg(_write(tmp_path / "c.csv", TINY), tmp_path / "out")
    classified = classify_customer_rows(read_customer_table(spark, cfg["input"]), cfg["input"])
    rows = classified.collect()
    got = sorted(((r["customer_id"] or ""), r["reject_reason"] or "") for r in rows)
    assert got == [
        ("", "missing_customer_id"),
        ("c1", ""),
        ("c2", ""),
        ("c3", "missing_value"),  # missing Age
        ("c4", "invalid_number"),  # "abc"
        ("c5", "malformed_row"),  # one field short
        ("c6", "duplicate_customer_id"),  # the same id twice: neither row can be preferred
        ("c6", "duplicate_customer_id"),
        ("c7", "missing_value"),  # missing category
        ("c8", "invalid_number"),  # NaN; the id is trimmed
    ]
    accepted = {r["customer_id"]: (r["_f0"], r["_f1"], r["_c0"]) for r in rows if r["reject_reason"] is None}
    assert accepted == {"c1": (30.0, 50.0, "Male"), "c2": (41.0, 70.0, "Female")}


def test_imputation_and_one_hot_encoding(spark, tmp_path):
    cfg = _cfg(_write(tmp_path / "c.csv", TINY), tmp_path / "out")
    cfg["input"]["missing"] = "impute"
    # cached as the run does: with CSV column pruning a later query could parse a short row differently
    classified = classify_customer_rows(read_customer_table(spark, cfg["input"]), cfg["input"]).cache()
    reasons = {r["customer_id"]: r["reject_reason"] for r in classified.collect()}
    assert reasons["c3"] is None and reasons["c7"] is None  # missing values are kept to be imputed
    assert reasons["c4"] == "invalid_number"  # a value that is not a number is still an error
    accepted = classified.filter("reject_reason IS NULL")
    model, bounds = fit_preparation(accepted, cfg["prepare"], cfg["input"])
    assert bounds == {}
    out = {r["customer_id"]: r for r in model.transform(accepted).collect()}
    # Age of c1, c2, c7 is 30, 41, 50: c3 gets the mean (input.impute_strategy, default mean)
    assert out["c3"]["_f0"] == pytest.approx(121 / 3)
    # features: Age, income, then Genre one-hot (Female, Male, missing) in alphabetical order
    assert list(out["c7"]["features"])[2:] == [0.0, 0.0, 1.0]
    assert list(out["c1"]["features"]) == [30.0, 50.0, 0.0, 1.0, 0.0]
    assert list(out["c3"]["features"]) == pytest.approx([121 / 3, 60.0, 1.0, 0.0, 0.0])
    assert len(out["c2"]["scaled"]) == 5


def test_config_for_customer_tables(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "input: {kind: customers, columns: {customer_id: id}, features: [x, 'y ($)'], categorical: [g]}\n"
        "prepare: {features: ['y ($)', g], log1p: ['y ($)']}\n"
    )
    cfg = validate_config(load_config(path))
    assert cfg["prepare"]["features"] == ["y ($)", "g"] and cfg["prepare"]["log1p"] == ["y ($)"]
    path.write_text("input: {kind: customers, features: [x, y]}\n")
    assert validate_config(load_config(path))["prepare"]["features"] == ["x", "y"]  # default: every column
    path.write_text("input: {kind: customers, features: [x]}\nprepare: {features: [z]}\n")
    with pytest.raises(ConfigError, match="unknown feature 'z'; with input.kind customers choose from"):
        validate_config(load_config(path))
    path.write_text("input: {kind: customers}\n")
    with pytest.raises(
        ConfigError, match="input.kind customers needs input.features and/or input.categorical"
    ):
        validate_config(load_config(path))
    path.write_text("input: {kind: customers, features: [x], missing: drop}\n")
    with pytest.raises(ConfigError, match="input.missing must be 'reject' or 'impute', got 'drop'"):
        validate_config(load_config(path))
    path.write_text("input: {kind: people}\n")
    with pytest.raises(ConfigError, match="input.kind must be one of transactions, customers, got 'people'"):
        validate_config(load_config(path))


def test_missing_column_is_named(spark, tmp_path):
    cfg = _cfg(_write(tmp_path / "c.csv", ["Customer ID,Genre,Age", "c1,Male,30"]), tmp_path / "out")
    with pytest.raises(SchemaError, match=r"missing mapped column\(s\) feature 'Annual Income \(k\$\)'="):
        read_customer_table(spark, cfg["input"])


def test_outliers_are_excluded_with_a_reason_and_three_groups_found(spark, tmp_path):
    rng = random.Random(11)
    lines = ['Customer ID,Genre,Age,"Annual Income (k$)"']
    for g, (age, income) in enumerate([(25, 20), (45, 60), (65, 100)]):
        for i in range(50):
            lines.append(
                f"g{g}-{i:02d},{'Male' if i % 2 else 'Female'},{age + rng.gauss(0, 2):.1f},{income + rng.gauss(0, 3):.1f}"
            )
    lines += [f"x{i},Male,{300 + i},{2000 + 10 * i}" for i in range(3)]  # three extreme customers
    cfg = _cfg(_write(tmp_path / "c.csv", lines), tmp_path / "out", k_max=4)
    cfg["prepare"]["features"] = ["Age", INCOME]
    m = run_segmentation(spark, cfg)
    assert (m["input_rows"], m["accepted_rows"], m["customers"]) == (153, 153, 153)
    assert m["excluded_customers"] == {"outlier": 3} and m["clustered_customers"] == 150
    assert m["chosen_k"] == 3 and m["clear_structure"]
    assert sorted(p["customers"] for p in m["profiles"]) == [50, 50, 50]
    segments = pd.read_parquet(tmp_path / "out" / "segments")
    outliers = segments[segments.excluded_reason.notna()]
    assert sorted(outliers.customer_id) == ["x0", "x1", "x2"] and outliers.segment_id.isna().all()
    assert len(segments) == 153 and segments.customer_id.is_unique


@pytest.mark.skipif(not MALL_CSV.is_file(), reason=f"Mall Customers data not found at {MALL_CSV}")
def test_mall_customers_preset_finds_the_five_groups(spark, tmp_path):
    cfg = load_config(REPO / "conf" / "mall_customers.yaml")
    cfg["input"]["path"] = str(MALL_CSV)
    cfg["output"]["path"] = str(tmp_path / "out")
    cfg["model"]["k_max"] = 8
    m = run_segmentation(spark, validate_config(cfg))
    assert (m["input_rows"], m["accepted_rows"], m["rejected_rows"], m["clustered_customers"]) == (
        200,
        200,
        {},
        200,
    )
    assert m["chosen_k"] == 5 and m["clear_structure"], m["chosen_k_reason"]
    names = {p["segment_name"]: p["customers"] for p in m["profiles"]}
    assert names == {
        f"High {INCOME}, low {SPEND}": 35,
        f"High {INCOME}, high {SPEND}": 39,
        f"Average {INCOME}, average {SPEND}": 81,
        f"Low {INCOME}, low {SPEND}": 23,
        f"Low {INCOME}, high {SPEND}": 22,
    }
    by_name = {p["segment_name"]: p for p in m["profiles"]}
    rich_spenders = by_name[f"High {INCOME}, high {SPEND}"]
    assert rich_spenders[f"mean_{INCOME}"] == pytest.approx(86.54, abs=0.01)
    assert rich_spenders[f"mean_{SPEND}"] == pytest.approx(82.13, abs=0.01)
    out = tmp_path / "out"
    segments = pd.read_parquet(out / "segments")
    assert list(segments.columns[:6]) == ["customer_id", "Age", INCOME, SPEND, "Genre", "segment_id"]
    assert len(segments) == 200 and segments.segment_id.notna().all()
    assert segments.customer_id.str.len().eq(4).all()  # zero-padded ids kept as written ("0001")
    elbow = pd.read_parquet(out / "elbow").sort_values("k")
    assert elbow.k.tolist() == list(range(2, 9)) and elbow.loc[elbow.chosen, "k"].tolist() == [5]
    five = elbow[elbow.k == 5].iloc[0]
    assert sorted(five.cluster_sizes) == [22, 23, 35, 39, 81] and five.smallest_cluster_share == 0.11
    assert five.calinski_harabasz == pytest.approx(248.649, abs=0.01)  # k=7 scores a little higher (254.6)
    assert five.davies_bouldin == elbow.davies_bouldin.min()
    report = next((out / "reports").glob("snapshot_date=*/report.html")).read_text()
    assert "Chosen k = <b>5</b>" in report and "Low Annual Income (k$), high Spending Score (1-100)" in report
