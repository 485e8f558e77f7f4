"""The fit record: one clustering of the customers at one k, whatever the method, as the model stage hands it on.

The sweep (`model.kmeans.sweep_k`, `model.methods.sweep_method`) fills one per k; the choice of k
(`model.selection`) reads them, and the chosen one carries the Spark ML model that is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fit:
    """One fit at `k`. `model` (the Spark ML model) is set for the chosen k (`fit_on_all`) and for methods
    fitted by Spark ML; the KMeans sweep's fits carry their `centers`, per-cluster `metrics` (sizes,
    Calinski-Harabasz, Davies-Bouldin) and `stability` from the engine (`segmentation.model.engine`).
    `log_likelihood` is set for a Gaussian mixture only."""

    k: int
    wcss: float
    silhouette: float | None
    cluster_sizes: list[int]
    model: Any = field(default=None, repr=False)
    centers: list[list[float]] | None = field(default=None, repr=False)
    metrics: dict | None = field(default=None, repr=False)
    stability: float | None = None
    iterations: int | None = None
    log_likelihood: float | None = None
    method: str = "kmeans"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
