"""Catalog stage: register the published tables in a Spark catalog (Hive metastore), partitions included.

After a snapshot is published, `segments`, `profiles`, `elbow`, `rejects` and `transitions` (and `rfm_profiles`)
become external Parquet tables `<catalog.database>.<table>` over the output path, partitioned by `snapshot_date`,
with a partition for every published snapshot (the reader's contract: only snapshots with a success marker), so
any SparkSession on the same metastore can `SELECT ... FROM segmentation.segments WHERE snapshot_date = '...'`.
`catalog.mode: local` (the default on a local master) keeps a persistent Derby metastore under
`catalog.metastore`; `session` (the default elsewhere) registers in the session's own catalog, the cluster's.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from segmentation.publish.snapshot import FILE_TABLES, TABLES, SnapshotPublisher

log = logging.getLogger(__name__)


#: Tables registered in the catalog (the report, models and manifests are files, not tables).
CATALOG_TABLES = tuple(t for t in TABLES if t not in FILE_TABLES)


def metastore_dir(catalog_cfg: dict[str, Any]) -> Path:
    return Path(catalog_cfg["metastore"]).expanduser().resolve()


def hive_conf(catalog_cfg: dict[str, Any]) -> dict[str, str]:
    """Spark settings for a session on the configured metastore: Hive catalog, Derby database, warehouse."""
    root = metastore_dir(catalog_cfg)
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(root / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        # Derby's log goes next to the database, not into the working directory
        "spark.driver.extraJavaOptions": f"-Dderby.stream.error.file={root / 'derby.log'}",
    }


def has_hive_catalog(spark: SparkSession) -> bool:
    return spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "hive"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@contextlib.contextmanager
def metastore_lock(catalog_cfg: dict[str, Any], timeout_s: float = 600.0):
    """One job at a time talks to the embedded Derby metastore (it allows one JVM); others wait their turn."""
    root = metastore_dir(catalog_cfg)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"metastore {root} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register_tables(spark: SparkSession, database: str, publisher: SnapshotPublisher) -> dict[str, int]:
    """Create the database and tables if needed (recreate a table whose schema changed: its data stays, being
    external) and register every published snapshot's partition; returns table -> registered partitions."""
    db = _quote(database)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    snapshots = publisher.published_snapshots()
    registered: dict[str, int] = {}
    for table in CATALOG_TABLES:
        days = [d for d in snapshots if publisher.fs.exists(f"{publisher.root}/{table}/snapshot_date={d}")]
        if not days:
            continue
        location = f"{publisher.root}/{table}"
        schema = spark.read.parquet(f"{location}/snapshot_date={days[-1]}").schema
        full = [*schema.fields, T.StructField("snapshot_date", T.DateType())]
        name = f"{db}.{_quote(table)}"
        if spark.catalog.tableExists(f"{database}.{table}"):
            current = [(f.name.lower(), f.dataType) for f in spark.table(name).schema.fields]
            if current != [(f.name.lower(), f.dataType) for f in full]:
                log.info("catalog: %s.%s has another schema; recreating its definition", database, table)
                spark.sql(f"DROP TABLE {name}")  # external: the files stay
        columns = ", ".join(f"{_quote(f.name)} {f.dataType.simpleString()}" for f in full)
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {name} ({columns}) USING parquet "
            f"PARTITIONED BY (snapshot_date) LOCATION '{location}'"
        )
        known = {r[0].split("=", 1)[1] for r in spark.sql(f"SHOW PARTITIONS {name}").collect()}
        for day in days:
            if day not in known:
                spark.sql(f"ALTER TABLE {name} ADD IF NOT EXISTS PARTITION (snapshot_date = DATE'{day}')")
        for day in sorted(known - set(days)):  # unpublished since (never happens in normal operation)
            spark.sql(f"ALTER TABLE {name} DROP IF EXISTS PARTITION (snapshot_date = DATE'{day}')")
        spark.sql(f"REFRESH TABLE {name}")
        registered[table] = len(days)
    log.info("catalog: %s", {t: f"{n} partition(s)" for t, n in registered.items()})
    return registered


def release_derby(spark: SparkSession) -> None:
    """Shut embedded Derby down so the next job (or the Thrift server) can open the metastore."""
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.sql.DriverManager.getConnection("jdbc:derby:;shutdown=true")
    except Exception as exc:  # noqa: BLE001 - Derby signals a clean shutdown with SQLException XJ015
        if "XJ015" not in str(exc) and "shutdown" not in str(exc).lower():
            log.warning("could not shut Derby down: %s", str(exc).splitlines()[0][:200])


def update_catalog(
    spark: SparkSession, catalog_cfg: dict[str, Any], publisher: SnapshotPublisher, mode: str = "local"
) -> str:
    """Register the published tables; one line saying what happened. A failure here does not undo the publish
    (the files are the data; the next run registers every published snapshot), so it is logged, not raised.
    `mode` local: the job's own Derby metastore, one job at a time, released after; session: the session's
    catalog as the platform configured it (a cluster's Hive metastore, Glue), untouched otherwise."""
    if not has_hive_catalog(spark):
        if mode == "session":
            return (
                "skipped: catalog.mode session, but the session's catalog is in-memory (it would vanish with "
                "the session); give the session a metastore (spark.sql.catalogImplementation=hive) or use "
                "catalog.mode local"
            )
        return "skipped: the session has no Hive catalog (segment-customers starts one in catalog.mode local)"
    try:
        if mode == "session":
            registered = register_tables(spark, catalog_cfg["database"], publisher)
        else:
            with metastore_lock(catalog_cfg):
                try:
                    registered = register_tables(spark, catalog_cfg["database"], publisher)
                finally:
                    release_derby(spark)
    except Exception as exc:  # noqa: BLE001 - the snapshot is published; say why the catalog is behind
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.warning("catalog not updated (the snapshot is published; the next run registers it): %s", detail)
        return f"not updated: {detail}"
    return f"{catalog_cfg['database']}: " + ", ".join(f"{t} ({n})" for t, n in registered.items())
