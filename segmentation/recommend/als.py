"""Per-customer recommendations: Spark ML ALS with implicit feedback, filled from the segment's popular products.

Takes `products.Products.pairs_df` (customer x product), the customers to recommend to with their segment, and the popularity
lists of `affinity.popular`, and hands on the `recommendations` table: for every customer the `top_n` products
they have not bought, with a score and a reason: `als` (the model's preference score), `segment_popular` (the
share of the customer's segment buying it; for a customer ALS cannot score, or when ALS's candidates ran out) or
`global_popular` (a customer without a segment). Ids are indexed for ALS (`StringIndexer`) and mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.ml.feature import StringIndexer, StringIndexerModel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

#: ALS candidates per customer beyond `top_n`: the products already bought are removed from them (a customer
#: who bought many of them is filled from popularity). The model's top-k dominates the scoring time: 60
#: candidates take twice as long as 30 at 250k customers.
EXTRA_CANDIDATES = 20


@dataclass
class Indexed:
    """Customer and product ids as ALS's integer `user` and `item` (fitted on every purchase)."""

    users: StringIndexerModel
    items: StringIndexerModel

    @classmethod
    def fit(cls, pairs_df: DataFrame) -> Indexed:
        fit = lambda column, out: StringIndexer(  # noqa: E731
            inputCol=column, outputCol=out, stringOrderType="alphabetAsc"
        ).fit(pairs_df.select(column))
        return cls(fit("customer_id", "user"), fit("product_id", "item"))

    def transform(self, df: DataFrame) -> DataFrame:
        """`user` and `item` as integers beside the ids."""
        indexed = self.items.transform(self.users.transform(df))
        return indexed.withColumns({"user": F.col("user").cast("int"), "item": F.col("item").cast("int")})


def ratings(pairs_df: DataFrame, confidence: str) -> DataFrame:
    """The customer x product pairs with `rating`: distinct orders with the product
    (`orders`) or log(1 + quantity) (`log_quantity`; the orders where the quantity is unknown, an amount-only
    log)."""
    rating = F.col("orders").cast("double")
    if confidence == "log_quantity":
        rating = F.coalesce(F.log1p(F.col("quantity").cast("double")), rating)
    return pairs_df.withColumn("rating", rating)


def fit_als(rated_df: DataFrame, als_cfg: dict[str, Any], seed: int, blocks: int) -> ALSModel:
    """ALS (implicit preferences) on indexed ratings (`user`, `item`, `rating`) in `blocks` user and item
    blocks (one per core: ALS's default of 10 is three times slower on 2 cores); the same seed, input and
    blocks give the same factors."""
    als = ALS(
        rank=int(als_cfg["rank"]),
        maxIter=int(als_cfg["max_iter"]),
        regParam=float(als_cfg["reg_param"]),
        alpha=float(als_cfg["alpha"]),
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        coldStartStrategy="drop",
        seed=seed,
        numUserBlocks=max(1, blocks),
        numItemBlocks=max(1, blocks),
        # every few iterations the factors are checkpointed (with a checkpoint directory set, as the stage
        # does): without it their lineage grows with each iteration until a task's deserialization
        # overflows the stack
        checkpointInterval=5,
    )
    return als.fit(rated_df.select("user", "item", "rating"))


def not_bought(candidates: Column, bought: Column, key: str) -> Column:
    """The candidates (structs with `key`) whose `key` is not in the array `bought`, in order."""
    return F.filter(candidates, lambda c: ~F.coalesce(F.array_contains(bought, c[key]), F.lit(False)))


def als_top(model: ALSModel, rated_df: DataFrame, n: int, every_user: bool = False) -> DataFrame:
    """customer_id -> `picks`: the model's best `n` items for every customer of `rated_df` (indexed ratings)
    that the customer has not rated, as (item, score) structs, best first, and `_bought`: the items rated.
    Filtered in index space, before anything is exploded; the bought items are gathered where the ratings
    are (partitioned by customer). `every_user`: `rated_df` holds every user of the model, scored without
    selecting a subset first (at 250k customers a third faster)."""
    bought = rated_df.groupBy("customer_id").agg(
        F.first("user").alias("user"), F.collect_list("item").alias("_bought")
    )
    wanted = n + EXTRA_CANDIDATES
    recs = (
        model.recommendForAllUsers(wanted)
        if every_user
        else model.recommendForUserSubset(bought.select("user"), wanted)
    )
    return recs.join(bought, "user").select(
        "customer_id",
        F.slice(
            not_bought(
                F.transform(
                    "recommendations",
                    lambda r: F.struct(r["item"].alias("item"), r["rating"].cast("double").alias("score")),
                ),
                F.col("_bought"),
                "item",
            ),
            1,
            n,
        ).alias("picks"),
        "_bought",
    )


def recommendations(
    picks_df: DataFrame,
    indexed: Indexed,
    customers_df: DataFrame,
    popular_df: DataFrame,
    top_n: int,
) -> DataFrame:
    """customer_id, segment_id, rank, product_id, score, reason for every customer of `customers_df` (`customer_id`,
    `segment_id`): ALS's picks (`als_top`) first, then the segment's popular products (`popular_df`: segment_id,
    popular, with the items' indices as `product_id`; its null segment: everyone's) they have not bought, up to `top_n`. One row per customer until the
    lists are whole (in index space), then exploded once and the items mapped back to product ids."""
    spark = customers_df.sparkSession
    item_ids = spark.createDataFrame(list(enumerate(indexed.items.labels)), "item int, product_id string")
    lists = popular_df.select(
        "segment_id",
        F.transform(
            "popular",
            lambda p: F.struct(p["product_id"].cast("int").alias("item"), p["score"].alias("score")),
        ).alias("popular"),
    )
    segment_popular = lists.filter(F.col("segment_id").isNotNull())
    everyone = lists.filter(F.col("segment_id").isNull()).select(F.col("popular").alias("_everyone"))
    picks = F.coalesce(F.col("picks"), F.array())
    picked = F.transform(picks, lambda p: p["item"])
    candidates = F.when(F.col("segment_id").isNotNull(), F.col("popular")).otherwise(F.col("_everyone"))
    fill = F.slice(
        not_bought(candidates, F.concat(F.coalesce("_bought", F.array()), picked), "item"),
        1,
        F.greatest(F.lit(top_n) - F.size(picks), F.lit(0)),
    )
    filled = F.when(F.size(picks) >= top_n, F.array()).otherwise(fill)
    reason = F.when(F.col("segment_id").isNotNull(), F.lit("segment_popular")).otherwise(
        F.lit("global_popular")
    )
    tag = lambda arr, why: F.transform(  # noqa: E731
        arr, lambda p: F.struct(p["item"].alias("item"), p["score"].alias("score"), why.alias("reason"))
    )
    whole = (
        customers_df.join(picks_df, "customer_id", "left")
        .join(F.broadcast(segment_popular), "segment_id", "left")
        .crossJoin(F.broadcast(everyone))
        .select(
            "customer_id",
            "segment_id",
            F.concat(tag(picks, F.lit("als")), tag(filled, reason)).alias("_recs"),
        )
    )
    return (
        whole.select("customer_id", "segment_id", F.posexplode("_recs").alias("_pos", "_r"))
        .join(F.broadcast(item_ids), F.col("_r.item") == F.col("item"))
        .select(
            "customer_id",
            "segment_id",
            (F.col("_pos") + 1).alias("rank"),
            "product_id",
            F.col("_r.score").alias("score"),
            F.col("_r.reason").alias("reason"),
        )
    )
