"""Features stage on hand-made accepted lines: orders, returns, days, exclusions."""

from __future__ import annotations

import chispa
from pyspark.sql import functions as F

from segmentation.features.rfm import customer_features, with_line_kind

LINE_SCHEMA = (
    "_customer_id string, _order_id string, _ts string, _quantity decimal(18,3), _unit_price decimal(18,6)"
)
FEATURE_COLUMNS = [
    "customer_id",
    "recency_days",
    "frequency",
    "tenure_days",
    "gross",
    "returns",
    "monetary",
    "avg_order_value",
    "excluded_reason",
]


def _lines(spark, rows, has_order_id=True):
    from decimal import Decimal

    rows = [(c, o, t, Decimal(q), Decimal(p)) for c, o, t, q, p in rows]
    df = spark.createDataFrame(rows, LINE_SCHEMA)
    df = df.withColumns(
        {
            "_ts": F.to_timestamp("_ts"),
            "_value": (F.col("_quantity") * F.col("_unit_price")).cast("decimal(38,9)"),
        }
    )
    return df.transform(with_line_kind, return_prefix="C", has_order_id=has_order_id)


ROWS = [
    # a: two orders on the same day, one later order, a partial return
    ("a", "1", "2011-01-01 09:00:00", "2", "10"),
    ("a", "1", "2011-01-01 09:00:00", "1", "5"),
    ("a", "2", "2011-01-01 17:00:00", "1", "3"),
    ("a", "3", "2011-01-20 12:00:00", "4", "1"),
    ("a", "C4", "2011-01-25 12:00:00", "-1", "10"),
    # b: returns larger than purchases
    ("b", "5", "2011-01-10 08:00:00", "1", "20"),
    ("b", "C6", "2011-01-11 08:00:00", "-3", "20"),
    # c: only returns (a "C" order with a positive quantity is a return too)
    ("c", "C7", "2011-01-05 08:00:00", "-1", "4"),
    ("c", "C8", "2011-01-06 08:00:00", "2", "1"),
    # d: a single purchase on the snapshot's eve
    ("d", "9", "2011-01-30 23:59:59", "1", "7.5"),
]


def test_customer_features_net(spark):
    actual = customer_features(_lines(spark, ROWS), "2011-01-31").select(*FEATURE_COLUMNS)
    expected = spark.createDataFrame(
        [
            ("a", 11, 3, 30, 32.0, 10.0, 22.0, 32.0 / 3, None),
            ("b", 21, 1, 21, 20.0, 60.0, -40.0, 20.0, "non_positive_monetary"),
            ("c", None, 0, None, 0.0, 6.0, -6.0, None, "no_purchases"),
            ("d", 1, 1, 1, 7.5, 0.0, 7.5, 7.5, None),
        ],
        "customer_id string, recency_days int, frequency int, tenure_days int, gross double, returns double, "
        "monetary double, avg_order_value double, excluded_reason string",
    )
    chispa.assert_approx_df_equality(actual, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_gross_mode_ignores_returns_in_monetary(spark):
    actual = customer_features(_lines(spark, ROWS), "2011-01-31", returns_mode="gross")
    got = {r.customer_id: (r.monetary, r.returns, r.excluded_reason) for r in actual.collect()}
    assert got == {
        "a": (32.0, 10.0, None),
        "b": (20.0, 60.0, None),
        "c": (0.0, 6.0, "no_purchases"),
        "d": (7.5, 0.0, None),
    }


def test_without_order_id_an_order_is_a_calendar_day(spark):
    actual = customer_features(_lines(spark, ROWS, has_order_id=False), "2011-01-31")
    got = {r.customer_id: r.frequency for r in actual.collect()}
    # a: 2011-01-01 (three lines, two invoices) and 2011-01-20 -> 2 days
    assert got == {"a": 2, "b": 1, "c": 0, "d": 1}


def test_calendar_days_follow_the_session_time_zone(spark):
    # an instant with an explicit offset: 23:30 UTC on the 30th
    rows = [("e", "1", "2011-01-30T23:30:00Z", "1", "1")]
    assert customer_features(_lines(spark, rows), "2011-01-31").first().recency_days == 1
    # the zone is resolved when a plan is analysed: the job sets it before reading anything
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
    try:
        row = customer_features(_lines(spark, rows), "2011-01-31").first()
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    # ... which is 08:30 on the 31st in Tokyo: zero days before the snapshot
    assert (row.recency_days, row.tenure_days) == (0, 0)
