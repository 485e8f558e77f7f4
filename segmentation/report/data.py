"""The report's data: a run's customers reduced in Spark to what the report draws.

Takes the `segments` rows, the elbow and profile rows and the manifest. `collect_report_data` reduces the
customers to small tables (counts per segment x RFM cell, histogram counts per bin, feature statistics) and a
seeded sample of at most `max_points` clustered customers: the full table never reaches the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import FEATURE_COLUMNS
from segmentation.features.scores import RFM_ACTIONS, RFM_SEGMENT_RULES

#: Features drawn on log1p axes: counts and amounts with long right tails. Tenure is roughly uniform: linear.
LOG1P_FEATURES = ("recency_days", "frequency", "gross", "returns", "monetary", "avg_order_value")


#: Features of the pair plot and of the sample taken for the scatter plots.
PAIR_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")


#: Integer features: jittered by up to this much (in their own units) in scatter plots so equal values do not
#: pile up on one line.
JITTER = {"recency_days": 0.35, "frequency": 0.35}


HIST_BINS = 40


#: One colour per segment id, the same in every figure: tab10, then the light half of tab20 beyond 10 segments.
_TAB10 = [mcolors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]


_TAB20_LIGHT = [mcolors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]


SEGMENT_PALETTE = tuple(_TAB10 + _TAB20_LIGHT)


#: The RFM segment names in the order of the RFM map (most valuable first).
RFM_SEGMENTS = tuple(name for name, _, _ in RFM_SEGMENT_RULES)


#: (file name, title) of every figure, in the order the report shows them.
FIGURES = (
    ("elbow.png", "Elbow curve: within-cluster sum of squares by k"),
    ("silhouette.png", "Silhouette by k"),
    ("segment_sizes.png", "Segment sizes and revenue share"),
    ("profile_heatmap.png", "Segment profiles: feature means as z-scores"),
    ("scatter_recency_monetary.png", "Recency vs monetary value by segment"),
    ("scatter_frequency_monetary.png", "Frequency vs monetary value by segment"),
    ("pair_plot.png", "Pair plot of recency, frequency, monetary and tenure by segment"),
    ("feature_distributions.png", "Feature distributions by segment"),
    ("rfm_grid.png", "RFM score grid: customers by R and F score"),
    ("segment_rfm_crosstab.png", "KMeans segment x RFM segment"),
)


_CELL_KEYS = ("segment_id", "excluded_reason", "r_score", "f_score", "rfm_segment")


@dataclass(frozen=True)
class Histogram:
    """Counts per bin and segment of one feature over all clustered customers (computed in Spark).

    `edges` are in the plotted space: log1p(value) when `log1p`, else the value itself.
    """

    feature: str
    log1p: bool
    edges: list[float]
    counts: dict[int, list[int]]

    def total(self) -> int:
        return int(sum(sum(c) for c in self.counts.values()))


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, small enough for the driver: aggregates plus a bounded sample."""

    manifest: dict[str, Any]
    elbow: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    customers: int
    clustered: int
    excluded: dict[str, int]
    #: per feature over the clustered customers: n, min, max, mean, std (population)
    feature_stats: dict[str, dict[str, float]]
    #: per segment id and feature: the mean over the segment's customers
    segment_means: dict[int, dict[str, float]]
    histograms: dict[str, Histogram]
    #: one row per (segment_id, excluded_reason, r_score, f_score, rfm_segment): customers, revenue
    cells: pd.DataFrame
    #: at most `max_points` clustered customers: customer_id, segment_id and the PAIR_FEATURES
    sample: pd.DataFrame
    max_points: int
    seed: int
    #: "transactions" (the RFM report) or "customers" (a customer table's report)
    kind: str = "transactions"
    #: a customer table's scatter axes: its first two numeric model features
    axes: list[str] = field(default_factory=list)
    #: the few rows of the recommend tables the report shows (`report.offers.collect_offers`)
    offers: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def segment_ids(self) -> list[int]:
        ids = {int(p["segment_id"]) for p in self.profiles} | set(self.segment_means)
        return sorted(ids)

    @property
    def labels(self) -> dict[int, str]:
        """Legend labels, "1 Champions", the same in every figure and table."""
        names = {int(p["segment_id"]): str(p["segment_name"]) for p in self.profiles}
        return {sid: f"{sid} {names[sid]}" if sid in names else str(sid) for sid in self.segment_ids}

    @property
    def currency(self) -> str:
        return str(self.manifest.get("currency") or "currency units")


def segment_colour(segment_id: int) -> str:
    """The segment's colour in every figure (a fixed palette indexed by segment id)."""
    return SEGMENT_PALETTE[(int(segment_id) - 1) % len(SEGMENT_PALETTE)]


def cell_statistics(segments_df: DataFrame, features: Iterable[str] = FEATURE_COLUMNS) -> pd.DataFrame:
    """Customers, revenue and per-feature n/min/max/mean/var_pop per (segment, excluded reason, R, F, RFM segment).

    One groupBy: at most (segments + exclusion reasons) x 25 rows, from which the population counts, the RFM
    grid, the segment x RFM cross-tab and the feature statistics are all derived on the driver.
    """
    aggs = [F.count(F.lit(1)).alias("customers"), F.sum("monetary").cast("double").alias("revenue")]
    for f in features:
        value = F.col(f).cast("double")
        aggs += [
            F.count(value).alias(f"n_{f}"),
            F.min(value).alias(f"min_{f}"),
            F.max(value).alias(f"max_{f}"),
            F.avg(value).alias(f"mean_{f}"),
            F.var_pop(value).alias(f"var_{f}"),
        ]
    rows = [r.asDict() for r in segments_df.groupBy(*_CELL_KEYS).agg(*aggs).collect()]
    columns = [*_CELL_KEYS, "customers", "revenue"] + [
        f"{s}_{f}" for f in features for s in ("n", "min", "max", "mean", "var")
    ]
    cells = pd.DataFrame(rows, columns=columns)
    for key in ("segment_id", "r_score", "f_score"):
        cells[key] = cells[key].astype("Int64")
    return cells


def _combine(groups: pd.DataFrame, feature: str) -> dict[str, float]:
    """Pool per-group n/mean/var_pop into n, min, max, mean and population std (Chan's parallel formula)."""
    n_g = groups[f"n_{feature}"].fillna(0).astype(float)
    n = float(n_g.sum())
    if n == 0:
        return {"n": 0.0, "min": math.nan, "max": math.nan, "mean": math.nan, "std": math.nan}
    mean_g = groups[f"mean_{feature}"].fillna(0.0).astype(float)
    var_g = groups[f"var_{feature}"].fillna(0.0).astype(float)
    mean = float((n_g * mean_g).sum() / n)
    m2 = float((n_g * var_g + n_g * (mean_g - mean) ** 2).sum())
    return {
        "n": n,
        "min": float(groups[f"min_{feature}"].min()),
        "max": float(groups[f"max_{feature}"].max()),
        "mean": mean,
        "std": math.sqrt(max(m2, 0.0) / n),
    }


def histogram_specs(
    feature_stats: dict[str, dict[str, float]],
    integer_features: Iterable[str] = (),
    bins: int = HIST_BINS,
) -> dict[str, tuple[bool, list[float]]]:
    """Fixed bin edges per feature (in the feature's own units) from the min/max aggregates.

    Equal-width bins on log1p where the feature is skewed (and never negative), else on the value. Whole-number
    features get edges at half-integers (merging bins narrower than one), so no bin is empty merely because
    no whole number falls inside it.
    """
    integer_features = set(integer_features)
    specs = {}
    for f, s in feature_stats.items():
        if not s["n"] or math.isnan(s["min"]):
            continue
        use_log = f in LOG1P_FEATURES and s["min"] >= 0
        lo, hi = s["min"], s["max"]
        if f in integer_features:
            lo, hi = math.floor(lo) - 0.5, math.ceil(hi) + 0.5
        elif hi - lo < 1e-12:  # a constant feature: one visible bin around the value
            lo, hi = lo - 0.5, hi + 0.5
        a, b = (math.log1p(lo), math.log1p(hi)) if use_log else (lo, hi)
        edges = [a + (b - a) * i / bins for i in range(bins + 1)]
        if use_log:
            edges = [math.expm1(e) for e in edges]
        if f in integer_features:
            inner = sorted({math.floor(e + 0.5) - 0.5 for e in edges[1:-1]} - {lo, hi})
            edges = [lo, *(e for e in inner if lo < e < hi), hi]
        edges[0], edges[-1] = lo, hi
        if len(edges) < 3:  # a constant whole-number feature (everyone ordered once): Bucketizer needs 2 bins
            edges = [lo, (lo + hi) / 2, hi]
        specs[f] = (use_log, edges)
    return specs


def feature_histograms(
    clustered_df: DataFrame, specs: dict[str, tuple[bool, list[float]]]
) -> dict[str, Histogram]:
    """Histogram counts per segment and bin for every feature, in one Spark job over all clustered customers.

    Bins come from Spark ML's Bucketizer (a binary search in the JVM, arbitrary edges) with open outer edges, so
    every non-null value is counted; null stays null and NaN goes to an extra bucket, both left out.
    """
    if not specs:
        return {}
    features = list(specs)
    bucketizer = Bucketizer(
        inputCols=[f"_v{i}" for i in range(len(features))],
        outputCols=[f"_b{i}" for i in range(len(features))],
        splitsArray=[[-math.inf, *(float(e) for e in specs[f][1][1:-1]), math.inf] for f in features],
        handleInvalid="keep",
    )
    values_df = clustered_df.select(
        "segment_id", *(F.col(f).cast("double").alias(f"_v{i}") for i, f in enumerate(features))
    )
    cells = [
        F.struct(F.lit(f).alias("feature"), F.col(f"_b{i}").cast("int").alias("bin"))
        for i, f in enumerate(features)
    ]
    rows = (
        bucketizer.transform(values_df)
        .select("segment_id", F.inline(F.array(*cells)))
        .filter(F.col("bin").isNotNull())
        .groupBy("segment_id", "feature", "bin")
        .count()
        .collect()
    )
    counts: dict[str, dict[int, list[int]]] = {f: {} for f in specs}
    for r in rows:
        bins = len(specs[r["feature"]][1]) - 1
        if int(r["bin"]) >= bins:  # NaN
            continue
        per_segment = counts[r["feature"]].setdefault(int(r["segment_id"]), [0] * bins)
        per_segment[int(r["bin"])] += int(r["count"])
    return {
        f: Histogram(
            f, use_log, [math.log1p(e) if use_log else e for e in edges], dict(sorted(counts[f].items()))
        )
        for f, (use_log, edges) in specs.items()
    }


def sample_customers(
    clustered_df: DataFrame, population: int, max_points: int, seed: int, columns: Iterable[str]
) -> pd.DataFrame:
    """At most `max_points` clustered customers, chosen by a seeded hash of the customer id, as pandas.

    Each customer gets u = xxhash64(customer_id, seed) in [0, 1); the sample is the `max_points` smallest u. It
    depends on the ids and the seed only, not on partitioning or the machine. A filter u < p (p a little above
    max_points / population) runs first so that the top-k step moves only about max_points rows to the driver.
    """
    if max_points <= 0 or population <= 0:
        return pd.DataFrame(columns=["customer_id", *columns])
    scale = float(1 << 53)
    u = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(int(seed))), F.lit(1 << 53)).cast("double") / F.lit(
        scale
    )
    ranked_df = clustered_df.select("customer_id", *columns, u.alias("_u"))
    keep = (max_points * 1.05 + 5.0 * math.sqrt(max_points) + 10.0) / population
    if keep < 1.0:
        ranked_df = ranked_df.filter(F.col("_u") < F.lit(keep))
    sample_df = ranked_df.orderBy("_u", "customer_id").limit(int(max_points)).drop("_u")
    return sample_df.toPandas()


def collect_report_data(
    segments_df: DataFrame,
    elbow: list[dict],
    profiles: list[dict],
    manifest: dict,
    max_points: int = 50_000,
    seed: int = 42,
) -> ReportData:
    """Reduce a run's customers to what the report draws: aggregates over all of them, a bounded sample.

    Three Spark jobs over the needed columns: cell statistics, histogram counts and the sample. The columns are
    cached for the duration unless `segments_df` is cached already. The driver receives a few hundred aggregate
    rows and at most `max_points` sampled customers.
    """
    needed = ["customer_id", *_CELL_KEYS, *FEATURE_COLUMNS]
    own_cache = not segments_df.is_cached  # a caller's cache serves as well: never hold the data twice
    narrow_df = segments_df.select(*needed)
    if own_cache:
        narrow_df = narrow_df.persist()
    try:
        cells = cell_statistics(narrow_df)
        clustered_cells = cells[cells["segment_id"].notna()]
        feature_stats = {f: _combine(clustered_cells, f) for f in FEATURE_COLUMNS}
        segment_means = {
            int(sid): {f: _combine(group, f)["mean"] for f in FEATURE_COLUMNS}
            for sid, group in clustered_cells.groupby("segment_id")
        }
        excluded_cells = cells[cells["segment_id"].isna()]
        by_reason = excluded_cells.groupby(excluded_cells["excluded_reason"].fillna("unknown"))[
            "customers"
        ].sum()
        excluded = {str(reason): int(n) for reason, n in by_reason.items()}
        clustered = int(clustered_cells["customers"].sum())
        clustered_df = narrow_df.filter(F.col("segment_id").isNotNull())
        integer_features = [
            field.name for field in segments_df.schema.fields if isinstance(field.dataType, T.IntegralType)
        ]
        histograms = feature_histograms(clustered_df, histogram_specs(feature_stats, integer_features))
        sample = sample_customers(clustered_df, clustered, max_points, seed, ["segment_id", *PAIR_FEATURES])
    finally:
        if own_cache:
            narrow_df.unpersist()
    return ReportData(
        manifest=dict(manifest),
        elbow=sorted((dict(e) for e in elbow), key=lambda e: e["k"]),
        profiles=sorted((dict(p) for p in profiles), key=lambda p: int(p["segment_id"])),
        customers=int(cells["customers"].sum()),
        clustered=clustered,
        excluded=excluded,
        feature_stats=feature_stats,
        segment_means=segment_means,
        histograms=histograms,
        cells=cells[[*_CELL_KEYS, "customers", "revenue"]].reset_index(drop=True),
        sample=sample,
        max_points=int(max_points),
        seed=int(seed),
    )


def rfm_grid(data: ReportData) -> np.ndarray:
    """Customers per (R, F) score: a 5 x 5 array indexed [r - 1, f - 1] over every customer with a score."""
    grid = np.zeros((5, 5), dtype=np.int64)
    scored = data.cells[data.cells["r_score"].notna() & data.cells["f_score"].notna()]
    for (r, f), n in scored.groupby(["r_score", "f_score"])["customers"].sum().items():
        if 1 <= int(r) <= 5 and 1 <= int(f) <= 5:
            grid[int(r) - 1, int(f) - 1] += int(n)
    return grid


def segment_rfm_crosstab(data: ReportData) -> pd.DataFrame:
    """Clustered customers per KMeans segment (rows) and RFM segment (columns, in the RFM map's order)."""
    clustered = data.cells[data.cells["segment_id"].notna()]
    table = (
        clustered.assign(rfm_segment=clustered["rfm_segment"].fillna("not scored"))
        .pivot_table(
            index="segment_id", columns="rfm_segment", values="customers", aggfunc="sum", fill_value=0
        )
        .reindex(index=data.segment_ids, fill_value=0)
    )
    extra = sorted(c for c in table.columns if c not in RFM_SEGMENTS)
    table = table.reindex(columns=[*RFM_SEGMENTS, *extra], fill_value=0).astype("int64")
    table.index = [int(i) for i in table.index]
    return table


def rfm_segment_summary(data: ReportData) -> pd.DataFrame:
    """Per RFM segment (all of the map's, in its order) over every scored customer: size, shares and action."""
    scored = data.cells[data.cells["rfm_segment"].notna()]
    grouped = scored.groupby("rfm_segment")[["customers", "revenue"]].sum()
    # every named RFM segment, also the empty ones, so the table lists every action
    grouped = grouped.reindex([*RFM_SEGMENTS, *sorted(set(grouped.index) - set(RFM_SEGMENTS))], fill_value=0)
    total_n, total_rev = grouped["customers"].sum(), grouped["revenue"].sum()
    actions = {**RFM_ACTIONS, **(data.manifest.get("rfm_actions") or {})}
    return pd.DataFrame(
        {
            "rfm_segment": grouped.index,
            "customers": grouped["customers"].astype("int64").to_numpy(),
            "share_customers": (grouped["customers"] / total_n).to_numpy() if total_n else 0.0,
            "share_revenue": (grouped["revenue"] / total_rev).to_numpy() if total_rev else 0.0,
            "action": [actions.get(s, "") for s in grouped.index],
        }
    )


def customer_report_data(
    segments_df: DataFrame,
    elbow: list[dict],
    profiles: list[dict],
    manifest: dict,
    numeric_features: list[str],
    max_points: int = 50_000,
    seed: int = 42,
) -> ReportData:
    """What the report of a customer table draws: the profiles, the elbow rows and a seeded sample of at most
    `max_points` clustered customers with the first two numeric model features (the scatter's axes)."""
    axes = list(numeric_features[:2])
    sample = pd.DataFrame(columns=["customer_id", "segment_id", *axes])
    if len(axes) == 2:
        clustered_df = segments_df.filter(F.col("segment_id").isNotNull())
        sample = sample_customers(
            clustered_df, int(manifest["clustered_customers"]), max_points, seed, ["segment_id", *axes]
        )
    return ReportData(
        manifest=manifest,
        elbow=sorted((dict(e) for e in elbow), key=lambda e: e["k"]),
        profiles=profiles,
        customers=int(manifest["customers"]),
        clustered=int(manifest["clustered_customers"]),
        excluded=dict(manifest.get("excluded_customers") or {}),
        feature_stats={},
        segment_means={},
        histograms={},
        cells=pd.DataFrame(),
        sample=sample,
        max_points=len(sample),
        seed=seed,
        kind="customers",
        axes=axes,
    )
