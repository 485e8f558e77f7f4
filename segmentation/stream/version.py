"""One state version of the stream: a micro-batch (or a clock tick) applied to the state of the version before.

Takes a `StreamContext` (the config, the model, the store) and the previous commit, and hands the store
(`publish.stream_store`) what the new version writes: the order rows and line fingerprints it adds, the
customers it re-scores as the new `customer_state`, their `segment_updates`, the batch's `rejects` and its
`stream_progress` row; `bootstrap` writes version 0 from the model's training lines. The stream and the batch
share the code: `sources.validate.classify_weighted` classifies (copies found across batches by
`sources.stream.with_line_key`), `features.rfm.order_rows` and `customer_features_from_orders` make the
features, `score.SavedModel.assign` the segment and scores.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import InputError
from segmentation.features.rfm import customer_features_from_orders, order_rows, with_line_kind
from segmentation.io import local_dataframe
from segmentation.publish.snapshot import absolute_output_path
from segmentation.publish.stream_store import Commit, StreamStore
from segmentation.publish.tables import SEGMENT_COLUMNS
from segmentation.score import SavedModel
from segmentation.sources.read import original_columns
from segmentation.sources.stream import LANDED_COLUMN, LINE_KEY, with_line_key
from segmentation.sources.validate import (
    REJECT_REASONS,
    classify_weighted,
    each_line,
    rejects_table,
    with_after_snapshot_reason,
)
from segmentation.stream.memory import OrdersInMemory

log = logging.getLogger(__name__)

#: Every column of `stream_progress`, one row per state version.
PROGRESS_SCHEMA = T.StructType(
    [
        T.StructField("version", T.LongType()),
        T.StructField("kind", T.StringType()),
        T.StructField("batch_id", T.LongType()),
        T.StructField("stream_run_id", T.StringType()),
        T.StructField("as_of_date", T.DateType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("committed_at", T.TimestampType()),
        T.StructField("input_rows", T.LongType()),
        T.StructField("accepted_rows", T.LongType()),
        T.StructField("rejected_rows", T.LongType()),
        *[T.StructField(f"rejected_{reason}", T.LongType()) for reason in REJECT_REASONS],
        T.StructField("customers_updated", T.LongType()),
        T.StructField("segment_changes", T.LongType()),
        T.StructField("duration_s", T.DoubleType()),
        T.StructField("latency_s", T.DoubleType()),
    ]
)


@dataclass
class StreamContext:
    """What every version of one stream is computed with."""

    spark: SparkSession
    cfg: dict[str, Any]
    input_cfg: dict[str, Any]
    training_df: DataFrame
    model: SavedModel
    store: StreamStore
    run_id: str
    as_of: str | None = None
    daily_tick: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    failure: BaseException | None = None
    orders: OrdersInMemory = field(init=False)

    def __post_init__(self) -> None:
        self.orders = OrdersInMemory(self.store)

    @property
    def originals(self) -> list[str]:
        """The training input's own columns: the landing files' too."""
        return original_columns(self.training_df)

    @property
    def drop_duplicates(self) -> bool:
        return bool(self.cfg["cleaning"]["drop_duplicates"])

    def floor_date(self) -> dt.date | None:
        """The earliest date the state may be counted to: `as_of`, and today with the daily tick."""
        dates = [dt.date.fromisoformat(self.as_of)] if self.as_of else []
        if self.daily_tick:
            dates.append(dt.datetime.now(ZoneInfo(self.input_cfg["time_zone"])).date())
        return max(dates) if dates else None


def _accepted() -> F.Column:
    return F.col("reject_reason").isNull()


def _classified_lines(ctx: StreamContext, raw_df: DataFrame) -> DataFrame:
    """The batch's rows classified as the batch job does, each accepted line with its fingerprint."""
    weighted = classify_weighted(raw_df, ctx.input_cfg, ctx.drop_duplicates, ctx.originals)
    if not ctx.drop_duplicates:
        return weighted.withColumns({k: F.lit(None).cast("long") for k in LINE_KEY})
    return weighted.transform(with_line_key, original_cols=ctx.originals).withColumns(
        {k: F.when(_accepted(), F.col(k)) for k in LINE_KEY}
    )


def _line_kind(ctx: StreamContext, lines_df: DataFrame) -> DataFrame:
    return lines_df.transform(
        with_line_kind,
        return_prefix=ctx.input_cfg.get("return_order_prefix"),
        has_order_id=bool(ctx.input_cfg["columns"].get("order_id")),
    )


def _state_rows(df: DataFrame, as_of: dt.date, version: int) -> DataFrame:
    return df.select(
        *SEGMENT_COLUMNS,
        F.lit(as_of.isoformat()).cast("date").alias("as_of_date"),
        F.lit(version).cast("long").alias("version"),
    )


#: The columns `features.rfm.order_rows` sums the lines by (`with_line_kind` adds them).
ORDER_KEYS = ("_order_key", "_date", "_is_return")


def bootstrap(ctx: StreamContext) -> Commit:
    """Version 0: the model's training lines (the config's input, cut at the model's snapshot date) as order
    rows and line fingerprints, and the model snapshot's `segments` table as the customer state."""
    spark, model, store = ctx.spark, ctx.model, ctx.store
    snapshot = model.snapshot_date
    log.info(
        "stream: seeding the state from the training input %s (snapshot %s)", ctx.input_cfg["path"], snapshot
    )
    started = time.time()
    store.recover(0)
    classified = (
        _classified_lines(ctx, ctx.training_df)
        .transform(with_after_snapshot_reason, snapshot_date=snapshot)
        .filter(F.col("reject_reason").isNull() | (F.col("reject_reason") == "after_snapshot"))
    )
    lines = (
        _line_kind(ctx, classified)
        .select("reject_reason", "_lines", "_customer_id", *ORDER_KEYS, "_value", *LINE_KEY)
        .persist()
    )
    try:
        counts = {
            r["reject_reason"]: int(r["n"])
            for r in lines.groupBy("reject_reason").agg(F.sum("_lines").alias("n")).collect()
        }
        accepted, later = counts.get(None, 0), counts.get("after_snapshot", 0)
        trained = int(model.manifest["accepted_rows"])
        if accepted != trained:
            raise InputError(
                f"the training input {ctx.input_cfg['path']} has {accepted:,} accepted lines before "
                f"{snapshot}, the model of {snapshot} was trained on {trained:,}: give the config the model was "
                "trained with (--config), on the input as it was"
            )
        if later:
            log.warning(
                "stream: %d lines of the training input are dated on or after %s, after the model's snapshot: "
                "they are not in the state until they arrive in the landing folder",
                later,
                snapshot,
            )
        accepted_lines = lines.filter(_accepted())
        store.write_state("orders", 0, order_rows(accepted_lines))
        _write_line_keys(ctx, 0, accepted_lines)
    finally:
        lines.unpersist()
    segments = spark.read.parquet(f"{absolute_output_path(model.root)}/segments/snapshot_date={snapshot}")
    store.stage_customer_state(0, _state_rows(segments, dt.date.fromisoformat(snapshot), 0))
    commit = Commit(0, "seed", -1, snapshot, _now().isoformat(timespec="seconds"))
    _stage_progress(ctx, commit, _empty_counts(), started, updated=None, changes=None)
    store.publish(commit)
    log.info("stream: version 0 (seed): %d training lines, state as of %s", accepted, snapshot)
    return commit


def _write_line_keys(ctx: StreamContext, version: int, lines: DataFrame) -> None:
    """The fingerprints of the version's accepted lines, by date (a copy of a line has its date)."""
    if ctx.drop_duplicates:
        ctx.store.write_state(
            "lines", version, lines.select(*LINE_KEY, F.col("_date").alias("date")), partition_by="date"
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _empty_counts() -> dict[str, Any]:
    return {"input_rows": 0, "accepted_rows": 0, "rejected": {}, "latest": None, "earliest_file": None}


def _batch_counts(classified: DataFrame) -> dict[str, Any]:
    """Rows per reject reason, and the dates of the accepted lines (the latest first)."""
    rows = (
        classified.groupBy("reject_reason")
        .agg(F.sum("_lines").alias("n"), F.collect_set(F.to_date("_ts")).alias("dates"))
        .collect()
    )
    accepted = next((r for r in rows if r["reject_reason"] is None), None)
    dates = sorted(accepted["dates"], reverse=True) if accepted else []
    return {
        "input_rows": sum(int(r["n"]) for r in rows),
        "dates": dates,
        "latest": dates[0] if dates else None,
    }


def apply_version(
    ctx: StreamContext, previous: Commit, raw_df: DataFrame | None, batch_id: int | None
) -> Commit:
    """One state version from `previous`: the micro-batch `raw_df` (Spark's `batch_id`), or with neither a
    clock tick to `ctx.floor_date()`. Everything is written under the new version and published last."""
    store, model = ctx.store, ctx.model
    version = previous.version + 1
    started = time.time()
    steps = _Steps()
    store.recover(version)
    persisted: list[DataFrame] = []
    new_orders = None
    try:
        counts = _empty_counts()
        touched = None
        event_times = None
        orders = ctx.orders.table(previous.version)
        if raw_df is not None:
            classified, counts = _classify_batch(ctx, previous, version, raw_df, persisted)
            steps.done("classify")
            lines = _line_kind(ctx, classified.filter(_accepted()))
            store.write_state("orders", version, order_rows(lines))
            # read back from its files: cached without the batch's plan (a cached frame keeps the plan it
            # was computed by, broadcast relations and all, for as long as it is cached)
            new_orders = store.version_rows("orders", version).persist()
            _write_line_keys(ctx, version, lines)
            event_times = (
                lines.groupBy(F.col("_customer_id").alias("customer_id"))
                .agg(F.max("_ts").alias("event_time"))
                .persist()
            )
            persisted.append(event_times)
            touched = event_times.select("customer_id")
            orders = orders.unionByName(new_orders)
            steps.done("orders")
        as_of = max(
            d
            for d in (
                dt.date.fromisoformat(previous.as_of_date),
                counts["latest"] + dt.timedelta(days=1) if counts["latest"] else None,
                ctx.floor_date(),
            )
            if d is not None
        )
        moved = as_of > dt.date.fromisoformat(previous.as_of_date)
        if touched is None and not moved:
            return previous
        if not moved:  # the same date: only the customers this batch touched change, their rows read once
            orders = orders.join(F.broadcast(touched), "customer_id", "left_semi").persist()
            persisted.append(orders)
            orders.count()  # cached here: the features and the BTYD summary would each scan the rows first
        # the scoring reads the features three times (scores, noise, segments)
        features = customer_features_from_orders(orders, as_of, ctx.cfg["cleaning"]["returns"]).persist()
        persisted.append(features)
        scored = _state_rows(model.assign(features), as_of, version).persist()
        persisted.append(scored)
        updated = scored.count()
        steps.done("score")
        before = store.customer_state()
        changes = _segment_changes(ctx, scored, before, event_times, as_of, version, batch_id)
        store.stage(version, "segment_updates", changes)
        store.stage_customer_state(
            version, before.join(scored.select("customer_id"), "customer_id", "left_anti").unionByName(scored)
        )
        steps.done("state")
        kind = "batch" if raw_df is not None else "tick"
        commit = Commit(
            version,
            kind,
            batch_id if batch_id is not None else previous.last_batch_id,
            as_of.isoformat(),
            _now().isoformat(timespec="seconds"),
        )
        n_changes = store.staged_rows(version, "segment_updates")
        _stage_progress(ctx, commit, counts, started, updated, n_changes, batch_id)
        store.publish(commit)
        steps.done("publish")
        if new_orders is not None:
            ctx.orders.add(version, new_orders)
            new_orders = None
        log.info(
            "stream: version %d (%s%s): %d lines, %d accepted, rejects %s; %d customers updated, %d segment "
            "changes; as of %s; %.1f s (%s)",
            version,
            kind,
            f" {batch_id}" if batch_id is not None else "",
            counts["input_rows"],
            counts["accepted_rows"],
            counts["rejected"],
            updated,
            n_changes,
            as_of,
            time.time() - started,
            steps,
        )
        return commit
    finally:
        for df in persisted:
            df.unpersist()
        if new_orders is not None:  # not committed: the memory keeps the previous version
            new_orders.unpersist()


class _Steps:
    """How long each step of a version took, for its log line."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.took: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.took[step] = now - self.mark
        self.mark = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {s:.1f} s" for step, s in self.took.items())


def _classify_batch(
    ctx: StreamContext, previous: Commit, version: int, raw_df: DataFrame, persisted: list[DataFrame]
) -> tuple[DataFrame, dict[str, Any]]:
    """The micro-batch's rows classified (cached, appended to `persisted`), its rejects staged, and the counts:
    a line an earlier version accepted is a `duplicate` here, found by its fingerprint among the lines of its
    date (a copy of a line has the line's date)."""
    classified = _classified_lines(ctx, raw_df).persist()
    persisted.append(classified)
    counts = _batch_counts(classified)
    if ctx.drop_duplicates and counts["dates"]:
        # the fingerprints of the dates' earlier lines (they grow all day) are scanned once, not shuffled or
        # broadcast: the batch's own fingerprints are the small side, and so are the ones found among them
        # (each accepted line's fingerprint is stored once)
        batch_keys = classified.filter(_accepted()).select(*LINE_KEY)
        seen = (
            ctx.store.state_table("lines", previous.version, counts["dates"])
            .select(*LINE_KEY)
            .join(F.broadcast(batch_keys), list(LINE_KEY), "left_semi")
            .withColumn("_seen", F.lit(True))
        )
        classified = (
            classified.join(F.broadcast(seen), list(LINE_KEY), "left")
            .withColumn(
                "reject_reason",
                F.when(_accepted() & F.col("_seen"), F.lit("duplicate")).otherwise(F.col("reject_reason")),
            )
            .drop("_seen")
            .persist()
        )
        persisted.append(classified)
    # the lines per reason after the duplicate check: the reconciliation checks them against the input rows
    # counted before it (a join that lost or doubled a line shows); counted first, so the rows are cached by
    # every core before the rejects are written as one file (a single task would compute them all)
    lines = {
        r["reject_reason"]: int(r["n"])
        for r in classified.groupBy("reject_reason").agg(F.sum("_lines").alias("n")).collect()
    }
    ctx.store.stage(version, "rejects", rejects_table(each_line(classified), ctx.originals))
    return classified, {
        **counts,
        "rejected": {reason: n for reason, n in lines.items() if reason is not None},
        "accepted_rows": lines.get(None, 0),
        "earliest_file": _earliest_file(raw_df),
    }


def _earliest_file(raw_df: DataFrame) -> dt.datetime | None:
    """When the batch's oldest file landed (its modification time), for the latency."""
    if LANDED_COLUMN not in raw_df.columns:
        return None
    return raw_df.select(F.min(LANDED_COLUMN).alias("t")).first()["t"]


def _segment_changes(
    ctx: StreamContext,
    scored: DataFrame,
    before: DataFrame,
    event_times: DataFrame | None,
    as_of: dt.date,
    version: int,
    batch_id: int | None,
) -> DataFrame:
    """One row per re-scored customer whose segment is not the one before (a new customer's before is null)."""
    previous = before.join(F.broadcast(scored.select("customer_id")), "customer_id", "left_semi").select(
        "customer_id",
        F.col("segment_id").alias("previous_segment_id"),
        F.col("segment_name").alias("previous_segment_name"),
    )
    changed = scored.join(previous, "customer_id", "left").filter(
        ~F.col("segment_id").eqNullSafe(F.col("previous_segment_id"))
    )
    tick_time = F.lit(as_of.isoformat()).cast("timestamp")
    if event_times is not None:
        changed = changed.join(event_times, "customer_id", "left")
        event_time = F.coalesce(F.col("event_time"), tick_time)
    else:
        event_time = tick_time
    return changed.select(
        "customer_id",
        "previous_segment_id",
        "previous_segment_name",
        "segment_id",
        "segment_name",
        event_time.alias("event_time"),
        "as_of_date",
        F.lit(batch_id).cast("long").alias("batch_id"),
        F.lit(version).cast("long").alias("version"),
        F.lit(ctx.model.run_id).alias("run_id"),
        F.lit(ctx.run_id).alias("stream_run_id"),
    )


def _stage_progress(
    ctx: StreamContext,
    commit: Commit,
    counts: dict[str, Any],
    started: float,
    updated: int | None,
    changes: int | None,
    batch_id: int | None = None,
) -> None:
    committed = _now()
    earliest = counts.get("earliest_file")
    rejected = counts["rejected"]
    row = (
        commit.version,
        commit.kind,
        batch_id,
        ctx.run_id,
        dt.date.fromisoformat(commit.as_of_date),
        dt.datetime.fromtimestamp(started, dt.timezone.utc).replace(tzinfo=None),
        committed,
        counts["input_rows"],
        counts["accepted_rows"],
        sum(rejected.values()),
        *[rejected.get(reason, 0) for reason in REJECT_REASONS],
        updated,
        changes,
        round(time.time() - started, 3),
        round((committed - earliest).total_seconds(), 3) if earliest else None,
    )
    if counts["input_rows"] != counts["accepted_rows"] + sum(rejected.values()):
        raise RuntimeError("reconciliation failed: input rows != accepted + rejected")
    ctx.store.stage(commit.version, "stream_progress", local_dataframe(ctx.spark, [row], PROGRESS_SCHEMA))
