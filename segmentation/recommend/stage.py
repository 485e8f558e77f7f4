"""The recommend stage in order: products -> segment products -> basket rules -> ALS recommendations -> evaluation.

`recommend(spark, cfg, items_df, segments_df, names, snapshot_date, run_id, keep)` returns `Recommendations`:
the four tables (with `run_id`, in the data contract's columns) and the manifest's `recommend` entry.
`recommend_enabled` decides whether the stage runs and says why not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.recommend.affinity import popular, segment_products
from segmentation.recommend.als import Indexed, als_top, fit_als, ratings, recommendations
from segmentation.recommend.baskets import basket_rules, baskets
from segmentation.recommend.evaluation import evaluate
from segmentation.recommend.products import product_purchases
from segmentation.timer import StageTimer

log = logging.getLogger(__name__)

#: The published tables of the stage, in publishing order.
#: Part of every checkpoint directory the stage sets (a run's staging area), told apart from a user's own.
STAGING_MARK = "/_staging/"

RECOMMEND_TABLES = ("segment_products", "basket_rules", "recommendations", "recommendation_eval")


@dataclass
class Recommendations:
    """The stage's tables (table name -> DataFrame, each with `run_id`) and its manifest entry."""

    tables: dict[str, DataFrame]
    manifest: dict[str, Any]


def recommend_enabled(cfg: dict[str, Any], items_df: DataFrame | None) -> tuple[bool, str]:
    """Whether the stage runs, and the reason when it does not (for the manifest and the log)."""
    enabled = cfg["recommend"]["enabled"]
    if enabled is False:
        return False, "recommend.enabled is false"
    if items_df is None:
        return False, "the input maps no product column (input.columns.product_id)"
    return True, ""


def recommend(
    spark: SparkSession,
    cfg: dict[str, Any],
    items_df: DataFrame,
    segments_df: DataFrame,
    names: dict[int, str],
    snapshot_date: str,
    run_id: str,
    keep: Callable[[DataFrame], DataFrame],
    timer: StageTimer,
    checkpoint_dir: str,
) -> Recommendations:
    """Every table of the stage for one snapshot, each step timed (`recommend_products`, `_baskets`, `_als`,
    `_evaluation`); `keep` persists a DataFrame until the run ends. The tables are computed here (persisted),
    so the write stage only writes them. ALS checkpoints under `checkpoint_dir` (the run's staging area: on
    the output's file system, so on a cluster too) unless the session has a checkpoint directory of its own."""
    rcfg = cfg["recommend"]
    current = spark.sparkContext.getCheckpointDir()
    if current is None or STAGING_MARK in current:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    seed = int(cfg["model"]["seed"])
    top_n = int(rcfg["top_n"])
    tables: dict[str, DataFrame] = {}
    with timer.stage("recommend_products"):
        products = product_purchases(items_df, rcfg)
        # the stage's inputs with their lineage cut: every query below plans over a short tree instead of
        # the whole run's (planning those took most of the stage's time); cached in the executors
        purchases_df, pairs_df, names_df = products.purchases_df, products.pairs_df, products.names_df
        segment_of_df = (
            segments_df.filter(F.col("segment_id").isNotNull())
            .select("customer_id", "segment_id", "segment_name")
            .localCheckpoint()
        )
        customers_df = segments_df.select("customer_id", "segment_id").localCheckpoint()
        stats = (
            pairs_df.groupBy("customer_id")
            .agg(F.sum("orders").alias("_rows"), F.count(F.lit(1)).alias("_products"))
            .agg(
                F.sum("_rows").alias("rows"),
                F.count(F.lit(1)).alias("customers"),
                F.max("_products").alias("deepest"),
            )
            .first()
        )
        stats = {**stats.asDict(), "products": pairs_df.select("product_id").distinct().count()}
        manifest: dict[str, Any] = {
            "enabled": True,
            "products": int(stats["products"]),
            "customers_with_purchases": int(stats["customers"]),
            "customer_product_orders": int(stats["rows"]),
            "excluded": products.excluded,
        }
        log.info(
            "recommend: %d products bought by %d customers (%d customer-order-product rows)",
            stats["products"],
            stats["customers"],
            stats["rows"],
        )
        tables["segment_products"] = keep(segment_products(pairs_df, segment_of_df, names_df, rcfg))
        tables["segment_products"].count()
    with timer.stage("recommend_baskets"):
        tables["basket_rules"], manifest["basket_rules"] = basket_rules(
            spark,
            keep(baskets(purchases_df, segment_of_df, spark.sparkContext.defaultParallelism)),
            names,
            names_df,
            rcfg["baskets"],
            parallelism=int(cfg["model"]["parallelism"]),
            seed=seed,
        )
    with timer.stage("recommend_als"):
        indexed = Indexed.fit(pairs_df)
        rated = keep(indexed.transform(ratings(pairs_df, rcfg["als"]["confidence"])))
        model = fit_als(rated, rcfg["als"], seed, blocks=spark.sparkContext.defaultParallelism)
        # long enough that the customer who bought the most products still finds top_n they have not
        # (only the customers ALS leaves short are filtered against it)
        length = top_n + int(stats["deepest"] or 0)
        by_item = rated.select("customer_id", F.col("item").alias("product_id"), "value")
        lists = popular(by_item, segment_of_df, length).unionByName(popular(by_item, None, length))
        recs = recommendations(keep(als_top(model, rated, top_n)), indexed, customers_df, lists, top_n)
        tables["recommendations"] = keep(
            recs.join(F.broadcast(names_df), "product_id", "left").select(
                "customer_id",
                F.col("segment_id").cast("int"),
                F.col("rank").cast("int"),
                "product_id",
                "product_name",
                F.col("score").cast("double"),
                "reason",
            )
        )
        manifest["recommendations"] = {
            r["reason"]: int(r["n"])
            for r in tables["recommendations"].groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()
        }
    if rcfg["evaluation"]["enabled"]:
        with timer.stage("recommend_evaluation"):
            tables["recommendation_eval"], manifest["evaluation"] = evaluate(
                spark,
                purchases_df,
                segment_of_df,
                names,
                snapshot_date,
                rcfg,
                seed,
                customers=int(stats["customers"]),
            )
    return Recommendations({t: df.withColumn("run_id", F.lit(run_id)) for t, df in tables.items()}, manifest)
