"""Model stage: the clustering methods (`model.method`) behind one interface.

`kmeans` (the default; its sweep is `model.kmeans.sweep_k`), `bisecting_kmeans` (hierarchical, divisive: Spark ML
BisectingKMeans) and `gaussian_mixture` (Spark ML GaussianMixture: soft assignment; the output keeps each
customer's membership probability of its segment). Every fitted model's transform adds `cluster`; the sweep
returns the same `Fit` rows for every method, with `wcss` the within-cluster sum of squares of the (hard)
assignment, so the knee and the diagnostics mean the same thing whatever the method. A Gaussian mixture's own
cost, the log-likelihood, is kept beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import DEFAULTS, METHODS
from segmentation.model.fit import Fit
from segmentation.model.kmeans import fit_kmeans, sweep_k
from segmentation.model.metrics import cluster_metrics
from segmentation.model.sampled import (
    DENSITY_METHODS,
    SAMPLED_METHODS,
    driver_sample,
    fit_on_sample,
    sample_size,
)

#: The `model` section's defaults, for a caller that passes no config.
MODEL_DEFAULTS = DEFAULTS["model"]

log = logging.getLogger(__name__)


_OFFSET = "_bisecting_offset"


_OFFSET_VECTOR = "_bisecting_features"


#: EM starts per Gaussian mixture fit (seeds seed, seed + 7919, ...); the best log-likelihood is kept.
GMM_STARTS = 3


#: Column of the per-cluster probability vector of a Gaussian mixture.
PROBABILITY_COL = "membership"


def fit_method(
    method: str,
    scaled_df: DataFrame,
    k: int,
    seed: int,
    max_iter: int = 50,
    tol: float = 1e-4,
    params: dict[str, Any] | None = None,
) -> Any:
    """Fit one model of `method` on `scaled`; its transform adds `cluster` (and `membership` for a mixture).
    `params`: the `model` config section, for the sampled methods' settings (`model.fit_sample`, `model.<method>`)."""
    if method in SAMPLED_METHODS:
        params = params or MODEL_DEFAULTS
        x, _ = driver_sample(scaled_df, sample_size(method, params), seed)
        return fit_on_sample(method, x, k, seed, params)
    if method == "kmeans":
        return fit_kmeans(scaled_df, k, seed, max_iter, tol)
    if method == "bisecting_kmeans":
        # Spark's bisecting splits a cluster by perturbing its center in proportion to the center's norm: the
        # root of standardised data is the origin and would never split. A constant extra dimension (1.0)
        # moves the root off the origin and changes no distance between customers.
        return Pipeline(
            stages=[
                SQLTransformer(statement=f"SELECT *, 1.0D AS {_OFFSET} FROM __THIS__"),
                VectorAssembler(inputCols=["scaled", _OFFSET], outputCol=_OFFSET_VECTOR),
                BisectingKMeans(
                    featuresCol=_OFFSET_VECTOR, predictionCol="cluster", k=k, seed=seed, maxIter=max_iter
                ),
            ]
        ).fit(scaled_df)
    if method == "gaussian_mixture":
        # EM from Spark's random start often stops in a poor local optimum: keep the best of a few starts
        # (highest log-likelihood), as scikit-learn's n_init does
        best = None
        for i in range(GMM_STARTS):
            model = GaussianMixture(
                featuresCol="scaled",
                predictionCol="cluster",
                probabilityCol=PROBABILITY_COL,
                k=k,
                seed=seed + 7919 * i,
                maxIter=max_iter,
                tol=tol,
            ).fit(scaled_df)
            if best is None or model.summary.logLikelihood > best.summary.logLikelihood:
                best = model
        return best
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def core_model(model: Any) -> Any:
    """The clustering model itself (the last stage of a bisecting pipeline), which has the summary."""
    return model.stages[-1] if isinstance(model, PipelineModel) else model


def model_centers(model: Any) -> list[list[float]]:
    """Cluster centers in scaled space: KMeans / bisecting centers, or a mixture's component means."""
    if isinstance(model, PipelineModel):  # bisecting: drop the constant offset dimension
        return [list(map(float, c))[:-1] for c in core_model(model).clusterCenters()]
    if hasattr(model, "clusterCenters"):
        return [list(map(float, c)) for c in model.clusterCenters()]
    return [list(map(float, g.mean)) for g in model.gaussians]


def with_membership_probability(assigned_df: DataFrame) -> DataFrame:
    """Add `membership_probability`: a mixture's probability of the assigned cluster (null for other methods)."""
    if PROBABILITY_COL not in assigned_df.columns:
        return assigned_df.withColumn("membership_probability", F.lit(None).cast("double"))
    probability = F.element_at(vector_to_array(F.col(PROBABILITY_COL)), F.col("cluster") + 1)
    return assigned_df.withColumn("membership_probability", probability)


def silhouette_of(assigned_df: DataFrame, sizes: list[int]) -> float | None:
    """Mean silhouette (ClusteringEvaluator, squared Euclidean) of an assignment; None with < 2 used clusters."""
    if sum(1 for n in sizes if n > 0) < 2:
        return None
    return float(ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster").evaluate(assigned_df))


def sweep_method(
    method: str,
    scaled_df: DataFrame,
    ks: list[int],
    seed: int,
    max_iter: int = 50,
    tol: float = 1e-4,
    parallelism: int = 1,
    sample_size: int | None = None,
    stability_fits: int = 0,
    driver_max_rows: int = 1_000_000,
    params: dict[str, Any] | None = None,
) -> list[Any]:
    """Fit `method` for every k, logging "k i of n"; KMeans uses `model.kmeans.sweep_k` (with its optional sample,
    and the stability fits measured in the same passes; other methods get theirs in `k_diagnostics`)."""
    if method == "kmeans":
        return sweep_k(
            scaled_df,
            ks,
            seed,
            max_iter,
            tol,
            sample_size=sample_size,
            stability_fits=stability_fits,
            driver_max_rows=driver_max_rows,
        )

    dim = len(scaled_df.select("scaled").first()[0])
    if method in SAMPLED_METHODS:
        return _sweep_sampled(method, scaled_df, ks, seed, dim, params or MODEL_DEFAULTS)
    done = 0
    lock = threading.Lock()

    def fit_one(k: int) -> Fit:
        nonlocal done
        started = time.perf_counter()
        model = fit_method(method, scaled_df, k, seed, max_iter, tol)
        assigned = model.transform(scaled_df)
        metrics = cluster_metrics(assigned, dim)
        summary = core_model(model).summary
        score = silhouette_of(assigned, list(summary.clusterSizes))
        ll = float(summary.logLikelihood) if method == "gaussian_mixture" else None
        fit = Fit(
            k=k,
            wcss=float(metrics["within"] or 0.0),
            silhouette=score,
            cluster_sizes=list(summary.clusterSizes),
            model=model,
            log_likelihood=ll,
            method=method,
        )
        with lock:
            done += 1
            log.info(
                "k %d of %d: %s k=%d wcss=%.4f silhouette=%s%s (%.1f s)",
                done,
                len(ks),
                method,
                k,
                fit.wcss,
                "n/a" if score is None else f"{score:.4f}",
                "" if ll is None else f" log-likelihood={ll:.2f}",
                time.perf_counter() - started,
            )
        return fit

    if parallelism <= 1 or len(ks) == 1:
        return [fit_one(k) for k in ks]
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix=method) as pool:
        return list(pool.map(fit_one, ks))


def _sweep_sampled(
    method: str, scaled_df: DataFrame, ks: list[int], seed: int, dim: int, params: dict[str, Any]
) -> list[Fit]:
    """One fit per k on the same seeded sample (the density methods: one fit, whose k they find), each applied
    to every customer in Spark; sizes, WCSS and silhouette over the customers that are not noise."""
    x, total = driver_sample(scaled_df, sample_size(method, params), seed)
    if method in DENSITY_METHODS or (method == "som" and params["som"]["grid"]):
        ks = ks[:1]  # one fit: the number of clusters is found (or the map's grid)
    fits = []
    for i, k in enumerate(ks, start=1):
        started = time.perf_counter()
        model = fit_on_sample(method, x, k, seed, params)
        found = len(model.clusterCenters())
        assigned = model.transform(scaled_df).filter(F.col("cluster") >= 0).persist()
        counts = {int(r["cluster"]): int(r["count"]) for r in assigned.groupBy("cluster").count().collect()}
        sizes = [counts.get(c, 0) for c in range(found)]
        metrics = cluster_metrics(assigned, dim)
        fit = Fit(
            k=found,
            wcss=float(metrics["within"] or 0.0),
            silhouette=silhouette_of(assigned, sizes),
            cluster_sizes=sizes,
            model=model,
            method=method,
            extra={"noise": total - sum(sizes), "fitted_on": len(x)},
        )
        assigned.unpersist()
        fits.append(fit)
        log.info(
            "k %d of %d: %s k=%d wcss=%.4f silhouette=%s noise=%d (%.1f s)",
            i,
            len(ks),
            method,
            found,
            fit.wcss,
            "n/a" if fit.silhouette is None else f"{fit.silhouette:.4f}",
            fit.extra["noise"],
            time.perf_counter() - started,
        )
    return fits
