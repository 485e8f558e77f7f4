"""Model stage, the k sweep's engine: Lloyd iterations for every model of the sweep at once.

Spark ML's KMeans fits one k per run: about ten small Spark jobs for its k-means|| start, one job per Lloyd
iteration, then a silhouette (two more passes) and diagnostics (more passes) per k. On a few hundred thousand
customers those jobs are bound by Spark's per-job latency, not by the arithmetic. Here every model of the sweep
(each k, and each extra seed of the stability check) runs its Lloyd iterations together: one pass over the
customers per iteration for all of them, in numpy. Two more passes then give, for every model at once, the
cluster sizes, means, within-cluster sums, Davies-Bouldin spreads, the silhouette and the contingency tables of
the stability pairs.

Where the passes run (`model.driver_sweep_max_rows`): up to that many customers, their features (a few
doubles each) are collected once to the driver and every pass is numpy there (`LocalRows`); above it, every
pass is one Spark job over the features cached as double columns and handed to numpy in Arrow batches
(`SparkRows`; per-cluster sums are reduced in the executors, no customer leaves its executor).

The starts are Spark ML's own (KMeans with maxIter=0: the k-means|| start of a full fit with that k and seed)
and the iterations follow Spark's rules (an empty cluster keeps its center; a model has converged when no center
moved more than `tol`; its cost is the one of the last assignment step), so every model here is the full Spark
ML fit: the same centers, iterations and cost, either way (tests/test_lloyd.py).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml.clustering import KMeans
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

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


def features_frame(scaled_df: DataFrame, dim: int, features_col: str = "scaled") -> DataFrame:
    """The vector column as `dim` double columns (Arrow hands those to numpy without copying), same layout."""
    x = vector_to_array(F.col(features_col))
    return scaled_df.select(*[x[i].alias(c) for i, c in enumerate(feature_columns(dim))])


def spark_start(
    scaled_df: DataFrame, k: int, seed: int, tol: float, features_col: str = "scaled"
) -> np.ndarray:
    """Spark ML's k-means|| start for (k, seed): a KMeans fit with no iteration. Fewer than k rows when the data
    has fewer distinct points (Spark's own behaviour)."""
    kmeans = KMeans(featuresCol=features_col, k=k, seed=seed, maxIter=0, tol=tol)
    return np.array(kmeans.fit(scaled_df.select(features_col)).clusterCenters(), dtype=np.float64)


def starts(
    scaled_df: DataFrame,
    pairs: list[tuple[int, int]],
    tol: float,
    parallelism: int = 1,
    features_col: str = "scaled",
) -> list[Model]:
    """Spark ML's starts for every (k, seed), `parallelism` at a time."""
    done = 0
    lock = threading.Lock()

    def one(pair: tuple[int, int]) -> Model:
        nonlocal done
        k, seed = pair
        model = Model(k, seed, spark_start(scaled_df, k, seed, tol, features_col))
        with lock:
            done += 1
            log.info("k-means|| start %d of %d (k=%d, seed=%d)", done, len(pairs), k, seed)
        return model

    if parallelism <= 1 or len(pairs) == 1:
        return [one(p) for p in pairs]
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="kmeans-start") as pool:
        return list(pool.map(one, pairs))


def _add(a: Any, b: Any) -> Any:
    """Sum of two partial results of the same shape (dicts, tuples, numpy arrays, numbers)."""
    if isinstance(a, dict):
        return {
            key: _add(a[key], b[key]) if key in a and key in b else a.get(key, b.get(key)) for key in a | b
        }
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b))
    return a + b


def _assign(x: np.ndarray, xx: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest center of every row (first on ties, as Spark) and the squared distance to it. The row's own
    squared norm is the same for every center, so it is added to the winner only."""
    partial = np.einsum("ij,ij->i", centers, centers)[None, :] - 2.0 * (x @ centers.T)
    nearest = partial.argmin(axis=1)
    return nearest, np.maximum(partial[np.arange(len(x)), nearest] + xx, 0.0)


def _per_cluster(nearest: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Sum of `values` (n or n x dim) per cluster: k or k x dim."""
    if values.ndim == 1:
        return np.bincount(nearest, weights=values, minlength=k)
    return np.stack(
        [np.bincount(nearest, weights=values[:, i], minlength=k) for i in range(values.shape[1])], 1
    )


class Rows:
    """The customers' features, reduced by `reduce(per_batch)`: `per_batch(x, squared norms)` is applied to
    blocks of rows and the results (dicts / tuples of numpy arrays and numbers) are summed."""

    def reduce(self, per_batch: Callable[[np.ndarray, np.ndarray], Any]) -> Any:
        raise NotImplementedError


class SparkRows(Rows):
    """Features in a cached DataFrame of double columns: every reduce is one Spark job. Each Arrow batch is
    handed to numpy, results are summed within the partition in the executor and across partitions on the
    driver (one small pickled result per partition); no row leaves its executor."""

    def __init__(self, features_df: DataFrame, dim: int):
        self.features_df, self.dim = features_df, dim

    def reduce(self, per_batch: Callable[[np.ndarray, np.ndarray], Any]) -> Any:
        dim = self.dim

        def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            total = None
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                x = _matrix(batch, dim)
                part = per_batch(x, np.einsum("ij,ij->i", x, x))
                total = part if total is None else _add(total, part)
            if total is not None:
                yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps(total)], pa.binary())], ["payload"])

        total = None
        for row in self.features_df.mapInArrow(partition, "payload binary").collect():
            part = pickle.loads(row["payload"])
            total = part if total is None else _add(total, part)
        return total


class LocalRows(Rows):
    """Features collected once to the driver (Arrow), for customer counts up to `model.driver_sweep_max_rows`:
    an iteration is then milliseconds of numpy instead of a Spark job (about 0.3 s of scheduling and Python
    worker round trip each on two local cores, whatever the size)."""

    def __init__(self, features_df: DataFrame, dim: int, block: int = 65_536):
        table = features_df.toArrow()
        self.x = _matrix(table, dim) if table.num_rows else np.empty((0, dim))
        self.xx = np.einsum("ij,ij->i", self.x, self.x)
        self.block = block

    def reduce(self, per_batch: Callable[[np.ndarray, np.ndarray], Any]) -> Any:
        total = None
        for i in range(0, len(self.x), self.block):
            part = per_batch(self.x[i : i + self.block], self.xx[i : i + self.block])
            total = part if total is None else _add(total, part)
        return total


def _matrix(batch: pa.RecordBatch | pa.Table, dim: int) -> np.ndarray:
    columns = [np.asarray(batch.column(i).to_numpy(), dtype=np.float64) for i in range(dim)]
    return np.column_stack(columns)


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
