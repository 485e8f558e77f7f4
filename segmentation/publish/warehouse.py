"""Warehouse stage: copy a committed snapshot's tables into a PostgreSQL schema, atomically per run.

Takes the `output.jdbc` section and the output root of a committed snapshot; hands the manifest the rows copied
per table. Each table of `WAREHOUSE_TABLES` is read back from its published Parquet partition and written by
Spark's JDBC writer (in parallel, from the executors) to a staging table `<schema>._staging_<table>_<run>`;
then one transaction on one connection creates a missing table (from the staging table's columns, with an
index on `snapshot_date`), adds the columns a table lacks, deletes the snapshot's rows, inserts the staged
rows and drops the staging tables. PostgreSQL's DDL is transactional: a reader sees the previous tables or the
new ones, never a half; a run that fails or is killed before the commit leaves the previous tables as they
were (its staging tables are dropped by the next run); a rerun of a snapshot replaces that snapshot's rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation import jdbc as jdbc_conn
from segmentation.errors import OutputError, SegmentationError, root_cause
from segmentation.io import HadoopFs

log = logging.getLogger(__name__)

#: The published tables copied to the warehouse, each keeping its `snapshot_date` column.
WAREHOUSE_TABLES = ("segments", "profiles", "rfm_profiles", "elbow", "transitions")

#: A staging table of a run: `_staging_<table>_<run id>`; the run id starts with its UTC start time.
STAGING = re.compile(r"^_staging_[a-z_]+_(\d{8}t\d{6}z)_[0-9a-f]+$")

#: Staging tables older than this are a killed run's: the next run drops them.
STALE_AFTER = dt.timedelta(hours=6)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Sql:
    """Statements on one JDBC connection (through the JVM), with their results as Python rows."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def run(self, sql: str) -> None:
        stmt = self.conn.createStatement()
        try:
            stmt.execute(sql)
        finally:
            stmt.close()

    def rows(self, sql: str) -> list[tuple]:
        stmt = self.conn.createStatement()
        try:
            result = stmt.executeQuery(sql)
            width = result.getMetaData().getColumnCount()
            out = []
            while result.next():
                out.append(tuple(result.getString(i + 1) for i in range(width)))
            return out
        finally:
            stmt.close()

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, type as PostgreSQL writes it) of a table, in column order; empty when it does not exist."""
        return [
            (r[0], r[1])
            for r in self.rows(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE n.nspname = '{schema}' AND c.relname = '{table}' AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum"
            )
        ]


def staging_name(table: str, run_id: str) -> str:
    return f"_staging_{table}_{re.sub(r'[^0-9a-z]+', '_', run_id.lower())}"


def drop_stale_staging(sql: _Sql, schema: str, now: dt.datetime) -> list[str]:
    """Drop the staging tables of runs that started more than `STALE_AFTER` ago (killed before their commit);
    a concurrent run's younger ones stay."""
    dropped = []
    for (name,) in sql.rows(f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'"):
        match = STAGING.match(name)
        if not match:
            continue
        started = dt.datetime.strptime(match.group(1), "%Y%m%dt%H%M%Sz").replace(tzinfo=dt.timezone.utc)
        if now - started > STALE_AFTER:
            sql.run(f"DROP TABLE IF EXISTS {_ident(schema)}.{_ident(name)}")
            dropped.append(name)
    return dropped


def publish_to_warehouse(
    spark: SparkSession, cfg: dict[str, Any], root: str, snapshot_date: str, run_id: str
) -> dict[str, int]:
    """Copy the published snapshot's tables under output root `root` into `cfg['schema']`; returns table ->
    rows of the snapshot there."""
    schema = cfg["schema"]
    where = "output.jdbc"
    options = {
        "url": cfg["url"],
        "batchsize": str(int(cfg["batch_size"])),
        **jdbc_conn.properties(cfg, where),
    }
    fs = HadoopFs(spark, root)
    conn = jdbc_conn.connect(spark, cfg, where, OutputError)
    sql = _Sql(conn)
    staged: dict[str, str] = {}
    try:
        sql.run(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
        dropped = drop_stale_staging(sql, schema, dt.datetime.now(dt.timezone.utc))
        conn.commit()
        if dropped:
            log.info("warehouse: dropped %d staging table(s) of killed runs: %s", len(dropped), dropped)
        for table in WAREHOUSE_TABLES:
            path = f"{root}/{table}/snapshot_date={snapshot_date}"
            if not fs.exists(path):
                continue
            df = spark.read.parquet(path).withColumn("snapshot_date", F.lit(snapshot_date).cast("date"))
            staged[table] = staging_name(table, run_id)
            try:
                df.write.format("jdbc").options(
                    **options, dbtable=f"{_ident(schema)}.{_ident(staged[table])}"
                ).mode("overwrite").save()
            except Exception as exc:  # noqa: BLE001 - one line: which table, why
                raise jdbc_conn.connection_error(exc, cfg, f"{where} (staging {table})", OutputError) from exc
        copied = _swap(sql, schema, staged, snapshot_date)
        conn.commit()
    except SegmentationError:
        conn.rollback()
        raise
    except Exception as exc:  # noqa: BLE001 - the previous tables stay; say why in one line
        conn.rollback()
        raise OutputError(f"warehouse not updated (the previous tables stay): {root_cause(exc)}") from exc
    finally:
        _drop_staging(sql, schema, staged)
        conn.close()
    log.info("warehouse: %s: %s", schema, copied)
    return copied


def _swap(sql: _Sql, schema: str, staged: dict[str, str], snapshot_date: str) -> dict[str, int]:
    """In the connection's open transaction: every staged table's rows replace its snapshot's rows."""
    copied = {}
    for table, staging in staged.items():
        target, source = f"{_ident(schema)}.{_ident(table)}", f"{_ident(schema)}.{_ident(staging)}"
        columns = sql.columns(schema, staging)
        existing = dict(sql.columns(schema, table))
        if not existing:  # IF NOT EXISTS: a concurrent run of another snapshot may have just created it
            sql.run(f"CREATE TABLE IF NOT EXISTS {target} (LIKE {source})")
            sql.run(
                f"CREATE INDEX IF NOT EXISTS {_ident(f'{table}_snapshot_date')} ON {target} (snapshot_date)"
            )
        for name, kind in columns:
            if existing and name not in existing:
                log.info("warehouse: %s.%s gets column %s %s", schema, table, name, kind)
                sql.run(f"ALTER TABLE {target} ADD COLUMN {_ident(name)} {kind}")
        sql.run(f"DELETE FROM {target} WHERE snapshot_date = DATE '{snapshot_date}'")
        names = ", ".join(_ident(n) for n, _ in columns)
        sql.run(f"INSERT INTO {target} ({names}) SELECT {names} FROM {source}")
        sql.run(f"DROP TABLE {source}")
        copied[table] = int(
            sql.rows(f"SELECT count(*) FROM {target} WHERE snapshot_date = DATE '{snapshot_date}'")[0][0]
        )
    return copied


def _drop_staging(sql: _Sql, schema: str, staged: dict[str, str]) -> None:
    """After a failure: this run's staging tables go (after a commit they are gone already)."""
    try:
        for staging in staged.values():
            sql.run(f"DROP TABLE IF EXISTS {_ident(schema)}.{_ident(staging)}")
        sql.conn.commit()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
        log.warning("warehouse: could not drop staging tables %s: %s", list(staged.values()), root_cause(exc))
