"""Per-k diagnostics and the robust choice of k: metrics against hand-computed values, and three data sets
with a known answer (planted groups, one blob, a few extreme outliers)."""

from __future__ import annotations

import copy
import random

import pytest
from pyspark.ml.linalg import Vectors

from segmentation.config import DEFAULTS, validate_config
from segmentation.model.metrics import adjusted_rand_index, adjusted_rand_index_of_table, cluster_metrics
from segmentation.model.selection import KDiagnostics, choose_k_robust, select_k, with_structure

from .synthetic import scaled_points

KS = [2, 3, 4, 5, 6]


def _scaled(spark, rows):
    return scaled_points(spark, rows)


def _select(scaled):
    model_cfg = {**DEFAULTS["model"], "max_iter": 20, "stability_fits": 1}
    return select_k(
        scaled, KS, validate_config({**copy.deepcopy(DEFAULTS), "model": model_cfg})["model"], dim=2
    )


def _groups(centers, n, rng, prefix="g"):
    return [
        (f"{prefix}{g}-{i:03d}", cx + rng.gauss(0, 1), cy + rng.gauss(0, 1))
        for g, (cx, cy) in enumerate(centers)
        for i in range(n)
    ]


def test_adjusted_rand_index_from_a_contingency_table(spark):
    def ari(a, b):
        df = spark.createDataFrame(list(zip(a, b)), "a int, b int")
        return adjusted_rand_index(df, "a", "b")

    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)  # same partition, other labels
    assert ari([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)  # sklearn: 0.5714...
    assert ari([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(0.0)
    # no pair together in both: index 0, expected 3 * 6 / 15 = 1.2, max 4.5 -> -1.2 / 3.3 (worse than chance)
    assert ari([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]) == pytest.approx(-4 / 11)


def test_adjusted_rand_index_agrees_with_scikit_learn(spark):
    """The one ARI (Spark contingency table and the engine's table form) against sklearn's, on random labelings
    of several sizes and label counts, with null labels left out as the docstring says."""
    from sklearn.metrics import adjusted_rand_score

    rng = random.Random(11)
    cases = []
    for n, ka, kb in [(2, 1, 1), (7, 2, 3), (50, 4, 4), (300, 6, 3), (1000, 10, 12)]:
        a = [rng.randrange(ka) for _ in range(n)]
        # b agrees with a on about half the rows, so the index is far from 0 and from 1
        b = [x if rng.random() < 0.5 else rng.randrange(kb) for x in a]
        cases.append((a, b))
    rows = [(i, x, y) for i, (a, b) in enumerate(cases) for x, y in zip(a, b)]
    rows += [(0, None, 1), (1, 2, None)]  # left out
    df = spark.createDataFrame(rows, "case int, a int, b int").cache()
    for i, (a, b) in enumerate(cases):
        expected = adjusted_rand_score(a, b)
        assert adjusted_rand_index(df.filter(f"case = {i}"), "a", "b") == pytest.approx(expected, abs=1e-12)
        labels_a, labels_b = sorted(set(a)), sorted(set(b))
        table = [[sum(1 for x, y in zip(a, b) if (x, y) == (la, lb)) for lb in labels_b] for la in labels_a]
        assert adjusted_rand_index_of_table(table) == pytest.approx(expected, abs=1e-12)
    df.unpersist()


def test_calinski_harabasz_and_davies_bouldin_by_hand(spark):
    # clusters {(0,0), (2,0)} and {(10,0), (12,0)} and an empty cluster index never used
    rows = [(0, Vectors.dense([0.0, 0.0])), (0, Vectors.dense([2.0, 0.0]))]
    rows += [(3, Vectors.dense([10.0, 0.0])), (3, Vectors.dense([12.0, 0.0]))]
    df = spark.createDataFrame(rows, ["cluster", "scaled"])
    m = cluster_metrics(df, dim=2)
    # between = 2*25 + 2*25 = 100, within = 4, n=4, k=2 -> (100/1)/(4/2) = 50
    assert m["calinski_harabasz"] == pytest.approx(50.0)
    # mean distance to the mean is 1 in both, means 10 apart -> (1 + 1) / 10
    assert m["davies_bouldin"] == pytest.approx(0.2)
    assert m["cluster_sizes"] == [2, 2] and m["smallest_cluster_share"] == 0.5
    single = cluster_metrics(df.filter("cluster = 0"), dim=2)
    assert single["calinski_harabasz"] is None and single["davies_bouldin"] is None


def _diag(k, cost, sil, smallest=0.2, stab=1.0):
    return KDiagnostics(k, cost, sil, None, None, [1] * k, smallest, stab)


def test_choice_rules_on_a_table():
    curve = [
        _diag(2, 1000, 0.5),
        _diag(3, 400, 0.6),
        _diag(4, 150, 0.7),
        _diag(5, 130, 0.4),
        _diag(6, 120, 0.3),
    ]
    choice = choose_k_robust(curve)
    assert (choice.k, choice.clear_structure, choice.vetoed) == (4, True, {})
    assert choice.reason.startswith("knee of the WCSS curve over k=2..6")
    clear = with_structure(choice, curve, gap=0.8)
    assert clear.clear_structure and clear.reason.endswith("; clear structure (silhouette 0.700, gap 0.800)")
    flat = with_structure(choice, curve, gap=-0.05)
    assert not flat.clear_structure
    assert "No clear cluster structure (gap against a uniform reference -0.050 < 0.100)" in flat.reason

    # the knee has a 1% cluster: the next point below the chord that passes wins
    curve[2] = _diag(4, 150, 0.7, smallest=0.01)
    choice = choose_k_robust(curve)
    assert choice.k == 3
    assert choice.vetoed == {4: ["smallest cluster 1.0% < 2.0%"]}
    assert "the knee of the WCSS curve (k=4) is vetoed: smallest cluster 1.0% < 2.0%" in choice.reason

    # unstable k are vetoed too, with the threshold from the config
    curve[2] = _diag(4, 150, 0.7, stab=0.6)
    choice = choose_k_robust(curve, min_stability=0.75)
    assert choice.k == 3 and choice.vetoed == {4: ["stability 0.60 < 0.75"]}

    # a fixed k is kept, with a warning
    fixed = choose_k_robust(curve, fixed_k=4, min_stability=0.75)
    assert fixed.k == 4 and fixed.reason.startswith("fixed k=4 (model.k / --k); warning: stability 0.60")
    assert not fixed.clear_structure


def test_planted_groups_are_recovered(spark):
    rng = random.Random(3)
    scaled = _scaled(spark, _groups([(0, 0), (10, 0), (5, 9), (15, 10)], 40, rng))
    sel = _select(scaled)
    assert sel.choice.k == 4 and sel.choice.clear_structure
    assert sel.gap > 1.0
    by_k = {d.k: d for d in sel.diagnostics}
    assert sorted(by_k[4].cluster_sizes) == [40, 40, 40, 40]
    assert by_k[4].silhouette > 0.9 and by_k[4].stability == pytest.approx(1.0)
    # the true k has the best Calinski-Harabasz and Davies-Bouldin of the range
    assert max(by_k.values(), key=lambda d: d.calinski_harabasz).k == 4
    assert min(by_k.values(), key=lambda d: d.davies_bouldin).k == 4


def test_one_blob_reports_no_clear_structure(spark):
    rng = random.Random(5)
    scaled = _scaled(spark, [(f"c{i:03d}", rng.gauss(0, 1), rng.gauss(0, 1)) for i in range(200)])
    sel = _select(scaled)
    assert not sel.choice.clear_structure
    assert "No clear cluster structure" in sel.choice.reason
    # no better than cutting a uniform cloud of the same extent
    assert sel.gap < 0.0


def test_extreme_outliers_do_not_become_the_chosen_segment(spark):
    rng = random.Random(7)
    rows = _groups([(0, 0), (10, 0), (5, 9)], 50, rng)
    rows += [(f"x{i}", 200 + rng.gauss(0, 1), 200 + rng.gauss(0, 1)) for i in range(3)]
    scaled = _scaled(spark, rows)
    sel = _select(scaled)
    # KMeans spends a cluster on the 3 outliers (2%) at every k: every k is vetoed, the knee kept ...
    assert all(any(v.startswith("smallest cluster") for v in d.vetoes) for d in sel.diagnostics)
    outlier_clusters = sel.outlier_clusters(0.02)
    outliers = sel.chosen.model.transform(scaled).filter(scaled.customer_id.startswith("x")).select("cluster")
    assert sorted(r.cluster for r in outliers.collect()) == [outlier_clusters[0]] * 3
    # ... and refitting without that cluster's customers (what the run does) finds the three groups
    kept = scaled.select("customer_id", "a", "b").filter(~scaled.customer_id.startswith("x"))
    again = _select(_scaled(spark, [tuple(r) for r in kept.collect()]))
    assert again.choice.k == 3 and again.choice.clear_structure
    assert sorted(again.chosen.cluster_sizes) == [50, 50, 50]
