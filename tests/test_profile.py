"""Profile stage: names from profile statistics (never from an index), unique names, profile rows."""

from __future__ import annotations

import pytest

from segmentation.segments.naming import name_segments, segment_name
from segmentation.segments.profiles import build_profiles

# clustered customers' (p25, p50, p75) per feature
QUARTILES = {
    "recency_days": (17.0, 50.0, 140.0),
    "frequency": (1.0, 2.0, 5.0),
    "monetary": (300.0, 650.0, 1600.0),
    "tenure_days": (110.0, 250.0, 330.0),
}


def _m(r, f, m, t):
    return {"recency_days": r, "frequency": f, "monetary": m, "tenure_days": t}


@pytest.mark.parametrize(
    ("medians", "name"),
    [
        (_m(9, 12, 4900, 360), "Champions"),
        (_m(30, 6, 1200, 300), "Loyal"),
        (_m(40, 2, 5000, 200), "Big spenders"),
        (_m(20, 1, 300, 30), "New"),
        (_m(10, 2, 600, 200), "Promising"),
        (_m(200, 3, 900, 300), "At risk"),
        (_m(230, 1, 250, 250), "Hibernating"),
        (_m(79, 3, 1030, 280), "Needs attention"),
    ],
)
def test_segment_name_rules(medians, name):
    assert segment_name(medians, QUARTILES) == name


def test_names_do_not_depend_on_segment_ids_and_stay_unique():
    hibernating = _m(230, 1, 250, 250)
    names = name_segments({3: hibernating, 1: _m(9, 12, 4900, 360), 2: dict(hibernating)}, QUARTILES)
    assert names == {1: "Champions", 2: "Hibernating", 3: "Hibernating (2)"}
    # a second champion-like group takes the next rule it satisfies
    two_top = name_segments(
        {1: _m(8, 14, 5500, 360), 2: _m(17, 5, 1650, 330), 3: _m(219, 1, 234, 250)}, QUARTILES
    )
    assert two_top == {1: "Champions", 2: "Loyal", 3: "Hibernating"}
    swapped = name_segments({7: _m(9, 12, 4900, 360), 1: hibernating}, QUARTILES)
    assert swapped == {7: "Champions", 1: "Hibernating"}


def test_tied_quartiles_do_not_call_everyone_high():
    flat = {k: (1.0, 1.0, 1.0) for k in QUARTILES}
    assert segment_name(_m(1, 1, 1, 1), flat) == "Needs attention"


def test_build_profiles_shares_and_centers():
    stats = []
    for sid, n, revenue in [(1, 10, 900.0), (2, 30, 100.0)]:
        row = {"segment_id": sid, "customers": n, "revenue": revenue}
        for f in (
            "recency_days",
            "frequency",
            "tenure_days",
            "gross",
            "returns",
            "monetary",
            "avg_order_value",
        ):
            row[f"mean_{f}"] = float(sid)
            row[f"median_{f}"] = float(sid)
        stats.append(row)
    profiles = build_profiles(
        stats, {1: "Champions", 2: "Hibernating"}, {1: {"monetary": 90.0}, 2: {"monetary": 3.0}}, ["monetary"]
    )
    assert [
        (p["segment_name"], p["share_customers"], p["share_revenue"], p["center_monetary"]) for p in profiles
    ] == [
        ("Champions", 0.25, 0.9, 90.0),
        ("Hibernating", 0.75, 0.1, 3.0),
    ]


def test_a_year_gone_is_lost_whatever_the_quartiles():
    # a retailer's log where most customers have lapsed: the quartiles themselves are asleep
    asleep = {
        "recency_days": (300.0, 450.0, 600.0),
        "frequency": (1.0, 1.0, 2.0),
        "monetary": (50.0, 120.0, 400.0),
        "tenure_days": (400.0, 550.0, 700.0),
    }
    # relative to these quartiles a median recency of 502 days is only "mid": it used to be "Needs attention"
    assert segment_name(_m(502, 1, 120, 560), asleep) == "Lost"
    assert segment_name(_m(502, 3, 900, 700), asleep) == "Lapsed"
    assert segment_name(_m(200, 1, 120, 560), asleep) != "Lost"
    # the threshold is configurable
    assert segment_name(_m(502, 1, 120, 560), asleep, {"lapsed_days": 600}) != "Lost"
    assert segment_name(_m(502, 2, 120, 560), asleep, {"lost_max_orders": 2}) == "Lost"


def test_segments_sharing_a_name_are_told_apart():
    lost_big, lost_small = _m(500, 1, 2400, 520), _m(520, 1, 90, 530)
    names = name_segments({1: _m(9, 12, 4900, 360), 2: lost_big, 3: lost_small}, QUARTILES)
    assert names == {1: "Champions", 2: "Lost (high value)", 3: "Lost (low value)"}
    # a second segment takes its next matching rule first (At risk -> Hibernating) ...
    assert name_segments({4: _m(230, 4, 300, 250), 5: _m(240, 2, 310, 260)}, QUARTILES) == {
        4: "At risk",
        5: "Hibernating",
    }
    # ... and only segments left with one name are told apart, by what differs most for its spread
    assert name_segments({1: _m(79, 3, 1030, 280), 2: _m(85, 3, 600, 280)}, QUARTILES) == {
        1: "Needs attention (high value)",
        2: "Needs attention (low value)",
    }
    assert name_segments({1: _m(79, 3, 700, 280), 2: _m(130, 3, 710, 280)}, QUARTILES) == {
        1: "Needs attention (more recent)",
        2: "Needs attention (longer gone)",
    }
    three = name_segments(
        {1: _m(500, 1, 2400, 520), 2: _m(510, 1, 600, 520), 3: _m(520, 1, 90, 530)}, QUARTILES
    )
    assert three == {1: "Lost (high value)", 2: "Lost (mid value)", 3: "Lost (low value)"}
    assert len(set(three.values())) == 3
