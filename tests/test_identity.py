"""Stable segment identity across snapshots and the transitions table."""

from __future__ import annotations

import pandas as pd
import pytest

from segmentation.segments.identity import match_segments, transitions_table
from segmentation.segments.naming import name_segments


def _segments(published, i: int) -> pd.DataFrame:
    out, manifests, _ = published
    return pd.read_parquet(out / "segments" / f"snapshot_date={manifests[i]['snapshot_date']}")


def _group(customer_id: str) -> str:
    return {"1": "best", "2": "regular", "3": "lapsed", "4": "whales"}[customer_id[0]]


def test_same_groups_keep_id_and_name_and_a_new_group_gets_a_new_id(published):
    _, manifests, _ = published
    ids = []
    for i in (0, 1):
        df = _segments(published, i)
        df["group"] = df.customer_id.map(_group)
        # each synthetic group is exactly one segment
        per_group = df.groupby("group")[["segment_id", "segment_name"]].agg(lambda s: set(s))
        assert per_group.segment_id.map(len).eq(1).all()
        ids.append({g: (min(r.segment_id), min(r.segment_name)) for g, r in per_group.iterrows()})
    first, second = ids
    assert sorted(i for i, _ in first.values()) == [1, 2, 3]
    # by mean monetary the whales would be segment 1 of the second snapshot; identity keeps the old ids
    for group in ("best", "regular", "lapsed"):
        assert second[group] == first[group]
    assert second["whales"][0] == 4
    assert second["whales"][1] not in {n for _, n in first.values()}
    assert manifests[0]["previous_snapshot_date"] is None
    assert manifests[1]["previous_snapshot_date"] == manifests[0]["snapshot_date"]
    assert manifests[1]["identity_snapshot_date"] == manifests[0]["snapshot_date"]
    assert sorted(manifests[1]["matched_segments"]) == ["1", "2", "3"]
    assert max(manifests[1]["matched_segments"].values()) < 0.05  # the same customers, shifted in time
    assert manifests[1]["max_segment_id"] == 4


def test_transitions_between_the_two_snapshots(published):
    out, manifests, _ = published
    second = _segments(published, 1)
    transitions = pd.read_parquet(out / "transitions" / f"snapshot_date={manifests[1]['snapshot_date']}")
    names = dict(zip(second.segment_id, second.segment_name))
    expected = (
        second.assign(
            from_segment=[
                "(new)" if c.startswith("4") else names[s]
                for c, s in zip(second.customer_id, second.segment_id)
            ]
        )
        .groupby(["from_segment", "segment_name"])
        .agg(customers=("customer_id", "size"), revenue=("monetary", "sum"))
        .reset_index()
        .rename(columns={"segment_name": "to_segment"})
    )
    actual = transitions[["from_segment", "to_segment", "customers", "revenue"]]
    pd.testing.assert_frame_equal(
        actual.sort_values("to_segment").reset_index(drop=True),
        expected.sort_values("to_segment").reset_index(drop=True),
        check_dtype=False,
    )
    assert transitions.customers.sum() == 36 and transitions.previous_snapshot_date.nunique() == 1
    assert set(transitions.run_id) == {manifests[1]["run_id"]}
    first = pd.read_parquet(out / "transitions" / f"snapshot_date={manifests[0]['snapshot_date']}")
    assert set(first.from_segment) == {"(new)"} and first.customers.sum() == 30
    assert first.previous_snapshot_date.isna().all()


def test_match_segments_keeps_close_ids_and_numbers_new_ones_after_the_largest():
    # previous segments 1, 2, 5 (3 and 4 were retired earlier); new clusters 0..2
    previous = {1: [0.0, 0.0], 2: [3.0, 0.0], 5: [0.0, 3.0]}
    centers = [[3.1, 0.0], [9.0, 9.0], [0.0, 0.2]]  # near 2, far from everything, near 1
    order = {0: 2, 1: 1, 2: 3}  # by value: cluster 1 first
    mapping, distances = match_segments(order, centers, previous, next_id=6, max_distance=1.0)
    assert mapping == {0: 2, 2: 1, 1: 6}
    assert distances == pytest.approx({2: 0.1, 1: 0.2})
    # no previous snapshot: the value order stands
    assert match_segments(order, centers, {}, next_id=1, max_distance=1.0) == (order, {})


def test_kept_names_win_and_new_segments_skip_them():
    quartiles = {
        "recency_days": (10.0, 50.0, 100.0),
        "frequency": (1.0, 2.0, 5.0),
        "monetary": (100.0, 300.0, 1000.0),
        "tenure_days": (50.0, 150.0, 300.0),
    }
    champion = {"recency_days": 5.0, "frequency": 10.0, "monetary": 5000.0, "tenure_days": 300.0}
    names = name_segments({1: champion, 7: dict(champion)}, quartiles, kept={1: "Champions"})
    assert names == {1: "Champions", 7: "Loyal"}


def test_transitions_with_lost_new_and_excluded_customers(spark):
    now = spark.createDataFrame(
        [
            ("a", 1, "Champions", 10.0),
            ("b", 2, "At risk", 5.0),
            ("d", None, None, -1.0),
            ("e", 1, "Champions", 4.0),
        ],
        "customer_id string, segment_id int, segment_name string, monetary double",
    )
    before = spark.createDataFrame(
        [
            ("a", 1, "Champions", 8.0),
            ("b", 1, "Champions", 6.0),
            ("c", 2, "At risk", 3.0),
            ("d", 2, "At risk", 2.0),
        ],
        "customer_id string, segment_id int, segment_name string, monetary double",
    )
    rows = transitions_table(now, before, "2011-01-01").collect()
    actual = {(r.from_segment, r.to_segment): (r.customers, r.revenue) for r in rows}
    assert actual == {
        ("Champions", "Champions"): (1, 10.0),
        ("Champions", "At risk"): (1, 5.0),
        ("At risk", "(lost)"): (1, 3.0),
        ("At risk", "(excluded)"): (1, -1.0),
        ("(new)", "Champions"): (1, 4.0),
    }
    assert {str(r.previous_snapshot_date) for r in rows} == {"2011-01-01"}
