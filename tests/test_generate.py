"""The transaction generator: deterministic, readable by the job's default config, defects as configured,
planted customer types that KMeans recovers."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.generate_transactions import (
    CUSTOMER_TYPES,
    PRODUCTS,
    WORDS,
    GeneratorParams,
    description,
    generate,
    parse_size,
)
from segmentation.config import DEFAULTS
from segmentation.features.rfm import customer_features, with_line_kind
from segmentation.model.kmeans import fit_kmeans
from segmentation.model.metrics import adjusted_rand_index
from segmentation.prepare import fit_preparation
from segmentation.sources.read import original_columns, read_transactions
from segmentation.sources.validate import classify_rows

PARAMS = GeneratorParams(
    lines=20_000, customers=500, seed=7, returns=0.03, missing_customer=0.10, duplicates=0.02, malformed=0.01
)
COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    summary = generate(spark, PARAMS, str(out / "a"))
    # the same seed on another partitioning, written as CSV too
    generate(
        spark, GeneratorParams(**{**PARAMS.__dict__, "partitions": 3}), str(out / "b"), ("parquet", "csv")
    )
    return out, summary


def test_parse_size():
    assert parse_size("1M") == 1_000_000
    assert parse_size("250k") == 250_000
    assert parse_size("100000") == 100_000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("ten")


def test_description_words_set_the_string_width(spark):
    """The benchmark's knob: the catalog's names by default, N words drawn per product, or the number alone."""
    products = spark.range(300).select(F.col("id").alias("p"))
    widths = {"catalog": None, "number": 0, "long": 12}
    out = products.select("p", *[description(F.col("p"), w).alias(n) for n, w in widths.items()]).toPandas()
    assert (
        out.catalog.iloc[3] == f"{PRODUCTS[3]} 3"
        and out.catalog.iloc[len(PRODUCTS)] == f"{PRODUCTS[0]} {len(PRODUCTS)}"
    )
    assert out.number.tolist() == [str(p) for p in range(300)]
    words = out["long"].str.split()
    assert words.map(len).eq(13).all() and (words.str[-1] == out.p.astype(str)).all()
    assert set(words.str[:-1].sum()) <= set(WORDS)
    assert out["long"].str.len().mean() > 2 * out.catalog.str.len().mean()
    # a product's words are its own: the same on every line, another product's differ
    again = products.select(description(F.col("p"), 12).alias("long")).toPandas()
    assert (
        again["long"].tolist() == out["long"].tolist()
        and out["long"].str.rsplit(" ", n=1).str[0].nunique() == 300
    )
    with pytest.raises(ValueError, match="description words must be 0..100, got -1"):
        GeneratorParams(lines=10, customers=1, description_words=-1).check()


def test_same_seed_same_rows_on_any_partitioning(spark, generated):
    out, summary = generated
    a = spark.read.parquet(str(out / "a" / "transactions"))
    b = spark.read.parquet(str(out / "b" / "transactions"))
    csv = spark.read.option("header", True).csv(str(out / "b" / "transactions_csv"))
    assert a.columns == COLUMNS and dict(a.dtypes) == dict.fromkeys(COLUMNS, "string")
    rows_a = sorted(a.collect(), key=lambda r: tuple(str(v) for v in r))
    assert len(rows_a) == PARAMS.lines
    assert rows_a == sorted(b.collect(), key=lambda r: tuple(str(v) for v in r))
    assert rows_a == sorted(csv.collect(), key=lambda r: tuple(str(v) for v in r))
    labels = spark.read.parquet(str(out / "a" / "labels"))
    assert labels.count() == PARAMS.customers
    assert sum(summary["customers_per_type"].values()) == PARAMS.customers
    # customer type shares near the planted ones (500 customers: +-7 points)
    for t in CUSTOMER_TYPES:
        assert summary["customers_per_type"][t.name] / PARAMS.customers == pytest.approx(t.share, abs=0.07)


def test_the_benchmarks_contenders_compute_the_same_features(generated, tmp_path):
    """The pandas and the DuckDB baselines (scripts/) clean and aggregate alike on the defective lines: the same
    customers with the same recency, frequency and net value, and the same k from the same sweep."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    results = {}
    for name in ("baseline_pandas", "baseline_duckdb"):
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = tmp_path / name
        assert module.main(["--input", str(generated[0] / "a" / "transactions"), "--output", str(out)]) == 0
        summary = json.loads((out / "timings.json").read_text())
        segments = pd.read_parquet(out / "segments.parquet").set_index("CustomerID").sort_index()
        results[name] = summary, segments
    (pandas_summary, by_pandas), (duckdb_summary, by_duckdb) = results.values()
    assert pandas_summary["input_rows"] == duckdb_summary["input_rows"] == PARAMS.lines
    assert 400 < len(by_pandas) <= PARAMS.customers and by_pandas.index.equals(by_duckdb.index)
    for column in ("recency_days", "frequency"):
        assert by_pandas[column].astype(int).tolist() == by_duckdb[column].astype(int).tolist(), column
    assert by_pandas.monetary.to_numpy() == pytest.approx(by_duckdb.monetary.to_numpy(), rel=1e-9)
    assert pandas_summary["chosen_k"] == duckdb_summary["chosen_k"]


def test_default_config_reads_it_and_defects_have_the_configured_shares(spark, generated):
    out, _ = generated
    cfg = copy.deepcopy(DEFAULTS)
    cfg["input"]["path"] = str(out / "a" / "transactions")
    raw, cfg["input"] = read_transactions(spark, cfg["input"])
    n = raw.count()
    assert n == PARAMS.lines
    assert n - raw.distinct().count() == pytest.approx(PARAMS.duplicates * n, rel=0.25)
    returns = raw.filter(F.col("InvoiceNo").startswith("C")).count()
    assert returns / n == pytest.approx(PARAMS.returns, abs=0.006)
    classified = classify_rows(raw, cfg["input"], True, original_columns(raw))
    reasons = {r["reject_reason"]: r["count"] for r in classified.groupBy("reject_reason").count().collect()}
    assert set(reasons) == {None, "missing_customer_id", "invalid_number", "invalid_timestamp", "duplicate"}
    assert reasons["missing_customer_id"] / n == pytest.approx(PARAMS.missing_customer, abs=0.01)
    malformed = reasons["invalid_number"] + reasons["invalid_timestamp"]
    assert malformed / n == pytest.approx(PARAMS.malformed, abs=0.003)
    # a return line is a return to the job: negative quantity
    lines = classified.filter(F.col("reject_reason").isNull()).transform(
        with_line_kind, return_prefix="C", has_order_id=True
    )
    assert lines.filter(F.col("_is_return") != (F.col("_quantity") < 0)).count() == 0


def test_planted_types_are_recovered_at_the_true_k(spark, generated):
    out, _ = generated
    cfg = copy.deepcopy(DEFAULTS)
    cfg["input"]["path"] = str(out / "a" / "transactions")
    raw, cfg["input"] = read_transactions(spark, cfg["input"])
    classified = classify_rows(raw, cfg["input"], True, original_columns(raw))
    lines = classified.filter(F.col("reject_reason").isNull()).transform(
        with_line_kind, return_prefix="C", has_order_id=True
    )
    customers = customer_features(lines, "2011-12-10").filter(F.col("excluded_reason").isNull()).cache()
    prep, _ = fit_preparation(customers, cfg["prepare"])
    scaled = prep.transform(customers)
    model = fit_kmeans(scaled, len(CUSTOMER_TYPES), seed=42)
    labels = spark.read.parquet(str(out / "a" / "labels"))
    assigned = model.transform(scaled).join(labels, "customer_id")
    assert assigned.count() >= 0.97 * PARAMS.customers
    assert adjusted_rand_index(assigned, "customer_type", "cluster") >= 0.9


def test_adjusted_rand_index_known_values(spark):
    df = spark.createDataFrame(
        [(0, 0), (0, 0), (1, 1), (1, 2), (None, 1)], "truth int, pred int"
    )  # the null row is ignored
    assert adjusted_rand_index(df, "truth", "pred") == pytest.approx(0.5714285714285715, rel=1e-12)
    same = spark.createDataFrame([(0, 5), (0, 5), (1, 7), (1, 7), (2, 6)], "truth int, pred int")
    assert adjusted_rand_index(same, "truth", "pred") == pytest.approx(1.0)
    crossed = spark.createDataFrame([(0, 0), (0, 1), (1, 0), (1, 1)], "truth int, pred int")
    assert adjusted_rand_index(crossed, "truth", "pred") == pytest.approx(-0.5)
