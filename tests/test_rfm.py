"""RFM scores and the named RFM map on hand-made customers, with ties and a single customer."""

from __future__ import annotations

import chispa
import pytest

from segmentation.features.scores import (
    FALLBACK_BREAKPOINTS,
    RFM_ACTIONS,
    RFM_SEGMENT_RULES,
    rfm_breakpoints,
    rfm_segment_profiles,
    segment_action,
    with_rfm_scores,
)

SCHEMA = "customer_id string, recency_days int, frequency int, monetary double"


def test_segment_map_covers_every_cell_exactly_once():
    for r in range(1, 6):
        for f in range(1, 6):
            matches = [name for name, rs, fs in RFM_SEGMENT_RULES if r in rs and f in fs]
            assert len(matches) == 1, (r, f, matches)
    assert {name for name, _, _ in RFM_SEGMENT_RULES} == set(RFM_ACTIONS)
    assert len(RFM_ACTIONS) == 11


def test_quantile_scores_on_distinct_values(spark):
    # 10 customers with distinct values: two per quintile
    rows = [(f"c{i}", 10 * i, i, 100.0 * i) for i in range(1, 11)] + [("none", None, 0, -5.0)]
    df = spark.createDataFrame(rows, SCHEMA)
    bp = rfm_breakpoints(df.filter("frequency > 0"))
    assert bp["frequency"] == {"breakpoints": [2.0, 4.0, 6.0, 8.0], "method": "quantiles 0.2/0.4/0.6/0.8"}
    scored = df.transform(with_rfm_scores, breakpoints=bp)
    actual = scored.select("customer_id", "r_score", "f_score", "m_score", "rfm_score", "rfm_segment")
    expected = spark.createDataFrame(
        [
            ("c1", 5, 1, 1, "511", "New customers"),
            ("c2", 5, 1, 1, "511", "New customers"),
            ("c3", 4, 2, 2, "422", "Potential loyalists"),
            ("c4", 4, 2, 2, "422", "Potential loyalists"),
            ("c5", 3, 3, 3, "333", "Need attention"),
            ("c6", 3, 3, 3, "333", "Need attention"),
            ("c7", 2, 4, 4, "244", "At risk"),
            ("c8", 2, 4, 4, "244", "At risk"),
            ("c9", 1, 5, 5, "155", "Can't lose them"),
            ("c10", 1, 5, 5, "155", "Can't lose them"),
            ("none", None, None, None, None, None),
        ],
        "customer_id string, r_score int, f_score int, m_score int, rfm_score string, rfm_segment string",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_tied_frequency_falls_back_to_documented_breakpoints(spark):
    # most customers bought once: quantiles of frequency tie at 1
    rows = [(f"c{i}", i, 1, float(i)) for i in range(1, 9)] + [
        ("a", 3, 2, 50.0),
        ("b", 2, 4, 60.0),
        ("c", 1, 9, 70.0),
    ]
    df = spark.createDataFrame(rows, SCHEMA)
    bp = rfm_breakpoints(df)
    assert bp["frequency"]["breakpoints"] == FALLBACK_BREAKPOINTS["frequency"]
    assert bp["frequency"]["method"].startswith("fallback (quantiles tie: [1.0, 1.0,")
    scores = {r.customer_id: r.f_score for r in df.transform(with_rfm_scores, breakpoints=bp).collect()}
    assert (scores["c1"], scores["a"], scores["b"], scores["c"]) == (1, 2, 4, 5)


def test_single_customer_gets_scores(spark):
    df = spark.createDataFrame([("solo", 12, 3, 250.0)], SCHEMA)
    bp = rfm_breakpoints(df)
    row = df.transform(with_rfm_scores, breakpoints=bp).first()
    # recency and frequency fall back to fixed days / orders; a single monetary value scores 3
    assert (row.r_score, row.f_score, row.m_score, row.rfm_score) == (5, 3, 3, "533")
    assert row.rfm_segment == "Potential loyalists"
    assert bp["monetary"] == {"breakpoints": [], "method": "fallback (single value 250.0: everyone scores 3)"}


def test_rfm_profiles_and_actions(spark):
    rows = [(f"c{i}", 10 * i, i, 100.0 * i) for i in range(1, 11)]
    df = spark.createDataFrame(rows, SCHEMA)
    scored = df.transform(with_rfm_scores, breakpoints=rfm_breakpoints(df))
    profiles = rfm_segment_profiles(scored).collect()
    assert [p.rfm_segment for p in profiles] == [
        "Potential loyalists",
        "New customers",
        "Need attention",
        "Can't lose them",
        "At risk",
    ]
    assert sum(p.customers for p in profiles) == 10
    assert sum(p.share_revenue for p in profiles) == pytest.approx(1.0)
    cant_lose = next(p for p in profiles if p.rfm_segment == "Can't lose them")
    assert (cant_lose.customers, cant_lose.revenue, cant_lose.action) == (
        2,
        1900.0,
        RFM_ACTIONS["Can't lose them"],
    )
    assert segment_action("At risk (2)") == segment_action("At risk")
