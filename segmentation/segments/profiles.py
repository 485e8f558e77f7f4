"""Segment profiles: size, revenue, medians and centers per segment, named, in the order of the segment ids.

Takes the assigned customers and the segment centers in original units, and hands the publish stage one
profile row per segment (`profile_segments`): a transaction log's RFM profile or a customer table's profile of
its own columns.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import FEATURE_COLUMNS
from segmentation.features.scores import segment_action
from segmentation.io import col
from segmentation.segments.naming import LEVEL_WORDS, NAMING_FEATURES, level, name_segments
from segmentation.sources.customers import internal_names
from segmentation.sources.source import Source


def customer_profiles(
    assigned_df: DataFrame, input_cfg: dict[str, Any], prepare_cfg: dict[str, Any], centers: dict[int, dict]
) -> list[dict[str, Any]]:
    """One profile per segment: size and share, mean and median of every numeric column, the share of each
    category, the center of each numeric model feature (original units), a name and a description.

    Name: the level (high / average / low) of the segment's median of every numeric model feature against
    the clustered customers' p25 and p75, e.g. "High Annual Income (k$), low Spending Score (1-100)"; a
    categorical model feature adds its value when at least 80% of the segment share it. Repeats get " (2)".
    """
    names = internal_names(input_cfg)
    numeric = list(input_cfg["features"])
    model_numeric = [f for f in prepare_cfg["features"] if f in numeric]
    model_categorical = [f for f in prepare_cfg["features"] if f in input_cfg["categorical"]]
    aggs = [F.count(F.lit(1)).alias("customers")]
    for f in numeric:
        aggs.append(F.avg(names[f]).alias(f"mean_{f}"))
        aggs.append(F.percentile_approx(names[f], 0.5, 10000).cast("double").alias(f"median_{f}"))
    stats = {int(r["segment_id"]): r.asDict() for r in assigned_df.groupBy("segment_id").agg(*aggs).collect()}
    shares: dict[int, dict[str, dict[str, float]]] = {sid: {} for sid in stats}
    for f in input_cfg["categorical"]:
        for r in assigned_df.groupBy("segment_id", names[f]).count().collect():
            sid, value = int(r["segment_id"]), r[names[f]] if r[names[f]] is not None else "(missing)"
            shares[sid].setdefault(f, {})[value] = r["count"] / stats[sid]["customers"]
    quartiles = {}
    if model_numeric:
        values = assigned_df.approxQuantile([names[f] for f in model_numeric], [0.25, 0.75], 1e-4)
        quartiles = {f: (v[0], v[1]) for f, v in zip(model_numeric, values)}
    total = sum(s["customers"] for s in stats.values())
    profiles, used = [], {}
    for sid in sorted(stats):
        s = stats[sid]
        parts = [
            f"{LEVEL_WORDS[level(s[f'median_{f}'], *quartiles[f])]} {f}"
            for f in model_numeric
            if s[f"median_{f}"] is not None
        ]
        for f in model_categorical:
            value, share = max(
                shares[sid].get(f, {}).items(), key=lambda kv: (kv[1], kv[0]), default=(None, 0)
            )
            if share >= 0.8:
                parts.append(f"{f} {value}")
        name = ", ".join(parts) or "Mixed"
        name = name[0].upper() + name[1:]
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name} ({used[name]})"
        typical = [f"{f} {s[f'median_{f}']:,.4g}" for f in numeric if s[f"median_{f}"] is not None]
        for f in input_cfg["categorical"]:
            top = sorted(shares[sid].get(f, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            typical.append(f"{f}: " + ", ".join(f"{share:.0%} {v}" for v, share in top))
        row: dict[str, Any] = {
            "segment_id": sid,
            "segment_name": name,
            "description": "typical customer (medians): " + "; ".join(typical),
            "customers": int(s["customers"]),
            "share_customers": s["customers"] / total,
        }
        for f in numeric:
            row[f"mean_{f}"] = None if s[f"mean_{f}"] is None else float(s[f"mean_{f}"])
            row[f"median_{f}"] = None if s[f"median_{f}"] is None else float(s[f"median_{f}"])
        for f in input_cfg["categorical"]:
            for value, share in sorted(shares[sid].get(f, {}).items()):
                row[f"share_{f}={value}"] = float(share)
        for f in model_numeric:
            row[f"center_{f}"] = float(centers[sid][f])
        profiles.append(row)
    # every profile has every share column (a category absent from a segment has share 0)
    keys = [k for p in profiles for k in p if k.startswith("share_") and "=" in k]
    for p in profiles:
        for k in keys:
            p.setdefault(k, 0.0)
    return profiles


def add_demographic_profiles(
    profiles: list[dict[str, Any]], assigned_df: DataFrame, numeric: list[str], categorical: list[str]
) -> None:
    """Add `mean_<f>` per numeric and `share_<f>=<value>` per categorical demographic column to each profile."""
    if numeric:
        aggs = [F.avg(col(f)).alias(f) for f in numeric]
        means = {int(r["segment_id"]): r for r in assigned_df.groupBy("segment_id").agg(*aggs).collect()}
        for p in profiles:
            for f in numeric:
                value = means[p["segment_id"]][f]
                p[f"mean_{f}"] = None if value is None else float(value)
    for f in categorical:
        counts = assigned_df.groupBy("segment_id", col(f).alias("_v")).count().collect()
        values = sorted({r["_v"] if r["_v"] is not None else "(missing)" for r in counts})
        for p in profiles:
            for v in values:
                n = sum(
                    r["count"]
                    for r in counts
                    if r["segment_id"] == p["segment_id"]
                    and (r["_v"] if r["_v"] is not None else "(missing)") == v
                )
                p[f"share_{f}={v}"] = n / p["customers"]


def feature_quartiles(
    clustered_df: DataFrame, features: tuple[str, ...] = NAMING_FEATURES
) -> dict[str, tuple]:
    """(p25, p50, p75) of each feature over the clustered customers."""
    values = clustered_df.approxQuantile(list(features), [0.25, 0.5, 0.75], 1e-4)
    return {f: tuple(float(x) for x in v) for f, v in zip(features, values)}


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


def centers_by_segment(
    prep_model: Any, centers: list[list[float]], order: dict[int, int], numeric: list[str], log1p: list[str]
) -> dict[int, dict[str, float]]:
    """Segment id -> its center in the original units of the numeric model features (the first `len(numeric)`
    dimensions of the scaled vector: a customer table's one-hot categories come after them)."""
    scaler, m = prep_model.stages[-1], len(numeric)
    original = centers_in_original_units(
        [c[:m] for c in centers],
        list(scaler.mean)[:m],
        list(scaler.std)[:m],
        numeric,
        [f for f in log1p if f in numeric],
    )
    return {order[c]: original[c] for c in range(len(centers))}


def profile_segments(
    source: Source,
    assigned_df: DataFrame,
    centers: dict[int, dict[str, float]],
    prepare_cfg: dict[str, Any],
    naming_cfg: dict[str, Any],
    kept_names: dict[int, str],
) -> list[dict[str, Any]]:
    """One profile per segment, named (docs/choosing-k.md, step 6): a transaction log's from its RFM
    medians against the clustered customers' quartiles (matched segments keep their names), a customer
    table's from the levels of its numeric model features."""
    if source.kind == "customers":
        return customer_profiles(assigned_df, source.input_cfg, prepare_cfg, centers)
    stats = segment_statistics(assigned_df)
    quartiles = feature_quartiles(source.clustered_df)
    medians = {int(s["segment_id"]): {f: s[f"median_{f}"] for f in FEATURE_COLUMNS} for s in stats}
    names = name_segments(medians, quartiles, naming_cfg, kept=kept_names)
    profiles = build_profiles(stats, names, centers, prepare_cfg["features"])
    demo = source.input_cfg["demographics"]
    if source.demographic_columns:
        add_demographic_profiles(profiles, assigned_df, demo["features"], demo["categorical"])
    return profiles


def segment_names(profiles: list[dict[str, Any]]) -> dict[int, str]:
    """Segment id -> name, from the profiles."""
    return {int(p["segment_id"]): p["segment_name"] for p in profiles}
