"""The report's figures of the customers themselves: scatter and pair plots, feature distributions, RFM grids.

Takes a `ReportData` (its bounded sample and aggregates) and hands back a matplotlib Figure per chart.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from segmentation.config import FEATURE_COLUMNS
from segmentation.features.scores import RFM_SEGMENT_RULES
from segmentation.report.data import (
    JITTER,
    LOG1P_FEATURES,
    PAIR_FEATURES,
    ReportData,
    rfm_grid,
    segment_colour,
    segment_rfm_crosstab,
)
from segmentation.report.figures import (
    axis_label,
    format_axis,
    plotted_values,
    sample_note,
    segment_handles,
    with_segment_strip,
)


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
    px, py = plotted_values(xs, log_x), plotted_values(ys, log_y)
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
                plotted_values([cx], log_x),
                plotted_values([cy], log_y),
                marker="*",
                s=380,
                color=segment_colour(p["segment_id"]),
                edgecolors="black",
                linewidths=1.3,
                zorder=5,
            )
    format_axis(ax, "x", log_x)
    format_axis(ax, "y", log_y)
    ax.set_xlabel(axis_label(x, data.currency) + (" - log scale" if log_x else ""))
    ax.set_ylabel(axis_label(y, data.currency) + (" - log scale" if log_y else ""))
    ax.grid(alpha=0.25)
    handles = segment_handles(data)
    if centres:
        handles.append(
            Line2D(
                [], [], ls="", marker="*", ms=14, mfc="white", mec="black", label="segment centre (KMeans)"
            )
        )
    ax.legend(handles=handles, title="segment", loc="best", framealpha=0.92)
    fig.suptitle(title)
    ax.set_title(sample_note(data, short=True), fontsize=9, fontweight="normal", color="#444444")
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
                format_axis(ax, "y", log_y, max_ticks=6)
                ax.grid(alpha=0.2)
            if j == 0 and i > 0:
                ax.set_ylabel(axis_label(fy, data.currency).replace(" (", "\n("))
            if i == n - 1:
                ax.set_xlabel(axis_label(fx, data.currency).replace(" (", "\n("))
                format_axis(ax, "x", log_x, max_ticks=6)
    if n > 1:
        axes[0, n - 1].legend(
            handles=segment_handles(data),
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
        format_axis(ax, "x", hist.log1p, max_ticks=6)
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
    ax = with_segment_strip(fig, data, list(table.index), len(table.columns))
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
