"""Report stage: one run's visual report, from Spark aggregates and a bounded, seeded sample.

Takes the `segments` rows, the elbow and profile rows and the manifest of a run. `collect_report_data` reduces
the customers in Spark to small tables (counts per segment x RFM cell, histogram counts per bin, feature
statistics) and a seeded sample of at most `max_points` clustered customers: the full table never reaches the
driver. `write_report` turns that into `report.html` (every figure embedded as a PNG data URI, inline CSS, no
scripts, nothing fetched from the network) with the PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import FEATURE_COLUMNS
from segmentation.rfm import RFM_ACTIONS, RFM_SEGMENT_RULES

#: Features drawn on log1p axes: counts and amounts with long right tails. Tenure is roughly uniform: linear.
LOG1P_FEATURES = ("recency_days", "frequency", "gross", "returns", "monetary", "avg_order_value")

#: Features of the pair plot and of the sample taken for the scatter plots.
PAIR_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")

#: Integer features: jittered by up to this much (in their own units) in scatter plots so equal values do not
#: pile up on one line.
JITTER = {"recency_days": 0.35, "frequency": 0.35}

HIST_BINS = 40
DPI = 110

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

_RC = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
}

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


# --------------------------------------------------------------------------------------------------------------
# Spark side: aggregates and the sample


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


# --------------------------------------------------------------------------------------------------------------
# Driver side: derived tables


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


# --------------------------------------------------------------------------------------------------------------
# Figures (pure: ReportData -> matplotlib Figure; no pyplot, so no global figure state)


def axis_label(feature: str, currency: str = "currency units") -> str:
    """Axis label with units: days, orders or the currency."""
    labels = {
        "recency_days": "recency (days since last order)",
        "frequency": "frequency (orders)",
        "tenure_days": "tenure (days since first order)",
        "gross": f"gross spend ({currency})",
        "returns": f"returns ({currency})",
        "monetary": f"monetary ({currency})",
        "avg_order_value": f"avg order value ({currency})",
    }
    return labels.get(feature, feature)


def _short_label(feature: str, currency: str = "currency units") -> str:
    short = {
        "recency_days": "recency\n(days)",
        "frequency": "frequency\n(orders)",
        "tenure_days": "tenure\n(days)",
    }
    return short.get(feature, axis_label(feature, currency).replace(" (", "\n("))


def _compact(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 10_000:
        return f"{v / 1_000:g}k"
    return f"{v:,.0f}" if v >= 1 or v == 0 else f"{v:g}"


def _log1p_ticks(ax: Axes, axis: str, max_ticks: int = 8) -> None:
    """Label a log1p-scaled axis in original units at 0, 1, 2, 5, 10, 20, 50, ... (thinned to fit)."""
    lim = ax.get_xlim() if axis == "x" else ax.get_ylim()
    lo, hi = math.expm1(min(lim)), math.expm1(max(lim))
    candidates = [0.0] + [m * 10.0**e for e in range(0, 10) for m in (1, 2, 5)]
    values = [v for v in candidates if lo <= v <= hi]
    if len(values) > max_ticks:
        values = [v for v in values if v == 0 or str(int(v)).startswith("1")]
    if len(values) > max_ticks:
        values = [v for i, v in enumerate(values) if i % 2 == 0]
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks([math.log1p(v) for v in values], labels=[_compact(v) for v in values])


def _plotted(values: Iterable[float], log1p: bool) -> np.ndarray:
    """Values in plotted space: log1p(value) on a log axis."""
    values = np.asarray(values, dtype=float)
    return np.log1p(values) if log1p else values


def _tick_label(v: float, _: Any = None) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:g}"


def _format_axis(ax: Axes, axis: str, log1p: bool, max_ticks: int = 8) -> None:
    if log1p:
        _log1p_ticks(ax, axis, max_ticks)
    else:
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(_tick_label))


def _segment_handles(data: ReportData, ids: Iterable[int] | None = None, marker: str = "o") -> list[Line2D]:
    return [
        Line2D([], [], ls="", marker=marker, ms=8, color=segment_colour(s), label=data.labels[s])
        for s in (data.segment_ids if ids is None else ids)
    ]


def _excluded_note(data: ReportData) -> str:
    if not data.excluded:
        return "every customer is clustered"
    n = sum(data.excluded.values())
    return f"{n:,} customers not clustered ({', '.join(data.excluded)}) are left out"


def _sample_note(data: ReportData, short: bool = False) -> str:
    n = len(data.sample)
    excluded = sum(data.excluded.values())
    if short:
        shown = f"all {n:,}" if n >= data.clustered else f"random sample of {n:,} of {data.clustered:,}"
        return f"{shown} clustered customers (seed {data.seed})" + (
            f"; {excluded:,} not clustered, not shown" if excluded else ""
        )
    if n >= data.clustered:
        return f"all {data.clustered:,} clustered customers; {_excluded_note(data)}"
    return (
        f"a seeded random sample of {n:,} of {data.clustered:,} clustered customers (seed {data.seed}); "
        f"{_excluded_note(data)}"
    )


def figure_elbow(data: ReportData) -> Figure:
    """WCSS by k with the chosen k marked and the chord the knee is measured against."""
    fig = Figure(figsize=(8.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ks = [int(e["k"]) for e in data.elbow]
    wcss = [float(e["wcss"]) for e in data.elbow]
    ax.plot(ks, wcss, "-o", color="#1f4e79", lw=2, ms=6, label="WCSS per k")
    if len(ks) >= 3:
        ax.plot(
            [ks[0], ks[-1]],
            [wcss[0], wcss[-1]],
            ":",
            color="grey",
            lw=1.5,
            label="chord first to last k (the knee is farthest below it)",
        )
    for e in data.elbow:
        if e.get("chosen"):
            k, w = int(e["k"]), float(e["wcss"])
            ax.axvline(k, ls="--", color="#c0392b", lw=1.2)
            ax.plot([k], [w], "o", ms=16, mfc="none", mec="#c0392b", mew=2.5, label=f"chosen k = {k}")
            last = k == max(ks)  # keep the label inside the axes
            ax.annotate(
                f"chosen k = {k}",
                xy=(k, w),
                xytext=(-14 if last else 14, 18),
                textcoords="offset points",
                ha="right" if last else "left",
                color="#c0392b",
                fontweight="bold",
            )
    ax.set_title("Elbow curve: within-cluster sum of squares (WCSS) by k")
    ax.set_xlabel("k (number of segments)")
    ax.set_ylabel("WCSS (sum of squared distances,\nstandardised feature units)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return fig


def figure_silhouette(data: ReportData) -> Figure:
    """Mean silhouette per k as bars, the chosen k highlighted; k values without a score say n/a."""
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ks = [int(e["k"]) for e in data.elbow]
    scores = [e.get("silhouette") for e in data.elbow]
    values = [float(s) if s is not None else 0.0 for s in scores]
    colours = ["#c0392b" if e.get("chosen") else "#7f9cbf" for e in data.elbow]
    ax.bar(ks, values, color=colours, width=0.7)
    for k, s in zip(ks, scores):
        text = "n/a" if s is None else f"{float(s):.3f}"
        ax.annotate(
            text,
            xy=(k, 0 if s is None else float(s)),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    top = max([v for v in values if v > 0], default=1.0)
    ax.set_ylim(min(0.0, min(values, default=0.0) * 1.2), top * 1.18)
    ax.set_title("Silhouette by k (higher = better separated segments)")
    ax.set_xlabel("k (number of segments)")
    ax.set_ylabel("mean silhouette (-1 to 1)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(
        handles=[Patch(color="#c0392b", label="chosen k"), Patch(color="#7f9cbf", label="other k")],
        loc="upper right",
    )
    return fig


def figure_segment_sizes(data: ReportData) -> Figure:
    """Share of customers and share of revenue per segment, side by side."""
    profiles = data.profiles
    fig = Figure(figsize=(10.5, 1.6 + 0.5 * max(len(profiles), 1)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(profiles))
    colours = [segment_colour(p["segment_id"]) for p in profiles]
    panels = [
        (
            "share_customers",
            "customers",
            "Share of customers",
            "% of clustered customers",
            lambda p: f"{int(p['customers']):,}",
        ),
        (
            "share_revenue",
            "revenue",
            "Share of revenue",
            f"% of revenue (sum of monetary, {data.currency})",
            lambda p: f"{float(p['revenue']):,.0f}",
        ),
    ]
    for ax, (key, _, title, xlabel, detail) in zip(axes, panels):
        values = [100.0 * float(p[key]) for p in profiles]
        ax.barh(y, values, color=colours, height=0.7)
        for yi, v, p in zip(y, values, profiles):
            ax.annotate(
                f"{v:.1f}%  ({detail(p)})",
                xy=(v, yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
        ax.set_xlim(0, max(values, default=1.0) * 1.45 + 1)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels=[data.labels[int(p["segment_id"])] for p in profiles])
    axes[0].invert_yaxis()
    fig.suptitle(f"Segment sizes and revenue share ({data.clustered:,} clustered customers)")
    return fig


def figure_profile_heatmap(data: ReportData) -> Figure:
    """Segment x feature heatmap: colour = z-score of the segment mean, text = the mean in real units."""
    ids = data.segment_ids
    features = list(FEATURE_COLUMNS)
    z = np.full((len(ids), len(features)), np.nan)
    for i, sid in enumerate(ids):
        for j, f in enumerate(features):
            s, mean = data.feature_stats[f], data.segment_means.get(sid, {}).get(f, math.nan)
            if s["std"] and s["std"] > 0 and not math.isnan(mean):
                z[i, j] = (mean - s["mean"]) / s["std"]
            elif not math.isnan(mean):
                z[i, j] = 0.0
    fig = Figure(figsize=(11.5, 2.4 + 0.55 * len(ids)), layout="constrained")
    ax = _with_segment_strip(fig, data, ids, len(features))
    limit = 2.5
    image = ax.imshow(np.clip(z, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i, sid in enumerate(ids):
        for j, f in enumerate(features):
            mean = data.segment_means.get(sid, {}).get(f, math.nan)
            text = "n/a" if math.isnan(mean) else _number(mean)
            dark = not math.isnan(z[i, j]) and abs(z[i, j]) > 1.4
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(features)), labels=[_short_label(f, data.currency) for f in features], fontsize=9)
    ax.set_yticks([])
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01)
    bar.set_label("z-score of the segment mean\n(std. deviations from all clustered customers)")
    fig.suptitle("Segment profiles: mean of each feature (colour: above / below the average customer)")
    return fig


def _with_segment_strip(fig: Figure, data: ReportData, ids: list[int], columns: int) -> Axes:
    """A narrow strip of segment colours labelled "1 Champions" left of a segment x something matrix.

    Returns the matrix's axes; rows line up with `ids`. Black labels beside a colour stay readable for every
    palette colour, which tinted label text would not.
    """
    grid = fig.add_gridspec(1, 2, width_ratios=[0.35, columns], wspace=0.01)
    strip, ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    strip.imshow(np.array([[mcolors.to_rgb(segment_colour(s))] for s in ids]), aspect="auto")
    strip.set_xticks([])
    strip.set_yticks(range(len(ids)), labels=[data.labels[s] for s in ids])
    strip.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        strip.spines[side].set_visible(False)
    return ax


def _scatter(data: ReportData, ax: Axes, x: str, y: str, size: float, alpha: float) -> tuple[bool, bool]:
    """Draw the sample coloured by segment, big segments first so small ones stay on top; returns log flags.

    Whole-number features (JITTER) get a seeded jitter, reflected at 0 so that zeros do not pile up on the axis.
    """
    sample = data.sample
    log_x = data.histograms[x].log1p if x in data.histograms else x in LOG1P_FEATURES
    log_y = data.histograms[y].log1p if y in data.histograms else y in LOG1P_FEATURES
    if sample.empty:
        return log_x, log_y
    rng = np.random.default_rng(data.seed)
    xs, ys = sample[x].to_numpy(dtype=float), sample[y].to_numpy(dtype=float)
    if x in JITTER:
        xs = np.abs(xs + rng.uniform(-1, 1, len(xs)) * JITTER[x])
    if y in JITTER:
        ys = np.abs(ys + rng.uniform(-1, 1, len(ys)) * JITTER[y])
    px, py = _plotted(xs, log_x), _plotted(ys, log_y)
    segments = sample["segment_id"].to_numpy()
    order = sorted(set(int(s) for s in segments), key=lambda s: -int((segments == s).sum()))
    for sid in order:
        mask = segments == sid
        ax.scatter(px[mask], py[mask], s=size, alpha=alpha, color=segment_colour(sid), linewidths=0)
    return log_x, log_y


def _scatter_figure(data: ReportData, x: str, y: str, title: str) -> Figure:
    fig = Figure(figsize=(9.5, 6.8), layout="constrained")
    ax = fig.add_subplot()
    log_x, log_y = _scatter(data, ax, x, y, size=7, alpha=0.45)
    centres = []
    for p in data.profiles:
        if f"center_{x}" in p and f"center_{y}" in p:
            cx, cy = float(p[f"center_{x}"]), float(p[f"center_{y}"])
            centres.append(p["segment_id"])
            ax.scatter(
                _plotted([cx], log_x),
                _plotted([cy], log_y),
                marker="*",
                s=380,
                color=segment_colour(p["segment_id"]),
                edgecolors="black",
                linewidths=1.3,
                zorder=5,
            )
    _format_axis(ax, "x", log_x)
    _format_axis(ax, "y", log_y)
    ax.set_xlabel(axis_label(x, data.currency) + (" - log scale" if log_x else ""))
    ax.set_ylabel(axis_label(y, data.currency) + (" - log scale" if log_y else ""))
    ax.grid(alpha=0.25)
    handles = _segment_handles(data)
    if centres:
        handles.append(
            Line2D(
                [], [], ls="", marker="*", ms=14, mfc="white", mec="black", label="segment centre (KMeans)"
            )
        )
    ax.legend(handles=handles, title="segment", loc="best", framealpha=0.92)
    fig.suptitle(title)
    ax.set_title(_sample_note(data, short=True), fontsize=9, fontweight="normal", color="#444444")
    return fig


def figure_scatter_recency_monetary(data: ReportData) -> Figure:
    return _scatter_figure(data, "recency_days", "monetary", "Recency vs monetary value, coloured by segment")


def figure_scatter_frequency_monetary(data: ReportData) -> Figure:
    return _scatter_figure(data, "frequency", "monetary", "Frequency vs monetary value, coloured by segment")


def figure_pair_plot(data: ReportData) -> Figure:
    """Lower triangle: the sample's pairwise scatter; diagonal: each segment's distribution (Spark histograms)."""
    features = [f for f in PAIR_FEATURES if f in data.histograms]
    n = len(features)
    fig = Figure(figsize=(11.5, 11.5), layout="constrained")
    if n == 0:  # no clustered customer with a value: say so rather than fail
        fig.text(0.5, 0.5, "no clustered customers to plot", ha="center", va="center", fontsize=14)
        return fig
    axes = np.atleast_2d(fig.subplots(n, n, sharex="col", squeeze=False))
    for i, fy in enumerate(features):
        for j, fx in enumerate(features):
            ax = axes[i, j]
            if i < j:
                ax.axis("off")
                continue
            if i == j:
                hist = data.histograms[fx]
                for sid, counts in hist.counts.items():
                    total = sum(counts)
                    if total:
                        ax.stairs(np.asarray(counts) / total, hist.edges, color=segment_colour(sid), lw=1.8)
                ax.set_yticks([])
                ax.spines["left"].set_visible(False)
                ax.set_title(axis_label(fx, data.currency), fontsize=9.5)
                log_x = hist.log1p
            else:
                log_x, log_y = _scatter(data, ax, fx, fy, size=2.5, alpha=0.35)
                _format_axis(ax, "y", log_y, max_ticks=6)
                ax.grid(alpha=0.2)
            if j == 0 and i > 0:
                ax.set_ylabel(axis_label(fy, data.currency).replace(" (", "\n("))
            if i == n - 1:
                ax.set_xlabel(axis_label(fx, data.currency).replace(" (", "\n("))
                _format_axis(ax, "x", log_x, max_ticks=6)
    if n > 1:
        axes[0, n - 1].legend(
            handles=_segment_handles(data),
            title="segment",
            loc="upper right",
            fontsize=10,
            title_fontsize=10,
            frameon=False,
        )
    fig.suptitle("Pair plot by segment (log axes for recency, frequency and monetary)")
    return fig


def figure_feature_distributions(data: ReportData) -> Figure:
    """Stacked histograms per feature over all clustered customers, counts computed in Spark."""
    features = [f for f in FEATURE_COLUMNS if f in data.histograms]
    cols = 4
    rows = max(1, math.ceil((len(features) + 1) / cols))
    fig = Figure(figsize=(14, 3.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, f in zip(axes, features):
        hist = data.histograms[f]
        edges = np.asarray(hist.edges)
        bottom = np.zeros(len(edges) - 1)
        for sid in data.segment_ids:
            counts = np.asarray(hist.counts.get(sid, [0] * (len(edges) - 1)), dtype=float)
            ax.stairs(
                bottom + counts, edges, baseline=bottom, fill=True, color=segment_colour(sid), linewidth=0
            )
            bottom = bottom + counts
        ax.set_xlim(edges[0], edges[-1])
        _format_axis(ax, "x", hist.log1p, max_ticks=6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(axis_label(f, data.currency) + (" - log" if hist.log1p else ""), fontsize=9)
        ax.set_ylabel("customers")
        ax.set_title(f.replace("_", " "))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(features) :]:
        ax.axis("off")
    if len(features) < len(axes):
        axes[len(features)].legend(
            handles=[Patch(color=segment_colour(s), label=data.labels[s]) for s in data.segment_ids],
            title="segment",
            loc="center",
            fontsize=10,
            title_fontsize=10,
            frameon=False,
        )
    fig.suptitle(f"Feature distributions by segment: all {data.clustered:,} clustered customers, stacked")
    return fig


def figure_rfm_grid(data: ReportData) -> Figure:
    """5 x 5 grid of customers per R and F score, each cell labelled with its RFM segment, regions outlined."""
    grid = rfm_grid(data)
    names = {(r, f): name for name, rs, fs in RFM_SEGMENT_RULES for r in rs for f in fs}
    fig = Figure(figsize=(10, 7.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        grid, origin="lower", cmap="Blues", extent=(0.5, 5.5, 0.5, 5.5), vmin=0, vmax=max(int(grid.max()), 1)
    )
    top = max(int(grid.max()), 1)
    for r in range(1, 6):
        for f in range(1, 6):
            n = int(grid[r - 1, f - 1])
            colour = "white" if n > 0.55 * top else "black"
            ax.text(
                f, r + 0.1, f"{n:,}", ha="center", va="center", fontsize=12, fontweight="bold", color=colour
            )
            ax.text(f, r - 0.22, names.get((r, f), ""), ha="center", va="center", fontsize=8, color=colour)
            if f < 5 and names.get((r, f)) != names.get((r, f + 1)):
                ax.plot([f + 0.5, f + 0.5], [r - 0.5, r + 0.5], color="black", lw=2)
            if r < 5 and names.get((r, f)) != names.get((r + 1, f)):
                ax.plot([f - 0.5, f + 0.5], [r + 0.5, r + 0.5], color="black", lw=2)
    ax.set_xticks(range(1, 6))
    ax.set_yticks(range(1, 6))
    ax.set_xlabel("F score: frequency (1 = fewest orders, 5 = most orders)")
    ax.set_ylabel("R score: recency (1 = longest ago, 5 = most recent)")
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label("customers")
    scored = int(grid.sum())
    ax.set_title(
        f"RFM score grid: {scored:,} customers with a score (including any not clustered)",
    )
    return fig


def figure_segment_rfm_crosstab(data: ReportData) -> Figure:
    """Clustered customers per KMeans segment (rows) and RFM segment (columns); colour = share of the row."""
    table = segment_rfm_crosstab(data)
    counts = table.to_numpy(dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = Figure(figsize=(13, 2.8 + 0.55 * len(table)), layout="constrained")
    ax = _with_segment_strip(fig, data, list(table.index), len(table.columns))
    image = ax.imshow(100 * shares, cmap="Purples", vmin=0, vmax=100, aspect="auto")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j] > 0:
                colour = "white" if shares[i, j] > 0.55 else "black"
                share = f"{shares[i, j]:.0%}" if shares[i, j] >= 0.005 else "<1%"
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j]):,}\n{share}",
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color=colour,
                )
    ax.set_xticks(range(len(table.columns)), labels=list(table.columns), rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_xlabel("RFM segment (from the R and F scores)")
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01)
    bar.set_label("% of the KMeans segment's customers")
    fig.suptitle(
        f"KMeans segment (rows) x RFM segment (columns): {data.clustered:,} clustered customers; "
        "cell: customers and % of the row"
    )
    return fig


_FIGURE_BUILDERS: dict[str, Callable[[ReportData], Figure]] = {
    "elbow.png": figure_elbow,
    "silhouette.png": figure_silhouette,
    "segment_sizes.png": figure_segment_sizes,
    "profile_heatmap.png": figure_profile_heatmap,
    "scatter_recency_monetary.png": figure_scatter_recency_monetary,
    "scatter_frequency_monetary.png": figure_scatter_frequency_monetary,
    "pair_plot.png": figure_pair_plot,
    "feature_distributions.png": figure_feature_distributions,
    "rfm_grid.png": figure_rfm_grid,
    "segment_rfm_crosstab.png": figure_segment_rfm_crosstab,
}


def render_png(build: Callable[[ReportData], Figure], data: ReportData) -> bytes:
    """Build one figure under the report's matplotlib style and return it as PNG bytes (Agg, no pyplot)."""
    with matplotlib.rc_context(_RC):
        fig = build(data)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------------
# HTML: every value from the data goes through `_e` (html.escape); figures are data URIs; no scripts.


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(v: Any) -> str:
    """A mean or median for a table cell: thousands separators, fewer decimals the bigger the value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    v = float(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _count(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return _e(v)


def _share(x: float) -> str:
    return "&lt;0.01%" if 0 < x < 0.0001 else f"{x:.2%}" if x < 0.01 else f"{x:.1%}"


def _swatch(sid: int) -> str:
    return f'<span class="swatch" style="background:{segment_colour(sid)}"></span>'


def _table(header: list[str], rows: list[list[str]], numeric: Iterable[int] = (), cls: str = "") -> str:
    """An HTML table from already-escaped cells; the `numeric` columns are right-aligned."""
    numeric = set(numeric)

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="num">{content}</{tag}>' if i in numeric else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _typical(p: dict[str, Any], currency: str) -> str:
    """The segment's median customer in words."""
    parts = []
    if p.get("median_recency_days") is not None:
        parts.append(f"last order {float(p['median_recency_days']):,.0f} days ago")
    if p.get("median_frequency") is not None:
        parts.append(f"{float(p['median_frequency']):,.0f} orders")
    if p.get("median_monetary") is not None:
        parts.append(f"{float(p['median_monetary']):,.0f} {currency} spent")
    if p.get("median_tenure_days") is not None:
        parts.append(f"customer for {float(p['median_tenure_days']):,.0f} days")
    return ", ".join(parts) or "n/a"


def _breakpoints(value: Any) -> tuple[list[float], str]:
    """Breakpoints and a note from either {"breakpoints": [...], "method"/"fallback": ...} or a plain list."""
    if isinstance(value, dict):
        note = value.get("method") or value.get("fallback") or ""
        return [float(b) for b in value.get("breakpoints") or []], str(note)
    if isinstance(value, (list, tuple)):
        return [float(b) for b in value], ""
    return [], ""


def _score_ranges(bps: list[float], higher_is_better: bool, integer: bool) -> dict[int, str]:
    """Score -> value range (HTML), e.g. {5: "&le; 17", 4: "18&ndash;50", ...}; no breakpoints: everyone is 3.

    A score is 1 + the number of breakpoints a value is above (5 - that when lower is better), as in rfm.py.
    """
    if not bps:
        return {s: ("all" if s == 3 else "&ndash;") for s in range(1, 6)}
    fmt = (lambda v: f"{v:,.0f}") if integer else (lambda v: f"{v:,.2f}")
    bounds = [-math.inf, *bps, math.inf]
    ranges: dict[int, str] = {}
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        if integer:
            first = None if lo == -math.inf else math.floor(lo) + 1
            last = None if hi == math.inf else math.floor(hi)
            if first is None:
                text = f"&le; {fmt(last)}"
            elif last is None:
                text = f"&ge; {fmt(first)}"
            elif first > last:
                text = "&ndash;"
            elif first == last:
                text = fmt(first)
            else:
                text = f"{fmt(first)}&ndash;{fmt(last)}"
        elif lo == -math.inf:
            text = f"&le; {fmt(hi)}"
        elif hi == math.inf:
            text = f"&gt; {fmt(lo)}"
        else:
            text = f"&gt; {fmt(lo)} and &le; {fmt(hi)}"
        ranges[(i + 1) if higher_is_better else (5 - i)] = text
    return ranges


_CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;color:#1d2433;margin:0;background:#f4f6f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;padding-top:8px;border-top:2px solid #e3e7ee}
h3{font-size:16px;margin:22px 0 6px}.meta{color:#5b6475;font-size:13px;margin:0 0 12px}
nav{font-size:13px;margin:10px 0 4px}nav a{margin-right:14px;color:#1f4e79}
p.lead{font-size:15px;max-width:900px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:8px 0 6px}
th,td{border-bottom:1px solid #e3e7ee;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:bold}.num{text-align:right;white-space:nowrap}
table.headline td{font-size:14px}table.headline td:first-child{white-space:nowrap;font-weight:bold}
table.details td:first-child{min-width:150px}table.details td:last-child{min-width:190px}
table.details th,table.details td{padding:6px 7px}small{color:#5b6475;font-weight:normal}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px;
border:1px solid rgba(0,0,0,.25)}
figure{margin:18px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{font-size:13px;color:#444c5c;max-width:950px;margin-top:4px}
.note{font-size:13px;color:#5b6475}code{background:#eef2f7;padding:0 3px;border-radius:3px}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:4px 18px;font-size:14px}
dl.summary dt{font-weight:bold;color:#394150}dl.summary dd{margin:0}
"""


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure_html(file_name: str, png: bytes, title: str, caption: str) -> str:
    width, height = png_size(png)
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{_e(file_name[:-4])}"><img src="{uri}" alt="{_e(title)}" width="{width}" '
        f'height="{height}" data-file="{_e(file_name)}"><figcaption><b>{_e(title)}.</b> {caption} '
        f'<span class="note">(file: {_e(file_name)})</span></figcaption></figure>'
    )


def _glance_section(data: ReportData) -> list[str]:
    """The headline table a marketer reads first: who the segments are, how big, and what to do."""
    rows = [
        [
            f"{_swatch(int(p['segment_id']))}{_e(data.labels[int(p['segment_id'])])}",
            _count(p["customers"]),
            f"{float(p['share_customers']):.1%}",
            f"{float(p['share_revenue']):.1%}",
            _e(_typical(p, data.currency)),
            _e(p.get("action", "")),
        ]
        for p in data.profiles
    ]
    parts = [
        '<h2 id="glance">Segments at a glance</h2>',
        f'<p class="lead">{data.clustered:,} customers fall into {len(data.profiles)} segments, numbered by '
        "average spend (1 = the most valuable). Each row says how big the segment is, how much of the revenue it "
        "brings, what its typical (median) customer looks like and what marketing should do with it.</p>",
        _table(
            [
                "Segment",
                "Customers",
                "Share of customers",
                "Share of revenue",
                "Typical customer (medians)",
                "Recommended action",
            ],
            rows,
            numeric=(1, 2, 3),
            cls="headline",
        ),
    ]
    if data.excluded:
        listed = ", ".join(f"{n:,} {_e(r)}" for r, n in data.excluded.items())
        parts.append(
            f'<p class="note">Not in any segment: {sum(data.excluded.values()):,} customers ({listed}): no '
            "purchases or no positive net spend. They are left out of the segment figures.</p>"
        )
    return parts


def _summary_section(data: ReportData) -> list[str]:
    """Run summary: rows in and out (rejects by reason), customers, the chosen k and why, timings."""
    m = data.manifest
    rejected = m.get("rejected_rows") or {}
    excluded = m.get("excluded_customers") or {}
    items = [
        ("Snapshot date", _e(m.get("snapshot_date", "n/a"))),
        ("Input rows", _count(m.get("input_rows", "n/a"))),
        ("Accepted rows", _count(m.get("accepted_rows", "n/a"))),
        ("Rejected rows", f"{sum(int(v) for v in rejected.values()):,}"),
        ("Customers", _count(m.get("customers", data.customers))),
        ("Clustered customers", _count(m.get("clustered_customers", data.clustered))),
        ("Not clustered", ", ".join(f"{int(n):,} {_e(r)}" for r, n in excluded.items()) or "none"),
        ("Chosen k", _e(m.get("chosen_k", "n/a"))),
        ("Why this k", _e(m.get("chosen_k_reason", "n/a"))),
    ]
    if m.get("clear_structure") is not None:
        items.append(("Clear cluster structure", "yes" if m["clear_structure"] else "<b>no</b>"))
    if m.get("features"):
        items.append(("Model features", _e(", ".join(map(str, m["features"])))))
    timings = m.get("timings_s") or {}
    if timings:
        stages = ", ".join(f"{_e(k)} {float(v):,.1f} s" for k, v in timings.items() if k != "total")
        total = f"{float(timings['total']):,.1f} s" if "total" in timings else ""
        items.append(("Run time", f"{total} ({stages})" if total and stages else total or stages))
    parts = [
        '<h2 id="summary">Run summary</h2>',
        '<dl class="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>",
    ]
    if rejected:
        input_rows = int(m.get("input_rows") or 0)
        rows = [
            [f"<code>{_e(r)}</code>", _count(n), _share(int(n) / input_rows) if input_rows else "n/a"]
            for r, n in rejected.items()
        ]
        parts += [
            "<h3>Rejected input rows by reason</h3>",
            _table(["Reason", "Rows", "Share of input"], rows, (1, 2)),
        ]
    return parts


def _k_table(data: ReportData) -> str:
    def num(e: dict, key: str, spec: str) -> str:
        return "n/a" if e.get(key) is None else format(float(e[key]), spec)

    rows = [
        [
            f"<b>{int(e['k'])}</b>" if e.get("chosen") else str(int(e["k"])),
            f"{float(e['wcss']):,.1f}",
            num(e, "silhouette", ".3f"),
            num(e, "calinski_harabasz", ",.1f"),
            num(e, "davies_bouldin", ".3f"),
            num(e, "smallest_cluster_share", ".1%"),
            num(e, "stability", ".3f"),
            _e(e.get("vetoes") or ""),
            "<b>chosen</b>" if e.get("chosen") else "",
        ]
        for e in data.elbow
    ]
    return _table(
        [
            "k",
            "WCSS",
            "Silhouette",
            "Calinski-Harabasz",
            "Davies-Bouldin",
            "Smallest segment (share)",
            "Stability (ARI)",
            "Vetoed because",
            "",
        ],
        rows,
        (0, 1, 2, 3, 4, 5, 6),
    )


def comparison_html(manifest: dict[str, Any]) -> list[str]:
    """`model.compare`: each method's choice, and per method and k the separation metrics and sizes."""
    comparison = manifest.get("comparison")
    if not comparison:
        return []

    def num(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(float(v), spec)

    choices = [
        [_e(method), _e(c["chosen_k"]), "yes" if c["clear_structure"] else "no", _e(c["reason"])]
        for method, c in comparison["methods"].items()
    ]
    rows = [
        [
            _e(r["method"]),
            f"<b>{int(r['k'])}</b>" if r["chosen"] else str(int(r["k"])),
            num(r["silhouette"], ".3f"),
            num(r["calinski_harabasz"], ",.1f"),
            num(r["davies_bouldin"], ".3f"),
            num(r["smallest_cluster_share"], ".1%"),
            num(r["stability"], ".3f"),
            _e(", ".join(f"{int(n):,}" for n in r["cluster_sizes"])),
            _e(r["vetoes"] or ""),
        ]
        for r in comparison["rows"]
    ]
    return [
        '<h2 id="compare">Methods compared</h2>',
        "<p>The same features clustered by each method (<code>model.compare</code>); the segments above come from "
        f"<b>{_e(manifest.get('method', 'kmeans'))}</b>. Each method's own choice of k is in bold.</p>",
        _table(["Method", "Chosen k", "Clear structure", "Why"], choices, (1,)),
        _table(
            [
                "Method",
                "k",
                "Silhouette",
                "Calinski-Harabasz",
                "Davies-Bouldin",
                "Smallest cluster",
                "Stability",
                "Cluster sizes",
                "Vetoed because",
            ],
            rows,
            (1, 2, 3, 4, 5, 6),
        ),
    ]


def _rfm_tables(data: ReportData) -> tuple[str, str]:
    """The score ranges of R, F and M (from the manifest's breakpoints) and the RFM segments with actions."""
    breakpoints = data.manifest.get("rfm_breakpoints") or {}
    ranges, notes = {}, []
    for feature, higher_is_better, integer in (
        ("recency_days", False, True),
        ("frequency", True, True),
        ("monetary", True, False),
    ):
        bps, note = _breakpoints(breakpoints.get(feature))
        ranges[feature] = _score_ranges(bps, higher_is_better, integer)
        if note:
            notes.append(f"{_e(feature)}: {_e(note)}")
    score_rows = [
        [str(s), ranges["recency_days"][s], ranges["frequency"][s], ranges["monetary"][s]]
        for s in range(5, 0, -1)
    ]
    score_table = _table(
        ["Score", "R: recency (days)", "F: frequency (orders)", f"M: monetary ({_e(data.currency)})"],
        score_rows,
    ) + (f'<p class="note">Breakpoints: {"; ".join(notes)}.</p>' if notes else "")
    segment_rows = [
        [
            _e(r.rfm_segment),
            _count(r.customers),
            f"{r.share_customers:.1%}",
            f"{r.share_revenue:.1%}",
            _e(r.action),
        ]
        for r in rfm_segment_summary(data).itertuples(index=False)
    ]
    segment_table = _table(
        ["RFM segment", "Customers", "Share of customers", "Share of revenue", "Recommended action"],
        segment_rows,
        numeric=(1, 2, 3),
    )
    return score_table, segment_table


def _details_section(data: ReportData) -> list[str]:
    """Per-segment profile table: name, description, size, revenue, median / mean of each feature, action."""
    # gross is monetary + returns (net mode); it stays in the heatmap, here it would only widen the table
    features = ["recency_days", "frequency", "tenure_days", "monetary", "avg_order_value", "returns"]
    short = {
        "recency_days": "Recency<br><small>days</small>",
        "frequency": "Frequency<br><small>orders</small>",
        "tenure_days": "Tenure<br><small>days</small>",
        "monetary": "Monetary",
        "avg_order_value": "Avg order value",
        "returns": "Returns",
    }
    centres = [f for f in FEATURE_COLUMNS if any(f"center_{f}" in p for p in data.profiles)]
    header = ["Segment", "Customers", "Revenue"] + [short[f] for f in features]
    if centres:
        header.append(
            "KMeans centre<br><small>" + _e(", ".join(c.replace("_days", "") for c in centres)) + "</small>"
        )
    header.append("Recommended action")
    rows = []
    for p in data.profiles:
        sid = int(p["segment_id"])
        name = f"{_swatch(sid)}<b>{_e(data.labels[sid])}</b>"
        if p.get("description"):
            name += f"<br><small>{_e(p['description'])}</small>"
        row = [
            name,
            f"{_count(p['customers'])}<br><small>{float(p['share_customers']):.1%}</small>",
            f"{float(p['revenue']):,.0f}<br><small>{float(p['share_revenue']):.1%}</small>",
        ]
        row += [
            f"{_number(p.get(f'median_{f}'))}<br><small>{_number(p.get(f'mean_{f}'))}</small>"
            for f in features
        ]
        if centres:
            row.append("<br>".join(_number(p[f"center_{f}"]) for f in centres if f"center_{f}" in p))
        row.append(_e(p.get("action", "")))
        rows.append(row)
    return [
        '<h2 id="details">Segment details</h2>',
        f"<p>Each number cell: the segment's median, with its mean below. Money is in {_e(data.currency)}. The "
        "KMeans centre is the segment's centre in the model, transformed back to real units.</p>",
        _table(header, rows, numeric=range(1, len(header) - 1), cls="details"),
    ]


def _method_section(data: ReportData) -> list[str]:
    return [
        '<h2 id="method">How this report was made</h2>',
        '<ul class="note">'
        f"<li>Counts, shares, histograms, the RFM grid and the cross-tab are computed in Spark over all "
        f"{data.customers:,} customers ({data.clustered:,} clustered).</li>"
        f"<li>Scatter and pair plots show {_e(_sample_note(data))}. The sample is the customers with the "
        f"smallest hash of (customer id, seed), at most {data.max_points:,}, so a run always shows the same "
        "points.</li>"
        "<li>Log axes are log(1 + value), labelled in real units. Recency and frequency are whole numbers and "
        "are jittered by up to &plusmn;0.35 in the scatter plots so that equal values do not overlap.</li>"
        "<li>Segment colours are fixed by segment id and are the same in every figure.</li>"
        "</ul>",
    ]


def render_html(data: ReportData, images: dict[str, bytes]) -> str:
    """The self-contained report: tables and the given PNGs (file name -> bytes) as data URIs."""
    m = data.manifest
    titles, captions = dict(FIGURES), _captions(data)

    def fig(name: str) -> str:
        return _figure_html(name, images[name], titles[name], captions[name]) if name in images else ""

    snapshot = _e(m.get("snapshot_date", "unknown date"))
    created = f" &middot; created {_e(m['created_at'])}" if m.get("created_at") else ""
    score_table, rfm_segment_table = _rfm_tables(data)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Customer segments, snapshot {snapshot}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Customer segments &middot; snapshot {snapshot}</h1>",
        f'<p class="meta">run {_e(m.get("run_id", "n/a"))}{created} &middot; {len(data.profiles)} segments '
        f"from {data.clustered:,} customers</p>",
        '<nav><a href="#glance">At a glance</a><a href="#summary">Run summary</a><a href="#k">Choosing k</a>'
        '<a href="#sizes">Sizes</a><a href="#profiles">Profiles</a><a href="#scatter">Scatter plots</a>'
        '<a href="#distributions">Distributions</a><a href="#rfm">RFM</a><a href="#details">Segment details</a>'
        '<a href="#method">How this was made</a></nav>',
        *_glance_section(data),
        *_summary_section(data),
        '<h2 id="k">Choosing k</h2>',
        f"<p>Chosen k = <b>{_e(m.get('chosen_k', 'n/a'))}</b>: {_e(m.get('chosen_k_reason', 'n/a'))}.</p>",
        fig("elbow.png"),
        fig("silhouette.png"),
        "<p>Per k: silhouette (higher is better), Calinski-Harabasz (higher is better), Davies-Bouldin (lower is "
        "better), the smallest segment's share and stability (mean adjusted Rand index against fits with other "
        "seeds; 1 = the same segments whatever the seed). A k is vetoed when its smallest segment or its "
        "stability is below the configured minimum.</p>",
        _k_table(data),
        *comparison_html(m),
        '<h2 id="sizes">Segment sizes and revenue</h2>',
        fig("segment_sizes.png"),
        '<h2 id="profiles">Segment profiles</h2>',
        fig("profile_heatmap.png"),
        '<h2 id="scatter">Customers by segment</h2>',
        fig("scatter_recency_monetary.png"),
        fig("scatter_frequency_monetary.png"),
        fig("pair_plot.png"),
        '<h2 id="distributions">Feature distributions</h2>',
        fig("feature_distributions.png"),
        '<h2 id="rfm">RFM scores</h2>',
        "<p>Beside the KMeans segments, every customer with a purchase gets R, F and M scores from 1 to 5 "
        "(quintiles of all such customers) and a named RFM segment from the R and F scores.</p>",
        "<h3>Score ranges</h3>",
        score_table,
        fig("rfm_grid.png"),
        fig("segment_rfm_crosstab.png"),
        "<h3>RFM segments and what to do with them</h3>",
        rfm_segment_table,
        *_details_section(data),
        *_method_section(data),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _captions(data: ReportData) -> dict[str, str]:
    """Figure captions (HTML-escaped) saying what to read from each figure and what is left out."""
    note = _e(_excluded_note(data))
    sample = _e(_sample_note(data))
    return {
        "elbow.png": "Within-cluster sum of squares falls as k grows; the chosen k (red) is where adding "
        "segments stops paying off (the knee, farthest below the dotted chord) or as configured.",
        "silhouette.png": "How well separated the segments are for each k (1 = perfectly, 0 = overlapping); "
        "a cross-check of the elbow choice.",
        "segment_sizes.png": f"Left: how many customers each segment holds; right: its share of revenue "
        f"(sum of monetary). A small segment with a large revenue share deserves most care. {note}.",
        "profile_heatmap.png": "Each cell shows the segment's mean in real units (days, orders, "
        f"{_e(data.currency)}); red = above the average clustered customer, blue = below (z-score of the mean). "
        f"For recency, red means longer since the last order. {note}.",
        "scatter_recency_monetary.png": f"Each dot is a customer; stars are the KMeans segment centres. Both "
        f"axes are log(1 + value). Shows {sample}.",
        "scatter_frequency_monetary.png": f"Each dot is a customer; stars are the KMeans segment centres. Both "
        f"axes are log(1 + value). Shows {sample}.",
        "pair_plot.png": "Below the diagonal: every pair of features for the sampled customers. On the "
        "diagonal: each segment's distribution of the feature (share of the segment's customers per bin, all "
        f"clustered customers). Shows {sample}.",
        "feature_distributions.png": f"Histograms of every feature over all {data.clustered:,} clustered "
        f"customers, stacked by segment (bins computed in Spark; log(1 + value) bins for skewed features). "
        f"{note}.",
        "rfm_grid.png": "Customers per recency score (R) and frequency score (F); thick lines outline the "
        "named RFM segments. Scores use all customers with at least one purchase.",
        "segment_rfm_crosstab.png": "How the KMeans segments map onto the classic RFM segments: each row is a "
        f"KMeans segment, each cell its customers in an RFM segment and the share of the row. {note}.",
    }


def write_report(data: ReportData, out_dir: str | Path) -> list[Path]:
    """Write every figure as a PNG and `report.html` (figures embedded) into a local directory.

    Returns the written paths, PNGs first and report.html last, so a complete report implies its figures.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    written: list[Path] = []
    for name, _ in FIGURES:
        images[name] = render_png(_FIGURE_BUILDERS[name], data)
        path = out / name
        path.write_bytes(images[name])
        written.append(path)
    report = out / "report.html"
    report.write_text(render_html(data, images), encoding="utf-8")
    written.append(report)
    return written
