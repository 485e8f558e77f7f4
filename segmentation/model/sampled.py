"""Methods Spark ML lacks, fitted on a seeded sample in the driver and applied to every customer in Spark.

`dbscan` and `hdbscan` (density-based: they find the number of clusters and call the rest noise),
`agglomerative` (Ward's hierarchical clustering) and `som` (a self-organizing map, MiniSom) come from
scikit-learn and MiniSom, which fit in one process. So they fit on a seeded sample of at most
`model.fit_sample` customers (Ward: `model.agglomerative.fit_sample`, its memory grows with the square of the
sample) and hand on a `SampleAssignment`: a Spark ML transformer that assigns every customer in Spark, in
Arrow batches against the broadcast reference points:

- Ward and SOM: the nearest cluster centroid (SOM: the best matching unit of the map);
- DBSCAN: the cluster of the nearest core sample within `eps` (DBSCAN's own rule for border points), else noise;
- HDBSCAN: the label of the nearest sample: noise when that sample is noise, else its cluster when the customer
  lies within the sample's core distance (the mutual-reachability rule of `hdbscan.approximate_predict`).

Noise is cluster -1; the pipeline sets those customers aside with `excluded_reason` `noise`. The transformer is
saved with the published model (its reference points are parameters), so scoring applies the same rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import ModelError
from segmentation.model.knee import knee_point

log = logging.getLogger(__name__)

#: Methods that find the number of clusters themselves (the k range does not apply) and mark noise.
DENSITY_METHODS = ("dbscan", "hdbscan")

#: Methods fitted on a sample in the driver.
SAMPLED_METHODS = ("dbscan", "hdbscan", "agglomerative", "som")

#: `cluster` of a customer that belongs to no cluster.
NOISE = -1


class SampleAssignment(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Adds `cluster` to a DataFrame with `scaled`: the label of the nearest reference point within its radius,
    else -1 (noise). Reference points, labels and radii are parameters, saved with the model."""

    points = Param(Params._dummy(), "points", "reference points (JSON)", TypeConverters.toString)
    labels = Param(
        Params._dummy(), "labels", "cluster of each reference point (JSON)", TypeConverters.toString
    )
    radii = Param(
        Params._dummy(), "radii", "reach of each reference point (JSON; null = any)", TypeConverters.toString
    )
    method = Param(Params._dummy(), "method", "the method that fitted it", TypeConverters.toString)

    @keyword_only
    def __init__(self, points: str = "[]", labels: str = "[]", radii: str = "null", method: str = "") -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @classmethod
    def of(
        cls, points: np.ndarray, labels: np.ndarray, radii: np.ndarray | None, method: str
    ) -> SampleAssignment:
        return cls(
            points=json.dumps(np.asarray(points, dtype=float).tolist()),
            labels=json.dumps([int(v) for v in labels]),
            radii="null" if radii is None else json.dumps([float(r) for r in radii]),
            method=method,
        )

    def reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        points = np.asarray(json.loads(self.getOrDefault(self.points)), dtype=float)
        labels = np.asarray(json.loads(self.getOrDefault(self.labels)), dtype=np.int64)
        radii = json.loads(self.getOrDefault(self.radii))
        return points, labels, None if radii is None else np.asarray(radii, dtype=float)

    def clusterCenters(self) -> list[np.ndarray]:  # noqa: N802 - the name Spark ML's models use
        """Per cluster 0..k-1, the mean of its reference points (for Ward and SOM: the centroids)."""
        points, labels, _ = self.reference()
        k = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
        return [points[labels == c].mean(axis=0) for c in range(k)]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        shared = dataset.sparkSession.sparkContext.broadcast(self.reference())
        key = self.uid + hashlib.sha1(self.getOrDefault(self.points).encode()).hexdigest()

        @F.pandas_udf(T.IntegerType())
        def nearest_label(vectors: pd.Series) -> pd.Series:
            index, labels, radii = _index(key, shared)
            cluster = np.full(len(vectors), NOISE, dtype=np.int32)
            if len(vectors):
                distance, nearest = index.kneighbors(np.stack(vectors.to_numpy()))
                distance, nearest = distance[:, 0], nearest[:, 0]
                inside = np.ones(len(vectors), bool) if radii is None else distance <= radii[nearest]
                cluster[inside] = labels[nearest[inside]]
            return pd.Series(cluster)

        return dataset.withColumn("cluster", nearest_label(vector_to_array("scaled")))


#: The nearest-neighbour index of each model's reference points, built once per Python worker.
_INDEXES: dict[str, tuple[Any, np.ndarray, np.ndarray | None]] = {}


def _index(key: str, shared: Any) -> tuple[Any, np.ndarray, np.ndarray | None]:
    if key not in _INDEXES:
        from sklearn.neighbors import NearestNeighbors

        points, labels, radii = shared.value
        _INDEXES[key] = (NearestNeighbors(n_neighbors=1).fit(points), labels, radii)
    return _INDEXES[key]


def driver_sample(scaled_df: DataFrame, max_rows: int, seed: int) -> tuple[np.ndarray, int]:
    """The scaled vectors of at most `max_rows` customers, the ones with the smallest hash of (seed, id): the
    same sample on every run and machine. Returns the sample and the number of customers."""
    total = scaled_df.count()
    u = F.xxhash64(F.lit(seed), F.col("customer_id").cast("string"))
    sample = (
        scaled_df.select(u.alias("_u"), "customer_id", vector_to_array("scaled").alias("_x"))
        .orderBy("_u", "customer_id")
        .limit(max_rows)
        .toPandas()
    )
    x = np.stack(sample["_x"].to_numpy()) if len(sample) else np.empty((0, 0))
    if total > max_rows:
        log.info("fitting on a seeded sample of %d of %d customers (model.fit_sample)", len(x), total)
    return x, total


def _relabelled(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order of first appearance (noise stays -1)."""
    mapping: dict[int, int] = {}
    out = np.full(len(labels), NOISE, dtype=np.int64)
    for i, v in enumerate(labels):
        if v >= 0:
            out[i] = mapping.setdefault(int(v), len(mapping))
    return out


def _centroid_model(x: np.ndarray, labels: np.ndarray, method: str) -> SampleAssignment:
    labels = _relabelled(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    centers = np.array([x[labels == c].mean(axis=0) for c in range(k)])
    return SampleAssignment.of(centers, np.arange(k), None, method)


def default_eps(x: np.ndarray, min_samples: int) -> float:
    """DBSCAN's eps from the knee of the sorted k-distance curve (distance to the `min_samples`-th neighbour)."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=min_samples).fit(x).kneighbors(x)
    curve = np.sort(distances[:, -1])
    # the knee of the rising curve is the knee of its mirror image, a falling one: farthest below the chord
    step = max(1, len(curve) // 200)
    points = curve[::step]
    knee, _ = knee_point(list(range(len(points))), list(points[::-1]))
    return float(points[::-1][knee]) if knee is not None else float(np.median(curve))


def fit_on_sample(method: str, x: np.ndarray, k: int, seed: int, params: dict[str, Any]) -> SampleAssignment:
    """Fit `method` on the sampled vectors `x` and return its assignment rule for every customer."""
    started = time.perf_counter()
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(
            n_clusters=k, linkage=params["agglomerative"]["linkage"]
        ).fit_predict(x)
        model = _centroid_model(x, labels, method)
    elif method == "som":
        from minisom import MiniSom

        som_cfg = params["som"]
        rows, cols = som_cfg["grid"] or (1, k)
        som = MiniSom(
            rows,
            cols,
            x.shape[1],
            sigma=som_cfg["sigma"],
            learning_rate=som_cfg["learning_rate"],
            random_seed=seed,
        )
        if x.shape[1] > 1 and rows > 1:
            som.pca_weights_init(x)  # a 2-d map starts on the data's first two principal components
        else:
            som.random_weights_init(x)  # seeded: nodes start on sampled customers
        som.train(x, som_cfg["iterations"], random_order=True)
        codebook = som.get_weights().reshape(-1, x.shape[1])
        model = SampleAssignment.of(codebook, np.arange(len(codebook)), None, method)
    elif method == "dbscan":
        from sklearn.cluster import DBSCAN

        db_cfg = params["dbscan"]
        min_samples = db_cfg["min_samples"] or max(2 * x.shape[1], round(math.log(len(x))))
        eps = db_cfg["eps"] or default_eps(x, min_samples)
        fitted = DBSCAN(eps=eps, min_samples=min_samples).fit(x)
        labels = _relabelled(fitted.labels_)
        core = fitted.core_sample_indices_
        core = core[labels[core] >= 0]
        model = SampleAssignment.of(x[core], labels[core], np.full(len(core), eps), method)
        log.info("dbscan: eps=%.4f min_samples=%d", eps, min_samples)
    elif method == "hdbscan":
        from sklearn.cluster import HDBSCAN
        from sklearn.neighbors import NearestNeighbors

        h_cfg = params["hdbscan"]
        min_cluster_size = h_cfg["min_cluster_size"] or max(10, int(math.sqrt(len(x)) / 2))
        min_samples = h_cfg["min_samples"] or max(5, round(math.log(len(x))))
        fitted = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
        labels = _relabelled(fitted.fit_predict(x))
        core_distance = NearestNeighbors(n_neighbors=min(min_samples, len(x))).fit(x).kneighbors(x)[0][:, -1]
        # every sample is a reference: nearest to a noise sample is noise, to a clustered one within its core
        # distance is that cluster
        reach = np.where(labels >= 0, core_distance, np.inf)
        model = SampleAssignment.of(x, labels, reach, method)
        log.info("hdbscan: min_cluster_size=%d min_samples=%d", min_cluster_size, min_samples)
    else:
        raise ValueError(f"{method!r} is not a sampled method; choose from {', '.join(SAMPLED_METHODS)}")
    found = len(model.clusterCenters())
    if found < 1:
        raise ModelError(
            f"{method} found no cluster in {len(x)} sampled customers: every one is noise; set "
            f"model.{method}.{'eps' if method == 'dbscan' else 'min_cluster_size'} (docs/choosing-k.md)"
        )
    log.info(
        "%s on %d sampled customers: %d clusters (%.1f s)",
        method,
        len(x),
        found,
        time.perf_counter() - started,
    )
    return model


def sample_size(method: str, params: dict[str, Any]) -> int:
    """How many customers `method` fits on at most."""
    if method == "agglomerative":
        return min(int(params["fit_sample"]), int(params["agglomerative"]["fit_sample"]))
    return int(params["fit_sample"])
