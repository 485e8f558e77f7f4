"""The stream: new transaction files move customers between segments within seconds, scored by a published model.

`run_stream` takes a SparkSession, a validated config (the input layout and cleaning rules the model was trained
with) and a published model, and keeps a per-customer state under the output folder (`publish.stream_store`)
that, after the stream has read files A..N, equals the batch job's features on the model's training lines plus
A..N, customer for customer. Spark Structured Streaming reads the landing folder (or any other source); each
micro-batch is one state version (`stream.version`), replayed batches are skipped, SIGTERM finishes the running
one.

Recency and tenure are counted to the state's date: the day after the latest accepted line, or later with
`as_of` (and with `daily_tick`, today in `input.time_zone`). When that date moves, every customer is re-scored
from the order rows (a clock tick), so a customer who buys nothing drifts towards "At risk" without a new line.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from segmentation.errors import InputError, OutputError
from segmentation.publish.snapshot import absolute_output_path, new_run_id
from segmentation.publish.stream_store import StreamStore
from segmentation.score import SavedModel
from segmentation.sources.read import read_input
from segmentation.sources.stream import STREAM_FORMATS, read_landing
from segmentation.sources.timestamps import resolve_timestamp_format
from segmentation.stream.version import StreamContext, apply_version, bootstrap

log = logging.getLogger(__name__)


#: What the stream asks of its session at the start (static settings): the same plans run every micro-batch,
#: about 150 generated classes a version, so Spark's cache of compiled code (100 by default) is made large
#: enough to keep them, instead of compiling them all again each batch (about 1.5 s of a 10,000-line batch).
SESSION_CONF = {"spark.sql.codegen.cache.maxEntries": "2000"}


def stream_input(
    spark: SparkSession, cfg: dict[str, Any], model: SavedModel
) -> tuple[dict[str, Any], DataFrame]:
    """The config's input with the model's timestamp format when the config leaves it to detection, and the
    training input's rows (the seed's lines; their schema is the landing files')."""
    inp = {**cfg["input"], "columns": {**cfg["input"]["columns"], "product_id": None, "product_name": None}}
    if inp["format"] not in STREAM_FORMATS:
        raise InputError(
            f"input.format {inp['format']!r} cannot be streamed: the stream is seeded from a file input "
            f"(input.path) and its landing folder holds {', '.join(STREAM_FORMATS)} files"
        )
    raw_df = read_input(spark, inp)
    trained = model.manifest.get("timestamp_format")
    if inp.get("timestamp_format", "auto") == "auto" and trained:
        inp["timestamp_format"] = trained
    inp, _ = resolve_timestamp_format(raw_df, inp, int(cfg["model"]["seed"]))
    return inp, raw_df


def run_stream(
    spark: SparkSession,
    cfg: dict[str, Any],
    model_root: str,
    landing: str,
    output: str,
    checkpoint: str,
    model_snapshot: str | None = None,
    trigger_seconds: float | None = None,
    available_now: bool = False,
    max_files_per_trigger: int | None = None,
    as_of: str | None = None,
    daily_tick: bool = False,
    stop: threading.Event | None = None,
    source: Callable[[SparkSession, T.StructType], DataFrame] | None = None,
) -> dict[str, Any]:
    """Run the stream until it has read every file (`available_now`) or until `stop` is set (SIGTERM sets it:
    the running batch is finished first); returns a summary of what this run committed.

    `source`: another streaming source than the landing folder (Kafka on a cluster that has the connector,
    docs/streaming.md): a function of the session and the training input's schema that returns a streaming
    DataFrame with those columns (and `_landed_at`, a timestamp, for the latency, when it has one)."""
    spark.conf.set("spark.sql.session.timeZone", cfg["input"]["time_zone"])
    model = SavedModel(spark, model_root, model_snapshot)
    store = StreamStore(spark, output)
    if store.root == absolute_output_path(model_root):
        raise OutputError(
            "stream into another output path than the model's: the stream's tables are no snapshot"
        )
    inp, training_df = stream_input(spark, cfg, model)
    ctx = StreamContext(spark, cfg, inp, training_df, model, store, new_run_id(), as_of, daily_tick)
    store.check_model(
        {
            "model_path": absolute_output_path(model_root),
            "model_snapshot_date": model.snapshot_date,
            "run_id": model.run_id,
        }
    )
    store.check_checkpoint(checkpoint)
    first = store.last_commit() or bootstrap(ctx)
    store.clean_committed(first.version)
    state = {"commit": first, "versions": 0}
    # a micro-batch is small: a shuffle partition per core, not the batch job's many; the state's version
    # folders listed by the driver, not by a Spark job each time; no adaptive execution (its re-planning after
    # each stage of a batch's small queries cost more than it saved: 8.5 s against 13 s for a 10,000-line
    # batch); the session's own values come back after
    with session_settings(
        spark,
        {
            "spark.sql.shuffle.partitions": str(spark.sparkContext.defaultParallelism),
            "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000",
            "spark.sql.adaptive.enabled": "false",
        },
    ):
        try:
            _run_query(
                ctx,
                state,
                inp,
                landing,
                checkpoint,
                trigger_seconds,
                available_now,
                max_files_per_trigger,
                stop,
                source,
            )
        finally:
            ctx.orders.release()  # the order rows this run kept in memory
    last = state["commit"]
    return {
        "output_path": store.root,
        "model_snapshot_date": model.snapshot_date,
        "run_id": model.run_id,
        "stream_run_id": ctx.run_id,
        "versions": state["versions"],
        "version": last.version,
        "as_of_date": last.as_of_date,
        "last_batch_id": last.last_batch_id,
    }


@contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]):
    """The session's SQL settings changed for the block, and put back after it."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _run_query(
    ctx: StreamContext,
    state: dict[str, Any],
    inp: dict[str, Any],
    landing: str,
    checkpoint: str,
    trigger_seconds: float | None,
    available_now: bool,
    max_files_per_trigger: int | None,
    stop: threading.Event | None,
    source: Callable[[SparkSession, T.StructType], DataFrame] | None,
) -> None:
    """The streaming query: a state version per micro-batch (and per clock tick), until the input is read
    (`available_now`) or `stop` is set; `state` holds the last commit and how many versions this run made."""
    spark, store = ctx.spark, ctx.store

    def advance(raw_df: DataFrame | None, batch_id: int | None) -> None:
        with ctx.lock:
            commit = state["commit"]
            floor = ctx.floor_date()
            if batch_id is None and (floor is None or floor <= dt.date.fromisoformat(commit.as_of_date)):
                return  # the clock has not moved past the state's date
            if batch_id is not None and batch_id <= commit.last_batch_id:
                log.info(
                    "stream: micro-batch %d is in version %d already: replay skipped",
                    batch_id,
                    commit.version,
                )
                return
            new = apply_version(ctx, commit, raw_df, batch_id)
            if new is not commit:
                state["commit"], state["versions"] = new, state["versions"] + 1

    def on_batch(batch_df: DataFrame, batch_id: int) -> None:
        if stop.is_set():  # before any work: Spark does not commit the batch, the next run reads it again
            ctx.failure = StopRequested()
            raise ctx.failure
        try:
            advance(batch_df, int(batch_id))
        except BaseException as exc:
            ctx.failure = exc
            raise

    stop = stop or threading.Event()
    advance(None, None)  # the clock first: a later --as-of re-scores before any new line
    writer = (
        (source or _landing_source(inp, landing, max_files_per_trigger))(spark, ctx.training_df.schema)
        .writeStream.foreachBatch(on_batch)
        .option("checkpointLocation", checkpoint)
        .queryName("stream-segments")
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{trigger_seconds or 1} seconds")
    )
    query = writer.start()
    store.record_query_id(str(query.id))
    try:
        while query.isActive:
            if stop.is_set() and not query.status["isTriggerActive"]:
                query.stop()  # idle: nothing to finish
                break
            if ctx.daily_tick and not query.status["isTriggerActive"]:
                advance(None, None)
            query.awaitTermination(min(1.0, trigger_seconds or 1.0))
        query.awaitTermination()
    except Exception:
        if isinstance(ctx.failure, StopRequested):
            log.info("stream: stopped after version %d", state["commit"].version)
        elif ctx.failure is not None:
            raise ctx.failure from None
        else:
            raise


def _landing_source(
    inp: dict[str, Any], landing: str, max_files_per_trigger: int | None
) -> Callable[[SparkSession, T.StructType], DataFrame]:
    return lambda spark, schema: read_landing(spark, inp, landing, schema, max_files_per_trigger)


class StopRequested(Exception):
    """Raised by a micro-batch that starts after a stop was asked for: it is left for the next run."""


def stop_on_sigterm() -> threading.Event:
    """An event SIGTERM (and Ctrl-C) sets, for `run_stream`'s `stop`: the running batch is finished, then the
    stream stops and the job exits 0."""
    event = threading.Event()

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        log.info("stream: %s received: stopping after the running batch", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event
