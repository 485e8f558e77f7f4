"""The knee of a cost curve (the "maximum distance to the chord" form of Kneedle): pure Python, no Spark.

Takes the k of a sweep and their costs (WCSS, or a negated log-likelihood) and hands on each k's normalised
distance below the chord from the first to the last point; the knee is the k with the largest positive one.
Used by the choice of k (`model.selection`) and by the pandas baseline (scripts/baseline_pandas.py).
"""

from __future__ import annotations

#: A gap must exceed this to count as below the chord (rounding noise on a straight line is not a knee).
MIN_GAP = 1e-12


def knee_gaps(ks: list[int], costs: list[float]) -> dict[int, float]:
    """Per k, the normalised distance below the chord of a decreasing cost curve (both axes in [0, 1]).

    Empty with fewer than three points or a flat curve.
    """
    if len(ks) < 3:
        return {}
    c_max, c_min = max(costs), min(costs)
    if c_max - c_min <= 0:
        return {}
    y = [(c - c_min) / (c_max - c_min) for c in costs]
    k0, k1 = ks[0], ks[-1]
    return {k: y[0] + (y[-1] - y[0]) * (k - k0) / (k1 - k0) - yk for k, yk in zip(ks, y)}


def positive_gaps(ks: list[int], costs: list[float]) -> dict[int, float]:
    """The k that lie below the chord, with their gaps."""
    return {k: g for k, g in knee_gaps(ks, costs).items() if g > MIN_GAP}


def knee_point(ks: list[int], costs: list[float]) -> tuple[int | None, float]:
    """The knee and its gap: the k farthest below the chord (the smaller k on a tie); (None, 0.0) when there
    are fewer than 3 points or no point lies below the chord (a straight or concave curve)."""
    positive = positive_gaps(ks, costs)
    if not positive:
        return None, 0.0
    knee = max(positive, key=lambda k: (positive[k], -k))
    return knee, positive[knee]
