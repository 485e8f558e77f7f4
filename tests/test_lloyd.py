"""The sweep's engine (segmentation/model/engine/) against Spark ML itself: its replayed k-means|| starts are Spark
ML's own, its Lloyd iterations from them give the full Spark ML KMeans fit (centers, iterations, cost), its
diagnostics are Spark ML's ClusteringEvaluator and our Spark-aggregate metrics, to rounding, and the published
Spark ML model holds the sweep's centers."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.linalg import Vectors

from segmentation.model import engine as lloyd
from segmentation.model.kmeans import fit_on_all, sweep_k
from segmentation.model.metrics import adjusted_rand_index, cluster_metrics

KS = [2, 3, 4]


@pytest.fixture(scope="module")
def scaled(spark):
    """Four overlapping groups in 3 dimensions plus a few far points, in 3 partitions."""
    rng = random.Random(3)
    rows = []
    for g, (cx, cy, cz) in enumerate([(0, 0, 0), (3, 0, 1), (0, 3, -1), (2, 2, 2)]):
        for i in range(300):
            rows.append((f"c{g}-{i}", Vectors.dense(rng.gauss(cx, 1), rng.gauss(cy, 1), rng.gauss(cz, 1))))
    rows += [(f"far-{i}", Vectors.dense(9.0 + i, -9.0, 9.0)) for i in range(3)]
    df = spark.createDataFrame(rows, ["customer_id", "scaled"])
    return df.repartition(3, "customer_id").sortWithinPartitions("customer_id").cache()


@pytest.fixture(scope="module")
def scaled_two(scaled):
    """The same points in another layout: 2 partitions."""
    return scaled.repartition(2, "customer_id").sortWithinPartitions("customer_id").cache()


#: Spark ML's results per (layout, k, seed), computed once for the module: the driver and the Spark variant of
#: a test compare with the same reference fits.
_REFERENCE: dict[tuple, object] = {}


def _once(compute, df, *args):
    """compute(df, *args), once per layout and arguments."""
    key = (compute.__name__, id(df), *args)
    if key not in _REFERENCE:
        _REFERENCE[key] = compute(df, *args)
    return _REFERENCE[key]


def _spark_starts_of(scaled, pairs):
    """Spark ML's own k-means|| start for each (k, seed): a KMeans fit with no iteration (new Model objects on
    every call: the engine moves their centers in place)."""
    return [lloyd.Model(k, seed, _once(_spark_start, scaled, k, seed).copy()) for k, seed in pairs]


def _spark_start(scaled, k, seed):
    fitted = KMeans(featuresCol="scaled", k=k, seed=seed, maxIter=0, tol=1e-4).fit(scaled.select("scaled"))
    return np.array(fitted.clusterCenters())


def _spark_fit(scaled, k, seed, max_iter=20):
    return KMeans(
        featuresCol="scaled", predictionCol="cluster", k=k, seed=seed, maxIter=max_iter, tol=1e-4
    ).fit(scaled.select("scaled"))


def _full_fit_reference(scaled, k, seed):
    """What the full Spark ML fit at (k, seed) gives: iterations, cost, centers, sizes, silhouette, within."""
    reference = _spark_fit(scaled, k, seed)
    summary = reference.summary
    assigned = reference.transform(scaled)
    return {
        "iterations": summary.numIter,
        "cost": summary.trainingCost,
        "centers": [x for c in reference.clusterCenters() for x in c],
        "sizes": list(summary.clusterSizes),
        "silhouette": ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster").evaluate(assigned),
        "within": cluster_metrics(assigned, 3)["within"],
    }


@pytest.mark.parametrize("where", ["driver", "spark"])
def test_from_spark_starts_every_model_is_the_full_spark_ml_fit(spark, scaled, where):
    features_df = lloyd.features_frame(scaled, 3).cache()
    rows = (
        lloyd.LocalRows(features_df, 3, block=500) if where == "driver" else lloyd.SparkRows(features_df, 3)
    )
    models = _spark_starts_of(scaled, [(k, 42) for k in KS])
    lloyd.fit_all(rows, models, max_iter=20, tol=1e-4)
    evaluations, _ = lloyd.evaluate(rows, models, list(range(len(KS))), [])
    for model, ev in zip(models, evaluations):
        expected = _once(_full_fit_reference, scaled, model.k, 42)
        assert model.iterations == expected["iterations"]
        assert model.cost == pytest.approx(expected["cost"], rel=1e-9)
        assert model.centers.ravel().tolist() == pytest.approx(expected["centers"], abs=1e-9)
        assert ev.sizes.tolist() == expected["sizes"]
        assert ev.silhouette == pytest.approx(expected["silhouette"], abs=1e-9)
        assert ev.within.sum() == pytest.approx(expected["within"], rel=1e-9)
    features_df.unpersist()


@pytest.mark.parametrize("where", ["driver", "spark"])
def test_starts_are_spark_ml_starts(spark, scaled, scaled_two, where):
    """The replayed k-means|| start of every (k, seed) is Spark ML's own (a KMeans fit with no iteration), on
    the fixture's 3 partitions and on another layout of 2 (the start depends on the layout, as Spark's)."""
    pairs = [(2, 42), (5, 42), (8, 42), (3, 7)]
    for df in (scaled, scaled_two):
        features_df = lloyd.features_frame(df, 3).cache()
        rows = lloyd.LocalRows(features_df, 3) if where == "driver" else lloyd.SparkRows(features_df, 3)
        starts = lloyd.kmeans_parallel(rows, features_df, 3, pairs)
        for model, reference in zip(starts, _spark_starts_of(df, pairs)):
            assert model.centers.shape == reference.centers.shape
            assert model.centers.ravel().tolist() == pytest.approx(
                reference.centers.ravel().tolist(), abs=1e-12
            )
        features_df.unpersist()


def test_sweep_diagnostics_and_stability_match_spark_computations(spark, scaled):
    # the passes in the driver (as Spark jobs they share every per-block function: test_starts_are_spark_ml_starts
    # and test_from_spark_starts_every_model_is_the_full_spark_ml_fit run them there)
    fits = sweep_k(scaled, [3, 4], seed=42, max_iter=20, stability_fits=1)
    # the stability fit with seed 43 is the sweep's main fit at seed 43 (a start depends on its k and seed only)
    others = sweep_k(scaled, [3, 4], seed=43, max_iter=20)
    for fit, other in zip(fits, others):
        published = fit_on_all(scaled, fit, seed=42)
        assert sorted(c.tolist() for c in published.model.clusterCenters()) == sorted(fit.centers)
        assigned = published.model.transform(scaled)
        # the fit's sizes follow the published model's cluster indices
        sizes = {r.cluster: r["count"] for r in assigned.groupBy("cluster").count().collect()}
        assert [sizes.get(c, 0) for c in range(fit.k)] == published.cluster_sizes
        metrics = cluster_metrics(assigned, 3)
        assert sorted(fit.metrics["cluster_sizes"]) == sorted(metrics["cluster_sizes"])
        assert fit.metrics["calinski_harabasz"] == pytest.approx(metrics["calinski_harabasz"], rel=1e-9)
        assert fit.metrics["davies_bouldin"] == pytest.approx(metrics["davies_bouldin"], rel=1e-9)
        assert fit.silhouette == pytest.approx(
            ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster").evaluate(assigned), abs=1e-9
        )
        other_model = fit_on_all(scaled, other, seed=43).model
        labels = other_model.transform(assigned.withColumnRenamed("cluster", "a")).withColumnRenamed(
            "cluster", "b"
        )
        assert fit.stability == pytest.approx(adjusted_rand_index(labels, "a", "b"), abs=1e-12)
        assert 0.0 < fit.stability <= 1.0
        # and the fit is Spark ML's own at that k and seed
        reference = _spark_fit(scaled, fit.k, 42)
        assert fit.wcss == pytest.approx(reference.summary.trainingCost, rel=1e-9)
        assert fit.iterations == reference.summary.numIter


def test_a_spark_the_engine_is_not_verified_on_gets_spark_ml_fits(spark, scaled, monkeypatch, caplog):
    """On a Spark release the engine's replay is not verified on (segmentation/compat.py), the sweep fits
    Spark ML itself, says so, and gives the same fits as the engine does on a verified one."""
    from segmentation import compat
    from segmentation.model import kmeans

    replayed = sweep_k(scaled, KS, seed=42, max_iter=20)
    monkeypatch.setattr(kmeans, "engine_verified", lambda: False)
    with caplog.at_level("WARNING", logger="segmentation.model.kmeans"):
        fitted = sweep_k(scaled, KS, seed=42, max_iter=20)
    verified = ", ".join(compat.version_text(v) for v in compat.ENGINE_VERIFIED)
    assert (
        f"k sweep: one Spark ML KMeans fit per (k, seed), 3 fits: the engine's replay of Spark ML is verified on "
        f"Spark {verified}, this is Spark {compat.version_text(compat.spark_version())} (same models, slower)"
    ) in caplog.messages
    for a, b in zip(replayed, fitted, strict=True):
        assert (a.k, a.iterations, a.cluster_sizes) == (b.k, b.iterations, b.cluster_sizes)
        assert a.wcss == pytest.approx(b.wcss, rel=1e-9)
        assert np.allclose(a.centers, b.centers, rtol=1e-9, atol=1e-12)
        assert a.silhouette == pytest.approx(b.silhouette, abs=1e-9)
    assert compat.spark_version("3.5.9") == (3, 5) and compat.engine_verified("4.0.1")
    assert not compat.engine_verified("4.1.4") or (4, 1) in compat.ENGINE_VERIFIED


def test_fewer_distinct_points_than_k(spark):
    """Spark ML returns fewer centers than k when the data has fewer distinct points; so does the engine."""
    rows = [(f"c{i}", Vectors.dense(float(i % 3), float(i % 3))) for i in range(30)]
    df = spark.createDataFrame(rows, ["customer_id", "scaled"]).repartition(2, "customer_id").cache()
    fit = sweep_k(df, [5], seed=1)[0]
    reference = _spark_fit(df, 5, 1)
    assert sorted(map(tuple, fit.centers)) == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
    assert len(fit.centers) == len(reference.clusterCenters()) == 3
    assert sorted(fit.cluster_sizes) == [10, 10, 10]
    assert fit.wcss == pytest.approx(0.0, abs=1e-12)
    assert fit.silhouette == pytest.approx(
        ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster").evaluate(reference.transform(df)),
        abs=1e-9,
    )
