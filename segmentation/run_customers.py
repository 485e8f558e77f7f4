"""The batch run for a customer-level table (`input.kind: customers`): read -> validate -> prepare -> model ->
profile -> report -> publish, with timings.

The same stages and outputs as the transaction run (`run.py`), without aggregation and RFM: every accepted
row is a customer. Every input row is accepted or rejected with one reason, and the manifest reconciles.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import tempfile
import time
from typing import Any

import pyspark
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import __version__
from segmentation.config import candidate_ks
from segmentation.customer_report import write_customer_report
from segmentation.customers import (
    CUSTOMER_REJECT_REASONS,
    classify_customer_rows,
    customer_profiles,
    fit_customer_preparation,
    internal_names,
    read_customer_table,
    segment_order_by,
    vector_size,
)
from segmentation.diagnostics import compare_methods, elbow_df, elbow_rows, model_manifest, select_k
from segmentation.errors import InputError, ModelError
from segmentation.io import local_dataframe, original_columns
from segmentation.methods import model_centers, with_membership_probability
from segmentation.profile import centers_in_original_units, with_segment_columns
from segmentation.publish import SnapshotPublisher
from segmentation.validate import rejects_table

log = logging.getLogger(__name__)


def _counts(df: DataFrame, column: str, order: tuple[str, ...]) -> dict[str, int]:
    found = {
        r[column]: int(r["count"]) for r in df.groupBy(column).count().collect() if r[column] is not None
    }
    return {reason: found[reason] for reason in order if found.get(reason)}


def run_customer_segmentation(
    spark: SparkSession, cfg: dict[str, Any], run_id: str, timer: Any, started: float
) -> dict[str, Any]:
    """Cluster a customer table directly and publish the snapshot; returns the manifest."""
    inp, model_cfg, prep_cfg = cfg["input"], cfg["model"], cfg["prepare"]
    names = internal_names(inp)
    snapshot_date = cfg.get("snapshot_date") or dt.datetime.now(dt.timezone.utc).date().isoformat()
    publisher = SnapshotPublisher(spark, cfg["output"]["path"], run_id)
    publisher.check_writable()
    publisher.snapshot_date = snapshot_date
    persisted: list[DataFrame] = []
    try:
        with timer.stage("read"):
            raw_df = read_customer_table(spark, inp)
            originals = original_columns(raw_df)

        with timer.stage("validate"):
            classified_df = classify_customer_rows(raw_df, inp).persist()
            persisted.append(classified_df)
            input_rows = classified_df.count()
            if input_rows == 0:
                raise InputError(f"input has no rows: {inp['path']}")
            rejected = _counts(classified_df, "reject_reason", CUSTOMER_REJECT_REASONS)
            accepted_rows = input_rows - sum(rejected.values())
            log.info("%d input rows, %d accepted, rejects %s", input_rows, accepted_rows, rejected)
            if accepted_rows == 0:
                raise InputError(f"no input row was accepted ({input_rows} rows; rejects: {rejected})")

        with timer.stage("features"):
            customers_df = (
                classified_df.filter(F.col("reject_reason").isNull())
                .select("customer_id", *names.values())
                .withColumn("excluded_reason", F.lit(None).cast("string"))
            )
            clustered_df = (
                customers_df.repartition(int(model_cfg["partitions"]), "customer_id")
                .sortWithinPartitions("customer_id")
                .persist()
            )
            persisted.append(clustered_df)
            clustered = customers = clustered_df.count()

        ks = candidate_ks(model_cfg)
        if max(ks) > clustered:
            raise ModelError(f"cannot fit k={max(ks)}: only {clustered} customer(s) can be clustered")

        def prepare(df: DataFrame):
            prep_model, bounds = fit_customer_preparation(df, inp, prep_cfg)
            scaled = prep_model.transform(df).persist()
            persisted.append(scaled)
            return prep_model, bounds, scaled, vector_size(scaled)

        with timer.stage("prepare"):
            prep_model, bounds, scaled_df, dim = prepare(clustered_df)

        excluded: dict[str, int] = {}
        with timer.stage("model"):
            selection = select_k(scaled_df, ks, model_cfg, dim)
            outlier_clusters = selection.outlier_clusters(model_cfg["min_cluster_share"])
            if outlier_clusters and model_cfg["outliers"] == "exclude":
                # a tiny cluster vetoes the knee: its customers are outliers; refit once without them
                outliers_df = (
                    selection.chosen.model.transform(scaled_df)
                    .filter(F.col("cluster").isin(outlier_clusters))
                    .select("customer_id", F.lit("outlier").alias("_outlier"))
                    .persist()
                )
                persisted.append(outliers_df)
                customers_df = (
                    customers_df.join(outliers_df, "customer_id", "left")
                    .withColumn("excluded_reason", F.coalesce("excluded_reason", "_outlier"))
                    .drop("_outlier")
                )
                clustered_df = clustered_df.join(outliers_df, "customer_id", "left_anti").persist()
                persisted.append(clustered_df)
                excluded = {"outlier": outliers_df.count()}
                clustered = clustered_df.count()
                log.info("excluded %d outlier customer(s); refitting", excluded["outlier"])
                if max(ks) > clustered:
                    raise ModelError(
                        f"cannot fit k={max(ks)}: only {clustered} customers left after outliers"
                    )
                prep_model, bounds, scaled_df, dim = prepare(clustered_df)
                selection = select_k(scaled_df, ks, model_cfg, dim)
            chosen_k, why = selection.choice.k, selection.choice.reason
            chosen = selection.chosen
            log.info("chosen k=%d: %s", chosen_k, why)
            numeric = [f for f in prep_cfg["features"] if f in inp["features"]]
            assigned_df = chosen.model.transform(scaled_df).transform(with_membership_probability)
            order = segment_order_by(assigned_df, names[numeric[0]] if numeric else "customer_id")
            centers = model_centers(chosen.model)
            assigned_df = assigned_df.transform(with_segment_columns, order=order, centers=centers).persist()
            persisted.append(assigned_df)

        with timer.stage("profile"):
            scaler = prep_model.stages[-1]
            m = len(numeric)
            original_centers = centers_in_original_units(
                [c[:m] for c in centers],
                list(scaler.mean)[:m],
                list(scaler.std)[:m],
                numeric,
                [f for f in prep_cfg["log1p"] if f in numeric],
            )
            centers_by_segment = {order[c]: original_centers[c] for c in range(len(centers))}
            profiles = customer_profiles(assigned_df, inp, prep_cfg, centers_by_segment)
            segment_names = {p["segment_id"]: p["segment_name"] for p in profiles}
            name_map = F.create_map(*[F.lit(v) for pair in sorted(segment_names.items()) for v in pair])
            segments_df = (
                customers_df.join(
                    assigned_df.select("customer_id", "segment_id", "distance_to_center"),
                    "customer_id",
                    "left",
                )
                .select(
                    "customer_id",
                    *[F.col(internal).alias(original) for original, internal in names.items()],
                    "segment_id",
                    name_map[F.col("segment_id")].alias("segment_name"),
                    "excluded_reason",
                    "distance_to_center",
                    *(["membership_probability"] if model_cfg["method"] == "gaussian_mixture" else []),
                    F.lit(run_id).alias("run_id"),
                )
                .persist()
            )
            persisted.append(segments_df)
            elbow = elbow_rows(selection, clustered)
        comparison = None
        if model_cfg["compare"]:
            with timer.stage("compare"):
                _, comparison = compare_methods(scaled_df, ks, model_cfg, dim, selection, clustered)

        manifest = {
            "run_id": run_id,
            "snapshot_date": snapshot_date,
            "input_kind": "customers",
            "input_path": str(inp["path"]),
            "input_format": inp["format"],
            "input_rows": input_rows,
            "accepted_rows": accepted_rows,
            "rejected_rows": rejected,
            "customers": customers,
            "clustered_customers": clustered,
            "excluded_customers": excluded,
            **model_manifest(selection, ks, model_cfg, prep_cfg, bounds),
            "comparison": comparison,
            "missing": inp["missing"],
            "segments": {str(p["segment_id"]): p["segment_name"] for p in profiles},
            "versions": {
                "segmentation": __version__,
                "spark": spark.version,
                "pyspark": pyspark.__version__,
                "python": platform.python_version(),
            },
            "report": cfg["output"]["report"],
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": dict(timer.timings),
        }

        if cfg["output"]["report"]:
            with (
                timer.stage("report"),
                tempfile.TemporaryDirectory(prefix="segmentation-report-") as local_dir,
            ):
                written = write_customer_report(
                    segments_df, elbow, profiles, manifest, numeric, local_dir, seed=int(model_cfg["seed"])
                )
                publisher.copy_local_dir("reports", local_dir)
                log.info("report: %d files", len(written))

        with timer.stage("write"):
            publisher.write_table("segments", segments_df)
            publisher.write_table("profiles", _profiles_df(spark, profiles, run_id))
            # no transactions, no RFM scores: an empty table keeps the published layout the same
            publisher.write_table(
                "rfm_profiles",
                local_dataframe(
                    spark,
                    [],
                    T.StructType(
                        [
                            T.StructField("rfm_segment", T.StringType()),
                            T.StructField("customers", T.LongType()),
                        ]
                    ),
                ).withColumn("run_id", F.lit(run_id)),
            )
            publisher.write_table("elbow", elbow_df(spark, elbow, run_id))
            publisher.write_table("rejects", rejects_table(classified_df, originals))
            publisher.save_model(
                PipelineModel(stages=[*prep_model.stages, chosen.model]),
                {
                    "run_id": run_id,
                    "snapshot_date": snapshot_date,
                    "input_kind": "customers",
                    "k": chosen_k,
                    "features": prep_cfg["features"],
                    "input_columns": names,
                    "log1p": prep_cfg["log1p"],
                    "capping_bounds": {f: list(b) for f, b in bounds.items()},
                    "cluster_to_segment": {str(c): s for c, s in sorted(order.items())},
                    "segment_names": {str(s): n for s, n in sorted(segment_names.items())},
                },
            )
        with timer.stage("publish"):
            manifest["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - started, 3)}
            if input_rows != accepted_rows + sum(rejected.values()):
                raise RuntimeError("reconciliation failed: input rows != accepted + rejected")
            if accepted_rows != customers:
                raise RuntimeError("reconciliation failed: accepted rows != customers")
            publisher.write_manifest(manifest)
            publisher.commit()
        manifest["output_path"] = publisher.root
        manifest["profiles"] = profiles
        return manifest
    except BaseException:
        publisher.abort()
        raise
    finally:
        for df in persisted:
            df.unpersist()


def _profiles_df(spark: SparkSession, profiles: list[dict[str, Any]], run_id: str) -> DataFrame:
    fields = [
        T.StructField("segment_id", T.IntegerType(), False),
        T.StructField("segment_name", T.StringType(), False),
        T.StructField("description", T.StringType(), False),
        T.StructField("customers", T.LongType(), False),
        T.StructField("share_customers", T.DoubleType(), False),
    ]
    known = {f.name for f in fields}
    fields += [T.StructField(k, T.DoubleType(), True) for k in profiles[0] if k not in known]
    schema = T.StructType(fields)
    rows = [tuple(p.get(f.name) for f in schema.fields) for p in profiles]
    return local_dataframe(spark, rows, schema).withColumn("run_id", F.lit(run_id))
