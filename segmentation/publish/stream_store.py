"""The stream's store: its state and published tables under one output folder, versioned so that a micro-batch
replayed after a crash changes nothing twice.

Takes what one state version computed (the order rows and line keys it adds, the new customer state, its
segment changes, rejects and progress row) and hands readers:

- `customer_state/`: every customer's current features and segment (one version, swapped in whole);
- `segment_updates/version=V/`, `rejects/version=V/`, `stream_progress/version=V/`: what version V added;
- `_state/`: what the next version is computed from: `orders/version=V/` (accepted lines summed per customer,
  order, day, purchase or return), `lines/version=V/date=D/` (fingerprints of accepted lines, to find their
  copies), `commits/V.json` (the commit point: written last, atomically) and `stream.json` (the model).

A version is the seed (0: the model's training lines), a Spark micro-batch, or a clock tick. Reading the state
of version V means reading `version <= V` partitions only, so whatever a killed attempt left is never read; the
next attempt first removes it (`recover`) and writes again. The reader's contract: rows of a version are
complete once `_state/commits/V.json` exists; `customer_state/` is replaced by a rename (briefly absent).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from segmentation.errors import InputError
from segmentation.io import HadoopFs
from segmentation.publish.snapshot import absolute_output_path

log = logging.getLogger(__name__)

#: The tables a version publishes beside `customer_state`, partitioned by `version`.
VERSION_TABLES = ("segment_updates", "rejects", "stream_progress")

#: The state a version adds, read back by the next versions, and its columns.
STATE_SCHEMAS = {
    "orders": T.StructType(
        [
            T.StructField("customer_id", T.StringType()),
            T.StructField("_order_key", T.StringType()),
            T.StructField("_date", T.DateType()),
            T.StructField("_is_return", T.BooleanType()),
            T.StructField("_value", T.DecimalType(38, 9)),
            T.StructField("_abs_value", T.DecimalType(38, 9)),
        ]
    ),
    "lines": T.StructType(
        [
            T.StructField("_line_key_1", T.LongType()),
            T.StructField("_line_key_2", T.LongType()),
            T.StructField("date", T.DateType()),
        ]
    ),
}
STATE_TABLES = tuple(STATE_SCHEMAS)


def _version_of(path: str) -> int:
    """The version number of a `.../version=N[/...]` path."""
    return int(path.split("/version=")[1].split("/")[0])


@dataclass(frozen=True)
class Commit:
    """One committed state version: what it was (`seed`, `batch` or `tick`), the highest Spark micro-batch id
    applied so far (-1 before any), and the date its recency and tenure are counted to."""

    version: int
    kind: str
    last_batch_id: int
    as_of_date: str
    committed_at: str


class StreamStore:
    """The output folder of one stream: paths, the last commit, and the steps that publish a version."""

    def __init__(self, spark: SparkSession, output_path: str):
        self.spark = spark
        self.root = absolute_output_path(output_path)
        self.fs = HadoopFs(spark, self.root)

    def _state(self, *parts: str) -> str:
        return "/".join([self.root, "_state", *parts])

    def _staging(self, version: int, table: str) -> str:
        return self._state("staging", str(version), table)

    @property
    def customer_state_path(self) -> str:
        return f"{self.root}/customer_state"

    # --- what was committed -------------------------------------------------------------------------------

    def last_commit(self) -> Commit | None:
        versions = [
            int(name.removesuffix(".json"))
            for name in self.fs.list_dir(self._state("commits"))
            if name.endswith(".json") and name.removesuffix(".json").isdigit()
        ]
        if not versions:
            return None
        return Commit(**json.loads(self.fs.read_text(self._state("commits", f"{max(versions)}.json"))))

    def stream_info(self) -> dict[str, Any] | None:
        path = self._state("stream.json")
        return json.loads(self.fs.read_text(path)) if self.fs.exists(path) else None

    def check_model(self, info: dict[str, Any]) -> None:
        """The stream's state was built with one model: refuse to continue it with another."""
        known = self.stream_info()
        if known is None:
            self.fs.mkdirs(self._state())
            self.fs.write_text(self._state("stream.json"), json.dumps(info, indent=2, sort_keys=True))
            return
        for key in ("model_path", "model_snapshot_date", "run_id"):
            if known.get(key) != info.get(key):
                raise InputError(
                    f"the stream under {self.root} was started with the model of {known['model_snapshot_date']} "
                    f"under {known['model_path']} (run {known['run_id']}); it cannot continue with the model of "
                    f"{info['model_snapshot_date']} under {info['model_path']} (run {info['run_id']}): "
                    "use a new --output and --checkpoint for a new model"
                )

    def check_checkpoint(self, checkpoint: str) -> None:
        """The state and Spark's checkpoint (which files were read) go together: a new checkpoint on an old
        state would read every file again, a lost one would skip batches. Refused; the first run records its query's id."""
        known = (self.stream_info() or {}).get("query_id")
        found = checkpoint_query_id(self.spark, checkpoint)
        if known and found != known:
            raise InputError(
                f"the stream under {self.root} belongs to the checkpoint of query {known}; "
                f"{checkpoint} is {'of query ' + found if found else 'new'}: give the stream's own --checkpoint, "
                "or a new --output to start over"
            )

    def record_query_id(self, query_id: str) -> None:
        info = self.stream_info() or {}
        if info.get("query_id") != query_id:
            self.fs.write_text(
                self._state("stream.json"),
                json.dumps({**info, "query_id": query_id}, indent=2, sort_keys=True),
            )

    def customer_state(self) -> DataFrame:
        return self.spark.read.parquet(self.customer_state_path)

    def state_table(self, table: str, version: int, dates: list | None = None) -> DataFrame:
        """`orders` or `lines` as of `version`: the partitions of committed versions only, listed here (a
        reader never lists what a killed attempt left); `dates`: only those dates' lines."""
        base = self._state(table)
        pattern = f"{base}/version=*" + (f"/date={{{','.join(str(d) for d in dates)}}}" if dates else "")
        paths = [p for p in self.fs.glob(pattern) if _version_of(p) <= version]
        if not paths:
            return self.spark.createDataFrame([], STATE_SCHEMAS[table])
        return self.spark.read.option("basePath", base).parquet(*paths).drop("version")

    def version_rows(self, table: str, version: int) -> DataFrame:
        """What `version` itself added to `orders` (a plain scan of its files, without the plan that made them)."""
        path = self._state(table, f"version={version}")
        if not self.fs.glob(f"{path}/*.parquet"):
            return self.spark.createDataFrame([], STATE_SCHEMAS[table])
        return self.spark.read.parquet(path)

    # --- publishing a version -----------------------------------------------------------------------------

    def clean_committed(self, version: int) -> None:
        """Remove the staging a run killed right after committing `version` left (its commit stands)."""
        for name in self.fs.list_dir(self._state("staging")):
            if name.isdigit() and int(name) <= version:
                self.fs.delete(self._state("staging", name))

    def recover(self, version: int) -> None:
        """Undo what an attempt of `version` that was killed before its commit left: the previous customer
        state moved back, its partitions and staging removed."""
        previous = self._staging(version, "previous_customer_state")
        if self.fs.exists(previous):
            if self.fs.exists(self.customer_state_path):
                self.fs.delete(self.customer_state_path)
            self.fs.rename(previous, self.customer_state_path)
            log.warning(
                "version %d: an earlier attempt was cut off; the customer state before it is back", version
            )
        for table in STATE_TABLES:
            self.fs.delete(self._state(table, f"version={version}"))
        for table in VERSION_TABLES:
            self.fs.delete(f"{self.root}/{table}/version={version}")
        self.fs.delete(self._state("staging", str(version)))

    def write_state(self, table: str, version: int, df: DataFrame, partition_by: str | None = None) -> None:
        writer = df.write.mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.parquet(self._state(table, f"version={version}"))

    def stage(self, version: int, table: str, df: DataFrame) -> None:
        df.coalesce(1).write.mode("overwrite").parquet(self._staging(version, table))

    def staged_rows(self, version: int, table: str) -> int:
        return self.spark.read.parquet(self._staging(version, table)).count()

    def stage_customer_state(self, version: int, df: DataFrame) -> None:
        df.write.mode("overwrite").parquet(self._staging(version, "customer_state"))

    def publish(self, commit: Commit) -> None:
        """Move the staged tables of `commit.version` into place, swap the customer state, write the commit."""
        version = commit.version
        for table in VERSION_TABLES:
            staged = self._staging(version, table)
            if self.fs.exists(staged):
                self.fs.mkdirs(f"{self.root}/{table}")
                self.fs.rename(staged, f"{self.root}/{table}/version={version}")
        if self.fs.exists(self.customer_state_path):
            self.fs.rename(self.customer_state_path, self._staging(version, "previous_customer_state"))
        self.fs.rename(self._staging(version, "customer_state"), self.customer_state_path)
        self.fs.mkdirs(self._state("commits"))
        # the commit point: a complete file under its final name, or none (write, then rename)
        pending = self._state("commits", f".{version}.json.tmp")
        self.fs.write_text(pending, json.dumps(asdict(commit), indent=2))
        self.fs.rename(pending, self._state("commits", f"{version}.json"))
        self.fs.delete(self._state("staging", str(version)))


def checkpoint_query_id(spark: SparkSession, checkpoint: str) -> str | None:
    """The id of the query a Spark checkpoint belongs to (its `metadata` file), None for a new checkpoint."""
    path = f"{absolute_output_path(checkpoint)}/metadata"
    fs = HadoopFs(spark, path)
    return json.loads(fs.read_text(path)).get("id") if fs.exists(path) else None
