"""An honest evaluation: train before a cutoff, score on what customers bought after it, against popularity.

Takes `products.Products.purchases_df`, the customers' segments and the snapshot date, and hands on the
`recommendation_eval` table. It runs on a seeded sample of at most `evaluation.max_customers` customers (all of
them on the bundled data): the metrics' error is then a fraction of a percent point, and the cost does not grow
with the log. The lines before `snapshot - evaluation.test_days` train an ALS model (the run's
settings) and the popularity lists; a customer is scored when they bought before the cutoff and bought a product
after it that they had not bought before (already-bought products are removed from the test and from every
method's list). Three methods, `top_n` products each: `als` (filled from segment-popular, as the published
recommendations are), `segment_popular` and `global_popular`. The metrics are Spark ML RankingEvaluator's
(precision@k, recall@k, NDCG@k and MAP, binary relevance, as Spark's RankingMetrics defines them), computed as
column expressions in one aggregation, overall (`segment_id` null) and per segment: the evaluator runs a job per
metric, method and segment (72 on the bundled data, most of the step's time); the tests hold the two equal.
Segments are the run's, assigned on all the lines: they know the test period's recency, a mild advantage for
`segment_popular` (docs/recommendations.md). Everything runs in ALS's item-index space (doubles, as
RankingEvaluator takes them).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.io import local_dataframe
from segmentation.recommend.affinity import popular
from segmentation.recommend.als import Indexed, als_top, fit_als, not_bought, ratings
from segmentation.recommend.baskets import ALL_CUSTOMERS
from segmentation.recommend.products import customer_products

log = logging.getLogger(__name__)

METHODS = ("als", "segment_popular", "global_popular")

#: Popular products listed beyond k, so that a customer who bought some of them still finds k new ones.
POPULAR_EXTRA = 40

#: RankingEvaluator's metric names (`metricName`) -> the table's columns.
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


def ranking_metrics(prediction: Column, label: Column, k: int) -> dict[str, Column]:
    """One customer's four metrics (table column -> expression), as RankingEvaluator computes them per row
    before averaging (Spark's RankingMetrics, no relevance values): precision@k = hits in the first k / k;
    recall@k = those hits / |label|; NDCG@k = DCG of the first k (gain 1 / log(i + 2) at position i) over the
    DCG of min(|label|, k) hits; MAP = the precisions at each hit, over the whole list, summed and divided
    by |label|. A customer with no label scores 0 on each, as there."""
    relevant = F.transform(prediction, lambda x: F.array_contains(label, x))
    first_k = F.slice(relevant, 1, k)
    hits = F.aggregate(first_k, F.lit(0), lambda n, hit: n + hit.cast("int"))
    labels = F.size(F.array_distinct(label))
    gain = lambda i: F.lit(1.0) / F.log(i + 2)  # noqa: E731 - natural log, as Spark's (the ratio is the same)
    dcg = F.aggregate(
        F.transform(first_k, lambda hit, i: F.when(hit, gain(i)).otherwise(F.lit(0.0))),
        F.lit(0.0),
        lambda total, g: total + g,
    )
    ideal = F.aggregate(
        F.sequence(F.lit(0), F.greatest(F.least(labels, F.lit(k)) - 1, F.lit(0))),
        F.lit(0.0),
        lambda total, i: total + gain(i),
    )
    precisions = F.aggregate(
        relevant,
        F.struct(F.lit(0).alias("hits"), F.lit(0).alias("seen"), F.lit(0.0).alias("sum")),
        lambda acc, hit: F.struct(
            (acc["hits"] + hit.cast("int")).alias("hits"),
            (acc["seen"] + 1).alias("seen"),
            (acc["sum"] + F.when(hit, (acc["hits"] + 1) / (acc["seen"] + 1)).otherwise(0.0)).alias("sum"),
        ),
        lambda acc: acc["sum"],
    )
    scored = lambda value: F.when(labels > 0, value).otherwise(F.lit(0.0))  # noqa: E731
    return {
        "precision_at_k": scored(hits / F.lit(float(k))),
        "recall_at_k": scored(hits / labels),
        "ndcg_at_k": scored(dcg / ideal),
        "map": scored(precisions / labels),
    }


def _first(candidates: Column, exclude: Column, k: int) -> Column:
    """The first k products of `candidates` ((product_id, score) structs) not in `exclude`, as ids."""
    return F.transform(
        F.slice(not_bought(candidates, exclude, "product_id"), 1, k), lambda c: c["product_id"]
    )


def sampled_customers(
    purchases_df: DataFrame, max_customers: int, seed: int, customers: int | None = None
) -> DataFrame:
    """The purchases of a seeded sample of about `max_customers` customers (all of them when fewer): a customer
    is in when a hash of (seed, id) falls below the share, so the same seed picks the same customers; a sample
    is checkpointed in the executors. `customers`: how many bought (counted here when not given)."""
    if customers is None:
        customers = purchases_df.select("customer_id").distinct().count()
    if customers <= max_customers:
        return purchases_df
    share = max_customers / customers
    drawn = F.xxhash64(F.lit(seed), F.col("customer_id")).bitwiseAND(F.lit((1 << 53) - 1)) / F.lit(
        float(1 << 53)
    )
    # read once: the split, the indices, the fit and the labels all scan the sample (a scan of every purchase
    # each, before)
    return purchases_df.filter(drawn < F.lit(share)).localCheckpoint()


def evaluation_frame(
    purchases_df: DataFrame,
    segment_of_df: DataFrame,
    cutoff: dt.date,
    cfg: dict[str, Any],
    seed: int,
    customers: int | None = None,
) -> DataFrame:
    """One row per scored customer: `segment_id`, `label` (new products bought on or after the cutoff) and a
    prediction column per method, arrays of item indices. The ids are indexed on the sample's purchases (the
    run's indices over every customer made the step 52 s instead of 30 s at 250k customers);
    `customers`: how many bought (counted when not given)."""
    k = int(cfg["top_n"])
    purchases_df = sampled_customers(purchases_df, int(cfg["evaluation"]["max_customers"]), seed, customers)
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
    length = k + POPULAR_EXTRA
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
    customers: int | None = None,
) -> tuple[DataFrame, dict[str, Any]]:
    """The `recommendation_eval` table (every method, overall and per segment) and its headline for the
    manifest and the report: each method's overall metrics and ALS's precision@k against global-popular's.
    `customers`: how many customers bought (the stage counted them)."""
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
    built, train = evaluation_frame(purchases_df, segment_of_df, cutoff, cfg, seed, customers)
    try:
        # every metric of every method per segment, summed in one aggregation; a group's mean is its sum
        # over its customers, the overall one the segments' sums (unsegmented customers included) over all
        sums = {
            r["segment_id"]: r.asDict()
            for r in built.groupBy("segment_id")
            .agg(
                F.count(F.lit(1)).alias("n"),
                *[
                    F.sum(value).alias(f"{method}__{column}")
                    for method in METHODS
                    for column, value in ranking_metrics(F.col(method), F.col("label"), k).items()
                ],
            )
            .collect()
        }
    finally:
        train.unpersist()
    total = sum(r["n"] for r in sums.values())
    groups = [(None, ALL_CUSTOMERS, total)] + [
        (s, n, sums[s]["n"] if s in sums else 0) for s, n in sorted(names.items())
    ]

    def mean(segment_id: int | None, name: str, count: int) -> float | None:
        if not count:
            return None
        rows = list(sums.values()) if segment_id is None else [sums[segment_id]]
        return sum(r[name] for r in rows) / count

    rows = [
        (
            method,
            segment_id,
            segment_name,
            k,
            count,
            *[mean(segment_id, f"{method}__{column}", count) for column in METRICS.values()],
            cutoff,
        )
        for segment_id, segment_name, count in groups
        for method in METHODS
    ]
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
