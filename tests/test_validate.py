"""Validate stage on tiny hand-made inputs: every row gets the right reason, in the documented order."""

from __future__ import annotations

import chispa
import pytest
from pyspark.sql import functions as F

from segmentation.config import DEFAULTS
from segmentation.errors import InputError, SchemaError
from segmentation.features.rfm import customer_features_from_orders, with_line_kind
from segmentation.io import WHITE_SPACE
from segmentation.sources.read import CORRUPT_COLUMN, original_columns, read_transactions
from segmentation.sources.validate import (
    ISO_FORMAT,
    PARTITION_KEY,
    classify_rows,
    classify_weighted,
    ledger,
    ledger_orders,
    ledger_rejects,
    ledger_summary,
    normalize_customer_id,
    rejects_table,
    with_after_snapshot_reason,
    with_parsed_columns,
    with_partition_key,
)

COLUMNS = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Customer ID"]
MAPPING = {
    "customer_id": "Customer ID",
    "order_id": "InvoiceNo",
    "timestamp": "InvoiceDate",
    "quantity": "Quantity",
    "unit_price": "UnitPrice",
    "amount": None,
}


def _input_cfg(**columns):
    cfg = {**DEFAULTS["input"], "columns": {**MAPPING, **columns}}
    return cfg


def _raw(spark, rows, columns=COLUMNS):
    df = spark.createDataFrame(rows, ", ".join(f"`{c}` string" for c in columns))
    return df.withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))


def test_normalize_customer_id(spark):
    source = spark.createDataFrame(
        [
            ("17850.0",),
            (" 17850 ",),
            ("17850.00",),
            ("A-17.0x",),
            ("",),
            ("   ",),
            (None,),
            ("12.5",),
            ("\t42\n",),
            ("1.2.0",),  # ends like the common decimal form, is not one
            ("abc.0",),
            (".0",),
            ("7.0.0",),
            ("00123.0",),
        ],
        "id string",
    )
    actual = source.select(normalize_customer_id(F.col("id")).alias("id"))
    expected = spark.createDataFrame(
        [("17850",), ("17850",), ("17850",), ("A-17.0x",), (None,), (None,), (None,), ("12.5",), ("42",)]
        + [("1.2.0",), ("abc.0",), (".0",), ("7.0.0",), ("00123",)],
        "id string",
    )
    chispa.assert_df_equality(actual, expected)


def test_reasons_follow_the_documented_order(spark):
    rows = [
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),  # accepted
        ("2", "A", "6", "2011-01-01 10:00:00", "2.50", None),  # missing customer
        ("3", "A", "abc", "not a date", "0", "   "),  # missing customer wins over everything later
        ("4", "A", "6", "2011-02-30 10:00:00", "2.50", "1"),  # invalid timestamp
        ("5", "A", "x", "2011-01-01 10:00:00", "0", "1"),  # invalid number wins over price
        ("6", "A", "0", "2011-01-01 10:00:00", "2.50", "1"),  # quantity 0
        ("7", "A", "6", "2011-01-01 10:00:00", "", "1"),  # price missing
        ("8", "A", "6", "2011-01-01 10:00:00", "0", "1"),  # zero price
        ("9", "A", "6", "2011-01-01 10:00:00", "-1.5", "1"),  # negative price
        ("C10", "A", "-6", "2011-01-01 10:00:00", "2.50", "1"),  # a return is not a reject
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),  # exact repeat of row 1
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),  # and another
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850"),  # same customer, not an exact repeat
        ("2", "A", "6", "2011-01-01 10:00:00", "2.50", None),  # repeat of a missing-customer row
    ]
    raw = _raw(spark, rows)
    classified = classify_rows(raw, _input_cfg(), drop_duplicates=True, original_cols=original_columns(raw))
    actual = classified.select("InvoiceNo", "Customer ID", "reject_reason")
    expected = spark.createDataFrame(
        [
            ("1", "17850.0", None),
            ("2", None, "missing_customer_id"),
            ("3", "   ", "missing_customer_id"),
            ("4", "1", "invalid_timestamp"),
            ("5", "1", "invalid_number"),
            ("6", "1", "invalid_number"),
            ("7", "1", "invalid_number"),
            ("8", "1", "non_positive_price"),
            ("9", "1", "non_positive_price"),
            ("C10", "1", None),
            ("1", "17850.0", "duplicate"),
            ("1", "17850.0", "duplicate"),
            ("1", "17850", None),
            ("2", None, "missing_customer_id"),
        ],
        "InvoiceNo string, `Customer ID` string, reject_reason string",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True)


def _job_ledger(raw, cfg, originals):
    """The ledger as the job builds it (shuffled by `PARTITION_KEY`, duplicates checked), cached."""
    classified = classify_weighted(raw, cfg, True, originals, cluster_by_customer=True)
    return ledger(
        classified.transform(with_line_kind, return_prefix="C", has_order_id=True),
        originals,
        clustered_by=[PARTITION_KEY],
    ).cache()


def test_ledger_counts_every_row_once_and_gives_rejects_back_row_by_row(spark):
    """The cached ledger of the job: orders summed, rejects grouped with their copies; an input column may be
    called `customer_id` (the ledger's own key is `_customer_id`)."""
    columns = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "customer_id"]
    rows = [
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),
        ("1", "B", "2", "2011-01-01 10:00:00", "1.25", "17850"),  # same order, another line
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),  # exact repeat of the first line
        ("C2", "A", "-1", "2011-01-03 09:00:00", "2.50", "17850"),  # a return
        ("3", "A", "1", "2011-01-05 09:00:00", "4.00", "12000"),
        ("4", "A", "1", "2011-01-05 09:00:00", "4.00", None),  # missing customer, twice
        ("4", "A", "1", "2011-01-05 09:00:00", "4.00", None),
        ("5", "A", "x", "2011-01-05 09:00:00", "4.00", "12000"),  # invalid number
    ]
    raw = _raw(spark, rows, columns)
    originals = original_columns(raw)
    cfg = _input_cfg(customer_id="customer_id")
    ledger_df = _job_ledger(raw, cfg, originals)
    rows_total, by_reason, latest = ledger_summary(ledger_df)
    assert rows_total == 8
    assert by_reason == {"duplicate": 1, "missing_customer_id": 2, "invalid_number": 1}
    assert str(latest) == "2011-01-05"
    # the lines of an order are summed into one row, whichever way they spell the customer id
    order_rows = sorted(
        (r.customer_id, r._order_key, float(r._value), float(r._abs_value), r._is_return)
        for r in ledger_orders(ledger_df).collect()
    )
    assert order_rows == [
        ("12000", "3", 4.0, 4.0, False),
        ("17850", "1", 17.5, 17.5, False),  # 6 x 2.50 + 2 x 1.25, the repeat not counted
        ("17850", "C2", -2.5, 2.5, True),
    ]
    rejects = sorted(
        (r.InvoiceNo, r.customer_id, r.reject_reason) for r in ledger_rejects(ledger_df, originals).collect()
    )
    assert rejects == [
        ("1", "17850.0", "duplicate"),
        ("4", None, "missing_customer_id"),
        ("4", None, "missing_customer_id"),
        ("5", "12000", "invalid_number"),
    ]
    ledger_df.unpersist()


def test_rows_are_shuffled_once_from_the_raw_lines_to_the_customer_features(spark):
    """The duplicate check, the ledger's sums per order and the features stage's sums per customer run on the
    one shuffle by `PARTITION_KEY` (the ledger is cached with that partitioning), and a row without a
    customer id gets a key of its own order, not one shared by all such rows."""
    columns = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
    rows = [
        ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "17850.0"),
        ("2", "A", "1", "2011-01-02 10:00:00", "4.00", None),
        ("3", "A", "1", "2011-01-02 11:00:00", "4.00", " "),
    ]
    raw = _raw(spark, rows, columns)
    originals = original_columns(raw)
    cfg = _input_cfg(customer_id="CustomerID")
    keyed = with_partition_key(raw, cfg["columns"]).select("InvoiceNo", "_customer_id", PARTITION_KEY)
    assert sorted(keyed.collect()) == [
        ("1", "17850", "17850"),
        ("2", None, "\u00002"),
        ("3", None, "\u00003"),
    ]
    ledger_df = _job_ledger(raw, cfg, originals)
    try:
        customers_df = customer_features_from_orders(ledger_orders(ledger_df), "2011-01-10")
        assert [(r.customer_id, r.frequency) for r in customers_df.collect()] == [("17850", 1)]
        plan = customers_df._jdf.queryExecution().executedPlan().toString()
        assert "Exchange hashpartitioning" not in plan.split("InMemoryTableScan")[0], plan
    finally:
        ledger_df.unpersist()


def test_duplicates_kept_when_configured(spark):
    row = ("1", "A", "6", "2011-01-01 10:00:00", "2.50", "1")
    raw = _raw(spark, [row, row])
    classified = classify_rows(raw, _input_cfg(), drop_duplicates=False, original_cols=original_columns(raw))
    assert [r.reject_reason for r in classified.collect()] == [None, None]


def test_parsed_values_are_exact_decimals(spark):
    raw = _raw(spark, [("1", "A", " 3 ", "2011-01-01 10:00:00", "\t0.1\n", "7")])
    row = classify_rows(raw, _input_cfg(), True, original_columns(raw)).first()
    assert (str(row["_quantity"]), str(row["_unit_price"]), str(row["_value"])) == (
        "3.000",
        "0.100000",
        "0.300000000",
    )
    assert row["_customer_id"] == "7"


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/London", "America/New_York"])
def test_default_timestamp_format_parses_like_the_strict_parser(spark, time_zone):
    """Values of exactly the default format's shape are cast, the rest go through the formatter: the same
    timestamps (or nulls) as the formatter alone, leap days, DST gaps and overlaps and padding included."""
    values = [
        "2011-12-09 08:00:00",
        "2012-02-29 10:00:00",
        "2011-02-29 10:00:00",
        "2011-04-31 00:00:00",
        "2011-12-09 24:00:00",
        "2011-12-09 23:59:60",
        "2011-12-09 00:60:00",
        "2011-13-09 08:00:00",
        "0001-01-01 00:00:00",
        "9999-12-31 23:59:59",
        "2011-03-27 01:30:00",  # London: a local time that does not exist
        "2011-10-30 01:30:00",  # London: one that exists twice
        "2011-03-13 02:30:00",  # New York: does not exist
        "2011-11-06 01:30:00",  # New York: twice
        " 2011-12-09 08:00:00",
        "2011-12-09 08:00:00\t",
        "2011-12-09T08:00:00",
        "2011-1-9 8:00:00",
        "2011-12-09 08:00:00.5",
        "2011-12-09",
        "\uff12011-12-09 08:00:00",
        "09/12/2011 08:00",
        "",
        None,
    ]
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", time_zone)
    try:
        raw = _raw(spark, [("1", "A", "1", v, "1", "1") for v in values])
        parsed = raw.transform(with_parsed_columns, columns=MAPPING, timestamp_format=ISO_FORMAT)
        strict = F.try_to_timestamp(F.btrim("InvoiceDate", F.lit(WHITE_SPACE)), F.lit(ISO_FORMAT))
        rows = parsed.select(
            "InvoiceDate", F.unix_micros("_ts").alias("ts"), F.unix_micros(strict).alias("s")
        )
        pairs = {r.InvoiceDate: (r.ts, r.s) for r in rows.collect()}
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert {v: ts for v, (ts, _) in pairs.items()} == {v: s for v, (_, s) in pairs.items()}
    # and they are real timestamps, not all null
    assert sum(ts is not None for ts, _ in pairs.values()) == 10


def test_amount_mode_reasons(spark):
    columns = ["order", "ts", "Total (GBP)", "cust"]
    raw = _raw(
        spark,
        [
            ("1", "2011-01-01 10:00:00", "10", "a"),
            ("2", "2011-01-01 10:00:00", "0", "a"),
            ("3", "2011-01-01 10:00:00", "ten", "a"),
            ("4", "2011-01-01 10:00:00", "-5", "a"),
        ],
        columns,
    )
    cfg = _input_cfg(
        customer_id="cust",
        order_id="order",
        timestamp="ts",
        quantity=None,
        unit_price=None,
        amount="Total (GBP)",
    )
    actual = classify_rows(raw, cfg, True, original_columns(raw)).select("order", "reject_reason")
    expected = spark.createDataFrame(
        [("1", None), ("2", "non_positive_price"), ("3", "invalid_number"), ("4", None)],
        "order string, reject_reason string",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True)


def test_after_snapshot_is_checked_last(spark):
    rows = [
        ("1", "A", "6", "2011-05-31 23:59:59", "2.5", "1"),
        ("2", "A", "6", "2011-06-01 00:00:00", "2.5", "1"),
        ("3", "A", "6", "2011-06-02 00:00:00", "0", "1"),
    ]
    raw = _raw(spark, rows)
    classified = classify_rows(raw, _input_cfg(), True, original_columns(raw)).transform(
        with_after_snapshot_reason, snapshot_date="2011-06-01"
    )
    actual = classified.select("InvoiceNo", "reject_reason")
    expected = spark.createDataFrame(
        [("1", None), ("2", "after_snapshot"), ("3", "non_positive_price")],
        "InvoiceNo string, reject_reason string",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True)


def test_csv_reader_flags_malformed_rows_and_keeps_spaces_in_names(spark, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,Customer ID\n"
        "1,A,6,2011-01-01 10:00:00,2.5,17850.0\n"
        "2,A,6,2011-01-01 10:00:00\n"
        "3,A,6,2011-01-01 10:00:00,2.5,17850.0,extra\n"
        '4,"A, quoted",6,2011-01-01 10:00:00,2.5,17850\n'
    )
    raw, _ = read_transactions(spark, {**_input_cfg(), "path": str(path), "format": "csv"})
    assert original_columns(raw) == COLUMNS
    classified = classify_rows(raw, _input_cfg(), True, original_columns(raw))
    actual = rejects_table(classified, original_columns(raw)).select("InvoiceNo", "raw_line", "reject_reason")
    expected = spark.createDataFrame(
        [
            ("2", "2,A,6,2011-01-01 10:00:00", "malformed_row"),
            ("3", "3,A,6,2011-01-01 10:00:00,2.5,17850.0,extra", "malformed_row"),
        ],
        "InvoiceNo string, raw_line string, reject_reason string",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True)
    accepted = classified.filter("reject_reason IS NULL").select("StockCode", "_customer_id").collect()
    assert sorted((r.StockCode, r._customer_id) for r in accepted) == [("A", "17850"), ("A, quoted", "17850")]


def test_missing_mapped_columns_are_named(spark, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("InvoiceNo,Quantity,InvoiceDate,Price,CustomerID\n1,2,2011-01-01 10:00:00,1.0,5\n")
    with pytest.raises(SchemaError) as exc:
        read_transactions(spark, {**_input_cfg(), "path": str(path), "format": "csv"})
    assert str(exc.value) == (
        "input is missing mapped column(s) customer_id='Customer ID', unit_price='UnitPrice'; "
        "found columns: InvoiceNo, Quantity, InvoiceDate, Price, CustomerID"
    )


def test_missing_input_is_named(spark, tmp_path):
    with pytest.raises(InputError, match=r"input not found: .*/nothing/\*\.csv"):
        read_transactions(
            spark, {**_input_cfg(), "path": str(tmp_path / "nothing" / "*.csv"), "format": "csv"}
        )


def test_empty_csv_file_is_explained(spark, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="input has no header row"):
        read_transactions(spark, {**_input_cfg(), "path": str(path), "format": "csv"})


def test_ordered_counts_keep_an_undocumented_reason_last():
    from segmentation.sources.source import ordered_counts

    counts = {"duplicate": 3, "zzz_new": 2, "malformed_row": 1, "invalid_number": 0}
    assert list(ordered_counts(counts, ("malformed_row", "invalid_number", "duplicate")).items()) == [
        ("malformed_row", 1),
        ("duplicate", 3),
        ("zzz_new", 2),
    ]
