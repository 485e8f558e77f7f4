"""Clustering metrics, the bottom of the model stage: agreement of two labelings and separation of clusters.

The adjusted Rand index (one implementation: from a contingency table, counted in Spark or by the engine),
Calinski-Harabasz and Davies-Bouldin from per-cluster aggregates, and the total sum of squares. Nothing here
collects customers to the driver.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


def _binom2(n: int) -> float:
    return n * (n - 1) / 2.0


def adjusted_rand_index(df: DataFrame, col_a: str, col_b: str) -> float:
    """Adjusted Rand index (Hubert & Arabie) of two labelings, from their contingency table counted in Spark.

    Rows with a null label are left out; only the k_a x k_b cells reach the driver. 1 = identical partitions
    (up to relabeling), about 0 = chance. Used for the stability of a k and by the benchmark and the tests
    (against the customer types a generator planted).
    """
    cells = (
        df.filter(F.col(col_a).isNotNull() & F.col(col_b).isNotNull()).groupBy(col_a, col_b).count().collect()
    )
    table: dict[Any, dict[Any, int]] = {}
    for r in cells:
        table.setdefault(r[col_a], {})[r[col_b]] = int(r["count"])
    cols = sorted({b for row in table.values() for b in row}, key=str)
    return adjusted_rand_index_of_table([[row.get(b, 0) for b in cols] for row in table.values()])


def adjusted_rand_index_of_table(table: Any) -> float:
    """Adjusted Rand index from a contingency table (rows: labels of one partition, columns: of the other)."""
    cells = [[int(n) for n in row] for row in table]
    pairs = sum(_binom2(n) for row in cells for n in row)
    row_sums = [sum(row) for row in cells]
    col_sums = [sum(col) for col in zip(*cells)] if cells else []
    n = sum(row_sums)
    if n < 2:
        return 1.0
    sum_a = sum(_binom2(v) for v in row_sums)
    sum_b = sum(_binom2(v) for v in col_sums)
    expected = sum_a * sum_b / _binom2(n)
    maximum = (sum_a + sum_b) / 2.0
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons): identical
        return 1.0
    return (pairs - expected) / (maximum - expected)


def cluster_metrics(
    assigned_df: DataFrame, dim: int, features_col: str = "scaled", prediction_col: str = "cluster"
) -> dict[str, Any]:
    """Sizes, Calinski-Harabasz and Davies-Bouldin of an assignment, from per-cluster Spark aggregates.

    Pass 1: size and mean of each cluster. Pass 2: each cluster's within-cluster sum of squares and mean
    distance to its mean. CH = (B / (k - 1)) / (W / (n - k)) with B = sum n_j |m_j - m|^2 and W the total
    within sum; DB = mean over clusters of max_j (s_i + s_j) / |m_i - m_j| (s: mean distance to the mean).
    Both use the clusters' own means (for KMeans, its centers), over the clusters actually used; with fewer
    than two clusters they are None.
    """
    arr = assigned_df.select(
        F.col(prediction_col).alias("_c"), vector_to_array(F.col(features_col)).alias("_x")
    )
    first = arr.groupBy("_c").agg(
        F.count(F.lit(1)).alias("n"), *[F.avg(F.col("_x")[i]).alias(f"m{i}") for i in range(dim)]
    )
    stats = {int(r["_c"]): (int(r["n"]), [float(r[f"m{i}"]) for i in range(dim)]) for r in first.collect()}
    clusters = sorted(stats)
    sizes = [stats[c][0] for c in clusters]
    n, k = sum(sizes), len(clusters)
    if k < 2 or n <= k:
        return separation(sizes, [stats[c][1] for c in clusters], [0.0] * k, [0.0] * k)
    center_map = F.create_map(
        *[v for c in clusters for v in (F.lit(c), F.array(*[F.lit(x) for x in stats[c][1]]))]
    )
    squared = F.aggregate(
        F.zip_with(F.col("_x"), center_map[F.col("_c")], lambda a, b: (a - b) * (a - b)),
        F.lit(0.0),
        lambda acc, x: acc + x,
    )
    second = (
        arr.withColumn("_sq", squared)
        .groupBy("_c")
        .agg(F.sum("_sq").alias("within"), F.avg(F.sqrt("_sq")).alias("spread"))
        .collect()
    )
    within = {int(r["_c"]): float(r["within"]) for r in second}
    spread = {int(r["_c"]): float(r["spread"]) for r in second}
    return separation(
        sizes, [stats[c][1] for c in clusters], [within[c] for c in clusters], [spread[c] for c in clusters]
    )


def separation(
    sizes: list[int], means: list[list[float]], within: list[float], spread: list[float]
) -> dict[str, Any]:
    """Sizes, smallest share, Calinski-Harabasz and Davies-Bouldin from per-cluster sizes, means, within sums
    of squares (around the mean) and spreads (mean distance to the mean). Clusters of size 0 are left out;
    with fewer than two clusters used (or no more customers than clusters) CH and DB are None."""
    used = [i for i, n in enumerate(sizes) if n > 0]
    n, k = sum(sizes), len(used)
    result: dict[str, Any] = {
        "cluster_sizes": [int(s) for s in sizes],
        "smallest_cluster_share": (min(sizes[i] for i in used) / n) if n else 0.0,
        "calinski_harabasz": None,
        "davies_bouldin": None,
        "within": None,
    }
    if k < 2 or n <= k:
        return result
    dim = len(means[used[0]])
    overall = [sum(sizes[c] * means[c][i] for c in used) / n for i in range(dim)]
    between = sum(sizes[c] * sum((m - o) ** 2 for m, o in zip(means[c], overall)) for c in used)
    total_within = sum(within[c] for c in used)
    result["within"] = total_within
    if total_within > 0:
        result["calinski_harabasz"] = (between / (k - 1)) / (total_within / (n - k))
    ratios = []
    for c in used:
        worst = 0.0
        for other in used:
            if other == c:
                continue
            gap = math.dist(means[c], means[other])
            worst = max(worst, math.inf if gap == 0 else (spread[c] + spread[other]) / gap)
        ratios.append(worst)
    result["davies_bouldin"] = sum(ratios) / k
    return result


def total_sum_of_squares(df: DataFrame, dim: int, features_col: str = "scaled") -> tuple[int, float, list]:
    """(n, WCSS at k=1, per-dimension (min, max)) of a vector column, from one aggregate."""
    x = vector_to_array(F.col(features_col))
    row = df.select(
        F.count(F.lit(1)).alias("n"),
        *[F.var_pop(x[i]).alias(f"v{i}") for i in range(dim)],
        *[F.min(x[i]).alias(f"lo{i}") for i in range(dim)],
        *[F.max(x[i]).alias(f"hi{i}") for i in range(dim)],
    ).first()
    n = int(row["n"])
    total = n * sum(float(row[f"v{i}"] or 0.0) for i in range(dim))
    return n, total, [(float(row[f"lo{i}"]), float(row[f"hi{i}"])) for i in range(dim)]
