"""Scoring stage: a saved model assigns segments to customers computed from new transactions, no retraining.

Takes a published model (`models/snapshot_date=M/`: the PipelineModel of preparation + KMeans and its
`segment_map.json`) and the training manifest's RFM breakpoints, computes the same per-customer features from
new transactions, and hands the publish stage rows in the `segments` layout, with the model's `run_id` and the
scoring date as `snapshot_date`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.errors import InputError, OutputError
from segmentation.features.rfm import EXCLUDED_REASONS, customer_features, with_line_kind
from segmentation.features.scores import with_rfm_scores
from segmentation.io import HadoopFs
from segmentation.publish.snapshot import (
    SnapshotPublisher,
    absolute_output_path,
    new_run_id,
    published_snapshots,
)
from segmentation.publish.tables import SEGMENT_COLUMNS
from segmentation.segments.order import with_segment_columns
from segmentation.sources.read import input_name, original_columns, read_transactions
from segmentation.sources.source import count_by
from segmentation.sources.timestamps import resolve_timestamp_format
from segmentation.sources.validate import (
    REJECT_REASONS,
    classify_rows,
    max_accepted_date,
    rejects_table,
    with_after_snapshot_reason,
)
from segmentation.timer import StageTimer, spark_progress

log = logging.getLogger(__name__)


class SavedModel:
    """A published model: the fitted pipeline, its segment map and the manifest of the run that trained it."""

    def __init__(self, spark: SparkSession, root: str, snapshot_date: str | None = None):
        root = absolute_output_path(root)
        fs = HadoopFs(spark, root)
        available = [
            d for d in published_snapshots(fs, root) if fs.exists(f"{root}/models/snapshot_date={d}")
        ]
        if not available:
            raise InputError(f"no published model under {root}")
        if snapshot_date is None:
            snapshot_date = available[-1]
        elif snapshot_date not in available:
            raise InputError(
                f"no published model for snapshot {snapshot_date} under {root} (available: {', '.join(available)})"
            )
        base = f"{root}/models/snapshot_date={snapshot_date}"
        self.root = root
        self.snapshot_date = snapshot_date
        self.pipeline = PipelineModel.load(f"{base}/pipeline")
        self.segment_map: dict[str, Any] = json.loads(fs.read_text(f"{base}/segment_map.json"))
        self.manifest: dict[str, Any] = json.loads(
            fs.read_text(f"{root}/manifests/snapshot_date={snapshot_date}/manifest.json")
        )
        self.run_id: str = self.segment_map["run_id"]

    @property
    def order(self) -> dict[int, int]:
        return {int(c): int(s) for c, s in self.segment_map["cluster_to_segment"].items()}

    @property
    def names(self) -> dict[int, str]:
        return {int(s): n for s, n in self.segment_map["segment_names"].items()}

    def assign(self, customers_df: DataFrame) -> DataFrame:
        """Customers (features stage rows) -> the `segments` layout, scored with this model."""
        clustered_df = customers_df.filter(F.col("excluded_reason").isNull())
        centers = [list(map(float, c)) for c in self.pipeline.stages[-1].clusterCenters()]
        transformed_df = self.pipeline.transform(clustered_df)
        # a density method's noise (cluster -1) belongs to no segment, as in training
        noise_df = transformed_df.filter(F.col("cluster") < 0).select(
            "customer_id", F.lit("noise").alias("_noise")
        )
        assigned_df = transformed_df.filter(F.col("cluster") >= 0).transform(
            with_segment_columns, order=self.order, centers=centers
        )
        name_map = F.create_map(*[F.lit(v) for pair in sorted(self.names.items()) for v in pair])
        scored = assigned_df.select(
            "customer_id",
            "segment_id",
            name_map[F.col("segment_id")].alias("segment_name"),
            "distance_to_center",
        )
        return (
            customers_df.transform(with_rfm_scores, breakpoints=self.manifest["rfm_breakpoints"])
            .join(noise_df, "customer_id", "left")
            .withColumn("excluded_reason", F.coalesce("excluded_reason", "_noise"))
            .drop("_noise")
            .join(scored, "customer_id", "left")
            .withColumn("run_id", F.lit(self.run_id))
            .select(*SEGMENT_COLUMNS)
        )


def score_customers(
    spark: SparkSession,
    cfg: dict[str, Any],
    model_root: str,
    model_snapshot: str | None = None,
    scoring_run_id: str | None = None,
) -> dict[str, Any]:
    """Score the transactions of `cfg['input']` with a published model; publish `segments` (and `rejects`)
    for the scoring date under `cfg['output']['path']`; return the scoring manifest."""

    started = time.perf_counter()
    timer = StageTimer(spark_progress(spark))
    inp = cfg["input"]
    spark.conf.set("spark.sql.session.timeZone", inp["time_zone"])
    model = SavedModel(spark, model_root, model_snapshot)
    scoring_run_id = scoring_run_id or new_run_id()
    publisher = SnapshotPublisher(spark, cfg["output"]["path"], scoring_run_id)
    if publisher.root == absolute_output_path(model_root):
        raise OutputError(
            "score into another output path than the model's: a scored snapshot is no training run"
        )
    publisher.check_writable()
    persisted: list[DataFrame] = []
    try:
        with timer.stage("read"):
            raw_df, inp = read_transactions(spark, inp)
            originals = original_columns(raw_df)
            inp, _ = resolve_timestamp_format(raw_df, inp, int(cfg["model"]["seed"]))
        with timer.stage("validate"):
            classified_df = classify_rows(
                raw_df, inp, cfg["cleaning"]["drop_duplicates"], originals
            ).persist()
            persisted.append(classified_df)
            input_rows = classified_df.count()
            if cfg.get("snapshot_date"):
                scoring_date = dt.date.fromisoformat(cfg["snapshot_date"])
                classified_df = classified_df.transform(
                    with_after_snapshot_reason, snapshot_date=scoring_date.isoformat()
                )
            else:
                latest = max_accepted_date(classified_df)
                if latest is None:
                    raise InputError(f"no input row was accepted ({input_rows} rows)")
                scoring_date = latest + dt.timedelta(days=1)
            publisher.snapshot_date = scoring_date.isoformat()
            rejected = count_by(classified_df, "reject_reason", REJECT_REASONS)
        with timer.stage("score"):
            lines_df = classified_df.filter(F.col("reject_reason").isNull()).transform(
                with_line_kind,
                return_prefix=inp.get("return_order_prefix"),
                has_order_id=bool(inp["columns"].get("order_id")),
            )
            customers_df = customer_features(lines_df, scoring_date, cfg["cleaning"]["returns"])
            segments_df = model.assign(customers_df).persist()
            persisted.append(segments_df)
            sizes = {
                int(r["segment_id"]): int(r["count"])
                for r in segments_df.groupBy("segment_id").count().collect()
                if r["segment_id"] is not None
            }
            excluded = count_by(segments_df, "excluded_reason", EXCLUDED_REASONS)
        with timer.stage("write"):
            publisher.write_table("segments", segments_df)
            publisher.write_table("rejects", rejects_table(classified_df, originals))
        manifest = {
            "kind": "scoring",
            "run_id": model.run_id,
            "scoring_run_id": scoring_run_id,
            "snapshot_date": scoring_date.isoformat(),
            "model_snapshot_date": model.snapshot_date,
            "model_path": absolute_output_path(model_root),
            "input_path": input_name(inp),
            "input_rows": input_rows,
            "accepted_rows": input_rows - sum(rejected.values()),
            "rejected_rows": rejected,
            "customers": sum(sizes.values()) + sum(excluded.values()),
            "clustered_customers": sum(sizes.values()),
            "excluded_customers": excluded,
            "segment_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "segments": {str(s): n for s, n in sorted(model.names.items())},
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - started, 3),
            "timings_s": timer.total(),
        }
        publisher.write_manifest(manifest)
        publisher.commit()
        manifest["output_path"] = publisher.root
        return manifest
    except BaseException:
        publisher.abort()
        raise
    finally:
        for df in persisted:
            df.unpersist()
