"""Prepare + model stages: knee choice, KMeans on well-separated points, stable segment order, round trip."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.ml import PipelineModel

from segmentation.model.kmeans import fit_kmeans, fit_on_all, sweep_k
from segmentation.model.knee import knee_point
from segmentation.model.selection import KDiagnostics, choose_k_robust
from segmentation.prepare import capping_bounds, fit_preparation
from segmentation.segments.order import segment_order, with_segment_columns
from segmentation.segments.profiles import centers_in_original_units

PREP = {
    "features": ["recency_days", "frequency", "monetary"],
    "log1p": ["frequency", "monetary"],
    "cap_quantiles": None,
}


def test_knee_point_on_a_classic_elbow():
    ks = [2, 3, 4, 5, 6, 7, 8]
    costs = [1000, 400, 150, 130, 115, 105, 100]
    k, gap = knee_point(ks, costs)
    assert k == 4
    assert gap == pytest.approx((1 - 2 / 6) - (150 - 100) / 900, abs=1e-9)


def test_knee_point_needs_a_bend():
    assert knee_point([2, 3, 4], [30.0, 20.0, 10.0]) == (None, 0.0)  # a straight line
    assert knee_point([2, 3], [30.0, 10.0]) == (None, 0.0)
    assert knee_point([2, 3, 4], [5.0, 5.0, 5.0]) == (None, 0.0)


def _fit(k, wcss, sil):
    return KDiagnostics(k, wcss, sil, None, None, [1] * k, 0.2, None)


def test_choose_k_explains_itself():
    fits = [_fit(2, 1000, 0.5), _fit(3, 400, 0.6), _fit(4, 150, 0.7), _fit(5, 130, 0.4), _fit(6, 120, 0.3)]
    choice = choose_k_robust(fits)
    assert choice.k == 4 and choice.reason.startswith("knee of the WCSS curve over k=2..6")
    fixed = choose_k_robust(fits, 3)
    assert (fixed.k, fixed.reason) == (3, "fixed k=3 (model.k / --k)")
    straight = choose_k_robust([_fit(2, 30, 0.2), _fit(3, 20, 0.6), _fit(4, 10, 0.6)])
    assert (straight.k, straight.reason) == (
        3,
        "no knee in the WCSS curve over k=2..4; highest silhouette among k that pass the vetoes (0.600)",
    )


def _blobs(spark, n_per_group=40, seed=1):
    """Three well-separated customer groups (recency, frequency, monetary)."""
    rng = random.Random(seed)
    groups = {"top": (5, 40, 20000.0), "mid": (60, 6, 900.0), "low": (300, 1, 40.0)}
    rows = []
    for name, (r, f, m) in groups.items():
        for i in range(n_per_group):
            rows.append(
                (
                    f"{name}-{i}",
                    max(0, int(r + rng.gauss(0, 2))),
                    max(1, int(f * math.exp(rng.gauss(0, 0.1)))),
                    m * math.exp(rng.gauss(0, 0.1)),
                    name,
                )
            )
    return spark.createDataFrame(
        rows, "customer_id string, recency_days int, frequency int, monetary double, truth string"
    )


def test_sweep_recovers_three_groups_with_stable_order(spark):
    customers = _blobs(spark).repartition(3, "customer_id").sortWithinPartitions("customer_id").cache()
    prep_model, bounds = fit_preparation(customers, PREP)
    assert bounds == {}
    scaled = prep_model.transform(customers).cache()
    fits = sweep_k(scaled, [2, 3, 4, 5, 6], seed=42)
    k, _ = knee_point([f.k for f in fits], [f.wcss for f in fits])
    assert k == 3
    chosen = next(f for f in fits if f.k == 3)
    assert sorted(chosen.cluster_sizes) == [40, 40, 40]
    assert chosen.silhouette > 0.8
    assert [f.wcss for f in fits] == sorted((f.wcss for f in fits), reverse=True)

    # the published model holds the sweep's centers, which are Spark ML's own fit at that k and seed
    chosen = fit_on_all(scaled, chosen, seed=42)
    spark_fit = fit_kmeans(scaled, 3, seed=42)
    assert spark_fit.summary.trainingCost == pytest.approx(chosen.wcss, rel=1e-9)
    assert list(spark_fit.summary.clusterSizes) == chosen.cluster_sizes
    spark_centers = [x for c in spark_fit.clusterCenters() for x in c]
    assert [x for c in chosen.model.clusterCenters() for x in c] == pytest.approx(spark_centers, abs=1e-9)
    assert [x for c in chosen.centers for x in c] == pytest.approx(spark_centers, abs=1e-9)
    assigned = chosen.model.transform(scaled)
    order = segment_order(assigned)
    centers = [list(c) for c in chosen.model.clusterCenters()]
    segmented = assigned.transform(with_segment_columns, order=order, centers=centers)
    truth = {
        r.truth: r.ids
        for r in segmented.groupBy("truth")
        .agg({"segment_id": "collect_set"})
        .withColumnRenamed("collect_set(segment_id)", "ids")
        .collect()
    }
    # segment 1 is the highest-monetary group whatever KMeans numbered it
    assert truth == {"top": [1], "mid": [2], "low": [3]}
    distances = [r.distance_to_center for r in segmented.select("distance_to_center").collect()]
    assert 0 < max(distances) < 1.0  # tight blobs in standardised space

    # centers back in original units are near the planted values
    scaler = prep_model.stages[-1]
    original = centers_in_original_units(
        centers, list(scaler.mean), list(scaler.std), PREP["features"], PREP["log1p"]
    )
    top = original[next(c for c, s in order.items() if s == 1)]
    assert top["recency_days"] == pytest.approx(5, abs=2)
    assert top["monetary"] == pytest.approx(20000, rel=0.1)

    # same input + seed = same model
    again = sweep_k(scaled, [3], seed=42)[0]
    assert again.wcss == pytest.approx(chosen.wcss, rel=1e-12)


def test_pipeline_model_round_trips_through_a_directory(spark, tmp_path):
    customers = _blobs(spark, n_per_group=20).cache()
    prep_model, _ = fit_preparation(customers, {**PREP, "cap_quantiles": [0.0, 0.95]})
    scaled = prep_model.transform(customers)
    kmeans = fit_on_all(scaled, sweep_k(scaled, [3], seed=7)[0], seed=7).model
    model = PipelineModel(stages=[*prep_model.stages, kmeans])
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    before = {
        r.customer_id: r.cluster
        for r in model.transform(customers).select("customer_id", "cluster").collect()
    }
    after = {
        r.customer_id: r.cluster
        for r in loaded.transform(customers).select("customer_id", "cluster").collect()
    }
    assert before == after and len(before) == 60


def test_capping_bounds_clip_the_extremes(spark):
    df = spark.createDataFrame([(float(i),) for i in range(1, 101)] + [(1e9,)], "monetary double")
    bounds = capping_bounds(df, ["monetary"], [], [0.0, 0.99])
    assert bounds["monetary"] == (1.0, 100.0)
    prep_model, _ = fit_preparation(df, {"features": ["monetary"], "log1p": [], "cap_quantiles": [0.0, 0.99]})
    top = prep_model.transform(df).agg({"monetary__prepared": "max"}).first()[0]
    assert top == 100.0
