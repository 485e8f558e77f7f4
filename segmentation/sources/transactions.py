"""Source stage for a transaction log: raw lines -> validated ledger -> one row of features per customer.

Reads the log (`sources.read`, timestamp format resolved), classifies every line (`sources.validate`: accepted,
or rejected with one reason), sums the accepted lines per order into the cached ledger, builds the customer
features (`features.rfm`), joins `input.demographics` when configured, and hands the pipeline a `Source`
whose counts reconcile every input row.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.features.rfm import EXCLUDED_REASONS, customer_features_from_orders, with_line_kind
from segmentation.features.scores import rfm_breakpoints
from segmentation.sources.customers import (
    CUSTOMER_REJECT_REASONS,
    accepted_customers,
    classify_customer_rows,
    demographics_input,
    read_customer_table,
    with_demographics,
)
from segmentation.sources.read import CORRUPT_COLUMN, input_name, original_columns, read_transactions
from segmentation.sources.source import Reconciliation, Source, clustering_layout, count_by, ordered_counts
from segmentation.sources.timestamps import resolve_timestamp_format, timestamp_failure
from segmentation.sources.validate import (
    PARTITION_KEY,
    REJECT_REASONS,
    classify_weighted,
    ledger,
    ledger_items,
    ledger_orders,
    ledger_rejects,
    ledger_summary,
    with_after_snapshot_reason,
)
from segmentation.timer import StageTimer

log = logging.getLogger(__name__)


@dataclass
class ValidatedLedger:
    """The persisted ledger and its reconciliation: input_rows = accepted_rows + sum(rejected)."""

    ledger_df: DataFrame
    snapshot_date: dt.date
    input_rows: int
    accepted_rows: int
    rejected: dict[str, int]


def validated_ledger(raw_df: DataFrame, cfg: dict[str, Any], originals: list[str]) -> ValidatedLedger:
    """Classify every row, sum the ledger (persisted: the caller unpersists it), derive the snapshot date and
    check that enough was accepted; one clear error naming the cause and an example row otherwise."""
    inp = cfg["input"]
    classified_df = classify_weighted(
        raw_df, inp, cfg["cleaning"]["drop_duplicates"], originals, cluster_by_customer=True
    )
    if cfg.get("snapshot_date"):
        classified_df = classified_df.transform(
            with_after_snapshot_reason, snapshot_date=cfg["snapshot_date"]
        )
    lines_df = classified_df.transform(
        with_line_kind,
        return_prefix=inp.get("return_order_prefix"),
        has_order_id=bool(inp["columns"].get("order_id")),
    )
    # the lines summed per order and the rejects grouped: what later stages read, cached (the lines are not)
    ledger_df = ledger(lines_df, originals, clustered_by=[PARTITION_KEY]).persist()
    try:
        return _reconciled(ledger_df, cfg)
    except BaseException:
        ledger_df.unpersist()
        raise


def _reconciled(ledger_df: DataFrame, cfg: dict[str, Any]) -> ValidatedLedger:
    inp = cfg["input"]
    input_rows, counts, latest = ledger_summary(ledger_df)
    if input_rows == 0:
        raise InputError(f"input has no rows: {input_name(inp)}")
    checked = input_rows - counts.get("malformed_row", 0) - counts.get("missing_customer_id", 0)
    if counts.get("invalid_timestamp", 0) * 2 > checked:
        raise InputError(
            timestamp_failure(
                ledger_df,
                inp["columns"]["timestamp"],
                inp["timestamp_format"],
                counts["invalid_timestamp"],
                checked,
            )
        )
    if cfg.get("snapshot_date"):
        snapshot_date = dt.date.fromisoformat(cfg["snapshot_date"])
    elif latest is None:
        counts = ordered_counts(counts, REJECT_REASONS)
        raise InputError(
            f"no input row was accepted ({input_rows} rows; rejects: {counts}); "
            f"{_example_reject(ledger_df, inp['columns'], next(iter(counts)))}"
        )
    else:
        snapshot_date = latest + dt.timedelta(days=1)
    rejected = ordered_counts(counts, REJECT_REASONS)
    accepted_rows = input_rows - sum(rejected.values())
    log.info(
        "snapshot %s: %d input rows, %d accepted, rejects %s",
        snapshot_date,
        input_rows,
        accepted_rows,
        rejected,
    )
    if accepted_rows == 0:
        raise InputError(f"no input row was accepted before snapshot {snapshot_date} (rejects: {rejected})")
    return ValidatedLedger(ledger_df, snapshot_date, input_rows, accepted_rows, rejected)


def _example_reject(ledger_df: DataFrame, columns: dict[str, str | None], reason: str) -> str:
    """One rejected row of `reason`, its mapped columns as written: what a user looks at first."""
    row = ledger_df.filter(F.col("reject_reason") == reason).first()
    if row is None:
        return ""
    shown = ", ".join(f"{name}={row[name]!r}" for name in dict.fromkeys(v for v in columns.values() if v))
    if row[CORRUPT_COLUMN] is not None:
        shown = f"line {row[CORRUPT_COLUMN]!r}"
    return f"e.g. a {reason} row: {shown}"


def _join_demographics(
    spark: SparkSession, inp: dict[str, Any], customers_df: DataFrame, persisted: list[DataFrame]
) -> tuple[DataFrame, dict[str, Any], list[str]]:
    """Read and validate the customer table beside the transactions and join it; returns the joined customers,
    the demographics' reconciliation for the manifest and the joined column names."""
    demo_cfg = demographics_input(inp)
    classified_df = classify_customer_rows(read_customer_table(spark, demo_cfg), demo_cfg).persist()
    persisted.append(classified_df)
    rows = classified_df.count()
    rejected = count_by(classified_df, "reject_reason", CUSTOMER_REJECT_REASONS)
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


def transaction_source(
    spark: SparkSession, cfg: dict[str, Any], timer: StageTimer, persisted: list[DataFrame]
) -> Source:
    """Read, validate and aggregate the transaction log into the customers of one snapshot (stages read,
    validate and features); every DataFrame it caches is appended to `persisted`."""
    inp, model_cfg = cfg["input"], cfg["model"]
    with timer.stage("read"):
        enabled = cfg["recommend"]["enabled"]
        raw_df, inp = read_transactions(spark, inp, require_products=enabled is True)
        if enabled is False:  # no product stages: the ledger is summed per order only
            inp = {**inp, "columns": {**inp["columns"], "product_id": None, "product_name": None}}
        originals = original_columns(raw_df)
        inp, detected_format = resolve_timestamp_format(raw_df, inp, int(model_cfg["seed"]))

    with timer.stage("validate"):
        validated = validated_ledger(raw_df, {**cfg, "input": inp}, originals)
        ledger_df = validated.ledger_df
        persisted.append(ledger_df)

    with timer.stage("features"):
        orders_df = ledger_orders(ledger_df)
        customers_df = customer_features_from_orders(
            orders_df, validated.snapshot_date, cfg["cleaning"]["returns"]
        )
        demographics, demo_columns = None, []
        if inp["demographics"].get("path"):
            customers_df, demographics, demo_columns = _join_demographics(spark, inp, customers_df, persisted)
        customers_df = customers_df.persist()
        persisted.append(customers_df)
        excluded = count_by(customers_df, "excluded_reason", EXCLUDED_REASONS)
        customers = customers_df.count()
        rfm_bp = rfm_breakpoints(customers_df.filter(F.col("frequency") > 0))
        clustered_df = clustering_layout(customers_df, int(model_cfg["partitions"]))
        persisted.append(clustered_df)
        clustered = clustered_df.count()
        log.info("%d customers, %d to cluster, excluded %s", customers, clustered, excluded)
    return Source(
        kind="transactions",
        input_cfg=inp,
        snapshot_date=validated.snapshot_date.isoformat(),
        customers_df=customers_df,
        clustered_df=clustered_df,
        rejects_df=ledger_rejects(ledger_df, originals),
        counts=Reconciliation(
            validated.input_rows, validated.accepted_rows, validated.rejected, customers, clustered, excluded
        ),
        order_column="monetary",
        manifest={
            "input_path": input_name(inp),
            "input_format": inp["format"],
            "timestamp_format": inp["timestamp_format"],
            "timestamp_format_detected": detected_format,
            "demographics": demographics,
        },
        rfm_breakpoints=rfm_bp,
        demographic_columns=demo_columns,
        items_df=ledger_items(ledger_df) if inp["columns"].get("product_id") else None,
    )
