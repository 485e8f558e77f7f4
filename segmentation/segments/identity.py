"""Identity stage: segments keep their id and name from one snapshot to the next; how customers moved.

Takes the model stage's clusters (centers in the scaled space, the fitted preparation) and the latest published
snapshot before this one, and hands the profiles a cluster -> segment_id map in which a cluster that is the
same group as a previous segment keeps that segment's id (and name), and a new group gets a new id. Matching is
an optimal assignment (scipy's `linear_sum_assignment`) of the previous centers, mapped into this run's scaled
space by this run's preparation, to the new centers, on squared Euclidean distance; a pair farther apart than
`identity.max_distance` is no match. It also builds the `transitions` table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.optimize import linear_sum_assignment

from segmentation.io import local_dataframe
from segmentation.segments.profiles import segment_names

log = logging.getLogger(__name__)


NEW, LOST, EXCLUDED = "(new)", "(lost)", "(excluded)"


@dataclass
class PreviousSnapshot:
    """What identity needs of the latest published snapshot before this one."""

    snapshot_date: str
    manifest: dict[str, Any]
    profiles: list[dict[str, Any]]
    segments_path: str

    @property
    def max_segment_id(self) -> int:
        ids = [int(p["segment_id"]) for p in self.profiles]
        return max([int(self.manifest.get("max_segment_id") or 0), *ids])


def previous_centers_in_scaled_space(
    spark: SparkSession, previous: PreviousSnapshot, prep_model: PipelineModel, features: list[str]
) -> dict[int, list[float]]:
    """The previous segments' centers (original units, from `profiles.center_<f>`) through this run's preparation."""
    rows = [(int(p["segment_id"]), *[float(p[f"center_{f}"]) for f in features]) for p in previous.profiles]
    schema = T.StructType(
        [T.StructField("segment_id", T.IntegerType()), *[T.StructField(f, T.DoubleType()) for f in features]]
    )
    df = local_dataframe(spark, rows, schema)
    scaled = prep_model.transform(df).select("segment_id", vector_to_array("scaled").alias("v")).collect()
    return {int(r["segment_id"]): list(r["v"]) for r in scaled}


def match_segments(
    order: dict[int, int],
    centers: list[list[float]],
    previous_centers: dict[int, list[float]],
    next_id: int,
    max_distance: float,
) -> tuple[dict[int, int], dict[int, float]]:
    """Cluster -> segment_id keeping previous ids for matched clusters; unmatched ones get next_id, next_id + 1, ...
    in the order of `order` (most valuable first). Also returns segment_id -> distance for matched segments."""
    if not previous_centers:
        return dict(order), {}
    prev_ids = sorted(previous_centers)
    new = np.array(centers, dtype=float)
    old = np.array([previous_centers[i] for i in prev_ids], dtype=float)
    cost = ((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    mapping: dict[int, int] = {}
    distances: dict[int, float] = {}
    for r, c in zip(rows, cols):
        distance = float(np.sqrt(cost[r, c]))
        if distance <= max_distance:
            mapping[int(r)] = prev_ids[c]
            distances[prev_ids[c]] = distance
    for cluster in sorted(order, key=order.get):
        if cluster not in mapping:
            mapping[cluster] = next_id
            next_id += 1
    return mapping, distances


def stable_order(
    spark: SparkSession,
    order: dict[int, int],
    centers: list[list[float]],
    prep_model: PipelineModel,
    previous: PreviousSnapshot | None,
    features: list[str],
    max_distance: float,
) -> tuple[dict[int, int], dict[int, str], dict[str, Any]]:
    """(cluster -> stable segment_id, kept names by segment_id, what the manifest records about the match)."""
    if previous is None:
        return order, {}, {"identity_snapshot_date": None, "max_segment_id": max(order.values())}
    if list(previous.manifest.get("features", [])) != list(features):
        log.warning("previous snapshot %s used other features: segments get new ids", previous.snapshot_date)
        prev_centers: dict[int, list[float]] = {}
    else:
        prev_centers = previous_centers_in_scaled_space(spark, previous, prep_model, features)
    mapping, distances = match_segments(
        order, centers, prev_centers, previous.max_segment_id + 1, max_distance
    )
    prev_names = segment_names(previous.profiles)
    kept = {sid: prev_names[sid] for sid in distances}
    log.info("segments matched to snapshot %s: %s", previous.snapshot_date, distances)
    return (
        mapping,
        kept,
        {
            "identity_snapshot_date": previous.snapshot_date,
            "matched_segments": {str(s): round(d, 6) for s, d in sorted(distances.items())},
            "max_segment_id": max([previous.max_segment_id, *mapping.values()]),
        },
    )


def transitions_table(
    segments_df: DataFrame, previous_segments_df: DataFrame | None, previous_date: str | None
) -> DataFrame:
    """(from_segment, to_segment) with customers and revenue: moves since the previous snapshot, new and lost
    customers included. Revenue is this snapshot's monetary (the previous one's for lost customers)."""
    now = segments_df.select(
        "customer_id",
        F.col("segment_id").alias("to_segment_id"),
        F.coalesce("segment_name", F.lit(EXCLUDED)).alias("to_segment"),
        F.col("monetary").alias("_now_monetary"),
        F.lit(True).alias("_now"),
    )
    if previous_segments_df is None:
        joined = now.withColumns(
            {
                "from_segment_id": F.lit(None).cast("int"),
                "from_segment": F.lit(NEW),
                "_before_monetary": F.lit(None),
            }
        )
    else:
        before = previous_segments_df.select(
            "customer_id",
            F.col("segment_id").alias("from_segment_id"),
            F.coalesce("segment_name", F.lit(EXCLUDED)).alias("from_segment"),
            F.col("monetary").alias("_before_monetary"),
        )
        joined = now.join(before, "customer_id", "full_outer").withColumns(
            {
                "from_segment": F.coalesce("from_segment", F.lit(NEW)),
                "to_segment": F.when(F.col("_now").isNull(), F.lit(LOST)).otherwise(F.col("to_segment")),
            }
        )
    return (
        joined.groupBy("from_segment", "to_segment", "from_segment_id", "to_segment_id")
        .agg(
            F.count(F.lit(1)).alias("customers"),
            F.sum(F.coalesce("_now_monetary", "_before_monetary").cast("double")).alias("revenue"),
        )
        .withColumn("previous_snapshot_date", F.lit(previous_date).cast("date"))
        .select(
            "from_segment",
            "to_segment",
            F.col("from_segment_id").cast("int"),
            F.col("to_segment_id").cast("int"),
            "customers",
            F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
            "previous_snapshot_date",
        )
        .orderBy("from_segment_id", "to_segment_id", "from_segment", "to_segment")
    )
