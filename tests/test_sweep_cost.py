"""The k sweep's elbow: cost per customer within 5% of a plain, full Spark ML KMeans fit at the same k and seed,
on the bundled data and on generated customers (the engine replays Spark ML's start and iterations, so it is
the same fit: tests/test_lloyd.py checks starts, centers and cost to rounding); the sampled sweep
(`model.sweep_sample`) is seeded and refits the chosen k on everyone."""

from __future__ import annotations

import copy

import pytest
from pyspark.ml.clustering import KMeans
from pyspark.sql import functions as F

from jobs.generate_transactions import planted_features
from segmentation.config import DEFAULTS, candidate_ks
from segmentation.features.rfm import customer_features, with_line_kind
from segmentation.model.kmeans import fit_on_all, sweep_k
from segmentation.model.knee import knee_point
from segmentation.prepare import fit_preparation
from segmentation.sources.read import original_columns, read_transactions
from segmentation.sources.validate import classify_rows

MODEL = DEFAULTS["model"]


def _layout(df):
    """The job's layout of the customers to cluster (run.py)."""
    return df.repartition(int(MODEL["partitions"]), "customer_id").sortWithinPartitions("customer_id")


def _scaled(customers_df):
    prep, _ = fit_preparation(customers_df, DEFAULTS["prepare"])
    return prep.transform(customers_df).persist()


def _plain_cost_per_customer(scaled_df, k: int) -> float:
    """A plain Spark ML KMeans fit on all customers, as anyone would write it."""
    kmeans = KMeans(
        featuresCol="scaled",
        k=k,
        seed=int(MODEL["seed"]),
        maxIter=int(MODEL["max_iter"]),
        tol=float(MODEL["tol"]),
    )
    return kmeans.fit(scaled_df).summary.trainingCost / scaled_df.count()


def _assert_elbow_within_5_percent(scaled_df, ks=None):
    n = scaled_df.count()
    ks = ks or candidate_ks(MODEL)
    fits = sweep_k(
        scaled_df,
        ks,
        int(MODEL["seed"]),
        int(MODEL["max_iter"]),
        float(MODEL["tol"]),
        sample_size=MODEL["sweep_sample"],
    )
    assert [f.k for f in fits] == ks
    for fit in fits:
        reference = _plain_cost_per_customer(scaled_df, fit.k)
        assert fit.wcss / n == pytest.approx(reference, rel=0.05), fit.k
    return fits


@pytest.fixture(scope="module")
def bundled_scaled(spark):
    cfg = copy.deepcopy(DEFAULTS)
    raw, cfg["input"] = read_transactions(spark, cfg["input"])
    classified = classify_rows(raw, cfg["input"], True, original_columns(raw))
    lines = classified.filter(F.col("reject_reason").isNull()).transform(
        with_line_kind, return_prefix="C", has_order_id=True
    )
    customers = customer_features(lines, "2011-12-10").filter(F.col("excluded_reason").isNull())
    scaled = _scaled(_layout(customers).persist())
    yield scaled
    scaled.unpersist()


def test_elbow_on_the_bundled_data_matches_full_fits(bundled_scaled):
    assert bundled_scaled.count() == 4317
    fits = _assert_elbow_within_5_percent(bundled_scaled)
    # the default config sweeps every bundled customer: nothing to refit
    assert MODEL["sweep_sample"] is None or MODEL["sweep_sample"] > 4317
    assert all(sum(f.cluster_sizes) == 4317 for f in fits)


def test_elbow_on_generated_customers_matches_full_fits(spark):
    scaled = _scaled(_layout(planted_features(spark, 10_000, seed=3)).persist())
    fits = _assert_elbow_within_5_percent(scaled, ks=[2, 3, 4, 5, 6, 7])
    # four planted types: the knee is at 4
    assert knee_point([f.k for f in fits], [f.wcss for f in fits])[0] == 4
    scaled.unpersist()


def test_sampled_sweep_is_seeded_and_the_chosen_k_is_refitted_on_all(spark):
    scaled = _scaled(_layout(planted_features(spark, 4_000, seed=5)).persist())
    first = sweep_k(scaled, [3, 4], seed=42, sample_size=1_000)
    again = sweep_k(scaled, [3, 4], seed=42, sample_size=1_000)
    fitted = sum(first[0].cluster_sizes)
    assert 850 <= fitted <= 1_150  # a hash sample of about 1,000 of 4,000
    assert [f.wcss for f in first] == [f.wcss for f in again]
    # the sample's WCSS is scaled up to all 4,000 customers: close to the full fit's at the true k
    full = fit_on_all(scaled, first[1], seed=42)
    assert sum(full.cluster_sizes) == 4_000
    assert first[1].wcss == pytest.approx(full.wcss, rel=0.1)
    # a sweep that saw everyone: the published Spark ML model holds its centers, and the fit's sizes follow the
    # model's cluster indices
    whole = sweep_k(scaled, [4], seed=42)[0]
    published = fit_on_all(scaled, whole, seed=42)
    assert published.model is not None and whole.model is None
    assert sorted(c.tolist() for c in published.model.clusterCenters()) == sorted(whole.centers)
    assert sorted(published.cluster_sizes) == sorted(whole.cluster_sizes)
    sizes = {
        r.cluster: r["count"] for r in published.model.transform(scaled).groupBy("cluster").count().collect()
    }
    assert [sizes[c] for c in range(4)] == published.cluster_sizes
    assert published.wcss == whole.wcss
    scaled.unpersist()
