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


#: `naming` defaults: absolute thresholds that hold whatever the quartiles of the data say (README "Names").
NAMING_DEFAULTS = {"lapsed_days": 365, "lost_max_orders": 1}


def candidate_names(
    medians: dict[str, float], quartiles: dict[str, tuple], naming: dict[str, Any] | None = None
) -> list[str]:
    """Every naming rule a segment's medians satisfy, in rule order (the first is its name).

    First in absolute terms, whatever the data set's quartiles: a segment whose median customer last ordered
    more than `lapsed_days` ago is Lost (at most `lost_max_orders` orders) or Lapsed. Then R, F, M, T levels
    are high / mid / low against the clustered customers' quartiles (R inverted: recent = high). Rules, in
    order: Champions (R, F, M high); Loyal (R not low, F high); Big spenders (R not low, M high); New (T low,
    F not high: first bought recently); Promising (R high); At risk (R low, F or M not low); Hibernating
    (R low); Needs attention (none of these).
    """
    naming = {**NAMING_DEFAULTS, **(naming or {})}
    if medians["recency_days"] > naming["lapsed_days"]:
        return ["Lost" if medians["frequency"] <= naming["lost_max_orders"] else "Lapsed"]
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


def segment_name(
    medians: dict[str, float], quartiles: dict[str, tuple], naming: dict[str, Any] | None = None
) -> str:
    """Name a segment from its median recency, frequency, monetary and tenure (first matching rule)."""
    return candidate_names(medians, quartiles, naming)[0]


#: What tells two segments of one name apart: the feature and the words for its higher and lower values.
DISTINGUISHERS = (
    ("monetary", "high value", "low value"),
    ("frequency", "frequent", "occasional"),
    ("recency_days", "longer gone", "more recent"),
    ("tenure_days", "long-standing", "newer"),
)


def _told_apart(medians: list[dict[str, float]], quartiles: dict[str, tuple]) -> list[str] | None:
    """Qualifiers for segments that share a name, from the feature on which their medians differ the most
    (relative to the clustered customers' interquartile range): "high value" / "low value" for two, with
    "mid value" between for three. None when they cannot be told apart (same medians, or more than three)."""
    if len(medians) > 3:
        return None
    best, spread = None, 0.0
    for feature, high, low in DISTINGUISHERS:
        values = [m[feature] for m in medians]
        p25, _, p75 = quartiles[feature]
        scale = (p75 - p25) or max(abs(v) for v in values) or 1.0
        if len(set(values)) == len(values) and (max(values) - min(values)) / scale > spread:
            best, spread = (feature, high, low), (max(values) - min(values)) / scale
    if best is None:
        return None
    feature, high, low = best
    ranked = sorted(range(len(medians)), key=lambda i: -medians[i][feature])
    words = [high, low] if len(medians) == 2 else [high, "mid " + high.split()[-1], low]
    if len(medians) == 3 and feature != "monetary":
        words = [high, "average", low]
    qualifiers = [""] * len(medians)
    for rank, i in enumerate(ranked):
        qualifiers[i] = words[rank]
    return qualifiers


def name_segments(
    medians_by_segment: dict[int, dict[str, float]],
    quartiles: dict[str, tuple],
    naming: dict[str, Any] | None = None,
    kept: dict[int, str] | None = None,
) -> dict[int, str]:
    """Unique names for all segments, in segment-id order (most valuable first).

    `kept`: names segments keep from the previous snapshot (stable ids); the others are named by the rules,
    skipping names already taken: a segment whose first name is taken gets its next matching rule (two
    "Champions" groups: the second is "Loyal" if it also qualifies). Segments left sharing a name are told
    apart by what differs ("Lost (high value)" / "Lost (low value)"); only identical profiles get " (2)".
    """
    names = {sid: kept[sid] for sid in medians_by_segment if kept and sid in kept}
    taken = set(names.values())
    shared: dict[str, list[int]] = {}
    for sid in sorted(medians_by_segment):
        if sid in names:
            continue
        candidates = candidate_names(medians_by_segment[sid], quartiles, naming)
        name = next((c for c in candidates if c not in taken), None)
        if name is None:
            shared.setdefault(candidates[0], []).append(sid)
        else:
            names[sid] = name
            taken.add(name)
    for base, sids in shared.items():
        # the segment that took the name first is told apart too, unless its name was kept from before
        first = [sid for sid, n in names.items() if n == base and not (kept and sid in kept)]
        group = sorted(first + sids)
        qualifiers = _told_apart([medians_by_segment[sid] for sid in group], quartiles)
        if qualifiers is not None and not any(f"{base} ({q})" in taken for q in qualifiers):
            for sid, q in zip(group, qualifiers):
                names[sid] = f"{base} ({q})"
            taken.update(f"{base} ({q})" for q in qualifiers)
            continue
        n = 1
        for sid in sids:
            n += 1
            while f"{base} ({n})" in taken:
                n += 1
            names[sid] = f"{base} ({n})"
            taken.add(names[sid])
    return dict(sorted(names.items()))


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
