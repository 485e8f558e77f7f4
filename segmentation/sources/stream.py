"""The stream's source: transaction files arriving in a landing folder (or messages), read by Spark's streaming
sources with the training input's schema.

Takes the `input` config section (layout, format) and the landing folder; hands the stream stage
(`segmentation.stream`) a streaming DataFrame of the original columns plus `_corrupt_record` and `_landed_at`,
with an explicit schema (a file source infers nothing); `json_messages` does the same for JSON messages (Kafka's
`value`), and `with_line_key` gives each line the fingerprint that finds its copies in later batches.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import InputError
from segmentation.io import HadoopFs, col
from segmentation.sources.read import CORRUPT_COLUMN, PERMISSIVE, csv_options

#: The formats a landing folder can hold and a stream is seeded from (Spark's file source; a table or JDBC
#: source is no stream).
STREAM_FORMATS = ("csv", "parquet", "json")


def read_landing(
    spark: SparkSession,
    input_cfg: dict[str, Any],
    landing: str,
    schema: T.StructType,
    max_files_per_trigger: int | None = None,
) -> DataFrame:
    """New files in `landing` as a stream of rows in `schema`, oldest first (`max_files_per_trigger` per
    micro-batch when given), with `_landed_at`. Files whose names start with `_` or `.` are skipped: write a file under such a
    name, then rename it, so a batch never reads half a file."""
    fmt = input_cfg["format"]
    fs = HadoopFs(spark, landing)
    if not fs.exists(landing):
        raise InputError(f"landing folder not found: {landing}")
    reader = spark.readStream.option("latestFirst", "false")
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(int(max_files_per_trigger)))
    if fmt == "csv":
        df = (
            reader.options(**csv_options(input_cfg.get("csv") or {}), **PERMISSIVE)
            .schema(schema)
            .csv(landing)
        )
    elif fmt == "json":
        df = reader.options(primitivesAsString=True, **PERMISSIVE).schema(schema).json(landing)
    else:
        data_schema = T.StructType([f for f in schema.fields if f.name != CORRUPT_COLUMN])
        df = (
            reader.schema(data_schema).parquet(landing).withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))
        )
    return df.withColumn(LANDED_COLUMN, F.col("_metadata.file_modification_time"))


#: When a row's file landed (its modification time): the stream's latency is counted from it.
LANDED_COLUMN = "_landed_at"


def with_line_key(df: DataFrame, original_cols: list[str]) -> DataFrame:
    """Add `_line_key_1`, `_line_key_2`: a 128-bit fingerprint of the row's original values (two XXH64 chains
    from different starts; which values are null is hashed too, as XXH64 skips nulls), the same for a line in
    the training input and in a landing file of the same layout. No text is built per row (cheaper than a
    digest of the row as JSON, about a third of a micro-batch's time at a million lines)."""
    values = [col(c) for c in original_cols]
    nulls = [col(c).isNull() for c in original_cols]
    return df.withColumns(
        {
            LINE_KEY[0]: F.xxhash64(F.lit(0), *nulls, *values),
            LINE_KEY[1]: F.xxhash64(F.lit(1), *nulls, *values),
        }
    )


#: The columns of a line's fingerprint (`with_line_key`).
LINE_KEY = ("_line_key_1", "_line_key_2")


def json_messages(
    messages: DataFrame, schema: T.StructType, value: str = "value", landed_at: str | None = None
) -> DataFrame:
    """A stream of JSON messages (Kafka's `value`, a text source's lines) as the rows of `schema`: one object per
    message, its fields by name; a message that is no object keeps its text in `_corrupt_record` (a
    `malformed_row`). `landed_at`: the column of the message's arrival time (Kafka's `timestamp`)."""
    fields = [f for f in schema.fields if f.name != CORRUPT_COLUMN]
    with_corrupt = T.StructType([*fields, T.StructField(CORRUPT_COLUMN, T.StringType(), True)])
    text = F.col(value).cast("string")
    parsed = messages.select(
        F.from_json(
            text, with_corrupt, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN}
        ).alias("_row"),
        text.alias("_text"),
        (F.col(landed_at) if landed_at else F.lit(None).cast("timestamp")).alias(LANDED_COLUMN),
    )
    return parsed.select(
        *[F.col("_row")[f.name].alias(f.name) for f in fields],
        # a message that is JSON but no object (a number, a list) parses to nothing: kept as malformed too
        F.when(F.col("_row").isNull() | F.col("_row")[CORRUPT_COLUMN].isNotNull(), F.col("_text")).alias(
            CORRUPT_COLUMN
        ),
        LANDED_COLUMN,
    )
