"""One session-scoped local SparkSession for the whole suite: UI off, few shuffle partitions, UTC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspark.sql import SparkSession

from .postgres import DRIVER_JAR as PG_DRIVER_JAR

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ONLINE_RETAIL_CSV = SHARED_DATA / "online_retail" / "by-day"

os.environ.setdefault("SPARK_CONF_DIR", str(REPO / "conf"))
# Python workers run the test interpreter (its numpy and pyarrow), as the jobs arrange for local runs
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    builder = SparkSession.builder
    if Path(PG_DRIVER_JAR).is_file():  # the warehouse tests read and publish over JDBC in this session
        builder = builder.config("spark.jars", PG_DRIVER_JAR)
    session = (
        builder.master("local[2]")
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
def postgres():
    """A PostgreSQL server on 127.0.0.1 for the session (tests/postgres.py); its password in the environment
    variable the configs name, as a user would set it."""
    import tempfile

    from . import postgres as pg

    server, stop = pg.start(Path(tempfile.mkdtemp(prefix="segment-pg-")))
    os.environ[server.password_env] = server.password
    try:
        yield server
    finally:
        os.environ.pop(server.password_env, None)
        stop()


@pytest.fixture(scope="session")
def published(spark, tmp_path_factory):
    """Two snapshots of a small synthetic log published into one output: the second is the same customers 30
    days later plus a group of big spenders (k=4). Returns (output path, [manifest 1, manifest 2], tmp dir)."""
    from segmentation.pipeline import run_segmentation

    from . import synthetic

    tmp = tmp_path_factory.mktemp("published")
    first, second = synthetic.write_two_snapshots(tmp)
    out = tmp / "out"
    manifests = [
        run_segmentation(spark, synthetic.job_config(first, out, recommend=True)),
        run_segmentation(spark, synthetic.job_config(second, out, recommend=True, k=4)),
    ]
    return out, manifests, tmp


@pytest.fixture(scope="session")
def console_snapshots(tmp_path_factory):
    """The console script run twice at the same time into one output, with the catalog on (a metastore in a
    temporary dir): the `published` fixture's two snapshots (the small synthetic log with k=3, and the same
    customers 30 days later plus big spenders with k=4), the report in the first only. Shared by test_cli (the
    closing summary), test_catalog (the registered tables) and test_publish (two snapshots at once), because
    each cold run of the job costs about a minute. `runs`: CompletedProcess-like results, in input order."""
    from . import synthetic

    tmp = tmp_path_factory.mktemp("console")
    inputs = synthetic.write_two_snapshots(tmp)
    out, metastore = tmp / "out", tmp / "metastore"
    configs = [
        synthetic.write_config(
            tmp / f"job{i}.yaml", catalog=f"metastore: {metastore}", report=i == 0, recommend=True, k=k
        )
        for i, k in enumerate((3, 4))
    ]
    procs = []
    for i, (config, path) in enumerate(zip(configs, inputs, strict=True)):
        # output to files, not pipes: a full pipe would stall a job while the other is waited for
        with open(tmp / f"run{i}.stdout", "w") as stdout, open(tmp / f"run{i}.stderr", "w") as stderr:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jobs.segment_customers"]
                    + ["--config", str(config), "--input", str(path), "--output", str(out)],
                    cwd=REPO,
                    stdout=stdout,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            )
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    runs = [
        SimpleNamespace(
            returncode=code,
            stdout=(tmp / f"run{i}.stdout").read_text(),
            stderr=(tmp / f"run{i}.stderr").read_text(),
        )
        for i, code in enumerate(codes)
    ]
    assert codes == [0, 0], [r.stderr[-3000:] for r in runs]
    return SimpleNamespace(tmp=tmp, out=out, metastore=metastore, runs=runs)
