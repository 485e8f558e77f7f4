"""An honest evaluation: train before a cutoff, score on what customers bought after it, against popularity.

Takes `products.Products.purchases_df`, the customers' segments and the snapshot date, and hands on the
`recommendation_eval` table. It runs on a seeded sample of at most `evaluation.max_customers` customers (all of
them on the bundled data): the metrics' error is then a fraction of a percent point, and the cost does not grow
with the log. The lines before `snapshot - evaluation.test_days` train an ALS model (the run's
settings) and the popularity lists; a customer is scored when they bought before the cutoff and bought a product
after it that they had not bought before (already-bought products are removed from the test and from every
method's list). Three methods, `top_n` products each: `als` (filled from segment-popular, as the published
recommendations are), `segment_popular` and `global_popular`. Spark ML's RankingEvaluator computes precision@k,
recall@k, NDCG@k and MAP, overall (`segment_id` null) and per segment. Segments are the run's, assigned on all
the lines: they know the test period's recency, a mild advantage for `segment_popular` (docs/recommendations.md).
Everything runs in ALS's item-index space (doubles, as RankingEvaluator takes them).
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.io import local_dataframe
from segmentation.recommend.affinity import popular
from segmentation.recommend.als import EXTRA_CANDIDATES, Indexed, als_top, fit_als, not_bought, ratings
from segmentation.recommend.baskets import ALL_CUSTOMERS
from segmentation.recommend.products import customer_products

log = logging.getLogger(__name__)

METHODS = ("als", "segment_popular", "global_popular")

#: RankingEvaluator's metric names -> the table's columns.
METRICS = {
    "precisionAtK": "precision_at_k",
    "recallAtK": "recall_at_k",
    "ndcgAtK": "ndcg_at_k",
    "meanAveragePrecision": "map",
}

EVAL_SCHEMA = T.StructType(
    [
        T.StructField("method", T.StringType()),
        T.StructField("segment_id", T.IntegerType()),
        T.StructField("segment_name", T.StringType()),
        T.StructField("k", T.IntegerType()),
        T.StructField("customers", T.LongType()),
        *[T.StructField(c, T.DoubleType()) for c in METRICS.values()],
        T.StructField("train_cutoff", T.DateType()),
    ]
)


def _first(candidates: Column, exclude: Column, k: int) -> Column:
    """The first k products of `candidates` ((product_id, score) structs) not in `exclude`, as ids."""
    return F.transform(
        F.slice(not_bought(candidates, exclude, "product_id"), 1, k), lambda c: c["product_id"]
    )


def sampled_customers(purchases_df: DataFrame, max_customers: int, seed: int) -> DataFrame:
    """The purchases of a seeded sample of about `max_customers` customers (all of them when fewer): a customer
    is in when a hash of (seed, id) falls below the share, so the same seed picks the same customers."""
    customers = purchases_df.select("customer_id").distinct().count()
    if customers <= max_customers:
        return purchases_df
    share = max_customers / customers
    drawn = F.xxhash64(F.lit(seed), F.col("customer_id")).bitwiseAND(F.lit((1 << 53) - 1)) / F.lit(
        float(1 << 53)
    )
    return purchases_df.filter(drawn < F.lit(share))


def evaluation_frame(
    purchases_df: DataFrame, segment_of_df: DataFrame, cutoff: dt.date, cfg: dict[str, Any], seed: int
) -> DataFrame:
    """One row per scored customer: `segment_id`, `label` (new products bought on or after the cutoff) and a
    prediction column per method, arrays of item indices."""
    k = int(cfg["top_n"])
    purchases_df = sampled_customers(purchases_df, int(cfg["evaluation"]["max_customers"]), seed)
    before = F.col("date") < F.lit(cutoff)
    train_pairs = customer_products(purchases_df.filter(before))
    indexed = Indexed.fit(customer_products(purchases_df))
    train = indexed.transform(train_pairs).withColumn("product_id", F.col("item").cast("double")).persist()
    test = indexed.transform(customer_products(purchases_df.filter(~before))).withColumn(
        "product_id", F.col("item").cast("double")
    )
    rated = ratings(train, cfg["als"]["confidence"])
    sc = purchases_df.sparkSession.sparkContext
    model = fit_als(rated, cfg["als"], seed, blocks=sc.defaultParallelism)
    bought = train.groupBy("customer_id").agg(F.collect_list("product_id").alias("_bought"))
    label = (
        test.join(train.select("customer_id", "product_id"), ["customer_id", "product_id"], "left_anti")
        .groupBy("customer_id")
        .agg(F.array_sort(F.collect_list("product_id")).alias("label"))
    )
    users = label.join(bought, "customer_id").join(segment_of_df, "customer_id", "left")
    length = k + 2 * EXTRA_CANDIDATES
    segment_lists = popular(train, segment_of_df, length)
    everyone = popular(train, None, length).select(F.col("popular").alias("_everyone"))
    picks = als_top(model, rated.join(users.select("customer_id"), "customer_id", "left_semi"), k)
    als_picks = picks.select(
        "customer_id",
        F.transform("picks", lambda p: F.struct(p["item"].cast("double").alias("product_id"))).alias("_als"),
    )
    segment_or_all = F.coalesce(F.col("popular"), F.col("_everyone"))
    als_ids = F.transform(F.coalesce("_als", F.array()), lambda p: p["product_id"])
    return (
        users.join(als_picks, "customer_id", "left")
        .join(F.broadcast(segment_lists), "segment_id", "left")
        .crossJoin(F.broadcast(everyone))
        .select(
            "segment_id",
            "label",
            F.slice(F.concat(als_ids, _first(segment_or_all, F.concat("_bought", als_ids), k)), 1, k).alias(
                "als"
            ),
            _first(segment_or_all, F.col("_bought"), k).alias("segment_popular"),
            _first(F.col("_everyone"), F.col("_bought"), k).alias("global_popular"),
        )
    ), train


def evaluate(
    spark: SparkSession,
    purchases_df: DataFrame,
    segment_of_df: DataFrame,
    names: dict[int, str],
    snapshot_date: str,
    cfg: dict[str, Any],
    seed: int,
) -> tuple[DataFrame, dict[str, Any]]:
    """The `recommendation_eval` table (every method, overall and per segment) and its headline for the
    manifest and the report: each method's overall metrics and ALS's precision@k against global-popular's."""
    k = int(cfg["top_n"])
    cutoff = dt.date.fromisoformat(snapshot_date) - dt.timedelta(days=int(cfg["evaluation"]["test_days"]))
    split = purchases_df.agg(
        F.count(F.when(F.col("date") < F.lit(cutoff), 1)).alias("before"),
        F.count(F.when(F.col("date") >= F.lit(cutoff), 1)).alias("after"),
    ).first()
    if not split["before"] or not split["after"]:
        # a log shorter than the test period (or all of it inside): nothing to train on or to test with
        side = "before" if not split["before"] else "on or after"
        reason = (
            f"no purchase lines {side} the cutoff {cutoff} (snapshot date - recommend.evaluation.test_days)"
        )
        log.warning("recommendations not evaluated: %s", reason)
        skipped = {
            "train_cutoff": cutoff.isoformat(),
            "customers": 0,
            "k": k,
            "overall": {},
            "skipped": reason,
        }
        return local_dataframe(spark, [], EVAL_SCHEMA), skipped
    # one partition, after a shuffle: the evaluator's many small jobs each run one task; the frame is
    # computed in parallel before it
    built, train = evaluation_frame(purchases_df, segment_of_df, cutoff, cfg, seed)
    frame = built.repartition(1).persist()
    try:
        sizes = {
            r["segment_id"]: int(r["n"])
            for r in frame.groupBy("segment_id").agg(F.count(F.lit(1)).alias("n")).collect()
        }
        total = sum(sizes.values())
        groups = [(None, ALL_CUSTOMERS, total)] + [(s, n, sizes.get(s, 0)) for s, n in sorted(names.items())]
        tasks = [
            (group, method, metric)
            for group in groups
            if group[2]
            for method in METHODS
            for metric in METRICS
        ]

        def score(task: tuple) -> float:
            (segment_id, _, _), method, metric = task
            subset = frame if segment_id is None else frame.filter(F.col("segment_id") == segment_id)
            evaluator = RankingEvaluator(predictionCol=method, labelCol="label", metricName=metric, k=k)
            return float(evaluator.evaluate(subset))

        # one small job per metric: two at once keep both cores busy
        with ThreadPoolExecutor(max_workers=2) as pool:
            scores = dict(zip(tasks, pool.map(score, tasks)))
        rows = [
            (
                method,
                segment_id,
                segment_name,
                k,
                count,
                *[scores.get(((segment_id, segment_name, count), method, m)) for m in METRICS],
                cutoff,
            )
            for segment_id, segment_name, count in groups
            for method in METHODS
        ]
    finally:
        frame.unpersist()
        train.unpersist()
    overall = {r[0]: dict(zip(METRICS.values(), r[5:9])) for r in rows if r[1] is None}
    headline = {"train_cutoff": cutoff.isoformat(), "customers": total, "k": k, "overall": overall}
    if total:
        als, base = overall["als"]["precision_at_k"], overall["global_popular"]["precision_at_k"]
        headline["als_vs_global_popular_precision"] = round(als / base, 4) if base else None
        log.info(
            "recommendations, time split at %s (%d customers): precision@%d als %.4f, global popular %.4f",
            cutoff,
            total,
            k,
            als,
            base,
        )
    return local_dataframe(spark, rows, EVAL_SCHEMA), headline
