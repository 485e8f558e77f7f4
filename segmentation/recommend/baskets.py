"""Basket rules: Spark ML FPGrowth on each segment's baskets and on everyone's, strongest rules kept.

Takes `products.Products.purchases_df` (one basket = one order, items unique, returns and rejects out) and
the customers' segments, and hands on the `basket_rules` table. A set of baskets gets one FPGrowth fit (a Spark
job, not a loop over rows); an itemset needs `max(min_support, min_baskets / baskets, f / baskets)` of the set's
baskets, f the baskets of its `max_items`-th most frequent product: a small segment's rules rest on at least
`min_baskets` orders, and at most `max_items` products are frequent in any set, so the mining time stays bounded
on dense baskets (wholesalers' orders of hundreds of products) and large logs alike. A set with fewer than `min_baskets` baskets
of two or more items has no rules.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.ml.fpm import FPGrowth
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.io import local_dataframe

log = logging.getLogger(__name__)

#: The `segment_name` of the rules over every customer's baskets (their `segment_id` is null).
ALL_CUSTOMERS = "All customers"

RULES_SCHEMA = T.StructType(
    [
        T.StructField("segment_id", T.IntegerType()),
        T.StructField("segment_name", T.StringType()),
        T.StructField("antecedent", T.ArrayType(T.StringType())),
        T.StructField("consequent", T.ArrayType(T.StringType())),
        T.StructField("antecedent_names", T.ArrayType(T.StringType())),
        T.StructField("consequent_names", T.ArrayType(T.StringType())),
        T.StructField("baskets", T.LongType()),
        T.StructField("support", T.DoubleType()),
        T.StructField("confidence", T.DoubleType()),
        T.StructField("lift", T.DoubleType()),
    ]
)


def baskets(purchases_df: DataFrame, segment_of_df: DataFrame, partitions: int | None = None) -> DataFrame:
    """One row per order with two or more products: `segment_id` (null for an unclustered customer), `items`
    (sorted, unique) and `_basket`, a hash of the order (what a sample draws on). A single-item basket supports
    no rule. `partitions`: coalesced to that many (one per core: every FPGrowth fit scans them, a task per
    partition)."""
    grouped = (
        purchases_df.groupBy("customer_id", "order_key")
        .agg(F.array_sort(F.collect_set("product_id")).alias("items"))
        .filter(F.size("items") >= 2)
        .join(segment_of_df.select("customer_id", "segment_id"), "customer_id", "left")
        .select("segment_id", "items", F.xxhash64("customer_id", "order_key").alias("_basket"))
    )
    return grouped.coalesce(partitions) if partitions else grouped


def sampled(baskets_df: DataFrame, fraction: float, seed: int) -> DataFrame:
    """About `fraction` of the baskets, the same ones for the same seed on any partitioning (a hash of the
    seed and the order below the fraction)."""
    drawn = F.xxhash64(F.lit(seed), F.col("_basket")).bitwiseAND(F.lit((1 << 53) - 1)) / F.lit(float(1 << 53))
    return baskets_df.filter(drawn < F.lit(fraction))


def min_support(basket_count: int, cfg: dict[str, Any], kth_item_baskets: int = 0) -> float:
    """The support an itemset needs in a set of `basket_count` baskets: at least `min_support`, at least
    `min_baskets` baskets, and at least the baskets of the set's `max_items`-th most frequent product
    (`kth_item_baskets`), so that at most `max_items` products are frequent and the mining stays bounded."""
    n = max(basket_count, 1)
    return max(float(cfg["min_support"]), int(cfg["min_baskets"]) / n, kth_item_baskets / n)


def kth_item_baskets(baskets_df: DataFrame, k: int) -> dict[int | None, int]:
    """Per set (segment id; None: every basket) the baskets holding its k-th most frequent product (0 when it
    has fewer than k products). Two small aggregations."""
    counts = (
        baskets_df.select("segment_id", F.explode("items").alias("item"))
        .groupBy("segment_id", "item")
        .count()
    )
    ranked = Window.partitionBy("segment_id").orderBy(F.desc("count"), "item")
    per_segment = {
        r["segment_id"]: int(r["count"])
        for r in counts.withColumn("_rank", F.row_number().over(ranked)).filter(F.col("_rank") == k).collect()
    }
    overall = counts.groupBy("item").agg(F.sum("count").alias("count")).orderBy(F.desc("count"), "item")
    top = overall.limit(k).collect()
    per_segment_all = {None: int(top[-1]["count"]) if len(top) == k else 0}
    return {**{s: n for s, n in per_segment.items() if s is not None}, **per_segment_all}


def _rules(baskets_df: DataFrame, support: float, cfg: dict[str, Any], segment: tuple) -> DataFrame:
    """The strongest `max_rules` rules of one set of baskets, highest lift first (ties: confidence, items), with
    the set's segment id, name and basket count; checkpointed in the executors (mined once)."""
    segment_id, segment_name, count = segment
    fp = FPGrowth(
        itemsCol="items",
        minSupport=support,
        minConfidence=float(cfg["min_confidence"]),
        numPartitions=baskets_df.sparkSession.sparkContext.defaultParallelism,
    )
    model = fp.fit(baskets_df)
    # the itemsets are mined when first read and again on every read: cached, the rules read them once
    itemsets = model.freqItemsets.persist()
    try:
        itemsets.count()
        top = model.associationRules.orderBy(
            F.desc("lift"),
            F.desc("confidence"),
            F.col("antecedent").cast("string"),
            F.col("consequent").cast("string"),
        ).limit(int(cfg["max_rules"]))
        return top.select(
            F.lit(segment_id).cast("int").alias("segment_id"),
            F.lit(segment_name).alias("segment_name"),
            "antecedent",
            "consequent",
            F.lit(count).cast("long").alias("baskets"),
            F.col("support").cast("double"),
            F.col("confidence").cast("double"),
            F.col("lift").cast("double"),
        ).localCheckpoint()
    finally:
        itemsets.unpersist()


def basket_rules(
    spark: SparkSession,
    baskets_df: DataFrame,
    names: dict[int, str],
    names_df: DataFrame,
    cfg: dict[str, Any],
    parallelism: int = 2,
    seed: int = 42,
) -> tuple[DataFrame, dict[str, Any]]:
    """The `basket_rules` table (one FPGrowth per segment and one over everyone, `parallelism` fits at once)
    and, for the manifest, the baskets, the support used and the rules kept per set. A set of more than
    `max_baskets` baskets is mined on a seeded sample of about that many (its support, confidence and lift
    are then estimates; `baskets` stays the set's count)."""
    counts = {
        r["segment_id"]: int(r["n"])
        for r in baskets_df.groupBy("segment_id").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    total = sum(counts.values())
    sets = [(None, ALL_CUSTOMERS, total)] + [(s, n, counts.get(s, 0)) for s, n in sorted(names.items())]
    mined = [s for s in sets if s[2] >= int(cfg["min_baskets"])]
    kth = kth_item_baskets(baskets_df, int(cfg["max_items"])) if mined else {}
    supports = {s[1]: min_support(s[2], cfg, kth.get(s[0], 0)) for s in mined}

    cap = int(cfg["max_baskets"])

    def fit(s: tuple) -> DataFrame:
        subset = baskets_df if s[0] is None else baskets_df.filter(F.col("segment_id") == s[0])
        if s[2] > cap:  # a seeded sample: supports from 100,000 baskets are within a fraction of a percent
            subset = sampled(subset, cap / s[2], seed)
        return _rules(subset, supports[s[1]], cfg, s)

    # each fit is a few Spark jobs of one task per core: two at once keep the cores busy
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        found = list(pool.map(fit, mined))
    rules_df = local_dataframe(spark, [], RULES_SCHEMA).drop("antecedent_names", "consequent_names")
    for df in found:
        rules_df = rules_df.unionByName(df)
    rules_df = with_names(rules_df, names_df).localCheckpoint()
    kept = {
        r["segment_name"]: int(r["n"])
        for r in rules_df.groupBy("segment_name").count().withColumnRenamed("count", "n").collect()
    }
    summary = {
        name: {
            "baskets": count,
            "rules": kept.get(name, 0),
            "min_support": round(supports[name], 6) if name in supports else None,
            "sampled": count > cap,
        }
        for _, name, count in sets
    }
    log.info("basket rules: %s", {n: s["rules"] for n, s in summary.items()})
    return rules_df, summary


def with_names(rules_df: DataFrame, names_df: DataFrame) -> DataFrame:
    """`antecedent_names` and `consequent_names` from the products' names (the id where a product has none),
    in the items' order; the rules are few, the names joined to their exploded items only."""
    # the ids computed once: both sides below join back to the same rows (and the self-join resolves on 3.5)
    keyed = rules_df.withColumn("_rule", F.monotonically_increasing_id()).localCheckpoint()

    def named(side: str) -> DataFrame:
        items = keyed.select("_rule", F.posexplode(side).alias("_pos", "product_id"))
        return (
            items.join(F.broadcast(names_df), "product_id", "left")
            .groupBy("_rule")
            .agg(
                F.transform(
                    F.array_sort(
                        F.collect_list(F.struct("_pos", F.coalesce("product_name", "product_id").alias("n")))
                    ),
                    lambda x: x["n"],
                ).alias(f"{side}_names")
            )
        )

    return (
        keyed.join(named("antecedent"), "_rule", "left")
        .join(named("consequent"), "_rule", "left")
        .select(*RULES_SCHEMA.fieldNames())
    )
