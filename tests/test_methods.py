"""`model.method`: bisecting KMeans and Gaussian mixtures give the same outputs as KMeans on planted groups."""

from __future__ import annotations

import copy
import random

import pytest
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import functions as F

from segmentation.config import DEFAULTS, validate_config
from segmentation.errors import ConfigError
from segmentation.model.methods import fit_method, model_centers, with_membership_probability
from segmentation.model.selection import compare_methods, elbow_rows, select_k
from segmentation.report.html import comparison_html


@pytest.fixture(scope="module")
def planted(spark):
    rng = random.Random(21)
    rows = [
        (f"g{g}-{i:02d}", cx + rng.gauss(0, 1), cy + rng.gauss(0, 1))
        for g, (cx, cy) in enumerate([(0, 0), (12, 0), (6, 10)])
        for i in range(40)
    ]
    df = spark.createDataFrame(rows, "customer_id string, a double, b double").repartition(2, "customer_id")
    assembled = VectorAssembler(inputCols=["a", "b"], outputCol="features").transform(
        df.sortWithinPartitions("customer_id")
    )
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True)
    return scaler.fit(assembled).transform(assembled).cache()


def _model_cfg(method, compare=()):
    model = {
        **DEFAULTS["model"],
        "method": method,
        "max_iter": 30,
        "stability_fits": 1,
        "compare": list(compare),
    }
    return validate_config({**copy.deepcopy(DEFAULTS), "model": model})["model"]


def test_every_method_recovers_planted_groups_and_compare_tabulates_them(planted):
    """bisecting_kmeans as the configured method, the other two by `model.compare` (one sweep each)."""
    cfg = _model_cfg("bisecting_kmeans", compare=["kmeans", "gaussian_mixture", "kmeans"])
    assert cfg["compare"] == ["kmeans", "gaussian_mixture"]
    main = select_k(planted, [2, 3, 4], cfg, dim=2)
    selections, table = compare_methods(planted, [2, 3, 4], cfg, 2, main, 120)
    assert list(selections) == ["bisecting_kmeans", "kmeans", "gaussian_mixture"]
    assert selections["bisecting_kmeans"] is main
    for method, sel in selections.items():
        assert sel.choice.k == 3 and sel.choice.clear_structure, (method, sel.choice.reason)
        assert sorted(sel.chosen.cluster_sizes) == [40, 40, 40]
        rows = elbow_rows(sel, 120)
        assert [r["k"] for r in rows] == [2, 3, 4] and all(r["method"] == method for r in rows)
        three = rows[1]
        assert three["stability"] == pytest.approx(1.0) and three["silhouette"] > 0.9
        # one WCSS definition for every method: the hard assignment's within-cluster sum of squares
        assert three["wcss"] < 0.2 * rows[0]["wcss"]  # k=2 merges two groups
        assert (three["log_likelihood"] is not None) == (method == "gaussian_mixture")
        assigned = sel.chosen.model.transform(planted).transform(with_membership_probability)
        per_group = assigned.groupBy(F.substring("customer_id", 1, 2).alias("g")).agg(
            F.countDistinct("cluster").alias("clusters"), F.min("membership_probability").alias("p")
        )
        got = {r["g"]: (r["clusters"], r["p"]) for r in per_group.collect()}
        assert {g: c for g, (c, _) in got.items()} == {"g0": 1, "g1": 1, "g2": 1}
        if method == "gaussian_mixture":
            assert (
                min(p for _, p in got.values()) > 0.99
            )  # well separated: every customer surely in its group
        else:
            assert all(p is None for _, p in got.values())
        assert len(model_centers(sel.chosen.model)) == 3
        assert all(len(c) == 2 for c in model_centers(sel.chosen.model))  # scaled space, no offset dimension

    assert {m: c["chosen_k"] for m, c in table["methods"].items()} == {
        "bisecting_kmeans": 3,
        "kmeans": 3,
        "gaussian_mixture": 3,
    }
    assert [(r["method"], r["k"]) for r in table["rows"] if r["chosen"]] == [
        ("bisecting_kmeans", 3),
        ("kmeans", 3),
        ("gaussian_mixture", 3),
    ]
    assert len(table["rows"]) == 9
    assert all(sorted(r["cluster_sizes"]) == [40, 40, 40] for r in table["rows"] if r["k"] == 3)
    html = "".join(comparison_html({"comparison": table, "method": "bisecting_kmeans"}))
    assert '<h2 id="compare">Methods compared</h2>' in html and html.count("<b>3</b>") == 3
    assert "40, 40, 40" in html


def test_unknown_method_is_an_error(planted):
    every = "kmeans, bisecting_kmeans, gaussian_mixture, dbscan, hdbscan, agglomerative, som"
    with pytest.raises(ValueError, match=f"unknown method 'optics'; choose from {every}"):
        fit_method("optics", planted, 2, 1)
    with pytest.raises(ConfigError, match=f"model.method must be one of {every}, got 'optics'"):
        validate_config({**DEFAULTS, "model": {**DEFAULTS["model"], "method": "optics"}})
