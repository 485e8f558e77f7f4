"""The batch run, one pipeline for every input: source -> prepare -> model -> segments -> report -> publish.

`run_segmentation` takes a SparkSession and a validated config and returns the manifest it published. A
source stage (`sources`) turns the input, a transaction log or a customer table, into one customer-feature
table with its reconciliation; everything after it is written once. I/O happens only at the two edges: the
source reads, the publish stage writes (staged, committed last, aborted on any error).
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import candidate_ks
from segmentation.errors import ModelError
from segmentation.features.rfm import EXCLUDED_REASONS
from segmentation.features.scores import RFM_ACTIONS, rfm_segment_profiles, with_rfm_scores
from segmentation.manifest import Manifest, model_manifest, versions
from segmentation.model.methods import model_centers, with_membership_probability
from segmentation.model.selection import Selection, compare_methods, elbow_rows, select_k
from segmentation.prepare import fit_preparation, scaled_dimensions
from segmentation.publish.catalog import update_catalog
from segmentation.publish.history import identity_reference, previous_segments, previous_snapshot
from segmentation.publish.snapshot import SnapshotPublisher, new_run_id
from segmentation.publish.tables import (
    elbow_df,
    empty_rfm_profiles,
    output_files,
    profiles_table,
    segments_table,
)
from segmentation.report.data import collect_report_data, customer_report_data
from segmentation.report.html import write_report
from segmentation.segments.identity import stable_order, transitions_table
from segmentation.segments.order import segment_order, with_segment_columns
from segmentation.segments.profiles import centers_by_segment, profile_segments
from segmentation.sources.customers import customer_source
from segmentation.sources.source import Source, count_by
from segmentation.sources.transactions import transaction_source
from segmentation.timer import StageTimer

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The fitted preparation and the clustered customers it scaled (persisted)."""

    model: PipelineModel
    bounds: dict[str, tuple[float, float]]
    scaled_df: DataFrame
    dim: int


def read_source(spark: SparkSession, cfg: dict[str, Any], timer: StageTimer, persisted: list) -> Source:
    """The source stage of the configured input kind."""
    if cfg["input"].get("kind") == "customers":
        return customer_source(spark, cfg, timer, persisted)
    return transaction_source(spark, cfg, timer, persisted)


def run_segmentation(spark: SparkSession, cfg: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """Run the whole job for one snapshot and publish it; returns the manifest."""
    run_id = run_id or new_run_id()
    timer = StageTimer()
    model_cfg, prep_cfg = cfg["model"], cfg["prepare"]
    spark.conf.set("spark.sql.session.timeZone", cfg["input"]["time_zone"])
    publisher = SnapshotPublisher(spark, cfg["output"]["path"], run_id)
    publisher.check_writable()
    persisted: list[DataFrame] = []
    # the report's figures render in a separate Python process while Spark writes the tables (mostly one task
    # at a time): a driver thread would hold the GIL the driver needs to drive those writes
    rendering = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    report_dir = tempfile.TemporaryDirectory(prefix="segmentation-report-")
    try:
        source = read_source(spark, cfg, timer, persisted)
        publisher.snapshot_date = source.snapshot_date
        ks = candidate_ks(model_cfg)
        if source.counts.clustered_customers < 2 or max(ks) > source.counts.clustered_customers:
            raise ModelError(
                f"cannot fit k={max(ks)}: only {source.counts.clustered_customers} customer(s) can be clustered "
                f"(of {source.counts.customers}; excluded {source.counts.excluded_customers})"
            )
        with timer.stage("prepare"):
            prepared = _prepare(source.clustered_df, source, prep_cfg, persisted)

        with timer.stage("model"):
            selection, prepared = _select(source, prepared, ks, cfg, persisted)
            chosen = selection.chosen
            log.info("chosen k=%d: %s", chosen.k, selection.choice.reason)
            assigned_df = chosen.model.transform(prepared.scaled_df).transform(with_membership_probability)
            order = segment_order(assigned_df, source.order_column)
            centers = model_centers(chosen.model)
            previous = reference = None
            kept_names: dict[int, str] = {}
            identity: dict[str, Any] = {}
            if source.kind == "transactions":
                # stable ids: a group that was a segment of the previous snapshot keeps its id and name
                previous = previous_snapshot(spark, publisher, source.snapshot_date)
                reference = identity_reference(spark, publisher, source.snapshot_date, previous)
                order, kept_names, identity = stable_order(
                    spark,
                    order,
                    centers,
                    prepared.model,
                    reference,
                    prep_cfg["features"],
                    float(cfg["identity"]["max_distance"]),
                )
                identity = {
                    "previous_snapshot_date": previous.snapshot_date if previous else None,
                    **identity,
                }
            assigned_df = assigned_df.transform(with_segment_columns, order=order, centers=centers).persist()
            persisted.append(assigned_df)

        with timer.stage("profile"):
            numeric = [
                f
                for f in prep_cfg["features"]
                if source.kind != "customers" or f in source.input_cfg["features"]
            ]
            profiles = profile_segments(
                source,
                assigned_df,
                centers_by_segment(prepared.model, centers, order, numeric, prep_cfg["log1p"]),
                prep_cfg,
                cfg["naming"],
                kept_names,
            )
            names = {int(p["segment_id"]): p["segment_name"] for p in profiles}
            scored_df = source.customers_df
            if source.rfm_breakpoints is not None:
                scored_df = scored_df.transform(with_rfm_scores, breakpoints=source.rfm_breakpoints)
            segments_df = segments_table(
                assigned_df,
                scored_df,
                names,
                run_id,
                source.kind,
                soft=model_cfg["method"] == "gaussian_mixture",
                extra_columns=source.demographic_columns,
                renamed=source.columns,
            ).persist()
            persisted.append(segments_df)
            elbow = elbow_rows(selection, source.counts.clustered_customers)
        comparison = None
        if model_cfg["compare"]:
            with timer.stage("compare"):
                _, comparison = compare_methods(
                    prepared.scaled_df,
                    ks,
                    model_cfg,
                    prepared.dim,
                    selection,
                    source.counts.clustered_customers,
                )

        transitions_df = None
        if source.kind == "transactions":
            with timer.stage("transitions"):
                transitions_df = transitions_table(
                    segments_df,
                    previous_segments(spark, previous),
                    previous.snapshot_date if previous else None,
                ).withColumn("run_id", F.lit(run_id))
        manifest = Manifest(
            run_id=run_id,
            snapshot_date=source.snapshot_date,
            source=source.manifest,
            counts=source.counts,
            model=model_manifest(selection, ks, model_cfg, prep_cfg, prepared.bounds),
            comparison=comparison,
            segments={str(p["segment_id"]): p["segment_name"] for p in profiles},
            identity=identity,
            rfm=(
                {"rfm_breakpoints": source.rfm_breakpoints, "rfm_actions": RFM_ACTIONS}
                if source.rfm_breakpoints is not None
                else {}
            ),
            versions=versions(spark.version),
            report=cfg["output"]["report"],
            timings_s=dict(timer.timings),  # completed after the write stage
        )

        rendered = None
        if cfg["output"]["report"]:
            with timer.stage("report"):
                seed = int(model_cfg["seed"])
                if source.kind == "customers":
                    report_data = customer_report_data(
                        segments_df, elbow, profiles, manifest.as_dict(), numeric, seed=seed
                    )
                else:
                    report_data = collect_report_data(
                        segments_df, elbow, profiles, manifest.as_dict(), seed=seed
                    )
                rendered = rendering.submit(write_report, report_data, report_dir.name)

        with timer.stage("write"):
            publisher.write_table(
                "segments", segments_df, files=output_files(spark, source.counts.customers, 1_000_000)
            )
            publisher.write_table("profiles", profiles_table(spark, profiles, run_id))
            if source.rfm_breakpoints is not None:
                rfm_df = rfm_segment_profiles(scored_df).withColumn("run_id", F.lit(run_id))
            else:  # no transactions, no RFM scores: an empty table keeps the published layout the same
                rfm_df = empty_rfm_profiles(spark, run_id)
            publisher.write_table("rfm_profiles", rfm_df)
            publisher.write_table("elbow", elbow_df(spark, elbow, run_id))
            if transitions_df is not None:
                publisher.write_table("transitions", transitions_df)
            publisher.write_table(
                "rejects",
                source.rejects_df,
                files=output_files(spark, sum(source.counts.rejected_rows.values()), 2_000_000),
            )
            publisher.save_model(
                PipelineModel(stages=[*prepared.model.stages, chosen.model]),
                {
                    "run_id": run_id,
                    "snapshot_date": source.snapshot_date,
                    **({"input_kind": "customers"} if source.kind == "customers" else {}),
                    "k": chosen.k,
                    "features": prep_cfg["features"],
                    **(
                        {"input_columns": {o: i for i, o in source.columns.items()}} if source.columns else {}
                    ),
                    "log1p": prep_cfg["log1p"],
                    "capping_bounds": {f: list(b) for f, b in prepared.bounds.items()},
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
            manifest.timings_s = timer.total()
            source.counts.check(one_row_per_customer=source.kind == "customers")
            publisher.write_manifest(manifest.as_dict())
            publisher.commit()
        result = manifest.as_dict()
        # a customer table's snapshot is not registered: its tables' schemas differ from a transaction log's,
        # and one database holds one layout (docs/cluster.md, "Catalog")
        if cfg["catalog"]["enabled"] and source.kind == "transactions":
            with timer.stage("catalog"):
                result["catalog"] = update_catalog(spark, cfg["catalog"], publisher)
        result["output_path"] = publisher.root
        result["profiles"] = profiles
        return result
    except BaseException:
        publisher.abort()
        raise
    finally:
        rendering.shutdown(wait=True, cancel_futures=True)
        report_dir.cleanup()
        for df in persisted:
            df.unpersist()


def _prepare(clustered_df: DataFrame, source: Source, prep_cfg: dict[str, Any], persisted: list) -> Prepared:
    """Fit the preparation on the customers to cluster and scale them (persisted)."""
    input_cfg = source.input_cfg if source.kind == "customers" else None
    model, bounds = fit_preparation(clustered_df, prep_cfg, input_cfg)
    scaled_df = model.transform(clustered_df).persist()
    persisted.append(scaled_df)
    scaled_df.count()
    return Prepared(model, bounds, scaled_df, scaled_dimensions(model))


def _select(
    source: Source, prepared: Prepared, ks: list[int], cfg: dict[str, Any], persisted: list
) -> tuple[Selection, Prepared]:
    """Sweep k and choose one; when a tiny cluster vetoes the knee (`model.outliers: exclude`) its customers
    are set aside as outliers (`excluded_reason` outlier) and the sweep runs once more without them. Updates
    the source's customers and counts in place."""
    model_cfg = cfg["model"]
    selection = select_k(prepared.scaled_df, ks, model_cfg, prepared.dim)
    outlier_clusters = selection.outlier_clusters(model_cfg["min_cluster_share"])
    if not outlier_clusters or model_cfg["outliers"] != "exclude":
        return selection, prepared
    outliers_df = (
        selection.chosen.model.transform(prepared.scaled_df)
        .filter(F.col("cluster").isin(outlier_clusters))
        .select("customer_id", F.lit("outlier").alias("_outlier"))
        .persist()
    )
    persisted.append(outliers_df)
    source.customers_df = (
        source.customers_df.join(outliers_df, "customer_id", "left")
        .withColumn("excluded_reason", F.coalesce("excluded_reason", "_outlier"))
        .drop("_outlier")
        .persist()
    )
    persisted.append(source.customers_df)
    source.clustered_df = source.clustered_df.join(outliers_df, "customer_id", "left_anti").persist()
    persisted.append(source.clustered_df)
    source.counts.excluded_customers = count_by(source.customers_df, "excluded_reason", EXCLUDED_REASONS)
    source.counts.clustered_customers = source.clustered_df.count()
    log.info("excluded %d outlier customer(s); refitting", source.counts.excluded_customers.get("outlier", 0))
    if max(ks) > source.counts.clustered_customers:
        raise ModelError(
            f"cannot fit k={max(ks)}: only {source.counts.clustered_customers} customers left after outliers"
        )
    prepared = _prepare(source.clustered_df, source, cfg["prepare"], persisted)
    return select_k(prepared.scaled_df, ks, model_cfg, prepared.dim), prepared
