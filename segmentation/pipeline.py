"""The batch run, one pipeline for every input: source -> prepare -> model -> segments -> report -> publish.

`run_segmentation` takes a SparkSession and a validated config and returns the manifest it published. A
source stage (`sources`) turns the input, a transaction log or a customer table, into one customer-feature
table with its reconciliation; everything after it is written once. I/O happens only at the two edges: the
source reads, the publish stage writes (staged, committed last, aborted on any error).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import candidate_ks, resolve_catalog_mode
from segmentation.errors import ModelError, OutputError
from segmentation.features.rfm import EXCLUDED_REASONS
from segmentation.features.scores import RFM_ACTIONS, rfm_segment_profiles, with_rfm_scores
from segmentation.manifest import Manifest, model_manifest, versions
from segmentation.model.methods import model_centers, with_membership_probability
from segmentation.model.sampled import DENSITY_METHODS, NOISE
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
from segmentation.publish.warehouse import publish_to_warehouse
from segmentation.recommend.stage import Recommendations, recommend, recommend_enabled
from segmentation.report.data import collect_report_data, customer_report_data
from segmentation.report.html import write_report
from segmentation.report.offers import collect_offers
from segmentation.segments.identity import PreviousSnapshot, stable_order, transitions_table
from segmentation.segments.order import segment_order, with_segment_columns
from segmentation.segments.profiles import centers_by_segment, profile_segments, segment_names
from segmentation.sources.customers import customer_source
from segmentation.sources.source import Source, count_by
from segmentation.sources.transactions import transaction_source
from segmentation.timer import StageTimer, spark_progress

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The fitted preparation and the clustered customers it scaled (persisted)."""

    model: PipelineModel
    bounds: dict[str, tuple[float, float]]
    scaled_df: DataFrame
    dim: int


@dataclass
class Run:
    """One run's context: the session, the config, the stage timer, the snapshot being staged and every
    DataFrame cached on the way (unpersisted when the run ends)."""

    spark: SparkSession
    cfg: dict[str, Any]
    run_id: str
    publisher: SnapshotPublisher
    timer: StageTimer = field(default_factory=StageTimer)
    persisted: list[DataFrame] = field(default_factory=list)

    def keep(self, df: DataFrame) -> DataFrame:
        """`df` persisted until the run ends."""
        self.persisted.append(df.persist())
        return self.persisted[-1]


@dataclass
class Assignment:
    """The chosen clustering as segments: each customer's segment, the cluster -> segment order, the centers,
    and identity against the previous snapshot (a transaction log's ids and names are kept across snapshots)."""

    assigned_df: DataFrame
    order: dict[int, int]
    centers: list[list[float]]
    previous: PreviousSnapshot | None
    kept_names: dict[int, str]
    identity: dict[str, Any]


@dataclass
class Segmented:
    """What the segments stage hands on: the assignment, the named profiles and the `segments` table."""

    assignment: Assignment
    profiles: list[dict[str, Any]]
    scored_df: DataFrame
    segments_df: DataFrame

    @property
    def names(self) -> dict[int, str]:
        return segment_names(self.profiles)


def read_source(run: Run) -> Source:
    """The source stage of the configured input kind."""
    if run.cfg["input"].get("kind") == "customers":
        return customer_source(run.spark, run.cfg, run.timer, run.persisted)
    return transaction_source(run.spark, run.cfg, run.timer, run.persisted)


def run_segmentation(spark: SparkSession, cfg: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """Run the whole job for one snapshot and publish it; returns the manifest."""
    run_id = run_id or new_run_id()
    spark.conf.set("spark.sql.session.timeZone", cfg["input"]["time_zone"])
    publisher = SnapshotPublisher(spark, cfg["output"]["path"], run_id)
    run = Run(spark, cfg, run_id, publisher, timer=StageTimer(spark_progress(spark)))
    run.publisher.check_writable()
    # the report's figures render in a separate Python process while Spark writes the tables (mostly one task
    # at a time): a driver thread would hold the GIL the driver needs to drive those writes
    rendering = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    report_dir = tempfile.TemporaryDirectory(prefix="segmentation-report-")
    try:
        source = read_source(run)
        run.publisher.snapshot_date = source.snapshot_date
        ks = candidate_ks(cfg["model"])
        counts = source.counts
        if counts.clustered_customers < 2 or max(ks) > counts.clustered_customers:
            raise ModelError(
                f"cannot fit k={max(ks)}: only {counts.clustered_customers} customer(s) can be clustered "
                f"(of {counts.customers}; excluded {counts.excluded_customers})"
            )
        with run.timer.stage("prepare"):
            prepared = _prepare(run, source)
        with run.timer.stage("model"):
            selection, prepared = _select(run, source, prepared, ks)
            assignment = _assign(run, source, prepared, selection)
        with run.timer.stage("profile"):
            segmented = _profile(run, source, prepared, assignment)
        recommended = _recommend(run, source, segmented)
        elbow = elbow_rows(selection, counts.clustered_customers)
        comparison = None
        if cfg["model"]["compare"]:
            with run.timer.stage("compare"):
                _, comparison = compare_methods(
                    prepared.scaled_df, ks, cfg["model"], prepared.dim, selection, counts.clustered_customers
                )
        manifest = Manifest(
            run_id=run_id,
            snapshot_date=source.snapshot_date,
            source=source.manifest,
            counts=counts,
            model=model_manifest(selection, ks, cfg["model"], cfg["prepare"], prepared.bounds),
            comparison=comparison,
            segments={str(s): n for s, n in segmented.names.items()},
            identity=assignment.identity,
            rfm=(
                {"rfm_breakpoints": source.rfm_breakpoints, "rfm_actions": RFM_ACTIONS}
                if source.rfm_breakpoints is not None
                else {}
            ),
            recommend=recommended.manifest,
            versions=versions(spark.version),
            report=cfg["output"]["report"],
            timings_s=dict(run.timer.timings),  # completed after the write stage
        )
        rendered = None
        if cfg["output"]["report"]:
            with run.timer.stage("report"):
                report_data = _report_data(run, source, segmented, elbow, manifest, recommended)
                rendered = rendering.submit(write_report, report_data, report_dir.name)
        with run.timer.stage("write"):
            _write(run, source, prepared, selection, segmented, elbow, recommended)
        if rendered is not None:
            with run.timer.stage("report_files"):
                written = rendered.result()  # figures and report.html, rendered during the write stage
                run.publisher.copy_local_dir("reports", report_dir.name)
                log.info("report: %d files", len(written))
        with run.timer.stage("publish"):
            manifest.timings_s = run.timer.total()
            counts.check(one_row_per_customer=source.kind == "customers")
            run.publisher.write_manifest(manifest.as_dict())
            run.publisher.commit()
        result = manifest.as_dict()
        # a customer table's snapshot is not registered: its tables' schemas differ from a transaction log's,
        # and one database holds one layout
        mode = resolve_catalog_mode(cfg["catalog"], spark.sparkContext.master)
        if mode != "off" and source.kind == "transactions":
            with run.timer.stage("catalog"):
                result["catalog"] = update_catalog(spark, cfg["catalog"], run.publisher, mode)
        if cfg["output"]["jdbc"].get("url"):
            # after the commit: the Parquet snapshot is the record; the warehouse holds a copy of it
            with run.timer.stage("warehouse"):
                try:
                    jdbc = cfg["output"]["jdbc"]
                    rows = publish_to_warehouse(
                        spark, jdbc, run.publisher.root, manifest.snapshot_date, manifest.run_id
                    )
                    result["warehouse"] = {"schema": jdbc["schema"], "rows": rows}
                except OutputError as exc:
                    raise OutputError(
                        f"snapshot {manifest.snapshot_date} is published under {run.publisher.root}, but {exc}"
                    ) from exc
        result["output_path"] = run.publisher.root
        result["profiles"] = segmented.profiles
        return result
    except BaseException:
        run.publisher.abort()
        raise
    finally:
        rendering.shutdown(wait=True, cancel_futures=True)
        report_dir.cleanup()
        for df in run.persisted:
            df.unpersist()


def _prepare(run: Run, source: Source) -> Prepared:
    """Fit the preparation on the customers to cluster and scale them (persisted)."""
    input_cfg = source.input_cfg if source.kind == "customers" else None
    model, bounds = fit_preparation(source.clustered_df, run.cfg["prepare"], input_cfg)
    scaled_df = run.keep(model.transform(source.clustered_df))
    scaled_df.count()
    return Prepared(model, bounds, scaled_df, scaled_dimensions(model))


def _select(run: Run, source: Source, prepared: Prepared, ks: list[int]) -> tuple[Selection, Prepared]:
    """Sweep k and choose one. When a tiny cluster vetoes the knee (`model.outliers: exclude`) its customers
    are set aside as outliers and the sweep runs once more without them; customers a density method calls
    noise are set aside as `noise` (no refit: they belong to no cluster). Updates the source in place."""
    model_cfg = run.cfg["model"]
    selection = select_k(prepared.scaled_df, ks, model_cfg, prepared.dim)
    outlier_clusters = selection.outlier_clusters(model_cfg["min_cluster_share"])
    if outlier_clusters and model_cfg["outliers"] == "exclude":
        assigned_df = selection.chosen.model.transform(prepared.scaled_df)
        _set_aside(run, source, assigned_df.filter(F.col("cluster").isin(outlier_clusters)), "outlier")
        if max(ks) > source.counts.clustered_customers:
            raise ModelError(
                f"cannot fit k={max(ks)}: only {source.counts.clustered_customers} customers left after outliers"
            )
        prepared = _prepare(run, source)
        selection = select_k(prepared.scaled_df, ks, model_cfg, prepared.dim)
    if selection.chosen.method in DENSITY_METHODS:
        noise_df = _set_aside(
            run,
            source,
            selection.chosen.model.transform(prepared.scaled_df).filter(F.col("cluster") == NOISE),
            "noise",
        )
        scaled_df = run.keep(prepared.scaled_df.join(noise_df, "customer_id", "left_anti"))
        prepared = Prepared(prepared.model, prepared.bounds, scaled_df, prepared.dim)
    log.info("chosen k=%d: %s", selection.choice.k, selection.choice.reason)
    return selection, prepared


def _set_aside(run: Run, source: Source, customers_df: DataFrame, reason: str) -> DataFrame:
    """The customers of `customers_df` leave the clustered ones with `excluded_reason` `reason`; the source's
    counts follow. Returns their ids (persisted)."""
    ids_df = run.keep(customers_df.select("customer_id", F.lit(reason).alias("_reason")))
    source.customers_df = run.keep(
        source.customers_df.join(ids_df, "customer_id", "left")
        .withColumn("excluded_reason", F.coalesce("excluded_reason", "_reason"))
        .drop("_reason")
    )
    source.clustered_df = run.keep(source.clustered_df.join(ids_df, "customer_id", "left_anti"))
    counts = source.counts
    counts.excluded_customers = count_by(source.customers_df, "excluded_reason", EXCLUDED_REASONS)
    counts.clustered_customers = source.clustered_df.count()
    log.info("set aside %d customer(s) as %s", counts.excluded_customers.get(reason, 0), reason)
    return ids_df


def _numeric_features(source: Source, prepare_cfg: dict[str, Any]) -> list[str]:
    """The numeric model features: all of them for a transaction log, a customer table's numeric columns."""
    if source.kind != "customers":
        return list(prepare_cfg["features"])
    return [f for f in prepare_cfg["features"] if f in source.input_cfg["features"]]


def _assign(run: Run, source: Source, prepared: Prepared, selection: Selection) -> Assignment:
    """The chosen model's clusters as segments: ordered by the source's value column, and for a transaction
    log matched to the previous snapshot's segments so that a group keeps its id and name."""
    prep_cfg = run.cfg["prepare"]
    chosen = selection.chosen
    assigned_df = chosen.model.transform(prepared.scaled_df).transform(with_membership_probability)
    order = segment_order(assigned_df, source.order_column)
    centers = model_centers(chosen.model)
    previous, kept_names, identity = None, {}, {}
    if source.kind == "transactions":
        previous = previous_snapshot(run.spark, run.publisher, source.snapshot_date)
        reference = identity_reference(run.spark, run.publisher, source.snapshot_date, previous)
        order, kept_names, matched = stable_order(
            run.spark,
            order,
            centers,
            prepared.model,
            reference,
            prep_cfg["features"],
            float(run.cfg["identity"]["max_distance"]),
        )
        identity = {"previous_snapshot_date": previous.snapshot_date if previous else None, **matched}
    assigned_df = run.keep(assigned_df.transform(with_segment_columns, order=order, centers=centers))
    return Assignment(assigned_df, order, centers, previous, kept_names, identity)


def _profile(run: Run, source: Source, prepared: Prepared, assignment: Assignment) -> Segmented:
    """Named profiles per segment and the `segments` table (every customer, RFM scores for a transaction log)."""
    cfg, prep_cfg = run.cfg, run.cfg["prepare"]
    numeric = _numeric_features(source, prep_cfg)
    centers = centers_by_segment(
        prepared.model, assignment.centers, assignment.order, numeric, prep_cfg["log1p"]
    )
    profiles = profile_segments(
        source, assignment.assigned_df, centers, prep_cfg, cfg["naming"], assignment.kept_names
    )
    scored_df = source.customers_df
    if source.rfm_breakpoints is not None:
        scored_df = scored_df.transform(with_rfm_scores, breakpoints=source.rfm_breakpoints)
    segments_df = segments_table(
        assignment.assigned_df,
        scored_df,
        segment_names(profiles),
        run.run_id,
        source.kind,
        soft=cfg["model"]["method"] == "gaussian_mixture",
        extra_columns=source.demographic_columns,
        renamed=source.columns,
    )
    return Segmented(assignment, profiles, scored_df, run.keep(segments_df))


def _recommend(run: Run, source: Source, segmented: Segmented) -> Recommendations:
    """Segment products, basket rules and recommendations when the input has products (`recommend`); no
    tables, and the reason in the manifest, otherwise."""
    enabled, why = recommend_enabled(run.cfg, source.items_df)
    if not enabled:
        log.info("recommend: off (%s)", why)
        return Recommendations({}, {"enabled": False, "reason": why})
    with run.timer.stage("recommend"):
        return recommend(
            run.spark,
            run.cfg,
            source.items_df,
            segmented.segments_df,
            segmented.names,
            source.snapshot_date,
            run.run_id,
            run.keep,
            run.timer,
            checkpoint_dir=f"{run.publisher.staging}/_checkpoints",
        )


def _report_data(
    run: Run,
    source: Source,
    segmented: Segmented,
    elbow: list,
    manifest: Manifest,
    recommended: Recommendations,
) -> Any:
    """What the report draws, reduced in Spark (the figures render in another process)."""
    seed = int(run.cfg["model"]["seed"])
    args = (segmented.segments_df, elbow, segmented.profiles, manifest.as_dict())
    if source.kind == "customers":
        return customer_report_data(*args, _numeric_features(source, run.cfg["prepare"]), seed=seed)
    data = collect_report_data(*args, seed=seed)
    return dataclasses.replace(data, offers=collect_offers(recommended.tables))


def _write(
    run: Run,
    source: Source,
    prepared: Prepared,
    selection: Selection,
    segmented: Segmented,
    elbow: list,
    recommended: Recommendations,
) -> None:
    """Stage every table and the model of the snapshot (committed later, manifest last)."""
    spark, run_id, publisher, prep_cfg = run.spark, run.run_id, run.publisher, run.cfg["prepare"]
    counts = source.counts
    publisher.write_table(
        "segments", segmented.segments_df, files=output_files(spark, counts.customers, 1_000_000)
    )
    publisher.write_table("profiles", profiles_table(spark, segmented.profiles, run_id))
    if source.rfm_breakpoints is not None:
        rfm_df = rfm_segment_profiles(segmented.scored_df).withColumn("run_id", F.lit(run_id))
    else:  # no transactions, no RFM scores: an empty table keeps the published layout the same
        rfm_df = empty_rfm_profiles(spark, run_id)
    publisher.write_table("rfm_profiles", rfm_df)
    publisher.write_table("elbow", elbow_df(spark, elbow, run_id))
    if source.kind == "transactions":
        with run.timer.stage("transitions"):
            previous = segmented.assignment.previous
            transitions_df = transitions_table(
                segmented.segments_df,
                previous_segments(spark, previous),
                previous.snapshot_date if previous else None,
            )
        publisher.write_table("transitions", transitions_df.withColumn("run_id", F.lit(run_id)))
    for table, df in recommended.tables.items():
        publisher.write_table(table, df, files=output_files(spark, counts.customers * 10, 2_000_000))
    rejected = sum(counts.rejected_rows.values())
    publisher.write_table("rejects", source.rejects_df, files=output_files(spark, rejected, 2_000_000))
    chosen = selection.chosen
    publisher.save_model(
        PipelineModel(stages=[*prepared.model.stages, chosen.model]),
        {
            "run_id": run_id,
            "snapshot_date": source.snapshot_date,
            **({"input_kind": "customers"} if source.kind == "customers" else {}),
            "k": chosen.k,
            "features": prep_cfg["features"],
            **({"input_columns": {o: i for i, o in source.columns.items()}} if source.columns else {}),
            "log1p": prep_cfg["log1p"],
            "capping_bounds": {f: list(b) for f, b in prepared.bounds.items()},
            "cluster_to_segment": {str(c): s for c, s in sorted(segmented.assignment.order.items())},
            "segment_names": {str(s): n for s, n in sorted(segmented.names.items())},
        },
    )
