"""Source stage for a transaction log: the read rows validated into the ledger, with their reconciliation.

Takes the reader's rows (`io.read_transactions`, timestamp format resolved) and hands the features stage the
cached ledger (`validate.ledger`: accepted lines summed per order, rejects grouped) with the counts that
reconcile it: every input row is accepted or rejected with one reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.features import with_line_kind
from segmentation.io import CORRUPT_COLUMN
from segmentation.timestamps import timestamp_failure
from segmentation.validate import (
    PARTITION_KEY,
    REJECT_REASONS,
    classify_weighted,
    ledger,
    ledger_summary,
    with_after_snapshot_reason,
)

log = logging.getLogger(__name__)


@dataclass
class ValidatedLedger:
    """The persisted ledger and its reconciliation: input_rows = accepted_rows + sum(rejected)."""

    ledger_df: DataFrame
    snapshot_date: dt.date
    input_rows: int
    accepted_rows: int
    rejected: dict[str, int]


def ordered_counts(counts: dict[str, int], order: tuple[str, ...]) -> dict[str, int]:
    """`counts` in the documented order of `order`, without the reasons that did not occur."""
    return {reason: counts[reason] for reason in order if counts.get(reason)}


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
        raise InputError(f"input has no rows: {inp['path']}")
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
