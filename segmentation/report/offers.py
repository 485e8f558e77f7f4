"""The report's "What to offer" section: per segment its top products and strongest basket rules, and the
recommendations' evaluation against popularity (by how much ALS beats global-popular, or that it does not).

Takes the recommend stage's tables (reduced here to a few rows per segment, in Spark) and hands the HTML
template plain rows; nothing is drawn when the run had no product data (the section then says why).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from markupsafe import Markup
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segmentation.report.formatting import fmt_count

#: Rows per segment in the report (the tables hold more).
SHOWN = 5

METHOD_WORDS = {
    "als": "ALS (collaborative filtering)",
    "segment_popular": "Most popular in the segment",
    "global_popular": "Most popular overall",
}


def _top(df: DataFrame, order: list, n: int = SHOWN) -> pd.DataFrame:
    ranked = Window.partitionBy("segment_id").orderBy(*order)
    return df.withColumn("_n", F.row_number().over(ranked)).filter(F.col("_n") <= n).drop("_n").toPandas()


def collect_offers(tables: dict[str, DataFrame]) -> dict[str, pd.DataFrame]:
    """The few rows of each recommend table the report shows (empty when the run had none)."""
    if not tables:
        return {}
    offers = {
        "products": _top(tables["segment_products"].drop("run_id"), [F.col("rank")]),
        "rules": _top(
            tables["basket_rules"].select(
                "segment_id", "antecedent_names", "consequent_names", "support", "confidence", "lift"
            ),
            [F.desc("lift"), F.desc("confidence")],
        ),
    }
    if "recommendation_eval" in tables:
        offers["evaluation"] = tables["recommendation_eval"].drop("run_id").toPandas()
    return offers


def _segment_key(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def offers_view(
    offers: dict[str, pd.DataFrame], labels: dict[int, str], manifest: dict[str, Any]
) -> dict[str, Any]:
    """What the template needs: per segment (and all customers) products and rules rows, the evaluation table
    and its headline sentence; `reason` when there is nothing to show."""
    entry = manifest.get("recommend") or {}
    if not offers:
        return {"reason": entry.get("reason", "no product data")}
    products, rules = offers["products"], offers["rules"]
    segments = []
    for key, label in [(None, "All customers"), *sorted(labels.items())]:
        shown_products = [
            [
                r.product_name or r.product_id,
                r.product_id,
                fmt_count(r.customers),
                f"{r.support:.1%}",
                f"{r.lift:.1f}",
            ]
            for r in products.itertuples()
            if _segment_key(r.segment_id) == key
        ]
        shown_rules = [
            [
                ", ".join(r.antecedent_names),
                ", ".join(r.consequent_names),
                f"{r.support:.1%}",
                f"{r.confidence:.0%}",
                f"{r.lift:.1f}",
            ]
            for r in rules.itertuples()
            if _segment_key(r.segment_id) == key
        ]
        if shown_products or shown_rules or key is not None:
            segments.append({"label": label, "products": shown_products, "rules": shown_rules})
    view: dict[str, Any] = {
        "reason": None,
        "headline": None,
        "evaluation_header": [],
        "evaluation_rows": [],
        "segments": segments,
        "products_header": ["Product", "Code", "Buyers", "Share of segment", "Lift"],
        "rules_header": ["Bought", "Then also", "Support", "Confidence", "Lift"],
        "excluded": entry.get("excluded", {}),
    }
    evaluation = offers.get("evaluation")
    headline = entry.get("evaluation") or {}
    if evaluation is not None and not evaluation.empty:
        view["evaluation_header"] = [
            "Segment",
            "Method",
            "Customers",
            "Precision@k",
            "Recall@k",
            "NDCG@k",
            "MAP",
        ]
        view["evaluation_rows"] = [
            [
                "All customers"
                if _segment_key(r.segment_id) is None
                else labels.get(int(r.segment_id), r.segment_name),
                METHOD_WORDS.get(r.method, r.method),
                fmt_count(r.customers),
                *[
                    ("" if pd.isna(v) else f"{v:.4f}")
                    for v in (r.precision_at_k, r.recall_at_k, r.ndcg_at_k, r.map)
                ],
            ]
            for r in evaluation.itertuples()
        ]
        view["headline"] = evaluation_sentence(headline)
    elif headline.get("skipped"):
        view["headline"] = f"Not evaluated: {headline['skipped']}."
    return view


def evaluation_sentence(headline: dict[str, Any]) -> Markup | str:
    """One sentence: ALS's precision@k against global-popular's, as a ratio, whichever way it falls."""
    overall = headline.get("overall") or {}
    if not headline.get("customers") or "als" not in overall:
        return "No customer bought a new product after the cutoff: nothing to evaluate."
    k = headline["k"]
    als, base = overall["als"]["precision_at_k"], overall["global_popular"]["precision_at_k"]
    words = (
        f"Trained on the lines before {headline['train_cutoff']} and tested on the new products "
        f"{fmt_count(headline['customers'])} customers bought after it, ALS's precision@{k} is {als:.4f} "
        f"against {base:.4f} for the most popular products overall"
    )
    if base and als > base:
        return Markup("{}: <b>{:.1f}x</b> as many hits.").format(words, als / base)
    return Markup("{}: <b>ALS does not beat popularity here</b>; use the segment's popular products.").format(
        words
    )
