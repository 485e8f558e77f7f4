"""The engine's start: Spark ML's k-means|| initialisation, replayed for every (k, seed) in shared passes.

A random first center, `INIT_STEPS` rounds each sampling about 2k customers with probability proportional to
their squared distance to the candidates so far, then a weighted k-means++ and Lloyd rounds on the
candidates locally, with Spark's random numbers and arithmetic (`sparkrandom`): the start a Spark ML fit at
that k and seed makes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
from pyspark.sql import DataFrame

from segmentation.compat import to_arrow
from segmentation.model.engine.kernels import partial_distances
from segmentation.model.engine.lloyd import Model
from segmentation.model.engine.rows import (
    PARTITION_COLUMN,
    LocalRows,
    Rows,
    feature_columns,
    parallel_map,
    partition_job,
)
from segmentation.model.engine.sparkrandom import JavaRandom, XORShiftRandom, int32, take_sample_one

log = logging.getLogger(__name__)


#: Spark ML KMeans' defaults: rounds of k-means|| sampling (`initSteps`), and the local k-means++'s seed and
#: Lloyd rounds on the weighted candidates.
INIT_STEPS = 2


LOCAL_SEED = 0


LOCAL_ITERATIONS = 30


#: MLUtils.EPSILON (the machine epsilon) and fastSquaredDistance's precision
_EPSILON = float(np.finfo(np.float64).eps)


_PRECISION = 1e-6


def _norms(x: np.ndarray) -> np.ndarray:
    """Vectors.norm(v, 2): the square root of the squares summed in order."""
    total = np.zeros(len(x))
    for d in range(x.shape[1]):
        total = total + x[:, d] * x[:, d]
    return np.sqrt(total)


def _in_order_dots(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """x . c for every row and center (n x m), the products added in order from 0.0 (BLAS ddot on short
    vectors)."""
    total = np.zeros((len(x), len(centers)))
    for d in range(x.shape[1]):
        total = total + x[:, d, None] * centers[None, :, d]
    return total


def _fast_squared_distances(x: np.ndarray, xn: np.ndarray, centers: np.ndarray, cn: np.ndarray) -> np.ndarray:
    """MLUtils.fastSquaredDistance of every row to every center (n x m): |c|^2 + |x|^2 - 2 x.c where that is
    precise enough, else the plain sum of squared differences; the same operations in the same order as
    Spark, so the same doubles."""
    sum_squared_norm = cn[None, :] * cn[None, :] + xn[:, None] * xn[:, None]
    norm_diff = cn[None, :] - xn[:, None]
    bound = 2.0 * _EPSILON * sum_squared_norm / (norm_diff * norm_diff + _EPSILON)
    distance = sum_squared_norm - 2.0 * _in_order_dots(x, centers)
    imprecise = ~(bound < _PRECISION)
    if imprecise.any():
        rows, cols = np.nonzero(imprecise)
        exact = np.zeros(len(rows))
        for d in range(x.shape[1]):
            diff = centers[cols, d] - x[rows, d]
            exact = exact + diff * diff
        distance[rows, cols] = exact
    return distance


#: Rows whose two closest centers are this close (relative to the squared norms) get Spark's exact arithmetic
#: for every center; the others only for the closest.
_AMBIGUOUS = 1e-9


def _closest(
    x: np.ndarray, xn: np.ndarray, centers: np.ndarray, cn: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """EuclideanDistanceMeasure.findClosest for every row: the closest center, the first of equal distances,
    and Spark's squared distance to it (index, distance); +inf without centers. The closest is found with a
    matrix product; a row whose runner-up is within rounding of it is decided on Spark's own distances to
    every center. (Spark skips a center whose norm bound cannot beat the best so far: a saving of time only.)"""
    n = len(x)
    if len(centers) == 0:
        return np.zeros(n, dtype=np.int64), np.full(n, np.inf)
    approx = partial_distances(x, centers)
    index = approx.argmin(axis=1)
    rows = np.arange(n)
    if len(centers) > 1:
        best = approx[rows, index]
        approx[rows, index] = np.inf
        margin = approx.min(axis=1) - best
        scale = xn * xn + float(np.max(cn * cn))
        ambiguous = np.flatnonzero(margin <= _AMBIGUOUS * scale)
        if len(ambiguous):
            exact = _fast_squared_distances(x[ambiguous], xn[ambiguous], centers, cn)
            index[ambiguous] = exact.argmin(axis=1)
    return index, _paired_fast_squared_distance(x, xn, centers[index], cn[index])


def _paired_fast_squared_distance(x: np.ndarray, xn: np.ndarray, c: np.ndarray, cn: np.ndarray) -> np.ndarray:
    """`_fast_squared_distances` of row i to center i only (x and c both n x dim)."""
    sum_squared_norm = cn * cn + xn * xn
    norm_diff = cn - xn
    bound = 2.0 * _EPSILON * sum_squared_norm / (norm_diff * norm_diff + _EPSILON)
    dot = np.zeros(len(x))
    exact = np.zeros(len(x))
    for d in range(x.shape[1]):
        dot = dot + x[:, d] * c[:, d]
        diff = c[:, d] - x[:, d]
        exact = exact + diff * diff
    return np.where(bound < _PRECISION, sum_squared_norm - 2.0 * dot, exact)


def _cost(x: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Each row's k-means|| cost after these rounds of candidates: the minimum over the rounds of the squared
    distance to the round's closest candidate (Spark keeps the running minimum the same way)."""
    xn = _norms(x)
    cost = np.full(len(x), np.inf)
    for group in groups:
        cost = np.minimum(_closest(x, xn, group, _norms(group))[1], cost)
    return cost


def _in_order_sum(values: np.ndarray, start: float = 0.0) -> float:
    """start + v0 + v1 + ... added one by one, as a Scala fold (numpy's sum adds pairwise)."""
    return float(np.cumsum(np.concatenate([[start], values]))[-1]) if len(values) else start


def _local_kmeans_pp(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """LocalKMeans.kMeansPlusPlus(0, points, weights, k, 30): k-means++ on the weighted candidates, then up to
    30 weighted Lloyd rounds (a round that reassigns nobody ends them; an empty cluster takes a random point),
    drawing from java.util.Random(0) as Spark does."""
    rand = JavaRandom(LOCAL_SEED)
    norms = _norms(points)
    w = [float(v) for v in weights]

    def pick_weighted() -> int:
        r = rand.next_double() * _in_order_sum(np.asarray(w))
        i, current = 0, 0.0
        while i < len(w) and current < r:
            current += w[i]
            i += 1
        return i - 1

    chosen = [pick_weighted()]
    centers, center_norms = [points[chosen[0]]], [norms[chosen[0]]]
    cost = _fast_squared_distances(points, norms, points[chosen[0]][None, :], norms[chosen[0]][None])[:, 0]
    for _ in range(1, k):
        total = _in_order_sum(np.asarray([wi * ci for ci, wi in zip(cost, w)]))
        r = rand.next_double() * total
        cumulative, j = 0.0, 0
        while j < len(points) and cumulative < r:
            cumulative += w[j] * cost[j]
            j += 1
        j = max(j - 1, 0)
        centers.append(points[j])
        center_norms.append(norms[j])
        cost = np.minimum(
            _fast_squared_distances(points, norms, points[j][None, :], norms[j][None])[:, 0], cost
        )
    centers_arr = np.array(centers, dtype=np.float64)
    center_norms_arr = np.array(center_norms)
    previous = np.full(len(points), -1)
    for _ in range(LOCAL_ITERATIONS):
        index, _ = _closest(points, norms, centers_arr, center_norms_arr)
        moved = bool(np.any(index != previous))
        previous = index
        sums = np.zeros_like(centers_arr)
        counts = np.zeros(k)
        for i, c in enumerate(index):  # axpy in row order
            sums[c] = sums[c] + w[i] * points[i]
            counts[c] += w[i]
        for c in range(k):
            if counts[c] == 0.0:
                j = rand.next_int(len(points))
                centers_arr[c], center_norms_arr[c] = points[j], norms[j]
            else:
                centers_arr[c] = sums[c] * (1.0 / counts[c])
                center_norms_arr[c] = _norms(centers_arr[c : c + 1])[0]
        if not moved:
            break
    return centers_arr


def _distinct(rows: np.ndarray) -> np.ndarray:
    """The distinct rows, in order of first appearance (Scala's `distinct` on vectors)."""
    seen, keep = set(), []
    for i, row in enumerate(map(tuple, rows.tolist())):
        if row not in seen:
            seen.add(row)
            keep.append(i)
    return rows[keep]


def _uniform_sql(seed: int, step: int, partitions: int) -> str:
    """The random number Spark's k-means|| round `step` draws for each row, as SQL: XORShiftRandom(seed ^
    (step << 16) ^ partition), one draw per row in order. SQL's rand(s) in partition p is that generator seeded
    s + p, so every partition gets its own rand() (a CASE evaluates only the branch of the row's partition)."""
    branches = " ".join(
        f"WHEN {PARTITION_COLUMN} = {p} THEN rand({int32(seed ^ (step << 16) ^ p) - p})"
        for p in range(partitions)
    )
    return f"CASE {branches} END"


def _double_sql(value: float) -> str:
    """A double literal that parses back to exactly `value`."""
    return f"{value!r}D"


def _sampling_totals(costs_by_partition: list[dict]) -> dict:
    """RDD.sum of the costs: each partition's in-order sum, added in partition order from 0.0."""
    totals: dict = {}
    for part in costs_by_partition:
        for m, value in part.items():
            totals[m] = totals.get(m, 0.0) + value
    return totals


def _local_sample(rows: LocalRows, frame: DataFrame, uniforms: list[str], current: dict, pairs: list) -> dict:
    """One k-means|| round on collected rows: the costs in numpy; the draws come from the JVM (`frame`'s
    uniform columns), only for rows where some model's draw is below its largest threshold (2k x the largest
    cost / total cost), with their position; a row is kept when its draw < 2k x its cost / total cost."""
    blocks = rows.blocks()
    costs = {
        m: np.concatenate(parallel_map(lambda block, g=g: _cost(block[0], g), blocks))
        for m, g in current.items()
    }
    sums, start = [], 0
    for n in rows.partition_rows:
        sums.append({m: _in_order_sum(c[start : start + n]) for m, c in costs.items()})
        start += n
    totals = _sampling_totals(sums)
    # a model whose rows all sit on its candidates (total cost 0) draws nobody: Spark's test is then NaN
    bounds = {
        m: 2.0 * float(costs[m].max()) * pairs[m][0] / totals[m] if totals[m] > 0 else 0.0 for m in current
    }
    below = " OR ".join(f"{u} < {_double_sql(bounds[m])}" for m, u in zip(current, uniforms))
    table = to_arrow(frame.selectExpr("monotonically_increasing_id() AS _id", *uniforms).filter(below))
    ids = np.asarray(table.column("_id").to_numpy(), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(rows.partition_rows)])
    positions = offsets[ids >> 33] + (ids & ((1 << 33) - 1))
    chosen = {}
    for m, u in zip(current, uniforms):
        draws = np.asarray(table.column(u).to_numpy(), dtype=np.float64)
        if totals[m] <= 0:
            chosen[m] = rows.x[:0]
            continue
        kept = positions[draws < 2.0 * costs[m][positions] * pairs[m][0] / totals[m]]
        chosen[m] = rows.x[np.sort(kept)]
    return chosen


def _spark_sample(
    rows: Rows, frame: DataFrame, dim: int, uniforms: list[str], current: dict, pairs: list
) -> dict:
    """One k-means|| round as Spark jobs: the costs summed per partition (a pass), then the draws (SQL rand()
    in the JVM) tested in the executors, which send back only the rows kept."""

    def partition_cost(_: int, blocks: Iterator) -> dict:
        totals = {m: 0.0 for m in current}
        for x, _, _ in blocks:
            for m, g in current.items():
                totals[m] = _in_order_sum(_cost(x, g), totals[m])
        return totals

    totals = _sampling_totals(rows.map_partitions(partition_cost))

    def partition_sample(_: int, blocks: Iterator) -> dict:
        chosen = {m: [] for m in current}
        for x, _, u in blocks:
            for i, (m, g) in enumerate(current.items()):
                if totals[m] <= 0:
                    continue
                kept = u[:, i] < 2.0 * _cost(x, g) * pairs[m][0] / totals[m]
                if kept.any():
                    chosen[m].append(x[kept])
        return {m: np.vstack(c) if c else np.empty((0, dim)) for m, c in chosen.items()}

    parts = partition_job(frame, dim, partition_sample, uniforms)
    return {m: np.vstack([part[m] for part in parts] or [np.empty((0, dim))]) for m in current}


def kmeans_parallel(
    rows: Rows, features_df: DataFrame, dim: int, pairs: list[tuple[int, int]], steps: int = INIT_STEPS
) -> list[Model]:
    """Spark ML's k-means|| start (`KMeans.initKMeansParallel`) of every (k, seed) in `pairs`, all of them in
    shared passes, with Spark's random numbers (segmentation/model/engine/sparkrandom.py) and arithmetic, so each start is
    the one a Spark ML fit at that k and seed makes on these partitions:

    1. the first candidate: the row `takeSample(false, 1, XORShiftRandom(seed).nextInt())` returns;
    2. `steps` rounds: each row's cost (squared distance to the closest candidate so far, summed in Spark's
       order: a pass), then every row is drawn with probability 2k x cost / total cost (a Spark job: the
       draws are SQL rand() in the JVM, the test in the executors);
    3. with more than k distinct candidates, the rows closest to each are counted (a pass) and a local
       weighted k-means++ picks k of them; otherwise the candidates are the centers (fewer than k when the data
       has fewer distinct points, as in Spark).
    """
    started = time.perf_counter()
    models = range(len(pairs))
    seeds = {m: XORShiftRandom(pairs[m][1]).next_int() for m in models}
    partitions = len(rows.partition_rows)
    firsts = {m: take_sample_one(rows.partition_rows, seeds[m]) for m in models}
    positions: dict[int, list[int]] = {}
    for p, i in firsts.values():
        positions.setdefault(p, []).append(i)
    found = rows.rows_at(positions)
    groups = {m: [found[firsts[m]][None, :]] for m in models}
    for step in range(steps):
        current = {m: list(g) for m, g in groups.items()}
        uniforms = [f"_u{m}" for m in models]
        frame = features_df.selectExpr(
            *feature_columns(dim),
            PARTITION_COLUMN,
            *[f"{_uniform_sql(seeds[m], step, partitions)} AS {u}" for m, u in zip(models, uniforms)],
        )
        if isinstance(rows, LocalRows):
            chosen = _local_sample(rows, frame, uniforms, current, pairs)
        else:
            chosen = _spark_sample(rows, frame, dim, uniforms, current, pairs)
        for m in models:
            groups[m].append(chosen[m])
    distinct = {m: _distinct(np.vstack(groups[m])) for m in models}
    many = {m: c for m, c in distinct.items() if len(c) > pairs[m][0]}

    def weights(x: np.ndarray, xx: np.ndarray) -> dict:
        xn = _norms(x)
        return {
            m: np.bincount(_closest(x, xn, c, _norms(c))[0], minlength=len(c)).astype(np.float64)
            for m, c in many.items()
        }

    counts = rows.reduce(weights) if many else {}
    out = []
    for m in models:
        k, seed = pairs[m]
        centers = _local_kmeans_pp(many[m], counts[m], k) if m in many else distinct[m]
        out.append(Model(k, seed, np.array(centers, dtype=np.float64)))
    log.info(
        "k-means|| starts of %d models (Spark ML's, replayed): %d candidates (%.1f s)",
        len(pairs),
        sum(len(c) for c in distinct.values()),
        time.perf_counter() - started,
    )
    return out
