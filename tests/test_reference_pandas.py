"""The pandas reference ("oracle") itself: a tiny hand-made CSV with hand-computed answers; the real data."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tests.reference_pandas import FEATURE_COLUMNS, REJECT_REASONS, reference_online_retail

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data"
REAL_CSV_DIR = REAL_DATA / "online_retail" / "by-day"

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"

# Customers (the snapshot date is derived as 2011-02-01, the day after the latest accepted line, a return):
#   17850  two lines of invoice 100001 on 2011-01-10 (3.00 + 4.25), invoice 100002 on 2011-01-20 written once
#          with "17850" and once with "17850.0" (4.50 + 4.50: not an exact duplicate), an exact duplicate of a
#          100001 line (rejected), a "C" return of 1.50 on 2011-01-25
#   13000  purchase 10.00 on 2011-01-15, return 15.00 the next day: returns exceed purchases
#   14000  only returns: a "C" invoice (6.00) and a negative quantity without "C" (3.00, the latest line)
#   15000  10 x 0.10 and 10 x 0.20: exact money
#   16000  0.10 + 0.20 bought, 0.30 returned: monetary exactly 0 (float sums would leave 5.6e-17)
#   12000  only rejected rows, so not a customer at all
ROWS = [
    '100001,A1,"WIDGET, RED",2,2011-01-10 09:00:00,1.50,17850.0,United Kingdom',
    "100001,A2,GADGET,1,2011-01-10 09:00:00,4.25,17850.0,United Kingdom",
    '100002,A1,"WIDGET, RED",3,2011-01-20 10:30:00,1.50,17850,United Kingdom',
    '100002,A1,"WIDGET, RED",3,2011-01-20 10:30:00,1.50,17850.0,United Kingdom',
    "100001,A2,GADGET,1,2011-01-10 09:00:00,4.25,17850.0,United Kingdom",  # duplicate
    'C100003,A1,"WIDGET, RED",-1,2011-01-25 11:00:00,1.50,17850.0,United Kingdom',
    "100004,B1,THING,1,2011-01-05 08:00:00,2.00,,United Kingdom",  # missing_customer_id
    "100004,B1,THING,1,2011-01-05 08:00:00,2.00,,United Kingdom",  # missing_customer_id, not duplicate
    "100004,B1,THING,1,2011-01-05 08:00:00,2.00,   ,United Kingdom",  # missing_customer_id (blank)
    "100005,B1,THING,1,not a date,2.00,,United Kingdom",  # missing_customer_id wins over invalid_timestamp
    "100006,B1,THING,1,2011-13-05 08:00:00,2.00,12000.0,France",  # invalid_timestamp
    "100006,B1,THING,1,05/01/2011 08:00,2.00,12000.0,France",  # invalid_timestamp
    "100007,B1,THING,0,2011-01-06 08:00:00,2.00,12000.0,France",  # invalid_number (quantity 0)
    "100007,B1,THING,abc,2011-01-06 08:00:00,0.00,12000.0,France",  # invalid_number wins over price 0
    "100008,B1,THING,1,2011-01-06 08:00:00,0.00,12000.0,France",  # non_positive_price
    "A100009,B,Adjust bad debt,1,2011-01-06 08:00:00,-5.00,12000.0,France",  # non_positive_price
    "100010,B1,THING,2,2011-01-15 12:00:00,5.00,13000.0,Germany",
    "C100011,B1,THING,-3,2011-01-16 12:00:00,5.00,13000.0,Germany",
    "C100012,B2,OTHER,-2,2011-01-28 14:00:00,3.00,14000.0,Spain",
    "100013,B2,OTHER,-1,2011-01-31 23:59:59,3.00,14000.0,Spain",
    "100014,B3,X,10,2011-01-02 10:00:00,0.10,15000.0,Spain",
    "100015,B3,X,10,2011-01-30 16:00:00,0.20,15000.0,Spain",
    "100016,D1,P,1,2011-01-12 09:00:00,0.10,16000.0,Italy",
    "100016,D2,Q,1,2011-01-12 09:00:00,0.20,16000.0,Italy",
    "C100017,D3,R,-1,2011-01-13 09:00:00,0.30,16000.0,Italy",
]

NAN = float("nan")
NA = pd.NA


def write_csv(directory: Path, name: str, rows: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "by-day"
    # two files, to check they are read in file-name order and concatenated
    write_csv(directory, "2011-01-01.csv", ROWS[:12])
    write_csv(directory, "2011-01-02.csv", ROWS[12:])
    return directory


def assert_customer(ref, customer_id: str, expected: dict) -> None:
    row = ref.customers.loc[customer_id]
    for name, want in expected.items():
        got = row[name]
        if want is NA:
            assert got is pd.NA, f"{customer_id}.{name}: {got!r}"
        elif isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), f"{customer_id}.{name}: {got!r}"
        else:
            assert got == want, f"{customer_id}.{name}: {got!r} != {want!r}"


def test_row_accounting_and_derived_snapshot(tiny_dir: Path):
    ref = reference_online_retail(tiny_dir)

    assert ref.input_rows == 25
    assert ref.rejects == {
        "missing_customer_id": 4,
        "invalid_timestamp": 2,
        "invalid_number": 2,
        "non_positive_price": 2,
        "duplicate": 1,
    }
    assert ref.accepted_rows == 14
    assert ref.input_rows == ref.accepted_rows + sum(ref.rejects.values())
    # the latest accepted line is customer 14000's return at 2011-01-31 23:59:59
    assert ref.snapshot_date == "2011-02-01"


def test_customer_features(tiny_dir: Path):
    ref = reference_online_retail(tiny_dir)
    customers = ref.customers

    assert list(customers.columns) == FEATURE_COLUMNS
    assert customers.index.name == "customer_id"
    assert list(customers.index) == ["13000", "14000", "15000", "16000", "17850"]  # 12000 has no accepted row
    assert str(customers["recency_days"].dtype) == "Int64"
    assert str(customers["tenure_days"].dtype) == "Int64"
    assert customers["frequency"].dtype == "int64"

    assert_customer(
        ref,
        "17850",
        dict(
            recency_days=12,
            frequency=2,
            tenure_days=22,
            gross=16.25,
            returns=1.5,
            monetary=14.75,
            avg_order_value=8.125,
            excluded_reason=None,
        ),
    )
    assert_customer(
        ref,
        "13000",
        dict(
            recency_days=17,
            frequency=1,
            tenure_days=17,
            gross=10.0,
            returns=15.0,
            monetary=-5.0,
            avg_order_value=10.0,
            excluded_reason="non_positive_monetary",
        ),
    )
    assert_customer(
        ref,
        "14000",
        dict(
            recency_days=NA,
            frequency=0,
            tenure_days=NA,
            gross=0.0,
            returns=9.0,
            monetary=-9.0,
            avg_order_value=NAN,
            excluded_reason="no_purchases",
        ),
    )
    assert_customer(
        ref,
        "15000",
        dict(
            recency_days=2,
            frequency=2,
            tenure_days=30,
            gross=3.0,
            returns=0.0,
            monetary=3.0,
            avg_order_value=1.5,
            excluded_reason=None,
        ),
    )
    assert_customer(
        ref,
        "16000",
        dict(
            recency_days=20,
            frequency=1,
            tenure_days=20,
            gross=0.3,
            returns=0.3,
            monetary=0.0,
            avg_order_value=0.3,
            excluded_reason="non_positive_monetary",
        ),
    )

    assert ref.excluded_counts == {"non_positive_monetary": 2, "no_purchases": 1}
    assert list(ref.clustered.index) == ["15000", "17850"]


def test_given_snapshot_date_sets_later_lines_aside(tiny_dir: Path):
    ref = reference_online_retail(tiny_dir, snapshot_date="2011-01-25")

    # on or after 2011-01-25: 17850's return (01-25 11:00), both of 14000's returns, 15000's second purchase
    assert ref.rejects["after_snapshot"] == 4
    assert ref.rejects["duplicate"] == 1  # duplicate is checked first
    assert ref.accepted_rows == 10
    assert ref.snapshot_date == "2011-01-25"
    assert list(ref.customers.index) == ["13000", "15000", "16000", "17850"]  # 14000 has nothing left

    assert_customer(
        ref,
        "17850",
        dict(
            recency_days=5,
            frequency=2,
            tenure_days=15,
            gross=16.25,
            returns=0.0,
            monetary=16.25,
            excluded_reason=None,
        ),
    )
    assert_customer(
        ref, "13000", dict(recency_days=10, tenure_days=10, excluded_reason="non_positive_monetary")
    )
    assert_customer(
        ref,
        "15000",
        dict(
            recency_days=23, frequency=1, tenure_days=23, gross=1.0, avg_order_value=1.0, excluded_reason=None
        ),
    )
    assert_customer(ref, "16000", dict(recency_days=13, tenure_days=13, monetary=0.0))


def test_malformed_rows(tmp_path: Path):
    good = "100001,A1,X,1,2011-01-10 09:00:00,1.00,17850.0,United Kingdom"
    rows = [
        good + ",extra",  # too many fields, first data row (pandas would shift it into the index)
        good,
        "100001,A1,X,1,2011-01-10 09:00:00,1.00",  # too few fields
        good + ",extra,more",  # too many fields, not the first row
    ]
    ref = reference_online_retail(write_csv(tmp_path / "in", "a.csv", rows).parent)

    assert ref.input_rows == 4
    assert ref.rejects == {"malformed_row": 3}
    assert ref.accepted_rows == 1
    assert ref.snapshot_date == "2011-01-11"
    assert_customer(ref, "17850", dict(recency_days=1, frequency=1, tenure_days=1, gross=1.0, monetary=1.0))


def test_rejects_only_list_occurring_reasons(tiny_dir: Path):
    ref = reference_online_retail(tiny_dir)
    assert set(ref.rejects) <= set(REJECT_REASONS)
    assert all(n > 0 for n in ref.rejects.values())
    assert "after_snapshot" not in ref.rejects


def test_bad_snapshot_date(tiny_dir: Path):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        reference_online_retail(tiny_dir, snapshot_date="2011-1-25")


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data not available at {REAL_DATA}")
def test_real_online_retail_known_figures():
    ref = reference_online_retail(REAL_CSV_DIR)

    # figures published in shared/data/README.md that follow from the rules
    assert ref.input_rows == 541_909
    assert ref.rejects["missing_customer_id"] == 135_080
    assert ref.rejects["non_positive_price"] == 40  # rows with a CustomerID and UnitPrice <= 0
    # 5,268 exact duplicates among all rows; the rest repeat rows already rejected for a missing CustomerID
    assert 0 < ref.rejects["duplicate"] <= 5_268
    assert not set(ref.rejects) & {"malformed_row", "invalid_timestamp", "invalid_number", "after_snapshot"}
    assert ref.input_rows == ref.accepted_rows + sum(ref.rejects.values())
    # 4,338 customers once cancellations and non-positive prices are removed = customers with a purchase line
    assert (ref.customers["frequency"] > 0).sum() == 4_338
    assert len(ref.customers) <= 4_372
    # the last invoice is 2011-12-09 12:50
    assert ref.snapshot_date == "2011-12-10"
