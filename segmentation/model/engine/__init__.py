"""The k sweep's engine: every KMeans model of a sweep fitted at once, replaying Spark ML's KMeans exactly.

The model stage (`model.kmeans.sweep_k`) uses only the names handed on here: `features_frame` lays out the
scaled features, `LocalRows` / `SparkRows` run the passes in the driver or as Spark jobs, `kmeans_parallel`
gives every (k, seed) Spark ML's k-means|| start, `fit_all` runs the Lloyd iterations and `evaluate` the
diagnostics. Inside: `rows` (where passes run), `start` (k-means||), `lloyd` (iterations and diagnostics),
`sparkrandom` (Spark's random number generators, replayed).
"""

from segmentation.model.engine.lloyd import Evaluation, Model, evaluate, fit_all
from segmentation.model.engine.rows import LocalRows, Rows, SparkRows, features_frame
from segmentation.model.engine.start import kmeans_parallel

__all__ = [
    "Evaluation",
    "LocalRows",
    "Model",
    "Rows",
    "SparkRows",
    "evaluate",
    "features_frame",
    "fit_all",
    "kmeans_parallel",
]
