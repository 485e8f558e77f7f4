"""The report's figures for the choice of k and the segments: elbow, silhouette, sizes, profile heatmap.

Takes a `ReportData` and hands back a matplotlib Figure per chart (and `render_png` for the PNG bytes); also
the axis helpers (log1p ticks, labels) the distribution figures use.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from typing import Any

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from segmentation.config import FEATURE_COLUMNS
from segmentation.report.data import ReportData, segment_colour
from segmentation.report.formatting import fmt_number

DPI = 110


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


def plotted_values(values: Iterable[float], log1p: bool) -> np.ndarray:
    """Values in plotted space: log1p(value) on a log axis."""
    values = np.asarray(values, dtype=float)
    return np.log1p(values) if log1p else values


def _tick_label(v: float, _: Any = None) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:g}"


def format_axis(ax: Axes, axis: str, log1p: bool, max_ticks: int = 8) -> None:
    if log1p:
        _log1p_ticks(ax, axis, max_ticks)
    else:
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(_tick_label))


def segment_handles(data: ReportData, ids: Iterable[int] | None = None, marker: str = "o") -> list[Line2D]:
    return [
        Line2D([], [], ls="", marker=marker, ms=8, color=segment_colour(s), label=data.labels[s])
        for s in (data.segment_ids if ids is None else ids)
    ]


def excluded_note(data: ReportData) -> str:
    if not data.excluded:
        return "every customer is clustered"
    n = sum(data.excluded.values())
    return f"{n:,} customers not clustered ({', '.join(data.excluded)}) are left out"


def sample_note(data: ReportData, short: bool = False) -> str:
    n = len(data.sample)
    excluded = sum(data.excluded.values())
    if short:
        shown = f"all {n:,}" if n >= data.clustered else f"random sample of {n:,} of {data.clustered:,}"
        return f"{shown} clustered customers (seed {data.seed})" + (
            f"; {excluded:,} not clustered, not shown" if excluded else ""
        )
    if n >= data.clustered:
        return f"all {data.clustered:,} clustered customers; {excluded_note(data)}"
    return (
        f"a seeded random sample of {n:,} of {data.clustered:,} clustered customers (seed {data.seed}); "
        f"{excluded_note(data)}"
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
    ax = with_segment_strip(fig, data, ids, len(features))
    limit = 2.5
    image = ax.imshow(np.clip(z, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i, sid in enumerate(ids):
        for j, f in enumerate(features):
            mean = data.segment_means.get(sid, {}).get(f, math.nan)
            text = "n/a" if math.isnan(mean) else fmt_number(mean)
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


def render_png(build: Callable[[ReportData], Figure], data: ReportData) -> bytes:
    """Build one figure under the report's matplotlib style and return it as PNG bytes (Agg, no pyplot)."""
    with matplotlib.rc_context(_RC):
        fig = build(data)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def figure_customer_sizes(data: ReportData) -> Figure:
    fig = Figure(figsize=(8.5, 0.6 + 0.45 * len(data.profiles)), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{p['segment_id']} {p['segment_name']}" for p in data.profiles][::-1]
    values = [p["share_customers"] for p in data.profiles][::-1]
    colours = [segment_colour(int(p["segment_id"])) for p in data.profiles][::-1]
    ax.barh(labels, values, color=colours)
    for y, v in enumerate(values):
        ax.annotate(f"{v:.1%}", xy=(v, y), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xlabel("share of clustered customers")
    ax.set_title("Segment sizes")
    return fig


def figure_customer_scatter(data: ReportData, x: str, y: str) -> Figure:
    fig = Figure(figsize=(8.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    for p in data.profiles:
        sid = int(p["segment_id"])
        part = data.sample[data.sample["segment_id"] == sid]
        ax.scatter(
            part[x], part[y], s=18, alpha=0.8, color=segment_colour(sid), label=f"{sid} {p['segment_name']}"
        )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{x} vs {y} by segment")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def with_segment_strip(fig: Figure, data: ReportData, ids: list[int], columns: int) -> Axes:
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
