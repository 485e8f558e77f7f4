"""Model stage, the k sweep's engine: every KMeans model of the sweep fitted at once.

Spark ML's KMeans fits one k per run: about ten small Spark jobs for its k-means|| start, one job per Lloyd
iteration, then a silhouette (two more passes) and diagnostics (more passes) per k. On a few hundred thousand
customers those jobs are bound by Spark's per-job latency, not by the arithmetic. Here every model of the sweep
(each k, and each extra seed of the stability check) runs together, one pass over the customers per step for
all of them, in numpy:

1. the start: Spark ML's k-means|| start (Bahmani et al., its default initialisation: a random first center,
   `steps` rounds each sampling about 2k customers with probability proportional to their squared distance to
   the candidates so far, then a weighted k-means++ and 30 weighted Lloyd rounds on the candidates, locally),
   replayed for all the models in shared passes with Spark's random numbers and arithmetic
   (`kmeans_parallel`, segmentation/sparkrandom.py): the start a Spark ML fit at that k and seed makes;
2. the Lloyd iterations with Spark's rules (an empty cluster keeps its center; a model has converged when no
   center moved more than `tol`; its cost is the one of the last assignment step), one pass per iteration for
   every model still moving (`fit_all`): from the same start, the same centers, iterations and cost as Spark
   ML (tests/test_lloyd.py);
3. two passes for the diagnostics of every model at once (`evaluate`): sizes, means, within-cluster sums,
   Davies-Bouldin spreads, the silhouette and the contingency tables of the stability pairs.

So every model here is the full Spark ML fit on the same partitions: the same start, centers, iterations and
cost (tests/test_lloyd.py); tests/test_sweep_cost.py holds the elbow within 5% of plain Spark ML fits too.

Where the passes run (`model.driver_sweep_max_rows`): up to that many customers, their features (a few
doubles each) are collected once to the driver and every pass is numpy there (`LocalRows`); above it, every
pass is one Spark job over the features cached as double columns and handed to numpy in Arrow batches
(`SparkRows`; per-cluster sums are reduced in the executors, no customer leaves its executor).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from threadpoolctl import ThreadpoolController

from segmentation.sparkrandom import JavaRandom, XORShiftRandom, int32, take_sample_one

log = logging.getLogger(__name__)


@dataclass
class Model:
    """One KMeans model of the sweep: its k, seed and, after `fit_all`, its centers and Spark-style summary."""

    k: int
    seed: int
    centers: np.ndarray = field(repr=False)
    iterations: int = 0
    converged: bool = False
    cost: float = 0.0  # Spark's trainingCost: the cost of the last assignment step


@dataclass
class Evaluation:
    """Per model, what the diagnostics need, from the assignment to its final centers (clusters in center order;
    a cluster nobody is closest to has size 0)."""

    sizes: np.ndarray
    means: np.ndarray
    within: np.ndarray  # sum of squared distances to the cluster's mean
    spread: np.ndarray  # mean distance to the cluster's mean (Davies-Bouldin's s)
    silhouette: float | None


def feature_columns(dim: int) -> list[str]:
    return [f"_x{i}" for i in range(dim)]


#: The column of `features_frame` with each row's partition (the partitions of the DataFrame Spark ML fits).
PARTITION_COLUMN = "_p"


def features_frame(scaled_df: DataFrame, dim: int, features_col: str = "scaled") -> DataFrame:
    """The vector column as `dim` double columns (Arrow hands those to numpy without copying) and the row's
    partition, same layout (a narrow projection: the partitions and row order Spark ML sees)."""
    x = vector_to_array(F.col(features_col))
    return scaled_df.select(
        *[x[i].alias(c) for i, c in enumerate(feature_columns(dim))],
        F.spark_partition_id().alias(PARTITION_COLUMN),
    )


def _add(a: Any, b: Any) -> Any:
    """Sum of two partial results of the same shape (dicts, tuples, numpy arrays, numbers)."""
    if isinstance(a, dict):
        return {
            key: _add(a[key], b[key]) if key in a and key in b else a.get(key, b.get(key)) for key in a | b
        }
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b))
    return a + b


def _partial_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """|c|^2 - 2 x.c for every row and center (n x m): the squared distance less the row's own squared norm,
    which is the same for every center (one matrix product, in place)."""
    partial = x @ centers.T
    partial *= -2.0
    partial += np.einsum("ij,ij->i", centers, centers)[None, :]
    return partial


def _assign(x: np.ndarray, xx: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest center of every row (first on ties, as Spark) and the squared distance to it. The row's own
    squared norm is the same for every center, so it is added to the winner only."""
    partial = _partial_distances(x, centers)
    nearest = partial.argmin(axis=1)
    return nearest, np.maximum(partial[np.arange(len(x)), nearest] + xx, 0.0)


def _per_cluster(nearest: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Sum of `values` (n or n x dim) per cluster: k or k x dim."""
    if values.ndim == 1:
        return np.bincount(nearest, weights=values, minlength=k)
    return np.stack(
        [np.bincount(nearest, weights=values[:, i], minlength=k) for i in range(values.shape[1])], 1
    )


#: per_batch(x, squared norms) -> a partial result (x: the block's rows, n x dim).
PerBatch = Callable[[np.ndarray, np.ndarray], Any]
#: per_partition(partition index, blocks) -> a partition's result; blocks yield (x, squared norms, extra
#: columns as an n x e array) in row order.
PerPartition = Callable[[int, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]], Any]


def _fold(per_batch: PerBatch, combine: Callable[[Any, Any], Any]) -> PerPartition:
    def run(_: int, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Any:
        total = None
        for x, xx, _extra in blocks:
            part = per_batch(x, xx)
            total = part if total is None else combine(total, part)
        return total

    return run


def _combined(results: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
    total = None
    for part in results:
        if part is not None:
            total = part if total is None else combine(total, part)
    return total


_POOL: ThreadPoolExecutor | None = None
_BLAS: ThreadpoolController | None = None


def _parallel(fn: Callable[[Any], Any], items: list) -> list:
    """fn on every item, on every core at once (numpy leaves the interpreter lock for its loops), in order.
    BLAS runs single-threaded meanwhile: its own threads would fight these for the same cores."""
    global _POOL, _BLAS
    if len(items) <= 1:
        return [fn(item) for item in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="kmeans-pass")
        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        return list(_POOL.map(fn, items))


class Rows:
    """The customers' features, partition by partition in the layout Spark ML fits (`partition_rows`: rows per
    partition, empty ones included). `map_partitions(per_partition)`: the result of every partition, in
    partition order; `reduce(per_batch, combine)`: `per_batch` on blocks of rows, combined in row order
    (`_add`: dicts / tuples of numpy arrays and numbers are summed)."""

    partition_rows: list[int]

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        raise NotImplementedError

    def reduce(self, per_batch: PerBatch, combine: Callable[[Any, Any], Any] = _add) -> Any:
        return _combined(self.map_partitions(_fold(per_batch, combine)), combine)

    def rows_at(self, positions: dict[int, list[int]]) -> dict[tuple[int, int], np.ndarray]:
        """The features of the rows at these (partition -> positions in it)."""
        wanted = {p: set(ps) for p, ps in positions.items()}

        def pick(p: int, blocks: Iterator) -> dict:
            out, offset = {}, 0
            for x, _, _ in blocks:
                for i in wanted.get(p, ()):
                    if offset <= i < offset + len(x):
                        out[(p, i)] = x[i - offset].copy()
                offset += len(x)
            return out

        return {key: row for part in self.map_partitions(pick) for key, row in part.items()}


def partition_job(
    df: DataFrame, dim: int, per_partition: PerPartition, extra: list[str] | None = None
) -> list:
    """`per_partition` on every non-empty partition of `df` (the feature columns, `PARTITION_COLUMN` and the
    `extra` columns), as one Spark job: each Arrow batch is handed to numpy, only the pickled results leave
    the executors; they come back in partition order (`collect` keeps it)."""
    extra = list(extra or [])

    def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        state = {"p": None}

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                state["p"] = int(batch.column(PARTITION_COLUMN)[0].as_py())
                x = _matrix(batch, dim)
                more = (
                    np.column_stack(
                        [
                            np.asarray(batch.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
                            for c in extra
                        ]
                    )
                    if extra
                    else np.empty((len(x), 0))
                )
                yield x, np.einsum("ij,ij->i", x, x), more

        stream = blocks()
        first = next(stream, None)
        if first is None:
            return

        def chained() -> Iterator:
            yield first
            yield from stream

        result = per_partition(state["p"], chained())
        yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps(result)], pa.binary())], ["payload"])

    columns = [*feature_columns(dim), PARTITION_COLUMN, *extra]
    return [
        pickle.loads(r["payload"])
        for r in df.select(*columns).mapInArrow(partition, "payload binary").collect()
    ]


class SparkRows(Rows):
    """Features in a cached DataFrame of double columns: every pass is one Spark job (`partition_job`); no row
    leaves its executor."""

    def __init__(self, features_df: DataFrame, dim: int):
        self.features_df, self.dim = features_df, dim
        counts = dict(features_df.groupBy(PARTITION_COLUMN).count().collect())
        self.partition_rows = [int(counts.get(p, 0)) for p in range(features_df.rdd.getNumPartitions())]

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        return partition_job(self.features_df, self.dim, per_partition)


class LocalRows(Rows):
    """Features collected once to the driver (Arrow), for customer counts up to `model.driver_sweep_max_rows`:
    a pass is then milliseconds of numpy instead of a Spark job (about 0.3 s of scheduling and Python worker
    round trip each on two local cores, whatever the size)."""

    def __init__(self, features_df: DataFrame, dim: int, block: int = 65_536):
        table = features_df.toArrow()
        self.x = _matrix(table, dim) if table.num_rows else np.empty((0, dim))
        self.xx = np.einsum("ij,ij->i", self.x, self.x)
        partitions = np.asarray(table.column(PARTITION_COLUMN).to_numpy(), dtype=np.int64)
        self.partition_rows = np.bincount(partitions, minlength=features_df.rdd.getNumPartitions()).tolist()
        if np.any(np.diff(partitions) < 0):
            raise RuntimeError("collected features are not in partition order")
        self.block = block

    def blocks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(features, squared norms) of every row, `block` rows at a time, in order."""
        return [
            (self.x[i : i + self.block], self.xx[i : i + self.block])
            for i in range(0, len(self.x), self.block)
        ]

    def reduce(self, per_batch: PerBatch, combine: Callable[[Any, Any], Any] = _add) -> Any:
        """`per_batch` on the blocks on every core at once (numpy leaves the interpreter lock for its loops),
        combined in block order."""
        return _combined(_parallel(lambda block: per_batch(*block), self.blocks()), combine)

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        results, start = [], 0
        for p, n in enumerate(self.partition_rows):
            if n:
                end = start + n
                blocks = (
                    (
                        self.x[i : min(i + self.block, end)],
                        self.xx[i : min(i + self.block, end)],
                        np.empty((0, 0)),
                    )
                    for i in range(start, end, self.block)
                )
                results.append(per_partition(p, blocks))
                start = end
        return results


def _matrix(batch: pa.RecordBatch | pa.Table, dim: int) -> np.ndarray:
    columns = [np.asarray(batch.column(i).to_numpy(), dtype=np.float64) for i in range(dim)]
    return np.column_stack(columns)


# ---- Spark ML's k-means|| start, replayed for every model at once ------------------------------------------

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
    approx = _partial_distances(x, centers)
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
        m: np.concatenate(_parallel(lambda block, g=g: _cost(block[0], g), blocks))
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
    table = frame.selectExpr("monotonically_increasing_id() AS _id", *uniforms).filter(below).toArrow()
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
    shared passes, with Spark's random numbers (segmentation/sparkrandom.py) and arithmetic, so each start is
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


def _counts_and_sums(nearest: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the number of rows (as floats, to be summed with other blocks) and the sum of the rows."""
    return np.bincount(nearest, minlength=k).astype(np.float64), _per_cluster(nearest, x, k)


def _step(x: np.ndarray, xx: np.ndarray, active: dict[int, np.ndarray]) -> dict:
    """One assignment step of every active model on rows `x`: per cluster the count and the sum of the rows,
    and the total squared distance."""
    out = {}
    for m, centers in active.items():
        nearest, best = _assign(x, xx, centers)
        k = len(centers)
        out[m] = (*_counts_and_sums(nearest, x, k), best.sum())
    return out


def _active(models: list[Model], max_iter: int) -> dict[int, np.ndarray]:
    return {
        m: model.centers
        for m, model in enumerate(models)
        if not model.converged and model.iterations < max_iter
    }


def _update(models: list[Model], stats: dict, tol: float) -> None:
    """Spark's update: new center = mean of its rows (an empty cluster keeps its center); converged when every
    moved center moved at most `tol`; the cost is the one of this assignment step."""
    for m, (counts, sums, cost) in stats.items():
        model = models[m]
        old = model.centers
        new = old.copy()
        used = counts > 0
        new[used] = sums[used] / counts[used][:, None]
        moved = np.einsum("ij,ij->i", new[used] - old[used], new[used] - old[used])
        model.converged = bool(np.all(moved <= tol * tol))
        model.centers, model.cost = new, float(cost)
        model.iterations += 1


def fit_all(rows: Rows, models: list[Model], max_iter: int, tol: float) -> list[Model]:
    """Lloyd iterations of every model, with Spark's rules (`_update`): a model iterates while it has not
    converged and has done fewer than `max_iter` iterations; one pass over `rows` per iteration for all of the
    models still moving."""
    started = time.perf_counter()
    iteration = 0
    while active := _active(models, max_iter):
        stats = rows.reduce(lambda x, xx, active=active: _step(x, xx, active))
        _update(models, stats, tol)
        iteration += 1
        if iteration % 10 == 0 or not _active(models, max_iter):
            log.info(
                "Lloyd iteration %d: %d of %d models still moving (%.1f s)",
                iteration,
                len(_active(models, max_iter)),
                len(models),
                time.perf_counter() - started,
            )
    return models


def evaluate(
    rows: Rows,
    models: list[Model],
    silhouette_of: list[int],
    pairs: list[tuple[int, int]],
) -> tuple[list[Evaluation], dict[tuple[int, int], np.ndarray]]:
    """Two passes (Spark jobs for `SparkRows`) for every model at once: (1) sizes, sums and squared norms per cluster of the assignment
    to the final centers; (2) per cluster, the squared and plain distances to the cluster mean, the silhouette of
    the models in `silhouette_of` (Spark ML ClusteringEvaluator's squared-Euclidean silhouette, from the
    cluster sums of job 1), and the contingency table (k_a x k_b counts) of every pair in `pairs`."""
    centers = {m: model.centers for m, model in enumerate(models)}

    def first(x: np.ndarray, xx: np.ndarray) -> dict:
        out = {}
        for m, c in centers.items():
            nearest, _ = _assign(x, xx, c)
            k = len(c)
            out[m] = (*_counts_and_sums(nearest, x, k), _per_cluster(nearest, xx, k))
        return out

    sums = rows.reduce(first)
    means = {}
    for m, (counts, total, _) in sums.items():
        means[m] = np.where(counts[:, None] > 0, total / np.maximum(counts, 1.0)[:, None], 0.0)
    wanted = set(silhouette_of)

    def second(x: np.ndarray, xx: np.ndarray) -> dict:
        out: dict = {}
        nearest = {m: _assign(x, xx, c)[0] for m, c in centers.items()}
        for m, a in nearest.items():
            k = len(centers[m])
            sq = np.maximum(np.einsum("ij,ij->i", x - means[m][a], x - means[m][a]), 0.0)
            sil = 0.0
            if m in wanted:
                sil = _silhouette_sum(x, xx, a, *sums[m])
            out[("m", m)] = (_per_cluster(a, sq, k), _per_cluster(a, np.sqrt(sq), k), sil)
        for a_m, b_m in pairs:
            kb = len(centers[b_m])
            cells = np.bincount(nearest[a_m] * kb + nearest[b_m], minlength=len(centers[a_m]) * kb)
            out[("p", a_m, b_m)] = cells.reshape(len(centers[a_m]), kb).astype(np.float64)
        return out

    second_totals = rows.reduce(second)
    evaluations = []
    for m in range(len(models)):
        counts = sums[m][0]
        within, distance_sum, sil_sum = second_totals[("m", m)]
        spread = np.where(counts > 0, distance_sum / np.maximum(counts, 1.0), 0.0)
        used = int(np.count_nonzero(counts))
        sil = float(sil_sum / counts.sum()) if m in wanted and used >= 2 else None
        evaluations.append(Evaluation(counts.astype(np.int64), means[m], within, spread, sil))
    tables = {(a, b): second_totals[("p", a, b)].astype(np.int64) for a, b in pairs}
    return evaluations, tables


def _silhouette_sum(
    x: np.ndarray,
    xx: np.ndarray,
    nearest: np.ndarray,
    counts: np.ndarray,
    sums: np.ndarray,
    norms: np.ndarray,
) -> float:
    """Sum over the rows of Spark ML's squared-Euclidean silhouette (ClusteringEvaluator), from the clusters'
    sizes n, feature sums Y and squared-norm sums psi: the mean squared distance of x to cluster c is
    |x|^2 + psi_c / n_c - 2 x.Y_c / n_c; a = that for its own cluster x n/(n-1), b = the smallest over the
    others; s = 1 - a/b, b/a - 1 or 0; 0 for a row alone in its cluster."""
    used = np.flatnonzero(counts > 0)
    n = counts[used]
    mean_sq = xx[:, None] + (norms[used] / n)[None, :] - 2.0 * (x @ (sums[used] / n[:, None]).T)
    position = np.searchsorted(used, nearest)
    rows = np.arange(len(x))
    own_n = n[position]
    a = mean_sq[rows, position] * own_n / np.maximum(own_n - 1.0, 1.0)
    mean_sq[rows, position] = np.inf
    b = mean_sq.min(axis=1)
    s = np.where(a < b, 1.0 - a / b, np.where(a > b, b / np.where(a > 0, a, 1.0) - 1.0, 0.0))
    s = np.where(own_n > 1, s, 0.0)
    return float(s.sum())
