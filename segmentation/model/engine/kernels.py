"""The engine's numpy kernels: squared distances, nearest centers and per-cluster sums of a batch of customers.

Pure numpy on one batch (rows of `x`, their squared norms `xx`); the passes (`rows`) run them per partition.
"""

from __future__ import annotations

import numpy as np


def partial_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """|c|^2 - 2 x.c for every row and center (n x m): the squared distance less the row's own squared norm,
    which is the same for every center (one matrix product, in place)."""
    partial = x @ centers.T
    partial *= -2.0
    partial += np.einsum("ij,ij->i", centers, centers)[None, :]
    return partial


def assign(x: np.ndarray, xx: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest center of every row (first on ties, as Spark) and the squared distance to it. The row's own
    squared norm is the same for every center, so it is added to the winner only."""
    partial = partial_distances(x, centers)
    nearest = partial.argmin(axis=1)
    return nearest, np.maximum(partial[np.arange(len(x)), nearest] + xx, 0.0)


def per_cluster(nearest: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Sum of `values` (n or n x dim) per cluster: k or k x dim."""
    if values.ndim == 1:
        return np.bincount(nearest, weights=values, minlength=k)
    return np.stack(
        [np.bincount(nearest, weights=values[:, i], minlength=k) for i in range(values.shape[1])], 1
    )
