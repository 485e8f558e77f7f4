"""A spark-submit app for tests/test_cluster.py: where do the executors import `segmentation` and `jobs` from?

Runs four tasks and prints, as one JSON line, each task's module files, working directory (the executor's
folder in its worker's work dir) and Python. The segmentation job itself runs no Python on the executors (no
UDFs), so this probe is what shows that shipping the library with --py-files works.
"""

from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession


def where_imported(_: int) -> str:
    import os
    import sys
    import time

    from pyspark.taskcontext import TaskContext

    import jobs
    import segmentation
    import segmentation.errors

    time.sleep(1)  # long enough that one executor cannot take all the tasks
    context = TaskContext.get()
    return json.dumps(
        {
            "segmentation": segmentation.__file__,
            "errors": segmentation.errors.__file__,
            "jobs": jobs.__file__,
            "cwd": os.getcwd(),
            "python": sys.executable,
            "partition": context.partitionId() if context else None,
        }
    )


def main() -> int:
    # wait for every executor (both workers) before running the tasks
    spark = (
        SparkSession.builder.appName("cluster-probe")
        .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        rows = spark.sparkContext.parallelize(range(4), 4).map(where_imported).collect()
    finally:
        spark.stop()
    print("PROBE " + json.dumps([json.loads(r) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
