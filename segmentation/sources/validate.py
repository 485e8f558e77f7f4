"""Validate stage: parse the raw columns and give every row either no reject reason or exactly one.

Takes what `sources.read.read_transactions` returns and hands the features stage the same rows with parsed columns
(`_customer_id`, `_order_id`, `_ts`, `_quantity`, `_unit_price`, `_value`) and `reject_reason` (null when
accepted). Reasons are checked in the documented order and the first match wins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.compat import try_cast
from segmentation.io import col, strip
from segmentation.sources.read import CORRUPT_COLUMN  # noqa: F401 - WHITE_SPACE re-exported
from segmentation.sources.timestamps import parse_timestamp, resolve_timestamp_format

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


def normalize_customer_id(c: Column, data_type: T.DataType | None = None) -> Column:
    """Trimmed string id; `17850.0` becomes `17850`; empty becomes null. The common decimal form, digits and
    `.0`, is cut without the replacing regex (about twice as fast); other values with a dot go through it.
    A typed column: whole floats and decimals as their integer digits (12345678.0 is `12345678`, never Spark's
    `1.2345678E7`), integers as they are."""
    if isinstance(data_type, T.IntegralType):
        return c.cast("string")
    if isinstance(data_type, (T.FloatType, T.DoubleType, T.DecimalType)):
        whole = (
            (c == F.floor(c)) & ~F.isnan(c) if not isinstance(data_type, T.DecimalType) else c == F.floor(c)
        )
        return F.when(whole, try_cast(F.floor(c), T.DecimalType(38, 0)).cast("string")).otherwise(
            c.cast("string")
        )
    trimmed = strip(c)
    whole = F.substring_index(trimmed, ".", 1)
    point_zero = trimmed.endswith(".0") & (F.length(trimmed) == F.length(whole) + 2) & whole.rlike(r"^\d+$")
    decimal_form = F.regexp_replace(trimmed, r"^(\d+)\.0+$", "$1")
    return (
        F.when(trimmed == "", None)
        .when(point_zero, whole)
        .when(trimmed.contains("."), decimal_form)
        .otherwise(trimmed)
    )


def customer_id_column(df: DataFrame, name: str) -> Column:
    """`normalize_customer_id` of the input column `name`, by its type."""
    return normalize_customer_id(col(name), df.schema[name].dataType)


#: The column the job's validate stage shuffles the rows by (`with_partition_key`).
PARTITION_KEY = "_partition_key"


def with_partition_key(df: DataFrame, columns: dict[str, str | None]) -> DataFrame:
    """Add `_customer_id` (parsed here, before the shuffle) and `PARTITION_KEY`: the customer id, or for a
    row without one, a NUL and its raw order id (or timestamp), so that those rows spread over the tasks.

    Every copy of a row has the same key, and so do all the accepted lines of a customer: shuffled by it, the
    duplicate check, the ledger's sums per order and the features stage's sums per customer all run in the
    tasks that hold the rows, with one shuffle for the three (the ledger is cached with that partitioning)."""
    spread = col(columns.get("order_id") or columns["timestamp"]).cast("string")
    return df.withColumn("_customer_id", customer_id_column(df, columns["customer_id"])).withColumn(
        PARTITION_KEY,
        F.coalesce(F.col("_customer_id"), F.concat(F.lit("\u0000"), F.coalesce(spread, F.lit("")))),
    )


#: The pattern of the bundled data and of most database exports (parsed by a cast where the shape is exact).
ISO_FORMAT = "yyyy-MM-dd HH:mm:ss"


def decimal_point_text(c: Column, decimal: str) -> Column:
    """A number written as text, with a "." as its decimal mark. `decimal` ",": a value written with a decimal
    comma (`2,55`, `-1.234,5`); a "." is then only allowed as a thousands separator between groups of three
    digits (anything else is null), so `2.55` is never silently read as 255."""
    if decimal != ",":
        return c
    value = strip(c)
    european = value.rlike(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
    return F.when(european, F.regexp_replace(F.regexp_replace(value, r"\.", ""), ",", "."))


def _parse_decimal(c: Column, data_type: T.DataType, target: T.DecimalType, decimal: str = ".") -> Column:
    """A number as an exact decimal; null when it does not parse. A cast from a string ignores white space
    (every character up to U+0020) around the number by itself, so the value is not stripped first."""
    if isinstance(data_type, T.StringType):
        return try_cast(decimal_point_text(c, decimal), target)
    return try_cast(c, target)


def with_parsed_columns(
    df: DataFrame, columns: dict[str, str | None], timestamp_format: str, decimal: str = "."
) -> DataFrame:
    """Add the parsed, typed columns the later checks and features use; unparsable values become null.
    `timestamp_format`: a resolved format (`timestamps.parse_timestamp`), not `auto`."""
    types = {f.name: f.dataType for f in df.schema.fields}
    order_col = columns.get("order_id")
    parsed = df.withColumns(
        {
            "_customer_id": F.col("_customer_id")
            if "_customer_id" in df.columns
            else customer_id_column(df, columns["customer_id"]),
            "_order_id": strip(col(order_col)) if order_col else F.lit(None).cast("string"),
            "_ts": parse_timestamp(col(columns["timestamp"]), types[columns["timestamp"]], timestamp_format),
        }
    )
    if columns.get("product_id"):  # the product of the line: an id as text, its name when mapped
        name = columns.get("product_name")
        parsed = parsed.withColumns(
            {
                "_product_id": strip(col(columns["product_id"]).cast("string")),
                "_product_name": strip(col(name).cast("string")) if name else F.lit(None).cast("string"),
            }
        )
    if columns.get("amount"):
        name = columns["amount"]
        return parsed.withColumns(
            {
                "_quantity": F.lit(None).cast(QUANTITY_TYPE),
                "_unit_price": F.lit(None).cast(MONEY_TYPE),
                "_value": _parse_decimal(col(name), types[name], MONEY_TYPE, decimal),
            }
        )
    qty, price = columns["quantity"], columns["unit_price"]
    parsed = parsed.withColumns(
        {
            "_quantity": _parse_decimal(col(qty), types[qty], QUANTITY_TYPE, decimal),
            "_unit_price": _parse_decimal(col(price), types[price], MONEY_TYPE, decimal),
        }
    )
    return parsed.withColumn("_value", (F.col("_quantity") * F.col("_unit_price")).cast(T.DecimalType(38, 9)))


def decimal_mark(input_cfg: dict[str, Any]) -> str:
    """The decimal mark of the input's numbers written as text: `input.csv.decimal` for a CSV, else "."."""
    return (input_cfg.get("csv") or {}).get("decimal", ".") if input_cfg.get("format") == "csv" else "."


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


def duplicate_groups(df: DataFrame, original_cols: list[str]) -> DataFrame:
    """The raw rows grouped on all their original columns and raw line: one row per distinct input row, with
    `_copies` (how many times it came). A hash aggregation of the raw values only; the parsing comes after it,
    once per distinct row. One scan feeds it all: a CSV's malformed-row detection depends on the columns each
    read asks for, so every column is read once, here. Columns of `with_partition_key`, when present, are
    grouping keys too (they are functions of the original columns, so the groups are the same), so that rows
    shuffled by the key are grouped in the tasks that hold them.
    """
    derived = [c for c in ("_customer_id", PARTITION_KEY) if c in df.columns]
    keys = [*original_cols, *([CORRUPT_COLUMN] if CORRUPT_COLUMN in df.columns else []), *derived]
    return df.groupBy(*[col(c) for c in keys]).agg(F.count(F.lit(1)).alias("_copies"))


def with_duplicate_reason(groups_df: DataFrame) -> DataFrame:
    """Classified `duplicate_groups` -> rows with `_lines`, the input rows each stands for: an accepted group of
    n copies gives its accepted row (1 line) and, when n > 1, a `duplicate` row (n - 1 lines); a rejected
    group gives one row with its reason (n lines): the reason is a function of the grouped columns."""
    accepted = F.col("reject_reason").isNull()
    repeated = accepted & (F.col("_copies") > 1)
    parts = F.when(repeated, F.array(F.lit(False), F.lit(True))).otherwise(F.array(F.lit(False)))
    return (
        groups_df.withColumn("_repeats", F.explode(parts))
        .withColumns(
            {
                "reject_reason": F.when(F.col("_repeats"), F.lit("duplicate")).otherwise(
                    F.col("reject_reason")
                ),
                "_lines": F.when(F.col("_repeats"), F.col("_copies") - 1)
                .when(accepted, F.lit(1))
                .otherwise(F.col("_copies"))
                .cast("long"),
            }
        )
        .drop("_repeats", "_copies")
    )


def with_after_snapshot_reason(df: DataFrame, snapshot_date: str) -> DataFrame:
    """Set aside otherwise-accepted lines dated on or after the snapshot date (checked last)."""
    late = F.col("reject_reason").isNull() & (F.to_date(F.col("_ts")) >= F.lit(snapshot_date).cast("date"))
    return df.withColumn(
        "reject_reason", F.when(late, F.lit("after_snapshot")).otherwise(F.col("reject_reason"))
    )


def classify_weighted(
    df: DataFrame,
    input_cfg: dict[str, Any],
    drop_duplicates: bool,
    original_cols: list[str],
    cluster_by_customer: bool = False,
) -> DataFrame:
    """Parse and give each row its reject reason (before the snapshot cut, which needs the snapshot date), with
    exact repeats grouped: every row has `_lines`, the number of input rows it stands for (`with_duplicate_reason`).
    `cluster_by_customer`: the rows are first shuffled by `with_partition_key`'s key, which `ledger` and the
    features stage then use."""
    columns = input_cfg["columns"]
    # a caller that has not resolved `auto` (the job does, to log and record it) gets the same detection here
    input_cfg, _ = resolve_timestamp_format(df, input_cfg, seed=0)
    if cluster_by_customer:
        df = df.transform(with_partition_key, columns=columns).repartition(F.col(PARTITION_KEY))
    if drop_duplicates:
        df = duplicate_groups(df, original_cols)
    classified = df.transform(
        with_parsed_columns,
        columns=columns,
        timestamp_format=input_cfg["timestamp_format"],
        decimal=decimal_mark(input_cfg),
    ).transform(with_reject_reason, amount_mode=bool(columns.get("amount")))
    if drop_duplicates:
        return classified.transform(with_duplicate_reason)
    return classified.withColumn("_lines", F.lit(1).cast("long"))


def classify_rows(
    df: DataFrame, input_cfg: dict[str, Any], drop_duplicates: bool, original_cols: list[str]
) -> DataFrame:
    """`classify_weighted` with one row per input row (the copies of a repeated row are `duplicate`)."""
    return each_line(classify_weighted(df, input_cfg, drop_duplicates, original_cols))


def each_line(weighted_df: DataFrame) -> DataFrame:
    """Rows with `_lines` (the input rows each stands for) as that many rows, without `_lines`."""
    return weighted_df.withColumn("_copy", F.explode(F.sequence(F.lit(1), F.col("_lines")))).drop(
        "_copy", "_lines"
    )


def ledger(lines_df: DataFrame, original_cols: list[str], clustered_by: list[str] | None = None) -> DataFrame:
    """The classified rows (`classify_weighted`, with `features.rfm.with_line_kind` columns) summed into what the
    later stages need, small enough to cache (the lines are not):

    - kind `order`: accepted lines summed per `_customer_id`, `_order_key`, `_date` and `_is_return`:
      `_value`, `_abs_value`, `_lines`, `_latest` (latest timestamp); with a mapped product also per
      `_product_id` and `_product_name`, with `_quantity` summed (`ledger_items`);
    - kind `reject`: rejected rows grouped on their original columns, raw line and reason, `_lines` copies.

    `clustered_by`: derived columns the rows are already shuffled by (`PARTITION_KEY`, not an original
    column). They stay grouping keys of both kinds (functions of the other keys, so the groups are the same),
    so the sums run in the tasks that hold the rows, with no second shuffle, and the ledger keeps that
    partitioning for `ledger_orders`. Every input row is counted in exactly one ledger row's `_lines`.
    """
    line = F.col("reject_reason").isNull()
    reject = ~line
    kept = list(clustered_by or [])
    order_keys = ["_order_key", "_date", "_is_return", *[c for c in PRODUCT_KEYS if c in lines_df.columns]]
    products = "_product_id" in lines_df.columns
    return (
        lines_df.select(
            *[col(c) for c in kept],
            F.when(line, F.lit("order")).otherwise(F.lit("reject")).alias("_kind"),
            "reject_reason",
            F.when(line, F.col("_customer_id")).alias("_customer_id"),
            *[F.when(line, F.col(c)).alias(c) for c in order_keys],
            *[F.when(reject, col(c)).alias(c) for c in original_cols],
            F.when(reject, F.col(CORRUPT_COLUMN)).alias(CORRUPT_COLUMN),
            F.when(line, F.col("_value")).alias("_value"),
            *([F.when(line, F.col("_quantity")).alias("_quantity")] if products else []),
            F.when(line, F.col("_ts")).alias("_ts"),
            "_lines",
        )
        .groupBy(
            *[col(c) for c in kept],
            "_kind",
            "reject_reason",
            "_customer_id",
            *order_keys,
            *[col(c) for c in original_cols],
            col(CORRUPT_COLUMN),
        )
        .agg(
            F.sum("_lines").alias("_lines"),
            F.sum("_value").alias("_value"),
            F.sum(F.abs(F.col("_value"))).alias("_abs_value"),
            *([F.sum("_quantity").alias("_quantity")] if products else []),
            F.max("_ts").alias("_latest"),
        )
    )


#: The product columns a ledger's order rows are also summed by when the input maps a product (`ledger_items`).
PRODUCT_KEYS = ("_product_id", "_product_name")


def ledger_items(ledger_df: DataFrame) -> DataFrame:
    """The accepted lines of a ledger with products, summed per customer, order, day, purchase or return and
    product: `customer_id`, `order_key`, `date`, `is_return`, `product_id`, `product_name`, `quantity`,
    `value` (exact decimals), `lines`. The input of the recommend stage."""
    customer = PARTITION_KEY if PARTITION_KEY in ledger_df.columns else "_customer_id"
    return ledger_df.filter(F.col("_kind") == "order").select(
        F.col(customer).alias("customer_id"),
        F.col("_order_key").alias("order_key"),
        F.col("_date").alias("date"),
        F.col("_is_return").alias("is_return"),
        F.col("_product_id").alias("product_id"),
        F.col("_product_name").alias("product_name"),
        F.col("_quantity").alias("quantity"),
        F.col("_value").alias("value"),
        F.col("_lines").alias("lines"),
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
    """The accepted lines of a ledger, summed per order: the input of `features.rfm.customer_features_from_orders`."""
    # an order's partition key is its customer id: taken from the key, the features stage's sums per customer
    # keep the ledger's partitioning (no shuffle)
    customer = PARTITION_KEY if PARTITION_KEY in ledger_df.columns else "_customer_id"
    return ledger_df.filter(F.col("_kind") == "order").select(
        F.col(customer).alias("customer_id"),
        "_order_key",
        "_date",
        "_is_return",
        "_value",
        "_abs_value",
    )


def ledger_rejects(ledger_df: DataFrame, original_cols: list[str]) -> DataFrame:
    """The `rejects` table from a ledger: each rejected row as often as it came."""
    return rejects_table(each_line(ledger_df.filter(F.col("_kind") == "reject")), original_cols)


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
