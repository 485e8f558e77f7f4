"""KMeans over a range of k, and the Spark ML model that is published at the chosen k.

Takes the scaled features of the prepare stage and hands the choice of k (`model.selection`) one `Fit` per k,
all fitted together by the engine (`model.engine`), and the Spark ML KMeansModel at the chosen k
(`fit_on_all`: the sweep's own centers, or a refit on everyone after a sampled sweep).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from py4j.protocol import Py4JError
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.linalg import Vectors
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.compat import ENGINE_VERIFIED, engine_verified, spark_version, version_text
from segmentation.model import engine
from segmentation.model.fit import Fit
from segmentation.model.metrics import adjusted_rand_index_of_table, separation

log = logging.getLogger(__name__)


_MASK53 = (1 << 53) - 1


def fit_kmeans(scaled_df: DataFrame, k: int, seed: int, max_iter: int = 50, tol: float = 1e-4) -> KMeansModel:
    """Spark ML KMeans (k-means|| init) on the `scaled` column; the prediction column is `cluster`.

    KMeans is given a projection of the input: when its input is not persisted, KMeans caches its own vectors
    for the iterations instead of re-reading (and re-decoding) the cached DataFrame at every iteration. Same
    rows, same layout, so the same model (k=8 on 250k customers: 4.8 s instead of 9.8 s, measured under load).
    """
    kmeans = KMeans(featuresCol="scaled", predictionCol="cluster", k=k, seed=seed, maxIter=max_iter, tol=tol)
    return kmeans.fit(scaled_df.select("scaled"))


def silhouette(scaled_df: DataFrame, model: KMeansModel) -> float | None:
    """Mean silhouette (squared Euclidean) of the model's assignment; None when fewer than 2 clusters are used."""
    if sum(1 for size in model.summary.clusterSizes if size > 0) < 2:
        return None
    evaluator = ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster")
    return float(evaluator.evaluate(model.transform(scaled_df)))


def sweep_sample(scaled_df: DataFrame, max_rows: int, seed: int, id_col: str = "customer_id") -> DataFrame:
    """A seeded sample of about `max_rows` customers, chosen by a hash of the id: the same rows on every run
    and any machine, in the input's layout, in one partition (a small sweep is bound by per-task latency)."""
    total = scaled_df.count()
    fraction = max_rows / total
    u = F.xxhash64(F.lit(seed), F.col(id_col).cast("string")).bitwiseAND(F.lit(_MASK53)) / F.lit(
        float(1 << 53)
    )
    return scaled_df.filter(u < F.lit(fraction)).coalesce(1)


def vector_size(scaled_df: DataFrame, features_col: str = "scaled") -> int:
    return len(scaled_df.select(features_col).first()[0])


def sweep_k(
    scaled_df: DataFrame,
    ks: list[int],
    seed: int,
    max_iter: int = 50,
    tol: float = 1e-4,
    sample_size: int | None = None,
    id_col: str = "customer_id",
    stability_fits: int = 0,
    driver_max_rows: int = 1_000_000,
) -> list[Fit]:
    """KMeans for every k, all fitted together by the engine (`segmentation.model.engine`): the k-means|| starts
    of every k in shared passes, then the Lloyd iterations of all k, one pass per iteration, then sizes,
    Calinski-Harabasz, Davies-Bouldin and silhouette of every k in two more passes. With `stability_fits` > 0
    every k is also fitted with seeds seed+1 .. seed+stability_fits in the same passes, and `stability` is the
    mean adjusted Rand index over all pairs of fits at that k. Up to `driver_max_rows` customers the passes run
    in the driver on the collected features (`model.driver_sweep_max_rows`), above it as Spark jobs.

    With `sample_size` and more customers than that, the sweep runs on a seeded sample of about `sample_size`
    customers (`sweep_sample`); WCSS is then scaled to all customers (cost per customer x customers) so the curve
    keeps its meaning, and `fit_on_all` refits the chosen k on everyone.
    """
    started = time.perf_counter()
    fit_df, scale = scaled_df, 1.0
    if sample_size is not None:
        total = scaled_df.count()
        if total > sample_size:
            fit_df = sweep_sample(scaled_df, sample_size, seed, id_col).persist()
            sampled = fit_df.count()
            scale = total / sampled
            log.info("k sweep on a seeded sample of %d of %d customers (model.sweep_sample)", sampled, total)
    dim = vector_size(fit_df)
    features_df = engine.features_frame(fit_df, dim).persist()
    seeds = [seed + i for i in range(stability_fits + 1)]
    pairs = [(k, s) for s in seeds for k in ks]  # the main fits first: model index i is ks[i] at `seed`
    try:
        rows_total = features_df.count()
        if rows_total <= driver_max_rows:
            rows: engine.Rows = engine.LocalRows(features_df, dim)
        else:
            rows = engine.SparkRows(features_df, dim)
        log.info(
            "k sweep on %d customers: %d fits, passes %s",
            rows_total,
            len(pairs),
            "in the driver" if isinstance(rows, engine.LocalRows) else "as Spark jobs",
        )
        if engine_verified():
            models = engine.kmeans_parallel(rows, features_df, dim, pairs)
            engine.fit_all(rows, models, max_iter, tol)
        else:
            # the engine replays Spark ML internals verified on some releases only: here, Spark ML itself
            log.warning(
                "k sweep: one Spark ML KMeans fit per (k, seed), %d fits: the engine's replay of Spark ML is "
                "verified on Spark %s, this is Spark %s (same models, slower)",
                len(pairs),
                ", ".join(version_text(v) for v in ENGINE_VERIFIED),
                version_text(spark_version()),
            )
            models = spark_ml_fits(fit_df, pairs, max_iter, tol)
        index = {(m.k, m.seed): i for i, m in enumerate(models)}
        same_k = [
            (index[(k, a)], index[(k, b)]) for k in ks for i, a in enumerate(seeds) for b in seeds[i + 1 :]
        ]
        evaluations, tables = engine.evaluate(rows, models, list(range(len(ks))), same_k)
    finally:
        features_df.unpersist()
        if fit_df is not scaled_df:
            fit_df.unpersist()
    fits = []
    for i, k in enumerate(ks):
        model, ev = models[i], evaluations[i]
        sizes = [int(n) for n in ev.sizes]
        aris = [adjusted_rand_index_of_table(tables[p]) for p in same_k if p[0] == i]
        fit = Fit(
            k,
            model.cost * scale,
            ev.silhouette,
            sizes,
            centers=model.centers.tolist(),
            metrics=separation(sizes, ev.means.tolist(), ev.within.tolist(), ev.spread.tolist()),
            stability=sum(aris) / len(aris) if aris else None,
            iterations=model.iterations,
        )
        fits.append(fit)
        log.info(
            "k=%d: wcss=%.4f silhouette=%s stability=%s iterations=%d",
            k,
            fit.wcss,
            "n/a" if fit.silhouette is None else f"{fit.silhouette:.4f}",
            "n/a" if fit.stability is None else f"{fit.stability:.3f}",
            model.iterations,
        )
    log.info(
        "k sweep: %d fits of k=%d..%d in %.1f s", len(models), ks[0], ks[-1], time.perf_counter() - started
    )
    return fits


def spark_ml_fits(
    fit_df: DataFrame, pairs: list[tuple[int, int]], max_iter: int, tol: float
) -> list[engine.Model]:
    """Spark ML's KMeans fitted at every (k, seed) on `scaled`, as the engine's models (centers, iterations,
    training cost) for the shared diagnostics."""
    models = []
    for k, seed in pairs:
        fitted = KMeans(featuresCol="scaled", k=k, seed=seed, maxIter=max_iter, tol=tol).fit(fit_df)
        summary = fitted.summary
        models.append(
            engine.Model(
                k,
                seed,
                np.array([c.tolist() for c in fitted.clusterCenters()]),
                iterations=summary.numIter,
                converged=summary.numIter < max_iter,
                cost=summary.trainingCost,
            )
        )
    return models


def kmeans_model(spark: SparkSession, centers: list[list[float]], seed: int) -> KMeansModel:
    """A Spark ML KMeansModel holding exactly `centers` (features `scaled`, prediction `cluster`), in this
    order. Built the way KMeans.fit builds its model, from an MLlib model of the centers (a constructor private
    to Spark ML; instant). Where that constructor is not there (another Spark), KMeans is fitted on the centers
    themselves, one row each, with a random start (k = their number: all of them) and one Lloyd step, which
    moves none of them; Spark orders them then. Raises if a center came back changed."""
    jvm = spark.sparkContext._jvm
    try:
        vectors = [_java_vector(spark, c) for c in centers]
        parent = jvm.org.apache.spark.mllib.clustering.KMeansModel(vectors)
        java_model = jvm.org.apache.spark.ml.clustering.KMeansModel(
            f"KMeansModel_{seed}_{len(centers)}", parent
        )
        model = KMeansModel(java_model).setFeaturesCol("scaled").setPredictionCol("cluster")
    except Py4JError:
        centers_df = spark.createDataFrame([(Vectors.dense(c),) for c in centers], ["scaled"]).coalesce(1)
        kmeans = KMeans(
            featuresCol="scaled",
            predictionCol="cluster",
            k=len(centers),
            seed=seed,
            initMode="random",
            maxIter=1,
        )
        model = kmeans.fit(centers_df)
    if sorted(c.tolist() for c in model.clusterCenters()) != sorted(list(c) for c in centers):
        raise RuntimeError(f"Spark ML did not keep the k={len(centers)} centers it was given")
    return model


def _java_vector(spark: SparkSession, values: list[float]):
    """An MLlib dense vector in the JVM, the same doubles."""
    gateway = spark.sparkContext._gateway
    array = gateway.new_array(gateway.jvm.double, len(values))
    for i, v in enumerate(values):
        array[i] = float(v)
    return gateway.jvm.org.apache.spark.mllib.linalg.Vectors.dense(array)


def fit_on_all(scaled_df: DataFrame, fit: Fit, seed: int, max_iter: int = 50, tol: float = 1e-4) -> Fit:
    """The Spark ML model at `fit.k` (the model that is published and scores new customers). When the sweep
    saw every customer it holds the sweep's centers (`kmeans_model`), and the fit's per-cluster lists follow
    the model's cluster order; after a sampled sweep (`model.sweep_sample`) it is a Spark ML fit at `seed` on
    every customer."""
    if fit.model is not None:
        return fit
    total = scaled_df.count()
    started = time.perf_counter()
    if sum(fit.cluster_sizes) == total and fit.centers is not None and len(fit.centers) > 1:
        model = kmeans_model(scaled_df.sparkSession, fit.centers, seed)
        where = {tuple(c): i for i, c in enumerate(fit.centers)}
        order = [where[tuple(c.tolist())] for c in model.clusterCenters()]
        full = Fit(
            **{
                **fit.__dict__,
                "model": model,
                "centers": [fit.centers[i] for i in order],
                "cluster_sizes": [fit.cluster_sizes[i] for i in order],
            }
        )
        log.info("published model: the sweep's k=%d centers (%.1f s)", fit.k, time.perf_counter() - started)
        return full
    model = fit_kmeans(scaled_df, fit.k, seed, max_iter, tol)
    sizes = list(model.summary.clusterSizes)
    cost = float(model.summary.trainingCost)
    full = Fit(fit.k, cost, silhouette(scaled_df, model), sizes, model, iterations=model.summary.numIter)
    log.info(
        "Spark ML fit at k=%d on all %d customers: wcss=%.4f (sampled sweep %.4f) (%.1f s)",
        fit.k,
        total,
        cost,
        fit.wcss,
        time.perf_counter() - started,
    )
    return full
