"""The methods Spark ML lacks (DBSCAN, HDBSCAN, Ward, SOM): fitted on a seeded sample in the driver, every
customer assigned in Spark. Planted groups with and without uniform noise, the sample-and-assign path on more
customers than `model.fit_sample`, compare mode, the saved model, and the Mall Customers data end to end."""

from __future__ import annotations

import copy
import random

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from segmentation.config import DEFAULTS, load_config, validate_config
from segmentation.errors import ConfigError
from segmentation.model.metrics import adjusted_rand_index
from segmentation.model.selection import compare_methods, select_k
from segmentation.pipeline import run_segmentation

from .conftest import REPO, SHARED_DATA
from .synthetic import scaled_points

KS = [2, 3, 4, 5]
CENTERS = [(0.0, 0.0), (10.0, 0.0), (5.0, 9.0)]


def _scaled(spark, n_per_group=200, noise=0, seed=3):
    """Three tight groups in two dimensions and, with `noise`, that many customers uniform over the box."""
    rng = random.Random(seed)
    rows = [
        (f"g{g}-{i:04d}", cx + rng.gauss(0, 0.6), cy + rng.gauss(0, 0.6), g)
        for g, (cx, cy) in enumerate(CENTERS)
        for i in range(n_per_group)
    ]
    rows += [(f"n-{i:04d}", rng.uniform(-10, 20), rng.uniform(-10, 19), None) for i in range(noise)]
    return scaled_points(spark, rows, "customer_id string, a double, b double, truth int")


def _model_cfg(method, **extra):
    model = copy.deepcopy(DEFAULTS["model"])
    model.update({"method": method, "stability_fits": 1, "max_iter": 20, **extra})
    return validate_config({**copy.deepcopy(DEFAULTS), "model": model})["model"]


@pytest.mark.parametrize("method", ["hdbscan", "dbscan"])
def test_density_methods_find_the_groups_and_call_the_rest_noise(spark, method):
    scaled = _scaled(spark, noise=120)
    selection = select_k(scaled, KS, _model_cfg(method), dim=2)
    assert selection.choice.k == 3, selection.choice.reason
    assert selection.choice.reason.startswith(
        f"{method} finds k itself: 3 clusters on a seeded sample of 720"
    )
    assigned = selection.chosen.model.transform(scaled).cache()
    grouped = assigned.filter(F.col("truth").isNotNull() & (F.col("cluster") >= 0))
    assert adjusted_rand_index(grouped, "truth", "cluster") >= 0.9
    # the groups' customers are clustered, most of the uniform noise is not
    assert grouped.count() >= 0.95 * 600
    noise = assigned.filter(F.col("truth").isNull())
    assert noise.filter(F.col("cluster") == -1).count() > 0.5 * noise.count()
    assert selection.chosen.extra["noise"] == assigned.filter(F.col("cluster") == -1).count()


@pytest.mark.parametrize("method", ["agglomerative", "som"])
def test_ward_and_som_recover_the_groups_over_the_k_range(spark, method):
    scaled = _scaled(spark)
    selection = select_k(scaled, KS, _model_cfg(method), dim=2)
    assert [f.k for f in selection.fits] == KS
    assert selection.choice.k == 3, selection.choice.reason
    assigned = selection.chosen.model.transform(scaled)
    assert adjusted_rand_index(assigned, "truth", "cluster") >= 0.9
    assert assigned.filter(F.col("cluster") < 0).count() == 0  # nearest centroid: nobody is noise


def test_more_customers_than_the_sample_are_all_assigned_and_the_seed_fixes_the_result(spark, tmp_path):
    scaled = _scaled(spark, n_per_group=1000, noise=100)  # 3,100 customers, the sample holds 800
    cfg = _model_cfg("hdbscan", fit_sample=800)
    first = select_k(scaled, KS, cfg, dim=2)
    assert first.chosen.extra["fitted_on"] == 800
    labels = first.chosen.model.transform(scaled).select("customer_id", "cluster")
    assert labels.filter(F.col("cluster").isNull()).count() == 0
    assert labels.count() == 3100
    again = select_k(scaled, KS, cfg, dim=2).chosen.model.transform(scaled).select("customer_id", "cluster")
    assert sorted(map(tuple, labels.collect())) == sorted(map(tuple, again.collect()))
    # the published form: the assignment is a Spark ML stage, saved and loaded with the pipeline
    path = str(tmp_path / "pipeline")
    PipelineModel(stages=[first.chosen.model]).write().overwrite().save(path)
    loaded = PipelineModel.load(path).transform(scaled).select("customer_id", "cluster")
    assert sorted(map(tuple, loaded.collect())) == sorted(map(tuple, labels.collect()))


def test_compare_tabulates_the_sampled_methods_beside_kmeans(spark):
    scaled = _scaled(spark, n_per_group=100)
    cfg = _model_cfg("kmeans", compare=["agglomerative", "som", "hdbscan"], stability_fits=0)
    main = select_k(scaled, KS, cfg, dim=2)
    selections, table = compare_methods(scaled, KS, cfg, 2, main, 300)
    assert list(table["methods"]) == ["kmeans", "agglomerative", "som", "hdbscan"]
    assert {m: c["chosen_k"] for m, c in table["methods"].items()} == {
        "kmeans": 3,
        "agglomerative": 3,
        "som": 3,
        "hdbscan": 3,
    }
    assert [r["k"] for r in table["rows"] if r["method"] == "hdbscan"] == [3]
    assert [r["k"] for r in table["rows"] if r["method"] == "som"] == KS


def test_the_new_settings_are_validated():
    for model, message in [
        (
            {"method": "optics"},
            "model.method must be one of kmeans, bisecting_kmeans, gaussian_mixture, dbscan",
        ),
        ({"dbscan": {"eps": -1}}, r"config key 'model.dbscan.eps': input should be greater than 0, got -1"),
        (
            {"hdbscan": {"min_cluster_size": 1}},
            r"config key 'model.hdbscan.min_cluster_size': input should be",
        ),
        ({"fit_sample": 10}, r"config key 'model.fit_sample': input should be greater than or equal to 100"),
        (
            {"agglomerative": {"linkage": "wards"}},
            r"config key 'model.agglomerative.linkage': input should be",
        ),
    ]:
        cfg = copy.deepcopy(DEFAULTS)
        for key, value in model.items():
            if isinstance(value, dict):
                cfg["model"][key].update(value)
            else:
                cfg["model"][key] = value
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg)


def test_mall_customers_with_hdbscan_finds_about_five_groups_and_sets_noise_aside(spark, tmp_path):
    cfg = load_config(REPO / "conf" / "mall_customers.yaml")
    cfg["input"]["path"] = str(SHARED_DATA / "mall_customers" / "Mall_Customers.csv")
    cfg["output"]["path"] = str(tmp_path / "out")
    cfg["model"]["method"] = "hdbscan"
    cfg["output"]["report"] = False
    m = run_segmentation(spark, validate_config(cfg))
    assert 4 <= m["chosen_k"] <= 6, m["chosen_k_reason"]
    noise = m["excluded_customers"].get("noise", 0)
    assert m["clustered_customers"] + noise == 200
    assert sum(p["customers"] for p in m["profiles"]) == m["clustered_customers"]
    segments = spark.read.parquet(str(tmp_path / "out" / "segments"))
    assert segments.filter(F.col("excluded_reason") == "noise").count() == noise
    assert segments.filter(F.col("segment_id").isNull()).count() == noise
