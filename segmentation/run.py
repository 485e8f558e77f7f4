"""The batch run: read -> validate -> features -> prepare -> model -> profile -> publish, with timings.

`run_segmentation` takes a SparkSession and a validated config and returns the manifest it published. It
holds no I/O of its own beyond calling the io and publish stages, and reconciles every input row.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import platform
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import pyspark
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import __version__
from segmentation.catalog import update_catalog
from segmentation.config import FEATURE_COLUMNS, candidate_ks
from segmentation.customers import (
    CUSTOMER_REJECT_REASONS,
    accepted_customers,
    add_demographic_profiles,
    classify_customer_rows,
    demographics_input,
    read_customer_table,
    with_demographics,
)
from segmentation.diagnostics import compare_methods, elbow_df, model_manifest, select_k
from segmentation.diagnostics import elbow_rows as elbow_rows_of
from segmentation.errors import ModelError
from segmentation.features import EXCLUDED_REASONS, customer_features_from_orders
from segmentation.identity import (
    identity_reference,
    previous_snapshot,
    stable_order,
    transitions_table,
)
from segmentation.io import local_dataframe, original_columns, read_transactions
from segmentation.methods import model_centers, with_membership_probability
from segmentation.model import segment_order
from segmentation.prepare import fit_preparation
from segmentation.profile import (
    SEGMENT_COLUMNS,
    build_profiles,
    centers_in_original_units,
    feature_quartiles,
    name_segments,
    segment_statistics,
    with_segment_columns,
)
from segmentation.publish import SnapshotPublisher
from segmentation.report import collect_report_data, write_report
from segmentation.rfm import RFM_ACTIONS, rfm_breakpoints, rfm_segment_profiles, with_rfm_scores
from segmentation.run_customers import run_customer_segmentation
from segmentation.source import ordered_counts, validated_ledger
from segmentation.timestamps import resolve_timestamp_format
from segmentation.validate import (
    ledger_orders,
    ledger_rejects,
)

log = logging.getLogger(__name__)


class StageTimer:
    """Logs each stage with its duration and keeps the durations for the manifest."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        self.timings[name] = round(elapsed, 3)
        log.info("stage %s: done in %.1f s", name, elapsed)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _count_by(df: DataFrame, column: str) -> dict[str, int]:
    return {r[column]: int(r["count"]) for r in df.groupBy(column).count().collect() if r[column] is not None}


def _output_files(spark: SparkSession, rows: int, rows_per_file: int) -> int:
    """Files for a table of `rows` rows: one per `rows_per_file` started, and from 100,000 rows on at least one
    per core (up to Spark's default parallelism), so that writing a large table does not run as one task."""
    by_size = rows // rows_per_file + 1
    return max(by_size, min(spark.sparkContext.defaultParallelism, rows // 100_000))


def run_segmentation(spark: SparkSession, cfg: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """Run the whole job for one snapshot and publish it; returns the manifest."""
    run_id = run_id or new_run_id()
    started = time.perf_counter()
    timer = StageTimer()
    inp, model_cfg, prep_cfg = cfg["input"], cfg["model"], cfg["prepare"]
    spark.conf.set("spark.sql.session.timeZone", inp["time_zone"])
    if inp.get("kind") == "customers":
        return run_customer_segmentation(spark, cfg, run_id, timer, started)
    publisher = SnapshotPublisher(spark, cfg["output"]["path"], run_id)
    publisher.check_writable()
    persisted: list[DataFrame] = []
    # the report's figures render in a separate Python process while Spark writes the tables (mostly one task
    # at a time): a driver thread would hold the GIL the driver needs to drive those writes
    rendering = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    report_dir = tempfile.TemporaryDirectory(prefix="segmentation-report-")
    try:
        with timer.stage("read"):
            raw_df = read_transactions(spark, inp)
            originals = original_columns(raw_df)
            inp, detected_format = resolve_timestamp_format(raw_df, inp, int(model_cfg["seed"]))

        with timer.stage("validate"):
            source = validated_ledger(raw_df, {**cfg, "input": inp}, originals)
            ledger_df = source.ledger_df
            persisted.append(ledger_df)
            snapshot_date, input_rows = source.snapshot_date, source.input_rows
            rejected, accepted_rows = source.rejected, source.accepted_rows
            publisher.snapshot_date = snapshot_date.isoformat()

        with timer.stage("features"):
            orders_df = ledger_orders(ledger_df)
            customers_df = customer_features_from_orders(orders_df, snapshot_date, cfg["cleaning"]["returns"])
            demographics, demo_columns = None, []
            if inp["demographics"].get("path"):
                customers_df, demographics, demo_columns = _join_demographics(
                    spark, inp, customers_df, persisted
                )
            customers_df = customers_df.persist()
            persisted.append(customers_df)
            excluded = ordered_counts(_count_by(customers_df, "excluded_reason"), EXCLUDED_REASONS)
            customers = customers_df.count()
            rfm_bp = rfm_breakpoints(customers_df.filter(F.col("frequency") > 0))
            clustered_df = (
                customers_df.filter(F.col("excluded_reason").isNull())
                # a fixed, data-determined layout: same input + seed = same segments, local or on a cluster
                .repartition(int(model_cfg["partitions"]), "customer_id")
                .sortWithinPartitions("customer_id")
                .persist()
            )
            persisted.append(clustered_df)
            clustered = clustered_df.count()
            log.info("%d customers, %d to cluster, excluded %s", customers, clustered, excluded)

        ks = candidate_ks(model_cfg)
        if clustered < 2 or max(ks) > clustered:
            raise ModelError(
                f"cannot fit k={max(ks)}: only {clustered} customer(s) can be clustered "
                f"(of {customers}; excluded {excluded})"
            )

        with timer.stage("prepare"):
            prep_model, bounds = fit_preparation(clustered_df, prep_cfg)
            scaled_df = prep_model.transform(clustered_df).persist()
            persisted.append(scaled_df)
            scaled_df.count()

        with timer.stage("model"):
            selection = select_k(scaled_df, ks, model_cfg, len(prep_cfg["features"]))
            outlier_clusters = selection.outlier_clusters(model_cfg["min_cluster_share"])
            if outlier_clusters and model_cfg["outliers"] == "exclude":
                # a tiny cluster vetoes the knee: its customers are outliers; refit once without them
                outliers_df = (
                    selection.chosen.model.transform(scaled_df)
                    .filter(F.col("cluster").isin(outlier_clusters))
                    .select("customer_id", F.lit("outlier").alias("_outlier"))
                )
                customers_df = (
                    customers_df.join(outliers_df, "customer_id", "left")
                    .withColumn("excluded_reason", F.coalesce("excluded_reason", "_outlier"))
                    .drop("_outlier")
                    .persist()
                )
                persisted.append(customers_df)
                clustered_df = clustered_df.join(outliers_df, "customer_id", "left_anti").persist()
                persisted.append(clustered_df)
                excluded = ordered_counts(_count_by(customers_df, "excluded_reason"), EXCLUDED_REASONS)
                clustered = clustered_df.count()
                log.info("excluded %d outlier customer(s); refitting", excluded.get("outlier", 0))
                if max(ks) > clustered:
                    raise ModelError(
                        f"cannot fit k={max(ks)}: only {clustered} customers left after outliers"
                    )
                prep_model, bounds = fit_preparation(clustered_df, prep_cfg)
                scaled_df = prep_model.transform(clustered_df).persist()
                persisted.append(scaled_df)
                selection = select_k(scaled_df, ks, model_cfg, len(prep_cfg["features"]))
            chosen_k, why = selection.choice.k, selection.choice.reason
            chosen = selection.chosen
            log.info("chosen k=%d: %s", chosen_k, why)
            assigned_df = chosen.model.transform(scaled_df).transform(with_membership_probability)
            order = segment_order(assigned_df)
            centers = model_centers(chosen.model)
            # stable ids: a group that was a segment of the previous snapshot keeps its id and name
            previous = previous_snapshot(spark, publisher, snapshot_date.isoformat())
            reference = identity_reference(spark, publisher, snapshot_date.isoformat(), previous)
            order, kept_names, identity = stable_order(
                spark,
                order,
                centers,
                prep_model,
                reference,
                prep_cfg["features"],
                float(cfg["identity"]["max_distance"]),
            )
            assigned_df = assigned_df.transform(with_segment_columns, order=order, centers=centers)

        with timer.stage("profile"):
            stats = segment_statistics(assigned_df)
            quartiles = feature_quartiles(clustered_df)
            medians = {int(s["segment_id"]): {f: s[f"median_{f}"] for f in FEATURE_COLUMNS} for s in stats}
            names = name_segments(medians, quartiles, cfg["naming"], kept=kept_names)
            scaler = prep_model.stages[-1]
            original_centers = centers_in_original_units(
                centers, list(scaler.mean), list(scaler.std), prep_cfg["features"], prep_cfg["log1p"]
            )
            centers_by_segment = {order[c]: original_centers[c] for c in range(len(centers))}
            profiles = build_profiles(stats, names, centers_by_segment, prep_cfg["features"])
            if demo_columns:
                demo = inp["demographics"]
                add_demographic_profiles(profiles, assigned_df, demo["features"], demo["categorical"])
            scored_customers_df = customers_df.transform(with_rfm_scores, breakpoints=rfm_bp)
            segments_df = _segments_table(
                assigned_df,
                scored_customers_df,
                names,
                run_id,
                model_cfg["method"] == "gaussian_mixture",
                demo_columns,
            ).persist()
            persisted.append(segments_df)
            elbow_rows = elbow_rows_of(selection, clustered)
        comparison = None
        if model_cfg["compare"]:
            with timer.stage("compare"):
                dim = len(prep_cfg["features"])
                _, comparison = compare_methods(scaled_df, ks, model_cfg, dim, selection, clustered)

        with timer.stage("transitions"):
            transitions_df = transitions_table(
                segments_df,
                spark.read.parquet(previous.segments_path) if previous else None,
                previous.snapshot_date if previous else None,
            ).withColumn("run_id", F.lit(run_id))
        manifest = {
            "run_id": run_id,
            "snapshot_date": snapshot_date.isoformat(),
            "input_path": str(inp["path"]),
            "input_format": inp["format"],
            "timestamp_format": inp["timestamp_format"],
            "timestamp_format_detected": detected_format,
            "input_rows": input_rows,
            "accepted_rows": accepted_rows,
            "rejected_rows": rejected,
            "customers": customers,
            "clustered_customers": clustered,
            "excluded_customers": excluded,
            **model_manifest(selection, ks, model_cfg, prep_cfg, bounds),
            "comparison": comparison,
            "demographics": demographics,
            "segments": {str(p["segment_id"]): p["segment_name"] for p in profiles},
            "previous_snapshot_date": previous.snapshot_date if previous else None,
            **identity,
            "rfm_breakpoints": rfm_bp,
            "rfm_actions": RFM_ACTIONS,
            "versions": {
                "segmentation": __version__,
                "spark": spark.version,
                "pyspark": pyspark.__version__,
                "python": platform.python_version(),
            },
            "report": cfg["output"]["report"],
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": dict(timer.timings),  # completed after the write stage
        }

        rendered = None
        if cfg["output"]["report"]:
            with timer.stage("report"):
                report_data = collect_report_data(
                    segments_df, elbow_rows, profiles, manifest, seed=int(model_cfg["seed"])
                )
                rendered = rendering.submit(write_report, report_data, report_dir.name)

        with timer.stage("write"):
            publisher.write_table("segments", segments_df, files=_output_files(spark, customers, 1_000_000))
            publisher.write_table("profiles", _profiles_df(spark, profiles, run_id))
            publisher.write_table(
                "rfm_profiles", rfm_segment_profiles(scored_customers_df).withColumn("run_id", F.lit(run_id))
            )
            publisher.write_table("elbow", elbow_df(spark, elbow_rows, run_id))
            publisher.write_table("transitions", transitions_df)
            publisher.write_table(
                "rejects",
                ledger_rejects(ledger_df, originals),
                files=_output_files(spark, sum(rejected.values()), 2_000_000),
            )
            final_model = PipelineModel(stages=[*prep_model.stages, chosen.model])
            publisher.save_model(
                final_model,
                {
                    "run_id": run_id,
                    "snapshot_date": snapshot_date.isoformat(),
                    "k": chosen_k,
                    "features": prep_cfg["features"],
                    "log1p": prep_cfg["log1p"],
                    "capping_bounds": {f: list(b) for f, b in bounds.items()},
                    "cluster_to_segment": {str(c): s for c, s in sorted(order.items())},
                    "segment_names": {str(s): n for s, n in sorted(names.items())},
                },
            )
        if rendered is not None:
            with timer.stage("report_files"):
                written = rendered.result()  # figures and report.html, rendered during the write stage
                publisher.copy_local_dir("reports", report_dir.name)
                log.info("report: %d files", len(written))
        with timer.stage("publish"):
            manifest["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - started, 3)}
            if input_rows != accepted_rows + sum(rejected.values()):
                raise RuntimeError("reconciliation failed: input rows != accepted + rejected")
            publisher.write_manifest(manifest)
            publisher.commit()
        if cfg["catalog"]["enabled"]:
            with timer.stage("catalog"):
                manifest["catalog"] = update_catalog(spark, cfg["catalog"], publisher)
        manifest["output_path"] = publisher.root
        manifest["profiles"] = profiles
        return manifest
    except BaseException:
        publisher.abort()
        raise
    finally:
        rendering.shutdown(wait=True, cancel_futures=True)
        report_dir.cleanup()
        for df in persisted:
            df.unpersist()


def _segments_table(
    assigned_df: DataFrame,
    customers_df: DataFrame,
    names: dict[int, str],
    run_id: str,
    soft: bool = False,
    extra_columns: list[str] | None = None,
) -> DataFrame:
    name_map = F.create_map(*[F.lit(v) for pair in sorted(names.items()) for v in pair])
    clustered = assigned_df.select(
        "customer_id",
        "segment_id",
        name_map[F.col("segment_id")].alias("segment_name"),
        "distance_to_center",
        "membership_probability",
    )
    # a Gaussian mixture adds each customer's probability of its segment after the documented columns
    # and joined demographic columns (input.demographics) come last
    extra = (["membership_probability"] if soft else []) + list(extra_columns or [])
    return (
        customers_df.join(clustered, "customer_id", "left")
        .withColumn("run_id", F.lit(run_id))
        .select(*SEGMENT_COLUMNS, *extra)
    )


def _join_demographics(
    spark: SparkSession, inp: dict[str, Any], customers_df: DataFrame, persisted: list[DataFrame]
) -> tuple[DataFrame, dict[str, Any], list[str]]:
    """Read and validate the customer table beside the transactions and join it; returns the joined customers,
    the demographics' reconciliation for the manifest and the joined column names."""
    demo_cfg = demographics_input(inp)
    classified_df = classify_customer_rows(read_customer_table(spark, demo_cfg), demo_cfg).persist()
    persisted.append(classified_df)
    rows = classified_df.count()
    rejected = ordered_counts(_count_by(classified_df, "reject_reason"), CUSTOMER_REJECT_REASONS)
    accepted_df = accepted_customers(classified_df, demo_cfg)
    matched = customers_df.join(accepted_df, "customer_id", "left_semi").count()
    summary = {
        "path": str(demo_cfg["path"]),
        "input_rows": rows,
        "accepted_rows": rows - sum(rejected.values()),
        "rejected_rows": rejected,
        "matched_customers": matched,
    }
    if summary["accepted_rows"] + sum(rejected.values()) != rows:
        raise RuntimeError("reconciliation failed: demographics rows != accepted + rejected")
    log.info("demographics: %s", summary)
    columns = demo_cfg["features"] + demo_cfg["categorical"]
    return customers_df.transform(with_demographics, demographics_df=accepted_df), summary, columns


def _profiles_df(spark: SparkSession, profiles: list[dict[str, Any]], run_id: str) -> DataFrame:
    fields = [
        T.StructField("segment_id", T.IntegerType(), False),
        T.StructField("segment_name", T.StringType(), False),
        T.StructField("action", T.StringType(), False),
        T.StructField("description", T.StringType(), False),
        T.StructField("customers", T.LongType(), False),
        T.StructField("share_customers", T.DoubleType(), False),
        T.StructField("revenue", T.DoubleType(), False),
        T.StructField("share_revenue", T.DoubleType(), False),
    ]
    extra = [k for k in profiles[0] if k not in {f.name for f in fields}]
    fields += [T.StructField(k, T.DoubleType(), True) for k in extra]
    schema = T.StructType(fields)
    rows = [tuple(p[f.name] for f in schema.fields) for p in profiles]
    return local_dataframe(spark, rows, schema).withColumn("run_id", F.lit(run_id))
