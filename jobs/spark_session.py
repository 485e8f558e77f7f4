"""Building the SparkSession for the entry points: Java check, conf/ directory, local default, log level."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from segmentation.errors import SegmentationError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
JAVA_HINT = "install Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`) and put it on PATH or set JAVA_HOME"


class SparkEnvironmentError(SegmentationError):
    """The machine lacks what Spark needs to start."""


def java_executable() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def require_java(minimum: int = 17) -> None:
    """Stop with one line when Java is missing or too old, instead of a Py4J trace."""
    java = java_executable()
    if java is None:
        raise SparkEnvironmentError(f"Java was not found: {JAVA_HINT}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SparkEnvironmentError(f"Java at {java} does not run ({exc}): {JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0" style
            major = int(match.group(2))
        if major < minimum:
            raise SparkEnvironmentError(
                f"Java {major} found at {java}; Spark 4 needs Java {minimum}+: {JAVA_HINT}"
            )


#: What the JVM prints at start that tells a user nothing: Spark 4's launcher always adds the incubating vector
#: module, and Java announces it on stderr (no flag turns that off).
JVM_NOISE = (b"WARNING: Using incubator modules",)


@contextmanager
def jvm_stderr_filtered():
    """While the JVM starts, its stderr is a pipe read by a thread that forwards every line but `JVM_NOISE`
    to this process's stderr (the JVM keeps the pipe for its life; this process gets its own stderr back)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def forward() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if not line.startswith(JVM_NOISE):
                    os.write(saved, line)

    threading.Thread(target=forward, name="jvm-stderr", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)


def planned_master() -> str:
    """The master the session will have, before it starts: spark-submit's (its JVM is up already), else
    SPARK_MASTER, else local[*]."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # connects to spark-submit's JVM, which holds its --master
        return SparkConf().get("spark.master", "local[*]")
    return os.environ.get("SPARK_MASTER", "local[*]")


def submitted_jars() -> str:
    """The jars spark-submit was given (`--jars`, `spark.jars`), so the job's own are added, not swapped in."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return ""
    from pyspark import SparkConf

    return SparkConf().get("spark.jars", "")


def build_spark(app_name: str, verbose: bool = False, conf: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession: the master from spark-submit when run through it, else local[*]; quiet logs by default.
    `conf`: extra settings (e.g. the Hive catalog of `segmentation.publish.catalog.hive_conf`)."""
    require_java()
    if "SPARK_CONF_DIR" not in os.environ and (CONF_DIR / "spark-defaults.conf").is_file():
        os.environ["SPARK_CONF_DIR"] = str(CONF_DIR)
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        master = os.environ.get("SPARK_MASTER", "local[*]")
        builder = builder.master(master)
        if master.startswith("local"):
            # the driver, its block manager and its web UI listen on the loopback interface only
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # Python workers (the k sweep's Arrow functions) run this interpreter, with this environment's
            # numpy and pyarrow, not whatever `python3` is first on PATH
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        if "PYSPARK_GATEWAY_PORT" in os.environ:  # spark-submit started the JVM (and printed what it prints)
            spark = builder.getOrCreate()
        else:
            with jvm_stderr_filtered():
                spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a JVM that does not start is an environment problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkEnvironmentError(f"Spark could not start: {first}. Check Java: {JAVA_HINT}") from exc
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    return spark


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("segmentation", "jobs"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # py4j chatters at INFO about every call
    logging.getLogger("py4j").setLevel(logging.WARNING)
