"""Segment order: which cluster becomes segment 1, 2, ..., and each customer's segment and distance.

Takes the model stage's assignment (`cluster`, `scaled`) and hands the naming and identity stages a cluster ->
segment_id map (by a value column's segment mean, highest first) and the columns `segment_id` and
`distance_to_center` (in the scaled space).
"""

from __future__ import annotations

import math

from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def segment_order(assigned_df: DataFrame, value_col: str = "monetary") -> dict[int, int]:
    """Map cluster index -> segment_id 1..k by the segment mean of `value_col`, highest first (then size, then
    index; a segment without values last). Cluster indices are arbitrary; this order makes `segment_id` 1 the
    most valuable group of a transaction log (mean monetary) on every run."""
    rows = (
        assigned_df.groupBy("cluster")
        .agg(F.avg(value_col).alias("m"), F.count(F.lit(1)).alias("n"))
        .collect()
    )
    ordered = sorted(
        rows, key=lambda r: (-(r["m"] if r["m"] is not None else -math.inf), -r["n"], r["cluster"])
    )
    return {int(r["cluster"]): i for i, r in enumerate(ordered, start=1)}


def with_segment_columns(
    assigned_df: DataFrame, order: dict[int, int], centers: list[list[float]]
) -> DataFrame:
    """Add `segment_id` (from the cluster index via the segment order) and `distance_to_center` (scaled space)."""
    mapping = F.create_map(*[F.lit(v) for pair in sorted(order.items()) for v in pair])
    center_table = F.array(*[F.array(*[F.lit(float(v)) for v in c]) for c in centers])
    center = F.element_at(center_table, F.col("cluster") + 1)
    squared = F.zip_with(vector_to_array(F.col("scaled")), center, lambda a, b: (a - b) * (a - b))
    return assigned_df.withColumns(
        {
            "segment_id": mapping[F.col("cluster")].cast("int"),
            "distance_to_center": F.sqrt(F.aggregate(squared, F.lit(0.0), lambda acc, x: acc + x)),
        }
    )
