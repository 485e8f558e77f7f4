"""Segment products: what a segment buys more than everyone does (lift), and what it buys most (popularity).

Takes `products.Products.pairs_df` (one row per customer and product bought) and the customers' segments (`customer_id`, `segment_id`,
`segment_name`; clustered customers only) and hands on the `segment_products` table and the popularity lists
that the recommendations fall back on and the evaluation compares with. One aggregation over the pairs for
every segment at once; no loop over segments.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def buyers(pairs_df: DataFrame, segment_of_df: DataFrame) -> DataFrame:
    """Per segment and product: buying customers and revenue (clustered customers only), from the customer x
    product pairs (`products.Products.pairs_df`: one row per buyer, so a count, not a distinct count)."""
    return (
        pairs_df.join(segment_of_df, "customer_id")
        .groupBy("segment_id", "product_id")
        .agg(F.count(F.lit(1)).alias("customers"), F.sum("value").alias("revenue"))
    )


def segment_products(
    pairs_df: DataFrame, segment_of_df: DataFrame, names_df: DataFrame, cfg: dict[str, Any]
) -> DataFrame:
    """The `segment_products` table: per segment, the `segment_products.top` products by lift among those
    with at least `min_customers` buyers in it and bought by at least `min_support` of it. support = buyers in the segment / its customers; overall_support
    = buyers among all clustered customers / clustered customers; lift = support / overall_support."""
    listed = cfg["segment_products"]
    top, min_customers = int(listed["top"]), int(listed["min_customers"])
    sizes = segment_of_df.groupBy("segment_id", "segment_name").agg(
        F.count(F.lit(1)).alias("segment_customers")
    )
    per_segment = buyers(pairs_df, segment_of_df)
    overall = per_segment.groupBy("product_id").agg(F.sum("customers").alias("_all_buyers"))
    total = segment_of_df.count()
    ranked = Window.partitionBy("segment_id").orderBy(F.desc("lift"), F.desc("customers"), "product_id")
    return (
        per_segment.filter(F.col("customers") >= min_customers)
        .join(overall, "product_id")
        .join(F.broadcast(sizes), "segment_id")
        .withColumns(
            {
                "support": F.col("customers") / F.col("segment_customers"),
                "overall_support": F.col("_all_buyers") / F.lit(float(total)),
            }
        )
        .filter(F.col("support") >= F.lit(float(listed["min_support"])))
        .withColumn("lift", F.col("support") / F.col("overall_support"))
        .withColumn("rank", F.row_number().over(ranked))
        .filter(F.col("rank") <= top)
        .join(names_df, "product_id", "left")
        .select(
            F.col("segment_id").cast("int"),
            "segment_name",
            F.col("rank").cast("int"),
            "product_id",
            "product_name",
            F.col("customers").cast("long"),
            F.col("segment_customers").cast("long"),
            "support",
            "overall_support",
            "lift",
            F.col("revenue").cast("double"),
        )
    )


def popular(pairs_df: DataFrame, segment_of_df: DataFrame | None, length: int) -> DataFrame:
    """The `length` products with the most buyers, per segment (`segment_of_df` given) or over everyone who
    bought: `segment_id` (null over everyone), `popular` = array of (product_id, score = share of buyers),
    best first."""
    if segment_of_df is None:
        counts = pairs_df.groupBy("product_id").agg(F.count(F.lit(1)).alias("customers"))
        buying = pairs_df.select("customer_id").distinct().count()
        # one list: the top `length` by a sort and limit (a window over no partition would say it moves all
        # rows to one partition, which the limit does anyway), ranked in the list
        top = counts.orderBy(F.desc("customers"), "product_id").limit(length)
        ranked_rows = top.withColumns(
            {"segment_id": F.lit(None).cast("int"), "_n": F.lit(buying), "_rank": -F.col("customers")}
        )
    else:
        sizes = segment_of_df.groupBy("segment_id").agg(F.count(F.lit(1)).alias("_n"))
        counts = buyers(pairs_df, segment_of_df).join(F.broadcast(sizes), "segment_id")
        ranked = Window.partitionBy("segment_id").orderBy(F.desc("customers"), "product_id")
        ranked_rows = counts.withColumn("_rank", F.row_number().over(ranked)).filter(F.col("_rank") <= length)
    return (
        ranked_rows.groupBy("segment_id")
        .agg(
            F.sort_array(
                F.collect_list(
                    F.struct(
                        F.col("_rank").alias("rank"),
                        F.col("product_id"),
                        (F.col("customers") / F.col("_n")).cast("double").alias("score"),
                    )
                )
            ).alias("_ranked")
        )
        .select(
            F.col("segment_id").cast("int"),
            F.transform(
                "_ranked", lambda r: F.struct(r["product_id"].alias("product_id"), r["score"].alias("score"))
            ).alias("popular"),
        )
    )
