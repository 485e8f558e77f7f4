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
   (`kmeans_parallel`, segmentation/model/engine/sparkrandom.py): the start a Spark ML fit at that k and seed makes;
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
import time
from dataclasses import dataclass, field

import numpy as np

from segmentation.model.engine.kernels import assign, per_cluster
from segmentation.model.engine.rows import Rows

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


def _counts_and_sums(nearest: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the number of rows (as floats, to be summed with other blocks) and the sum of the rows."""
    return np.bincount(nearest, minlength=k).astype(np.float64), per_cluster(nearest, x, k)


def _step(x: np.ndarray, xx: np.ndarray, active: dict[int, np.ndarray]) -> dict:
    """One assignment step of every active model on rows `x`: per cluster the count and the sum of the rows,
    and the total squared distance."""
    out = {}
    for m, centers in active.items():
        nearest, best = assign(x, xx, centers)
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
            nearest, _ = assign(x, xx, c)
            k = len(c)
            out[m] = (*_counts_and_sums(nearest, x, k), per_cluster(nearest, xx, k))
        return out

    sums = rows.reduce(first)
    means = {}
    for m, (counts, total, _) in sums.items():
        means[m] = np.where(counts[:, None] > 0, total / np.maximum(counts, 1.0)[:, None], 0.0)
    wanted = set(silhouette_of)

    def second(x: np.ndarray, xx: np.ndarray) -> dict:
        out: dict = {}
        nearest = {m: assign(x, xx, c)[0] for m, c in centers.items()}
        for m, a in nearest.items():
            k = len(centers[m])
            sq = np.maximum(np.einsum("ij,ij->i", x - means[m][a], x - means[m][a]), 0.0)
            sil = 0.0
            if m in wanted:
                sil = _silhouette_sum(x, xx, a, *sums[m])
            out[("m", m)] = (per_cluster(a, sq, k), per_cluster(a, np.sqrt(sq), k), sil)
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
