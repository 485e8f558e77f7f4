"""The published tables' layouts: segments, profiles, elbow and an empty rfm_profiles, built from the stages' rows.

Takes the rows the segments and model stages computed and hands the snapshot writer (`publish.snapshot`)
DataFrames in the data contract's column order and types (docs/data-contract.md).
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import FEATURE_COLUMNS
from segmentation.features.rfm import BTYD_COLUMNS
from segmentation.features.scores import RFM_SCORE_COLUMNS
from segmentation.io import local_dataframe

log = logging.getLogger(__name__)


def _schema(columns: str) -> T.StructType:
    """A schema from "name type, name type?, ..." (`?`: nullable), types as Spark SQL names them."""
    types = {
        "string": T.StringType(),
        "int": T.IntegerType(),
        "bigint": T.LongType(),
        "double": T.DoubleType(),
        "boolean": T.BooleanType(),
        "array<bigint>": T.ArrayType(T.LongType(), False),
    }
    fields = []
    for column in columns.split(","):
        name, type_name = column.split()
        fields.append(T.StructField(name, types[type_name.rstrip("?")], type_name.endswith("?")))
    return T.StructType(fields)


#: The `elbow` table, one schema for every method and kind of input.
ELBOW_SCHEMA = _schema(
    "method string, log_likelihood double?, k int, wcss double, silhouette double?, chosen boolean, "
    "smallest_cluster_share double, calinski_harabasz double?, davies_bouldin double?, stability double?, "
    "cluster_sizes array<bigint>, vetoes string?"
)

#: The leading columns of `profiles`, in order; the per-feature statistics follow as doubles.
PROFILE_SCHEMA = _schema(
    "segment_id int, segment_name string, action string, description string, customers bigint, "
    "share_customers double, revenue double, share_revenue double"
)


def elbow_df(spark: SparkSession, rows: list[dict[str, Any]], run_id: str) -> DataFrame:
    """The `elbow` table from `elbow_rows`: the documented columns first, method and log-likelihood (Gaussian
    mixture) after them."""
    data = [tuple(r[f.name] for f in ELBOW_SCHEMA.fields) for r in rows]
    order = [f.name for f in ELBOW_SCHEMA.fields[2:]] + ["method", "log_likelihood"]
    return local_dataframe(spark, data, ELBOW_SCHEMA).select(*order).withColumn("run_id", F.lit(run_id))


#: A customer's segment in the `segments` table, whatever the input.
ASSIGNMENT_COLUMNS = ("segment_id", "segment_name", "excluded_reason", "distance_to_center")

#: Column order of the published `segments` table of a transaction log.
SEGMENT_COLUMNS = (
    "customer_id",
    *FEATURE_COLUMNS,
    *BTYD_COLUMNS,
    *ASSIGNMENT_COLUMNS,
    *RFM_SCORE_COLUMNS,
    "run_id",
)


def output_files(spark: SparkSession, rows: int, rows_per_file: int) -> int:
    """Files for a table of `rows` rows: one per `rows_per_file` started, and from 100,000 rows on at least one
    per core (up to Spark's default parallelism), so that writing a large table does not run as one task."""
    by_size = rows // rows_per_file + 1
    return max(by_size, min(spark.sparkContext.defaultParallelism, rows // 100_000))


def segments_table(
    assigned_df: DataFrame,
    customers_df: DataFrame,
    names: dict[int, str],
    run_id: str,
    kind: str,
    soft: bool = False,
    extra_columns: list[str] | None = None,
    renamed: dict[str, str] | None = None,
) -> DataFrame:
    """Every customer with its segment (null when excluded): the `segments` table.

    A transaction log's customers carry the documented columns (`SEGMENT_COLUMNS`), then a Gaussian mixture's
    `membership_probability` and the joined demographic columns (`extra_columns`); a customer table's carry
    its id, its columns under their own names (`renamed`: internal -> original), the segment columns, then
    `membership_probability` and `run_id`.
    """
    name_map = F.create_map(*[F.lit(v) for pair in sorted(names.items()) for v in pair])
    clustered = assigned_df.select(
        "customer_id",
        "segment_id",
        name_map[F.col("segment_id")].alias("segment_name"),
        "distance_to_center",
        "membership_probability",
    )
    soft_columns = ["membership_probability"] if soft else []
    joined = customers_df.join(clustered, "customer_id", "left").withColumn("run_id", F.lit(run_id))
    if kind == "customers":
        return joined.select(
            "customer_id",
            *[F.col(internal).alias(original) for internal, original in (renamed or {}).items()],
            *ASSIGNMENT_COLUMNS,
            *soft_columns,
            "run_id",
        )
    return joined.select(*SEGMENT_COLUMNS, *soft_columns, *(extra_columns or []))


def profiles_table(spark: SparkSession, profiles: list[dict[str, Any]], run_id: str) -> DataFrame:
    """The `profiles` table: the leading columns a profile has (`PROFILE_SCHEMA`; a customer table's have no
    action or revenue), then every other key of the profiles as a double, in their order."""
    fields = [f for f in PROFILE_SCHEMA.fields if f.name in profiles[0]]
    known = {f.name for f in fields}
    fields += [T.StructField(k, T.DoubleType(), True) for k in profiles[0] if k not in known]
    schema = T.StructType(fields)
    rows = [tuple(p.get(f.name) for f in schema.fields) for p in profiles]
    return local_dataframe(spark, rows, schema).withColumn("run_id", F.lit(run_id))


def empty_rfm_profiles(spark: SparkSession, run_id: str) -> DataFrame:
    """`rfm_profiles` of an input without transactions: no rows, the same layout of the snapshot."""
    schema = T.StructType(
        [T.StructField("rfm_segment", T.StringType()), T.StructField("customers", T.LongType())]
    )
    return local_dataframe(spark, [], schema).withColumn("run_id", F.lit(run_id))
