"""What differs between the Spark releases the project supports (pyspark 3.5.x and 4.0-4.3), in one place.

The rest of the code asks here instead of testing versions itself: `spark_version()`, whether the k sweep's
engine replays Spark ML's KMeans on this release (`engine_verified`), and the few column functions whose
spelling changed (`try_cast`, `to_arrow`).
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyspark
from pyspark.sql import Column, DataFrame
from pyspark.sql import types as T

#: Releases on which the engine's replay of Spark ML's k-means|| start and Lloyd iterations was verified equal
#: to Spark ML's own fits (tests/test_lloyd.py, run there). Elsewhere the sweep fits each k with Spark ML.
ENGINE_VERIFIED = ((3, 5), (4, 0), (4, 3))


def spark_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running pyspark (or of `version`)."""
    match = re.match(r"(\d+)\.(\d+)", version or pyspark.__version__)
    if not match:
        raise RuntimeError(f"cannot read the pyspark version {version or pyspark.__version__!r}")
    return int(match.group(1)), int(match.group(2))


def engine_verified(version: str | None = None) -> bool:
    return spark_version(version) in ENGINE_VERIFIED


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def try_cast(column: Column, data_type: T.DataType | str) -> Column:
    """The column cast to `data_type`, null where the value does not convert (never an error, ANSI mode or not).
    `Column.try_cast` is Spark 4's; on 3.5 the same expression (Catalyst's Cast in TRY mode, what SQL's
    `try_cast` parses to) is built in the JVM."""
    if hasattr(Column, "try_cast"):
        return column.try_cast(data_type)
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if isinstance(data_type, str):
        data_type = T._parse_datatype_string(data_type)
    jvm = spark.sparkContext._jvm
    catalyst = jvm.org.apache.spark.sql.catalyst.expressions
    java_type = spark._jsparkSession.parseDataType(data_type.json())
    cast = catalyst.Cast(column._jc.expr(), java_type, jvm.scala.Option.empty(), catalyst.EvalMode.TRY())
    return Column(jvm.org.apache.spark.sql.Column(cast))


def to_arrow(df: DataFrame) -> pa.Table:
    """The DataFrame's rows collected as one Arrow table. `DataFrame.toArrow` is Spark 4's; on 3.5 the same
    Arrow batches `toPandas` collects."""
    if hasattr(DataFrame, "toArrow"):
        return df.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    # an empty result has no batch to take the schema from
    return pa.Table.from_batches(df._collect_as_arrow(), schema=to_arrow_schema(df.schema))
