"""Customer segmentation on Apache Spark: raw transactions -> RFM features -> KMeans -> published segments."""

from __future__ import annotations

__version__ = "0.1.0"
