"""Source stage for a customer-level table (`input.kind: customers`): one row per customer, no aggregation.

Reading hands on the table's original columns (CSV: all strings, never inferred). Validation gives every row
either no reject reason or exactly one (`CUSTOMER_REJECT_REASONS`, first match wins) and adds the parsed
columns under internal names (`_f0`.. numeric, `_c0`.. categorical), so names with spaces, `$` or
parentheses never reach SQL. `customer_source` hands the pipeline the accepted rows as its customers; the
same validation serves `input.demographics` beside a transaction log (`demographics_input`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.compat import try_cast
from segmentation.errors import InputError
from segmentation.io import col, strip
from segmentation.sources.read import (
    CORRUPT_COLUMN,
    check_mapped_columns,
    input_name,
    original_columns,
    read_input,
)
from segmentation.sources.source import Reconciliation, Source, clustering_layout, count_by
from segmentation.sources.validate import customer_id_column, decimal_mark, decimal_point_text, rejects_table
from segmentation.timer import StageTimer

log = logging.getLogger(__name__)

#: Every reason a customer row can be rejected for, in the order they are checked.
CUSTOMER_REJECT_REASONS = (
    "malformed_row",
    "missing_customer_id",
    "duplicate_customer_id",
    "invalid_number",
    "missing_value",
)


def internal_names(input_cfg: dict[str, Any]) -> dict[str, str]:
    """Original column name -> internal name: `_f<i>` for numeric features, `_c<i>` for categorical ones."""
    names = {name: f"_f{i}" for i, name in enumerate(input_cfg["features"])}
    names.update({name: f"_c{i}" for i, name in enumerate(input_cfg["categorical"])})
    return names


def read_customer_table(spark: SparkSession, input_cfg: dict[str, Any]) -> DataFrame:
    """Read the customer table (CSV as strings, or Parquet) and check every configured column exists."""
    df = read_input(spark, input_cfg)
    roles = {"customer_id": input_cfg["columns"]["customer_id"]}
    roles.update({f"feature {n!r}": n for n in input_cfg["features"]})
    roles.update({f"categorical {n!r}": n for n in input_cfg["categorical"]})
    check_mapped_columns(df, roles)
    return df


def _as_double(c, data_type: T.DataType, decimal: str = "."):
    if isinstance(data_type, T.NumericType):
        return c.cast("double")
    return F.when(strip(c) == "", None).otherwise(try_cast(decimal_point_text(strip(c), decimal), "double"))


def classify_customer_rows(df: DataFrame, input_cfg: dict[str, Any]) -> DataFrame:
    """Parse the configured columns and give each row its reject reason (null when accepted).

    `invalid_number`: a numeric feature that is present but not a finite number. `missing_value`: an empty
    feature or category with `input.missing: reject` (with `impute` it stays null and is imputed later).
    `duplicate_customer_id`: every row of an id that occurs more than once among otherwise valid rows (no row
    can be preferred over another, so none is clustered).
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    names = internal_names(input_cfg)
    parsed = df.withColumn("customer_id", customer_id_column(df, input_cfg["columns"]["customer_id"]))
    for name in input_cfg["features"]:
        parsed = parsed.withColumn(names[name], _as_double(col(name), types[name], decimal_mark(input_cfg)))
    for name in input_cfg["categorical"]:
        value = strip(col(name))
        parsed = parsed.withColumn(names[name], F.when(value == "", None).otherwise(value))
    invalid = F.lit(False)
    missing = F.lit(False)
    for name in input_cfg["features"]:
        raw_present = col(name).isNotNull() & (strip(col(name)) != "")
        value = F.col(names[name])
        invalid = invalid | (raw_present & (value.isNull() | F.isnan(value) | (F.abs(value) == math.inf)))
        missing = missing | ~raw_present
    for name in input_cfg["categorical"]:
        missing = missing | F.col(names[name]).isNull()
    reason = (
        F.when(F.col(CORRUPT_COLUMN).isNotNull(), F.lit("malformed_row"))
        .when(F.col("customer_id").isNull(), F.lit("missing_customer_id"))
        .when(invalid, F.lit("invalid_number"))
    )
    if input_cfg["missing"] == "reject":
        reason = reason.when(missing, F.lit("missing_value"))
    classified = parsed.withColumn("reject_reason", reason)
    valid = F.col("reject_reason").isNull()
    repeats = F.sum(F.when(valid, 1).otherwise(0)).over(Window.partitionBy("customer_id"))
    return classified.withColumn(
        "reject_reason",
        F.when(valid & (repeats > 1), F.lit("duplicate_customer_id")).otherwise(F.col("reject_reason")),
    )


def demographics_input(input_cfg: dict[str, Any]) -> dict[str, Any]:
    """The customer-table settings of `input.demographics` (its rows are validated like a customer table)."""
    demo = input_cfg["demographics"]
    return {
        "path": demo["path"],
        "format": demo["format"],
        "csv": input_cfg.get("csv") or {},
        "columns": {"customer_id": demo["customer_id"]},
        "features": list(demo["features"]),
        "categorical": list(demo["categorical"]),
        "missing": "reject",
        "impute_strategy": "mean",
    }


def accepted_customers(classified_df: DataFrame, input_cfg: dict[str, Any]) -> DataFrame:
    """The accepted rows of a classified customer table: `customer_id` and the columns under their own names."""
    return classified_df.filter(F.col("reject_reason").isNull()).select(
        "customer_id", *[F.col(internal).alias(name) for name, internal in internal_names(input_cfg).items()]
    )


def with_demographics(customers_df: DataFrame, demographics_df: DataFrame) -> DataFrame:
    """Join demographic columns onto transaction-derived customers; a clusterable customer without an accepted
    demographics row gets `excluded_reason` `no_demographics` (its columns stay null)."""
    joined = customers_df.join(
        demographics_df.withColumn("_has_demographics", F.lit(True)), "customer_id", "left"
    )
    return joined.withColumn(
        "excluded_reason",
        F.coalesce(
            F.col("excluded_reason"),
            F.when(F.col("_has_demographics").isNull(), F.lit("no_demographics")),
        ),
    ).drop("_has_demographics")


def customer_source(
    spark: SparkSession, cfg: dict[str, Any], timer: StageTimer, persisted: list[DataFrame]
) -> Source:
    """Read and validate the customer table (stages read, validate and features): every accepted row is a
    customer; every DataFrame it caches is appended to `persisted`."""
    inp = cfg["input"]
    names = internal_names(inp)
    with timer.stage("read"):
        raw_df = read_customer_table(spark, inp)
        originals = original_columns(raw_df)

    with timer.stage("validate"):
        classified_df = classify_customer_rows(raw_df, inp).persist()
        persisted.append(classified_df)
        input_rows = classified_df.count()
        if input_rows == 0:
            raise InputError(f"input has no rows: {input_name(inp)}")
        rejected = count_by(classified_df, "reject_reason", CUSTOMER_REJECT_REASONS)
        accepted_rows = input_rows - sum(rejected.values())
        log.info("%d input rows, %d accepted, rejects %s", input_rows, accepted_rows, rejected)
        if accepted_rows == 0:
            raise InputError(f"no input row was accepted ({input_rows} rows; rejects: {rejected})")

    with timer.stage("features"):
        customers_df = (
            classified_df.filter(F.col("reject_reason").isNull())
            .select("customer_id", *names.values())
            .withColumn("excluded_reason", F.lit(None).cast("string"))
        )
        clustered_df = clustering_layout(customers_df, int(cfg["model"]["partitions"]))
        persisted.append(clustered_df)
        customers = clustered_df.count()
    numeric = [f for f in cfg["prepare"]["features"] if f in inp["features"]]
    return Source(
        kind="customers",
        input_cfg=inp,
        snapshot_date=cfg.get("snapshot_date") or dt.datetime.now(dt.timezone.utc).date().isoformat(),
        customers_df=customers_df,
        clustered_df=clustered_df,
        rejects_df=rejects_table(classified_df, originals),
        counts=Reconciliation(input_rows, accepted_rows, rejected, customers, customers, {}),
        order_column=names[numeric[0]] if numeric else "customer_id",
        manifest={
            "input_kind": "customers",
            "input_path": input_name(inp),
            "input_format": inp["format"],
            "missing": inp["missing"],
        },
        columns={internal: original for original, internal in names.items()},
    )
