"""One session-scoped local SparkSession for the whole suite: UI off, few shuffle partitions, UTC."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ONLINE_RETAIL_CSV = SHARED_DATA / "online_retail" / "by-day"

os.environ.setdefault("SPARK_CONF_DIR", str(REPO / "conf"))
# Python workers run the test interpreter (its numpy and pyarrow), as the jobs arrange for local runs
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    session = (
        SparkSession.builder.master("local[2]")
        .appName("segmentation-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    # The jobs the tests start in subprocesses (console script, spark-submit, Thrift server) are JVMs that live
    # for a minute on small inputs: C1 only saves the CPU that C2 compilation would take on two cores (measured:
    # test_cli + test_publish 203 s instead of 239 s). This session's own JVM has started already and keeps C2.
    os.environ.setdefault("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def published(spark, tmp_path_factory):
    """Two snapshots of a small synthetic log published into one output: the second is the same customers 30
    days later plus a group of big spenders (k=4). Returns (output path, [manifest 1, manifest 2], tmp dir)."""
    from segmentation.run import run_segmentation

    from . import synthetic

    tmp = tmp_path_factory.mktemp("published")
    first = synthetic.write_csv(tmp / "in1" / "log.csv", synthetic.transactions(), synthetic.REJECT_LINES)
    second = synthetic.write_csv(
        tmp / "in2" / "log.csv",
        synthetic.transactions({**synthetic.GROUPS, **synthetic.WHALES}, shift_days=30),
        synthetic.REJECT_LINES,
    )
    out = tmp / "out"
    manifests = [
        run_segmentation(spark, synthetic.job_config(first, out)),
        run_segmentation(spark, synthetic.job_config(second, out, k=4)),
    ]
    return out, manifests, tmp
