"""RFM scores beside the clusters: R, F, M scores 1-5 from global quantile breakpoints and the named RFM map.

Takes the per-customer features (customers with at least one purchase are scored; the others get nulls) and
hands the publish stage `r_score`, `f_score`, `m_score`, `rfm_score` ("545") and `rfm_segment`, plus the
breakpoints used (recorded in the manifest). Also holds the recommended marketing action for every RFM segment
and every KMeans segment name.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

QUANTILES = (0.2, 0.4, 0.6, 0.8)

#: The columns `with_rfm_scores` adds, in their published order.
RFM_SCORE_COLUMNS = ("r_score", "f_score", "m_score", "rfm_score", "rfm_segment")


#: Documented fallbacks when quantile breakpoints tie (fewer distinct values than bins). A score is
#: 1 + the number of breakpoints the value is above (recency: 5 - that number, recent is good).
FALLBACK_BREAKPOINTS = {
    # R5 <= 30 days, R4 31-90, R3 91-180, R2 181-365, R1 > 365
    "recency_days": [30.0, 90.0, 180.0, 365.0],
    # F1 1 order, F2 2, F3 3, F4 4-5, F5 6+
    "frequency": [1.0, 2.0, 3.0, 5.0],
}


#: The RFM segment map on (R, F) scores, first match; it covers all 25 cells exactly once.
RFM_SEGMENT_RULES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("Champions", (5,), (4, 5)),
    ("Loyal customers", (3, 4), (4, 5)),
    ("Potential loyalists", (4, 5), (2, 3)),
    ("New customers", (5,), (1,)),
    ("Promising", (4,), (1,)),
    ("Need attention", (3,), (3,)),
    ("About to sleep", (3,), (1, 2)),
    ("Can't lose them", (1, 2), (5,)),
    ("At risk", (1, 2), (3, 4)),
    ("Hibernating", (2,), (1, 2)),
    ("Lost", (1,), (1, 2)),
)


RFM_ACTIONS = {
    "Champions": "Reward them: early access, loyalty perks, referrals and reviews; no discounts needed.",
    "Loyal customers": "Upsell higher-value products, ask for reviews, enrol them in the loyalty programme.",
    "Potential loyalists": "Offer membership or loyalty programmes and personalised recommendations.",
    "New customers": "Onboard well: welcome series, first-repeat incentive, show the range.",
    "Promising": "Build awareness with brand content and a small offer for the second order.",
    "Need attention": "Time-limited, personalised offers based on past purchases to reactivate.",
    "About to sleep": "Reconnect with popular products and a discount before they lapse.",
    "Can't lose them": "Win them back personally: talk to them, strong offers, new versions of what they bought.",
    "At risk": "Personalised win-back e-mails with offers related to past purchases.",
    "Hibernating": "Low-cost reactivation: relevant products and special offers; do not over-spend.",
    "Lost": "Try one revival campaign; otherwise stop spending on them.",
}


#: Recommended action per KMeans segment name (see profile.segment_name for the naming rules).
SEGMENT_ACTIONS = {
    "Champions": "Keep them delighted: VIP treatment, early access, referral programme; avoid blanket discounts.",
    "Loyal": "Cross-sell and upsell; loyalty rewards to move them up to Champions.",
    "Big spenders": "High value but few orders: personal recommendations and bundles to buy more often.",
    "New": "Onboarding series and a second-order incentive while interest is fresh.",
    "Promising": "Recent but light buyers: recommendations and a nudge to order again.",
    "At risk": "Used to buy well, now quiet: personalised win-back offers before they churn.",
    "Hibernating": "Low value and long gone: occasional low-cost reactivation only.",
    "Needs attention": "Average customers slipping: targeted, time-limited offers to re-engage.",
    "Lapsed": "Bought more than once, then nothing for over a year: one strong win-back offer, then let go.",
    "Lost": "One order, over a year ago: at most one low-cost revival campaign; do not spend more.",
}


def segment_action(name: str) -> str:
    """The action for a KMeans segment name ("At risk (2)" and "Lost (high value)" share their base's action)."""
    base = name.split(" (")[0]
    return SEGMENT_ACTIONS.get(base, "Review the profile before acting.")


def _distinct_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def rfm_breakpoints(scored_df: DataFrame, relative_error: float = 1e-4) -> dict[str, dict[str, Any]]:
    """Breakpoints per feature: the 20/40/60/80% approxQuantiles, or the documented fallback when they tie."""
    features = ["recency_days", "frequency", "monetary"]
    quantiles = scored_df.approxQuantile(features, list(QUANTILES), relative_error)
    result: dict[str, dict[str, Any]] = {}
    for name, values in zip(features, quantiles):
        values = [float(v) for v in values]
        if len(values) == len(QUANTILES) and _distinct_increasing(values):
            result[name] = {"breakpoints": values, "method": "quantiles 0.2/0.4/0.6/0.8"}
        elif name in FALLBACK_BREAKPOINTS:
            result[name] = {
                "breakpoints": FALLBACK_BREAKPOINTS[name],
                "method": f"fallback (quantiles tie: {values})",
            }
        else:
            result[name] = _monetary_fallback(scored_df, name, values)
    return result


def _monetary_fallback(df: DataFrame, name: str, values: list[float]) -> dict[str, Any]:
    """Equal-width bins on log1p between the minimum and maximum; a single value scores 3 for everyone."""
    row = df.agg(F.min(name).alias("lo"), F.max(name).alias("hi")).first()
    lo, hi = max(float(row["lo"] or 0.0), 0.0), max(float(row["hi"] or 0.0), 0.0)
    if hi <= lo:
        return {"breakpoints": [], "method": f"fallback (single value {hi}: everyone scores 3)"}
    a, b = math.log1p(lo), math.log1p(hi)
    points = [math.expm1(a + (b - a) * i / 5) for i in range(1, 5)]
    return {"breakpoints": points, "method": f"fallback (quantiles tie: {values}): equal-width bins on log1p"}


def score_column(value: Column, breakpoints: list[float], higher_is_better: bool = True) -> Column:
    """1 + the number of breakpoints `value` is above (5 - that for lower-is-better); 3 without breakpoints."""
    if not breakpoints:
        return F.lit(3)
    above = sum((value > F.lit(b)).cast("int") for b in breakpoints)
    return (F.lit(1) + above) if higher_is_better else (F.lit(5) - above)


def rfm_segment_column(r: Column, f: Column) -> Column:
    """The named RFM segment of (R, F), first matching rule."""
    expr = None
    for name, r_values, f_values in RFM_SEGMENT_RULES:
        condition = r.isin(*r_values) & f.isin(*f_values)
        expr = F.when(condition, F.lit(name)) if expr is None else expr.when(condition, F.lit(name))
    return expr


def with_rfm_scores(customers_df: DataFrame, breakpoints: dict[str, dict[str, Any]]) -> DataFrame:
    """Add r/f/m scores, `rfm_score` and `rfm_segment` for customers with a purchase; nulls for the others."""
    has_purchase = F.col("frequency") > 0
    r = F.when(
        has_purchase, score_column(F.col("recency_days"), breakpoints["recency_days"]["breakpoints"], False)
    )
    f = F.when(has_purchase, score_column(F.col("frequency"), breakpoints["frequency"]["breakpoints"]))
    m = F.when(has_purchase, score_column(F.col("monetary"), breakpoints["monetary"]["breakpoints"]))
    scored = customers_df.withColumns(
        {"r_score": r.cast("int"), "f_score": f.cast("int"), "m_score": m.cast("int")}
    )
    return scored.withColumns(
        {
            "rfm_score": F.concat(
                F.col("r_score").cast("string"),
                F.col("f_score").cast("string"),
                F.col("m_score").cast("string"),
            ),
            "rfm_segment": rfm_segment_column(F.col("r_score"), F.col("f_score")),
        }
    )


def rfm_segment_profiles(scored_df: DataFrame) -> DataFrame:
    """One row per RFM segment present: customers, shares, mean R/F/M features and the recommended action."""
    purchasers = scored_df.filter(F.col("rfm_segment").isNotNull())
    totals = purchasers.agg(F.count(F.lit(1)).alias("n"), F.sum("monetary").alias("revenue")).first()
    order = F.create_map(*[F.lit(v) for i, rule in enumerate(RFM_SEGMENT_RULES) for v in (rule[0], i)])
    actions = F.create_map(*[F.lit(v) for pair in RFM_ACTIONS.items() for v in pair])
    n, revenue = int(totals["n"] or 0), float(totals["revenue"] or 0.0)
    return (
        purchasers.groupBy("rfm_segment")
        .agg(
            F.count(F.lit(1)).alias("customers"),
            F.sum("monetary").alias("revenue"),
            F.avg("recency_days").alias("mean_recency_days"),
            F.avg("frequency").alias("mean_frequency"),
            F.avg("monetary").alias("mean_monetary"),
        )
        .withColumns(
            {
                "share_customers": F.col("customers") / F.lit(n) if n else F.lit(0.0),
                "share_revenue": F.col("revenue") / F.lit(revenue) if revenue else F.lit(0.0),
                "action": actions[F.col("rfm_segment")],
                "_order": order[F.col("rfm_segment")],
            }
        )
        .orderBy("_order")
        .drop("_order")
    )
