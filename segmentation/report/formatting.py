"""Number and text formatting shared by the report's figures and its HTML."""

from __future__ import annotations

import html
import math
from typing import Any


def fmt_number(v: Any) -> str:
    """A mean or median for a table cell: thousands separators, fewer decimals the bigger the value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    v = float(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_count(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return escape(v)


def fmt_share(x: float) -> str:
    return "&lt;0.01%" if 0 < x < 0.0001 else f"{x:.2%}" if x < 0.01 else f"{x:.1%}"


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def typical_customer(p: dict[str, Any], currency: str) -> str:
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


def rfm_breakpoint_list(value: Any) -> tuple[list[float], str]:
    """Breakpoints and a note from either {"breakpoints": [...], "method"/"fallback": ...} or a plain list."""
    if isinstance(value, dict):
        note = value.get("method") or value.get("fallback") or ""
        return [float(b) for b in value.get("breakpoints") or []], str(note)
    if isinstance(value, (list, tuple)):
        return [float(b) for b in value], ""
    return [], ""


def score_ranges(bps: list[float], higher_is_better: bool, integer: bool) -> dict[int, str]:
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
