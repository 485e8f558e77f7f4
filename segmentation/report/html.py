"""The report's HTML: a run's figures and tables rendered by the Jinja2 templates in `templates/`.

Takes a `ReportData` (`report.data`) and writes `report.html` with the PNG files beside it: every figure is
embedded as a PNG data URI, the CSS is inline, there are no scripts and nothing is fetched from the network.
The templates hold the page (sections, prose, markup); this module formats the cells. Everything is
autoescaped with the standard library's `html.escape`; a cell that holds markup is built by `cell`, which
escapes its values.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from matplotlib.figure import Figure

from segmentation.config import FEATURE_COLUMNS
from segmentation.features.rfm import EXCLUDED_REASONS
from segmentation.report.data import FIGURES, ReportData, rfm_segment_summary, segment_colour
from segmentation.report.distributions import (
    figure_feature_distributions,
    figure_pair_plot,
    figure_rfm_grid,
    figure_scatter_frequency_monetary,
    figure_scatter_recency_monetary,
    figure_segment_rfm_crosstab,
)
from segmentation.report.figures import (
    excluded_note,
    figure_customer_scatter,
    figure_customer_sizes,
    figure_elbow,
    figure_profile_heatmap,
    figure_segment_sizes,
    figure_silhouette,
    png_size,
    render_png,
    sample_note,
)
from segmentation.report.formatting import (
    escape,
    fmt_count,
    fmt_number,
    fmt_share,
    rfm_breakpoint_list,
    score_ranges,
    typical_customer,
)
from segmentation.report.offers import offers_view

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


#: What each `excluded_reason` means, in the report's words.
EXCLUDED_WORDS = {
    "no_purchases": "no purchases",
    "non_positive_monetary": "no positive net spend",
    "no_demographics": "no demographics row",
    "outlier": "outliers (a cluster below model.min_cluster_share)",
    "noise": "noise to the density method",
}


def _escaped(value: Any) -> Markup:
    """Every value a template outputs, escaped by `html.escape` (a Markup value is already safe)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


_TEMPLATES = Environment(
    loader=PackageLoader("segmentation.report", "templates"),
    autoescape=True,
    finalize=_escaped,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=StrictUndefined,
)


def cell(markup: str, *values: Any) -> Markup:
    """A cell holding markup: `markup` with `{}` filled by the escaped `values`."""
    return Markup(markup.format(*(_escaped(v) for v in values)))


def _swatch(sid: int) -> Markup:
    return Markup(f'<span class="swatch" style="background:{segment_colour(sid)}"></span>')


def _figure(file_name: str, png: bytes, title: str, caption: str) -> dict[str, Any]:
    """What the `figure` macro shows of one PNG: its data URI, size, title and caption (Markup)."""
    width, height = png_size(png)
    return {
        "id": file_name[:-4],
        "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "width": width,
        "height": height,
        "file": file_name,
        "title": title,
        "caption": Markup(caption),
    }


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(float(value), spec)


def _bold_if(chosen: bool, k: Any) -> Markup | str:
    return cell("<b>{}</b>", int(k)) if chosen else str(int(k))


def _k_rows(data: ReportData) -> list[list[Any]]:
    return [
        [
            _bold_if(e.get("chosen"), e["k"]),
            f"{float(e['wcss']):,.1f}",
            _num(e.get("silhouette"), ".3f"),
            _num(e.get("calinski_harabasz"), ",.1f"),
            _num(e.get("davies_bouldin"), ".3f"),
            _num(e.get("smallest_cluster_share"), ".1%"),
            _num(e.get("stability"), ".3f"),
            e.get("vetoes") or "",
            Markup("<b>chosen</b>") if e.get("chosen") else "",
        ]
        for e in data.elbow
    ]


def comparison_html(manifest: dict[str, Any]) -> str:
    """`model.compare`: each method's choice, and per method and k the separation metrics and sizes."""
    comparison = manifest.get("comparison")
    if not comparison:
        return ""
    choices = [
        [method, c["chosen_k"], "yes" if c["clear_structure"] else "no", c["reason"]]
        for method, c in comparison["methods"].items()
    ]
    rows = [
        [
            r["method"],
            _bold_if(r["chosen"], r["k"]),
            _num(r["silhouette"], ".3f"),
            _num(r["calinski_harabasz"], ",.1f"),
            _num(r["davies_bouldin"], ".3f"),
            _num(r["smallest_cluster_share"], ".1%"),
            _num(r["stability"], ".3f"),
            ", ".join(f"{int(n):,}" for n in r["cluster_sizes"]),
            r["vetoes"] or "",
        ]
        for r in comparison["rows"]
    ]
    page = _TEMPLATES.get_template("comparison.html.j2")
    return page.render(method=manifest.get("method", "kmeans"), choices=choices, rows=rows)


def _counts(counts: dict[str, Any]) -> Markup | str:
    return Markup(", ".join(f"{int(n):,} {escape(r)}" for r, n in counts.items())) if counts else "none"


def _summary_items(data: ReportData) -> list[tuple[str, Any]]:
    """Run summary: rows in and out, customers, the chosen k and why, timings."""
    m = data.manifest
    rejected = m.get("rejected_rows") or {}
    items: list[tuple[str, Any]] = [
        ("Snapshot date", m.get("snapshot_date", "n/a")),
        ("Input rows", Markup(fmt_count(m.get("input_rows", "n/a")))),
        ("Accepted rows", Markup(fmt_count(m.get("accepted_rows", "n/a")))),
        ("Rejected rows", f"{sum(int(v) for v in rejected.values()):,}"),
        ("Customers", Markup(fmt_count(m.get("customers", data.customers)))),
        ("Clustered customers", Markup(fmt_count(m.get("clustered_customers", data.clustered)))),
        ("Not clustered", _counts(m.get("excluded_customers") or {})),
        ("Chosen k", m.get("chosen_k", "n/a")),
        ("Why this k", m.get("chosen_k_reason", "n/a")),
    ]
    if m.get("clear_structure") is not None:
        items.append(("Clear cluster structure", "yes" if m["clear_structure"] else Markup("<b>no</b>")))
    if m.get("features"):
        items.append(("Model features", ", ".join(map(str, m["features"]))))
    timings = m.get("timings_s") or {}
    if timings:
        stages = ", ".join(f"{k} {float(v):,.1f} s" for k, v in timings.items() if k != "total")
        total = f"{float(timings['total']):,.1f} s" if "total" in timings else ""
        items.append(("Run time", f"{total} ({stages})" if total and stages else total or stages))
    return items


def _rejected_rows(manifest: dict[str, Any]) -> list[list[Any]]:
    input_rows = int(manifest.get("input_rows") or 0)
    return [
        [
            cell("<code>{}</code>", r),
            Markup(fmt_count(n)),
            Markup(fmt_share(int(n) / input_rows)) if input_rows else "n/a",
        ]
        for r, n in (manifest.get("rejected_rows") or {}).items()
    ]


def _glance_rows(data: ReportData) -> list[list[Any]]:
    """The headline table a marketer reads first: who the segments are, how big, and what to do."""
    return [
        [
            _swatch(int(p["segment_id"])) + data.labels[int(p["segment_id"])],
            Markup(fmt_count(p["customers"])),
            f"{float(p['share_customers']):.1%}",
            f"{float(p['share_revenue']):.1%}",
            typical_customer(p, data.currency),
            p.get("action", ""),
        ]
        for p in data.profiles
    ]


def _rfm_view(data: ReportData) -> dict[str, Any]:
    """The score ranges of R, F and M (from the manifest's breakpoints) and the RFM segments with actions."""
    breakpoints = data.manifest.get("rfm_breakpoints") or {}
    ranges, notes = {}, []
    for feature, higher_is_better, integer in (
        ("recency_days", False, True),
        ("frequency", True, True),
        ("monetary", True, False),
    ):
        bps, note = rfm_breakpoint_list(breakpoints.get(feature))
        ranges[feature] = score_ranges(bps, higher_is_better, integer)
        if note:
            notes.append(f"{feature}: {note}")
    score_rows = [
        [str(s), *(Markup(ranges[f][s]) for f in ("recency_days", "frequency", "monetary"))]
        for s in range(5, 0, -1)
    ]
    segment_rows = [
        [
            r.rfm_segment,
            Markup(fmt_count(r.customers)),
            f"{r.share_customers:.1%}",
            f"{r.share_revenue:.1%}",
            r.action,
        ]
        for r in rfm_segment_summary(data).itertuples(index=False)
    ]
    return {"score_rows": score_rows, "breakpoint_notes": notes, "rfm_segment_rows": segment_rows}


def _details(data: ReportData) -> dict[str, Any]:
    """Per-segment profile table: name, description, size, revenue, median / mean of each feature, action."""
    # gross is monetary + returns (net mode); it stays in the heatmap, here it would only widen the table
    features = ["recency_days", "frequency", "tenure_days", "monetary", "avg_order_value", "returns"]
    short = {
        "recency_days": Markup("Recency<br><small>days</small>"),
        "frequency": Markup("Frequency<br><small>orders</small>"),
        "tenure_days": Markup("Tenure<br><small>days</small>"),
        "monetary": "Monetary",
        "avg_order_value": "Avg order value",
        "returns": "Returns",
    }
    centres = [f for f in FEATURE_COLUMNS if any(f"center_{f}" in p for p in data.profiles)]
    header: list[Any] = ["Segment", "Customers", "Revenue"] + [short[f] for f in features]
    if centres:
        header.append(
            cell("KMeans centre<br><small>{}</small>", ", ".join(c.replace("_days", "") for c in centres))
        )
    header.append("Recommended action")
    rows = []
    for p in data.profiles:
        sid = int(p["segment_id"])
        name = _swatch(sid) + cell("<b>{}</b>", data.labels[sid])
        if p.get("description"):
            name += cell("<br><small>{}</small>", p["description"])
        row = [
            name,
            cell(
                "{}<br><small>{}</small>",
                Markup(fmt_count(p["customers"])),
                f"{float(p['share_customers']):.1%}",
            ),
            cell(
                "{}<br><small>{}</small>", f"{float(p['revenue']):,.0f}", f"{float(p['share_revenue']):.1%}"
            ),
        ]
        row += [
            cell("{}<br><small>{}</small>", fmt_number(p.get(f"median_{f}")), fmt_number(p.get(f"mean_{f}")))
            for f in features
        ]
        if centres:
            row.append(
                Markup("<br>".join(fmt_number(p[f"center_{f}"]) for f in centres if f"center_{f}" in p))
            )
        row.append(p.get("action", ""))
        rows.append(row)
    return {"header": header, "rows": rows, "numeric": tuple(range(1, len(header) - 1))}


def render_html(data: ReportData, images: dict[str, bytes]) -> str:
    """The self-contained report of a transaction log: tables and the given PNGs (file name -> bytes)."""
    m = data.manifest
    titles, captions = dict(FIGURES), _captions(data)
    figures = {name: _figure(name, png, titles[name], captions[name]) for name, png in images.items()}
    excluded = None
    if data.excluded:
        reasons = [r for r in EXCLUDED_REASONS if r in data.excluded] + sorted(
            set(data.excluded) - set(EXCLUDED_REASONS)
        )
        excluded = {
            "total": f"{sum(data.excluded.values()):,}",
            "listed": _counts({r: data.excluded[r] for r in reasons}),
            "why": "; ".join(EXCLUDED_WORDS.get(r, r) for r in reasons),
        }
    return _TEMPLATES.get_template("report.html.j2").render(
        m=m,
        snapshot=m.get("snapshot_date", "unknown date"),
        profiles=data.profiles,
        customers=f"{data.customers:,}",
        clustered=f"{data.clustered:,}",
        max_points=f"{data.max_points:,}",
        currency=data.currency,
        sample_note=sample_note(data),
        glance_rows=_glance_rows(data),
        excluded=excluded,
        summary_items=_summary_items(data),
        rejected_rows=_rejected_rows(m),
        figures=figures,
        k_intro=True,
        k_rows=_k_rows(data),
        comparison=Markup(comparison_html(m)),
        details=_details(data),
        offers=offers_view(data.offers, data.labels, m),
        **_rfm_view(data),
    )


def _captions(data: ReportData) -> dict[str, str]:
    """Figure captions (HTML-escaped) saying what to read from each figure and what is left out."""
    note = escape(excluded_note(data))
    sample = escape(sample_note(data))
    return {
        "elbow.png": "Within-cluster sum of squares falls as k grows; the chosen k (red) is where adding "
        "segments stops paying off (the knee, farthest below the dotted chord) or as configured.",
        "silhouette.png": "How well separated the segments are for each k (1 = perfectly, 0 = overlapping); "
        "a cross-check of the elbow choice.",
        "segment_sizes.png": f"Left: how many customers each segment holds; right: its share of revenue "
        f"(sum of monetary). A small segment with a large revenue share deserves most care. {note}.",
        "profile_heatmap.png": "Each cell shows the segment's mean in real units (days, orders, "
        f"{escape(data.currency)}); red = above the average clustered customer, blue = below (z-score of the mean). "
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
    A customer table's report (`data.kind` "customers") has its own figures and profile table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builders = _FIGURE_BUILDERS if data.kind != "customers" else _customer_builders(data)
    images: dict[str, bytes] = {}
    written: list[Path] = []
    for name, build in builders.items():
        images[name] = render_png(build, data)
        path = out / name
        path.write_bytes(images[name])
        written.append(path)
    report = out / "report.html"
    page = render_html(data, images) if data.kind != "customers" else _customer_html(data, images)
    report.write_text(page, encoding="utf-8")
    written.append(report)
    return written


def _customer_builders(data: ReportData) -> dict[str, Callable[[ReportData], Figure]]:
    builders: dict[str, Callable[[ReportData], Figure]] = {
        "elbow.png": figure_elbow,
        "silhouette.png": figure_silhouette,
        "segment_sizes.png": figure_customer_sizes,
    }
    if len(data.axes) == 2:
        builders["scatter.png"] = lambda d: figure_customer_scatter(d, d.axes[0], d.axes[1])
    return builders


def _customer_html(data: ReportData, images: dict[str, bytes]) -> str:
    """The report of a customer table: the choice of k, segment sizes, the scatter of the first two numeric
    model features and the profile table."""
    m, axes, profiles = data.manifest, data.axes, data.profiles
    titles = {
        "elbow.png": ("Elbow curve: within-cluster sum of squares by k", "The chosen k is marked."),
        "silhouette.png": ("Silhouette by k", "Higher is better separated."),
        "segment_sizes.png": ("Segment sizes", "Share of the clustered customers."),
        "scatter.png": (
            f"{axes[0]} vs {axes[1]}" if len(axes) == 2 else "",
            f"A seeded sample of {len(data.sample):,} clustered customers, coloured by segment.",
        ),
    }
    figures = {
        name: _figure(name, png, titles[name][0], escape(titles[name][1])) for name, png in images.items()
    }
    summary = [
        ("Input", m.get("input_path")),
        ("Input rows", Markup(fmt_count(m["input_rows"]))),
        ("Rejected rows", _counts(m.get("rejected_rows") or {})),
        ("Customers", Markup(fmt_count(m["customers"]))),
        ("Clustered customers", Markup(fmt_count(m["clustered_customers"]))),
        ("Not clustered", _counts(m.get("excluded_customers") or {})),
        ("Model features", ", ".join(m["features"])),
        ("Chosen k", m["chosen_k"]),
        ("Why this k", m["chosen_k_reason"]),
        ("Clear cluster structure", "yes" if m.get("clear_structure") else Markup("<b>no</b>")),
    ]
    numeric_cols = [k[len("mean_") :] for k in profiles[0] if k.startswith("mean_")]
    share_cols = [k for k in profiles[0] if k.startswith("share_") and "=" in k]
    rows = [
        [
            _swatch(int(p["segment_id"])) + f" {int(p['segment_id'])}",
            p["segment_name"],
            Markup(fmt_count(p["customers"])),
            Markup(fmt_share(p["share_customers"])),
            *[fmt_number(p[f"mean_{f}"]) for f in numeric_cols],
            *[Markup(fmt_share(p[c])) for c in share_cols],
            p["description"],
        ]
        for p in profiles
    ]
    header = [
        "id",
        "segment",
        "customers",
        "share",
        *[f"mean {f}" for f in numeric_cols],
        *[c[len("share_") :] for c in share_cols],
        "description",
    ]
    return _TEMPLATES.get_template("customers.html.j2").render(
        m=m,
        snapshot=m["snapshot_date"],
        summary_items=summary,
        figures=figures,
        k_intro=False,
        k_rows=_k_rows(data),
        comparison=Markup(comparison_html(m)),
        profile_header=header,
        profile_rows=rows,
        profile_numeric=tuple(range(2, 4 + len(numeric_cols) + len(share_cols))),
    )
