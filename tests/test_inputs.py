"""Your data, as it really comes: files from common writers and dialects give the same, exact features.

One small Online Retail-layout log (`ROWS`) is written in each form a user's data arrives in (Parquet from
pandas, Polars, DuckDB and Spark with typed columns, ORC, JSON lines, CSV with a BOM, latin-1, `;` and a
decimal comma, quoted line breaks, every common timestamp form). Each run's reconciliation and features are
compared with the independent pandas reference on the same rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation.config import load_config, validate_config
from segmentation.errors import ConfigError, InputError
from segmentation.features.rfm import customer_features_from_orders
from segmentation.sources.read import original_columns, read_transactions
from segmentation.sources.timestamps import resolve_timestamp_format
from segmentation.sources.transactions import validated_ledger
from segmentation.sources.validate import ledger_orders, ledger_rejects
from tests.reference_pandas import COLUMNS, reference_from_frame

from .conftest import REPO

# every customer's orders fall on distinct days, so "one order per day" (no order id) counts the same orders
ROWS = [
    (
        "536365",
        "85123A",
        "WHITE HANGING HEART",
        "6",
        "2010-12-01 08:26:00",
        "2.55",
        "17850.0",
        "United Kingdom",
    ),
    (
        "536365",
        "71053",
        "WHITE METAL LANTERN",
        "6",
        "2010-12-01 08:26:00",
        "3.39",
        "17850.0",
        "United Kingdom",
    ),
    ("536520", "21123", "SET 3 RETROSPOT", "2", "2010-12-13 12:43:00", "1.25", "17850.0", "United Kingdom"),
    ("C536521", "21123", "SET 3 RETROSPOT", "-1", "2010-12-14 09:00:00", "1.25", "17850.0", "United Kingdom"),
    ("536366", "22633", "HAND WARMER UNION JACK", "12", "2010-12-02 11:15:00", "1.85", "13047", "France"),
    # an exact duplicate of the line above: set aside, counted once
    ("536366", "22633", "HAND WARMER UNION JACK", "12", "2010-12-02 11:15:00", "1.85", "13047", "France"),
    ("536367", "84879", "ASSORTED BIRD ORNAMENT", "32", "2010-12-03 10:05:00", "1.69", "12583", "France"),
    ("536600", "22745", "POPPY'S PLAYHOUSE", "3", "2010-12-15 16:30:00", "2.10", "12583", "France"),
    ("536601", "22748", "POPPY'S KITCHEN", "4", "2010-12-16 07:45:00", "2.10", "12583", "France"),
    # no customer, a price of zero, a customer who only returned something
    ("536368", "22960", "JAM MAKING SET", "6", "2010-12-04 13:00:00", "4.25", "", "United Kingdom"),
    ("536369", "22961", "JAM JAR é COVER", "1", "2010-12-05 14:00:00", "0", "14911", "EIRE"),
    ("C536370", "22962", "JAR COVER", "-2", "2010-12-06 15:00:00", "0.85", "15100", "EIRE"),
]
FEATURES = ("recency_days", "frequency", "tenure_days", "gross", "returns", "monetary", "excluded_reason")


def _frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


REFERENCE = reference_from_frame(_frame())


def _expected(reference=REFERENCE) -> dict[str, tuple]:
    out = {}
    for cid, r in reference.customers.iterrows():
        out[cid] = tuple(
            None if pd.isna(r[f]) else (round(float(r[f]), 6) if f != "excluded_reason" else r[f])
            for f in FEATURES
        )
    return out


def _features(spark, path: Path, fmt: str, tmp_path: Path, **inp) -> tuple:
    """(ledger with its reconciliation, features per customer, detected timestamp format) of one input."""
    cfg = load_config(None)
    cfg["input"].update(path=str(path), format=fmt, **{k: v for k, v in inp.items() if k != "csv"})
    cfg["input"]["csv"].update(inp.get("csv", {}))
    cfg["output"]["path"] = str(tmp_path / "out")
    cfg = validate_config(cfg)
    raw_df, cfg["input"] = read_transactions(spark, cfg["input"])
    originals = original_columns(raw_df)
    resolved, detected = resolve_timestamp_format(raw_df, cfg["input"], seed=42)
    source = validated_ledger(raw_df, {**cfg, "input": resolved}, originals)
    try:
        features_df = customer_features_from_orders(ledger_orders(source.ledger_df), source.snapshot_date)
        features = {
            r["customer_id"]: tuple(
                None if r[f] is None else (round(float(r[f]), 6) if f != "excluded_reason" else r[f])
                for f in FEATURES
            )
            for r in features_df.collect()
        }
        rejects = ledger_rejects(source.ledger_df, originals).collect()
    finally:
        source.ledger_df.unpersist()
    return source, features, detected, rejects


def _assert_like_reference(source, features, reference=REFERENCE, extra_rejects=None):
    rejects = {**reference.rejects, **(extra_rejects or {})}
    assert source.input_rows == reference.input_rows + sum((extra_rejects or {}).values())
    assert source.rejected == {k: rejects[k] for k in source.rejected} and set(source.rejected) == set(
        rejects
    )
    assert source.accepted_rows == reference.accepted_rows
    assert source.input_rows == source.accepted_rows + sum(source.rejected.values())
    assert source.snapshot_date.isoformat() == reference.snapshot_date
    assert features == _expected(reference)


def test_reference_of_the_log_has_the_planted_cases():
    # the oracle's own view of ROWS, written out by hand: what every format below must reproduce
    assert REFERENCE.rejects == {"missing_customer_id": 1, "non_positive_price": 1, "duplicate": 1}
    expected = _expected()
    # 17850: orders on Dec 1 and 13 (snapshot Dec 17), a return of 1.25 on Dec 14
    assert expected["17850"] == (4, 2, 16, 38.14, 1.25, 36.89, None)
    assert expected["15100"][1:] == (0, None, 0.0, 1.7, -1.7, "no_purchases")


def _write_csv(path: Path, rows, header=COLUMNS, **kwargs) -> Path:
    encoding = kwargs.pop("encoding", "utf-8")
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f, **kwargs)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _typed_frame() -> pd.DataFrame:
    df = _frame()
    return pd.DataFrame(
        {
            "InvoiceNo": df["InvoiceNo"],
            "StockCode": df["StockCode"],
            "Description": df["Description"],
            "Quantity": df["Quantity"].astype("int32"),
            "InvoiceDate": pd.to_datetime(df["InvoiceDate"]),
            "UnitPrice": df["UnitPrice"].astype("float64"),
            # float ids, as pandas writes a column with a missing value: 17850.0 stays customer 17850
            "CustomerID": pd.to_numeric(df["CustomerID"].replace("", None)).astype("float64"),
            "Country": df["Country"],
        }
    )


def test_pandas_parquet_with_nanosecond_timestamps(spark, tmp_path):
    path = tmp_path / "pandas.parquet"
    _typed_frame().to_parquet(path)
    assert str(pq.read_schema(path).field("InvoiceDate").type) == "timestamp[ns]"
    source, features, detected, _ = _features(spark, path, "parquet", tmp_path)
    assert detected == "epoch_nanos"
    _assert_like_reference(source, features)


def test_pandas_parquet_with_a_time_zone(spark, tmp_path):
    path = tmp_path / "pandas_tz.parquet"
    df = _typed_frame()
    df["InvoiceDate"] = df["InvoiceDate"].dt.tz_localize("UTC").dt.tz_convert("Europe/London")
    df.to_parquet(path)
    assert str(pq.read_schema(path).field("InvoiceDate").type) == "timestamp[ns, tz=Europe/London]"
    source, features, _, _ = _features(spark, path, "parquet", tmp_path)
    _assert_like_reference(source, features)


def test_polars_parquet_string_ids_and_int64_quantities(spark, tmp_path):
    pl = pytest.importorskip("polars")
    df = _frame()
    frame = pl.DataFrame(
        {
            "InvoiceNo": df["InvoiceNo"].tolist(),
            "StockCode": df["StockCode"].tolist(),
            "Description": df["Description"].tolist(),
            "Quantity": [int(q) for q in df["Quantity"]],
            "InvoiceDate": [dt.datetime.fromisoformat(t) for t in df["InvoiceDate"]],
            "UnitPrice": [float(p) for p in df["UnitPrice"]],
            "CustomerID": [c or None for c in df["CustomerID"]],
            "Country": df["Country"].tolist(),
        },
        schema_overrides={"Quantity": pl.Int64, "InvoiceDate": pl.Datetime("us")},
    )
    path = tmp_path / "polars.parquet"
    frame.write_parquet(path)
    source, features, detected, _ = _features(spark, path, "parquet", tmp_path)
    assert detected == "native"
    _assert_like_reference(source, features)


def test_duckdb_parquet_bigint_ids_and_decimal_prices(spark, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    csv_path = _write_csv(tmp_path / "in.csv", ROWS)
    path = tmp_path / "duckdb.parquet"
    duckdb.sql(
        f"""COPY (SELECT InvoiceNo, StockCode, Description, CAST(Quantity AS INTEGER) AS Quantity,
                         CAST(InvoiceDate AS TIMESTAMP) AS InvoiceDate, CAST(UnitPrice AS DECIMAL(10, 2)) AS UnitPrice,
                         CAST(CAST(NULLIF(CustomerID, '') AS DOUBLE) AS BIGINT) AS CustomerID, Country
                  FROM read_csv('{csv_path}', all_varchar = true))
            TO '{path}' (FORMAT parquet)"""
    )
    types = {f.name: str(f.type) for f in pq.read_schema(path)}
    assert (types["CustomerID"], types["UnitPrice"]) == ("int64", "decimal128(10, 2)")
    source, features, _, _ = _features(spark, path, "parquet", tmp_path)
    _assert_like_reference(source, features)


def test_spark_parquet_decimal_ids_and_a_date_column(spark, tmp_path):
    rows = [
        (
            r[0],
            r[1],
            r[2],
            int(r[3]),
            dt.date.fromisoformat(r[4][:10]),
            Decimal(r[5]),
            Decimal(r[6]) if r[6] else None,
            r[7],
        )
        for r in ROWS
    ]
    schema = (
        "InvoiceNo string, StockCode string, Description string, Quantity long, InvoiceDate date, "
        "UnitPrice decimal(10,2), CustomerID decimal(12,2), Country string"
    )
    path = tmp_path / "spark_parquet"
    spark.createDataFrame(rows, schema).coalesce(1).write.parquet(str(path))
    source, features, _, _ = _features(spark, path, "parquet", tmp_path)
    # dates alone: the duplicate pair and every feature stay the same (features count days)
    _assert_like_reference(source, features)


def test_orc(spark, tmp_path):
    orc = pytest.importorskip("pyarrow.orc")
    path = tmp_path / "log.orc"
    orc.write_table(pa.Table.from_pandas(_frame(), preserve_index=False), str(path))
    source, features, detected, _ = _features(spark, path, "orc", tmp_path)
    assert detected == "iso8601"
    _assert_like_reference(source, features)


def test_json_lines_with_a_broken_line(spark, tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps(dict(zip(COLUMNS, r)), ensure_ascii=False) for r in ROWS]
    lines.insert(3, '{"InvoiceNo": "536999", "Quantity": ')  # cut off: a malformed line, rejected
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source, features, _, rejects = _features(spark, path, "json", tmp_path)
    _assert_like_reference(source, features, extra_rejects={"malformed_row": 1})
    assert [r["raw_line"] for r in rejects if r["reject_reason"] == "malformed_row"] == [lines[3]]


def test_csv_with_a_bom_and_crlf_line_ends(spark, tmp_path):
    path = _write_csv(tmp_path / "bom.csv", ROWS, encoding="utf-8-sig", lineterminator="\r\n")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    source, features, _, _ = _features(spark, path, "csv", tmp_path)
    _assert_like_reference(source, features)


def test_latin1_csv(spark, tmp_path):
    path = _write_csv(tmp_path / "latin1.csv", ROWS, encoding="latin-1")
    source, features, _, rejects = _features(spark, path, "csv", tmp_path, csv={"encoding": "ISO-8859-1"})
    _assert_like_reference(source, features)
    priced = [r for r in rejects if r["reject_reason"] == "non_positive_price"]
    assert [r["Description"] for r in priced] == ["JAM JAR é COVER"]


def test_european_csv_semicolon_and_decimal_comma(spark, tmp_path):
    rows = [(*r[:5], r[5].replace(".", ","), *r[6:]) for r in ROWS]
    # a thousands separator in a quantity is read as such (1.000 = one thousand)
    rows.append(
        ("536999", "10002", "INFLATABLE GLOBE", "1.000", "2010-12-07 09:00:00", "0,85", "16000", "EIRE")
    )
    path = _write_csv(tmp_path / "eu.csv", rows, delimiter=";")
    source, features, _, _ = _features(spark, path, "csv", tmp_path, csv={"delimiter": ";", "decimal": ","})
    expected_rows = ROWS + [
        ("536999", "10002", "INFLATABLE GLOBE", "1000", "2010-12-07 09:00:00", "0.85", "16000", "EIRE")
    ]
    reference = reference_from_frame(_frame(expected_rows))
    _assert_like_reference(source, features, reference)
    assert features["16000"][3] == 850.0


def test_decimal_comma_refuses_a_decimal_point(spark, tmp_path):
    # in a decimal-comma file "2.55" is no number (it is never read as 255): rejected as invalid_number
    rows = [(*r[:5], r[5].replace(".", ","), *r[6:]) for r in ROWS]
    rows[0] = (*rows[0][:5], "2.55", *rows[0][6:])
    path = _write_csv(tmp_path / "eu.csv", rows, delimiter=";")
    source, _, _, rejects = _features(spark, path, "csv", tmp_path, csv={"delimiter": ";", "decimal": ","})
    assert source.rejected["invalid_number"] == 1
    assert [r["UnitPrice"] for r in rejects if r["reject_reason"] == "invalid_number"] == ["2.55"]


def test_quoted_line_breaks_with_multiline(spark, tmp_path):
    rows = [(r[0], r[1], r[2].replace(" ", "\n", 1), *r[3:]) for r in ROWS]
    path = _write_csv(tmp_path / "multi.csv", rows, quoting=csv.QUOTE_ALL)
    source, features, _, _ = _features(spark, path, "csv", tmp_path, csv={"multiline": True})
    _assert_like_reference(source, features)


def _epoch(text: str, unit: int) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()) * unit


TIMESTAMP_FORMS = {
    "iso8601": lambda t: t.replace(" ", "T") + "+00:00",
    "M/d/yyyy[ H:mm[:ss]]": lambda t: dt.datetime.fromisoformat(t).strftime("%-m/%-d/%Y %-H:%M"),
    "d/M/yyyy[ H:mm[:ss]]": lambda t: dt.datetime.fromisoformat(t).strftime("%-d/%-m/%Y %H:%M:%S"),
    "d.M.yyyy[ H:mm[:ss]]": lambda t: dt.datetime.fromisoformat(t).strftime("%d.%m.%Y %H:%M"),
    "M/d/yyyy h:mm[:ss] a": lambda t: dt.datetime.fromisoformat(t).strftime("%-m/%-d/%Y %-I:%M %p"),
    "yyyyMMdd[HHmmss]": lambda t: t[:10].replace("-", ""),
    "epoch_seconds": lambda t: str(_epoch(t, 1)),
    "epoch_millis": lambda t: str(_epoch(t, 1000)),
}


@pytest.mark.parametrize("form", sorted(TIMESTAMP_FORMS))
def test_each_timestamp_form_is_detected(spark, tmp_path, form):
    # the Online Retail original's "12/1/2010 8:26" is M/d/yyyy H:mm; day 13-16 tells it from d/M
    rows = [(*r[:4], TIMESTAMP_FORMS[form](r[4]), *r[5:]) for r in ROWS]
    path = _write_csv(tmp_path / "ts.csv", rows)
    source, features, detected, _ = _features(spark, path, "csv", tmp_path)
    assert detected == form
    _assert_like_reference(source, features)


def test_epoch_seconds_in_a_numeric_column(spark, tmp_path):
    df = _typed_frame()
    df["InvoiceDate"] = [_epoch(t, 1) for t in _frame()["InvoiceDate"]]
    path = tmp_path / "epoch.parquet"
    df.to_parquet(path)
    source, features, detected, _ = _features(spark, path, "parquet", tmp_path)
    assert detected == "epoch_seconds"
    _assert_like_reference(source, features)


def test_day_month_ambiguity_is_refused(spark, tmp_path):
    # every day is 12 or less: 1/12/2010 is January 12 or December 1, and nothing in the data says which
    rows = [
        (*r[:4], dt.datetime.fromisoformat(r[4]).strftime("%-d/%-m/%Y %H:%M"), *r[5:])
        for r in ROWS
        if int(r[4][8:10]) <= 12
    ]
    path = _write_csv(tmp_path / "ambiguous.csv", rows)
    with pytest.raises(InputError) as caught:
        _features(spark, path, "csv", tmp_path)
    message = str(caught.value)
    assert "input column 'InvoiceDate' is ambiguous" in message
    assert "'M/d/yyyy[ H:mm[:ss]]' and 'd/M/yyyy[ H:mm[:ss]]'" in message
    assert "set input.timestamp_format" in message


def test_explicit_pattern_that_mostly_fails_quotes_values(spark, tmp_path):
    rows = [(*r[:4], TIMESTAMP_FORMS["M/d/yyyy[ H:mm[:ss]]"](r[4]), *r[5:]) for r in ROWS]
    path = _write_csv(tmp_path / "us.csv", rows)
    with pytest.raises(InputError) as caught:
        _features(spark, path, "csv", tmp_path, timestamp_format="yyyy-MM-dd HH:mm:ss")
    message = str(caught.value)
    assert message.startswith(
        "11 of 11 rows have a timestamp that does not parse as 'yyyy-MM-dd HH:mm:ss', e.g. "
    )
    assert message.count("/2010 ") == 3


def test_unparseable_timestamps_quote_three_values(spark, tmp_path):
    rows = [(*r[:4], f"day {i}", *r[5:]) for i, r in enumerate(ROWS)]
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(
        InputError, match=r"does not look like a timestamp: 12 of 12 sampled values fit no format"
    ) as e:
        _features(spark, path, "csv", tmp_path)
    assert "e.g. 'day " in str(e.value) and "set input.timestamp_format" in str(e.value)


def test_amount_only_mapping(spark, tmp_path):
    header = ["Order", "Customer", "When", "Line total", "Sku"]
    rows = [(r[0], r[6], r[4], str(Decimal(r[3]) * Decimal(r[5])), r[1]) for r in ROWS]
    path = _write_csv(tmp_path / "amount.csv", rows, header=header)
    columns = {"customer_id": "Customer", "order_id": "Order", "timestamp": "When", "amount": "Line total"}
    source, features, _, _ = _features(spark, path, "csv", tmp_path, columns=_mapping(columns))
    _assert_like_reference(source, features)


def test_order_id_less_mapping_counts_days(spark, tmp_path):
    header = ["Customer", "When", "Qty", "Price", "Sku", "Text"]
    rows = [(r[6], r[4], r[3], r[5], r[1], r[2]) for r in ROWS]
    path = _write_csv(tmp_path / "no_orders.csv", rows, header=header)
    columns = {"customer_id": "Customer", "timestamp": "When", "quantity": "Qty", "unit_price": "Price"}
    source, features, _, _ = _features(spark, path, "csv", tmp_path, columns=_mapping(columns))
    # each customer's orders fall on distinct days here, so one order per day gives the same features; the
    # return on Dec 14 is known by its negative quantity (no "C" order id to go by)
    _assert_like_reference(source, features)


def _mapping(columns: dict) -> dict:
    """What `load_config` makes of a user's `input.columns`: the roles it names, nothing else."""
    return {
        role: columns.get(role)
        for role in ("customer_id", "order_id", "timestamp", "quantity", "unit_price", "amount")
    }


def test_user_mapping_from_yaml_is_the_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "input:\n  path: data.csv\n  format: csv\n  columns: {customer_id: Customer, timestamp: When, amount: Total}\n"
        "output: {path: out}\n"
    )
    cols = validate_config(load_config(path))["input"]["columns"]
    assert cols == {
        "customer_id": "Customer",
        "order_id": None,
        "timestamp": "When",
        "quantity": None,
        "unit_price": None,
        "amount": "Total",
        "product_id": None,
        "product_name": None,
    }
    path.write_text(
        "input:\n  kind: customers\n  path: c.csv\n  format: csv\n  columns: {customer_id: ID}\n"
        "  features: [Age]\noutput: {path: out}\n"
    )
    assert validate_config(load_config(path))["input"]["columns"]["customer_id"] == "ID"


@pytest.mark.parametrize(
    ("input_path", "output", "where"),
    [
        ("data/in", "data/in", "is"),
        ("data/in/*.csv", "data/in/out", "is inside"),
        ("data/in/day.csv", "data", "contains"),
        ("file:///srv/logs/part-*.parquet", "/srv/logs/segments", "is inside"),
    ],
)
def test_output_in_or_around_the_input_is_refused(tmp_path, monkeypatch, input_path, output, where):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    cfg["input"].update(path=input_path, format="csv")
    cfg["output"]["path"] = output
    expected = (
        f"output path {output} {where} the input (input.path {input_path}): choose an output folder outside"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(cfg)


def test_output_beside_the_input_is_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    cfg["input"].update(path="data/in/*.csv", format="csv")
    cfg["output"]["path"] = "data/input_segments"  # a sibling whose name starts like the input's
    assert validate_config(cfg)["output"]["path"] == "data/input_segments"


def test_output_in_input_exits_2_before_spark_starts(tmp_path, capsys):
    from jobs.segment_customers import main

    (tmp_path / "in").mkdir()
    code = main(
        ["--input", str(tmp_path / "in" / "*.csv"), "--input-format", "csv", "--output", str(tmp_path / "in")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"segment-customers: error: output path {tmp_path / 'in'} is the input (input.path {tmp_path / 'in' / '*.csv'}): choose an output folder outside the input"
    ]
    assert list((tmp_path / "in").iterdir()) == []


def test_check_dry_run_on_the_bundled_data_and_on_a_bad_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "input:\n  columns: {customer_id: Customer, order_id: InvoiceNo, timestamp: InvoiceDate, "
        "quantity: Quantity, unit_price: UnitPrice}\n"
    )
    runs = {}
    for name, extra in (("bundled", []), ("bad", ["--config", str(bad)])):
        runs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.segment_customers",
                "--check",
                "--output",
                str(tmp_path / name),
                *extra,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    done = {name: (p.wait(timeout=600), *p.communicate()) for name, p in runs.items()}
    code, out, err = done["bundled"]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("part-*.parquet (parquet, kind transactions): 541,909 rows, 10,000 sampled")
    assert lines[1] == (
        "Columns: customer_id <- 'CustomerID', order_id <- 'InvoiceNo', timestamp <- 'InvoiceDate', "
        "quantity <- 'Quantity', unit_price <- 'UnitPrice', product_id <- 'StockCode', product_name <- 'Description'"
    )
    assert "Timestamps: 'iso8601' (detected)" in lines
    table = lines[lines.index("Parsed sample rows (first 5 accepted, by customer):") + 1 :][:6]
    assert table[0].split() == ["customer_id", "order_id", "timestamp", "quantity", "unit_price", "value"]
    assert all(row.split()[0].isdigit() for row in table[1:])
    rejected = next(line for line in lines if line.startswith("Would reject on the sample: "))
    missing = next(line for line in lines if line.strip().startswith("missing_customer_id"))
    # about a quarter of the real rows have no customer id (135,080 of 541,909)
    assert 0.2 < int(missing.split()[-1].replace(",", "")) / 10_000 < 0.3
    assert rejected.endswith("of 10,000 rows")
    assert lines[-1] == "Check passed: the run would start (nothing was written)."
    assert "Using incubator modules" not in err and "Truncated the string" not in err
    assert not (tmp_path / "bundled").exists()
    code, out, err = done["bad"]
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "segment-customers: error: input is missing mapped column(s) customer_id='Customer'; found columns: InvoiceNo,"
        )
    )
    assert not (tmp_path / "bad").exists()


def test_check_on_a_customer_table_with_a_missing_value(spark, tmp_path):
    from segmentation.sources.check import check_input

    rows = [
        ("0001", "Male", "19", "15", "39"),
        ("0002", "Female", "", "15", "81"),
        ("0003", "Female", "20", "16", "6"),
    ]
    header = ["CustomerID", "Genre", "Age", "Annual Income (k$)", "Spending Score (1-100)"]
    path = _write_csv(tmp_path / "mall.csv", rows, header=header, lineterminator="\r\n")
    cfg = load_config(REPO / "conf" / "mall_customers.yaml")
    cfg["input"]["path"] = str(path)
    cfg["output"]["path"] = str(tmp_path / "out")
    result = check_input(spark, validate_config(cfg))
    assert result.ok
    assert result.lines[0] == f"Input: {path} (csv, kind customers): 3 rows, 3 sampled"
    table = result.lines[result.lines.index("Parsed sample rows (first 5 accepted, by customer):") + 1 :][:3]
    assert [row.split()[:5] for row in table[1:]] == [
        ["0001", "19.0", "15.0", "39.0", "Male"],
        ["0003", "20.0", "16.0", "6.0", "Female"],
    ]
    assert "  missing_value                 1" in result.lines
    assert result.lines[-1] == "Customers in the sample: 2"


def test_the_manifest_records_the_detected_timestamp_format(published):
    _, manifests, _ = published
    # the synthetic log writes "2011-11-30 10:05:00": detected, not configured
    assert [(m["timestamp_format"], m["timestamp_format_detected"]) for m in manifests] == [
        ("iso8601", "iso8601")
    ] * 2
