"""Profile stage: segment ids and distances per customer, profiles per segment, and names from profiles.

Takes the model stage's assignment (`cluster`), segment order and centers, and hands the publish stage the
`segments` rows (every customer, excluded ones with a null segment) and the `profiles` rows (one per segment).
Names come from each segment's medians against the clustered population's quartiles, never from an index.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import FEATURE_COLUMNS
from segmentation.rfm import segment_action

#: Column order of the published `segments` table.
SEGMENT_COLUMNS = (
    "customer_id",
    "recency_days",
    "frequency",
    "tenure_days",
    "gross",
    "returns",
    "monetary",
    "avg_order_value",
    "repeat_frequency",
    "recency_age_days",
    "T_days",
    "avg_repeat_value",
    "segment_id",
    "segment_name",
    "excluded_reason",
    "distance_to_center",
    "r_score",
    "f_score",
    "m_score",
    "rfm_score",
    "rfm_segment",
    "run_id",
)

#: The dimensions names are derived from (recency is inverted: a low recency is a "high" R).
NAMING_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")


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


def feature_quartiles(
    clustered_df: DataFrame, features: tuple[str, ...] = NAMING_FEATURES
) -> dict[str, tuple]:
    """(p25, p50, p75) of each feature over the clustered customers."""
    values = clustered_df.approxQuantile(list(features), [0.25, 0.5, 0.75], 1e-4)
    return {f: tuple(float(x) for x in v) for f, v in zip(features, values)}


def _level(value: float, quartiles: tuple[float, float, float], higher_is_better: bool = True) -> str:
    p25, _, p75 = quartiles
    if value >= p75 and value > p25:
        level = "high"
    elif value <= p25 and value < p75:
        level = "low"
    else:
        level = "mid"
    if not higher_is_better:
        level = {"high": "low", "low": "high", "mid": "mid"}[level]
    return level


def candidate_names(medians: dict[str, float], quartiles: dict[str, tuple]) -> list[str]:
    """Every naming rule a segment's medians satisfy, in rule order (the first is its name).

    R, F, M, T levels are high / mid / low against the clustered customers' quartiles (R inverted:
    recent = high). Rules, in order: Champions (R, F, M high); Loyal (R not low, F high); Big spenders
    (R not low, M high); New (T low, F not high: first bought recently); Promising (R high); At risk (R low,
    F or M not low); Hibernating (R low); Needs attention (none of these).
    """
    r = _level(medians["recency_days"], quartiles["recency_days"], higher_is_better=False)
    f = _level(medians["frequency"], quartiles["frequency"])
    m = _level(medians["monetary"], quartiles["monetary"])
    t = _level(medians["tenure_days"], quartiles["tenure_days"])
    rules = [
        ("Champions", r == "high" and f == "high" and m == "high"),
        ("Loyal", r != "low" and f == "high"),
        ("Big spenders", r != "low" and m == "high"),
        ("New", t == "low" and f != "high"),
        ("Promising", r == "high"),
        ("At risk", r == "low" and (f != "low" or m != "low")),
        ("Hibernating", r == "low"),
    ]
    return [name for name, matches in rules if matches] or ["Needs attention"]


def segment_name(medians: dict[str, float], quartiles: dict[str, tuple]) -> str:
    """Name a segment from its median recency, frequency, monetary and tenure (first matching rule)."""
    return candidate_names(medians, quartiles)[0]


def name_segments(
    medians_by_segment: dict[int, dict[str, float]], quartiles: dict[str, tuple]
) -> dict[int, str]:
    """Unique names for all segments, in segment-id order (most valuable first).

    A segment whose first name is taken gets its next matching rule (two "Champions" groups: the second
    is "Loyal" if it also qualifies); when every rule it matches is taken, the first with " (2)", " (3)".
    """
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for segment_id in sorted(medians_by_segment):
        candidates = candidate_names(medians_by_segment[segment_id], quartiles)
        name = next((c for c in candidates if c not in used), None)
        if name is None:
            base = candidates[0]
            used[base] += 1
            name = f"{base} ({used[base]})"
        else:
            used[name] = 1
        names[segment_id] = name
    return names


def segment_statistics(clustered_df: DataFrame) -> list[dict[str, Any]]:
    """Per segment: customers, revenue (sum of monetary), mean and approximate median of every feature."""
    aggs = [F.count(F.lit(1)).alias("customers"), F.sum("monetary").alias("revenue")]
    for f in FEATURE_COLUMNS:
        aggs.append(F.avg(f).alias(f"mean_{f}"))
        aggs.append(F.percentile_approx(f, 0.5, 10000).cast("double").alias(f"median_{f}"))
    rows = clustered_df.groupBy("segment_id").agg(*aggs).orderBy("segment_id").collect()
    return [r.asDict() for r in rows]


def centers_in_original_units(
    centers: list[list[float]], mean: list[float], std: list[float], features: list[str], log1p: list[str]
) -> list[dict[str, float]]:
    """Undo the scaling (and log1p) of each center; capped features are shown at their capped value."""
    out = []
    for center in centers:
        values = {}
        for j, name in enumerate(features):
            v = center[j] * std[j] + mean[j]
            values[name] = math.expm1(v) if name in log1p else v
        out.append(values)
    return out


def build_profiles(
    stats: list[dict[str, Any]],
    names: dict[int, str],
    centers_by_segment: dict[int, dict[str, float]],
    model_features: list[str],
) -> list[dict[str, Any]]:
    """Profile rows: size and revenue shares, means, medians and centers (original units), with the name."""
    total_customers = sum(s["customers"] for s in stats)
    total_revenue = sum(s["revenue"] for s in stats)
    profiles = []
    for s in stats:
        sid = int(s["segment_id"])
        row = {
            "segment_id": sid,
            "segment_name": names[sid],
            "action": segment_action(names[sid]),
            "description": (
                f"typical customer: last order {s['median_recency_days']:.0f} days ago, "
                f"{s['median_frequency']:.0f} orders, {s['median_monetary']:,.0f} spent, "
                f"first order {s['median_tenure_days']:.0f} days ago"
            ),
            "customers": int(s["customers"]),
            "share_customers": s["customers"] / total_customers if total_customers else 0.0,
            "revenue": float(s["revenue"]),
            "share_revenue": s["revenue"] / total_revenue if total_revenue else 0.0,
        }
        for f in FEATURE_COLUMNS:
            row[f"mean_{f}"] = float(s[f"mean_{f}"])
            row[f"median_{f}"] = float(s[f"median_{f}"])
        for f in model_features:
            row[f"center_{f}"] = float(centers_by_segment[sid][f])
        profiles.append(row)
    return profiles
