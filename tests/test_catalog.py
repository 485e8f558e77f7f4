"""Catalog tables: after the job, a new SparkSession on the same metastore queries <db>.segments by snapshot."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from segmentation.catalog import CATALOG_TABLES

from . import synthetic
from .conftest import REPO

pytestmark = pytest.mark.slow

QUERY = """
import json, sys
from pyspark.sql import SparkSession
from segmentation.catalog import hive_conf
builder = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
for key, value in hive_conf({"metastore": sys.argv[1]}).items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
result = {"tables": sorted(t.name for t in spark.catalog.listTables("segmentation"))}
for table in sys.argv[3:]:
    rows = spark.sql(f"SELECT CAST(snapshot_date AS STRING) d, count(*) n FROM segmentation.{table} GROUP BY 1").collect()
    result[table] = {r.d: r.n for r in rows}
result["rows"] = [
    tuple(r) for r in spark.sql(
        f"SELECT customer_id, segment_id, segment_name FROM segmentation.segments "
        f"WHERE snapshot_date = '{sys.argv[2]}' ORDER BY customer_id"
    ).collect()
]
print("RESULT " + json.dumps(result))
"""


def _run_job(args):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.segment_customers", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_a_new_session_queries_the_registered_tables(tmp_path):
    first = synthetic.write_csv(
        tmp_path / "in1" / "log.csv", synthetic.transactions(), synthetic.REJECT_LINES
    )
    second = synthetic.write_csv(
        tmp_path / "in2" / "log.csv", synthetic.transactions(shift_days=30), synthetic.REJECT_LINES
    )
    out, metastore = tmp_path / "out", tmp_path / "metastore"
    config = tmp_path / "job.yaml"
    # the three planted groups; the k sweep is tested elsewhere
    synthetic.write_config(config, catalog=f"metastore: {metastore}", k=3)
    runs = [
        _run_job(["--config", str(config), "--input", str(p), "--output", str(out)]) for p in (first, second)
    ]
    assert "catalog: segmentation: segments (1), profiles (1)" in runs[0].stdout
    assert "catalog: segmentation: segments (2), profiles (2)" in runs[1].stdout
    days = sorted(p.name.split("=")[1] for p in out.glob("manifests/snapshot_date=*"))
    query = subprocess.run(
        [sys.executable, "-c", QUERY, str(metastore), days[1], *CATALOG_TABLES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert query.returncode == 0, query.stderr
    result = json.loads(next(x for x in query.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert result["tables"] == sorted(CATALOG_TABLES)
    for table in CATALOG_TABLES:
        expected = {day: len(pd.read_parquet(out / table / f"snapshot_date={day}")) for day in days}
        assert result[table] == expected, table
    segments = pd.read_parquet(out / "segments" / f"snapshot_date={days[1]}").sort_values("customer_id")
    assert [tuple(r) for r in result["rows"]] == [
        (c, int(i), n)
        for c, i, n in segments[["customer_id", "segment_id", "segment_name"]].itertuples(index=False)
    ]
    assert result["rows"] and not (REPO / "metastore").exists()

    # the SQL endpoint: the Thrift server on the same metastore, queried with the bundled beeline
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "THRIFT_RUN_DIR": str(tmp_path / "thrift"), "PYTHON": sys.executable}
    server = [str(REPO / "scripts" / "thrift_server.sh")]

    def start():
        return subprocess.run(
            [*server, "start", "--metastore", str(metastore), "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )

    started = start()
    first_failure = ""
    if started.returncode != 0:
        # seen once in CI-like runs: the server JVM exited at start with nothing in its log; one more try,
        # and both outputs in the message if that fails too
        first_failure = started.stdout + started.stderr
        started = start()
    try:
        assert started.returncode == 0, first_failure + started.stdout + started.stderr
        assert f"jdbc:hive2://127.0.0.1:{port}" in started.stdout
        import pyspark

        beeline = subprocess.run(
            [
                os.path.join(os.path.dirname(pyspark.__file__), "bin", "beeline"),
                "-u",
                f"jdbc:hive2://127.0.0.1:{port}",
                "-n",
                "test",
                "--silent=true",
                "--showHeader=false",
                "--outputformat=csv2",
                "-e",
                f"SELECT segment_id, count(*) FROM segmentation.segments WHERE snapshot_date = '{days[1]}' "
                "AND segment_id IS NOT NULL GROUP BY segment_id ORDER BY segment_id",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert beeline.returncode == 0, beeline.stdout + beeline.stderr
        rows = [line.rsplit("> ", 1)[-1] for line in beeline.stdout.splitlines() if "," in line]
        sizes = segments.dropna(subset=["segment_id"]).groupby("segment_id").size()
        assert rows == [f"{int(i)},{n}" for i, n in sizes.items()]
    finally:
        stopped = subprocess.run(
            [*server, "stop"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
        )
        assert stopped.returncode == 0, stopped.stderr
