"""Per-customer recommendations: Spark ML ALS with implicit feedback, filled from the segment's popular products.

Takes `products.Products.pairs_df` (customer x product), the customers to recommend to with their segment, and
the popularity lists of `affinity.popular`, and hands on the `recommendations` table: for every customer the
`top_n` products they have not bought, with a score and a reason: `als` (the model's preference score),
`segment_popular` (the share of the customer's segment buying it; for a customer ALS cannot score, or who bought
all but a few products) or `global_popular` (a customer without a segment). Ids are indexed for ALS
(`StringIndexer`) and mapped back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml.feature import StringIndexer, StringIndexerModel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.compat import to_arrow

#: Scores computed at once in `als_top`'s Python workers (customers x products, float32): 32 MB.
SCORE_CELLS = 1 << 23


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


def item_factors(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """The model's item factors as a matrix indexed by item (float32, rows x rank) and which rows it has
    (an index without ratings in the fit has no factors)."""
    table = to_arrow(model.itemFactors)
    ids = table.column("id").to_numpy()
    width = int(ids.max()) + 1 if len(ids) else 0
    factors = np.zeros((width, model.rank), dtype=np.float32)
    if len(ids):
        values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        factors[ids] = values.reshape(len(ids), model.rank)
    known = np.zeros(width, dtype=bool)
    known[ids] = True
    return factors, known


def top_items(
    users: np.ndarray, bought: pa.ListArray, factors: np.ndarray, known: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's best `n` items they have not bought: the scores (user factors x item factors, as ALS's
    `recommendForAllUsers` computes them, in float32) of every item, the bought ones and the ones without
    factors left out, the best n by score (ties: the lower index). Returns the flat items, their scores and
    each user's count."""
    scores = users @ factors.T
    scores[:, ~known] = -np.inf
    offsets = bought.offsets.to_numpy()
    rows = np.repeat(np.arange(len(users)), np.diff(offsets))
    scores[rows, bought.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]] = -np.inf
    k = min(n, scores.shape[1])
    if k == 0:
        return np.zeros(0, np.int32), np.zeros(0), np.zeros(len(users), np.int32)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -best_scores), axis=1)
    best, best_scores = (
        np.take_along_axis(best, order, axis=1),
        np.take_along_axis(best_scores, order, axis=1),
    )
    found = np.isfinite(best_scores)
    return best[found].astype(np.int32), best_scores[found].astype(np.float64), found.sum(axis=1)


def als_top(model: ALSModel, rated_df: DataFrame, n: int) -> DataFrame:
    """customer_id -> `picks`: the model's best `n` items for every customer of `rated_df` (indexed ratings)
    that the customer has not rated, as (item, score) structs, best first, and `_bought`: the items rated.
    Every item is scored and the bought ones left out before the best are taken (so a customer who bought
    most of the favourites still gets n): the item factors (products x rank, small) go to every task, the
    customers' factors are scored in blocks in Python workers (numpy, what ALS's own top-k does in the JVM,
    at a third of its time on 250k customers x 2,000 products)."""
    spark = rated_df.sparkSession
    factors, known = item_factors(model)
    shared = spark.sparkContext.broadcast((factors, known))
    bought = rated_df.groupBy("customer_id").agg(
        F.first("user").alias("user"), F.collect_list("item").alias("_bought")
    )
    users = bought.join(model.userFactors.withColumnRenamed("id", "user"), "user").select(
        "customer_id", "features", "_bought"
    )
    pick = T.StructType([T.StructField("item", T.IntegerType()), T.StructField("score", T.DoubleType())])
    schema = T.StructType(
        [users.schema["customer_id"], T.StructField("picks", T.ArrayType(pick)), users.schema["_bought"]]
    )

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        factors, known = shared.value
        step = max(1, SCORE_CELLS // max(1, factors.shape[0]))
        for batch in batches:
            for start in range(0, batch.num_rows, step):
                part = batch.slice(start, step)
                features = part.column("features")
                matrix = features.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
                items, scores, counts = top_items(
                    matrix.reshape(part.num_rows, -1), part.column("_bought"), factors, known, n
                )
                offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
                picks = pa.ListArray.from_arrays(
                    offsets,
                    pa.StructArray.from_arrays([pa.array(items), pa.array(scores)], ["item", "score"]),
                )
                yield pa.RecordBatch.from_arrays(
                    [part.column("customer_id"), picks, part.column("_bought")],
                    ["customer_id", "picks", "_bought"],
                )

    return users.mapInArrow(score, schema)


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
    picks = F.coalesce(F.col("c.picks"), F.array())
    picked = F.transform(picks, lambda p: p["item"])
    fill = F.slice(
        not_bought(
            F.coalesce(F.col("l.popular"), F.array()),
            F.concat(F.coalesce("c._bought", F.array()), picked),
            "item",
        ),
        1,
        F.greatest(F.lit(top_n) - F.size(picks), F.lit(0)),
    )
    reason = F.when(F.col("c.segment_id").isNotNull(), F.lit("segment_popular")).otherwise(
        F.lit("global_popular")
    )
    tag = lambda arr, why: F.transform(  # noqa: E731
        arr, lambda p: F.struct(p["item"].alias("item"), p["score"].alias("score"), why.alias("reason"))
    )
    # a customer's popularity list (their segment's; the null segment's, everyone's, without one) is joined to
    # the customers ALS leaves short only: joined to every row, the lists (top_n + the deepest customer's
    # products long) were copied into each of them, most of the step's time at 250k customers
    joined = customers_df.join(picks_df, "customer_id", "left")
    short = F.size(picks) < top_n
    whole = (
        joined.alias("c")
        .join(
            F.broadcast(lists.alias("l")),
            short & F.col("c.segment_id").eqNullSafe(F.col("l.segment_id")),
            "left",
        )
        .select(
            F.col("c.customer_id").alias("customer_id"),
            F.col("c.segment_id").alias("segment_id"),
            F.concat(tag(picks, F.lit("als")), tag(fill, reason)).alias("_recs"),
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
