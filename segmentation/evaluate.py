"""Evaluation helpers: agreement between two labelings of the same customers, computed in Spark.

Used by the benchmark and the tests to check that KMeans recovers the customer types a generator planted.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def _pairs(n: int) -> float:
    return n * (n - 1) / 2.0


def adjusted_rand_index(df: DataFrame, truth_col: str, pred_col: str) -> float:
    """Adjusted Rand index (Hubert & Arabie) of two label columns; rows with a null label are ignored.

    Only the contingency table (classes x clusters counts) reaches the driver.
    """
    cells = (
        df.filter(F.col(truth_col).isNotNull() & F.col(pred_col).isNotNull())
        .groupBy(truth_col, pred_col)
        .count()
        .collect()
    )
    n = sum(int(r["count"]) for r in cells)
    rows: dict[object, int] = {}
    cols: dict[object, int] = {}
    for r in cells:
        rows[r[truth_col]] = rows.get(r[truth_col], 0) + int(r["count"])
        cols[r[pred_col]] = cols.get(r[pred_col], 0) + int(r["count"])
    index = sum(_pairs(int(r["count"])) for r in cells)
    sum_rows = sum(_pairs(v) for v in rows.values())
    sum_cols = sum(_pairs(v) for v in cols.values())
    total = _pairs(n)
    if total == 0:
        return 1.0
    expected = sum_rows * sum_cols / total
    maximum = (sum_rows + sum_cols) / 2.0
    if maximum == expected:  # both labelings put everyone in one group (or all singletons)
        return 1.0
    return (index - expected) / (maximum - expected)
