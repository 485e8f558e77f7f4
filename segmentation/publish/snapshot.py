"""Publish stage: write a snapshot's tables into staging, then move them into place, manifest last.

Layout under the output path (Hive-style partitions):
`<table>/snapshot_date=YYYY-MM-DD/` for segments, profiles, elbow, rejects and models, and
`manifests/snapshot_date=YYYY-MM-DD/manifest.json` (+ `_SUCCESS`). A run writes everything under
`_staging/<run_id>/` first; only when every table is written does it replace the snapshot's directories,
so a failed run leaves the published snapshots as they were. Re-running a snapshot replaces that snapshot only.

The reader's contract: snapshot D is published when `manifests/snapshot_date=D/_SUCCESS` exists, and only then
are its partitions complete and of one run. A commit first removes that marker (D is briefly unpublished while its
directories are swapped), so a reader that follows the contract never sees a half-replaced snapshot, even when
the job is killed in the middle of the swap. Directories whose names start with `_` are never part of a table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from segmentation.errors import OutputError, root_cause
from segmentation.io import HadoopFs
from segmentation.recommend.stage import RECOMMEND_TABLES

log = logging.getLogger(__name__)

#: Tables in the order they are moved into place; the manifest (with its success marker) comes last.
TABLES = (
    "segments",
    "profiles",
    "rfm_profiles",
    "elbow",
    "rejects",
    "transitions",
    *RECOMMEND_TABLES,
    "models",
    "reports",
    "manifests",
)

#: Published directories that hold files rather than a table (the model, the report, the manifest).
FILE_TABLES = ("models", "reports", "manifests")


def absolute_output_path(path: str) -> str:
    """Local paths become absolute (so messages say where things are); URIs (hdfs://, s3a://) stay as given."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


class SnapshotPublisher:
    """Stages a run's outputs and publishes them for one snapshot date."""

    def __init__(self, spark: SparkSession, output_path: str, run_id: str):
        self.root = absolute_output_path(output_path)
        self.run_id = run_id
        self.staging = f"{self.root}/_staging/{run_id}"
        self.snapshot_date: str | None = None
        try:
            self.fs = HadoopFs(spark, self.root)
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown file-system scheme
            raise OutputError(f"output path cannot be used: {self.root} ({type(exc).__name__})") from exc

    def check_writable(self) -> None:
        """Fail early, before any work, when the output location cannot be written."""
        probe = f"{self.staging}/_write_probe"
        try:
            self.fs.mkdirs(self.staging)
            self.fs.write_text(probe, "ok")
            self.fs.delete(probe)
        except Exception as exc:  # noqa: BLE001 - permission and I/O errors surface as Py4J errors
            detail = (str(exc) if isinstance(exc, OutputError) else root_cause(exc))[:200]
            raise OutputError(f"output path is not writable: {self.root} ({detail})") from exc

    def _partition(self, base: str, table: str) -> str:
        if self.snapshot_date is None:
            raise RuntimeError("snapshot_date must be set before writing")
        return f"{base}/{table}/snapshot_date={self.snapshot_date}"

    def staged(self, table: str) -> str:
        return self._partition(self.staging, table)

    def published(self, table: str) -> str:
        return self._partition(self.root, table)

    def write_table(self, table: str, df: DataFrame, files: int = 1) -> None:
        """Write one table's partition as Parquet into staging (`files` output files)."""
        df.coalesce(max(1, files)).write.mode("overwrite").parquet(self.staged(table))

    def save_model(self, model: PipelineModel, metadata: dict[str, Any]) -> None:
        model.write().overwrite().save(f"{self.staged('models')}/pipeline")
        self.fs.write_text(f"{self.staged('models')}/segment_map.json", json.dumps(metadata, indent=2))

    def copy_local_dir(self, table: str, local_dir: str) -> None:
        """Copy the files of a local directory (e.g. the report) into the table's staged partition."""
        target = self.staged(table)
        self.fs.mkdirs(target)
        for path in sorted(Path(local_dir).iterdir()):
            if path.is_file():
                self.fs.fs.copyFromLocalFile(
                    False, True, self.fs.path(str(path)), self.fs.path(f"{target}/{path.name}")
                )

    def published_snapshots(self) -> list[str]:
        """Snapshot dates (YYYY-MM-DD, sorted) whose manifest has its success marker."""
        return published_snapshots(self.fs, self.root)

    def read_manifest(self, snapshot_date: str) -> dict[str, Any]:
        return json.loads(
            self.fs.read_text(f"{self.root}/manifests/snapshot_date={snapshot_date}/manifest.json")
        )

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.fs.mkdirs(self.staged("manifests"))
        self.fs.write_text(
            f"{self.staged('manifests')}/manifest.json", json.dumps(manifest, indent=2, sort_keys=False)
        )

    def commit(self) -> None:
        """Replace the snapshot's published directories with the staged ones, manifest and marker last."""
        trash = f"{self.root}/_trash/{self.run_id}"
        # unpublish first: from here until the new marker is written, readers skip this snapshot
        marker = f"{self.published('manifests')}/_SUCCESS"
        if self.fs.exists(marker):
            self.fs.delete(marker)
        staged = self.tables()
        for table in TABLES:
            target = self.published(table)
            if self.fs.exists(target):  # replaced, or left out by this run (e.g. no report): unpublished
                self.fs.mkdirs(f"{trash}/{table}")
                self.fs.rename(target, f"{trash}/{table}/snapshot_date={self.snapshot_date}")
            if table in staged:
                self.fs.mkdirs(f"{self.root}/{table}")
                self.fs.rename(self.staged(table), target)
        self.fs.write_text(f"{self.published('manifests')}/_SUCCESS", "")
        self.fs.delete(trash)
        self.fs.delete(self.staging)
        self._remove_if_empty(f"{self.root}/_trash")
        self._remove_if_empty(f"{self.root}/_staging")
        log.info("published snapshot %s under %s", self.snapshot_date, self.root)

    def abort(self) -> None:
        """Drop this run's staging area; published snapshots are untouched."""
        try:
            self.fs.delete(self.staging)
            self._remove_if_empty(f"{self.root}/_staging")
        except Exception:  # noqa: BLE001 - cleanup must not hide the original error
            log.warning("could not remove staging directory %s", self.staging)

    def tables(self) -> list[str]:
        """The tables this run staged, in publishing order (manifests last)."""
        return [t for t in TABLES if self.fs.exists(self.staged(t))]

    def _remove_if_empty(self, p: str) -> None:
        """Remove a shared parent (`_staging`, `_trash`) only when empty: a non-recursive delete fails on a
        directory another run has just written into, so concurrent runs never remove each other's files."""
        # fails when not empty (another run is using it)
        with contextlib.suppress(Exception):
            self.fs.fs.delete(self.fs.path(p), False)


def published_snapshots(fs: HadoopFs, root: str) -> list[str]:
    """Snapshot dates under `root` whose manifest has its success marker (the reader's contract)."""
    found = fs.glob(f"{root}/manifests/snapshot_date=*/_SUCCESS")
    return sorted(p.rsplit("/", 2)[-2].split("=", 1)[1] for p in found)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
