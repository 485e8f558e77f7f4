"""Segment names from profiles: RFM names from a segment's medians, in absolute terms as well as relative ones.

Takes each segment's medians of recency, frequency, monetary value and tenure and the clustered customers'
quartiles, and hands the profiles one name per segment (docs/choosing-k.md, step 6): Lost and Lapsed
from absolute thresholds (`naming`), the others from the quartiles; two segments never share a name. A
customer table's names come from the level (high / average / low) of each numeric model feature (`level`).
"""

from __future__ import annotations

from typing import Any

LEVEL_WORDS = {"high": "high", "mid": "average", "low": "low"}


def level(value: float, p25: float, p75: float) -> str:
    """high / mid / low of a segment median against the clustered customers' quartiles."""
    if value >= p75 and value > p25:
        return "high"
    if value <= p25 and value < p75:
        return "low"
    return "mid"


#: The dimensions names are derived from (recency is inverted: a low recency is a "high" R).
NAMING_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")


def _level(value: float, quartiles: tuple[float, float, float], higher_is_better: bool = True) -> str:
    p25, _, p75 = quartiles
    if value >= p75 and value > p25:
        level = "high"
    elif value <= p25 and value < p75:
        level = "low"
    else:
        level = "mid"
    if not higher_is_better:
        level = {"high": "low", "low": "high", "mid": "mid"}[level]
    return level


#: `naming` defaults: absolute thresholds that hold whatever the quartiles of the data say (docs/choosing-k.md, step 6).
NAMING_DEFAULTS = {"lapsed_days": 365, "lost_max_orders": 1}


def candidate_names(
    medians: dict[str, float], quartiles: dict[str, tuple], naming: dict[str, Any] | None = None
) -> list[str]:
    """Every naming rule a segment's medians satisfy, in rule order (the first is its name).

    First in absolute terms, whatever the data set's quartiles: a segment whose median customer last ordered
    more than `lapsed_days` ago is Lost (at most `lost_max_orders` orders) or Lapsed. Then R, F, M, T levels
    are high / mid / low against the clustered customers' quartiles (R inverted: recent = high). Rules, in
    order: Champions (R, F, M high); Loyal (R not low, F high); Big spenders (R not low, M high); New (T low,
    F not high: first bought recently); Promising (R high); At risk (R low, F or M not low); Hibernating
    (R low); Needs attention (none of these).
    """
    naming = {**NAMING_DEFAULTS, **(naming or {})}
    if medians["recency_days"] > naming["lapsed_days"]:
        return ["Lost" if medians["frequency"] <= naming["lost_max_orders"] else "Lapsed"]
    r = _level(medians["recency_days"], quartiles["recency_days"], higher_is_better=False)
    f = _level(medians["frequency"], quartiles["frequency"])
    m = _level(medians["monetary"], quartiles["monetary"])
    t = _level(medians["tenure_days"], quartiles["tenure_days"])
    rules = [
        ("Champions", r == "high" and f == "high" and m == "high"),
        ("Loyal", r != "low" and f == "high"),
        ("Big spenders", r != "low" and m == "high"),
        ("New", t == "low" and f != "high"),
        ("Promising", r == "high"),
        ("At risk", r == "low" and (f != "low" or m != "low")),
        ("Hibernating", r == "low"),
    ]
    return [name for name, matches in rules if matches] or ["Needs attention"]


def segment_name(
    medians: dict[str, float], quartiles: dict[str, tuple], naming: dict[str, Any] | None = None
) -> str:
    """Name a segment from its median recency, frequency, monetary and tenure (first matching rule)."""
    return candidate_names(medians, quartiles, naming)[0]


#: What tells two segments of one name apart: the feature and the words for its higher and lower values.
DISTINGUISHERS = (
    ("monetary", "high value", "low value"),
    ("frequency", "frequent", "occasional"),
    ("recency_days", "longer gone", "more recent"),
    ("tenure_days", "long-standing", "newer"),
)


def _told_apart(medians: list[dict[str, float]], quartiles: dict[str, tuple]) -> list[str] | None:
    """Qualifiers for segments that share a name, from the feature on which their medians differ the most
    (relative to the clustered customers' interquartile range): "high value" / "low value" for two, with
    "mid value" between for three. None when they cannot be told apart (same medians, or more than three)."""
    if len(medians) > 3:
        return None
    best, spread = None, 0.0
    for feature, high, low in DISTINGUISHERS:
        values = [m[feature] for m in medians]
        p25, _, p75 = quartiles[feature]
        scale = (p75 - p25) or max(abs(v) for v in values) or 1.0
        if len(set(values)) == len(values) and (max(values) - min(values)) / scale > spread:
            best, spread = (feature, high, low), (max(values) - min(values)) / scale
    if best is None:
        return None
    feature, high, low = best
    ranked = sorted(range(len(medians)), key=lambda i: -medians[i][feature])
    words = [high, low] if len(medians) == 2 else [high, "mid " + high.split()[-1], low]
    if len(medians) == 3 and feature != "monetary":
        words = [high, "average", low]
    qualifiers = [""] * len(medians)
    for rank, i in enumerate(ranked):
        qualifiers[i] = words[rank]
    return qualifiers


def name_segments(
    medians_by_segment: dict[int, dict[str, float]],
    quartiles: dict[str, tuple],
    naming: dict[str, Any] | None = None,
    kept: dict[int, str] | None = None,
) -> dict[int, str]:
    """Unique names for all segments, in segment-id order (most valuable first).

    `kept`: names segments keep from the previous snapshot (stable ids); the others are named by the rules,
    skipping names already taken: a segment whose first name is taken gets its next matching rule (two
    "Champions" groups: the second is "Loyal" if it also qualifies). Segments left sharing a name are told
    apart by what differs ("Lost (high value)" / "Lost (low value)"); only identical profiles get " (2)".
    """
    names = {sid: kept[sid] for sid in medians_by_segment if kept and sid in kept}
    taken = set(names.values())
    shared: dict[str, list[int]] = {}
    for sid in sorted(medians_by_segment):
        if sid in names:
            continue
        candidates = candidate_names(medians_by_segment[sid], quartiles, naming)
        name = next((c for c in candidates if c not in taken), None)
        if name is None:
            shared.setdefault(candidates[0], []).append(sid)
        else:
            names[sid] = name
            taken.add(name)
    for base, sids in shared.items():
        # the segment that took the name first is told apart too, unless its name was kept from before
        first = [sid for sid, n in names.items() if n == base and not (kept and sid in kept)]
        group = sorted(first + sids)
        qualifiers = _told_apart([medians_by_segment[sid] for sid in group], quartiles)
        if qualifiers is not None and not any(f"{base} ({q})" in taken for q in qualifiers):
            for sid, q in zip(group, qualifiers):
                names[sid] = f"{base} ({q})"
            taken.update(f"{base} ({q})" for q in qualifiers)
            continue
        n = 1
        for sid in sids:
            n += 1
            while f"{base} ({n})" in taken:
                n += 1
            names[sid] = f"{base} ({n})"
            taken.add(names[sid])
    return dict(sorted(names.items()))
