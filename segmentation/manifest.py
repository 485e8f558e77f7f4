"""The run's manifest: one typed record, filled by the stages, written last by the publish stage.

`Manifest.as_dict` gives the JSON document published as `manifest.json` beside each snapshot (keys in
docs/data-contract.md); the same record, with the output path and the profiles, is what a run returns.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import pyspark

from segmentation import __version__
from segmentation.compat import engine_verified
from segmentation.model.selection import Selection
from segmentation.sources.source import Reconciliation


def model_manifest(
    selection: Selection,
    ks: list[int],
    model_cfg: dict[str, Any],
    prep_cfg: dict[str, Any],
    bounds: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's record of the model: candidates, the choice and why, structure, seed and preparation."""
    return {
        "k_candidates": ks,
        "chosen_k": selection.choice.k,
        "chosen_k_reason": selection.choice.reason,
        "method": model_cfg["method"],
        "clear_structure": selection.choice.clear_structure,
        "structure_gap": selection.gap,
        "vetoed_k": {str(k): v for k, v in sorted(selection.choice.vetoed.items())},
        "seed": int(model_cfg["seed"]),
        "features": prep_cfg["features"],
        "log1p": prep_cfg["log1p"],
        "capping_bounds": {f: list(b) for f, b in bounds.items()},
    }


def versions(spark_version: str) -> dict[str, str]:
    """The versions a run was made with: this package, Spark (the JVM's), pyspark and Python."""
    return {
        "segmentation": __version__,
        "spark": spark_version,
        "pyspark": pyspark.__version__,
        "python": platform.python_version(),
        # how KMeans' k sweep ran: the engine (its replay of Spark ML verified on this Spark) or Spark ML fits
        "k_sweep": "engine" if engine_verified() else "spark_ml_fits",
    }


@dataclass
class Manifest:
    """What one run published and how: the input's reconciliation, the model and its choice of k, the
    segments, identity against the previous snapshot (transaction logs), versions and stage timings."""

    run_id: str
    snapshot_date: str
    source: dict[str, Any]
    counts: Reconciliation
    model: dict[str, Any]
    segments: dict[str, str]
    versions: dict[str, str]
    report: bool
    comparison: dict[str, Any] | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    rfm: dict[str, Any] = field(default_factory=dict)
    recommend: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    created_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def as_dict(self) -> dict[str, Any]:
        """The published JSON document: the source's and the model's entries inline, in the documented order."""
        return {
            "run_id": self.run_id,
            "snapshot_date": self.snapshot_date,
            **self.source,
            **asdict(self.counts),
            **self.model,
            "comparison": self.comparison,
            "segments": self.segments,
            **self.identity,
            **self.rfm,
            **({"recommend": self.recommend} if self.recommend else {}),
            "versions": self.versions,
            "report": self.report,
            "created_at": self.created_at,
            "timings_s": self.timings_s,
        }
