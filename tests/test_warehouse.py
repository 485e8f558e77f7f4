"""The warehouse: reading from a catalog table and from PostgreSQL over JDBC, publishing to PostgreSQL, and the
catalog modes. A real PostgreSQL server (tests/postgres.py) on 127.0.0.1 and Debian's JDBC driver.

Online Retail, loaded into PostgreSQL with psql, is read back over JDBC (a partitioned read) and must give the
file run's reconciliation and features exactly; the job then reads it and publishes to PostgreSQL, read back
with psql as a BI user would. Publishing is atomic: a failure in the swap leaves every table as it was.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segmentation.config import DEFAULTS, apply_overrides, load_config, resolve_catalog_mode, validate_config
from segmentation.errors import ConfigError, InputError, OutputError
from segmentation.publish.warehouse import WAREHOUSE_TABLES, publish_to_warehouse, staging_name
from segmentation.schema import BUNDLED_INPUT

from .conftest import PG_DRIVER_JAR, REPO
from .test_contract import expected_columns
from .test_inputs import _features

PG_COLUMNS = {
    "InvoiceNo": "text",
    "StockCode": "text",
    "Description": "text",
    "Quantity": "text",
    "InvoiceDate": "timestamp",
    "UnitPrice": "text",
    "CustomerID": "text",
    "Country": "text",
}


def _jdbc(postgres, **extra) -> dict:
    return {
        **copy.deepcopy(DEFAULTS["input"]["jdbc"]),
        "url": postgres.url,
        "user": postgres.user,
        "password_env": postgres.password_env,
        **extra,
    }


def _out_jdbc(postgres, schema: str) -> dict:
    return {
        **copy.deepcopy(DEFAULTS["output"]["jdbc"]),
        "url": postgres.url,
        "user": postgres.user,
        "password_env": postgres.password_env,
        "schema": schema,
    }


# --- configuration ------------------------------------------------------------------------------------------
def test_jdbc_and_table_config_errors_say_what_to_change(tmp_path, monkeypatch):
    url = "jdbc:postgresql://127.0.0.1:5432/shop"
    cases = {
        "input: {format: jdbc, jdbc: {url: "
        + url
        + "}}\n": "input.jdbc needs one of table or query (not both)",
        "input: {format: jdbc, jdbc: {url: 'jdbc:postgresql://h/db?password=x', table: t}}\n": (
            "input.jdbc.url holds a password: take it out and put the password in an environment variable "
            "named by input.jdbc.password_env"
        ),
        "input: {format: jdbc, jdbc: {url: 'postgres://h/db', table: t}}\n": (
            "input.jdbc.url must be a JDBC URL (jdbc:postgresql://host:5432/db), got 'postgres://h/db'"
        ),
        "input: {format: jdbc, jdbc: {url: " + url + ", table: t, password_env: 'my secret'}}\n": (
            "input.jdbc.password_env must be the NAME of an environment variable, got 'my secret'"
        ),
        "input: {format: jdbc, jdbc: {url: " + url + ", table: t, partition_column: id}}\n": (
            "a partitioned JDBC read needs all of input.jdbc.partition_column, lower_bound, upper_bound "
            "and num_partitions"
        ),
        "input: {table: 'shop;drop'}\n": "input.table must be a table name such as db.transactions, got 'shop;drop'",
        "catalog: {enabled: false, mode: session}\n": (
            "catalog.enabled is false but catalog.mode is 'session': keep one of them"
        ),
        "output: {jdbc: {url: " + url + ", schema: 'a-b'}}\n": (
            "output.jdbc.schema must be letters, digits and _, got 'a-b'"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as err:
            path = tmp_path / "c.yaml"
            path.write_text(text)
            validate_config(load_config(path))
        assert str(err.value) == message, text
    # a config that reads over JDBC and a path on the command line: which one is meant is not guessed
    cfg = load_config(None)
    cfg["input"].update(
        format="jdbc", jdbc=_jdbc(type("P", (), {"url": url, "user": "u", "password_env": "E"}))
    )
    with pytest.raises(
        ConfigError, match="^--input is a path but the config reads over JDBC: add --input-format$"
    ):
        apply_overrides(cfg, input="data.csv")


def test_catalog_mode_follows_the_master_unless_set():
    catalog = copy.deepcopy(DEFAULTS["catalog"])
    assert resolve_catalog_mode(catalog, "local[2]") == "local"
    assert resolve_catalog_mode(catalog, "spark://10.0.0.1:7077") == "session"
    assert resolve_catalog_mode(catalog, "yarn") == "session"
    assert resolve_catalog_mode({**catalog, "enabled": False}, "local[*]") == "off"
    assert resolve_catalog_mode({**catalog, "mode": "session"}, "local[*]") == "session"
    assert resolve_catalog_mode({**catalog, "mode": "off"}, "yarn") == "off"


# --- reading ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled_frame():
    files = sorted(glob.glob(BUNDLED_INPUT))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def retail_in_postgres(postgres, bundled_frame, tmp_path_factory):
    """The bundled Online Retail lines in `public.transactions` (InvoiceDate a timestamp, the rest text as
    written), loaded with psql's COPY."""
    csv = tmp_path_factory.mktemp("pg-load") / "retail.csv"
    bundled_frame.to_csv(csv, index=False)
    columns = ", ".join(f'"{c}" {t}' for c, t in PG_COLUMNS.items())
    postgres.psql(f"CREATE TABLE public.transactions ({columns})")
    postgres.psql(f"\\copy public.transactions FROM '{csv}' WITH (FORMAT csv, HEADER true)")
    assert int(postgres.psql("SELECT count(*) FROM public.transactions")) == len(bundled_frame)
    return "public.transactions"


@pytest.fixture(scope="module")
def file_features(spark, tmp_path_factory):
    return _features(spark, Path(BUNDLED_INPUT), "parquet", tmp_path_factory.mktemp("file"))


def _same(left, right) -> None:
    (source_a, features_a, _, rejects_a), (source_b, features_b, _, rejects_b) = left, right
    assert source_a.input_rows == source_b.input_rows == 541_909
    assert source_a.rejected == source_b.rejected
    assert source_a.accepted_rows == source_b.accepted_rows
    assert source_a.snapshot_date == source_b.snapshot_date
    assert features_a == features_b
    assert len(rejects_a) == len(rejects_b)


def test_a_partitioned_jdbc_read_gives_the_file_runs_features(
    spark, postgres, retail_in_postgres, file_features, tmp_path
):
    jdbc = _jdbc(
        postgres,
        table=retail_in_postgres,
        partition_column="InvoiceDate",
        lower_bound="2010-12-01",
        upper_bound="2011-12-10",
        num_partitions=4,
        fetch_size=5000,
    )
    from segmentation.sources.read import read_input

    raw = read_input(spark, {**DEFAULTS["input"], "format": "jdbc", "jdbc": jdbc})
    assert raw.rdd.getNumPartitions() == 4
    # each partition reads its own range of days: together every line once
    sizes = raw.rdd.mapPartitions(lambda rows: [sum(1 for _ in rows)]).collect()
    assert sum(sizes) == 541_909 and all(s > 50_000 for s in sizes), sizes
    _same(file_features, _features(spark, Path("unused"), "jdbc", tmp_path, jdbc=jdbc))


def test_a_catalog_table_gives_the_file_runs_features(spark, file_features, tmp_path):
    spark.sql(f"CREATE DATABASE IF NOT EXISTS shop LOCATION '{tmp_path / 'shop.db'}'")
    spark.read.parquet(BUNDLED_INPUT).write.saveAsTable("shop.transactions")
    try:
        _same(file_features, _features(spark, Path("unused"), "parquet", tmp_path, table="shop.transactions"))
        from segmentation.sources.read import read_input

        with pytest.raises(InputError) as err:
            read_input(spark, {**DEFAULTS["input"], "table": "shop.orders"})
        assert str(err.value).startswith(
            "input.table 'shop.orders' is not a table of the session's catalog (in-memory); databases: "
        )
        assert "shop" in str(err.value)
    finally:
        spark.sql("DROP DATABASE shop CASCADE")


def test_a_wrong_password_and_a_missing_table_are_one_line(spark, postgres, monkeypatch):
    from segmentation.sources.read import read_input

    monkeypatch.setenv(postgres.password_env, "not-the-password")
    with pytest.raises(InputError) as err:
        read_input(spark, {**DEFAULTS["input"], "format": "jdbc", "jdbc": _jdbc(postgres, table="t")})
    assert str(err.value) == (
        f"{postgres.url} as segment: the database refused the login (check the user and input.jdbc.password_env)"
    )
    monkeypatch.delenv(postgres.password_env)
    with pytest.raises(
        ConfigError, match=f"^input.jdbc.password_env names {postgres.password_env}, which is not set"
    ):
        read_input(spark, {**DEFAULTS["input"], "format": "jdbc", "jdbc": _jdbc(postgres, table="t")})
    monkeypatch.setenv(postgres.password_env, postgres.password)
    with pytest.raises(InputError) as err:
        read_input(
            spark, {**DEFAULTS["input"], "format": "jdbc", "jdbc": _jdbc(postgres, table="public.nope")}
        )
    assert str(err.value).startswith(f"input.jdbc {postgres.url} as segment: ")
    assert 'relation "public.nope" does not exist' in str(err.value)
    # a database whose driver the session lacks (only PostgreSQL's jar is on spark.jars here)
    with pytest.raises(InputError) as err:
        read_input(
            spark,
            {
                **DEFAULTS["input"],
                "format": "jdbc",
                "jdbc": _jdbc(postgres, url="jdbc:mysql://127.0.0.1:1/shop", table="t"),
            },
        )
    assert str(err.value) == (
        "no JDBC driver for mysql in the session: add mysql-connector-j-<version>.jar with input.jdbc.driver_jar "
        "or spark-submit --jars"
    )


# --- publishing ---------------------------------------------------------------------------------------------
#: The contract's Spark types as PostgreSQL's information_schema names them (Spark's JDBC writer's mapping).
PG_TYPES = {
    "string": "text",
    "int": "integer",
    "bigint": "bigint",
    "double": "double precision",
    "date": "date",
    "boolean": "boolean",
    "timestamp": "timestamp without time zone",
}


def _pg_type(spark_type: str) -> str:
    return "ARRAY" if spark_type.startswith("array<") else PG_TYPES[spark_type]


def _pg_rows(postgres, schema: str, table: str) -> dict[str, int]:
    out = postgres.psql(f"SELECT snapshot_date, count(*) FROM {schema}.{table} GROUP BY 1 ORDER BY 1")
    return {day: int(n) for day, n in (line.split("|") for line in out.split())}


def test_publishing_replaces_a_snapshots_rows_in_one_transaction(spark, postgres, published):
    out, manifests, _ = published
    schema = "publish_test"
    cfg = _out_jdbc(postgres, schema)
    days = [m["snapshot_date"] for m in manifests]
    expected = {
        t: {
            d: len(pd.read_parquet(out / t / f"snapshot_date={d}"))
            for d in days
            if (out / t / f"snapshot_date={d}").exists()
        }
        for t in WAREHOUSE_TABLES
    }
    for m in manifests:
        copied = publish_to_warehouse(spark, cfg, str(out), m["snapshot_date"], m["run_id"])
        assert copied == {t: n[m["snapshot_date"]] for t, n in expected.items() if m["snapshot_date"] in n}
    for table in WAREHOUSE_TABLES:
        assert _pg_rows(postgres, schema, table) == {d: n for d, n in expected[table].items() if n}, table
    # the rows are the Parquet table's, customer for customer
    pg = postgres.psql(
        f"SELECT customer_id, segment_id, segment_name FROM {schema}.segments WHERE snapshot_date = '{days[1]}' "
        "AND segment_id IS NOT NULL ORDER BY customer_id"
    )
    parquet = pd.read_parquet(out / "segments" / f"snapshot_date={days[1]}").dropna(subset=["segment_id"])
    assert pg.splitlines() == [
        f"{r.customer_id}|{int(r.segment_id)}|{r.segment_name}"
        for r in parquet.sort_values("customer_id").itertuples()
    ]
    # the columns and types a BI tool sees are the data contract's, in its order
    for table in WAREHOUSE_TABLES:
        found = [
            tuple(line.split("|"))
            for line in postgres.psql(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
            ).splitlines()
        ]
        contract = [(c, _pg_type(t)) for c, t in expected_columns(table, manifests[1])]
        assert found == contract, table

    # a rerun of the first snapshot: that snapshot's rows replaced (a customer an older run had is gone), the
    # second snapshot's untouched
    before = _pg_rows(postgres, schema, "segments")
    postgres.psql(
        f"INSERT INTO {schema}.segments (customer_id, run_id, snapshot_date) VALUES ('gone', 'old', '{days[0]}')"
    )
    publish_to_warehouse(spark, cfg, str(out), days[0], "20991231T000000Z-rerun01")
    assert _pg_rows(postgres, schema, "segments") == before
    assert postgres.psql(f"SELECT count(*) FROM {schema}.segments WHERE customer_id = 'gone'").strip() == "0"
    runs = postgres.psql(
        f"SELECT DISTINCT snapshot_date, run_id FROM {schema}.segments ORDER BY 1"
    ).splitlines()
    assert runs == [f"{m['snapshot_date']}|{m['run_id']}" for m in manifests]

    # a table from before a column was added to the contract gets the column (at its end), filled for the
    # snapshot published now
    postgres.psql(f"ALTER TABLE {schema}.profiles DROP COLUMN action")
    publish_to_warehouse(spark, cfg, str(out), days[0], manifests[0]["run_id"])
    actions = postgres.psql(
        f"SELECT snapshot_date, count(action) FROM {schema}.profiles GROUP BY 1 ORDER BY 1"
    ).splitlines()
    assert actions == [f"{days[0]}|{expected['profiles'][days[0]]}", f"{days[1]}|0"]
    publish_to_warehouse(spark, cfg, str(out), days[1], manifests[1]["run_id"])

    # a swap that fails on its last table rolls back the tables before it too: the previous rows stay
    postgres.psql(f"ALTER TABLE {schema}.transitions ADD COLUMN must_have integer NOT NULL DEFAULT 0")
    postgres.psql(f"ALTER TABLE {schema}.transitions ALTER COLUMN must_have DROP DEFAULT")
    with pytest.raises(OutputError) as err:
        publish_to_warehouse(spark, cfg, str(out), days[1], "20991231T000001Z-failing1")
    assert str(err.value).startswith("warehouse not updated (the previous tables stay): ")
    assert "must_have" in str(err.value)
    assert (
        postgres.psql(
            f"SELECT DISTINCT run_id FROM {schema}.segments WHERE snapshot_date = '{days[1]}'"
        ).strip()
        == (manifests[1]["run_id"])
    )
    for table in WAREHOUSE_TABLES:
        assert _pg_rows(postgres, schema, table) == {d: n for d, n in expected[table].items() if n}, table
    left = postgres.psql(
        f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' AND tablename LIKE '\\_staging%'"
    )
    assert left.strip() == ""


def test_a_killed_runs_staging_tables_go_with_the_next_run(spark, postgres, published):
    out, manifests, _ = published
    schema = "stale_test"
    cfg = _out_jdbc(postgres, schema)
    postgres.psql(f"CREATE SCHEMA {schema}")
    stale = staging_name("segments", "20200101T000000Z-deadbeef")
    young = staging_name("segments", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-0a0a0a0a")
    for name in (stale, young):
        postgres.psql(f"CREATE TABLE {schema}.{name} (x int)")
    publish_to_warehouse(spark, cfg, str(out), manifests[0]["snapshot_date"], manifests[0]["run_id"])
    left = postgres.psql(
        f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' AND tablename LIKE '\\_staging%'"
    )
    assert left.split() == [young]  # a concurrent run's staging table is not touched


def test_the_job_reads_postgres_and_publishes_to_it_without_showing_the_password(
    postgres, retail_in_postgres, tmp_path
):
    out = tmp_path / "out"
    config = {
        "input": {
            "format": "jdbc",
            "jdbc": {
                "url": postgres.url,
                "table": retail_in_postgres,
                "user": postgres.user,
                "password_env": postgres.password_env,
                "driver_jar": PG_DRIVER_JAR,
                "partition_column": "InvoiceDate",
                "lower_bound": "2010-12-01",
                "upper_bound": "2011-12-10",
                "num_partitions": 2,
            },
        },
        "model": {"k": 4, "stability_fits": 0},
        "output": {
            "path": str(out),
            "report": False,
            "jdbc": {
                "url": postgres.url,
                "user": postgres.user,
                "password_env": postgres.password_env,
                "schema": "crm",
            },
        },
        "catalog": {"mode": "off"},
        "recommend": {"enabled": False},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.segment_customers", "--config", str(tmp_path / "job.yaml")],
        cwd=REPO,
        env={**env, "SPARK_MASTER": "local[2]"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    while job.poll() is None:  # the password is on no command line of the job's processes
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        time.sleep(1)
    stdout, stderr = job.communicate()
    assert job.returncode == 0, stderr[-3000:]
    assert any("jobs.segment_customers" in c for c in seen)
    assert not any(postgres.password in c for c in seen)
    assert postgres.password not in stdout + stderr
    manifest_path = next(out.glob("manifests/snapshot_date=*/manifest.json"))
    assert postgres.password not in manifest_path.read_text()
    manifest = pd.read_json(manifest_path, typ="series")
    assert manifest["input_rows"] == 541_909
    assert manifest["input_path"] == f"{postgres.url} as segment (public.transactions)"
    day = manifest["snapshot_date"]
    for table in WAREHOUSE_TABLES:
        path = out / table / f"snapshot_date={day}"
        if path.exists() and len(pd.read_parquet(path)):
            assert _pg_rows(postgres, "crm", table) == {day: len(pd.read_parquet(path))}, table
    sizes = postgres.psql(
        f"SELECT segment_id, count(*) FROM crm.segments WHERE snapshot_date = '{day}' AND segment_id IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    )
    profiles = postgres.psql(
        f"SELECT segment_id, customers FROM crm.profiles WHERE snapshot_date = '{day}' ORDER BY 1"
    )
    assert sizes == profiles and len(sizes.splitlines()) == 4
    copied = ", ".join(f"{t} ({n})" for t, n in manifest_rows(out, day).items())
    assert f"  warehouse: crm: {copied}" in stdout.splitlines()


def manifest_rows(out: Path, day: str) -> dict[str, int]:
    """Rows per warehouse table of a snapshot, from its Parquet partitions."""
    return {
        t: len(pd.read_parquet(out / t / f"snapshot_date={day}"))
        for t in WAREHOUSE_TABLES
        if (out / t / f"snapshot_date={day}").exists()
    }
