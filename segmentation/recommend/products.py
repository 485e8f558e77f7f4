"""What counts as a product: the purchase lines of a transaction log with their product, non-products left out.

Takes the source's accepted lines per order and product (`validate.ledger_items`) and hands the other recommend
modules `Products`: one row per customer, order and product bought (returns out: a basket is what was bought),
each product's most frequent name, and what was left out and why (`recommend.exclude_products` patterns, codes
in more than `recommend.max_basket_share` of the baskets) for the manifest.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


@dataclass
class Products:
    """`purchases_df`: customer_id, order_key, date, product_id, quantity, value, the ledger's rows (an order's
    product comes in one, or in more on two days or under two names); `pairs_df`: customer_id, product_id, orders (distinct orders with it), quantity, value, one row per
    customer and product; `names_df`: product_id, product_name; `excluded`: the manifest's account of what was
    left out (lines, codes, the codes above the basket share). The pairs and names are checkpointed in the
    executors."""

    purchases_df: DataFrame
    pairs_df: DataFrame
    names_df: DataFrame
    excluded: dict[str, Any]


def pattern_match(product: Column, patterns: list[str]) -> Column:
    """True where the product code matches one of the shell-style `patterns` (`gift_0001_*`), case-sensitive."""
    if not patterns:
        return F.lit(False)
    return product.rlike("^(?:" + "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) + ")")


def excluded_codes(
    per_product: dict[str, tuple[int, int]], baskets: int, recommend_cfg: dict[str, Any]
) -> tuple[list[str], list[str], dict[str, Any]]:
    """From each code's (baskets, lines): the codes matching `exclude_products`, those in more than
    `max_basket_share` of the baskets (most common first) and the manifest's account."""
    patterns = recommend_cfg["exclude_products"]
    patterned = sorted(c for c in per_product if c and any(fnmatch.fnmatchcase(c, p) for p in patterns))
    limit = float(recommend_cfg["max_basket_share"]) * baskets
    common = sorted(
        (c for c in per_product if c and c not in patterned and per_product[c][0] > limit),
        key=lambda c: (-per_product[c][0], c),
    )
    excluded = {
        "returns_and_rejects": "not in baskets",
        "lines_without_product": per_product.get("", (0, 0))[1],
        "excluded_pattern_lines": sum(per_product[c][1] for c in patterned),
        "excluded_pattern_codes": len(patterned),
        "above_basket_share": common,
    }
    return patterned, common, excluded


def customer_products(purchases_df: DataFrame, *extra: Column) -> DataFrame:
    """One row per customer and product bought: orders (distinct orders with it), quantity, value (and the
    `extra` sums). Grouped where the rows are (purchases are partitioned by customer)."""
    return purchases_df.groupBy("customer_id", "product_id").agg(
        F.countDistinct("order_key").alias("orders"),
        F.sum("quantity").alias("quantity"),
        F.sum("value").alias("value"),
        *extra,
    )


def product_purchases(items_df: DataFrame, recommend_cfg: dict[str, Any]) -> Products:
    """The purchases (the ledger's rows) and their sums per customer and product, without returns, lines
    without a product and non-products. One grouping of the rows, per customer and product where the ledger's
    partitioning by customer already put them, serves everything else: the few rows per product code that the
    driver reads to decide what is not a product are summed from it."""
    bought = items_df.filter(~F.col("is_return")).select(
        "customer_id",
        "order_key",
        "date",
        F.coalesce(F.col("product_id"), F.lit("")).alias("product_id"),
        "quantity",
        F.col("value").cast("double").alias("value"),
        "lines",
    )
    # checkpointed: the rest plans over a short tree, not the whole run's
    every_pair = customer_products(bought, F.sum("lines").alias("lines")).localCheckpoint()
    per_product = {
        r["product_id"]: (int(r["baskets"]), int(r["lines"]))
        for r in every_pair.groupBy("product_id")
        .agg(F.sum("orders").alias("baskets"), F.sum("lines").alias("lines"))
        .collect()
    }
    baskets = bought.filter(F.col("product_id") != "").select("customer_id", "order_key").distinct().count()
    patterned, common, excluded = excluded_codes(per_product, baskets, recommend_cfg)
    if common:
        log.info(
            "products in more than %s of the baskets left out: %s", recommend_cfg["max_basket_share"], common
        )
    left_out = F.col("product_id").isin(["", *patterned, *common])
    purchases_df = bought.filter(~left_out).drop("lines")
    pairs_df = every_pair.filter(~left_out).drop("lines")
    names_df = (
        items_df.filter(F.col("product_name").isNotNull())
        .groupBy("product_id", "product_name")
        .agg(F.sum("lines").alias("lines"))
        .filter(~left_out)
        .groupBy("product_id")
        .agg(F.max(F.struct("lines", "product_name"))["product_name"].alias("product_name"))
        .localCheckpoint()
    )
    return Products(purchases_df, pairs_df, names_df, excluded)
