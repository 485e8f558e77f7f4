"""Features stage: accepted transaction lines -> one row of RFM features per customer.

Takes the accepted rows of the source stage (`sources.validate`) and hands the prepare stage one row per customer with
`customer_id`, `recency_days`, `frequency`, `tenure_days`, `gross`, `returns`, `monetary`, `avg_order_value`,
the BTYD columns (`repeat_frequency`, `recency_age_days`, `T_days`, `avg_repeat_value`) and `excluded_reason`
(null when the customer can be clustered). Definitions are in docs/pipeline.md, "Per-customer features".
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

#: Columns for buy-till-you-die / customer-lifetime-value models (lifetimes, pymc-marketing), per purchase day.
BTYD_COLUMNS = ("repeat_frequency", "recency_age_days", "T_days", "avg_repeat_value")


#: Why a customer is kept out of clustering (checked in this order; `no_demographics` is set
#: when a demographics table is joined, `outlier` by the model stage).
EXCLUDED_REASONS = ("no_purchases", "non_positive_monetary", "no_demographics", "outlier", "noise")


def with_line_kind(df: DataFrame, return_prefix: str | None, has_order_id: bool) -> DataFrame:
    """Add `_is_return` (negative quantity or value, or a return order id) and `_order_key`, `_date`."""
    is_return = (F.coalesce(F.col("_quantity"), F.lit(0)) < 0) | (F.col("_value") < 0)
    if return_prefix:
        is_return = is_return | F.coalesce(F.col("_order_id").startswith(return_prefix), F.lit(False))
    date = F.to_date(F.col("_ts"))
    order_key = F.col("_order_id") if has_order_id else F.date_format(date, "yyyy-MM-dd")
    return df.withColumns({"_is_return": is_return, "_date": date, "_order_key": order_key})


def order_rows(lines_df: DataFrame) -> DataFrame:
    """Accepted lines (with `with_line_kind` columns) summed per customer, order, day and purchase or return:
    `customer_id`, `_order_key`, `_date`, `_is_return`, `_value`, `_abs_value`. Exact decimal sums."""
    return lines_df.groupBy(
        F.col("_customer_id").alias("customer_id"), "_order_key", "_date", "_is_return"
    ).agg(F.sum("_value").alias("_value"), F.sum(F.abs(F.col("_value"))).alias("_abs_value"))


def customer_features(
    lines_df: DataFrame, snapshot_date: dt.date | str, returns_mode: str = "net"
) -> DataFrame:
    """Aggregate accepted lines (with `with_line_kind` columns) into per-customer features."""
    return customer_features_from_orders(order_rows(lines_df), snapshot_date, returns_mode)


def customer_features_from_orders(
    orders_df: DataFrame, snapshot_date: dt.date | str, returns_mode: str = "net"
) -> DataFrame:
    """Per-customer features from `order_rows` (or the validate stage's ledger, which holds the same sums):
    the customer features and the BTYD summary are aggregated from the order rows, several times fewer than
    the lines; the sums are exact decimals, so the result does not depend on how the lines were summed."""
    purchase = ~F.col("_is_return")
    # per order first, then per customer: `frequency` counts the orders with a purchase, without the
    # count-distinct plan (rows expanded per aggregate, an aggregation more); both steps group by customer, so
    # on the ledger (partitioned by customer) neither needs a shuffle
    per_order = orders_df.groupBy("customer_id", "_order_key").agg(
        F.max(F.when(purchase & F.col("_order_key").isNotNull(), F.lit(1))).alias("_purchase_order"),
        F.max(F.when(purchase, F.col("_date"))).alias("_last_purchase"),
        F.min(F.when(purchase, F.col("_date"))).alias("_first_purchase"),
        F.sum(F.when(purchase, F.col("_value"))).alias("_gross"),
        F.sum(F.when(~purchase, F.col("_abs_value"))).alias("_returns"),
    )
    aggregated = per_order.groupBy("customer_id").agg(
        F.count("_purchase_order").alias("frequency"),
        F.max("_last_purchase").alias("_last_purchase"),
        F.min("_first_purchase").alias("_first_purchase"),
        F.coalesce(F.sum("_gross"), F.lit(0)).alias("_gross"),
        F.coalesce(F.sum("_returns"), F.lit(0)).alias("_returns"),
    )
    snapshot = F.lit(str(snapshot_date)).cast("date")
    gross = F.col("_gross").cast("double")
    returns = F.col("_returns").cast("double")
    monetary = (F.col("_gross") - F.col("_returns")).cast("double") if returns_mode == "net" else gross
    return (
        aggregated.select(
            "customer_id",
            F.datediff(snapshot, F.col("_last_purchase")).alias("recency_days"),
            F.col("frequency").cast("int").alias("frequency"),
            F.datediff(snapshot, F.col("_first_purchase")).alias("tenure_days"),
            gross.alias("gross"),
            returns.alias("returns"),
            monetary.alias("monetary"),
            F.when(F.col("frequency") > 0, gross / F.col("frequency"))
            .cast("double")
            .alias("avg_order_value"),
        )
        .join(btyd_summary(orders_df, snapshot_date), "customer_id", "left")
        .transform(with_excluded_reason)
    )


def btyd_summary(orders_df: DataFrame, snapshot_date: dt.date | str) -> DataFrame:
    """Per customer with a purchase, lifetimes' `summary_data_from_transaction_data` at a daily period, from
    rows with `customer_id`, `_date`, `_is_return` and `_value` (lines, or lines summed per order and day).

    Purchase lines are summed per calendar day (a day is one "transaction"); `repeat_frequency` = purchase
    days - 1, `recency_age_days` = last - first purchase day, `T_days` = snapshot - first purchase day,
    `avg_repeat_value` = mean value of the days after the first (0 without repeats). Returns are not counted.
    """
    days_df = (
        orders_df.filter(~F.col("_is_return"))
        .groupBy("customer_id", "_date")
        .agg(F.sum("_value").alias("_day_value"))
    )
    summary = days_df.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("_days"),
        F.min("_date").alias("_first"),
        F.max("_date").alias("_last"),
        F.sum("_day_value").alias("_total"),
        F.min_by("_day_value", "_date").alias("_first_value"),
    )
    snapshot = F.lit(str(snapshot_date)).cast("date")
    repeats = F.col("_days") - 1
    return summary.select(
        "customer_id",
        repeats.cast("int").alias("repeat_frequency"),
        F.datediff(F.col("_last"), F.col("_first")).alias("recency_age_days"),
        F.datediff(snapshot, F.col("_first")).alias("T_days"),
        F.when(repeats > 0, ((F.col("_total") - F.col("_first_value")) / repeats).cast("double"))
        .otherwise(F.lit(0.0))
        .alias("avg_repeat_value"),
    )


def with_excluded_reason(df: DataFrame) -> DataFrame:
    """Add `excluded_reason`: customers without a purchase or with non-positive monetary are not clustered."""
    return df.withColumn(
        "excluded_reason",
        F.when(F.col("frequency") == 0, F.lit("no_purchases")).when(
            F.col("monetary") <= 0, F.lit("non_positive_monetary")
        ),
    )
