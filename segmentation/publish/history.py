"""Earlier snapshots, read back: what stable segment ids and the transitions need of the published output.

Takes the snapshot writer's root and hands the segments stage the previous snapshot (its manifest, profiles
and segments path) or the published version of this very snapshot on a rerun.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession

from segmentation.publish.snapshot import SnapshotPublisher
from segmentation.segments.identity import PreviousSnapshot

log = logging.getLogger(__name__)


def previous_snapshot(
    spark: SparkSession, publisher: SnapshotPublisher, snapshot_date: str
) -> PreviousSnapshot | None:
    """The latest published training snapshot strictly before `snapshot_date`, or None."""
    earlier = [d for d in publisher.published_snapshots() if d < snapshot_date]
    for day in reversed(earlier):
        manifest = publisher.read_manifest(day)
        if manifest.get("kind", "training") != "training":
            continue
        profiles_path = f"{publisher.root}/profiles/snapshot_date={day}"
        profiles = [r.asDict() for r in spark.read.parquet(profiles_path).collect()]
        return PreviousSnapshot(day, manifest, profiles, f"{publisher.root}/segments/snapshot_date={day}")
    return None


def identity_reference(
    spark: SparkSession, publisher: SnapshotPublisher, snapshot_date: str, previous: PreviousSnapshot | None
) -> PreviousSnapshot | None:
    """The snapshot whose ids a run keeps: the published version of this very snapshot when it is a rerun (so a
    rerun keeps its ids even when an earlier snapshot was backfilled since), else the previous snapshot."""
    if snapshot_date in publisher.published_snapshots():
        manifest = publisher.read_manifest(snapshot_date)
        if manifest.get("kind", "training") == "training":
            profiles = [
                r.asDict()
                for r in spark.read.parquet(
                    f"{publisher.root}/profiles/snapshot_date={snapshot_date}"
                ).collect()
            ]
            return PreviousSnapshot(
                snapshot_date, manifest, profiles, f"{publisher.root}/segments/snapshot_date={snapshot_date}"
            )
    return previous


def previous_segments(spark: SparkSession, previous: PreviousSnapshot | None) -> DataFrame | None:
    """The published `segments` of the previous snapshot (for the transitions), or None for a first snapshot."""
    return spark.read.parquet(previous.segments_path) if previous else None
