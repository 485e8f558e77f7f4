"""Validate stage: parse the raw columns and give every row either no reject reason or exactly one.

Takes what `io.read_transactions` returns and hands the features stage the same rows with parsed columns
(`_customer_id`, `_order_id`, `_ts`, `_quantity`, `_unit_price`, `_value`) and `reject_reason` (null when
accepted). Reasons are checked in the documented order and the first match wins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.io import CORRUPT_COLUMN, col

#: Every reason a row can be rejected for, in the order they are checked.
REJECT_REASONS = (
    "malformed_row",
    "missing_customer_id",
    "invalid_timestamp",
    "invalid_number",
    "non_positive_price",
    "duplicate",
    "after_snapshot",
)

# Exact decimal arithmetic: sums do not depend on partitioning, so every run reconciles to the cent.
QUANTITY_TYPE = T.DecimalType(18, 3)
MONEY_TYPE = T.DecimalType(18, 6)


#: What `strip` removes from both ends: Java's `\s` (space, tab, newline, vertical tab, form feed, return).
WHITE_SPACE = " \t\n\x0b\f\r"


def strip(c: Column) -> Column:
    """The value as a string without leading or trailing white space (tabs and newlines too, not only spaces).
    `btrim` with a character set: the same as a `^\\s+|\\s+$` regex, without a regex per value."""
    return F.btrim(c.cast("string"), F.lit(WHITE_SPACE))


def normalize_customer_id(c: Column) -> Column:
    """Trimmed string id; `17850.0` becomes `17850`; empty becomes null."""
    trimmed = strip(c)
    decimal_form = F.regexp_replace(trimmed, r"^(\d+)\.0+$", "$1")
    return F.when(trimmed == "", None).when(trimmed.contains("."), decimal_form).otherwise(trimmed)


def _parse_timestamp(c: Column, data_type: T.DataType, timestamp_format: str) -> Column:
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return c.cast("timestamp")
    return F.try_to_timestamp(strip(c), F.lit(timestamp_format))


def _parse_decimal(c: Column, data_type: T.DataType, target: T.DecimalType) -> Column:
    if isinstance(data_type, T.NumericType):
        return c.try_cast(target)
    return strip(c).try_cast(target)


def with_parsed_columns(df: DataFrame, columns: dict[str, str | None], timestamp_format: str) -> DataFrame:
    """Add the parsed, typed columns the later checks and features use; unparsable values become null."""
    types = {f.name: f.dataType for f in df.schema.fields}
    order_col = columns.get("order_id")
    parsed = df.withColumns(
        {
            "_customer_id": normalize_customer_id(col(columns["customer_id"])),
            "_order_id": strip(col(order_col)) if order_col else F.lit(None).cast("string"),
            "_ts": _parse_timestamp(col(columns["timestamp"]), types[columns["timestamp"]], timestamp_format),
        }
    )
    if columns.get("amount"):
        name = columns["amount"]
        return parsed.withColumns(
            {
                "_quantity": F.lit(None).cast(QUANTITY_TYPE),
                "_unit_price": F.lit(None).cast(MONEY_TYPE),
                "_value": _parse_decimal(col(name), types[name], MONEY_TYPE),
            }
        )
    qty, price = columns["quantity"], columns["unit_price"]
    parsed = parsed.withColumns(
        {
            "_quantity": _parse_decimal(col(qty), types[qty], QUANTITY_TYPE),
            "_unit_price": _parse_decimal(col(price), types[price], MONEY_TYPE),
        }
    )
    return parsed.withColumn("_value", (F.col("_quantity") * F.col("_unit_price")).cast(T.DecimalType(38, 9)))


def with_reject_reason(df: DataFrame, amount_mode: bool) -> DataFrame:
    """Add `reject_reason`: the first failed check of malformed / missing id / timestamp / number / price."""
    if amount_mode:
        bad_number = F.col("_value").isNull()
        bad_price = F.col("_value") == 0
    else:
        bad_number = F.col("_quantity").isNull() | F.col("_unit_price").isNull() | (F.col("_quantity") == 0)
        bad_price = F.col("_unit_price") <= 0
    reason = (
        F.when(F.col(CORRUPT_COLUMN).isNotNull(), F.lit("malformed_row"))
        .when(F.col("_customer_id").isNull(), F.lit("missing_customer_id"))
        .when(F.col("_ts").isNull(), F.lit("invalid_timestamp"))
        .when(bad_number, F.lit("invalid_number"))
        .when(bad_price, F.lit("non_positive_price"))
    )
    return df.withColumn("reject_reason", reason)


def with_duplicate_reason(
    df: DataFrame, original_cols: list[str], cluster_by: list[str] | None = None
) -> DataFrame:
    """Mark every exact repeat of an accepted row (all original columns equal) as `duplicate`; keep one.

    All rows are grouped on their original columns and raw line (a hash aggregation: one shuffle, no sort) and
    every group comes back as its copies: an accepted group as one accepted row and `copies - 1` duplicates, a
    rejected group as `copies` rows with its reason (the reason is a function of the grouped columns). The
    copies are identical, so which one is kept does not matter. One scan feeds it all: splitting the rows into
    accepted and rejected before grouping would read a CSV twice, and its malformed-row detection depends on
    the columns each read asks for. `cluster_by`: original columns to shuffle by instead of all of them (every
    copy shares them), so that a later aggregation by those finds each customer's rows in one task.
    """
    keys = [*original_cols, *([CORRUPT_COLUMN] if CORRUPT_COLUMN in df.columns else [])]
    derived = [c for c in df.columns if c not in keys]
    if cluster_by:
        df = df.repartition(*[col(c) for c in cluster_by])
    groups_df = df.groupBy(*[col(c) for c in keys]).agg(
        F.count(F.lit(1)).alias("_copies"), *[F.first(col(c)).alias(c) for c in derived]
    )
    duplicate = F.col("reject_reason").isNull() & (F.col("_copy") > 1)
    return (
        groups_df.withColumn("_copy", F.explode(F.sequence(F.lit(1), F.col("_copies"))))
        .withColumn("reject_reason", F.when(duplicate, F.lit("duplicate")).otherwise(F.col("reject_reason")))
        .select(*[col(c) for c in df.columns])
    )


def with_after_snapshot_reason(df: DataFrame, snapshot_date: str) -> DataFrame:
    """Set aside otherwise-accepted lines dated on or after the snapshot date (checked last)."""
    late = F.col("reject_reason").isNull() & (F.to_date(F.col("_ts")) >= F.lit(snapshot_date).cast("date"))
    return df.withColumn(
        "reject_reason", F.when(late, F.lit("after_snapshot")).otherwise(F.col("reject_reason"))
    )


def classify_rows(
    df: DataFrame,
    input_cfg: dict[str, Any],
    drop_duplicates: bool,
    original_cols: list[str],
    cluster_by_customer: bool = False,
) -> DataFrame:
    """Parse and give each row its reject reason (before the snapshot cut, which needs the snapshot date).
    `cluster_by_customer`: the duplicate check shuffles by the raw customer id and order id columns (see
    `with_duplicate_reason`), which the ledger's per-order sums then use."""
    columns = input_cfg["columns"]
    classified = df.transform(
        with_parsed_columns, columns=columns, timestamp_format=input_cfg["timestamp_format"]
    ).transform(with_reject_reason, amount_mode=bool(columns.get("amount")))
    if drop_duplicates:
        cluster_by = (
            [c for c in (columns["customer_id"], columns.get("order_id")) if c]
            if cluster_by_customer
            else None
        )
        classified = classified.transform(
            with_duplicate_reason, original_cols=original_cols, cluster_by=cluster_by
        )
    return classified


def ledger(lines_df: DataFrame, original_cols: list[str]) -> DataFrame:
    """The classified rows summed into what the later stages need, small enough to cache (the lines are not):

    - kind `order`: accepted lines (with `features.with_line_kind` columns) summed per `_customer_id`,
      `_order_key`, `_date` and `_is_return`: `_value`, `_abs_value`, `_lines`, `_latest` (latest timestamp);
    - kind `reject`: rejected rows grouped on their original columns, raw line and reason, `_lines` copies each.

    One aggregation (map-side partial sums first: after the duplicate check each customer's rows are in one
    task). Every input row is counted in exactly one ledger row's `_lines`.
    """
    line = F.col("reject_reason").isNull()
    reject = ~line
    return (
        lines_df.select(
            F.when(line, F.lit("order")).otherwise(F.lit("reject")).alias("_kind"),
            "reject_reason",
            F.when(line, F.col("_customer_id")).alias("_customer_id"),
            *[F.when(line, F.col(c)).alias(c) for c in ("_order_key", "_date", "_is_return")],
            *[F.when(reject, col(c)).alias(c) for c in original_cols],
            F.when(reject, F.col(CORRUPT_COLUMN)).alias(CORRUPT_COLUMN),
            F.when(line, F.col("_value")).alias("_value"),
            F.when(line, F.col("_ts")).alias("_ts"),
        )
        .groupBy(
            "_kind",
            "reject_reason",
            "_customer_id",
            "_order_key",
            "_date",
            "_is_return",
            *[col(c) for c in original_cols],
            col(CORRUPT_COLUMN),
        )
        .agg(
            F.count(F.lit(1)).alias("_lines"),
            F.sum("_value").alias("_value"),
            F.sum(F.abs(F.col("_value"))).alias("_abs_value"),
            F.max("_ts").alias("_latest"),
        )
    )


def ledger_summary(ledger_df: DataFrame) -> tuple[int, dict[str, int], dt.date | None]:
    """(rows, rows per reject reason, calendar date of the latest accepted timestamp or None) of a ledger."""
    rows = (
        ledger_df.groupBy("reject_reason")
        .agg(F.sum("_lines").alias("n"), F.to_date(F.max("_latest")).alias("latest"))
        .collect()
    )
    by_reason = {r["reject_reason"]: int(r["n"]) for r in rows if r["reject_reason"] is not None}
    latest = next((r["latest"] for r in rows if r["reject_reason"] is None), None)
    return sum(int(r["n"]) for r in rows), by_reason, latest


def ledger_orders(ledger_df: DataFrame) -> DataFrame:
    """The accepted lines of a ledger, summed per order: the input of `features.customer_features_from_orders`."""
    return ledger_df.filter(F.col("_kind") == "order").select(
        F.col("_customer_id").alias("customer_id"),
        "_order_key",
        "_date",
        "_is_return",
        "_value",
        "_abs_value",
    )


def ledger_rejects(ledger_df: DataFrame, original_cols: list[str]) -> DataFrame:
    """The `rejects` table from a ledger: each rejected row as often as it came."""
    copies_df = ledger_df.filter(F.col("_kind") == "reject").withColumn(
        "_copy", F.explode(F.sequence(F.lit(1), F.col("_lines")))
    )
    return rejects_table(copies_df, original_cols)


def rejects_table(classified_df: DataFrame, original_cols: list[str]) -> DataFrame:
    """Rejected rows: the original columns as strings, the raw line of malformed rows, and the reason."""
    return classified_df.filter(F.col("reject_reason").isNotNull()).select(
        *[col(c).cast("string").alias(c) for c in original_cols],
        F.col(CORRUPT_COLUMN).alias("raw_line"),
        "reject_reason",
    )


def max_accepted_date(classified_df: DataFrame):
    """Calendar date of the latest accepted timestamp, or None when nothing was accepted."""
    return (
        classified_df.filter(F.col("reject_reason").isNull())
        .agg(F.to_date(F.max("_ts")).alias("d"))
        .first()["d"]
    )
