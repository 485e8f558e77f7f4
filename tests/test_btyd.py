"""BTYD columns (repeat_frequency, recency_age_days, T_days, avg_repeat_value) against lifetimes' definitions."""

from __future__ import annotations

import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data

from segmentation.features.rfm import BTYD_COLUMNS, customer_features

from .test_features import ROWS, _lines

SNAPSHOT = "2011-01-31"
# ROWS of test_features plus a customer with three purchase days, two lines on one of them
MORE_ROWS = [
    *ROWS,
    ("e", "10", "2011-01-02 10:00:00", "1", "10"),
    ("e", "11", "2011-01-05 09:00:00", "1", "3"),
    ("e", "12", "2011-01-05 18:00:00", "2", "1"),
    ("e", "13", "2011-01-15 10:00:00", "7", "1"),
]


@pytest.fixture(scope="module")
def btyd(spark):
    df = customer_features(_lines(spark, MORE_ROWS), SNAPSHOT).select("customer_id", *BTYD_COLUMNS)
    return df.toPandas().set_index("customer_id").sort_index()


def test_btyd_columns_by_hand(btyd):
    # a: days 01-01 (2x10 + 1x5 + 1x3 = 28) and 01-20 (4); the return of 01-25 is not a purchase day
    # b: one day; c: only returns (no purchase day: nulls); d: one day on the snapshot's eve; e: three days
    expected = pd.DataFrame(
        {
            "repeat_frequency": [1, 0, None, 0, 2],
            "recency_age_days": [19, 0, None, 0, 13],
            "T_days": [30, 21, None, 1, 29],
            "avg_repeat_value": [4.0, 0.0, None, 0.0, 6.0],
        },
        index=pd.Index(["a", "b", "c", "d", "e"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(btyd, expected, check_dtype=False)


def test_btyd_columns_match_lifetimes(btyd):
    purchases = pd.DataFrame(
        [
            (c, pd.Timestamp(t).normalize(), float(q) * float(p))
            for c, o, t, q, p in MORE_ROWS
            if not o.startswith("C") and float(q) > 0
        ],
        columns=["customer_id", "date", "value"],
    )
    summary = summary_data_from_transaction_data(
        purchases,
        "customer_id",
        "date",
        monetary_value_col="value",
        observation_period_end=SNAPSHOT,
        freq="D",
    ).sort_index()
    ours = btyd.dropna()
    assert list(ours.index) == list(summary.index) == ["a", "b", "d", "e"]
    assert ours["repeat_frequency"].tolist() == summary["frequency"].tolist()
    assert ours["recency_age_days"].tolist() == summary["recency"].tolist()
    assert ours["T_days"].tolist() == summary["T"].tolist()
    assert ours["avg_repeat_value"].tolist() == pytest.approx(summary["monetary_value"].tolist())
