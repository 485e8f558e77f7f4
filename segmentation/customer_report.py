"""Report stage for a customer-level table (`input.kind: customers`): the choice of k, segment sizes, a
scatter plot of the first two numeric model features and the profile table.

The same self-contained HTML as the transaction report (figures embedded as PNG data URIs, inline CSS, no
scripts) and the same figures for the choice of k; the RFM figures do not apply. Only aggregates and a
seeded sample of at most `max_points` clustered customers reach the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.report import (
    _CSS,
    ReportData,
    _count,
    _e,
    _figure_html,
    _k_table,
    _number,
    _share,
    _swatch,
    _table,
    comparison_html,
    figure_elbow,
    figure_silhouette,
    render_png,
    sample_customers,
    segment_colour,
)


def _data(
    elbow: list[dict], profiles: list[dict], manifest: dict, sample: pd.DataFrame, seed: int
) -> ReportData:
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
    )


def _sizes_figure(data: ReportData) -> Figure:
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


def _scatter_figure(data: ReportData, x: str, y: str) -> Figure:
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


def write_customer_report(
    segments_df: DataFrame,
    elbow: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    manifest: dict[str, Any],
    numeric_features: list[str],
    out_dir: str | Path,
    seed: int = 42,
    max_points: int = 50_000,
) -> list[Path]:
    """Write the PNGs and `report.html` into a local directory; returns the paths, report.html last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    axes = numeric_features[:2]
    sample = pd.DataFrame(columns=["customer_id", "segment_id", *axes])
    if len(axes) == 2:
        clustered_df = segments_df.filter(F.col("segment_id").isNotNull())
        sample = sample_customers(
            clustered_df, int(manifest["clustered_customers"]), max_points, seed, ["segment_id", *axes]
        )
    data = _data(elbow, profiles, manifest, sample, seed)
    builders = {
        "elbow.png": figure_elbow,
        "silhouette.png": figure_silhouette,
        "segment_sizes.png": _sizes_figure,
    }
    if len(axes) == 2:
        builders["scatter.png"] = lambda d: _scatter_figure(d, axes[0], axes[1])
    titles = {
        "elbow.png": ("Elbow curve: within-cluster sum of squares by k", "The chosen k is marked."),
        "silhouette.png": ("Silhouette by k", "Higher is better separated."),
        "segment_sizes.png": ("Segment sizes", "Share of the clustered customers."),
        "scatter.png": (
            f"{axes[0]} vs {axes[1]}" if len(axes) == 2 else "",
            f"A seeded sample of {len(sample):,} clustered customers, coloured by segment.",
        ),
    }
    written, figures = [], {}
    for name, build in builders.items():
        png = render_png(build, data)
        (out / name).write_bytes(png)
        written.append(out / name)
        figures[name] = _figure_html(name, png, titles[name][0], _e(titles[name][1]))
    m = manifest
    rejected = m.get("rejected_rows") or {}
    summary = [
        ("Input", _e(m.get("input_path"))),
        ("Input rows", _count(m["input_rows"])),
        ("Rejected rows", ", ".join(f"{int(n):,} {_e(r)}" for r, n in rejected.items()) or "none"),
        ("Customers", _count(m["customers"])),
        ("Clustered customers", _count(m["clustered_customers"])),
        (
            "Not clustered",
            ", ".join(f"{int(n):,} {_e(r)}" for r, n in (m.get("excluded_customers") or {}).items())
            or "none",
        ),
        ("Model features", _e(", ".join(m["features"]))),
        ("Chosen k", _e(m["chosen_k"])),
        ("Why this k", _e(m["chosen_k_reason"])),
        ("Clear cluster structure", "yes" if m.get("clear_structure") else "<b>no</b>"),
    ]
    numeric_cols = [k[len("mean_") :] for k in profiles[0] if k.startswith("mean_")]
    share_cols = [k for k in profiles[0] if k.startswith("share_") and "=" in k]
    profile_rows = [
        [
            f"{_swatch(int(p['segment_id']))} {int(p['segment_id'])}",
            _e(p["segment_name"]),
            _count(p["customers"]),
            _share(p["share_customers"]),
            *[_number(p[f"mean_{f}"]) for f in numeric_cols],
            *[_share(p[c]) for c in share_cols],
            _e(p["description"]),
        ]
        for p in profiles
    ]
    header = [
        "id",
        "segment",
        "customers",
        "share",
        *[f"mean {_e(f)}" for f in numeric_cols],
        *[_e(c[len("share_") :]) for c in share_cols],
        "description",
    ]
    numeric_idx = range(2, 4 + len(numeric_cols) + len(share_cols))
    body = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Customer segments</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Customer segments, snapshot {_e(m['snapshot_date'])}</h1>",
        '<h2 id="summary">Run summary</h2>',
        '<dl class="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in summary) + "</dl>",
        '<h2 id="k">Choosing k</h2>',
        f"<p>Chosen k = <b>{_e(m['chosen_k'])}</b>: {_e(m['chosen_k_reason'])}.</p>",
        figures["elbow.png"],
        figures["silhouette.png"],
        _k_table(data),
        *comparison_html(m),
        '<h2 id="sizes">Segment sizes</h2>',
        figures["segment_sizes.png"],
    ]
    if "scatter.png" in figures:
        body += ['<h2 id="scatter">Customers by segment</h2>', figures["scatter.png"]]
    body += [
        '<h2 id="profiles">Segment profiles</h2>',
        _table(header, profile_rows, numeric_idx),
        "</main></body></html>",
    ]
    report = out / "report.html"
    report.write_text("\n".join(body), encoding="utf-8")
    written.append(report)
    return written
